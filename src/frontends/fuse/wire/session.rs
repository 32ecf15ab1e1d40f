//! Mounting, the INIT handshake, adopting a live connection, and the worker threads.
//!
//! # Lifecycle
//!
//! * Fresh: [`mount`] opens `/dev/fuse` and mounts it; [`Session::new`] answers FUSE_INIT
//!   (negotiation: [`negotiate`], a pure function) and starts the workers. The negotiated
//!   [`InitParams`] are what a successor needs to adopt the connection.
//! * Restart: the predecessor's `/dev/fuse` fds were kept alive by a holder process.
//!   [`Session::adopt`] serves them without INIT (the kernel sends INIT once per connection)
//!   and sends FUSE_NOTIFY_RESEND, so requests the predecessor had read but not answered are
//!   queued again, marked with [`abi::FUSE_UNIQUE_RESEND`].
//! * Stop: [`Session::stop`] stops the workers; replies held by the filesystem still work.
//!   [`Session::hand_over`] additionally mutes every reply (dropped ones included) so that
//!   unanswered requests stay with the kernel for the successor, and leaves the mount alone.
//!   Dropping a session stops it and unmounts only if it mounted the filesystem itself and
//!   [`Session::leave_mounted`] was not called.
//!
//! # Channels and the hand-over rule
//!
//! Worker 0 reads the fd the connection was created with; each further worker reads a clone
//! (`FUSE_DEV_IOC_CLONE`). A request must be answered on the fd it was read from. When an fd
//! is finally closed, the kernel aborts every request read through it and not yet answered
//! (`fs/fuse/dev.c`, `fuse_dev_release`: the processing lists are ended with ECONNABORTED),
//! so FUSE_NOTIFY_RESEND can only recover requests of fds still open. A holder must therefore
//! keep **every** fd of [`Session::dup_fds`], not only the first, and the successor adopts
//! them all ([`Session::adopt_all`]) before any is closed.
//!
//! # Waking blocked workers
//!
//! Every channel is non-blocking; a worker waits in `poll(2)` on its fd and on a wake-up
//! pipe. [`Session::stop`] sets a flag and writes to the pipe, so every worker returns from
//! `poll` and exits without needing a request or an unmount. Several workers woken for one
//! request is harmless: the losers' `read` gets EAGAIN and they poll again. O_NONBLOCK is a
//! property of the open file, shared with the holder's and successor's dups of it; both only
//! ever use it through this module.

use std::mem::size_of;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::abi::{self, as_bytes};
use super::filesystem::{dispatch, Filesystem, Flow};
use super::reply::{out_header, Channel, Notifier};
use super::request::{self, Operation, ParseError};
use super::types::{InitFlags, KernelConfig};
use crate::sys::{fuse_dev, SysError};

/// The page size the buffers are computed with (FUSE's unit for `max_pages`).
const PAGE: usize = 4096;

/// A failure to mount, initialise, adopt or serve a connection.
#[derive(Debug, Error)]
pub enum SessionError {
    /// A system call failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// The INIT request could not be parsed.
    #[error("bad INIT request: {0}")]
    Parse(#[from] ParseError),
    /// The first request was not FUSE_INIT.
    #[error("expected FUSE_INIT, got opcode {0}")]
    NotInit(u32),
    /// The kernel speaks a protocol we do not.
    #[error("unsupported FUSE protocol {major}.{minor} (need 7.{min}+)", min = abi::FUSE_MIN_MINOR)]
    Unsupported {
        /// Kernel major.
        major: u32,
        /// Kernel minor.
        minor: u32,
    },
    /// The filesystem's `init` refused the connection.
    #[error("filesystem init failed: {0}")]
    InitRefused(std::io::Error),
    /// The connection ended before INIT completed.
    #[error("the FUSE connection ended during INIT")]
    Disconnected,
    /// Adopting needs at least one fd.
    #[error("adopt: no connection fd given")]
    NoFd,
    /// A worker thread could not be started.
    #[error("spawning worker thread: {0}")]
    Spawn(std::io::Error),
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, SessionError>;

/// What INIT negotiated: everything a successor needs to serve the connection without INIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitParams {
    /// Protocol major (7).
    pub major: u32,
    /// Protocol minor in use: min(kernel, ours).
    pub minor: u32,
    /// Negotiated capabilities, `flags | flags2 << 32`.
    pub flags: u64,
    /// Largest WRITE payload.
    pub max_write: u32,
    /// Readahead limit.
    pub max_readahead: u32,
    /// Largest request in pages (with FUSE_MAX_PAGES).
    pub max_pages: u16,
    /// Timestamp granularity in ns.
    pub time_gran: u32,
}

impl InitParams {
    /// Read buffer size: the largest WRITE plus a page for header and arguments (the kernel
    /// refuses buffers below `max(8192, 80 + max_write)`, `fuse_dev_do_read`).
    pub fn buffer_size(&self) -> usize {
        (self.max_write as usize + PAGE).max(abi::FUSE_MIN_READ_BUFFER)
    }

