//! `/dev/fuse`: the syscalls of kmsgfs's own FUSE transport ([`crate::frontends::fuse::wire`]).
//!
//! Opening the device, `mount(2)` of a `fuse` filesystem on it, reading requests, writing
//! replies with one `writev(2)` each, cloning the connection onto a new fd
//! (`FUSE_DEV_IOC_CLONE`), non-blocking mode and `poll(2)` with a wake-up pipe. Unmounting is
//! [`super::mount::detach`].
//!
//! The calls go through `libc` like the rest of [`crate::sys`]: the handful used here does not
//! justify a second syscall crate (rustix or nix), and every `unsafe` stays in this file.

use std::ffi::CString;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{Result, SysError};

/// `FUSE_DEV_IOC_CLONE`, `_IOR(229, 0, uint32_t)` (include/uapi/linux/fuse.h): direction read
/// (2) in bits 30-31, size 4 in bits 16-29, type 229 in bits 8-15, number 0.
pub const FUSE_DEV_IOC_CLONE: libc::c_ulong = (2 << 30) | (4 << 16) | (229 << 8);

/// Open `/dev/fuse` read-write and close-on-exec: one new, unmounted connection end.
pub fn open_dev() -> Result<OwnedFd> {
    // SAFETY: the path is a NUL-terminated literal; open has no other memory preconditions.
    let fd = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(SysError::last("open(/dev/fuse)"));
    }
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn path_cstring(call: &str, p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|e| SysError::new(format!("{call}({})", p.display()), e.into()))
}

/// `mount(source, target, "fuse", flags, data)`.
pub fn mount_fuse(source: &str, target: &Path, flags: libc::c_ulong, data: &str) -> Result<()> {
    let call = || format!("mount({source}, {}, fuse, {data})", target.display());
    let c_target = path_cstring("mount", target)?;
    let c_source = CString::new(source).map_err(|e| SysError::new(call(), e.into()))?;
    let c_data = CString::new(data).map_err(|e| SysError::new(call(), e.into()))?;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; `data` is a
    // string, which is what the fuse filesystem type parses.
    let rc = unsafe {
        libc::mount(
            c_source.as_ptr(),
            c_target.as_ptr(),
            c"fuse".as_ptr(),
            flags,
            c_data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(SysError::last(call()));
    }
    Ok(())
}

/// `read(2)` of one request from a `/dev/fuse` fd into `buf`.
///
/// The raw errno matters to the caller (EINTR, EAGAIN, ENOENT, ENODEV): use
/// [`SysError::errno`].
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize> {
    // SAFETY: `buf` is valid, writable memory of `buf.len()` bytes for the whole call.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(SysError::last("read(/dev/fuse)"));
    }
    Ok(n as usize)
}

/// `writev(2)` of one reply or notification: the device takes each write as one message.
pub fn writev(fd: BorrowedFd<'_>, iov: &[IoSlice<'_>]) -> Result<usize> {
    let cnt = libc::c_int::try_from(iov.len()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `IoSlice` is ABI-compatible with `struct iovec` (std guarantees this on Unix);
    // the slices are valid for reading for the whole call and `cnt` does not exceed their
    // number.
    let n = unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr().cast(), cnt) };
    if n < 0 {
        return Err(SysError::last("writev(/dev/fuse)"));
    }
    Ok(n as usize)
}

/// A new fd on the same FUSE connection as `fd` (`FUSE_DEV_IOC_CLONE`). Requests read through
/// a clone must be answered through that clone: the kernel looks a reply's request up only
/// among the requests read through the fd it is written to (`fs/fuse/dev.c`,
/// `fuse_dev_do_write` on `fud->pq`).
pub fn clone_fd(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    let new = open_dev()?;
    let src: u32 = fd.as_raw_fd() as u32;
    // SAFETY: the ioctl reads one u32 (the source fd) from the pointer, which is valid for the
    // call; `new` is an open /dev/fuse fd.
    let rc = unsafe { libc::ioctl(new.as_raw_fd(), FUSE_DEV_IOC_CLONE as _, &src as *const u32) };
    if rc != 0 {
        return Err(SysError::last(format!(
            "ioctl(FUSE_DEV_IOC_CLONE, {})",
            fd.as_raw_fd()
        )));
    }
    Ok(new)
}

/// A close-on-exec, non-blocking pipe `(read end, write end)`, used to wake pollers.
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is valid storage for two ints.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if rc != 0 {
        return Err(SysError::last("pipe2(O_CLOEXEC|O_NONBLOCK)"));
    }
    // SAFETY: pipe2 returned two new fds owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Write one byte to a wake-up pipe; a full pipe is already "awake".
pub fn wake(fd: BorrowedFd<'_>) {
    let b = 1u8;
    // SAFETY: one readable byte for the duration of the call. Errors (EAGAIN on a full pipe)
    // leave the pipe readable, which is all a wake-up needs.
    unsafe {
        libc::write(fd.as_raw_fd(), (&b as *const u8).cast(), 1);
    }
}

/// What [`poll_in`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// The device fd has a request (or an error: the next read tells which).
    pub dev: bool,
    /// The wake-up pipe is readable.
    pub wake: bool,
}

/// `poll(2)` for POLLIN on `dev` and `wake`, without timeout. EINTR is returned as an error.
pub fn poll_in(dev: BorrowedFd<'_>, wake: BorrowedFd<'_>) -> Result<Ready> {
    let mut fds = [
        libc::pollfd {
            fd: dev.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
    if rc < 0 {
        return Err(SysError::last("poll(/dev/fuse)"));
    }
    Ok(Ready {
        dev: fds[0].revents != 0,
        wake: fds[1].revents != 0,
    })
}
