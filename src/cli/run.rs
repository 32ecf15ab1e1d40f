//! `kmsgfs run`: start a command in new namespaces with its own kernel log.
//!
//! ```text
//! kmsgfs run [--mount DIR] [--unshare net,uts,ipc,pid,user]
//!            [--seccomp-socket PATH | --no-seccomp] -- CMD [ARG...]
//! ```
//!
//! `kmsgfs serve --mount DIR` serves one file, `DIR/kmsg`, whose `open()` resolves to the ring
//! of the opener's namespace. `run` is the smallest possible "container runtime" around it: it
//! exists so that the demo and the end-to-end tests can put real, unmodified clients (util-linux
//! `dmesg`, journald-style and Go-style readers) into a fresh namespace with the kmsgfs file at
//! `/dev/kmsg`, without depending on runc, Docker or Podman. Real deployments get the same bind
//! mount from an OCI hook or a runtime's mount list (docs/run.md).
//!
//! # What it does
//!
//! 1. Checks that `DIR/kmsg` exists. A missing file or `ENOTCONN` (a dead daemon, fuse-notes §5)
//!    fails with "is kmsgfs serve running on DIR?".
//! 2. `unshare(2)` with `CLONE_NEWNS` plus the chosen namespaces (default net, uts, ipc, pid);
//!    with `user`, only `CLONE_NEWNS` here ([`Namespaces::outer`]): the binds must be made by
//!    host root in a mount namespace of the host user namespace, so that the kernel locks them
//!    when init copies it into the container's user namespace.
//! 3. Makes `/` recursively private, so nothing below leaks back to the host.
//! 4. Binds `DIR/kmsg` over `/dev/kmsg` (read-write: writes become records of the container's
//!    ring, kmsg-semantics A6).
//! 5. Forks the **init** process (pid 1 of the new pid namespace). Init mounts a fresh `proc` on
//!    `/proc` when there is a new pid namespace, so that `/proc/<pid>` agrees with the pids the
//!    processes see, then binds `DIR/proc-kmsg` over `/proc/kmsg`: the kernel's file is the
//!    syslog(2) cursor of the **host** (kmsg-semantics C8), the kmsgfs file is the cursor of
//!    the container's ring (C).
//!
//!    With `user` the forked child is a helper that unshares the user namespace (and the pid
//!    namespace, [`Namespaces::holder`]) and forks init into them; `run`, still host root,
//!    maps container root to the caller's uid and gid (`0 <euid> 1`, after `setgroups`
//!    `deny`, as `unshare -Ur` does), mounts `proc` and binds `/proc/kmsg` from a process it
//!    forks into init's pid namespace, and lets init go on. Init then unshares a further mount
//!    namespace and net/uts/ipc ([`Namespaces::inner`]), which locks every mount
//!    (`MNT_LOCKED`): container root cannot unmount or move the binds to reach the host's
//!    files. Without `user`, init drops [`DROPPED_WITHOUT_USERNS`] before starting CMD.
//!
//!    Unless `--no-seccomp`, init then installs the seccomp filter that turns `syslog(2)` into a
//!    user notification ([`crate::frontends::seccomp::install_filter`]; CMD inherits it),
//!    passes the listener to the outer process over a socketpair, and waits. The outer
//!    process hands it to the daemon's agent (`--seccomp-socket`, default
//!    `DIR.seccomp.sock`, connected before step 2 and covered with `/dev/null` in the
//!    container's mount namespace, so CMD cannot reach it) with init's host pid, then lets
//!    init continue. `dmesg -c`, `-C`,
//!    `-S`, `-n`, `-D`/`-E`, busybox `dmesg` and `klogd` then act on the container's ring. If
//!    the daemon dies later, `syslog(2)` fails with ENOSYS inside; the host log is never
//!    reached.
//! 6. Init starts CMD as its child (pid 2; 3 with `user` and `pid`), reaps every orphan,
//!    forwards signals to CMD, and exits with CMD's status when CMD ends, which makes the
//!    kernel kill whatever is left in the pid namespace.
//!
//! # Why an init process and not CMD as pid 1
//!
//! The kernel drops signals sent to a pid namespace's init unless it installed a handler for
//! them, so `kill -TERM` or Ctrl-C would not stop a `dmesg -w` running as pid 1; and a pid 1
//! that does not reap leaves zombies. A tiny reaper and forwarder (like tini or
//! `docker run --init`) avoids both.
//!
//! # Signals
//!
//! SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to `kmsgfs run` are forwarded to
//! init and from init to CMD. Signals the **kernel** generated (`si_code == SI_KERNEL`, such as
//! Ctrl-C or a hangup from the terminal) are not forwarded: the terminal sends them to the whole
//! foreground process group, CMD included, and forwarding would deliver them twice. If
//! `kmsgfs run` itself dies, init gets SIGKILL (`PR_SET_PDEATHSIG`) and the namespace goes with
//! it; a pipe that hangs up when `kmsgfs run` exits covers the moment before init armed that.
//!
//! # Exit status
//!
//! CMD's exit code, or 128 + the signal number if a signal ended it (as shells report it).
//! Failures of `run` itself: 125 for setup errors, 126 if CMD could not be executed, 127 if it
//! was not found (the convention of `env`, Docker and Podman).
//!
//! # Requirements
//!
//! Root (CAP_SYS_ADMIN) in the initial namespaces, and a single-threaded caller: `unshare(2)`
//! with `CLONE_NEWUSER` refuses multi-threaded processes, and [`run`] forks without exec.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use libc::{c_int, c_ulong, pid_t};

use crate::sys::process::{self, Fork, SigSet};
pub use crate::sys::SysError;

/// Namespaces created unless `--unshare` says otherwise (a mount namespace always is).
pub const DEFAULT_UNSHARE: &str = "net,uts,ipc,pid";

/// Exit status when `run` itself failed before CMD started.
pub const EXIT_SETUP_FAILED: i32 = 125;
/// Exit status when CMD exists but could not be executed.
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// Exit status when CMD was not found.
pub const EXIT_NOT_FOUND: i32 = 127;