    /// Whether the kernel can resend unanswered requests (7.40, FUSE_HAS_RESEND).
    pub fn can_resend(&self) -> bool {
        self.minor >= 40 && self.flags & abi::FUSE_HAS_RESEND != 0
    }
}

/// How a session is run.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Worker threads (at least 1).
    pub threads: usize,
    /// Largest WRITE offered at INIT. 1 MiB: the kernel caps requests at `max_pages_limit`
    /// pages (256 by default) anyway; fuser offers 16 MiB and gets the same cap.
    pub max_write: u32,
    /// Prefix of the worker thread names (`<prefix>-<i>`).
    pub thread_name: String,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            threads: 1,
            max_write: 1 << 20,
            thread_name: "fuse".into(),
        }
    }
}

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// The mount source; kmsgfs recognises its stale mounts by `kmsgfs`.
    pub source: String,
    /// `allow_other`: every user may access the mount, not only the mounter.
    pub allow_other: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            source: "kmsgfs".into(),
            allow_other: true,
        }
    }
}

/// Open `/dev/fuse` and mount it at `mountpoint` (type `fuse`, MS_NOSUID|MS_NODEV, root
/// directory mode, uid and gid 0). Needs CAP_SYS_ADMIN; no fusermount. The kernel queues
/// FUSE_INIT on the returned fd; give it to [`Session::new`].
pub fn mount(mountpoint: &Path, options: &MountOptions) -> Result<OwnedFd> {
    let fd = fuse_dev::open_dev()?;
    let mut data = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    );
    if options.allow_other {
        data.push_str(",allow_other");
    }
    fuse_dev::mount_fuse(
        &options.source,
        mountpoint,
        libc::MS_NOSUID | libc::MS_NODEV,
        &data,
    )?;
    Ok(fd)
}

/// `umount2(mountpoint, MNT_DETACH)`.
pub fn unmount(mountpoint: &Path) -> Result<()> {
    crate::sys::mount::detach(mountpoint).map_err(SessionError::from)
}

/// The answer to one FUSE_INIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Negotiated {
    /// The kernel's major is newer: answer with our version only; it sends INIT again.
    VersionOnly(abi::fuse_init_out),
    /// Accepted: the reply and the parameters in force.
    Accept(abi::fuse_init_out, InitParams),
}

/// The kernel's capability set from an INIT request (`flags2` only counts with INIT_EXT).
pub fn kernel_flags(init: &abi::fuse_init_in) -> InitFlags {
    let mut f = u64::from(init.flags);
    if f & abi::FUSE_INIT_EXT != 0 {
        f |= u64::from(init.flags2) << 32;
    }
    InitFlags(f)
}

/// Negotiate INIT: major 7, minor min(kernel, ours), the requested capabilities the kernel
/// offers, limits from `config`.
pub fn negotiate(
    init: &abi::fuse_init_in,
    config: &KernelConfig,
) -> std::result::Result<Negotiated, SessionError> {
    if init.major > abi::FUSE_KERNEL_VERSION {
        return Ok(Negotiated::VersionOnly(abi::fuse_init_out {
            major: abi::FUSE_KERNEL_VERSION,
            minor: abi::FUSE_KERNEL_MINOR_VERSION,
            ..Default::default()
        }));
    }
    if init.major < abi::FUSE_KERNEL_VERSION || init.minor < abi::FUSE_MIN_MINOR {
        return Err(SessionError::Unsupported {
            major: init.major,
            minor: init.minor,
        });
    }
    let minor = init.minor.min(abi::FUSE_KERNEL_MINOR_VERSION);
    let flags = (config.requested & kernel_flags(init)).bits();
    let max_write = config.max_write.max(4096);
    let max_pages = if flags & abi::FUSE_MAX_PAGES != 0 {
        let bytes = max_write.max(config.max_readahead) as usize;
        bytes.div_ceil(PAGE).min(u16::MAX as usize) as u16
    } else {
        0
    };
    let out = abi::fuse_init_out {
        major: abi::FUSE_KERNEL_VERSION,
        minor,
        max_readahead: config.max_readahead,
        flags: flags as u32,
        // fuser's defaults: 16 background requests, congestion at 3/4 of that.
        max_background: 16,
        congestion_threshold: 12,
        max_write,
        time_gran: config.time_gran,
        max_pages,
        map_alignment: 0,
        flags2: (flags >> 32) as u32,
        max_stack_depth: 0,
        unused: [0; 6],
    };
    let params = InitParams {
        major: abi::FUSE_KERNEL_VERSION,
        minor,
        flags,
        max_write,
        max_readahead: config.max_readahead,
        max_pages,
        time_gran: config.time_gran,
    };
    Ok(Negotiated::Accept(out, params))
}

