//! The BPF attribution source: loads kmsgfs's BPF programs (`src/bpf/`), probes what the host
//! allows, and delivers decoded attribution events to the router.
//!
//! What runs (docs/attribution.md has the measurements behind each choice):
//!
//! * `tp_btf/console` (required): one event per printk fragment with the descriptor id
//!   (`seq = id − K`), the caller's namespaces and the IRQ-stack / kernel-thread flags.
//! * `tp_btf/netif_receive_skb`: per-CPU netns of the packet being received, for netfilter LOG
//!   lines printed in softirq context ("rx stash").
//! * `tp_btf/mark_victim`: the OOM victim's namespaces.
//! * `fentry`/`fexit` on `nf_log_{ip,ip6,arp,netdev}_packet`: the exact `struct net` of a LOG
//!   line, only when a start-up probe shows the host allows BPF trampolines.
//!
//! Nothing here is fatal to the daemon: [`BpfSource::start`] returns a typed error naming the
//! cause, [`start_or_degrade`] turns it into one warning and an [`AttributionStatus`] saying
//! what is off, and optional programs that fail to load or attach are dropped one by one.
//!
//! Events are sent with `BPF_RB_NO_WAKEUP` and a forced wakeup once 256 KiB are unread, so the
//! consumer must also drain periodically: [`BpfSource::drain`] is non-blocking and cheap, and
//! the daemon calls it before routing each batch of host records (an event is committed
//! before its record becomes readable in `/dev/kmsg`, so draining first makes the join exact
//! without waiting).

pub mod event;
pub mod netns_log;

use std::fs;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject, RingBuffer, RingBufferBuilder};
use parking_lot::Mutex;
use serde::Serialize;

use crate::sources::events::{Event, HostNs};

#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    missing_docs,
    unsafe_op_in_unsafe_fn,
    dead_code
)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/kmsgfs.skel.rs"));
}

#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    missing_docs,
    unsafe_op_in_unsafe_fn,
    dead_code
)]
mod probe_skel {
    include!(concat!(env!("OUT_DIR"), "/probe.skel.rs"));
}

use probe_skel::ProbeSkelBuilder;
use skel::{KmsgfsSkel, KmsgfsSkelBuilder};

/// Kernel BTF, needed for CO-RE and `tp_btf`.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Loader settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfConfig {
    /// `false` for `--no-bpf`.
    pub enabled: bool,
    /// Size of the event ring buffer (a power of two, multiple of the page size).
    pub ringbuf_bytes: u32,
    /// Unread bytes after which a printk forces a reader wakeup.
    pub wakeup_bytes: u64,
    /// The kernel's `THREAD_SIZE` (task stack size), used to tell task context from IRQ
    /// stacks. 16 KiB on x86-64 and arm64 without KASAN.
    pub thread_size: u64,
    /// Try the fentry netfilter hooks when the host allows trampolines.
    pub fentry: bool,
}

impl Default for BpfConfig {
    fn default() -> Self {
        BpfConfig {
            enabled: true,
            ringbuf_bytes: 16 << 20,
            wakeup_bytes: 256 << 10,
            thread_size: 16 << 10,
            fentry: true,
        }
    }
}

/// How netfilter LOG lines printed in interrupt context are attributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetfilterMethod {
    /// Not at all (BPF off, or the rx program failed).
    Off,
    /// The per-CPU netns of the last received packet (`tp_btf/netif_receive_skb`).
    RxStash,
    /// The exact `struct net` from fentry on `nf_log_*_packet` (rx stash as well for others).
    Fentry,
}

impl std::fmt::Display for NetfilterMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NetfilterMethod::Off => "off",
            NetfilterMethod::RxStash => "rx-stash (tp_btf/netif_receive_skb)",
            NetfilterMethod::Fentry => "fentry (nf_log_*_packet)",
        })
    }
}

