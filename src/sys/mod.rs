//! The small syscall and procfs seam of kmsgfs.
//!
//! Everything that talks to the kernel other than through `std` lives here, and with it every
//! `unsafe` block of the FUSE daemon:
//!
//! * [`proc`]: a process looked up by pid through a pinned `/proc/<pid>` directory fd: its
//!   namespace inodes, start time, uid map and comm (used to resolve an opener's ring, E6).
//! * [`process`]: fork, pipes, waitpid, namespaces (`unshare`, `setns`), mounts, capabilities
//!   and signal masks, for `kmsgfs run` and `kmsgfs oci-hook`.
//! * [`mount`]: `/proc/self/mountinfo` parsing and `umount2(MNT_DETACH)` (stale-mount
//!   recovery after a crash, fuse-notes §5).
//! * [`signal`]: blocking SIGINT/SIGTERM in every thread and waiting for them synchronously.
//! * [`cpu`]: CPU count and thread affinity (event-loop placement, fuse-notes §19).
//! * [`fuse_dev`]: `/dev/fuse`: open, mount, read, writev, clone, poll (the FUSE transport).
//! * [`clock`]: `CLOCK_MONOTONIC` in microseconds, the time base of host records (A2.3).
//! * [`memory`]: the allocator settings that return a reclaimed ring's memory to the kernel.
//! * [`fd`]: poll(2) and `O_NONBLOCK` on any descriptor.
//! * [`epoll`], [`eventfd`]: the seccomp agent's wait and its wake-up.
//! * [`seccomp`]: seccomp(2) and the user-notification ioctls (the `syslog(2)` agent).
//! * [`bpf`]: run-time statistics of the attribution's BPF programs.
//! * [`scm`]: fds over Unix sockets (`SCM_RIGHTS`).
//! * [`shm`]: sealed memfds mapped as atomic words, the ring storage that survives a restart.

pub mod bpf;
pub mod clock;
pub mod cpu;
pub mod epoll;
pub mod eventfd;
pub mod fd;
pub mod fuse_dev;
pub mod maps;
pub mod memory;
pub mod mount;
pub mod peer;
pub mod pidfd;
pub mod proc;
pub mod process;
pub mod scm;
pub mod seccomp;
pub mod shm;
pub mod signal;

use std::io;

use thiserror::Error;

/// A failed system call or procfs access, naming the call and its argument.
#[derive(Debug, Error)]
#[error("`{call}` failed: {source}")]
pub struct SysError {
    /// The call, with its argument, e.g. `openat(/proc/123/ns/net)`.
    pub call: String,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl SysError {
    /// Wrap the current `errno` for `call`.
    pub fn last(call: impl Into<String>) -> Self {
        SysError {
            call: call.into(),
            source: io::Error::last_os_error(),
        }
    }

    /// Wrap `source` for `call`.
    pub fn new(call: impl Into<String>, source: io::Error) -> Self {
        SysError {
            call: call.into(),
            source,
        }
    }

    /// The raw errno, if any.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, SysError>;

/// Eight random bytes from getrandom(2), or `None` if the kernel has none to give yet.
pub fn random_u64() -> Option<u64> {
    let mut r = [0u8; 8];
    // SAFETY: getrandom writes at most `r.len()` bytes into the valid buffer `r`.
    let n = unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
    (usize::try_from(n).ok() == Some(r.len())).then(|| u64::from_ne_bytes(r))
}

/// The effective uid of this process.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// The real uid of this process.
pub fn getuid() -> u32 {
    // SAFETY: getuid takes no arguments and cannot fail.
    unsafe { libc::getuid() }
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit (for processes that keep many fds, like
/// the restart holder); returns the soft limit in force afterwards.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: all-zero is a valid rlimit to be filled.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: valid pointer to an rlimit that only raises the soft limit to the hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}