/// Why [`read_request`] returned without a request.
enum ReadEnd {
    /// The stop flag is set.
    Stopped,
    /// The connection is gone (ENODEV, or EOF on a test socket).
    Gone,
}

/// Read one request from `ch` into `buf`, waiting in poll(2) with the wake-up pipe.
fn read_request(
    ch: &Channel,
    buf: &mut [u8],
    wake: &OwnedFd,
    stop: &AtomicBool,
) -> std::result::Result<usize, ReadEnd> {
    loop {
        if stop.load(Ordering::Acquire) {
            return Err(ReadEnd::Stopped);
        }
        match fuse_dev::read(ch.fd(), buf) {
            Ok(0) => return Err(ReadEnd::Gone),
            Ok(n) => return Ok(n),
            Err(e) => match e.errno() {
                Some(libc::EAGAIN) => {
                    if let Err(e) = fuse_dev::poll_in(ch.fd(), wake.as_fd()) {
                        if e.errno() != Some(libc::EINTR) {
                            log::warn!("FUSE worker: {e}");
                            return Err(ReadEnd::Gone);
                        }
                    }
                }
                // EINTR: a signal; ENOENT: the request was aborted while being read.
                Some(libc::EINTR) | Some(libc::ENOENT) => {}
                Some(libc::ENODEV) => return Err(ReadEnd::Gone),
                _ => {
                    log::warn!("FUSE worker: {e}");
                    return Err(ReadEnd::Gone);
                }
            },
        }
    }
}

/// State shared by a session and its workers.
#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    muted: Arc<AtomicBool>,
    wake_r: OwnedFd,
    wake_w: OwnedFd,
    /// Set when a connection was adopted without FUSE_NOTIFY_RESEND ("drain" below).
    drain: std::sync::OnceLock<Drain>,
}

/// Adopted without resend (a kernel before 6.9): the predecessor still holds the requests it
/// read and answers them itself as records arrive, while this session reads new requests.
/// Their INTERRUPTs reach this session, though (the predecessor reads nothing any more), and
/// its filesystem does not know them: a request is interrupted only after it was read
/// (FR_SENT), requests are read in the order their uniques were given, and the predecessor
/// read a prefix, so an INTERRUPT for a unique below every unique this session read is for a
/// predecessor's request. It is answered EINTR here, on whichever fd's processing list holds
/// it (the predecessor's fds are the same open files as ours); the predecessor's later answer
/// then gets ENOENT, which it ignores.
#[derive(Debug)]
struct Drain {
    /// The smallest unique this session read.
    first_unique: AtomicU64,
    channels: Vec<Arc<Channel>>,
}

impl Drain {
    fn saw(&self, unique: u64) {
        self.first_unique
            .fetch_min(unique & !abi::FUSE_UNIQUE_RESEND, Ordering::AcqRel);
    }

    /// Answer `unique` EINTR if it is a predecessor's request; whether it was.
    fn interrupt(&self, unique: u64) -> bool {
        if unique >= self.first_unique.load(Ordering::Acquire) {
            return false;
        }
        for ch in &self.channels {
            if ch.send_error(unique, super::types::Errno::EINTR).is_ok() {
                return true;
            }
        }
        // Already answered by the predecessor (or never read): nothing to do.
        true
    }
}

impl Shared {
    fn new() -> Result<Arc<Shared>> {
        let (wake_r, wake_w) = fuse_dev::pipe()?;
        Ok(Arc::new(Shared {
            stop: AtomicBool::new(false),
            muted: Arc::new(AtomicBool::new(false)),
            wake_r,
            wake_w,
            drain: std::sync::OnceLock::new(),
        }))
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        fuse_dev::wake(self.wake_w.as_fd());
    }
}

