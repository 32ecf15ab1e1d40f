//! Calls on any file descriptor: waiting for input (poll(2)) and `O_NONBLOCK`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use super::{Result, SysError};

/// `poll(2)` over `fds` for up to `timeout_ms` (-1: no limit): how many have events. EINTR
/// counts as a timeout (every caller polls in a loop).
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, writable array of `fds.len()` pollfd entries.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}

/// [`poll`] for input on each of `fds` (a negative fd is skipped, as poll(2) does): the
/// `revents` of each (0 for a skipped fd or on timeout). Raw fds are sound here: poll
/// dereferences nothing, and a closed fd reports `POLLNVAL`.
pub fn poll_in<const N: usize>(fds: [RawFd; N], timeout_ms: i32) -> io::Result<[libc::c_short; N]> {
    let mut set = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    poll(&mut set, timeout_ms)?;
    Ok(set.map(|p| p.revents))
}

/// Whether `fd` has `FD_CLOEXEC` set (fcntl(2) `F_GETFD`).
pub fn is_cloexec(fd: BorrowedFd<'_>) -> Result<bool> {
    // SAFETY: F_GETFD on an open fd has no memory preconditions.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    if flags < 0 {
        return Err(SysError::last("fcntl(F_GETFD)"));
    }
    Ok(flags & libc::FD_CLOEXEC != 0)
}

/// Whether `fd` has input now (`POLLIN` within `timeout_ms`).
pub fn readable(fd: BorrowedFd<'_>, timeout_ms: i32) -> bool {
    matches!(poll_in([fd.as_raw_fd()], timeout_ms), Ok([r]) if r & libc::POLLIN != 0)
}

/// Set `O_NONBLOCK` on `fd` (fcntl(2) `F_GETFL`, then `F_SETFL`).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: F_GETFL on an open fd has no memory preconditions.
    let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if fl < 0 {
        return Err(SysError::last("fcntl(F_GETFL)"));
    }
    // SAFETY: F_SETFL with an int argument has no memory preconditions.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) };
    if rc < 0 {
        return Err(SysError::last("fcntl(F_SETFL, O_NONBLOCK)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::eventfd::EventFd;
    use std::os::fd::AsFd;

    #[test]
    fn poll_reports_only_the_ready_fd_and_skips_negative_ones() {
        let (a, b) = (EventFd::new().unwrap(), EventFd::new().unwrap());
        b.signal();
        let r = poll_in([a.as_fd().as_raw_fd(), -1, b.as_fd().as_raw_fd()], 0).unwrap();
        assert_eq!(r[0], 0);
        assert_eq!(r[1], 0);
        assert_ne!(r[2] & libc::POLLIN, 0);
        assert!(readable(b.as_fd(), 0));
        assert!(!readable(a.as_fd(), 0));
    }
}
