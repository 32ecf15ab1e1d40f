//! `kmsgfs serve`: the foreground daemon tying sources, rings and the FUSE frontend together.
//!
//! Start-up: block SIGINT/SIGTERM (so every thread inherits the mask); with `--holder-socket`,
//! replace a running daemon on that holder (the planned upgrade, `restart::upgrade`) and take
//! what the previous daemon left there: rings, the FUSE connection and its open files, the
//! seccomp listeners and parked calls, the BPF links and events (docs/architecture.md
//! "Restart"). Without a kept connection, check the kernel's FUSE request timeout, recover a
//! stale kmsgfs mount left on the directory by a crashed daemon without a holder (mountinfo
//! source `kmsgfs`, `umount2(MNT_DETACH)`, fuse-notes §5) and mount afresh. Then take the
//! `nf_log_all_netns` guard (`--enable-netns-log`, restored when `serve` returns), start host
//! ingestion with attribution, the agent, the reclaim scanner, and log `ready`.
//!
//! SIGTERM with a holder hands over: host ingestion stops at the newest BPF event taken, the
//! agent leaves its parked calls recorded, FUSE replies are muted so unanswered requests stay
//! with the kernel for the successor (or, without FUSE_NOTIFY_RESEND, this daemon drains the
//! reads it holds), and the mount stays. SIGINT, or SIGTERM without a holder, is the full
//! stop: parked READs get EINTR (a dropped reply would be EIO, fuse-notes §7), the mount is
//! detached, and process exit closes `/dev/fuse`, which aborts the connection.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::attribution::deliver::Delivery;
use crate::attribution::router::{KeyKind, OomPolicy, RouterConfig, Unattributed};
use crate::frontends::fuse::interrupt::Interrupts;
use crate::frontends::fuse::open_table::{OpenEntry, OpenTable};
use crate::frontends::fuse::{self as fusefe, FsConfig, Shared};
use crate::frontends::policy::{HostIdentity, Restrict};
use crate::ratelimit::DevkmsgMode;
use crate::ring::registry::{Registry, RingLimits};
use crate::ring::RingConfig;
use crate::sources::bpf::netns_log::{NetnsLogError, NfLogAllNetnsGuard};
use crate::sources::bpf::{self as bpfsrc, BpfConfig};
use crate::sources::host::{self, HostStats, Routing, SourceError};
use crate::sys::proc::NsKind;
use crate::sys::{self, SysError};

/// `--key`: the namespace kind that identifies a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyArg {
    /// Network namespace (default).
    Net,
    /// User namespace.
    User,
    /// PID namespace.
    Pid,
}

impl From<KeyArg> for NsKind {
    fn from(k: KeyArg) -> Self {
        match k {
            KeyArg::Net => NsKind::Net,
            KeyArg::User => NsKind::User,
            KeyArg::Pid => NsKind::Pid,
        }
    }
}

/// `--devkmsg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DevkmsgArg {
    /// No write limit.
    On,
    /// Opening fails with EPERM.
    Off,
    /// 10 writes per 5 s per open file (default).
    Ratelimit,
}

impl From<DevkmsgArg> for DevkmsgMode {
    fn from(d: DevkmsgArg) -> Self {
        match d {
            DevkmsgArg::On => DevkmsgMode::On,
            DevkmsgArg::Off => DevkmsgMode::Off,
            DevkmsgArg::Ratelimit => DevkmsgMode::Ratelimit,
        }
    }
}

/// `--restrict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestrictArg {
    /// Only root of the owning namespace and host root may read (default).
    Root,
    /// Any member of the namespace may read.
    None,
}

impl From<RestrictArg> for Restrict {
    fn from(r: RestrictArg) -> Self {
        match r {
            RestrictArg::Root => Restrict::Root,
            RestrictArg::None => Restrict::None,
        }
    }
}

/// `--syslog-access`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyslogAccessArg {
    /// Root of the container, or CAP_SYSLOG in it, may read and clear its ring (default).
    Container,
    /// Only CAP_SYSLOG in the container's user namespace counts, as the kernel's rule.
    Kernel,
}