/// Which attribution features are active, for the daemon's statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributionStatus {
    /// BPF programs are loaded and `tp_btf/console` is attached.
    pub bpf: bool,
    /// Why BPF is off, when it is.
    pub reason: Option<String>,
    /// Per-printk events (`tp_btf/console`).
    pub printk_events: bool,
    /// Netfilter attribution in interrupt context.
    pub netfilter: NetfilterMethod,
    /// OOM victim events (`tp_btf/mark_victim`).
    pub oom_victim: bool,
    /// Result of the trampoline probe: `Some(true)` allowed, `Some(false)` refused, `None`
    /// not probed.
    pub fentry_allowed: Option<bool>,
    /// `net.netfilter.nf_log_all_netns` at start-up (`None`: absent or unreadable).
    pub nf_log_all_netns: Option<bool>,
    /// One line per degraded feature, naming the cause.
    pub notes: Vec<String>,
}

impl AttributionStatus {
    /// Everything off, with `reason`.
    pub fn off(reason: String) -> Self {
        AttributionStatus {
            bpf: false,
            reason: Some(reason),
            printk_events: false,
            netfilter: NetfilterMethod::Off,
            oom_victim: false,
            fentry_allowed: None,
            nf_log_all_netns: None,
            notes: Vec::new(),
        }
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        if !self.bpf {
            return format!(
                "BPF attribution off ({}); every record goes to the host ring only",
                self.reason.as_deref().unwrap_or("unknown reason")
            );
        }
        let mut s = format!(
            "BPF attribution on: printk events, netfilter via {}, OOM victims {}",
            self.netfilter,
            if self.oom_victim { "on" } else { "off" }
        );
        if !self.notes.is_empty() {
            s.push_str("; degraded: ");
            s.push_str(&self.notes.join("; "));
        }
        s
    }
}

/// Errors of the BPF source.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// `--no-bpf`.
    #[error("disabled by --no-bpf")]
    Disabled,
    /// No kernel BTF.
    #[error("the kernel has no BTF ({VMLINUX_BTF} is missing: needs CONFIG_DEBUG_INFO_BTF=y)")]
    NoBtf,
    /// Opening the embedded object failed.
    #[error("`bpf_object__open` of the embedded {what} object failed: {source}")]
    Open {
        /// Which object.
        what: &'static str,
        /// libbpf's error.
        source: libbpf_rs::Error,
    },
    /// Not allowed to load BPF.
    #[error(
        "no privilege to load BPF: `bpf(BPF_PROG_LOAD)` failed with EPERM ({detail}); kmsgfs \
         needs root or CAP_BPF + CAP_PERFMON"
    )]
    NoPrivilege {
        /// What the loader saw.
        detail: String,
    },
    /// The verifier refused a program.
    #[error("the BPF verifier refused {what}: {detail}")]
    Verifier {
        /// Which program(s).
        what: String,
        /// The last lines of the verifier log.
        detail: String,
    },
    /// Another load failure.
    #[error("loading the BPF programs failed: {source} ({detail})")]
    Load {
        /// libbpf's error.
        source: libbpf_rs::Error,
        /// The last libbpf messages.
        detail: String,
    },
    /// Attaching a required program failed.
    #[error("attaching `{prog}` failed: {source}")]
    Attach {
        /// Program name.
        prog: &'static str,
        /// libbpf's error.
        source: libbpf_rs::Error,
    },
    /// Ring buffer setup or consumption failed.
    #[error("`{op}` on the BPF event ring buffer failed: {source}")]
    RingBuffer {
        /// The libbpf call.
        op: &'static str,
        /// libbpf's error.
        source: libbpf_rs::Error,
    },
    /// A map operation failed.
    #[error("`{op}` on BPF map `{map}` failed: {source}")]
    Map {
        /// The libbpf call.
        op: &'static str,
        /// The map.
        map: &'static str,
        /// libbpf's error.
        source: libbpf_rs::Error,
    },
    /// A file operation failed.
    #[error("`{op}({path})` failed: {source}")]
    Io {
        /// The call.
        op: &'static str,
        /// The file.
        path: String,
        /// The error.
        source: io::Error,
    },
}

