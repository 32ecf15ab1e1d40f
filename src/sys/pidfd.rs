//! Process file descriptors: a handle on one process that a reused pid cannot redirect.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::{Result, SysError};

/// `pidfd_open(pid, 0)`.
pub fn open(pid: u32) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(SysError::last(format!("pidfd_open({pid})")));
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `pidfd_send_signal(fd, sig, NULL, 0)`.
pub fn send_signal(fd: BorrowedFd<'_>, sig: i32) -> Result<()> {
    // SAFETY: a valid fd, a signal number, no siginfo (NULL), no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(SysError::last(format!("pidfd_send_signal({sig})")));
    }
    Ok(())
}

/// Wait up to `timeout` for the process to exit; whether it did. A pidfd polls readable once
/// its process has exited.
pub fn wait_exit(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut p = libc::pollfd {
            fd: fd.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd; the fd stays open for the call.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n > 0 {
            return true;
        }
        if n == 0 || left.is_zero() {
            return false;
        }
        // EINTR: poll again for the rest.
    }
}

/// Whether the process is still running (its pidfd is not readable yet).
pub fn is_running(fd: BorrowedFd<'_>) -> bool {
    !wait_exit(fd, Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_running_until_it_exits_and_a_signal_ends_it() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = open(child.id()).unwrap();
        assert!(is_running(fd.as_fd()));
        assert!(!wait_exit(fd.as_fd(), Duration::from_millis(20)));
        send_signal(fd.as_fd(), libc::SIGTERM).unwrap();
        assert!(wait_exit(fd.as_fd(), Duration::from_secs(10)));
        assert!(!is_running(fd.as_fd()));
        let _ = child.wait();
    }
}