/// Signals that are forwarded to CMD.
pub const FORWARDED_SIGNALS: [c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Arguments of `kmsgfs run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Directory where `kmsgfs serve` is mounted; its `kmsg` file is bound over /dev/kmsg.
    #[arg(long, value_name = "DIR", default_value = crate::frontends::DEFAULT_MOUNT)]
    pub mount: PathBuf,

    /// Namespaces to create besides the mount namespace: a comma-separated subset of
    /// net,uts,ipc,pid,user ("" or "none" for a mount namespace only).
    #[arg(long, value_name = "LIST", default_value = DEFAULT_UNSHARE)]
    pub unshare: Namespaces,

    /// The daemon's syslog(2) agent socket (`kmsgfs serve --seccomp-socket`); default: DIR
    /// with `.seccomp.sock` appended.
    #[arg(long, value_name = "PATH")]
    pub seccomp_socket: Option<PathBuf>,

    /// Do not route syslog(2) to the daemon (it then acts on the host log, subject to the
    /// kernel's own permission checks).
    #[arg(long, conflicts_with = "seccomp_socket")]
    pub no_seccomp: bool,

    /// The command to run, and its arguments.
    #[arg(
        value_name = "CMD",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<OsString>,
}

/// One namespace type that `--unshare` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// Network (`CLONE_NEWNET`); also what kmsgfs keys rings on by default.
    Net,
    /// Hostname and domain name (`CLONE_NEWUTS`).
    Uts,
    /// System V IPC and POSIX message queues (`CLONE_NEWIPC`).
    Ipc,
    /// Process ids (`CLONE_NEWPID`); CMD runs under a fresh init, with a fresh `/proc`.
    Pid,
    /// User and group ids (`CLONE_NEWUSER`); container root maps to the caller.
    User,
}

impl Namespace {
    /// Every namespace `--unshare` accepts, in the order `Display` prints them.
    pub const ALL: [Namespace; 5] = [
        Namespace::Net,
        Namespace::Uts,
        Namespace::Ipc,
        Namespace::Pid,
        Namespace::User,
    ];

    /// The name used on the command line and in `/proc/<pid>/ns/`.
    pub fn name(self) -> &'static str {
        match self {
            Namespace::Net => "net",
            Namespace::Uts => "uts",
            Namespace::Ipc => "ipc",
            Namespace::Pid => "pid",
            Namespace::User => "user",
        }
    }

    /// The `CLONE_NEW*` flag.
    pub fn clone_flag(self) -> c_int {
        match self {
            Namespace::Net => libc::CLONE_NEWNET,
            Namespace::Uts => libc::CLONE_NEWUTS,
            Namespace::Ipc => libc::CLONE_NEWIPC,
            Namespace::Pid => libc::CLONE_NEWPID,
            Namespace::User => libc::CLONE_NEWUSER,
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The set of namespaces given to `--unshare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Namespaces(u8);

impl Namespaces {
    /// No namespace besides the (always created) mount namespace.
    pub const fn empty() -> Self {
        Namespaces(0)
    }

    /// The set with `ns` added.
    #[must_use]
    pub fn with(self, ns: Namespace) -> Self {
        Namespaces(self.0 | ns.bit())
    }

    /// Whether `ns` is in the set.
    pub fn contains(self, ns: Namespace) -> bool {
        self.0 & ns.bit() != 0
    }

    /// The members, in [`Namespace::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Namespace> {
        Namespace::ALL
            .into_iter()
            .filter(move |ns| self.contains(*ns))
    }

    /// The flags for `unshare(2)`: the members' flags plus `CLONE_NEWNS`.
    pub fn clone_flags(self) -> c_int {
        self.iter()
            .fold(libc::CLONE_NEWNS, |flags, ns| flags | ns.clone_flag())
    }

    /// The namespaces `kmsgfs run` itself creates with `unshare(2)` before it binds
    /// `/dev/kmsg` (a mount namespace always comes with them). Without `user` that is the whole
    /// set. With `user` it is none: the mount namespace holding the binds must belong to the
    /// host user namespace, so that the kernel locks the binds when init copies it into the
    /// container's ([`Self::holder`], [`Self::inner`]).
    pub fn outer(self) -> Namespaces {
        if self.contains(Namespace::User) {
            Namespaces::empty()
        } else {
            self
        }
    }

    /// With `user`, the namespaces a short-lived helper process creates in one `unshare(2)`
    /// (see [`Self::member_flags`]; no mount namespace): the user namespace and, with `pid`, a pid
    /// namespace owned by it, which `run` then joins for its children (`setns(CLONE_NEWPID)`), so
    /// that init is its pid 1 while still host root. `None` without `user`.
    pub fn holder(self) -> Option<Namespaces> {
        self.contains(Namespace::User)
            .then(|| Namespaces(self.0 & (Namespace::User.bit() | Namespace::Pid.bit())))
    }

    /// With `user`, what init creates once it has mounted `/proc`, made every bind and joined
    /// the user namespace (`setns(CLONE_NEWUSER)`): a further mount namespace, which is a copy,
    /// owned by the less privileged user namespace, of the one holding the binds, so the kernel
    /// marks every mount in it `MNT_LOCKED`; and net, uts and ipc, owned by the new user namespace
    /// so that container root may configure them. `None` without `user`.
    pub fn inner(self) -> Option<Namespaces> {
        self.contains(Namespace::User)
            .then(|| Namespaces(self.0 & !(Namespace::User.bit() | Namespace::Pid.bit())))
    }

    /// The `CLONE_NEW*` flags of exactly the members (without `CLONE_NEWNS`).
    pub fn member_flags(self) -> c_int {
        self.iter().fold(0, |flags, ns| flags | ns.clone_flag())
    }

    /// [`Self::member_flags`] spelled out, for error messages.
    pub fn member_flags_text(self) -> String {
        let names: Vec<String> = self
            .iter()
            .map(|ns| format!("CLONE_NEW{}", ns.name().to_ascii_uppercase()))
            .collect();
        names.join("|")
    }

    /// [`Self::clone_flags`] spelled out, for error messages.
    pub fn clone_flags_text(self) -> String {
        let mut text = String::from("CLONE_NEWNS");
        for ns in self.iter() {
            text.push_str("|CLONE_NEW");
            text.push_str(&ns.name().to_ascii_uppercase());
        }
        text
    }
}

/// A `--unshare` value that is not a list of known namespace names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown namespace `{0}` (expected a comma-separated subset of net,uts,ipc,pid,user)")]
pub struct UnknownNamespace(pub String);

