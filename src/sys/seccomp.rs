//! seccomp(2) and the user-notification ioctls (`SECCOMP_IOCTL_NOTIF_*`): installing the
//! `syslog(2)` filter of `kmsgfs run`, and the agent's receive, id check and answer.
//!
//! The calls return `io::Error` (not [`SysError`](super::SysError)) because their callers
//! decide per errno: ENOENT from RECV or SEND means the caller left, EINVAL from SET_FLAGS an
//! older kernel. No crate is used: libseccomp's notify API allocates (`seccomp_notify_alloc`)
//! and would add a C library for four ioctls whose structs `libc` already defines.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, program)`: install
/// `program` on the calling thread; its listener fd (close-on-exec). Async-signal-safe: it
/// allocates nothing.
pub fn install_filter(program: &[libc::sock_filter]) -> io::Result<OwnedFd> {
    let len = libc::c_ushort::try_from(program.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let prog = libc::sock_fprog {
        len,
        // The kernel only reads through this pointer.
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` describes `program`, which outlives the call; the kernel copies it and
    // returns a new fd or -1.
    let rc = check(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        )
    })?;
    let fd = i32::try_from(rc).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `seccomp(SECCOMP_GET_NOTIF_SIZES)`: the kernel's sizes of `struct seccomp_notif` and
/// `struct seccomp_notif_resp`.
pub fn notif_sizes() -> io::Result<(usize, usize)> {
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: GET_NOTIF_SIZES writes one `struct seccomp_notif_sizes` to the pointer, which is
    // valid and writable for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0,
            &mut sizes as *mut libc::seccomp_notif_sizes,
        )
    })?;
    Ok((
        usize::from(sizes.seccomp_notif),
        usize::from(sizes.seccomp_notif_resp),
    ))
}

/// `SECCOMP_IOCTL_NOTIF_RECV`, once (EINTR and ENOENT are the caller's to handle). The caller
/// must have checked at start-up that the kernel's `seccomp_notif` is not larger than `libc`'s
/// ([`notif_sizes`]).
pub fn notif_recv(listener: BorrowedFd<'_>) -> io::Result<libc::seccomp_notif> {
    // SAFETY: all-zero is a valid seccomp_notif, and the kernel requires it zeroed.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: RECV writes one seccomp_notif to the pointer, valid for the call; the kernel's
    // struct is not larger than ours (the precondition above).
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut req,
        )
    };
    check(rc.into())?;
    Ok(req)
}

/// `SECCOMP_IOCTL_NOTIF_ID_VALID`: the task behind `id` still waits for this reply.
pub fn notif_id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    // SAFETY: ID_VALID reads one u64 from the pointer, valid for the call.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &id as *const u64,
        )
    };
    rc == 0
}

/// `SECCOMP_IOCTL_NOTIF_SET_FLAGS(flags)` (Linux 6.6; EINVAL before).
pub fn notif_set_flags(listener: BorrowedFd<'_>, flags: u64) -> io::Result<()> {
    // SAFETY: SET_FLAGS takes the flags by value (an integer argument); no memory is passed.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            flags,
        )
    };
    check(rc.into()).map(drop)
}

/// `SECCOMP_IOCTL_NOTIF_SEND`, once (EINTR and ENOENT are the caller's to handle).
pub fn notif_send(listener: BorrowedFd<'_>, resp: &libc::seccomp_notif_resp) -> io::Result<()> {
    // SAFETY: SEND reads one seccomp_notif_resp from the pointer, valid for the call.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            resp as *const libc::seccomp_notif_resp,
        )
    };
    check(rc.into()).map(drop)
}
