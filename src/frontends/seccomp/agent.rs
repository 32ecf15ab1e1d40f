//! The agent: one thread, one epoll over the socket, the connections and every listener.
//!
//! **Accepting listeners** (seccomp-agent.md §6, §7). The socket is the profile's
//! `listenerPath`. Each connection carries one `ContainerProcessState` and the listener fd. The
//! first complete JSON document is used as soon as it has arrived: runc keeps its end open while
//! a foreground `runc run` lives, so waiting for EOF would stall every container. Connections
//! that close without data are ignored (crun connects before it sets up the container and may
//! fail afterwards). Only peers running as root or as the agent's own uid are served, because a
//! message chooses a ring. A container can have several listeners (`runc exec` adds one per
//! exec); each ends with its own POLLHUP when no task uses its filter any more.
//!
//! **Answering a call** (§4, §9, §10):
//!
//! 1. `RECV` (ENOENT: the caller left; nothing to do).
//! 2. Read the caller's credentials from `/proc/<tid>`, then confirm with `ID_VALID` that they
//!    belonged to the caller; ask the resolver for the [`Policy`].
//! 3. [`syslog::compute`] on the listener's ring, under the ring's [`cursor_lock`].
//! 4. Bytes for the caller go through `/proc/<tid>/mem`, opened *before* the `ID_VALID` check
//!    ([`notify::write_to_caller`]); a short write is EFAULT.
//! 5. [`syslog::apply`] the clear, READ_CLEAR, consumption or console change, then `SEND`; if
//!    the SEND fails, apply the inverse effect. A caller interrupted by a signal restarts the
//!    call with a new id and finds the ring unchanged (seccomp-agent.md §9), and a caller that
//!    got its reply finds the effect already visible to everyone, including a FUSE `/dev/kmsg`
//!    `SEEK_DATA` that it issues right after `dmesg -C` returned. (Applying only after the SEND
//!    leaves a window in which the caller has returned but the clear is not yet visible; a test
//!    hit it.) Everything from compute to the undo runs under the ring's [`cursor_lock`].
//! 6. A READ with nothing unread is parked ([`Outcome::WouldBlock`]) and answered when the ring
//!    appends (the agent registers a [`Listener`] on each ring it serves); parked calls are
//!    re-checked with `ID_VALID` before they are answered and once a second, so callers that
//!    were interrupted are forgotten.
//!
//! CONSOLE_OFF/ON/LEVEL only change the ring's virtual console level (through
//! [`syslog::apply`]). The reply never asks the kernel to CONTINUE the real call.
//!
//! **Stopping.** Dropping the [`AgentHandle`] closes every listener: pending and later calls of
//! those containers fail with ENOSYS (docs/deploy.md, "Agent death").

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::caller;
use super::calls::CallTable;
use super::filter;
use super::logrl::LogLimit;
use super::lxc;
use super::notify::{self, Notification, WriteError};
use super::oci::{self, ContainerProcessState, Parsed};
use super::writer::{self, Completions, Job, Writers};
use super::{Caller, Container, RingResolver, SeccompError};
use crate::frontends::proc_kmsg::cursor_lock;
use crate::ring::{Listener, Ring};
use crate::sys::epoll;
use crate::sys::eventfd::EventFd;
use crate::sys::maps;
use crate::sys::peer::{self, NsId};
use crate::sys::scm;
use crate::sys::SysError;
use crate::syslog::{self, printk_time, Call, Effect, Outcome, Policy};

/// Largest message accepted on a connection before it is dropped.
const MAX_MESSAGE: usize = 1 << 20;
/// Longest a hand-over waits for the writes into callers under way.
const HAND_OVER_WRITES: Duration = Duration::from_secs(1);

/// How often parked calls are re-checked for callers that went away.
const PARKED_SWEEP_MS: i32 = 1000;

/// Connections accepted whose message is not complete yet. A new connection beyond this closes
/// the oldest one: a socket flood cannot take the daemon's file descriptors, and a runtime's
/// connection (which sends its message at once) still gets through.
pub const MAX_PENDING_CONNS: usize = 64;
/// An unfinished connection is closed after this long (crun connects before it sets up the
/// container, so this allows for a slow container start).
pub const CONN_TIMEOUT: Duration = Duration::from_secs(10);
/// Fds kept free for calls when the agent runs out of them ([`MAX_PENDING_CONNS`] shrinks).
pub const FD_HEADROOM: usize = 16;
/// After `accept` fails with EMFILE/ENFILE the socket is not polled for this long.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Attempts of a destructive READ whose cursor moved while its bytes were written.
const READ_ATTEMPTS: u32 = 3;

const TOKEN_WAKE: u64 = 0;
const TOKEN_SOCKET: u64 = 1;
const TOKEN_LXC_SOCKET: u64 = 2;
/// LXC proxy connections served at once (one per container monitor).
pub const MAX_LXC_CONNS: usize = 4096;

/// Instrumentation points, for tests and tracing. Every method but [`AgentHooks::writing`] runs
/// on the agent thread; blocking in one blocks the agent.
pub trait AgentHooks: Send + Sync {
    /// A `syslog` notification of task `tid` for `action` was received, before anything else
    /// is done for it.
    fn received(&self, tid: u32, action: i32) {
        let _ = (tid, action);
    }

    /// The reply to task `tid`'s `action` has been computed and its bytes are about to be
    /// written into the caller (before `/proc/<tid>/mem` is opened).
    fn before_write(&self, tid: u32, action: i32) {
        let _ = (tid, action);
    }

    /// Runs on a **writer thread**, not the agent thread: the destination of task `tid`'s
    /// reply to `action` passed its checks (anonymous private memory) and the bytes are about to
    /// be written. Blocking here blocks only that writer.
    fn writing(&self, tid: u32, action: i32) {
        let _ = (tid, action);
    }

    /// The effect of task `tid`'s `action` has been applied and the reply is about to be sent
    /// (a failed SEND undoes the effect).
    fn before_reply(&self, tid: u32, action: i32) {
        let _ = (tid, action);
    }
}

/// Options of [`Agent::spawn_with`].
#[derive(Clone)]
pub struct AgentOptions {
    /// Permission bits of the socket; 0o600 by default (root-only: a message chooses a ring).
    pub socket_mode: u32,
    /// Instrumentation.
    pub hooks: Option<Arc<dyn AgentHooks>>,
    /// Called with every listener a runtime hands over on the socket, once it is served: the
    /// daemon gives a copy to the restart holder (`crate::restart::listeners`), so that the
    /// container's `syslog(2)` outlives this agent. Not called for [`AgentHandle::adopt`].
    pub on_listener: Option<ListenerHook>,
    /// Where parked calls are recorded for a successor ([`CallTable`]; a daemon with a holder
    /// keeps it in a memfd there).
    pub calls: Option<Arc<Mutex<CallTable>>>,
    /// Also serve LXC's seccomp notify proxy protocol (`lxc.seccomp.notify.proxy`,
    /// [`lxc`]) on this socket.
    pub lxc_socket: Option<LxcSocket>,
    /// Ask the kernel for synchronous wake-ups on every listener
    /// ([`notify::set_sync_wakeup`]; true by default, false only to measure without).
    pub sync_wakeup: bool,
}

/// See [`AgentOptions::on_listener`].
pub type ListenerHook = Arc<dyn Fn(BorrowedFd<'_>, &ContainerProcessState) + Send + Sync>;

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            socket_mode: 0o600,
            hooks: None,
            on_listener: None,
            calls: None,
            lxc_socket: None,
            sync_wakeup: true,
        }
    }
}

/// Counters of one agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentStats {
    /// Listeners currently held.
    pub listeners: u64,
    /// Listeners accepted since start.
    pub listeners_accepted: u64,
    /// Connections or listeners refused (bad message, resolver error, foreign peer).
    pub rejected: u64,
    /// Notifications received.
    pub received: u64,
    /// Replies delivered.
    pub answered: u64,
    /// Notifications whose caller left before the reply (nothing written, nothing applied).
    pub stale: u64,
    /// READ calls currently parked.
    pub parked: u64,
    /// Calls answered with EFAULT because the caller's buffer was not writable.
    pub faults: u64,
}

#[derive(Default)]
struct Counters {
    listeners: AtomicU64,
    listeners_accepted: AtomicU64,
    rejected: AtomicU64,
    received: AtomicU64,
    answered: AtomicU64,
    stale: AtomicU64,
    parked: AtomicU64,
    faults: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Shared {
    wake: EventFd,
    stop: AtomicBool,
    incoming: Mutex<Vec<(OwnedFd, ContainerProcessState)>>,
    /// Calls a previous agent received and had not answered ([`AgentHandle::resume`]).
    resumed: Mutex<Vec<Notification>>,
    /// Set by [`AgentHandle::hand_over`]: on stop, parked calls stay unanswered and recorded.
    handing_over: AtomicBool,
    counters: Counters,
}

impl Shared {
    fn wake(&self) {
        self.wake.signal();
    }
}

/// Told by a ring after each append; wakes the agent so that parked READs are retried.
struct RingWaker(Weak<Shared>);

impl Listener for RingWaker {
    fn appended(&self, _next_seq: u64) {
        if let Some(s) = self.0.upgrade() {
            s.wake();
        }
    }
}

/// The `syslog(2)` agent. See the module documentation.
pub struct Agent;

/// A running agent. Dropping it stops the agent thread and closes every listener.
pub struct AgentHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    socket: PathBuf,
    lxc_socket: Option<PathBuf>,
}