impl FromStr for Namespaces {
    type Err = UnknownNamespace;

    /// Parses `net,uts,...`. Names may repeat; `mnt` is accepted and ignored (a mount namespace
    /// is always created); `""` and `none` mean no namespace besides it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut set = Namespaces::empty();
        if s.trim() == "none" {
            return Ok(set);
        }
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == "mnt" {
                continue;
            }
            let ns = Namespace::ALL
                .into_iter()
                .find(|ns| ns.name() == item)
                .ok_or_else(|| UnknownNamespace(item.to_string()))?;
            set = set.with(ns);
        }
        Ok(set)
    }
}

impl fmt::Display for Namespaces {
    /// The canonical list, such as `net,uts,ipc,pid`; empty for the empty set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Namespace::name).collect();
        f.write_str(&names.join(","))
    }
}

/// The exit status a shell would report for a child that ended with the raw `waitpid` status
/// `status`: the exit code, or 128 + the signal number. `None` for a status that is not a
/// termination (stopped or continued).
pub fn exit_code(status: c_int) -> Option<i32> {
    if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Some(128 + libc::WTERMSIG(status))
    } else {
        None
    }
}

/// Whether a signal received with this `si_code` should be passed on to the child. Signals the
/// kernel generated for a terminal (`SI_KERNEL`) already reached the whole foreground process
/// group, the child included.
pub fn should_forward(si_code: c_int) -> bool {
    si_code != libc::SI_KERNEL
}

/// Why `kmsgfs run` failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `DIR/kmsg` does not exist.
    #[error("{path} does not exist: is kmsgfs serve running on {dir}?")]
    KmsgMissing {
        /// `DIR/kmsg`.
        path: PathBuf,
        /// `DIR`.
        dir: PathBuf,
    },
    /// `DIR/kmsg` belongs to a FUSE mount whose daemon died.
    #[error(
        "{path}: transport endpoint is not connected: is kmsgfs serve running on {dir}? \
         (its daemon died; unmount {dir} and start it again)"
    )]
    KmsgNotConnected {
        /// `DIR/kmsg`.
        path: PathBuf,
        /// `DIR`.
        dir: PathBuf,
    },
    /// The agent socket is missing.
    #[error(
        "{path} does not exist: is kmsgfs serve (with its seccomp agent) running on {dir}? \
         (or pass --no-seccomp)"
    )]
    SeccompSocketMissing {
        /// The socket.
        path: PathBuf,
        /// `DIR`.
        dir: PathBuf,
    },
    /// Handing the syslog(2) listener to the agent failed.
    #[error("handing the syslog(2) listener to {path} failed: {message}")]
    Seccomp {
        /// The socket.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// `DIR/kmsg` is a directory.
    #[error("{0} is a directory, not the kmsgfs file")]
    KmsgIsDirectory(PathBuf),
    /// The calling process has more than one thread.
    #[error("kmsgfs run must be called from a single-threaded process (this one has {0} threads)")]
    NotSingleThreaded(usize),
    /// A system call made by `run` before the container started failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// Setting up the container (inside the new namespaces) failed.
    #[error("setting up the container failed: {0}")]
    Setup(String),
    /// CMD could not be started.
    #[error("cannot execute `{command}`: {message}")]
    Exec {
        /// CMD as given.
        command: String,
        /// Why.
        message: String,
        /// CMD was not found (exit status 127 rather than 126).
        not_found: bool,
    },
}

impl RunError {
    /// The exit status `kmsgfs run` ends with for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Exec {
                not_found: true, ..
            } => EXIT_NOT_FOUND,
            RunError::Exec { .. } => EXIT_CANNOT_EXECUTE,
            _ => EXIT_SETUP_FAILED,
        }
    }
}

/// The entry point for `main`: runs CMD and returns the status to exit with, printing any
/// error of `run` itself to stderr.
pub fn main(args: &RunArgs) -> i32 {
    match run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kmsgfs run: {err}");
            err.exit_code()
        }
    }
}

