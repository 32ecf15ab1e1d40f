//! A non-blocking eventfd: one thread wakes another that waits in poll(2).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{Result, SysError};

/// An `eventfd(EFD_CLOEXEC | EFD_NONBLOCK)`.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A new eventfd with counter 0.
    pub fn new() -> Result<EventFd> {
        // SAFETY: eventfd has no memory preconditions.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(SysError::last("eventfd"));
        }
        // SAFETY: eventfd returned a new descriptor that nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Make the fd readable (poll reports POLLIN until [`EventFd::clear`]).
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64. EAGAIN (counter saturated) still leaves it
        // readable, which is all a signal needs.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Reset the counter.
    pub fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our non-blocking eventfd.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(e: &EventFd) -> bool {
        let mut p = libc::pollfd {
            fd: e.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, the fd is open.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn signal_makes_it_readable_until_cleared() {
        let e = EventFd::new().unwrap();
        assert!(!readable(&e));
        e.signal();
        e.signal();
        assert!(readable(&e));
        e.clear();
        assert!(!readable(&e));
    }
}
