//! epoll(7): the seccomp agent's one wait over its sockets, connections and listeners.
//!
//! The calls return `io::Error` rather than [`SysError`](super::SysError): the agent names the
//! fd's role (socket, connection, listener) in its own message, which says more than the call.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{Result, SysError};

/// An empty event, to fill arrays passed to [`wait`].
pub const NO_EVENT: libc::epoll_event = libc::epoll_event { events: 0, u64: 0 };

/// `epoll_create1(EPOLL_CLOEXEC)`.
pub fn create() -> Result<OwnedFd> {
    // SAFETY: epoll_create1 takes a flag and no pointers.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(SysError::last("epoll_create1(EPOLL_CLOEXEC)"));
    }
    // SAFETY: epoll_create1 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ctl(
    ep: BorrowedFd<'_>,
    op: libc::c_int,
    fd: BorrowedFd<'_>,
    events: u32,
    token: u64,
) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: both fds are open for the call; `ev` is read during the call only.
    let rc = unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `epoll_ctl(EPOLL_CTL_ADD)`: watch `fd` for `events`, reported with `token`.
pub fn add(ep: BorrowedFd<'_>, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
    ctl(ep, libc::EPOLL_CTL_ADD, fd, events, token)
}

/// `epoll_ctl(EPOLL_CTL_MOD)`: change what `fd` is watched for.
pub fn modify(ep: BorrowedFd<'_>, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
    ctl(ep, libc::EPOLL_CTL_MOD, fd, events, token)
}

/// `epoll_ctl(EPOLL_CTL_DEL)`; an fd that was not watched is not an error worth reporting.
pub fn delete(ep: BorrowedFd<'_>, fd: BorrowedFd<'_>) {
    // SAFETY: both fds are open for the call; a null event is allowed for EPOLL_CTL_DEL.
    unsafe {
        libc::epoll_ctl(
            ep.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            fd.as_raw_fd(),
            std::ptr::null_mut(),
        )
    };
}

/// `epoll_wait(ep, events, timeout_ms)`: the number of events filled in.
pub fn wait(
    ep: BorrowedFd<'_>,
    events: &mut [libc::epoll_event],
    timeout_ms: i32,
) -> io::Result<usize> {
    let max = i32::try_from(events.len()).unwrap_or(i32::MAX);
    // SAFETY: `events` is writable for `max` entries and outlives the call.
    let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::eventfd::EventFd;
    use std::os::fd::AsFd;

    #[test]
    fn an_added_fd_is_reported_with_its_token_until_deleted() {
        let ep = create().unwrap();
        let e = EventFd::new().unwrap();
        add(ep.as_fd(), e.as_fd(), libc::EPOLLIN as u32, 7).unwrap();
        let mut ev = [NO_EVENT; 4];
        assert_eq!(wait(ep.as_fd(), &mut ev, 0).unwrap(), 0);
        e.signal();
        assert_eq!(wait(ep.as_fd(), &mut ev, 0).unwrap(), 1);
        assert_eq!({ ev[0].u64 }, 7);
        modify(ep.as_fd(), e.as_fd(), libc::EPOLLIN as u32, 9).unwrap();
        assert_eq!(wait(ep.as_fd(), &mut ev, 0).unwrap(), 1);
        assert_eq!({ ev[0].u64 }, 9);
        delete(ep.as_fd(), e.as_fd());
        assert_eq!(wait(ep.as_fd(), &mut ev, 0).unwrap(), 0);
    }
}