impl From<SyslogAccessArg> for crate::frontends::policy::SyslogAccess {
    fn from(a: SyslogAccessArg) -> Self {
        match a {
            SyslogAccessArg::Container => Self::Container,
            SyslogAccessArg::Kernel => Self::Kernel,
        }
    }
}

/// Options of `kmsgfs serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Directory to mount the filesystem on (must exist).
    #[arg(long, value_name = "DIR")]
    pub mount: PathBuf,
    /// Host kernel log to ingest: a kmsg character device, or a FIFO/file of kmsg records.
    #[arg(long, value_name = "PATH", default_value = "/dev/kmsg")]
    pub source: PathBuf,
    /// Size of each ring in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = crate::ring::DEFAULT_BYTES)]
    pub ring_size: usize,
    /// Namespace kind that identifies a container.
    #[arg(long, value_enum, default_value = "net")]
    pub key: KeyArg,
    /// Write policy, like the kernel's printk_devkmsg.
    #[arg(long, value_enum, default_value = "ratelimit")]
    pub devkmsg: DevkmsgArg,
    /// Who may read a ring, like dmesg_restrict=1 (root) or 0 (none).
    #[arg(long, value_enum, default_value = "root")]
    pub restrict: RestrictArg,
    /// Who counts as privileged for a ring (reading it under `--restrict root`, proc-kmsg,
    /// `dmesg -c`/`-C`/`-n`, blocking syslog reads): root of the container or CAP_SYSLOG in it
    /// (`container`), or CAP_SYSLOG in it only (`kernel`). One rule for every frontend.
    #[arg(long, value_enum, default_value = "container")]
    pub syslog_access: SyslogAccessArg,
    /// FUSE event-loop threads. One is the measured fastest (docs/benchmarks.md, FUSE section);
    /// handlers never block, so one thread never lets a client stall another.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,
    /// Pin event-loop thread i to the i-th allowed CPU.
    #[arg(long)]
    pub pin_threads: bool,
    /// Seconds between scans for rings whose namespace is gone.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub reclaim_interval: u64,
    /// Most rings the daemon holds, the host ring and rings still held by open files of a
    /// dead namespace included. An opener that would need one more gets ENOSPC.
    #[arg(long, value_name = "N", default_value_t = crate::ring::registry::RingLimits::default().max_rings)]
    pub max_rings: usize,
    /// Most rings that openers of one host uid other than 0 can have created (an unprivileged
    /// user making throwaway user namespaces). The next opener of that uid gets ENOSPC.
    #[arg(
        long,
        value_name = "N",
        default_value_t = crate::ring::registry::RingLimits::default().max_rings_per_uid
    )]
    pub max_rings_per_uid: usize,
    /// Socket of a running `kmsgfs holder`: every ring lives in a memfd the holder keeps, and
    /// at start-up the daemon adopts the rings a previous daemon left there (records,
    /// sequence numbers, clear points, syslog cursors; the host source resumes after the last
    /// host record ingested). Without it a restart starts with empty rings.
    #[arg(long, value_name = "PATH")]
    pub holder_socket: Option<PathBuf>,
    /// Most open `kmsg` and `proc-kmsg` files (ENFILE beyond); one ring has at most 4096.
    #[arg(long, value_name = "N", default_value_t = 1 << 18)]
    pub max_open_files: usize,
    /// Hand over as on a kernel without FUSE_NOTIFY_RESEND (before 6.9): the old daemon
    /// answers the reads it holds while the new one serves (the drain path, for tests).
    #[arg(long, hide = true)]
    pub no_resend: bool,
    /// Unix socket of the syslog(2) seccomp agent (OCI `listenerPath`, root only). Default:
    /// the mount point with `.seccomp.sock` appended (`/run/kmsgfs.seccomp.sock`).
    #[arg(long, value_name = "PATH")]
    pub seccomp_socket: Option<PathBuf>,
    /// `SOCK_SEQPACKET` socket on which the agent serves LXC's seccomp notify proxy
    /// (`lxc.seccomp.notify.proxy = unix:PATH`, root only). Default: the mount point with
    /// `.lxc.sock` appended (`/run/kmsgfs.lxc.sock`).
    #[arg(long, value_name = "PATH", conflicts_with = "no_seccomp")]
    pub lxc_socket: Option<PathBuf>,
    /// Do not run the syslog(2) seccomp agent.
    #[arg(long, conflicts_with = "seccomp_socket")]
    pub no_seccomp: bool,
    /// Do not load the BPF attribution programs: host records go to the host ring only,
    /// containers see only what they write themselves (docs/attribution.md §4).
    #[arg(long)]
    pub no_bpf: bool,
    /// Where host records without an owner go: the host ring only, or every ring.
    #[arg(long, value_name = "host|all", default_value = "host")]
    pub unattributed: Unattributed,
    /// Who receives an OOM report: the victim's rings, or the victim's and the trigger's.
    #[arg(
        long,
        value_name = "victim|victim-and-trigger",
        default_value = "victim-and-trigger"
    )]
    pub oom_policy: OomPolicy,
    /// Set net.netfilter.nf_log_all_netns=1 while running (restored on exit), so LOG rules in
    /// containers print at all. The sysctl is host-global.
    #[arg(long)]
    pub enable_netns_log: bool,
}