impl Agent {
    /// Listen on `socket_path` (mode 0600) and serve every listener handed over there from
    /// the rings `resolver` chooses.
    pub fn spawn(
        socket_path: impl AsRef<Path>,
        resolver: Arc<dyn RingResolver>,
    ) -> Result<AgentHandle, SeccompError> {
        Self::spawn_with(socket_path, resolver, AgentOptions::default())
    }

    /// [`Agent::spawn`] with options.
    pub fn spawn_with(
        socket_path: impl AsRef<Path>,
        resolver: Arc<dyn RingResolver>,
        options: AgentOptions,
    ) -> Result<AgentHandle, SeccompError> {
        let socket = socket_path.as_ref().to_path_buf();
        let io_err = |call: String| move |source| SeccompError::Sys(SysError::new(call, source));

        let (notif, resp) =
            filter::notif_sizes().map_err(io_err("seccomp(SECCOMP_GET_NOTIF_SIZES)".into()))?;
        let ours = std::mem::size_of::<libc::seccomp_notif>();
        if notif > ours || resp > std::mem::size_of::<libc::seccomp_notif_resp>() {
            return Err(SeccompError::NotifSize {
                kernel: notif,
                ours,
            });
        }

        free_socket_path(&socket, |p| UnixStream::connect(p).is_ok())?;
        let listener =
            UnixListener::bind(&socket).map_err(io_err(format!("bind({})", socket.display())))?;
        std::fs::set_permissions(
            &socket,
            std::fs::Permissions::from_mode(options.socket_mode),
        )
        .map_err(io_err(format!("chmod({})", socket.display())))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("fcntl(O_NONBLOCK)".into()))?;

        let epoll = epoll::create()?;
        let wake = EventFd::new()?;
        epoll::add(
            epoll.as_fd(),
            wake.as_fd(),
            libc::EPOLLIN as u32,
            TOKEN_WAKE,
        )
        .map_err(io_err("epoll_ctl(ADD, eventfd)".into()))?;
        epoll::add(
            epoll.as_fd(),
            listener.as_fd(),
            libc::EPOLLIN as u32,
            TOKEN_SOCKET,
        )
        .map_err(io_err("epoll_ctl(ADD, socket)".into()))?;
        let lxc_socket = match &options.lxc_socket {
            None => None,
            Some(l) => {
                crate::sys::fd::set_nonblocking(l.fd.as_fd())?;
                epoll::add(
                    epoll.as_fd(),
                    l.fd.as_fd(),
                    libc::EPOLLIN as u32,
                    TOKEN_LXC_SOCKET,
                )
                .map_err(io_err("epoll_ctl(ADD, LXC socket)".into()))?;
                log::info!(
                    "seccomp agent serving LXC's notify proxy on {}",
                    l.path.display()
                );
                Some(Arc::clone(&l.fd))
            }
        };

        let shared = Arc::new(Shared {
            wake,
            stop: AtomicBool::new(false),
            incoming: Mutex::new(Vec::new()),
            resumed: Mutex::new(Vec::new()),
            handing_over: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let weak = Arc::downgrade(&shared);
        let completions = Arc::new(Completions::new(Box::new(move || {
            if let Some(s) = weak.upgrade() {
                s.wake();
            }
        })));
        let own_ns = match (
            peer::ns_of_path("/proc/self/ns/pid"),
            peer::ns_of_path("/proc/self/ns/user"),
        ) {
            (Ok(p), Ok(u)) => Some((p, u)),
            (Err(e), _) | (_, Err(e)) => {
                log::error!("{e}; the seccomp agent will refuse every connection");
                None
            }
        };
        let worker = Worker {
            epoll,
            socket: listener,
            lxc_socket,
            lxc: HashMap::new(),
            sync_wakeup: options.sync_wakeup,
            shared: shared.clone(),
            resolver,
            hooks: options.hooks,
            on_listener: options.on_listener,
            calls: options.calls,
            conns: HashMap::new(),
            listeners: HashMap::new(),
            parked: Vec::new(),
            hooked_rings: Vec::new(),
            next_token: 3,
            writers: Writers::new(completions.clone()),
            completions,
            inflight: HashMap::new(),
            inflight_total: 0,
            waiting: HashMap::new(),
            answering: HashMap::new(),
            own_ns,
            rl: LogLimit::default(),
            accept_paused_until: None,
            conn_cap: MAX_PENDING_CONNS,
            fd_pressure_at: None,
        };
        let thread = std::thread::Builder::new()
            .name("kmsgfs-seccomp".into())
            .spawn(move || worker.run())
            .map_err(io_err("spawn(kmsgfs-seccomp)".into()))?;
        log::info!("seccomp agent listening on {}", socket.display());
        Ok(AgentHandle {
            shared,
            thread: Some(thread),
            socket,
            lxc_socket: options.lxc_socket.map(|l| l.path),
        })
    }
}

impl AgentHandle {
    /// The socket OCI runtimes connect to.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Serve a listener obtained some other way (an fd holder after a restart, or a process
    /// started in-process), exactly as if `state` had arrived on the socket with it.
    pub fn adopt(&self, listener: OwnedFd, state: ContainerProcessState) {
        self.shared.incoming.lock().push((listener, state));
        self.shared.wake();
    }

    /// Current counters.
    pub fn stats(&self) -> AgentStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AgentStats {
            listeners: get(&c.listeners),
            listeners_accepted: get(&c.listeners_accepted),
            rejected: get(&c.rejected),
            received: get(&c.received),
            answered: get(&c.answered),
            stale: get(&c.stale),
            parked: get(&c.parked),
            faults: get(&c.faults),
        }
    }

    /// Answer calls a previous agent received but had not answered (blocked `syslog(2)`
    /// READs it had parked, from its [`AgentHandle::hand_over`]): a received notification is
    /// never received again, so without this its caller would wait until a signal. Each is
    /// matched to the listener that issued it (`SECCOMP_IOCTL_NOTIF_ID_VALID` holds only there)
    /// once adopted listeners are registered, and answered like a new call; those no listener
    /// knows any more (the caller left) are dropped.
    pub fn resume(&self, calls: Vec<Notification>) {
        if calls.is_empty() {
            return;
        }
        self.shared.resumed.lock().extend(calls);
        self.shared.wake();
    }

    /// Stop for a successor: like dropping the handle, but the calls parked (blocked READs)
    /// stay unanswered and recorded in [`AgentOptions::calls`], for the successor's
    /// [`AgentHandle::resume`]. The listeners' copies kept by the holder keep them alive.
    pub fn hand_over(self) {
        self.shared.handing_over.store(true, Ordering::SeqCst);
    }

    /// Stop the agent and close every listener (the same as dropping the handle).
    pub fn stop(self) {}
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("seccomp agent thread panicked");
            }
        }
        let _ = std::fs::remove_file(&self.socket);
        // A successor serves the LXC socket from the holder's copy: LXC monitors reconnect to
        // this path, and their connections wait in its backlog meanwhile.
        if !self.shared.handing_over.load(Ordering::SeqCst) {
            if let Some(p) = &self.lxc_socket {
                let _ = std::fs::remove_file(p);
            }
        }
        log::info!("seccomp agent on {} stopped", self.socket.display());
    }
}

/// The bound `SOCK_SEQPACKET` socket LXC monitors connect to
/// (`lxc.seccomp.notify.proxy = unix:PATH`).
#[derive(Clone)]
pub struct LxcSocket {
    /// Where it is bound.
    pub path: PathBuf,
    /// The listening socket.
    pub fd: Arc<OwnedFd>,
}

impl LxcSocket {
    /// Bind and listen at `path` (mode 0600), replacing a stale socket there.
    pub fn bind(path: &Path) -> Result<LxcSocket, SeccompError> {
        free_socket_path(path, |p| scm::seqpacket_connect(p).is_ok())?;
        let fd = scm::seqpacket_listen(path).map_err(|source| {
            SeccompError::Sys(SysError::new(
                format!("bind(SOCK_SEQPACKET, {})", path.display()),
                source,
            ))
        })?;
        Ok(LxcSocket {
            path: path.to_path_buf(),
            fd: Arc::new(fd),
        })
    }