/// Counters kept by the BPF programs, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KernelStats {
    /// Events submitted.
    pub events: u64,
    /// Events lost because the ring buffer was full.
    pub drops: u64,
    /// Continuation fragments linked to their record.
    pub cont: u64,
    /// Events that took the rx stash netns.
    pub rx_used: u64,
    /// Events that took the fentry netns.
    pub fentry_used: u64,
    /// Forced wakeups.
    pub wakeups: u64,
}

// ---------------------------------------------------------------------------------------------
// libbpf messages: to `log` at debug level, and the recent ones kept for error messages.

static CAPTURE: Mutex<Vec<String>> = Mutex::new(Vec::new());
static PRINT_INSTALLED: AtomicBool = AtomicBool::new(false);

fn libbpf_print(level: libbpf_rs::PrintLevel, msg: String) {
    let msg = msg.trim_end().to_string();
    log::debug!(target: "libbpf", "{level:?}: {msg}");
    let mut c = CAPTURE.lock();
    if c.len() >= 64 {
        c.remove(0);
    }
    c.push(msg);
}

fn install_print() {
    if !PRINT_INSTALLED.swap(true, Ordering::SeqCst) {
        libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, libbpf_print)));
    }
}

fn take_capture() -> Vec<String> {
    std::mem::take(&mut *CAPTURE.lock())
}

/// The interesting tail of libbpf's messages for an error: the verifier's last lines.
fn capture_detail(lines: &[String]) -> String {
    let useful: Vec<&str> = lines
        .iter()
        .flat_map(|l| l.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("libbpf: prog") || l.contains("failed"))
        .collect();
    let tail = &useful[useful.len().saturating_sub(3)..];
    if tail.is_empty() {
        "no log".to_string()
    } else {
        tail.join(" | ")
    }
}

fn classify(e: libbpf_rs::Error, what: &str, lines: &[String]) -> BpfError {
    let detail = capture_detail(lines);
    match e.kind() {
        libbpf_rs::ErrorKind::PermissionDenied if is_eacces(&e) => BpfError::Verifier {
            what: what.to_string(),
            detail,
        },
        libbpf_rs::ErrorKind::PermissionDenied => BpfError::NoPrivilege { detail },
        _ if lines
            .iter()
            .any(|l| l.contains("verifier") || l.contains("processed")) =>
        {
            BpfError::Verifier {
                what: what.to_string(),
                detail,
            }
        }
        _ => BpfError::Load { source: e, detail },
    }
}

/// EACCES (the verifier) rather than EPERM (privilege / policy).
fn is_eacces(e: &libbpf_rs::Error) -> bool {
    let s = e.to_string();
    s.contains("os error 13") || s.contains("Permission denied (os error 13)")
}

// ---------------------------------------------------------------------------------------------

/// Optional programs to load.
#[derive(Debug, Clone, Copy)]
struct Features {
    rx: bool,
    victim: bool,
    fentry: bool,
}

const FENTRY_PROGS: [&str; 8] = [
    "kmsgfs_nf_ip_in",
    "kmsgfs_nf_ip_out",
    "kmsgfs_nf_ip6_in",
    "kmsgfs_nf_ip6_out",
    "kmsgfs_nf_arp_in",
    "kmsgfs_nf_arp_out",
    "kmsgfs_nf_netdev_in",
    "kmsgfs_nf_netdev_out",
];

/// What a previous daemon's BPF source left with the holder: its attached programs (link
/// fds: while one is open its program stays attached and goes on tagging printks) and its
/// event ring buffer (the map fd), which holds the tags of every record printed while no
/// daemon ran (docs/architecture.md "Restart").
#[derive(Debug, Default)]
pub struct KeptBpf {
    /// The event ring buffer map.
    pub events: Option<std::os::fd::OwnedFd>,
    /// The links, by program name.
    pub links: Vec<(String, std::os::fd::OwnedFd)>,
}

/// Holder entry of the event ring buffer ([`KeptBpf::events`]).
pub const KEPT_EVENTS: &str = "bpf-events";
/// Prefix of the holder entries of the links ([`KeptBpf::links`]).
pub const KEPT_LINK_PREFIX: &str = "bpf-link:";