/// Runs `args.command` as described in the module documentation and returns its exit status.
///
/// Must be called from a single-threaded process (the `kmsgfs` binary's `main`): it forks and
/// the child keeps running Rust code.
pub fn run(args: &RunArgs) -> Result<i32, RunError> {
    let threads = process::thread_count()?;
    if threads != 1 {
        return Err(RunError::NotSingleThreaded(threads));
    }
    let kmsg = check_kmsg(&args.mount)?;
    let proc_kmsg = check_kmsg_file(&args.mount, "proc-kmsg")?;
    let seccomp_socket = if args.no_seccomp {
        None
    } else {
        let path = args
            .seccomp_socket
            .clone()
            .unwrap_or_else(|| crate::frontends::seccomp::default_socket_for(&args.mount));
        if std::fs::symlink_metadata(&path).is_err() {
            return Err(RunError::SeccompSocketMissing {
                path,
                dir: args.mount.clone(),
            });
        }
        Some(path)
    };

    // Block the forwarded signals and SIGCHLD before forking, so none is lost between fork and
    // the wait loop; `sigwaitinfo` collects them. Init inherits the mask; std's `Command`
    // clears it for CMD.
    let mut waited: Vec<c_int> = FORWARDED_SIGNALS.to_vec();
    waited.push(libc::SIGCHLD);
    let waited = SigSet::of(&waited);
    process::default_action(libc::SIGCHLD)?;
    let original = waited.block()?;

    // Connect to the agent now, from the host's mount namespace: the container's mount
    // namespace gets the socket covered (below), so that CMD can neither flood the agent nor
    // hand it listeners of its own (docs/security.md T4).
    let agent = match &seccomp_socket {
        Some(path) => Some(UnixStream::connect(path).map_err(|err| RunError::Seccomp {
            path: path.clone(),
            message: format!("connect: {err}"),
        })?),
        None => None,
    };

    let outer = args.unshare.outer();
    process::unshare(outer.clone_flags(), &outer.clone_flags_text())?;
    process::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        "MS_REC|MS_PRIVATE",
    )?;
    process::mount(
        Some(&kmsg),
        Path::new("/dev/kmsg"),
        None,
        libc::MS_BIND,
        "MS_BIND",
    )?;
    log::debug!("bound {} over /dev/kmsg", kmsg.display());
    hide_agent_sockets(&args.mount, seccomp_socket.as_deref())?;

    // Init reports setup and exec failures over `report`, and learns from `alive` hanging up
    // whether this process died before init armed PR_SET_PDEATHSIG. Both are close-on-exec, so
    // CMD holds neither.
    let (report_rx, report_tx) = process::pipe_cloexec()?;
    let (alive_rx, alive_tx) = process::pipe_cloexec()?;
    // Init sends the seccomp listener over this pair and waits for the hand-over (std's
    // UnixStream::pair is close-on-exec).
    let pair = match seccomp_socket {
        Some(_) => {
            Some(UnixStream::pair().map_err(|err| SysError::new("socketpair(AF_UNIX)", err))?)
        }
        None => None,
    };
    // With `user`, the forked child is a helper that creates the user (and pid) namespace and
    // forks init into them; it sends init's pid over `init_pid`. Init then waits on `mounted`
    // until this process, still host root, has mapped the ids and made the /proc mounts.
    let holder = args.unshare.holder();
    let (init_pid_rx, init_pid_tx, mounted_rx, mounted_tx) = match holder {
        Some(_) => {
            let (a, b) = process::pipe_cloexec()?;
            let (c, d) = process::pipe_cloexec()?;
            (Some(a), Some(b), Some(c), Some(d))
        }
        None => (None, None, None, None),
    };
    // SAFETY: checked above that this process has a single thread.
    match unsafe { process::fork() }? {
        Fork::Child => {
            drop(report_rx);
            drop(alive_tx);
            drop(init_pid_rx);
            drop(mounted_tx);
            let listener_tx = pair.map(|(_, child)| child);
            let setup = InitSetup {
                proc_kmsg: &proc_kmsg,
                listener_tx,
                mounted_rx,
            };
            let start_init = || init(args, setup, report_tx, alive_rx, &waited, original);
            let code = match (holder, init_pid_tx) {
                (Some(holder), Some(tx)) => helper(holder, tx, start_init),
                _ => start_init(),
            };
            process::exit_now(code)
        }
        Fork::Parent(child) => {
            drop(report_tx);
            drop(alive_rx);
            drop(init_pid_tx);
            drop(mounted_rx);
            // Held until this function returns, that is for as long as this process lives.
            let _alive_tx = alive_tx;
            let mut guard = ChildGuard(Some(child));
            let init_pid = match (init_pid_rx, mounted_tx) {
                (Some(rx), Some(mounted)) => {
                    let init_pid = read_init_pid(rx)?;
                    prepare_user_container(args.unshare, &proc_kmsg, init_pid, mounted)?;
                    init_pid
                }
                _ => child,
            };
            let handed = match (pair, &seccomp_socket, agent) {
                (Some((parent, _child)), Some(path), Some(agent)) => {
                    drop(_child);
                    Some(hand_over(parent, &agent, path, init_pid))
                }
                _ => None,
            };
            let report = read_report(report_rx)?;
            let code = supervise(child, init_pid, &waited)?;
            guard.0 = None;
            match (report, handed) {
                (Some(report), _) => Err(report.into_error(&args.command)),
                (None, Some(Err(e))) => Err(e),
                (None, _) => Ok(code),
            }
        }
    }
}

/// Binds `/dev/null` over the agent's socket (`socket`, and the default `DIR.seccomp.sock` if
/// that exists too) in the container's mount namespace, before CMD exists: a container must
/// not reach the agent (docs/security.md T4). Under `--unshare user` the cover is locked with
/// the other binds; without it CMD lacks CAP_SYS_ADMIN to remove it.
fn hide_agent_sockets(mount: &Path, socket: Option<&Path>) -> Result<(), RunError> {
    let default = crate::frontends::seccomp::default_socket_for(mount);
    let lxc = crate::frontends::seccomp::lxc_socket_for(mount);
    let mut paths: Vec<&Path> = socket.into_iter().collect();
    for p in [&default, &lxc] {
        if !paths.contains(&p.as_path()) {
            paths.push(p);
        }
    }
    for path in paths {
        if std::fs::symlink_metadata(path).is_err() {
            continue;
        }
        process::mount(
            Some(Path::new("/dev/null")),
            path,
            None,
            libc::MS_BIND,
            "MS_BIND",
        )?;
        log::debug!("covered the agent socket {} with /dev/null", path.display());
    }
    Ok(())
}

/// Kills and reaps the child of `run` (init, or the helper holding it) when `run` returns
/// early with an error, so no half set up container outlives it.
struct ChildGuard(Option<pid_t>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = process::kill(pid, libc::SIGKILL);
            if let Err(err) = process::waitpid_blocking(pid) {
                log::warn!("reaping {pid}: {err}");
            }
        }
    }
}

/// The helper of `--unshare user` (in the forked child of `run`): creates the user namespace
/// and, with `pid`, a pid namespace owned by it ([`Namespaces::holder`]), forks init into them,
/// sends init's (host) pid to `run` over `init_pid_tx`, and exits with init's status. It stays
/// in the mount namespace of `run`, owned by the host user namespace, which init shares until
/// the mounts are made.
fn helper(holder: Namespaces, init_pid_tx: OwnedFd, start_init: impl FnOnce() -> i32) -> i32 {
    let mut tx = std::fs::File::from(init_pid_tx);
    let started = process::set_parent_death_signal(libc::SIGKILL)
        .and_then(|()| process::unshare(holder.member_flags(), &holder.member_flags_text()))
        // SAFETY: this process was forked from the single-threaded `run` and starts no thread.
        .and_then(|()| unsafe { process::fork() });
    match started {
        Ok(Fork::Child) => {
            // Only the helper reports init's pid; `run` reads until every writer is gone.
            drop(tx);
            process::exit_now(start_init())
        }
        Ok(Fork::Parent(init_pid)) => {
            let _ = tx.write_all(format!("P{init_pid}").as_bytes());
            drop(tx);
            match process::waitpid_blocking(init_pid) {
                Ok(status) => exit_code(status).unwrap_or(EXIT_SETUP_FAILED),
                Err(_) => EXIT_SETUP_FAILED,
            }
        }
        Err(err) => {
            let _ = tx.write_all(format!("E{err}").as_bytes());
            EXIT_SETUP_FAILED
        }
    }
}