/// A served FUSE connection.
#[derive(Debug)]
pub struct Session {
    channels: Vec<Arc<Channel>>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    params: InitParams,
    mountpoint: Option<PathBuf>,
    unmount_on_drop: bool,
}

impl Session {
    /// Mount at `mountpoint`, answer INIT and serve `fs`. Dropping the session unmounts
    /// unless [`Session::leave_mounted`] is called.
    pub fn mount<F: Filesystem>(
        fs: F,
        mountpoint: &Path,
        mount_options: &MountOptions,
        options: &SessionOptions,
    ) -> Result<Session> {
        let fd = mount(mountpoint, mount_options)?;
        let guard = UnmountOnError(Some(mountpoint));
        let mut s = Session::new(fs, fd, options)?;
        std::mem::forget(guard);
        s.mountpoint = Some(mountpoint.to_path_buf());
        s.unmount_on_drop = true;
        Ok(s)
    }

    /// Answer FUSE_INIT on the fresh connection `fd` (calling `fs.init`) and serve `fs`.
    pub fn new<F: Filesystem>(mut fs: F, fd: OwnedFd, options: &SessionOptions) -> Result<Self> {
        let shared = Shared::new()?;
        crate::sys::fd::set_nonblocking(fd.as_fd())?;
        let ch = Arc::new(Channel::new(fd, shared.muted.clone()));
        let mut buf = vec![0u8; abi::FUSE_MIN_READ_BUFFER.max(PAGE * 2)];
        let params = loop {
            let n = read_request(&ch, &mut buf, &shared.wake_r, &shared.stop)
                .map_err(|_| SessionError::Disconnected)?;
            let req = request::parse(&buf[..n])?;
            let Operation::Init(init) = &req.operation else {
                return Err(SessionError::NotInit(req.opcode()));
            };
            let mut config =
                KernelConfig::new(kernel_flags(init), init.max_readahead, options.max_write);
            if let Err(e) = fs.init(&req, &mut config) {
                send_init_error(&ch, req.unique().0, e.raw_os_error().unwrap_or(libc::EIO));
                return Err(SessionError::InitRefused(e));
            }
            match negotiate(init, &config) {
                Ok(Negotiated::VersionOnly(out)) => send_init(&ch, req.unique().0, &out)?,
                Ok(Negotiated::Accept(out, params)) => {
                    send_init(&ch, req.unique().0, &out)?;
                    log::debug!("FUSE INIT: {params:?}");
                    break params;
                }
                Err(e) => {
                    send_init_error(&ch, req.unique().0, libc::EPROTO);
                    return Err(e);
                }
            }
        };
        Session::start(fs, vec![ch], shared, params, options)
    }

    /// Serve the live, initialised connection `fd` negotiated with `params` (by a
    /// predecessor), then ask the kernel to resend what the predecessor left unanswered.
    pub fn adopt<F: Filesystem>(
        fs: F,
        fd: OwnedFd,
        params: InitParams,
        options: &SessionOptions,
    ) -> Result<Self> {
        Session::adopt_all(fs, vec![fd], params, options)
    }

    /// [`Session::adopt`] with every fd of the predecessor ([`Session::dup_fds`]): the first is
    /// the connection's original fd, the others its clones; all are read by workers (more are
    /// cloned if `options.threads` asks for more). Sends FUSE_NOTIFY_RESEND when the kernel
    /// supports it ([`InitParams::can_resend`]).
    pub fn adopt_all<F: Filesystem>(
        fs: F,
        fds: Vec<OwnedFd>,
        params: InitParams,
        options: &SessionOptions,
    ) -> Result<Self> {
        if fds.is_empty() {
            return Err(SessionError::NoFd);
        }
        let shared = Shared::new()?;
        let mut channels = Vec::with_capacity(fds.len());
        for fd in fds {
            crate::sys::fd::set_nonblocking(fd.as_fd())?;
            channels.push(Arc::new(Channel::new(fd, shared.muted.clone())));
        }
        let s = Session::start(fs, channels, shared, params, options)?;
        if params.can_resend() {
            s.notifier().resend()?;
        } else {
            let _ = s.shared.drain.set(Drain {
                first_unique: AtomicU64::new(u64::MAX),
                channels: s.channels.clone(),
            });
            log::info!(
                "FUSE 7.{} without FUSE_HAS_RESEND: the previous daemon answers the requests \
                 it holds (drain); their interrupts are answered here",
                params.minor
            );
        }
        Ok(s)
    }