/// The map id of a BPF map fd (`/proc/self/fdinfo`), to open it as a [`libbpf_rs::MapHandle`]
/// (libbpf-rs makes a handle from an fd only through its id).
fn map_id(fd: std::os::fd::BorrowedFd<'_>) -> Option<u32> {
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("map_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The loaded programs and their event stream.
pub struct BpfSource {
    // Field order is drop order: the ring buffer and links go before the object.
    ring: RingBuffer<'static>,
    queue: Arc<Mutex<Vec<Event>>>,
    decode_errors: Arc<AtomicU64>,
    links: Vec<(&'static str, Link)>,
    skel: KmsgfsSkel<'static>,
    status: AttributionStatus,
    reported_drops: u64,
}

impl std::fmt::Debug for BpfSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BpfSource")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// Storage for a skeleton's object. The skeleton borrows it for its whole life, so it is
/// leaked: one pointer-sized allocation per load attempt (the object itself is closed when the
/// skeleton is dropped).
fn object_storage() -> &'static mut MaybeUninit<OpenObject> {
    Box::leak(Box::new(MaybeUninit::uninit()))
}

/// Can this host load a BPF trampoline program? `Err` carries the reason it cannot.
pub fn probe_fentry() -> Result<(), String> {
    install_print();
    take_capture();
    let open = ProbeSkelBuilder::default()
        .open(object_storage())
        .map_err(|e| format!("opening the probe object failed: {e}"))?;
    match open.load() {
        Ok(_loaded) => Ok(()),
        Err(e) => {
            let lines = take_capture();
            let why = match e.kind() {
                libbpf_rs::ErrorKind::PermissionDenied if !is_eacces(&e) => {
                    "refused with EPERM (host security policy)".to_string()
                }
                _ => format!("{e} ({})", capture_detail(&lines)),
            };
            Err(format!("fentry/fexit not available: {why}"))
        }
    }
}

impl BpfSource {
    /// Probe, load and attach. Optional programs that fail are dropped and noted in the
    /// status; failure of the required `tp_btf/console` program is an error naming the cause.
    pub fn start(cfg: &BpfConfig) -> Result<BpfSource, BpfError> {
        Self::start_after(cfg, KeptBpf::default())
    }

    /// [`BpfSource::start`] after a previous daemon whose programs and event ring buffer the
    /// holder kept (`kept`): once this source's programs are attached, the previous ring
    /// buffer is read too (the tags of records printed while no daemon ran, and of those
    /// printed until the previous programs are detached), and the previous links are closed
    /// here (they detach once the holder's copies are replaced, [`BpfSource::kept_fds`]).
    pub fn start_after(cfg: &BpfConfig, kept: KeptBpf) -> Result<BpfSource, BpfError> {
        if !cfg.enabled {
            return Err(BpfError::Disabled);
        }
        if !Path::new(VMLINUX_BTF).exists() {
            return Err(BpfError::NoBtf);
        }
        install_print();
        let mut notes = Vec::new();
        let fentry_allowed = if cfg.fentry {
            match probe_fentry() {
                Ok(()) => Some(true),
                Err(why) => {
                    notes.push(format!("{why}; netfilter uses the rx stash"));
                    Some(false)
                }
            }
        } else {
            None
        };
        let mut feats = Features {
            rx: true,
            victim: true,
            fentry: fentry_allowed == Some(true),
        };
        let mut skel = loop {
            match load(cfg, feats) {
                Ok(s) => break s,
                Err(e) => {
                    if feats.fentry {
                        notes.push(format!("fentry nf_log hooks failed to load: {e}"));
                        feats.fentry = false;
                    } else if feats.victim {
                        notes.push(format!("tp_btf/mark_victim failed to load: {e}"));
                        feats.victim = false;
                    } else if feats.rx {
                        notes.push(format!("tp_btf/netif_receive_skb failed to load: {e}"));
                        feats.rx = false;
                    } else {
                        return Err(e);
                    }
                }
            }
        };
        let mut links = Vec::new();
        let link = skel
            .progs
            .kmsgfs_console
            .attach()
            .map_err(|source| BpfError::Attach {
                prog: "tp_btf/console",
                source,
            })?;
        links.push(("kmsgfs_console", link));
        // Optional programs: a failed attach turns the feature off and says why.
        let mut optional = |on: &mut bool, name, hook, attach: &dyn Fn() -> Result<Link, _>| {
            if *on {
                match attach() {
                    Ok(l) => links.push((name, l)),
                    Err(e) => {
                        notes.push(format!("attaching {hook} failed: {e}"));
                        *on = false;
                    }
                }
            }
        };
        optional(
            &mut feats.rx,
            "kmsgfs_rx",
            "tp_btf/netif_receive_skb",
            &|| skel.progs.kmsgfs_rx.attach(),
        );
        optional(
            &mut feats.victim,
            "kmsgfs_victim",
            "tp_btf/mark_victim",
            &|| skel.progs.kmsgfs_victim.attach(),
        );
        if feats.fentry {
            match attach_fentry(&skel) {
                Ok(ls) => links.extend(ls),
                Err(e) => {
                    // The console program still consults the (now empty) override stack:
                    // harmless, it is never filled.
                    notes.push(format!("attaching the fentry nf_log hooks failed: {e}"));
                    feats.fentry = false;
                }
            }
        }

        let queue: Arc<Mutex<Vec<Event>>> = Arc::default();
        let decode_errors = Arc::new(AtomicU64::new(0));
        let mut notes_info: Vec<&'static str> = Vec::new();
        let ring = {
            let q = Arc::clone(&queue);
            let errs = Arc::clone(&decode_errors);
            let mut b = RingBufferBuilder::new();
            let callback = move |q: Arc<Mutex<Vec<Event>>>, errs: Arc<AtomicU64>| {
                move |data: &[u8]| {
                    match event::decode(data) {
                        Ok(ev) => q.lock().push(ev),
                        Err(e) => {
                            if errs.fetch_add(1, Ordering::Relaxed) == 0 {
                                log::warn!("kmsgfs attribution: {e}");
                            }
                        }
                    }
                    0
                }
            };
            b.add(
                &skel.maps.events,
                callback(Arc::clone(&q), Arc::clone(&errs)),
            )
            .map_err(|source| BpfError::RingBuffer {
                op: "ring_buffer__add",
                source,
            })?;
            // The predecessor's ring buffer, read like ours. Its handle is leaked: the ring
            // buffer borrows it for 'static, and it is one map per daemon lifetime.
            let previous = kept
                .events
                .as_ref()
                .and_then(|fd| map_id(fd.as_fd()))
                .and_then(|id| libbpf_rs::MapHandle::from_map_id(id).ok());
            match previous {
                Some(m) => {
                    let m: &'static libbpf_rs::MapHandle = Box::leak(Box::new(m));
                    match b.add(m, callback(q, errs)) {
                        Ok(_) => notes_info.push(
                            "reading the previous daemon's event ring buffer (records printed \
                             while no daemon ran)",
                        ),
                        Err(e) => notes.push(format!(
                            "the previous daemon's event ring buffer cannot be read: {e}"
                        )),
                    }
                }
                None if kept.events.is_some() => notes.push(
                    "the previous daemon's event ring buffer cannot be opened: records \
                     printed while no daemon ran are not attributed"
                        .into(),
                ),
                None => {}
            }
            b.build().map_err(|source| BpfError::RingBuffer {
                op: "ring_buffer__new",
                source,
            })?
        };
        // Not needed after load; keep the skeleton's memory small.
        let _ = &mut skel;
        // This daemon's programs run: the predecessor's may go (the holder's copies are
        // replaced by `kept_fds`; a link of a program not attached here is closed there).
        drop(kept.links);
        for n in notes_info {
            log::info!("kmsgfs attribution: {n}");
        }

        let status = AttributionStatus {
            bpf: true,
            reason: None,
            printk_events: true,
            netfilter: if feats.fentry {
                NetfilterMethod::Fentry
            } else if feats.rx {
                NetfilterMethod::RxStash
            } else {
                NetfilterMethod::Off
            },
            oom_victim: feats.victim,
            fentry_allowed,
            nf_log_all_netns: netns_log::nf_log_all_netns().ok().flatten(),
            notes,
        };
        Ok(BpfSource {
            ring,
            queue,
            decode_errors,
            links,
            skel,
            status,
            reported_drops: 0,
        })
    }

    /// Copies of the fds a holder must keep so that this source's programs stay attached and
    /// its events stay readable after the daemon dies ([`KeptBpf`]): the event ring buffer
    /// ([`KEPT_EVENTS`]) and each link (`bpf-link:<program>`).
    pub fn kept_fds(&self) -> Vec<(String, std::os::fd::OwnedFd)> {
        let mut out = Vec::new();
        if let Ok(fd) = self.skel.maps.events.as_fd().try_clone_to_owned() {
            out.push((KEPT_EVENTS.to_string(), fd));
        }
        for (name, link) in &self.links {
            if let Ok(fd) = link.as_fd().try_clone_to_owned() {
                out.push((format!("{KEPT_LINK_PREFIX}{name}"), fd));
            }
        }
        out
    }

    /// What is active.
    pub fn status(&self) -> &AttributionStatus {
        &self.status
    }

    /// Names of the attached programs.
    pub fn attached(&self) -> Vec<&'static str> {
        self.links.iter().map(|(n, _)| *n).collect()
    }

    /// Append every event available now to `out` without blocking. Returns how many.
    pub fn drain(&mut self, out: &mut Vec<Event>) -> Result<usize, BpfError> {
        self.ring.consume().map_err(|source| BpfError::RingBuffer {
            op: "ring_buffer__consume",
            source,
        })?;
        Ok(self.take(out))
    }

    /// Wait up to `timeout` for a wakeup, then drain like [`BpfSource::drain`].
    pub fn wait(&mut self, timeout: Duration, out: &mut Vec<Event>) -> Result<usize, BpfError> {
        self.ring
            .poll(timeout)
            .map_err(|source| BpfError::RingBuffer {
                op: "ring_buffer__poll",
                source,
            })?;
        self.drain(out)
    }

    fn take(&mut self, out: &mut Vec<Event>) -> usize {
        let mut q = self.queue.lock();
        let n = q.len();
        out.append(&mut q);
        n
    }

    /// An fd that becomes readable on forced wakeups (epoll). Poll it *and* call
    /// [`BpfSource::drain`] periodically: ordinary events do not wake it.
    pub fn epoll_fd(&self) -> RawFd {
        self.ring.epoll_fd()
    }

    /// Samples that could not be decoded.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors.load(Ordering::Relaxed)
    }

    /// The programs' counters, summed over CPUs.
    pub fn kernel_stats(&self) -> Result<KernelStats, BpfError> {
        let vals = self
            .skel
            .maps
            .stats
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| BpfError::Map {
                op: "bpf_map_lookup_elem",
                map: "stats",
                source,
            })?
            .unwrap_or_default();
        let mut s = KernelStats::default();
        for cpu in vals {
            let f = |i: usize| -> u64 {
                cpu.get(i * 8..i * 8 + 8)
                    .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
                    .unwrap_or(0)
            };
            s.events += f(0);
            s.drops += f(1);
            s.cont += f(2);
            s.rx_used += f(3);
            s.fentry_used += f(4);
            s.wakeups += f(5);
        }
        Ok(s)
    }

    /// Events lost since the previous call (ring buffer full), for
    /// [`crate::attribution::router::Router::on_events_lost`].
    pub fn new_drops(&mut self) -> u64 {
        match self.kernel_stats() {
            Ok(s) => {
                let n = s.drops.saturating_sub(self.reported_drops);
                self.reported_drops = s.drops;
                n
            }
            Err(_) => 0,
        }
    }

    /// Accumulated run time and run count per attached program. The kernel counts these only
    /// while statistics are enabled ([`StatsGuard`]).
    pub fn run_stats(&self) -> Vec<ProgRunStats> {
        let progs = &self.skel.progs;
        let all = [
            ("kmsgfs_console", progs.kmsgfs_console.as_fd()),
            ("kmsgfs_rx", progs.kmsgfs_rx.as_fd()),
            ("kmsgfs_victim", progs.kmsgfs_victim.as_fd()),
        ];
        all.into_iter()
            .filter(|(n, _)| self.links.iter().any(|(l, _)| l == n))
            .filter_map(|(name, fd)| prog_run_stats(name, fd.as_fd()))
            .collect()
    }
}