/// Reads init's pid, or the helper's failure, from the helper's pipe.
fn read_init_pid(rx: OwnedFd) -> Result<pid_t, RunError> {
    let mut text = String::new();
    std::fs::File::from(rx)
        .read_to_string(&mut text)
        .map_err(|err| SysError::new("read(user namespace helper pipe)", err))?;
    match text.split_at_checked(1) {
        Some(("P", pid)) => pid
            .parse()
            .map_err(|_| RunError::Setup(format!("garbled pid {pid:?} from the helper"))),
        Some(("E", message)) => Err(RunError::Setup(message.to_string())),
        _ => Err(RunError::Setup(
            "the user namespace helper exited without starting init".into(),
        )),
    }
}

/// With `user`, as host root, while init waits in the new user namespace but still in the
/// mount namespace of `run`: maps container root to the caller's uid and gid (`0 <euid> 1`,
/// after `setgroups` `deny`, as `unshare -Ur` does), mounts a fresh `proc` for init's pid
/// namespace and binds `DIR/proc-kmsg` over `/proc/kmsg` (from a process forked into init's pid
/// namespace, since `proc` shows the mounter's), then tells init to go on. These mounts, like
/// the `/dev/kmsg` bind, are made by host root, so they are locked in the copy init makes.
fn prepare_user_container(
    namespaces: Namespaces,
    proc_kmsg: &Path,
    init_pid: pid_t,
    mounted_tx: OwnedFd,
) -> Result<(), RunError> {
    let (uid, gid) = process::effective_ids();
    process::write_proc_file(&format!("/proc/{init_pid}/setgroups"), "deny\n")?;
    process::write_proc_file(
        &format!("/proc/{init_pid}/uid_map"),
        &format!("0 {uid} 1\n"),
    )?;
    process::write_proc_file(
        &format!("/proc/{init_pid}/gid_map"),
        &format!("0 {gid} 1\n"),
    )?;
    if namespaces.contains(Namespace::Pid) {
        let path = format!("/proc/{init_pid}/ns/pid");
        let ns = std::fs::File::open(&path)
            .map_err(|err| SysError::new(format!("open({path})"), err))?;
        process::setns(
            ns.as_fd(),
            libc::CLONE_NEWPID,
            &format!("{path}, CLONE_NEWPID"),
        )?;
        let (err_rx, err_tx) = process::pipe_cloexec()?;
        // SAFETY: `run` is single-threaded.
        match unsafe { process::fork() }? {
            Fork::Child => {
                drop(err_rx);
                let code = match mount_proc(proc_kmsg) {
                    Ok(()) => 0,
                    Err(err) => {
                        let _ = std::fs::File::from(err_tx).write_all(err.to_string().as_bytes());
                        1
                    }
                };
                process::exit_now(code)
            }
            Fork::Parent(pid) => {
                drop(err_tx);
                let mut message = String::new();
                let _ = std::fs::File::from(err_rx).read_to_string(&mut message);
                let status = process::waitpid_blocking(pid)?;
                if !message.is_empty() || exit_code(status) != Some(0) {
                    return Err(RunError::Setup(format!(
                        "mounting /proc for the container: {message}"
                    )));
                }
            }
        }
    } else {
        // No pid namespace: the host's /proc stays, with the container's /proc/kmsg over it.
        bind_read_only(proc_kmsg, Path::new("/proc/kmsg"))?;
    }
    std::fs::File::from(mounted_tx)
        .write_all(b"1")
        .map_err(|err| SysError::new("write(mounted pipe)", err))?;
    Ok(())
}

/// Receives init's seccomp listener on `pair` and hands it to the agent on `socket` with
/// init's (host) pid, then tells init to go on (`1`) or to give up (`0`).
fn hand_over(
    pair: UnixStream,
    agent: &UnixStream,
    socket: &Path,
    init_pid: pid_t,
) -> Result<(), RunError> {
    use crate::frontends::seccomp::oci;
    let fail = |message: String| RunError::Seccomp {
        path: socket.to_path_buf(),
        message,
    };
    let listener = oci::recv_one_fd(pair.as_fd())
        .map_err(|e| fail(format!("receiving the listener from init: {e}")))?;
    let pid = u32::try_from(init_pid).unwrap_or(0);
    let sent = oci::send_listener_on(agent, socket, pid, listener.as_fd());
    drop(listener);
    let mut pair = pair;
    let ack: &[u8] = if sent.is_ok() { b"1" } else { b"0" };
    let _ = pair.write_all(ack);
    sent.map_err(|e| fail(e.to_string()))?;
    log::debug!(
        "handed the syslog(2) listener of pid {pid} to {}",
        socket.display()
    );
    Ok(())
}

/// Checks that `dir/kmsg` is there and answers, before anything is changed.
fn check_kmsg(dir: &Path) -> Result<PathBuf, RunError> {
    check_kmsg_file(dir, "kmsg")
}

/// Checks that `dir/name` is there and answers.
fn check_kmsg_file(dir: &Path, name: &str) -> Result<PathBuf, RunError> {
    let path = dir.join(name);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => Err(RunError::KmsgIsDirectory(path)),
        Ok(_) => Ok(path),
        Err(err) => match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => Err(RunError::KmsgMissing {
                path,
                dir: dir.to_path_buf(),
            }),
            Some(libc::ENOTCONN) => Err(RunError::KmsgNotConnected {
                path,
                dir: dir.to_path_buf(),
            }),
            _ => Err(SysError::new(format!("stat({})", path.display()), err).into()),
        },
    }
}

/// Init under `--unshare user`, once `run` made the mounts: `unshare(2)`s a further mount
/// namespace and net, uts and ipc ([`Namespaces::inner`]).
///
/// The mount namespace created here is a copy, owned by a less privileged user namespace, of
/// the one in which host root made the binds, so the kernel marks every mount in it
/// `MNT_LOCKED`: container root cannot unmount or move `/dev/kmsg` or `/proc/kmsg` to reach
/// the host's files underneath, nor bind `/dev` without its kmsgfs child (mount_namespaces(7),
/// "restrictions on mount namespaces").
fn enter_inner_namespaces(inner: Namespaces) -> Result<(), SysError> {
    process::unshare(inner.clone_flags(), &inner.clone_flags_text())
}