    /// A socket bound at `path` earlier (kept by the restart holder): monitors that connected
    /// while no agent ran wait in its backlog.
    pub fn adopt(path: &Path, fd: OwnedFd) -> LxcSocket {
        LxcSocket {
            path: path.to_path_buf(),
            fd: Arc::new(fd),
        }
    }
}

/// Make `path` free for a new socket: create its directory, remove a stale socket; refuse if
/// `live` connects to it (another agent serves it).
fn free_socket_path(path: &Path, live: impl Fn(&Path) -> bool) -> Result<(), SeccompError> {
    let io_err = |call: String| move |source| SeccompError::Sys(SysError::new(call, source));
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(io_err(format!("mkdir -p {}", dir.display())))?;
        }
    }
    if path.exists() {
        if live(path) {
            return Err(SeccompError::InUse(path.display().to_string()));
        }
        std::fs::remove_file(path).map_err(io_err(format!("unlink({})", path.display())))?;
    }
    Ok(())
}

/// A connection from a runtime, until its message is complete.
struct Conn {
    stream: UnixStream,
    /// When it was accepted ([`CONN_TIMEOUT`], [`MAX_PENDING_CONNS`]).
    since: Instant,
    /// The sender's pid in the agent's PID namespace (SO_PEERCRED).
    peer_pid: u32,
    /// Whether the sender's namespaces were checked (false: it exited before it could be
    /// inspected; see [`Worker::peer_allowed`]).
    verified: bool,
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// A listener and what its calls are answered from.
struct Held {
    fd: Arc<OwnedFd>,
    container: Arc<Container>,
    /// The ring of every call, or `None` when each call picks its ring from the caller
    /// ([`RingResolver::task_ring`]).
    ring: Option<Arc<Ring>>,
}

/// A connection from an LXC monitor ([`lxc`]): one container, one call at a time.
struct LxcConn {
    sock: OwnedFd,
    /// The monitor's pid (SO_PEERCRED).
    peer_pid: u32,
    /// Known from the first record.
    container: Option<Arc<Container>>,
    /// The resolver's ring for every call (`Some(None)`: chosen per call), once asked.
    fixed: Option<Option<Arc<Ring>>>,
    /// A record is being answered: the connection is not read until its answer went out.
    busy: bool,
}

/// Where a call's answer goes.
#[derive(Clone)]
enum ReplyTo {
    /// `SECCOMP_IOCTL_NOTIF_SEND` on the listener.
    Listener,
    /// A record on an LXC proxy connection; LXC sends it to the kernel.
    Lxc(Arc<LxcCall>),
}

/// A call an LXC monitor forwarded.
struct LxcCall {
    /// The connection's token.
    conn: u64,
    request: lxc::Request,
    received: Instant,
}

/// A call waiting for an answer.
#[derive(Clone)]
struct Pending {
    /// The listener's token (an LXC connection's for a forwarded call).
    token: u64,
    /// The listener the call came from (`ID_VALID`, the write into the caller).
    fd: Arc<OwnedFd>,
    to: ReplyTo,
    /// The notification as received (handed to a successor if still parked at a hand-over).
    n: Notification,
    id: u64,
    tid: u32,
    call: Call,
    buf: u64,
    policy: Policy,
    /// The ring chosen for this call.
    ring: Arc<Ring>,
}

/// What finishes a call once its bytes are in the caller.
struct WriteCtx {
    p: Pending,
    ret: i32,
    effect: Effect,
    attempt: u32,
}

enum Answered {
    Done,
    Park,
}

struct Worker {
    epoll: OwnedFd,
    socket: UnixListener,
    lxc_socket: Option<Arc<OwnedFd>>,
    lxc: HashMap<u64, LxcConn>,
    /// [`AgentOptions::sync_wakeup`].
    sync_wakeup: bool,
    shared: Arc<Shared>,
    resolver: Arc<dyn RingResolver>,
    hooks: Option<Arc<dyn AgentHooks>>,
    on_listener: Option<ListenerHook>,
    calls: Option<Arc<Mutex<CallTable>>>,
    conns: HashMap<u64, Conn>,
    listeners: HashMap<u64, Held>,
    parked: Vec<Pending>,
    /// Rings the agent woke on, with the listener it registered there.
    hooked_rings: Vec<(Weak<Ring>, Arc<dyn Listener>)>,
    next_token: u64,
    writers: Writers<WriteCtx>,
    completions: Arc<Completions<WriteCtx>>,
    /// Unfinished write jobs per listener token, and in all.
    inflight: HashMap<u64, usize>,
    inflight_total: usize,
    /// Jobs waiting for a writer slot, per listener token.
    waiting: HashMap<u64, VecDeque<Job<WriteCtx>>>,
    /// Calls being answered (a write job waiting or running), by notification id, with their
    /// listener token: recorded for a successor like parked calls ([`Worker::sync_calls`]).
    answering: HashMap<u64, (u64, Notification)>,
    /// The agent's own pid and user namespaces: only peers in both are served.
    own_ns: Option<(NsId, NsId)>,
    /// Every log line a client can trigger goes through this.
    rl: LogLimit,
    /// The socket is not polled until then (EMFILE/ENFILE back-off).
    accept_paused_until: Option<Instant>,
    /// The current bound on unfinished connections ([`Worker::fd_pressure`]).
    conn_cap: usize,
    /// The last time the agent ran out of fds.
    fd_pressure_at: Option<Instant>,
}

impl Worker {
    fn run(mut self) {
        let mut events = [epoll::NO_EVENT; 32];
        while !self.shared.stop.load(Ordering::SeqCst) {
            let timeout = self.epoll_timeout();
            let n = match epoll::wait(self.epoll.as_fd(), &mut events, timeout) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("`epoll_wait` failed: {e}; the seccomp agent stops");
                    break;
                }
            };
            for ev in &events[..n] {
                let (flags, token) = (ev.events, ev.u64);
                match token {
                    TOKEN_WAKE => self.drain_wake(),
                    TOKEN_SOCKET => self.accept(),
                    TOKEN_LXC_SOCKET => self.accept_lxc(),
                    t if self.conns.contains_key(&t) => self.conn_readable(t),
                    t if self.lxc.contains_key(&t) => self.lxc_event(t, flags),
                    t if self.listeners.contains_key(&t) => {
                        if flags & libc::EPOLLIN as u32 != 0 {
                            self.notification(t);
                        }
                        let hup = (libc::EPOLLHUP | libc::EPOLLERR) as u32;
                        if flags & hup != 0 {
                            self.close_listener(t);
                        }
                    }
                    _ => {}
                }
            }
            self.retry_parked();
            self.housekeeping();
            self.sync_calls();
        }
        let n = self.listeners.len();
        self.close_lxc_intake();
        if self.shared.handing_over.load(Ordering::SeqCst) {
            // Finish the answers under way (their bytes may be half in the caller): the
            // successor cannot take over a write job, only a call not yet answered.
            let deadline = Instant::now() + HAND_OVER_WRITES;
            while self.inflight_total > 0 && Instant::now() < deadline {
                for (job, result) in self.completions.take() {
                    self.write_finished(job, result);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            self.release_lxc_parked();
            self.sync_calls();
            if !self.parked.is_empty() {
                log::info!(
                    "seccomp agent: {} blocked call(s) left for the next agent",
                    self.parked.len()
                );
            }
            self.parked.clear();
            self.listeners.clear();
            for (ring, waker) in self.hooked_rings.drain(..) {
                if let Some(ring) = ring.upgrade() {
                    ring.remove_listener(&waker);
                }
            }
            return;
        }
        self.release_lxc_parked();
        self.parked.clear();
        self.sync_calls();
        self.listeners.clear();
        for (ring, waker) in self.hooked_rings.drain(..) {
            if let Some(ring) = ring.upgrade() {
                ring.remove_listener(&waker);
            }
        }
        self.shared.counters.listeners.store(0, Ordering::Relaxed);
        self.shared.counters.parked.store(0, Ordering::Relaxed);
        if n > 0 {
            log::warn!("seccomp agent closed {n} listeners: their syslog(2) now fails with ENOSYS");
        }
    }

    /// Milliseconds until the next timed duty: the parked sweep, the oldest unfinished
    /// connection's timeout, or the end of an accept back-off; -1 if none.
    fn epoll_timeout(&self) -> i32 {
        let now = Instant::now();
        let mut due: Option<Duration> = None;
        let mut at = |d: Duration| due = Some(due.map_or(d, |x| x.min(d)));
        if !self.parked.is_empty() {
            at(Duration::from_millis(PARKED_SWEEP_MS as u64));
        }
        for p in &self.parked {
            if let ReplyTo::Lxc(c) = &p.to {
                at((c.received + lxc::READ_WAIT).saturating_duration_since(now));
            }
        }
        if let Some(oldest) = self.conns.values().map(|c| c.since).min() {
            at((oldest + CONN_TIMEOUT).saturating_duration_since(now));
        }
        if let Some(until) = self.accept_paused_until {
            at(until.saturating_duration_since(now));
        }
        match due {
            None => -1,
            // Round up so that the duty is due when epoll returns.
            Some(d) => i32::try_from(d.as_millis() + 1).unwrap_or(i32::MAX),
        }
    }

    /// Close timed-out connections; poll the socket again after a back-off.
    fn housekeeping(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| now.duration_since(c.since) >= CONN_TIMEOUT)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            rl_log!(
                self.rl,
                log::Level::Warn,
                "seccomp socket: closing a connection idle for {CONN_TIMEOUT:?}"
            );
            bump(&self.shared.counters.rejected);
            self.drop_conn(t);
        }
        if self
            .fd_pressure_at
            .is_some_and(|at| now.duration_since(at) >= CONN_TIMEOUT)
        {
            self.fd_pressure_at = None;
            self.conn_cap = MAX_PENDING_CONNS;
        }
        if self.accept_paused_until.is_some_and(|u| now >= u) {
            self.accept_paused_until = None;
            if let Err(e) = epoll::add(
                self.epoll.as_fd(),
                self.socket.as_fd(),
                libc::EPOLLIN as u32,
                TOKEN_SOCKET,
            ) {
                log::error!("`epoll_ctl(ADD, socket)` after an accept back-off failed: {e}");
            }
            if let Some(l) = &self.lxc_socket {
                if let Err(e) = epoll::add(
                    self.epoll.as_fd(),
                    l.as_fd(),
                    libc::EPOLLIN as u32,
                    TOKEN_LXC_SOCKET,
                ) {
                    log::error!("`epoll_ctl(ADD, LXC socket)` after a back-off failed: {e}");
                }
            }
        }
    }

    fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    /// Record the parked calls for a successor ([`CallTable`]).
    fn sync_calls(&mut self) {
        let Some(t) = &self.calls else { return };
        let mut t = t.lock();
        // The common turn: nothing parked or being answered, nothing recorded.
        if self.parked.is_empty() && self.answering.is_empty() && t.is_empty() {
            return;
        }
        // A call an LXC monitor forwarded is answered through its connection, which dies with
        // this agent: a successor could not answer it.
        let missed = t.sync(
            self.parked
                .iter()
                .filter(|p| matches!(p.to, ReplyTo::Listener))
                .map(|p| &p.n)
                .chain(self.answering.values().map(|(_, n)| n)),
        );
        if missed > 0 {
            rl_log!(
                self.rl,
                log::Level::Warn,
                "{missed} blocked syslog(2) call(s) are not recorded (table full); a crash of \
                 the daemon leaves them waiting until a signal"
            );
        }
    }

    fn drain_wake(&mut self) {
        self.shared.wake.clear();
        let incoming = std::mem::take(&mut *self.shared.incoming.lock());
        for (fd, state) in incoming {
            self.register(fd, &state, 0, false);
        }
        let resumed = std::mem::take(&mut *self.shared.resumed.lock());
        for n in resumed {
            let owner = self
                .listeners
                .iter()
                .find(|(_, h)| notify::id_valid(h.fd.as_fd(), n.id))
                .map(|(&t, _)| t);
            match owner {
                Some(t) => {
                    bump(&self.shared.counters.received);
                    self.handle(t, n);
                }
                None => bump(&self.shared.counters.stale),
            }
        }
        for (job, result) in self.completions.take() {
            self.write_finished(job, result);
        }
    }

    /// Whether a peer may hand over listeners: it runs in the agent's own pid **and** user
    /// namespaces (so it is no container, whatever its uid), checked through its pidfd.
    ///
    /// A runtime may connect, send and exit before the agent gets to it (`runc exec` does);
    /// an exited process has no namespaces to read (ENOENT, ESRCH), and one in the middle of
    /// exiting refuses them (EACCES from `/proc/<pid>/ns/*`: seen with `podman exec` under
    /// runc, about one run in twenty). Such a peer is accepted only if it was
    /// root in the agent's user namespace when it connected (`SO_PEERCRED`, fixed at
    /// `connect()`; a container's root under a user namespace is not), and unverified: its
    /// listener's calls get rings chosen per call from the calling task, never a ring named
    /// by its `io.kmsgfs.key` (docs/security.md T4).
    fn peer_allowed(&mut self, stream: BorrowedFd<'_>) -> Option<(u32, bool)> {
        let mut result = peer::peer_namespaces(stream);
        // The check itself needs fds (pidfd, nsfs): out of them, shrink the connection bound
        // and try once more.
        if matches!(&result, Err(e) if matches!(e.errno(), Some(libc::EMFILE | libc::ENFILE)))
            && self.fd_pressure()
        {
            result = peer::peer_namespaces(stream);
        }
        let peer = match result {
            Ok(p) => p,
            Err(e) if matches!(e.errno(), Some(libc::ENOENT | libc::ESRCH | libc::EACCES)) => {
                return match peer::peer_cred(stream) {
                    Ok((pid, 0)) if pid != 0 => {
                        rl_log!(
                            self.rl,
                            log::Level::Debug,
                            "seccomp socket: pid {pid} (uid 0) exited before it could be inspected; accepted unverified"
                        );
                        Some((pid, false))
                    }
                    _ => {
                        rl_log!(
                            self.rl,
                            log::Level::Warn,
                            "seccomp socket: refusing a peer that exited before it could be inspected: {e}"
                        );
                        None
                    }
                };
            }
            Err(e) => {
                rl_log!(
                    self.rl,
                    log::Level::Warn,
                    "seccomp socket: refusing a peer: {e}"
                );
                return None;
            }
        };
        // The one exception: a user namespace made directly below ours that maps only root to
        // root, by a process in our pid namespace. Only a process with euid 0 in our user
        // namespace can write that map, and `kmsgfs run --unshare user` hands over from such a
        // namespace (it unshares before it forks init).
        let same = self.own_ns.is_some_and(|(pid_ns, user_ns)| {
            peer.pid_ns == pid_ns
                && (peer.user_ns == user_ns
                    || (peer.user_ns_parent == Some(user_ns) && peer.root_only_map))
        });
        if !same {
            rl_log!(
                self.rl,
                log::Level::Warn,
                "seccomp socket: refusing pid {} (uid {}): not in the agent's pid and user namespaces",
                peer.pid,
                peer.uid
            );
            return None;
        }
        Some((peer.pid, true))
    }

    /// Out of file descriptors: lower the bound on unfinished connections to
    /// [`FD_HEADROOM`] below what is open now and close the oldest ones down to it, so that the
    /// fds a call needs (`/proc` reads, a received listener) stay free. The bound returns to
    /// [`MAX_PENDING_CONNS`] [`CONN_TIMEOUT`] after the last shortage. False if nothing could
    /// be freed.
    fn fd_pressure(&mut self) -> bool {
        self.fd_pressure_at = Some(Instant::now());
        self.conn_cap = self.conns.len().saturating_sub(FD_HEADROOM).max(1);
        let mut freed = false;
        while self.conns.len() > self.conn_cap.saturating_sub(1) {
            let Some(t) = self.oldest_conn() else { break };
            bump(&self.shared.counters.rejected);
            self.drop_conn(t);
            freed = true;
        }
        rl_log!(
            self.rl,
            log::Level::Warn,
            "seccomp agent out of file descriptors: at most {} unfinished connections for {:?}",
            self.conn_cap,
            CONN_TIMEOUT
        );
        freed
    }

    /// The unfinished connection accepted first.
    fn oldest_conn(&self) -> Option<u64> {
        self.conns
            .iter()
            .min_by_key(|(_, c)| c.since)
            .map(|(t, _)| *t)
    }

    fn accept(&mut self) {
        let mut relieved = false;
        loop {
            if self.accept_paused_until.is_some() {
                return;
            }
            let stream = match self.socket.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let exhausted = matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    );
                    rl_log!(
                        self.rl,
                        log::Level::Warn,
                        "`accept` on the seccomp socket failed: {e}"
                    );
                    if exhausted && !relieved && self.fd_pressure() {
                        // Fds of old unfinished connections were freed: accept the newest
                        // (after a flood ends, a runtime's connection gets in).
                        relieved = true;
                        continue;
                    }
                    if exhausted {
                        self.pause_accepting();
                    }
                    return;
                }
            };
            let Some((peer_pid, verified)) = self.peer_allowed(stream.as_fd()) else {
                bump(&self.shared.counters.rejected);
                continue;
            };
            if let Err(e) = stream.set_nonblocking(true) {
                rl_log!(
                    self.rl,
                    log::Level::Warn,
                    "`fcntl(O_NONBLOCK)` on a seccomp connection failed: {e}"
                );
                continue;
            }
            if self.conns.len() >= self.conn_cap {
                if let Some(t) = self.oldest_conn() {
                    rl_log!(
                        self.rl,
                        log::Level::Warn,
                        "seccomp socket: {} unfinished connections; closing the oldest",
                        self.conn_cap
                    );
                    bump(&self.shared.counters.rejected);
                    self.drop_conn(t);
                }
            }
            let t = self.token();
            let events = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
            if let Err(e) = epoll::add(self.epoll.as_fd(), stream.as_fd(), events, t) {
                rl_log!(
                    self.rl,
                    log::Level::Warn,
                    "`epoll_ctl(ADD)` for a seccomp connection failed: {e}"
                );
                continue;
            }
            self.conns.insert(
                t,
                Conn {
                    stream,
                    since: Instant::now(),
                    buf: Vec::new(),
                    fds: Vec::new(),
                    peer_pid,
                    verified,
                },
            );
        }
    }

    fn conn_readable(&mut self, t: u64) {
        let Some(conn) = self.conns.get_mut(&t) else {
            return;
        };
        let mut chunk = vec![0u8; oci::RECV_BUFFER];
        let (n, fds) = match oci::recv_fds(conn.stream.as_fd(), &mut chunk) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                rl_log!(
                    self.rl,
                    log::Level::Warn,
                    "`recvmsg` on a seccomp connection failed: {e}"
                );
                bump(&self.shared.counters.rejected);
                self.drop_conn(t);
                return;
            }
        };
        conn.buf.extend_from_slice(&chunk[..n]);
        conn.fds.extend(fds);
        if n == 0 {
            let len = conn.buf.len();
            if conn.buf.is_empty() && conn.fds.is_empty() {
                // crun connects before it sets up the container; a failed start leaves an
                // empty connection (seccomp-agent.md §7.3).
                rl_log!(
                    self.rl,
                    log::Level::Debug,
                    "seccomp socket: empty connection ignored"
                );
            } else {
                rl_log!(
                    self.rl,
                    log::Level::Warn,
                    "seccomp socket: connection closed after {len} bytes of an incomplete message"
                );
                bump(&self.shared.counters.rejected);
            }
            self.drop_conn(t);
            return;
        }
        match oci::parse(&conn.buf) {
            Parsed::Incomplete if conn.buf.len() < MAX_MESSAGE => {}
            Parsed::Incomplete => {
                rl_log!(
                    self.rl,
                    log::Level::Warn,
                    "seccomp socket: message larger than {MAX_MESSAGE} bytes dropped"
                );
                bump(&self.shared.counters.rejected);
                self.drop_conn(t);
            }
            Parsed::Invalid(e) => {
                rl_log!(
                    self.rl,
                    log::Level::Warn,
                    "seccomp socket: not a ContainerProcessState: {e}"
                );
                bump(&self.shared.counters.rejected);
                self.drop_conn(t);
            }
            Parsed::Complete(state) => {
                // Never wait for EOF: runc keeps its end open.
                let Some(conn) = self.conns.remove(&t) else {
                    return;
                };
                epoll::delete(self.epoll.as_fd(), conn.stream.as_fd());
                let Some(idx) = state.seccomp_fd_index() else {
                    rl_log!(
                        self.rl,
                        log::Level::Warn,
                        "seccomp socket: container {} sent no \"{}\" fd",
                        state.state.id,
                        oci::SECCOMP_FD_NAME
                    );
                    bump(&self.shared.counters.rejected);
                    return;
                };
                let mut state = state;
                if !conn.verified
                    && state
                        .state
                        .annotations
                        .remove(super::KEY_ANNOTATION)
                        .is_some()
                {
                    rl_log!(
                        self.rl,
                        log::Level::Warn,
                        "seccomp socket: container {}: ignoring {} from an unverified peer",
                        state.state.id,
                        super::KEY_ANNOTATION
                    );
                }
                match conn.fds.into_iter().nth(idx) {
                    Some(fd) => self.register(fd, &state, conn.peer_pid, true),
                    None => {
                        rl_log!(
                            self.rl,
                            log::Level::Warn,
                            "seccomp socket: container {} named fd {idx} but sent fewer fds",
                            state.state.id
                        );
                        bump(&self.shared.counters.rejected);
                    }
                }
            }
        }
    }

    /// Stop polling the sockets for [`ACCEPT_BACKOFF`] (out of fds: never spin on EMFILE; the
    /// connections stay queued in the backlog).
    fn pause_accepting(&mut self) {
        epoll::delete(self.epoll.as_fd(), self.socket.as_fd());
        if let Some(l) = &self.lxc_socket {
            epoll::delete(self.epoll.as_fd(), l.as_fd());
        }
        self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
    }

    /// Accept LXC monitors' connections: each stays open for its container's life.
    fn accept_lxc(&mut self) {
        loop {
            if self.accept_paused_until.is_some() {
                return;
            }
            let Some(listener) = &self.lxc_socket else {
                return;
            };
            let sock = match scm::accept(listener.as_fd()) {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    rl_log!(
                        self.rl,
                        log::Level::Warn,
                        "`accept` on the LXC proxy socket failed: {e}"
                    );
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) {
                        self.fd_pressure();
                        self.pause_accepting();
                    }
                    return;
                }
            };
            // A monitor lives as long as its container: one that left before it could be
            // inspected sends nothing worth serving.
            let Some((peer_pid, true)) = self.peer_allowed(sock.as_fd()) else {
                bump(&self.shared.counters.rejected);
                continue;
            };
            if self.lxc.len() >= MAX_LXC_CONNS {
                rl_log!(
                    self.rl,
                    log::Level::Warn,
                    "LXC proxy socket: {MAX_LXC_CONNS} monitors connected; refusing pid {peer_pid}"
                );
                bump(&self.shared.counters.rejected);
                continue;
            }
            if let Err(e) = crate::sys::fd::set_nonblocking(sock.as_fd()) {
                rl_log!(self.rl, log::Level::Warn, "LXC proxy connection: {e}");
                continue;
            }
            let t = self.token();
            let events = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
            if let Err(e) = epoll::add(self.epoll.as_fd(), sock.as_fd(), events, t) {
                rl_log!(
                    self.rl,
                    log::Level::Warn,
                    "`epoll_ctl(ADD)` for an LXC proxy connection failed: {e}"
                );
                continue;
            }
            rl_log!(
                self.rl,
                log::Level::Debug,
                "LXC proxy: monitor pid {peer_pid} connected"
            );
            self.lxc.insert(
                t,
                LxcConn {
                    sock,
                    peer_pid,
                    container: None,
                    fixed: None,
                    busy: false,
                },
            );
        }
    }

    /// A record (or the end) on LXC connection `t`.
    fn lxc_event(&mut self, t: u64, flags: u32) {
        let Some(conn) = self.lxc.get(&t) else {
            return;
        };
        if conn.busy || flags & libc::EPOLLIN as u32 == 0 {
            // Only the end is polled while a record is answered: the monitor left.
            self.drop_lxc(t);
            return;
        }
        let mut buf = vec![0u8; lxc::MAX_RECORD + 1];
        let (n, mut fds) = match scm::recv_fds(conn.sock.as_fd(), &mut buf) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                rl_log!(
                    self.rl,
                    log::Level::Warn,
                    "`recvmsg` on an LXC proxy connection failed: {e}"
                );
                self.drop_lxc(t);
                return;
            }
        };
        if n == 0 && fds.is_empty() {
            self.drop_lxc(t);
            return;
        }
        let request = match lxc::parse(&buf[..n], fds.len()) {
            Ok(r) => r,
            Err(e) => {
                rl_log!(
                    self.rl,
                    log::Level::Warn,
                    "LXC proxy: monitor pid {}: not a notification record: {e}",
                    conn.peer_pid
                );
                bump(&self.shared.counters.rejected);
                // An empty record makes LXC answer the call itself (ENOSYS) at once.
                if scm::send_msg(conn.sock.as_fd(), &[]).is_err() {
                    self.drop_lxc(t);
                }
                return;
            }
        };
        let notify_fd = Arc::new(fds.swap_remove(lxc::NOTIFY_FD));
        drop(fds);
        let Some(conn) = self.lxc.get_mut(&t) else {
            return;
        };
        let container = Arc::clone(conn.container.get_or_insert_with(|| {
            let init_pid = if request.init_pid > 0 {
                request.init_pid
            } else {
                conn.peer_pid
            };
            let id = if request.cookie.is_empty() {
                format!("lxc-monitor-{}", conn.peer_pid)
            } else {
                String::from_utf8_lossy(&request.cookie).into_owned()
            };
            Arc::new(Container {
                id,
                init_pid,
                process_pid: request.notification.tid,
                status: "running".into(),
                metadata: String::new(),
                annotations: Default::default(),
                user_ns: caller::user_ns_of(init_pid).ok(),
            })
        }));
        if let Some(conn) = self.lxc.get_mut(&t) {
            conn.busy = true;
            // Poll only for the end until the answer went out: one call at a time, as LXC does.
            if let Err(e) = epoll::modify(
                self.epoll.as_fd(),
                conn.sock.as_fd(),
                libc::EPOLLRDHUP as u32,
                t,
            ) {
                rl_log!(self.rl, log::Level::Warn, "`epoll_ctl(MOD)` failed: {e}");
            }
        }
        let call = Arc::new(LxcCall {
            conn: t,
            request,
            received: Instant::now(),
        });
        let fixed = match self.lxc.get(&t).and_then(|c| c.fixed.clone()) {
            Some(f) => f,
            None => {
                let resolved = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    self.resolver.listener_ring(&container)
                }))
                .unwrap_or_else(|_| Err("the ring resolver panicked".into()));
                match resolved {
                    Ok(f) => {
                        rl_log!(
                            self.rl,
                            log::Level::Info,
                            "LXC proxy: container {} (monitor {}, init {}; ring {})",
                            container.id,
                            self.lxc.get(&t).map_or(0, |c| c.peer_pid),
                            container.init_pid,
                            if f.is_some() {
                                "named"
                            } else {
                                "chosen per call"
                            }
                        );
                        if let Some(r) = &f {
                            self.hook_ring(r);
                        }
                        if let Some(c) = self.lxc.get_mut(&t) {
                            c.fixed = Some(f.clone());
                        }
                        f
                    }
                    Err(e) => {
                        rl_log!(
                            self.rl,
                            log::Level::Warn,
                            "no ring for LXC container {}: {e}; its syslog(2) fails with ENOSYS",
                            container.id
                        );
                        bump(&self.shared.counters.rejected);
                        let id = call.request.notification.id;
                        let to = ReplyTo::Lxc(call);
                        let _ = self.send_answer(notify_fd.as_fd(), &to, id, 0, libc::ENOSYS);
                        return;
                    }
                }
            }
        };
        bump(&self.shared.counters.received);
        let n = call.request.notification;
        self.handle_call(t, n, notify_fd, container, fixed, ReplyTo::Lxc(call));
    }

    /// Send the answer record of `call`, and read the connection again. A record that
    /// cannot go before [`lxc::REPLY_BY`] closes the connection instead: LXC has answered the
    /// call itself and would take the record for the answer to its next one.
    fn answer_lxc(&mut self, call: &LxcCall, val: i64, errno: i32) -> io::Result<()> {
        let t = call.conn;
        let Some(conn) = self.lxc.get_mut(&t) else {
            return Err(io::Error::from_raw_os_error(libc::ENOTCONN));
        };
        if !conn.busy {
            // Answered already (a second answer would desynchronise the connection).
            return Err(io::Error::from_raw_os_error(libc::EALREADY));
        }
        if call.received.elapsed() > lxc::REPLY_BY {
            self.drop_lxc(t);
            return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
        }
        let record = call.request.answer(val, errno);
        if let Err(e) = scm::send_msg(conn.sock.as_fd(), &record) {
            self.drop_lxc(t);
            return Err(e);
        }
        conn.busy = false;
        let events = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        if let Err(e) = epoll::modify(self.epoll.as_fd(), conn.sock.as_fd(), events, t) {
            rl_log!(self.rl, log::Level::Warn, "`epoll_ctl(MOD)` failed: {e}");
            self.drop_lxc(t);
        }
        Ok(())
    }

    /// Close LXC connection `t` and forget its call (LXC answers it itself).
    fn drop_lxc(&mut self, t: u64) {
        if let Some(c) = self.lxc.remove(&t) {
            epoll::delete(self.epoll.as_fd(), c.sock.as_fd());
            rl_log!(
                self.rl,
                log::Level::Debug,
                "LXC proxy: monitor pid {} disconnected",
                c.peer_pid
            );
        }
        self.parked.retain(|p| p.token != t);
        self.waiting.remove(&t);
        self.shared
            .counters
            .parked
            .store(self.parked.len() as u64, Ordering::Relaxed);
    }

    /// On stop, first: no LXC monitor may send this agent another record (a record sent to a
    /// connection that then closes is answered ENOSYS by LXC). `SHUT_RD` makes the monitor's
    /// next send fail with EPIPE, so it reconnects to the socket path (the successor, or the
    /// holder's copy of the socket until it runs); records already queued get EINTR, which
    /// makes their callers restart the call there.
    fn close_lxc_intake(&mut self) {
        let tokens: Vec<u64> = self.lxc.keys().copied().collect();
        for t in tokens {
            let Some(conn) = self.lxc.get(&t) else {
                continue;
            };
            if let Err(e) = scm::shutdown_read(conn.sock.as_fd()) {
                log::debug!("`shutdown(SHUT_RD)` of an LXC connection failed: {e}");
            }
            if conn.busy {
                continue;
            }
            let mut buf = vec![0u8; lxc::MAX_RECORD + 1];
            while let Ok((n, fds)) = scm::recv_fds(conn.sock.as_fd(), &mut buf) {
                if n == 0 && fds.is_empty() {
                    break;
                }
                if let Ok(r) = lxc::parse(&buf[..n], fds.len()) {
                    let _ = scm::send_msg(conn.sock.as_fd(), &r.answer(0, libc::EINTR));
                }
            }
        }
    }

    /// On stop: answer the parked calls LXC monitors forwarded with EINTR (the caller restarts
    /// the call, which goes to the next agent); a monitor would otherwise wait 30 s.
    fn release_lxc_parked(&mut self) {
        let parked = std::mem::take(&mut self.parked);
        for p in parked {
            if let ReplyTo::Lxc(_) = p.to {
                self.reply(&p, 0, libc::EINTR);
            } else {
                self.parked.push(p);
            }
        }
    }

    fn drop_conn(&mut self, t: u64) {
        if let Some(c) = self.conns.remove(&t) {
            epoll::delete(self.epoll.as_fd(), c.stream.as_fd());
        }
    }

    /// Serve `fd` for the container `state` describes. `peer_pid` (0: unknown) stands in for
    /// the pids when the sender left them 0, as a process inside a PID namespace must.
    fn register(
        &mut self,
        fd: OwnedFd,
        state: &ContainerProcessState,
        peer_pid: u32,
        from_socket: bool,
    ) {
        let container = Arc::new(Container::from_state_or_peer(state, peer_pid));
        // A panicking resolver must not take the agent (and every container's syslog) down.
        let resolved =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.resolver.listener_ring(&container)))
                .unwrap_or_else(|_| Err("the ring resolver panicked".into()));
        let ring = match resolved {
            Ok(r) => r,
            Err(e) => {
                rl_log!(
                    self.rl,
                    log::Level::Warn,
                    "no ring for container {} (pid {}): {e}; its syslog(2) will fail with ENOSYS",
                    container.id,
                    container.init_pid
                );
                bump(&self.shared.counters.rejected);
                return;
            }
        };
        if let Some(ring) = &ring {
            self.hook_ring(ring);
        }
        if self.sync_wakeup {
            if let Err(e) = notify::set_sync_wakeup(fd.as_fd()) {
                // Before Linux 6.6: the kernel's ordinary wake-ups, only slower.
                rl_log!(
                    self.rl,
                    log::Level::Debug,
                    "`ioctl(SECCOMP_IOCTL_NOTIF_SET_FLAGS, SYNC_WAKE_UP)` failed: {e}"
                );
            }
        }
        let t = self.token();
        if let Err(e) = epoll::add(self.epoll.as_fd(), fd.as_fd(), libc::EPOLLIN as u32, t) {
            rl_log!(
                self.rl,
                log::Level::Error,
                "`epoll_ctl(ADD)` for the listener of {} failed: {e}",
                container.id
            );
            bump(&self.shared.counters.rejected);
            return;
        }
        rl_log!(
            self.rl,
            log::Level::Info,
            "seccomp listener for container {} ({}, process {}, init {}; ring {})",
            container.id,
            container.status,
            container.process_pid,
            container.init_pid,
            if ring.is_some() {
                "named"
            } else {
                "chosen per call"
            }
        );
        if let (true, Some(keep)) = (from_socket, &self.on_listener) {
            keep(fd.as_fd(), state);
        }
        self.listeners.insert(
            t,
            Held {
                fd: Arc::new(fd),
                container,
                ring,
            },
        );
        bump(&self.shared.counters.listeners_accepted);
        self.shared
            .counters
            .listeners
            .store(self.listeners.len() as u64, Ordering::Relaxed);
    }

    /// Register the wake-up listener once per ring.
    fn hook_ring(&mut self, ring: &Arc<Ring>) {
        let seen = self
            .hooked_rings
            .iter()
            .any(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(ring)));
        if !seen {
            self.hooked_rings.retain(|(w, _)| w.strong_count() > 0);
            let waker: Arc<dyn Listener> = Arc::new(RingWaker(Arc::downgrade(&self.shared)));
            ring.add_listener(waker.clone());
            self.hooked_rings.push((Arc::downgrade(ring), waker));
        }
    }

    fn close_listener(&mut self, t: u64) {
        if let Some(h) = self.listeners.remove(&t) {
            epoll::delete(self.epoll.as_fd(), h.fd.as_fd());
            rl_log!(
                self.rl,
                log::Level::Debug,
                "seccomp listener of container {} closed (no task uses it)",
                h.container.id
            );
        }
        self.parked.retain(|p| p.token != t);
        self.waiting.remove(&t);
        self.answering.retain(|_, (token, _)| *token != t);
        let c = &self.shared.counters;
        c.listeners
            .store(self.listeners.len() as u64, Ordering::Relaxed);
        c.parked.store(self.parked.len() as u64, Ordering::Relaxed);
    }

    fn notification(&mut self, t: u64) {
        let held = &self.listeners[&t];
        let n = match notify::recv(held.fd.as_fd()) {
            Ok(Some(n)) => n,
            Ok(None) => {
                bump(&self.shared.counters.stale);
                return;
            }
            Err(e) => {
                // Not a caller leaving: the listener itself is unusable. Polling it again would
                // spin, so close it (its callers then get ENOSYS).
                let id = held.container.id.clone();
                rl_log!(
                    self.rl,
                    log::Level::Error,
                    "`ioctl(SECCOMP_IOCTL_NOTIF_RECV)` for {id} failed: {e}; closing the listener"
                );
                self.close_listener(t);
                return;
            }
        };
        bump(&self.shared.counters.received);
        // Recorded before anything else: the kernel never delivers it again, so a crash
        // before the end of this loop turn (when `sync_calls` runs) would lose it.
        if let Some(table) = &self.calls {
            if !table.lock().record(&n) {
                rl_log!(
                    self.rl,
                    log::Level::Warn,
                    "the syslog(2) call table is full; a crash of the daemon now leaves a call \
                     waiting until a signal"
                );
            }
        }
        self.handle(t, n);
    }

    /// Answer (or park) the call `n` received on listener `t`.
    fn handle(&mut self, t: u64, n: Notification) {
        let held = &self.listeners[&t];
        let fd = Arc::clone(&held.fd);
        let container = Arc::clone(&held.container);
        let fixed = held.ring.clone();
        self.handle_call(t, n, fd, container, fixed, ReplyTo::Listener);
    }

    /// Answer (or park) the call `n` from listener `fd` of `container` (token `t`), from
    /// `fixed` or the caller's ring; the answer goes `to`.
    fn handle_call(
        &mut self,
        t: u64,
        n: Notification,
        fd: Arc<OwnedFd>,
        container: Arc<Container>,
        fixed: Option<Arc<Ring>>,
        to: ReplyTo,
    ) {
        let Some(args) = n.syslog_args() else {
            // The profile notified something that is not syslog: refuse it, never CONTINUE.
            rl_log!(
                self.rl,
                log::Level::Warn,
                "unexpected notification (arch {:#x}, nr {}) from {}",
                n.arch,
                n.nr,
                container.id
            );
            let _ = self.send_answer(fd.as_fd(), &to, n.id, 0, libc::ENOSYS);
            return;
        };
        if let Some(h) = &self.hooks {
            h.received(n.tid, args.action);
        }
        let creds = caller::read_creds(n.tid);
        // The ring from the calling task (never from `state.pid`), inspected before ID_VALID
        // so that a reused tid cannot choose it.
        let chosen = match &fixed {
            Some(r) => Ok((Arc::clone(r), container.user_ns, None)),
            None => std::panic::catch_unwind(AssertUnwindSafe(|| {
                self.resolver.task_ring(&container, n.tid)
            }))
            .unwrap_or(Err(libc::EPERM))
            .map(|tr| (tr.ring, tr.user_ns, tr.privileged)),
        };
        if !notify::id_valid(fd.as_fd(), n.id) {
            bump(&self.shared.counters.stale);
            self.abandon(fd.as_fd(), &to, n.id);
            return;
        }
        let (ring, user_ns, privileged) = match chosen {
            Ok(c) => c,
            Err(errno) => {
                rl_log!(
                    self.rl,
                    log::Level::Info,
                    "syslog({}) from task {} of {}: no ring for the caller ({}); refused",
                    args.action,
                    n.tid,
                    container.id,
                    io::Error::from_raw_os_error(errno)
                );
                if self.send_answer(fd.as_fd(), &to, n.id, 0, errno).is_ok() {
                    bump(&self.shared.counters.answered);
                }
                return;
            }
        };
        if fixed.is_none() {
            self.hook_ring(&ring);
        }
        let policy = match creds {
            Ok(creds) => {
                let caller = Caller {
                    tid: n.tid,
                    container: &container,
                    creds,
                    user_ns,
                    privileged,
                };
                std::panic::catch_unwind(AssertUnwindSafe(|| self.resolver.policy_for(&caller)))
                    .unwrap_or_else(|_| {
                        log::error!("the permission policy panicked; refusing the call");
                        Policy {
                            privileged: false,
                            restrict: true,
                        }
                    })
            }
            Err(e) => {
                rl_log!(
                    self.rl,
                    log::Level::Warn,
                    "cannot read the credentials of task {}: {e}",
                    n.tid
                );
                Policy {
                    privileged: false,
                    restrict: true,
                }
            }
        };
        let p = Pending {
            token: t,
            fd,
            to,
            n,
            id: n.id,
            tid: n.tid,
            call: Call {
                action: args.action,
                buf_is_null: args.buf == 0,
                len: args.len,
            },
            buf: args.buf,
            policy,
            ring,
        };
        log::trace!(
            "syslog({}, {:#x}, {}) from task {} of {}",
            args.action,
            args.buf,
            args.len,
            n.tid,
            container.id
        );
        if let Answered::Park = self.answer(&p, 0) {
            self.parked.push(p);
            self.shared
                .counters
                .parked
                .store(self.parked.len() as u64, Ordering::Relaxed);
        }
    }

    /// Compute one call under the ring's cursor lock; answer it at once if no bytes go to the
    /// caller, else hand the bytes to a writer ([`writer`]) with the lock dropped: the lock is
    /// never held across a write into caller memory. `Park` if it has to wait for records.
    fn answer(&mut self, p: &Pending, attempt: u32) -> Answered {
        if !self.alive(p.token) {
            return Answered::Done;
        }
        let fd = Arc::clone(&p.fd);
        let ring = Arc::clone(&p.ring);
        let lock = cursor_lock(&ring);
        let guard = lock.lock();
        // Only the reading actions format text; the sysfs read costs ~2 µs per call.
        let reads = matches!(
            p.call.action,
            syslog::action::READ | syslog::action::READ_ALL | syslog::action::READ_CLEAR
        );
        let time = reads || p.call.action == syslog::action::SIZE_UNREAD;
        let time = if time { printk_time() } else { true };
        let outcome = syslog::compute(&ring, p.policy, p.call, time);
        // The kernel's `access_ok(buf, len)` runs after the permission and argument checks and
        // before anything is read or waited for: a kernel address is EFAULT even when there is
        // nothing to copy (B5.6).
        let bad_range = reads
            && p.call.len > 0
            && !matches!(outcome, Outcome::Error(_))
            && !maps::access_ok(p.buf, p.call.len as u64);
        if bad_range {
            drop(guard);
            bump(&self.shared.counters.faults);
            self.reply(p, 0, libc::EFAULT);
            return Answered::Done;
        }
        match outcome {
            Outcome::WouldBlock => Answered::Park,
            Outcome::Error(errno) => {
                drop(guard);
                self.reply(p, 0, errno);
                Answered::Done
            }
            Outcome::Done { ret, data, effect } if data.is_empty() => {
                self.finish(p, ret, effect);
                drop(guard);
                Answered::Done
            }
            Outcome::Done { ret, data, effect } => {
                drop(guard);
                if let Some(h) = &self.hooks {
                    h.before_write(p.tid, p.call.action);
                }
                let checked = self.hooks.clone().map(|h| {
                    let (tid, action) = (p.tid, p.call.action);
                    Box::new(move || h.writing(tid, action)) as Box<dyn FnOnce() + Send>
                });
                let job = Job {
                    listener: fd,
                    id: p.id,
                    tid: p.tid,
                    addr: p.buf,
                    data,
                    checked,
                    ctx: WriteCtx {
                        p: p.clone(),
                        ret,
                        effect,
                        attempt,
                    },
                };
                if matches!(p.to, ReplyTo::Listener) {
                    self.answering.insert(p.id, (p.token, p.n));
                }
                self.waiting.entry(p.token).or_default().push_back(job);
                self.pump_writers();
                Answered::Done
            }
        }
    }

    /// Start waiting jobs while the bounds allow (listener order is arbitrary; each listener
    /// keeps its own FIFO).
    fn pump_writers(&mut self) {
        let tokens: Vec<u64> = self.waiting.keys().copied().collect();
        for t in tokens {
            while self.inflight_total < writer::MAX_WRITERS
                && self.inflight.get(&t).copied().unwrap_or(0) < writer::MAX_WRITERS_PER_LISTENER
            {
                let Some(job) = self.waiting.get_mut(&t).and_then(VecDeque::pop_front) else {
                    break;
                };
                match self.writers.submit(job) {
                    Ok(()) => {
                        self.inflight_total += 1;
                        *self.inflight.entry(t).or_default() += 1;
                    }
                    Err(job) => {
                        // No thread could be started: answer EAGAIN rather than wait.
                        self.answering.remove(&job.ctx.p.id);
                        self.reply(&job.ctx.p, 0, libc::EAGAIN);
                    }
                }
            }
            if self.waiting.get(&t).is_some_and(VecDeque::is_empty) {
                self.waiting.remove(&t);
            }
        }
    }

    /// A writer finished: apply the effect and SEND under the cursor lock (a READ whose
    /// cursor moved meanwhile is recomputed and written again).
    fn write_finished(&mut self, job: Job<WriteCtx>, result: Result<(), WriteError>) {
        let t = job.ctx.p.token;
        // Answered now, or parked again by `deliver` (then recorded as parked).
        self.answering.remove(&job.ctx.p.id);
        self.inflight_total = self.inflight_total.saturating_sub(1);
        if let Some(n) = self.inflight.get_mut(&t) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inflight.remove(&t);
            }
        }
        if self.alive(t) {
            self.deliver(job, result);
        } else {
            // The listener closed meanwhile: no task uses it, so the caller is gone.
            bump(&self.shared.counters.stale);
        }
        self.pump_writers();
    }

    fn deliver(&mut self, job: Job<WriteCtx>, result: Result<(), WriteError>) {
        let WriteCtx {
            p,
            ret,
            effect,
            attempt,
        } = job.ctx;
        let c = &self.shared.counters;
        match result {
            Ok(()) => {}
            Err(WriteError::Stale) => {
                bump(&c.stale);
                self.abandon(p.fd.as_fd(), &p.to, p.id);
                return;
            }
            Err(WriteError::Fault) => {
                bump(&c.faults);
                self.reply(&p, 0, libc::EFAULT);
                return;
            }
            Err(WriteError::Access(kind)) => {
                rl_log!(
                    self.rl,
                    log::Level::Error,
                    "cannot write into task {} (`/proc/{}/mem`: {kind}); the agent must run as \
                     root in the host PID namespace",
                    p.tid,
                    p.tid
                );
                self.reply(&p, 0, libc::EFAULT);
                return;
            }
        }
        let lock = cursor_lock(&p.ring);
        let guard = lock.lock();
        let effect = match effect {
            Effect::Consume { from, .. } => {
                let st = p.ring.syslog_state();
                let now = (st.seq, st.partial, st.time);
                drop(st);
                if now != from {
                    // Another consumer moved the cursor while the bytes were written: the bytes
                    // may belong to it. Compute again from the new cursor and rewrite (the
                    // caller is still blocked in the call, so its buffer is ours).
                    drop(guard);
                    if attempt + 1 < READ_ATTEMPTS {
                        if let Answered::Park = self.answer(&p, attempt + 1) {
                            self.parked.push(p);
                            self.shared
                                .counters
                                .parked
                                .store(self.parked.len() as u64, Ordering::Relaxed);
                        }
                    } else {
                        rl_log!(
                            self.rl,
                            log::Level::Warn,
                            "syslog cursor of ring moved during {READ_ATTEMPTS} READ writes; \
                             bytes may repeat"
                        );
                        self.reply(&p, i64::from(ret), 0);
                    }
                    return;
                }
                effect
            }
            // Never move the clear point backwards past a clear made meanwhile.
            Effect::SetClear { seq } => Effect::SetClear {
                seq: seq.max(p.ring.clear_seq()),
            },
            e => e,
        };
        self.finish(&p, ret, effect);
        drop(guard);
    }

    /// Apply `effect`, SEND `ret`, undo if the SEND fails. Called under the cursor lock.
    ///
    /// Apply before SEND so that the effect is visible to everyone once the caller returns
    /// (a following FUSE `SEEK_DATA` must see the clear), and undo it if the reply cannot be
    /// delivered: a caller interrupted by a signal restarts the call and must find the ring
    /// unchanged. The cursor lock keeps other consumers out of this window.
    ///
    /// LXC sends a forwarded call's answer to the kernel itself and does not tell whether it
    /// arrived, so an effect is undone only if the caller left before the answer went to LXC.
    fn finish(&mut self, p: &Pending, ret: i32, effect: Effect) {
        let undo = undo_of(&p.ring, effect);
        if !syslog::apply(&p.ring, effect) {
            // Cannot happen under the cursor lock unless a frontend consumed without it.
            rl_log!(
                self.rl,
                log::Level::Warn,
                "syslog cursor moved during a READ of task {}; bytes may repeat",
                p.tid
            );
        }
        if let Some(h) = &self.hooks {
            h.before_reply(p.tid, p.call.action);
        }
        if !self.reply(p, i64::from(ret), 0) {
            syslog::apply(&p.ring, undo);
        }
    }

    /// Answer `p`; true if the caller got the answer (as far as the agent can tell).
    fn reply(&mut self, p: &Pending, val: i64, errno: i32) -> bool {
        if matches!(p.to, ReplyTo::Lxc(_)) && !notify::id_valid(p.fd.as_fd(), p.id) {
            bump(&self.shared.counters.stale);
            self.abandon(p.fd.as_fd(), &p.to, p.id);
            return false;
        }
        let fd = Arc::clone(&p.fd);
        match self.send_answer(fd.as_fd(), &p.to, p.id, val, errno) {
            Ok(()) => {
                bump(&self.shared.counters.answered);
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                bump(&self.shared.counters.stale);
                false
            }
            Err(e) => {
                let what = match p.to {
                    ReplyTo::Listener => "`ioctl(SECCOMP_IOCTL_NOTIF_SEND)`",
                    ReplyTo::Lxc(_) => "the answer to LXC (`sendmsg`)",
                };
                rl_log!(self.rl, log::Level::Error, "{what} failed: {e}");
                false
            }
        }
    }

    /// Send an answer: `NOTIF_SEND` on `fd`, or the record to the LXC monitor.
    fn send_answer(
        &mut self,
        fd: BorrowedFd<'_>,
        to: &ReplyTo,
        id: u64,
        val: i64,
        errno: i32,
    ) -> io::Result<()> {
        match to {
            ReplyTo::Listener => notify::send(fd, id, val, errno),
            ReplyTo::Lxc(call) => self.answer_lxc(call, val, errno),
        }
    }

    /// A call whose caller left: nothing to answer on a listener, but an LXC monitor waits
    /// for an answer to every record (it gets EINTR, which the kernel then fails to deliver).
    fn abandon(&mut self, fd: BorrowedFd<'_>, to: &ReplyTo, id: u64) {
        if let ReplyTo::Lxc(_) = to {
            let _ = self.send_answer(fd, to, id, 0, libc::EINTR);
        }
    }

    /// Whether the listener or LXC connection of token `t` is still served.
    fn alive(&self, t: u64) -> bool {
        self.listeners.contains_key(&t) || self.lxc.contains_key(&t)
    }

    /// Answer parked READs that can be answered now; forget those whose caller left.
    fn retry_parked(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        let parked = std::mem::take(&mut self.parked);
        for p in parked {
            if !self.alive(p.token) {
                continue;
            }
            if !notify::id_valid(p.fd.as_fd(), p.id) {
                bump(&self.shared.counters.stale);
                self.abandon(p.fd.as_fd(), &p.to, p.id);
                continue;
            }
            if let Answered::Park = self.answer(&p, 0) {
                match &p.to {
                    // The monitor is blocked until it has the answer (module `lxc`).
                    ReplyTo::Lxc(c) if c.received.elapsed() >= lxc::READ_WAIT => {
                        self.reply(&p, 0, libc::EINTR);
                    }
                    _ => self.parked.push(p),
                }
            }
        }
        self.shared
            .counters
            .parked
            .store(self.parked.len() as u64, Ordering::Relaxed);
    }
}

/// The effect that restores what `effect` changes, read before it is applied.
fn undo_of(ring: &Ring, effect: Effect) -> Effect {
    match effect {
        Effect::None => Effect::None,
        Effect::SetClear { .. } => Effect::SetClear {
            seq: ring.clear_seq(),
        },
        Effect::Consume { from, to } => Effect::Consume { from: to, to: from },
        Effect::Console { .. } => {
            let st = ring.syslog_state();
            Effect::Console {
                level: st.console_level,
                saved: st.saved_console_level,
            }
        }
    }
}