fn load(cfg: &BpfConfig, feats: Features) -> Result<KmsgfsSkel<'static>, BpfError> {
    take_capture();
    let mut open = KmsgfsSkelBuilder::default()
        .open(object_storage())
        .map_err(|source| BpfError::Open {
            what: "kmsgfs",
            source,
        })?;
    if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
        ro.cfg_thread_size = cfg.thread_size;
        ro.cfg_wakeup_bytes = cfg.wakeup_bytes;
        ro.cfg_use_fentry = u32::from(feats.fentry);
    }
    open.maps
        .events
        .set_max_entries(cfg.ringbuf_bytes)
        .map_err(|source| BpfError::Map {
            op: "bpf_map__set_max_entries",
            map: "events",
            source,
        })?;
    let p = &mut open.progs;
    p.kmsgfs_rx.set_autoload(feats.rx);
    p.kmsgfs_victim.set_autoload(feats.victim);
    for prog in [
        &mut p.kmsgfs_nf_ip_in,
        &mut p.kmsgfs_nf_ip_out,
        &mut p.kmsgfs_nf_ip6_in,
        &mut p.kmsgfs_nf_ip6_out,
        &mut p.kmsgfs_nf_arp_in,
        &mut p.kmsgfs_nf_arp_out,
        &mut p.kmsgfs_nf_netdev_in,
        &mut p.kmsgfs_nf_netdev_out,
    ] {
        prog.set_autoload(feats.fentry);
    }
    let what = {
        let mut w = vec!["tp_btf/console"];
        if feats.rx {
            w.push("tp_btf/netif_receive_skb");
        }
        if feats.victim {
            w.push("tp_btf/mark_victim");
        }
        if feats.fentry {
            w.push("fentry/fexit nf_log_*_packet");
        }
        w.join(", ")
    };
    open.load().map_err(|e| {
        let lines = take_capture();
        classify(e, &what, &lines)
    })
}