/// Capabilities CMD never gets without a user namespace. There CMD is root of the initial user
/// namespace, and no mount can be locked against it: with CAP_SYS_ADMIN it could unmount
/// `/dev/kmsg` (or mount a fresh devtmpfs), with CAP_MKNOD create a 1:11 node, with
/// CAP_SYS_PTRACE reach `/proc/<host pid>/root/dev/kmsg` (without a pid namespace), with
/// CAP_SYS_MODULE or CAP_SYS_RAWIO write into the kernel directly. Dropping them closes those
/// doors; it does not make a container of host root (docs/run.md).
pub const DROPPED_WITHOUT_USERNS: [(u32, &str); 5] = [
    (21, "CAP_SYS_ADMIN"),
    (27, "CAP_MKNOD"),
    (19, "CAP_SYS_PTRACE"),
    (16, "CAP_SYS_MODULE"),
    (17, "CAP_SYS_RAWIO"),
];

/// Why init could not start CMD, as sent to the outer process over the report pipe.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Report {
    /// A mount or prctl inside the namespaces failed.
    Setup(String),
    /// CMD was not found.
    NotFound(String),
    /// CMD could not be executed for another reason.
    Exec(String),
}

impl Report {
    fn encode(&self) -> Vec<u8> {
        let (tag, msg) = match self {
            Report::Setup(m) => (b'S', m),
            Report::NotFound(m) => (b'N', m),
            Report::Exec(m) => (b'X', m),
        };
        let mut out = vec![tag];
        out.extend_from_slice(msg.as_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Report> {
        let (&tag, msg) = bytes.split_first()?;
        let msg = String::from_utf8_lossy(msg).into_owned();
        match tag {
            b'S' => Some(Report::Setup(msg)),
            b'N' => Some(Report::NotFound(msg)),
            b'X' => Some(Report::Exec(msg)),
            _ => Some(Report::Setup(format!("garbled report {bytes:?}"))),
        }
    }

    fn into_error(self, command: &[OsString]) -> RunError {
        let command = command
            .first()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        match self {
            Report::Setup(message) => RunError::Setup(message),
            Report::NotFound(message) => RunError::Exec {
                command,
                message,
                not_found: true,
            },
            Report::Exec(message) => RunError::Exec {
                command,
                message,
                not_found: false,
            },
        }
    }
}

/// Reads init's report until init closes the pipe: EOF without data means CMD started.
fn read_report(rx: OwnedFd) -> Result<Option<Report>, SysError> {
    let mut bytes = Vec::new();
    std::fs::File::from(rx)
        .read_to_end(&mut bytes)
        .map_err(|err| SysError::new("read(report pipe)", err))?;
    Ok(Report::decode(&bytes))
}

/// Init: pid 1 of the new pid namespace (or a plain sub-reaper without one). Sets up `/proc`,
/// starts CMD and supervises it. Returns the status to exit with.
/// What init needs besides the arguments.
struct InitSetup<'a> {
    /// `DIR/proc-kmsg`, bound over `/proc/kmsg`.
    proc_kmsg: &'a Path,
    /// Where to send the seccomp listener (None: `--no-seccomp`).
    listener_tx: Option<std::os::unix::net::UnixStream>,
    /// With `user`: `run` writes `1` here once it has made the /proc mounts.
    mounted_rx: Option<OwnedFd>,
}

fn init(
    args: &RunArgs,
    setup: InitSetup<'_>,
    report_tx: OwnedFd,
    alive_rx: OwnedFd,
    waited: &SigSet,
    original: SigSet,
) -> i32 {
    // Die with the outer process, which takes the whole pid namespace along. If it already
    // died between fork and here, the signal was never armed: `alive` has hung up then.
    let arm = |alive_rx: &OwnedFd| {
        process::set_parent_death_signal(libc::SIGKILL)
            .and_then(|()| process::pipe_hung_up(alive_rx.as_fd()))
    };
    match arm(&alive_rx) {
        Ok(false) => {}
        Ok(true) => return EXIT_SETUP_FAILED,
        Err(err) => {
            eprintln!("kmsgfs run (init): {err}");
            return EXIT_SETUP_FAILED;
        }
    }
    let mut report_tx = std::fs::File::from(report_tx);
    let mut send = |report: Report| {
        // Nothing more can be done if the outer process is gone.
        let _ = report_tx.write_all(&report.encode());
    };
    let prepared = match (args.unshare.inner(), setup.mounted_rx) {
        (Some(inner), Some(mounted_rx)) => wait_mounted(mounted_rx)
            .and_then(|()| {
                if args.unshare.contains(Namespace::Pid) {
                    Ok(())
                } else {
                    process::set_child_subreaper().map_err(|e| e.to_string())
                }
            })
            .and_then(|()| enter_inner_namespaces(inner).map_err(|e| e.to_string())),
        _ => init_setup(args.unshare, setup.proc_kmsg).map_err(|e| e.to_string()),
    };
    if let Err(message) = prepared {
        send(Report::Setup(message));
        return EXIT_SETUP_FAILED;
    }
    drop(alive_rx);
    if let Some(tx) = setup.listener_tx {
        if let Err(message) = install_and_send_listener(tx) {
            send(Report::Setup(message));
            return EXIT_SETUP_FAILED;
        }
    }
    if !args.unshare.contains(Namespace::User) {
        // After the filter (whose installation needs CAP_SYS_ADMIN without no_new_privs).
        if let Err(err) = process::drop_capabilities(&DROPPED_WITHOUT_USERNS) {
            send(Report::Setup(err.to_string()));
            return EXIT_SETUP_FAILED;
        }
    }
    let mut command = Command::new(&args.command[0]);
    command.args(&args.command[1..]);
    // SAFETY: the closure only calls sigprocmask, which is async-signal-safe, and touches no
    // memory shared with the parent.
    unsafe {
        command.pre_exec(move || original.set_mask());
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            send(Report::NotFound(err.to_string()));
            return EXIT_NOT_FOUND;
        }
        Err(err) => {
            send(Report::Exec(err.to_string()));
            return EXIT_CANNOT_EXECUTE;
        }
    };
    drop(report_tx);
    // `child.id()` is a pid of this (new) pid namespace; it fits pid_t by construction.
    let pid = child.id() as pid_t;
    match supervise(pid, pid, waited) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kmsgfs run (init): {err}");
            EXIT_SETUP_FAILED
        }
    }
}