    fn start<F: Filesystem>(
        fs: F,
        mut channels: Vec<Arc<Channel>>,
        shared: Arc<Shared>,
        params: InitParams,
        options: &SessionOptions,
    ) -> Result<Self> {
        while channels.len() < options.threads.max(1) {
            let fd = fuse_dev::clone_fd(channels[0].fd())?;
            crate::sys::fd::set_nonblocking(fd.as_fd())?;
            channels.push(Arc::new(Channel::new(fd, shared.muted.clone())));
        }
        let fs = Arc::new(fs);
        let notifier = Notifier::new(channels[0].clone());
        let mut s = Session {
            channels,
            shared,
            threads: Vec::new(),
            params,
            mountpoint: None,
            unmount_on_drop: false,
        };
        for (i, ch) in s.channels.iter().enumerate() {
            let (fs, ch, shared, notifier) =
                (fs.clone(), ch.clone(), s.shared.clone(), notifier.clone());
            let size = params.buffer_size();
            let t = std::thread::Builder::new()
                .name(format!("{}-{i}", options.thread_name))
                .spawn(move || worker(&*fs, &ch, &shared, &notifier, size))
                .map_err(SessionError::Spawn)?;
            s.threads.push(t);
        }
        Ok(s)
    }

    /// The negotiated parameters (give them to a successor's [`Session::adopt`]).
    pub fn init_params(&self) -> InitParams {
        self.params
    }

    /// Behave as on a kernel without FUSE_NOTIFY_RESEND (before 6.9): a successor does not
    /// ask for resends and the predecessor drains ([`Session::drain_over`]). For testing the
    /// drain path on a newer kernel.
    pub fn forget_resend(&mut self) {
        self.params.flags &= !abi::FUSE_HAS_RESEND;
    }

    /// The restart path without resend: stop reading requests but keep answering (no mute),
    /// leave the mount. The filesystem then answers the requests it holds as it can; the
    /// successor reads everything new ([`Drain`]).
    pub fn drain_over(mut self) {
        self.unmount_on_drop = false;
        self.stop();
    }

    /// A handle that sends notifications on this connection.
    pub fn notifier(&self) -> Notifier {
        Notifier::new(self.channels[0].clone())
    }

    /// Duplicates of every fd of the connection, the original first: what a holder process
    /// keeps across a restart (see the module docs for why all of them).
    pub fn dup_fds(&self) -> Result<Vec<OwnedFd>> {
        self.channels
            .iter()
            .map(|c| {
                c.fd()
                    .try_clone_to_owned()
                    .map_err(|e| SessionError::Sys(SysError::new("fcntl(F_DUPFD_CLOEXEC)", e)))
            })
            .collect()
    }

    /// Record where the connection is mounted (for [`Session::unmount`] after an adopt).
    pub fn set_mountpoint(&mut self, mountpoint: &Path) {
        self.mountpoint = Some(mountpoint.to_path_buf());
    }

    /// Do not unmount when the session is dropped (the restart path).
    pub fn leave_mounted(&mut self) {
        self.unmount_on_drop = false;
    }

    /// `umount2(MNT_DETACH)` of the recorded mount point. The kernel then ends the
    /// connection once it is no longer used; workers see ENODEV and exit.
    pub fn unmount(&mut self) -> Result<()> {
        self.unmount_on_drop = false;
        match &self.mountpoint {
            Some(p) => unmount(p),
            None => Ok(()),
        }
    }

    /// Whether every worker has exited (DESTROY, ENODEV, or stop).
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Stop the workers and wait for them. Requests the filesystem holds can still be
    /// answered (their replies keep their channel open).
    pub fn stop(&mut self) {
        self.shared.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Wait until the workers exit by themselves (unmount, DESTROY).
    pub fn join(&mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// The restart path: mute all replies (a dropped reply sends nothing either), stop the
    /// workers and leave the mount. Requests read but not answered stay in the kernel's
    /// processing queues as long as a dup of their fd is open ([`Session::dup_fds`], taken
    /// *before*), for the successor's FUSE_NOTIFY_RESEND.
    pub fn hand_over(mut self) {
        self.shared.muted.store(true, Ordering::Release);
        self.unmount_on_drop = false;
        self.stop();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop();
        if self.unmount_on_drop {
            if let Some(p) = &self.mountpoint {
                if let Err(e) = unmount(p) {
                    log::warn!("unmounting {}: {e}", p.display());
                }
            }
        }
    }
}

/// Detaches a fresh mount if INIT fails.
struct UnmountOnError<'a>(Option<&'a Path>);

impl Drop for UnmountOnError<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            let _ = unmount(p);
        }
    }
}