fn attach_fentry(
    skel: &KmsgfsSkel<'static>,
) -> Result<Vec<(&'static str, Link)>, libbpf_rs::Error> {
    let p = &skel.progs;
    let progs = [
        &p.kmsgfs_nf_ip_in,
        &p.kmsgfs_nf_ip_out,
        &p.kmsgfs_nf_ip6_in,
        &p.kmsgfs_nf_ip6_out,
        &p.kmsgfs_nf_arp_in,
        &p.kmsgfs_nf_arp_out,
        &p.kmsgfs_nf_netdev_in,
        &p.kmsgfs_nf_netdev_out,
    ];
    let mut links = Vec::new();
    for (name, prog) in FENTRY_PROGS.iter().zip(progs) {
        links.push((*name, prog.attach_trace()?));
    }
    Ok(links)
}

/// Load and attach, or degrade: on any error, log one warning naming the cause and return the
/// status with everything off. Logs the active features at info level.
pub fn start_or_degrade(cfg: &BpfConfig) -> (Option<BpfSource>, AttributionStatus) {
    start_or_degrade_after(cfg, KeptBpf::default())
}

/// [`start_or_degrade`] after a previous daemon ([`BpfSource::start_after`]).
pub fn start_or_degrade_after(
    cfg: &BpfConfig,
    kept: KeptBpf,
) -> (Option<BpfSource>, AttributionStatus) {
    match BpfSource::start_after(cfg, kept) {
        Ok(src) => {
            let st = src.status().clone();
            if st.notes.is_empty() {
                log::info!("kmsgfs attribution: {}", st.summary());
            } else {
                log::warn!("kmsgfs attribution: {}", st.summary());
            }
            (Some(src), st)
        }
        Err(BpfError::Disabled) => {
            let st = AttributionStatus::off(BpfError::Disabled.to_string());
            log::info!("kmsgfs attribution: {}", st.summary());
            (None, st)
        }
        Err(e) => {
            let st = AttributionStatus::off(e.to_string());
            log::warn!("kmsgfs attribution: {}", st.summary());
            (None, st)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Calibration nonce and host namespaces.

/// Length of a calibration nonce: it fits the 32-byte text prefix of an event exactly.
pub const NONCE_LEN: usize = 32;

/// Write a calibration record to the host `/dev/kmsg` (through a fresh fd, so the per-fd
/// ratelimit never drops it) and return its text, for
/// [`crate::attribution::router::Router::begin_calibration`].
pub fn write_calibration_nonce() -> Result<Vec<u8>, BpfError> {
    let r = crate::sys::random_u64().unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        t ^ u64::from(std::process::id()) << 40
    });
    let v = r & 0x0fff_ffff_ffff_ffff;
    let nonce = format!("kmsgfs-calibrate-{v:015x}");
    debug_assert_eq!(nonce.len(), NONCE_LEN);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .map_err(|source| BpfError::Io {
            op: "open",
            path: "/dev/kmsg".into(),
            source,
        })?;
    f.write_all(format!("<5>{nonce}\n").as_bytes())
        .map_err(|source| BpfError::Io {
            op: "write",
            path: "/dev/kmsg".into(),
            source,
        })?;
    Ok(nonce.into_bytes())
}

/// The namespace inode of `/proc/<pid>/ns/<kind>` (`pid` "self" allowed).
pub fn ns_inode(pid: &str, kind: &str) -> Result<u32, BpfError> {
    let path = format!("/proc/{pid}/ns/{kind}");
    let link = fs::read_link(&path).map_err(|source| BpfError::Io {
        op: "readlink",
        path: path.clone(),
        source,
    })?;
    let s = link.to_string_lossy();
    s.rsplit_once('[')
        .and_then(|(_, r)| r.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| BpfError::Io {
            op: "readlink",
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, format!("unexpected {s:?}")),
        })
}