/// Installs the syslog(2) filter on init (CMD inherits it), sends the listener to the outer
/// process and waits until it was handed to the agent. The listener is closed here, so only
/// the agent holds it afterwards: if the daemon dies, syslog(2) fails with ENOSYS.
fn install_and_send_listener(mut tx: std::os::unix::net::UnixStream) -> Result<(), String> {
    use crate::frontends::seccomp::{install_filter, oci};
    let listener = install_filter().map_err(|e| {
        format!("`seccomp(SET_MODE_FILTER, NEW_LISTENER)` for syslog(2) failed: {e}")
    })?;
    oci::send_fd(tx.as_fd(), b"L", listener.as_fd())
        .map_err(|e| format!("`sendmsg(listener)` to the outer process failed: {e}"))?;
    drop(listener);
    let mut ack = [0u8; 1];
    match tx.read(&mut ack) {
        Ok(1) if ack[0] == b'1' => Ok(()),
        _ => Err("the syslog(2) listener could not be handed to the kmsgfs agent".into()),
    }
}

/// Init under `--unshare user`: waits until `run` wrote `1` (the /proc mounts are made).
fn wait_mounted(mounted_rx: OwnedFd) -> Result<(), String> {
    let mut byte = [0u8; 1];
    match std::fs::File::from(mounted_rx).read(&mut byte) {
        Ok(1) if byte[0] == b'1' => Ok(()),
        _ => Err("kmsgfs run did not finish the container's /proc mounts".into()),
    }
}

/// The mounts and process attributes init sets up before starting CMD (without `user`).
fn init_setup(namespaces: Namespaces, proc_kmsg: &Path) -> Result<(), SysError> {
    if namespaces.contains(Namespace::Pid) {
        mount_proc(proc_kmsg)
    } else {
        // Without a pid namespace orphans would go to the host's init; keep them here.
        process::set_child_subreaper()?;
        bind_read_only(proc_kmsg, Path::new("/proc/kmsg"))
    }
}

/// Mounts a fresh `proc` (of the caller's pid namespace) on `/proc` and binds `proc_kmsg` over
/// its `kmsg`.
fn mount_proc(proc_kmsg: &Path) -> Result<(), SysError> {
    process::mount(
        Some(Path::new("proc")),
        Path::new("/proc"),
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "MS_NOSUID|MS_NODEV|MS_NOEXEC",
    )?;
    // The kernel's /proc/kmsg is the host's syslog cursor (C8); the kmsgfs file is the
    // container's. Read-only like the original (mode 0400).
    bind_read_only(proc_kmsg, Path::new("/proc/kmsg"))
}

/// Binds `source` over `target` and makes that bind read-only.
fn bind_read_only(source: &Path, target: &Path) -> Result<(), SysError> {
    process::mount(Some(source), target, None, libc::MS_BIND, "MS_BIND")?;
    // A read-only bind needs a remount. Inside a user namespace the kernel refuses to drop the
    // nosuid/nodev/noexec/atime flags the bind inherited ("locked" flags), so keep them.
    let locked = locked_mount_flags(process::statvfs_flags(target)?);
    let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | locked;
    process::mount(
        None,
        target,
        None,
        flags,
        &format!("MS_REMOUNT|MS_BIND|MS_RDONLY|{locked:#x}"),
    )
}

/// The `MS_*` flags to keep when remounting a mount whose statvfs flags are `st_flags`.
pub fn locked_mount_flags(st_flags: c_ulong) -> c_ulong {
    const PAIRS: [(c_ulong, c_ulong); 6] = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    PAIRS
        .iter()
        .filter(|(st, _)| st_flags & st != 0)
        .fold(0, |acc, (_, ms)| acc | ms)
}