/// Errors of `kmsgfs serve`.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// A system call failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// The host source could not be started.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Mounting failed.
    #[error("`mount(fuse, {dir})` failed: {source}")]
    Mount {
        /// The mount point.
        dir: PathBuf,
        /// The transport's error.
        #[source]
        source: crate::frontends::fuse::wire::SessionError,
    },
    /// An invalid option.
    #[error("invalid option: {0}")]
    Usage(String),
    /// The syslog(2) agent could not be started.
    #[error("seccomp agent: {0} (start with --no-seccomp to run without it)")]
    Seccomp(#[from] crate::frontends::seccomp::SeccompError),
    /// The LXC proxy socket could not be set up with the holder.
    #[error("--lxc-socket: {0}")]
    LxcSocket(#[from] crate::restart::listeners::LxcSocketError),
    /// `--enable-netns-log` failed.
    #[error("--enable-netns-log: {0}")]
    NetnsLog(#[from] NetnsLogError),
    /// The holder (`--holder-socket`) could not be reached or answered wrongly.
    #[error("--holder-socket: {0} (start `kmsgfs holder --socket PATH` first)")]
    Holder(#[from] crate::restart::client::ClientError),
    /// The daemon's own namespaces could not be read (attribution needs them).
    #[error("attribution: {0}")]
    Bpf(#[from] bpfsrc::BpfError),
}

/// Refuse to mount when the kernel would abort the FUSE connection over a slow request.
///
/// From Linux 6.14, `fs.fuse.default_request_timeout` (for connections that set none, like
/// kmsgfs's) and `fs.fuse.max_request_timeout` (a cap on all) > 0 make the kernel abort the
/// **whole connection** once any request stays unanswered that long. kmsgfs parks a blocking
/// read until a record arrives, which may be hours; the abort would break every container's
/// `/dev/kmsg` at once. No answer the kernel accepts would let `dmesg -w` wait on (EINTR ends
/// it, EAGAIN on a blocking fd is an error), so kmsgfs refuses to start and names the
/// setting, rather than mount a file system that will die.
fn check_fuse_request_timeout() -> Result<(), DaemonError> {
    for name in ["default_request_timeout", "max_request_timeout"] {
        let path = format!("/proc/sys/fs/fuse/{name}");
        // Older kernels have no such file: no timeout.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let secs: u64 = text.trim().parse().unwrap_or(0);
        if secs > 0 {
            return Err(DaemonError::Usage(format!(
                "fs.fuse.{name} is {secs}: the kernel would abort kmsgfs's FUSE connection, and \
                 every container's /dev/kmsg with it, when a blocking read (dmesg -w, journald) \
                 waits longer than {secs} s for a record; set it to 0 \
                 (sysctl -w fs.fuse.{name}=0) before starting kmsgfs"
            )));
        }
    }
    Ok(())
}

/// The attribution settings for the host ingestion thread (docs/attribution.md §5).
fn routing(
    args: &ServeArgs,
    key: NsKind,
    registry: &Arc<Registry>,
    kept_bpf: bpfsrc::KeptBpf,
) -> Result<Routing, DaemonError> {
    let mut rc = RouterConfig::new(bpfsrc::host_namespaces()?);
    rc.key = match args.key {
        KeyArg::Net => KeyKind::Net,
        KeyArg::User => KeyKind::User,
        KeyArg::Pid => KeyKind::Pid,
    };
    rc.unattributed = args.unattributed;
    rc.oom_policy = args.oom_policy;
    Ok(Routing {
        bpf: BpfConfig {
            enabled: !args.no_bpf,
            ..BpfConfig::default()
        },
        router: rc,
        delivery: Delivery::new(Arc::clone(registry), key),
        kept_bpf,
    })
}

/// The open-file table: adopted from the holder when the connection was (`adopting`), else a
/// new one, kept by the holder when there is one.
fn open_file_table(
    holder: Option<&crate::restart::client::HolderClient>,
    adopting: bool,
    kept: Option<std::os::fd::OwnedFd>,
    slots: usize,
) -> Result<(OpenTable, Vec<(u64, OpenEntry)>), DaemonError> {
    use std::os::fd::AsFd;
    if let (true, Some(fd)) = (adopting, kept) {
        match OpenTable::adopt(fd) {
            Some(adopted) => return Ok(adopted),
            None => log::warn!(
                "holder: the kept open-file table has another layout; open files of the \
                 previous daemon get EBADF"
            ),
        }
    }
    let Some(h) = holder else {
        return Ok((OpenTable::new(slots), Vec::new()));
    };
    let table = OpenTable::new_shared(slots)?;
    let fd = table.memfd().expect("a shared table has a memfd");
    h.put(
        crate::restart::session::OPEN_FILES,
        serde_json::json!({ "slots": slots }),
        Some(fd.as_fd()),
    )?;
    Ok((table, Vec::new()))
}

/// Give the holder every fd of the session's connection; how many (0 if that failed: a
/// restart then loses the connection, as without a holder).
fn keep_connection(
    holder: &crate::restart::client::HolderClient,
    session: &crate::frontends::fuse::wire::Session,
) -> usize {
    let kept = session
        .dup_fds()
        .map_err(|e| e.to_string())
        .and_then(|fds| {
            crate::restart::session::keep_connection(holder, &fds, session.init_params())
                .map(|()| fds.len())
                .map_err(|e| e.to_string())
        });
    match kept {
        Ok(n) => n,
        Err(e) => {
            log::warn!("holder: the FUSE connection is not kept ({e}); a restart breaks it");
            0
        }
    }
}

/// Longest a daemon handing over without resend keeps answering the reads it holds.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);

/// Run `kmsgfs serve` until SIGINT or SIGTERM.
pub fn serve(args: ServeArgs) -> Result<(), DaemonError> {
    sys::signal::block_termination()?;
    if !sys::memory::map_large_allocations_separately() {
        log::warn!("cannot fix the allocator's mmap threshold: memory of reclaimed rings may stay");
    }
    let ring_config = RingConfig::with_bytes(args.ring_size);
    ring_config
        .validate()
        .map_err(|e| DaemonError::Usage(format!("--ring-size {}: {e}", args.ring_size)))?;
    let mountpoint = sys::mount::absolute_mount_point(&args.mount)?;

    let key: NsKind = args.key.into();
    let host = HostIdentity::current(key)?;
    let limits = RingLimits {
        max_rings: args.max_rings,
        max_rings_per_uid: args.max_rings_per_uid,
    };
    // Entries of the holder that are not rings (the connection, the open files, the seccomp
    // listeners).
    let mut held_others = Vec::new();
    // The daemon's own link for the connection and the open files.
    let holder = args
        .holder_socket
        .as_deref()
        .map(crate::restart::client::HolderClient::connect)
        .transpose()?;
    if let Some(h) = &holder {
        use crate::restart::upgrade::{replace_running, Predecessor};
        match replace_running(h)? {
            Predecessor::None => {}
            Predecessor::HandedOver(pid, took) => log::info!(
                "upgrade: the previous daemon (pid {pid}) handed over in {} ms",
                took.as_millis()
            ),
            Predecessor::Killed(pid) => {
                log::warn!("upgrade: the previous daemon (pid {pid}) was killed; taking its state as after a crash")
            }
        }
    }
    let registry = Arc::new(match &args.holder_socket {
        None => Registry::new(ring_config, host.host_key(), host.host_ns_id()).with_limits(limits),
        Some(path) => {
            use crate::restart::{client::HolderClient, keeper::RingKeeper};
            let keeper = Arc::new(RingKeeper::new(HolderClient::connect(path)?));
            let adopted = keeper.adopt()?;
            for (name, why) in &adopted.refused {
                log::warn!("holder: kept {name} not adopted: {why}");
            }
            let (n, refused) = (adopted.rings.len(), adopted.refused.len());
            held_others = adopted.others;
            let reg = Registry::kept(
                ring_config,
                host.host_key(),
                host.host_ns_id(),
                keeper,
                adopted.rings,
            )
            .with_limits(limits);
            reg.set_adopted(n as u64, refused as u64);
            log::info!(
                "holder {}: adopted {n} ring(s) of a previous daemon ({} records in the host ring)",
                path.display(),
                reg.host().ring.next_seq() - reg.host().ring.first_seq()
            );
            reg
        }
    });
    // The connection a previous daemon left, if the holder kept all of it.
    let kept = match crate::restart::session::take_connection(&mut held_others) {
        Ok(kept) => kept,
        Err(why) => {
            log::warn!(
                "holder: the kept FUSE connection cannot be served ({why}); mounting afresh"
            );
            None
        }
    };
    if kept.is_some() {
        // The kernel fixes a connection's request timeout at INIT: the adopted one has none,
        // whatever the sysctls say now (they apply to connections made later).
        if let Err(e) = check_fuse_request_timeout() {
            log::info!("adopting a connection made without a request timeout; {e}");
        }
    } else {
        check_fuse_request_timeout()?;
        let stale = sys::mount::recover_stale(&mountpoint)?;
        if stale > 0 {
            log::warn!(
                "removed {stale} stale kmsgfs mount(s) at {} left by a previous daemon",
                mountpoint.display()
            );
        }
    }
    let (table, open_files) = open_file_table(
        holder.as_ref(),
        kept.is_some(),
        crate::restart::session::take_open_files(&mut held_others),
        args.max_open_files,
    )?;

    // Held for the daemon's lifetime: dropping it (return from here, also after SIGINT or
    // SIGTERM) restores the previous value. Without it, attribution start-up warns when the
    // sysctl is 0.
    let _nf_log = args
        .enable_netns_log
        .then(NfLogAllNetnsGuard::enable)
        .transpose()?;
    let host_stats = Arc::new(HostStats::default());
    let kept_bpf = crate::restart::attribution::take_bpf(&mut held_others);
    let old_links: Vec<String> = kept_bpf.links.iter().map(|(n, _)| n.clone()).collect();
    let mut ingestion = host::spawn(
        args.source.clone(),
        Arc::clone(&registry.host().ring),
        Arc::clone(&host_stats),
        Some(routing(&args, key, &registry, kept_bpf)?),
    )?;
    if let Some(h) = &holder {
        crate::restart::attribution::keep_bpf(h, &ingestion.kept_bpf, &old_links);
    }
    // Their names, to forget at a full stop; the fds themselves are the holder's now.
    let kept_bpf: Vec<String> = std::mem::take(&mut ingestion.kept_bpf)
        .into_iter()
        .map(|(name, _)| name)
        .collect();

    let threads = args.threads.max(1);
    let interrupts = Arc::new(Interrupts::new(threads > 1));
    let shared = Shared::new(
        FsConfig {
            devkmsg: args.devkmsg.into(),
            restrict: args.restrict.into(),
            syslog_access: args.syslog_access.into(),
            pin_threads: args.pin_threads,
            threads,
            source: args.source.clone(),
        },
        host.clone(),
        Arc::clone(&registry),
        Arc::clone(&host_stats),
        interrupts,
        table,
    );
    let mut adopted_listeners = 0;
    // The syslog(2) agent answers from the same rings (kmsg-semantics B, C8); dropped after
    // the unmount at the end of this function.
    let agent = if args.no_seccomp {
        None
    } else {
        use crate::frontends::seccomp;
        let socket = args
            .seccomp_socket
            .clone()
            .unwrap_or_else(|| seccomp::default_socket_for(&mountpoint));
        let resolver = seccomp::RegistryResolver::with_access(
            Arc::clone(&registry),
            host.clone(),
            args.restrict.into(),
            args.syslog_access.into(),
        );
        let lxc_path = args
            .lxc_socket
            .clone()
            .unwrap_or_else(|| seccomp::lxc_socket_for(&mountpoint));
        let mut options = seccomp::AgentOptions::default();
        let mut kept_listeners = Vec::new();
        let mut kept_calls = Vec::new();
        if holder.is_none() {
            options.lxc_socket = Some(seccomp::LxcSocket::bind(&lxc_path)?);
        }
        if let (Some(path), Some(h)) = (&args.holder_socket, &holder) {
            use crate::restart::{client::HolderClient, listeners::ListenerKeeper};
            options.lxc_socket = Some(crate::restart::listeners::lxc_socket(
                h,
                &mut held_others,
                &lxc_path,
            )?);
            let (table, calls) = crate::restart::listeners::call_table(h, &mut held_others)?;
            kept_calls = calls;
            options.calls = Some(Arc::new(parking_lot::Mutex::new(table)));
            let keeper = Arc::new(ListenerKeeper::new(HolderClient::connect(path)?));
            kept_listeners = keeper.adopt(std::mem::take(&mut held_others));
            options.on_listener = Some(Arc::new(move |fd, state| keeper.keep(fd, state)));
        }
        let agent = seccomp::Agent::spawn_with(socket, Arc::new(resolver), options)?;
        if !kept_listeners.is_empty() {
            log::info!(
                "holder: serving {} seccomp listener(s) of the previous daemon again",
                kept_listeners.len()
            );
        }
        adopted_listeners = kept_listeners.len() as u64;
        for (fd, state) in kept_listeners {
            agent.adopt(fd, state);
        }
        if !kept_calls.is_empty() {
            log::info!(
                "holder: answering {} blocked syslog(2) call(s) the previous agent held",
                kept_calls.len()
            );
        }
        agent.resume(kept_calls);
        Some(agent)
    };

    let mut counts = fusefe::AdoptionCounts {
        listeners: adopted_listeners,
        ..Default::default()
    };
    let session = match kept {
        Some(conn) => {
            // Before the first request is read: READs of adopted handles may be the first.
            let files = shared.adopt_open_files(&open_files);
            counts.fuse_fds = conn.fds.len() as u64;
            counts.open_files = files.files as u64;
            counts.lost_open_files = files.lost as u64;
            let s = fusefe::adopt(
                Arc::clone(&shared),
                conn.fds,
                conn.params,
                &mountpoint,
                threads,
            )
            .map_err(|source| {
                if let Some(h) = &holder {
                    let _ = crate::restart::session::forget_connection(h, counts.fuse_fds as usize);
                }
                DaemonError::Mount {
                    dir: mountpoint.clone(),
                    source,
                }
            })?;
            shared.wake_pollers(&files.pollers);
            log::info!(
                "holder: serving the FUSE connection of the previous daemon again ({} fd(s), {} \
                 open file(s){}, {} poll waiter(s) woken)",
                counts.fuse_fds,
                files.files,
                if files.lost > 0 {
                    format!(", {} lost with their ring", files.lost)
                } else {
                    String::new()
                },
                files.pollers.len()
            );
            s
        }
        None => {
            let mut s =
                fusefe::mount(Arc::clone(&shared), &mountpoint, threads).map_err(|source| {
                    DaemonError::Mount {
                        dir: mountpoint.clone(),
                        source,
                    }
                })?;
            if args.no_resend {
                s.forget_resend();
            }
            s
        }
    };
    shared.set_adoption(counts);
    let kept_fds = match &holder {
        Some(h) => keep_connection(h, &session),
        None => 0,
    };

    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let reclaimer = {
        let registry = Arc::clone(&registry);
        let shared = Arc::clone(&shared);
        let every = Duration::from_secs(args.reclaim_interval.max(1));
        let kinds = [key, NsKind::Pid, NsKind::Mnt];
        std::thread::Builder::new()
            .name("kmsgfs-reclaim".into())
            .spawn(move || loop {
                if stop_rx.recv_timeout(every).is_ok() {
                    return;
                }
                let live = sys::proc::live_namespaces(&kinds);
                let gone = registry.reclaim(&live, every);
                if !gone.is_empty() {
                    shared.forget_rings(&gone);
                    sys::memory::return_free_memory();
                }
            })
            .map_err(|e| SysError::new("spawn(kmsgfs-reclaim)", e))?
    };

    if let Some(h) = &holder {
        if let Err(e) = crate::restart::upgrade::register_self(h) {
            log::warn!("holder: {e}; a new daemon on this holder cannot replace this one");
        }
    }
    log::info!(
        "ready: serving {} (source {}, key {}, ring {} bytes, {} thread(s){})",
        mountpoint.display(),
        args.source.display(),
        key.name(),
        args.ring_size,
        threads,
        if args.pin_threads { ", pinned" } else { "" }
    );
    crate::cli::sdnotify::notify("READY=1");

    let sig = sys::signal::wait_termination()?;
    let _ = stop_tx.send(());
    let _ = reclaimer.join();
    if holder.is_some() && sig == libc::SIGTERM {
        // The restart path: every request read and not answered (parked READs) stays with the
        // kernel for the successor, which the holder's fds keep the connection alive for.
        log::info!(
            "signal {sig}: handing the connection of {} over (left mounted; the next daemon on \
             the same holder serves it)",
            mountpoint.display()
        );
        ingestion.hand_off();
        if let Some(a) = agent {
            a.hand_over();
        }
        let mark = |h: &crate::restart::client::HolderClient| {
            if let Err(e) = crate::restart::upgrade::mark_handed_over(h) {
                log::debug!("holder: {e}");
            }
        };
        if session.init_params().can_resend() {
            session.hand_over();
            if let Some(h) = &holder {
                mark(h);
            }
        } else {
            // No resend (a kernel before 6.9): answer what this daemon holds while the
            // successor serves everything new.
            session.drain_over();
            if let Some(h) = &holder {
                mark(h);
            }
            let left = shared.drain_parked(DRAIN_LIMIT);
            if left > 0 {
                log::warn!(
                    "drain: {left} blocked read(s) still unanswered after {} s; they wait until \
                     interrupted",
                    DRAIN_LIMIT.as_secs()
                );
            } else {
                log::info!("drain: every request this daemon held is answered");
            }
        }
        return Ok(());
    }
    log::info!("signal {sig}: answering parked reads with EINTR and unmounting");
    shared.shutdown();
    if let Some(h) = &holder {
        if let Err(e) = crate::restart::session::forget_connection(h, kept_fds) {
            log::warn!("{e}");
        }
        // No successor is expected: the kept links would keep the BPF programs attached,
        // tagging every printk for nobody. (The rings stay: a later daemon still finds them.)
        for name in &kept_bpf {
            if let Err(e) = h.remove(name) {
                log::warn!("{e}");
            }
        }
        // The agent unlinks the LXC socket's path at a full stop: its kept copy is of no use.
        if let Err(e) = h.remove(crate::restart::listeners::LXC_SOCKET) {
            log::debug!("{e}");
        }
    }

    // Detach the mount. The kernel ends the connection once nothing uses it any more; copies
    // of the mount in containers' mount namespaces keep it alive, and exiting closes
    // /dev/fuse, which aborts it (their calls then fail with ENOTCONN).
    let mut session = session;
    match session.unmount() {
        Ok(()) => log::info!("unmounted {}", mountpoint.display()),
        Err(e) => log::warn!("unmounting {}: {e}", mountpoint.display()),
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !session.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !session.is_finished() {
        log::info!(
            "the connection of {} is still in use; exiting aborts it",
            mountpoint.display()
        );
    }
    drop(session);
    drop(agent);
    Ok(())
}