/// The daemon's own namespaces, taken as "the host" by the router.
pub fn host_namespaces() -> Result<HostNs, BpfError> {
    Ok(HostNs {
        net: ns_inode("self", "net")?,
        user: ns_inode("self", "user")?,
        pid: ns_inode("self", "pid")?,
    })
}

// ---------------------------------------------------------------------------------------------
// Run-time statistics (benchmarks).

/// Run time of one program while statistics were enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgRunStats {
    /// Program name.
    pub name: &'static str,
    /// Times it ran.
    pub run_cnt: u64,
    /// Total run time in ns.
    pub run_time_ns: u64,
}

fn prog_run_stats(name: &'static str, fd: BorrowedFd<'_>) -> Option<ProgRunStats> {
    let (run_cnt, run_time_ns) = crate::sys::bpf::prog_run_stats(fd)?;
    Some(ProgRunStats {
        name,
        run_cnt,
        run_time_ns,
    })
}

/// Kernel BPF run-time statistics, enabled through a `BPF_ENABLE_STATS` fd (no sysctl change)
/// while this guard lives.
#[derive(Debug)]
pub struct StatsGuard {
    fd: std::os::fd::OwnedFd,
}

impl StatsGuard {
    /// Enable run-time statistics.
    pub fn enable() -> Result<Self, BpfError> {
        let fd = crate::sys::bpf::enable_run_time_stats().map_err(|source| BpfError::Io {
            op: "bpf(BPF_ENABLE_STATS)",
            path: String::new(),
            source,
        })?;
        Ok(StatsGuard { fd })
    }
}

impl AsRawFd for StatsGuard {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