/// Waits for `child` to end while reaping any other child and forwarding signals to `target`
/// (`child` itself, or init when `child` is the `--unshare user` helper holding it). Returns
/// the child's exit status (see [`exit_code`]).
fn supervise(child: pid_t, target: pid_t, waited: &SigSet) -> Result<i32, SysError> {
    loop {
        let (sig, code) = waited.wait()?;
        if sig == libc::SIGCHLD {
            while let Some((pid, status)) = process::waitpid_nohang(-1)? {
                if pid == child {
                    if let Some(code) = exit_code(status) {
                        return Ok(code);
                    }
                }
            }
        } else if should_forward(code) {
            log::debug!("forwarding {} to {target}", process::signal_name(sig));
            if let Err(err) = process::kill(target, sig) {
                // ESRCH: the child is already gone; its SIGCHLD is on the way.
                if err.errno() != Some(libc::ESRCH) {
                    return Err(err);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_unshare_is_net_uts_ipc_pid() {
        let ns: Namespaces = DEFAULT_UNSHARE.parse().unwrap();
        assert_eq!(ns.to_string(), "net,uts,ipc,pid");
        assert!(!ns.contains(Namespace::User));
        assert_eq!(
            ns.clone_flags(),
            libc::CLONE_NEWNS
                | libc::CLONE_NEWNET
                | libc::CLONE_NEWUTS
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWPID
        );
        assert_eq!(
            ns.clone_flags_text(),
            "CLONE_NEWNS|CLONE_NEWNET|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWPID"
        );
    }

    #[test]
    fn empty_none_and_mnt_mean_mount_namespace_only() {
        for s in ["", "none", "mnt", " , ,"] {
            let ns: Namespaces = s.parse().unwrap();
            assert_eq!(ns, Namespaces::empty(), "{s:?}");
            assert_eq!(ns.clone_flags(), libc::CLONE_NEWNS);
        }
    }

    #[test]
    fn unknown_namespace_is_named() {
        let err = "net,cgroupz".parse::<Namespaces>().unwrap_err();
        assert_eq!(err, UnknownNamespace("cgroupz".into()));
        assert!(err.to_string().contains("`cgroupz`"));
        assert!("NET".parse::<Namespaces>().is_err());
    }

    #[test]
    fn user_adds_clone_newuser() {
        let ns: Namespaces = "user".parse().unwrap();
        assert_eq!(ns.clone_flags(), libc::CLONE_NEWNS | libc::CLONE_NEWUSER);
    }

    #[test]
    fn with_user_the_binds_come_before_the_user_namespace() {
        let ns: Namespaces = "user,net,uts,ipc,pid".parse().unwrap();
        // `run` itself: only the mount namespace for the binds, in the host user namespace.
        assert_eq!(ns.outer(), Namespaces::empty());
        assert_eq!(ns.outer().clone_flags(), libc::CLONE_NEWNS);
        // The helper: the user namespace and the pid namespace owned by it, no mount namespace.
        let holder = ns.holder().unwrap();
        assert_eq!(
            holder.member_flags(),
            libc::CLONE_NEWUSER | libc::CLONE_NEWPID
        );
        assert_eq!(holder.member_flags_text(), "CLONE_NEWPID|CLONE_NEWUSER");
        // Init, after the binds and setns(user): a further mount namespace (the locked copy)
        // and the rest.
        let inner = ns.inner().unwrap();
        assert_eq!(inner.to_string(), "net,uts,ipc");
        assert_eq!(
            inner.clone_flags(),
            libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC
        );
        let user_only: Namespaces = "user".parse().unwrap();
        assert_eq!(
            user_only.holder().unwrap().member_flags(),
            libc::CLONE_NEWUSER
        );
        assert_eq!(user_only.inner().unwrap().clone_flags(), libc::CLONE_NEWNS);
    }

    #[test]
    fn without_user_run_creates_everything_and_init_nothing() {
        for s in [DEFAULT_UNSHARE, "net", "none"] {
            let ns: Namespaces = s.parse().unwrap();
            assert_eq!(ns.outer(), ns, "{s}");
            assert_eq!(ns.holder(), None, "{s}");
            assert_eq!(ns.inner(), None, "{s}");
        }
    }

    #[test]
    fn dropped_capabilities_are_the_kernel_numbers() {
        // linux/capability.h
        let names: Vec<(u32, &str)> = DROPPED_WITHOUT_USERNS.to_vec();
        assert!(names.contains(&(21, "CAP_SYS_ADMIN")));
        assert!(names.contains(&(27, "CAP_MKNOD")));
        assert!(names.contains(&(19, "CAP_SYS_PTRACE")));
        assert!(names.contains(&(16, "CAP_SYS_MODULE")));
        assert!(names.contains(&(17, "CAP_SYS_RAWIO")));
        assert!(
            !names.iter().any(|&(n, _)| n == 34),
            "CAP_SYSLOG is the agent's to judge"
        );
    }

    #[test]
    fn exit_code_of_normal_exit_and_signals() {
        // Raw wait statuses as the kernel encodes them: code << 8 for exit, signal number
        // (plus 0x80 for a core dump) for a kill.
        assert_eq!(exit_code(0), Some(0));
        assert_eq!(exit_code(42 << 8), Some(42));
        assert_eq!(exit_code(libc::SIGINT), Some(130));
        assert_eq!(exit_code(libc::SIGKILL), Some(137));
        assert_eq!(exit_code(libc::SIGSEGV | 0x80), Some(128 + libc::SIGSEGV));
        // Stopped by SIGSTOP: 0x7f | sig << 8. Continued: 0xffff.
        assert_eq!(exit_code(0x7f | (libc::SIGSTOP << 8)), None);
        assert_eq!(exit_code(0xffff), None);
    }

    #[test]
    fn terminal_signals_are_not_forwarded_twice() {
        assert!(!should_forward(libc::SI_KERNEL));
        assert!(should_forward(libc::SI_USER));
        assert!(should_forward(libc::SI_QUEUE));
        assert!(should_forward(libc::SI_TKILL));
    }

    #[test]
    fn locked_flags_are_kept_on_remount() {
        assert_eq!(locked_mount_flags(0), 0);
        assert_eq!(
            locked_mount_flags(libc::ST_NOSUID | libc::ST_RELATIME | libc::ST_RDONLY),
            libc::MS_NOSUID | libc::MS_RELATIME
        );
        assert_eq!(
            locked_mount_flags(libc::ST_NODEV | libc::ST_NOEXEC | libc::ST_NOATIME),
            libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_NOATIME
        );
    }

    #[test]
    fn report_round_trips() {
        for report in [
            Report::Setup("`mount(...)` failed: EPERM".into()),
            Report::NotFound("No such file or directory (os error 2)".into()),
            Report::Exec("Permission denied (os error 13)".into()),
        ] {
            assert_eq!(Report::decode(&report.encode()), Some(report));
        }
        assert_eq!(Report::decode(b""), None);
    }

    #[test]
    fn run_errors_map_to_conventional_exit_codes() {
        let exec = |not_found| RunError::Exec {
            command: "x".into(),
            message: "m".into(),
            not_found,
        };
        assert_eq!(exec(true).exit_code(), 127);
        assert_eq!(exec(false).exit_code(), 126);
        assert_eq!(RunError::Setup("m".into()).exit_code(), 125);
        let missing = RunError::KmsgMissing {
            path: "/run/kmsgfs/kmsg".into(),
            dir: "/run/kmsgfs".into(),
        };
        assert_eq!(missing.exit_code(), 125);
        assert!(missing
            .to_string()
            .contains("is kmsgfs serve running on /run/kmsgfs?"));
    }

    fn any_namespaces() -> impl Strategy<Value = Namespaces> {
        (0u8..32).prop_map(Namespaces)
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(ns in any_namespaces()) {
            prop_assert_eq!(ns.to_string().parse::<Namespaces>().unwrap(), ns);
        }

        #[test]
        fn order_and_repetition_do_not_matter(
            names in proptest::collection::vec(
                proptest::sample::select(vec!["net", "uts", "ipc", "pid", "user", "mnt"]), 0..8)
        ) {
            let parsed: Namespaces = names.join(",").parse().unwrap();
            for ns in Namespace::ALL {
                prop_assert_eq!(parsed.contains(ns), names.contains(&ns.name()));
            }
            let mut reversed = names.clone();
            reversed.reverse();
            prop_assert_eq!(reversed.join(",").parse::<Namespaces>().unwrap(), parsed);
            prop_assert_eq!(parsed.clone_flags() & libc::CLONE_NEWNS, libc::CLONE_NEWNS);
        }

        #[test]
        fn exit_code_matches_shell_convention(code in 0i32..256, sig in 1i32..32, core: bool) {
            prop_assert_eq!(exit_code(code << 8), Some(code));
            let status = sig | if core { 0x80 } else { 0 };
            prop_assert_eq!(exit_code(status), Some(128 + sig));
        }
    }
}