fn send_init(ch: &Channel, unique: u64, out: &abi::fuse_init_out) -> Result<()> {
    let h = out_header(unique, 0, size_of::<abi::fuse_init_out>());
    fuse_dev::writev(
        ch.fd(),
        &[
            std::io::IoSlice::new(as_bytes(&h)),
            std::io::IoSlice::new(as_bytes(out)),
        ],
    )?;
    Ok(())
}

fn send_init_error(ch: &Channel, unique: u64, errno: i32) {
    let h = out_header(unique, -errno, 0);
    let _ = fuse_dev::writev(ch.fd(), &[std::io::IoSlice::new(as_bytes(&h))]);
}

/// One worker: read, parse, dispatch, until stopped or the connection ends.
fn worker<F: Filesystem>(
    fs: &F,
    ch: &Arc<Channel>,
    shared: &Shared,
    notifier: &Notifier,
    buffer_size: usize,
) {
    let mut buf = vec![0u8; buffer_size];
    loop {
        let n = match read_request(ch, &mut buf, &shared.wake_r, &shared.stop) {
            Ok(n) => n,
            Err(ReadEnd::Stopped) => return,
            Err(ReadEnd::Gone) => {
                log::debug!("FUSE connection ended");
                shared.stop();
                return;
            }
        };
        match request::parse(&buf[..n]) {
            Ok(req) => {
                if let Some(d) = shared.drain.get() {
                    if let super::request::Operation::Interrupt(i) = &req.operation {
                        if d.interrupt(i.unique) {
                            continue;
                        }
                    } else {
                        d.saw(req.unique().0);
                    }
                }
                if dispatch(fs, ch, notifier, &req) == Flow::Destroyed {
                    shared.stop();
                    return;
                }
            }
            Err(e) => {
                log::debug!("unparsable FUSE request: {e}");
                // Answer EIO if the header at least names the request, so its caller does
                // not hang. An INTERRUPT (odd unique) must not be answered.
                if let Some(h) = abi::read_pod::<abi::fuse_in_header>(&buf[..n]) {
                    if h.unique & abi::FUSE_INT_REQ_BIT == 0
                        && h.opcode != abi::FUSE_FORGET
                        && h.opcode != abi::FUSE_BATCH_FORGET
                    {
                        super::reply::ReplyEmpty::new(h.unique, ch.clone())
                            .error(super::types::Errno::EIO);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontends::fuse::wire::abi::read_pod;
    use crate::frontends::fuse::wire::reply::tests::{pending, recv, seqpacket};
    use crate::frontends::fuse::wire::request::tests::build;
    use crate::frontends::fuse::wire::{
        Errno, FileHandle, INodeNo, LockOwner, OpenFlags, ReplyData, Request,
    };
    use parking_lot::Mutex;
    use std::os::fd::AsRawFd;

    fn init_in(minor: u32, flags: u64) -> abi::fuse_init_in {
        abi::fuse_init_in {
            major: 7,
            minor,
            max_readahead: 128 * 1024,
            flags: flags as u32,
            flags2: (flags >> 32) as u32,
            unused: [0; 11],
        }
    }

    const ALL: u64 = abi::FUSE_ASYNC_READ
        | abi::FUSE_ATOMIC_O_TRUNC
        | abi::FUSE_BIG_WRITES
        | abi::FUSE_MAX_PAGES
        | abi::FUSE_INIT_EXT
        | abi::FUSE_POSIX_LOCKS
        | abi::FUSE_HAS_RESEND
        | abi::FUSE_PASSTHROUGH;

    #[test]
    fn negotiation_takes_the_intersection_and_the_lower_minor() {
        let i = init_in(44, ALL);
        let mut cfg = KernelConfig::new(kernel_flags(&i), i.max_readahead, 1 << 20);
        cfg.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC)
            .unwrap();
        let Negotiated::Accept(out, p) = negotiate(&i, &cfg).unwrap() else {
            panic!()
        };
        assert_eq!((out.major, out.minor, p.minor), (7, 40, 40));
        let want = abi::FUSE_ASYNC_READ
            | abi::FUSE_ATOMIC_O_TRUNC
            | abi::FUSE_BIG_WRITES
            | abi::FUSE_MAX_PAGES
            | abi::FUSE_INIT_EXT
            | abi::FUSE_HAS_RESEND;
        assert_eq!(
            p.flags, want,
            "no POSIX_LOCKS or PASSTHROUGH: not requested"
        );
        assert_eq!(out.flags as u64 | (out.flags2 as u64) << 32, want);
        assert_eq!(
            (out.max_write, out.max_pages, p.max_pages),
            (1 << 20, 256, 256)
        );
        assert_eq!(out.max_readahead, 128 * 1024);
        assert!(p.can_resend());

        // An older kernel: its minor, no flags2 without INIT_EXT, no resend.
        let i = init_in(38, abi::FUSE_ASYNC_READ | abi::FUSE_BIG_WRITES | (1 << 39));
        let cfg = KernelConfig::new(kernel_flags(&i), i.max_readahead, 1 << 20);
        let Negotiated::Accept(out, p) = negotiate(&i, &cfg).unwrap() else {
            panic!()
        };
        assert_eq!(out.minor, 38);
        assert_eq!(p.flags, abi::FUSE_ASYNC_READ | abi::FUSE_BIG_WRITES);
        assert_eq!(out.max_pages, 0);
        assert!(!p.can_resend());
        // Capabilities the kernel lacks are refused by name.
        let mut cfg = cfg;
        assert_eq!(
            cfg.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC),
            Err(InitFlags::FUSE_ATOMIC_O_TRUNC)
        );
    }

    #[test]
    fn negotiation_refuses_or_defers_other_versions() {
        let cfg = KernelConfig::new(InitFlags(0), 0, 4096);
        assert!(matches!(
            negotiate(&init_in(22, 0), &cfg),
            Err(SessionError::Unsupported {
                major: 7,
                minor: 22
            })
        ));
        let mut i = init_in(0, 0);
        i.major = 8;
        match negotiate(&i, &cfg).unwrap() {
            Negotiated::VersionOnly(o) => assert_eq!((o.major, o.minor, o.flags), (7, 40, 0)),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn init_params_serde_round_trip() {
        let p = InitParams {
            major: 7,
            minor: 40,
            flags: abi::FUSE_HAS_RESEND | abi::FUSE_ASYNC_READ,
            max_write: 1 << 20,
            max_readahead: 131072,
            max_pages: 256,
            time_gran: 1,
        };
        let s = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<InitParams>(&s).unwrap(), p);
        assert_eq!(p.buffer_size(), (1 << 20) + 4096);
    }

    /// Records calls; parks READs of fh 9 until interrupted.
    #[derive(Default)]
    struct Probe {
        interrupts: Mutex<Vec<u64>>,
        parked: Mutex<Vec<(u64, ReplyData)>>,
    }

    impl Filesystem for Arc<Probe> {
        fn init(&mut self, _req: &Request<'_>, cfg: &mut KernelConfig) -> std::io::Result<()> {
            cfg.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC)
                .map_err(|_| std::io::Error::from_raw_os_error(libc::ENOSYS))
        }
        fn interrupt(&self, unique: u64) {
            self.interrupts.lock().push(unique);
            let mut p = self.parked.lock();
            if let Some(i) = p.iter().position(|(u, _)| *u == unique) {
                p.swap_remove(i).1.error(Errno::EINTR);
            }
        }
        fn read(
            &self,
            req: &Request<'_>,
            _ino: INodeNo,
            fh: FileHandle,
            _offset: u64,
            _size: u32,
            _flags: OpenFlags,
            _lock_owner: Option<LockOwner>,
            reply: ReplyData,
        ) {
            if fh.0 == 9 {
                self.parked.lock().push((req.unique().0, reply));
            } else {
                reply.data(b"hi");
            }
        }
    }

    fn read_in(fh: u64) -> Vec<u8> {
        abi::as_bytes(&abi::fuse_read_in {
            fh,
            size: 10,
            read_flags: abi::FUSE_READ_LOCKOWNER,
            ..Default::default()
        })
        .to_vec()
    }

    fn send(k: &OwnedFd, b: &[u8]) {
        fuse_dev::writev(k.as_fd(), &[std::io::IoSlice::new(b)]).unwrap();
    }

    fn header(m: &[u8]) -> abi::fuse_out_header {
        read_pod(m).unwrap()
    }

    /// The whole loop over a SOCK_SEQPACKET "kernel": INIT, a READ, an ENOSYS, a parked READ
    /// ended by INTERRUPT (which gets no reply), FORGET (no reply), DESTROY.
    #[test]
    fn dispatch_loop_end_to_end() {
        let (kernel, daemon) = seqpacket();
        let probe = Arc::new(Probe::default());
        let kernel_thread = std::thread::spawn(move || {
            send(
                &kernel,
                &build(abi::FUSE_INIT, 2, 0, &[abi::as_bytes(&init_in(44, ALL))]),
            );
            let m = recv(&kernel);
            let out: abi::fuse_init_out = read_pod(&m[16..]).unwrap();
            assert_eq!((header(&m).unique, out.minor), (2, 40));
            assert_ne!(out.flags as u64 & abi::FUSE_ATOMIC_O_TRUNC, 0);
            kernel
        });
        let mut s = Session::new(probe.clone(), daemon, &SessionOptions::default()).unwrap();
        let kernel = kernel_thread.join().unwrap();
        assert_eq!(s.init_params().minor, 40);

        send(&kernel, &build(abi::FUSE_READ, 4, 2, &[&read_in(1)]));
        let m = recv(&kernel);
        assert_eq!(
            (header(&m).unique, header(&m).error, &m[16..]),
            (4, 0, &b"hi"[..])
        );

        send(&kernel, &build(abi::FUSE_MKNOD, 6, 1, &[b"x\0"]));
        assert_eq!(header(&recv(&kernel)).error, -libc::ENOSYS);

        // A resent READ: the reply carries the unique with bit 63.
        let ru = abi::FUSE_UNIQUE_RESEND | 8;
        send(&kernel, &build(abi::FUSE_READ, ru, 2, &[&read_in(1)]));
        assert_eq!(header(&recv(&kernel)).unique, ru);

        // Parked READ 10, then INTERRUPT 11 for it: the READ gets EINTR, the INTERRUPT
        // nothing.
        send(&kernel, &build(abi::FUSE_READ, 10, 2, &[&read_in(9)]));
        assert!(!pending(&kernel), "parked");
        let i = abi::fuse_interrupt_in { unique: 10 };
        send(
            &kernel,
            &build(abi::FUSE_INTERRUPT, 11, 0, &[abi::as_bytes(&i)]),
        );
        let m = recv(&kernel);
        assert_eq!((header(&m).unique, header(&m).error), (10, -libc::EINTR));
        assert!(!pending(&kernel), "no reply to the INTERRUPT");
        assert_eq!(*probe.interrupts.lock(), vec![10]);

        // An INTERRUPT for an unknown request: hook called, still no reply.
        let i = abi::fuse_interrupt_in { unique: 98 };
        send(
            &kernel,
            &build(abi::FUSE_INTERRUPT, 99, 0, &[abi::as_bytes(&i)]),
        );
        let f = abi::fuse_forget_in { nlookup: 1 };
        send(
            &kernel,
            &build(abi::FUSE_FORGET, 12, 2, &[abi::as_bytes(&f)]),
        );
        // Garbage with a valid header: EIO.
        send(&kernel, &build(abi::FUSE_READ, 14, 2, &[&[1, 2, 3]]));
        let m = recv(&kernel);
        assert_eq!((header(&m).unique, header(&m).error), (14, -libc::EIO));
        assert!(!pending(&kernel), "nothing for INTERRUPT 99 or FORGET");

        send(&kernel, &build(abi::FUSE_DESTROY, 16, 0, &[]));
        assert_eq!(header(&recv(&kernel)), out_header(16, 0, 0));
        s.join();
        assert!(s.is_finished());
    }

    /// A hand-over mutes replies: a parked READ dropped by the old session is not answered
    /// EIO; the new session (adopting the same fd) answers it.
    #[test]
    fn hand_over_keeps_requests_for_the_successor() {
        let (kernel, daemon) = seqpacket();
        let probe = Arc::new(Probe::default());
        let params = InitParams {
            major: 7,
            minor: 38, // no resend on a socket
            flags: 0,
            max_write: 4096,
            max_readahead: 0,
            max_pages: 0,
            time_gran: 1,
        };
        let a = Session::adopt(probe.clone(), daemon, params, &SessionOptions::default()).unwrap();
        send(&kernel, &build(abi::FUSE_READ, 20, 2, &[&read_in(9)]));
        while probe.parked.lock().is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let fds = a.dup_fds().unwrap();
        a.hand_over();
        probe.parked.lock().clear(); // the old process's replies die with it
        assert!(!pending(&kernel), "no EIO after the hand-over");
        let mut b =
            Session::adopt_all(probe.clone(), fds, params, &SessionOptions::default()).unwrap();
        send(&kernel, &build(abi::FUSE_READ, 22, 2, &[&read_in(1)]));
        assert_eq!(header(&recv(&kernel)).unique, 22);
        b.stop();
        assert!(kernel.as_raw_fd() > 0);
    }
}
