//! Passing fds over Unix sockets (`SCM_RIGHTS`): the seccomp listeners runtimes hand the
//! agent, and every fd the restart holder keeps (`crate::restart`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Most fds one message may carry (more are refused as a truncated control message).
pub const MAX_FDS: usize = 8;

/// Aligned control-message space for up to [`MAX_FDS`] fds.
#[repr(C, align(8))]
struct CmsgBuf([u8; 128]);

const _: () = {
    // SAFETY: CMSG_SPACE only does arithmetic.
    let need = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) };
    assert!(need as usize <= 128);
};

/// Send `payload` (not empty) with `fd` attached to its first byte (`SCM_RIGHTS`).
/// Async-signal-safe: nothing is allocated.
pub fn send_fd(sock: BorrowedFd<'_>, payload: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    send_fds(sock, payload, &[fd])
}

/// [`send_fd`] with up to [`MAX_FDS`] fds (as LXC sends its three with each record).
pub fn send_fds(sock: BorrowedFd<'_>, payload: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if payload.is_empty() || fds.is_empty() || fds.len() > MAX_FDS {
        // A stream socket sends no ancillary data without at least one byte.
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut cmsg = CmsgBuf([0; 128]);
    let mut sent = 0usize;
    while sent < payload.len() {
        let rest = &payload[sent..];
        let mut iov = libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        };
        // SAFETY: all-zero is a valid msghdr; the fields that matter are set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if sent == 0 {
            // The fds go with the first bytes only.
            msg.msg_control = cmsg.0.as_mut_ptr().cast();
            let bytes = (fds.len() * std::mem::size_of::<RawFd>()) as u32;
            // SAFETY: arithmetic only.
            msg.msg_controllen = unsafe { libc::CMSG_SPACE(bytes) } as _;
            // SAFETY: msg_control points to a buffer of at least msg_controllen bytes, aligned
            // for cmsghdr, so the first header and its data lie inside it.
            unsafe {
                let hdr = libc::CMSG_FIRSTHDR(&msg);
                (*hdr).cmsg_level = libc::SOL_SOCKET;
                (*hdr).cmsg_type = libc::SCM_RIGHTS;
                (*hdr).cmsg_len = libc::CMSG_LEN(bytes) as _;
                for (i, fd) in fds.iter().enumerate() {
                    std::ptr::write_unaligned(
                        libc::CMSG_DATA(hdr).cast::<RawFd>().add(i),
                        fd.as_raw_fd(),
                    );
                }
            }
        }
        // SAFETY: msg points to valid iovec and control buffers that outlive the call.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        sent += n as usize;
    }
    Ok(())
}

/// One `recvmsg` with `MSG_CMSG_CLOEXEC`: the bytes read into `buf` and the fds that came with
/// them. A truncated control message is an error (its fds are closed).
pub fn recv_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut cmsg = CmsgBuf([0; 128]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid msghdr; the fields that matter are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.0.len() as _;
    let n = loop {
        // SAFETY: msg points to a writable iovec and control buffer that outlive the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control/msg_controllen; the CMSG_* walk stays inside it.
    unsafe {
        let mut hdr = libc::CMSG_FIRSTHDR(&msg);
        while !hdr.is_null() {
            if (*hdr).cmsg_level == libc::SOL_SOCKET && (*hdr).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(hdr);
                let bytes = (*hdr).cmsg_len as usize - (data as usize - hdr as usize);
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    // Each passed fd is new in this process and owned by nobody else.
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            hdr = libc::CMSG_NXTHDR(&msg, hdr);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control message truncated: too many fds",
        ));
    }
    Ok((n, fds))
}

/// Receive exactly one fd sent by [`send_fd`] (payload ignored), e.g. from a `pre_exec` child.
pub fn recv_one_fd(sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut buf = [0u8; 64];
    let (_, mut fds) = recv_fds(sock, &mut buf)?;
    match fds.len() {
        1 => Ok(fds.pop().expect("one fd")),
        n => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("expected one fd, got {n}"),
        )),
    }
}

/// Send `payload` as one message without fds (a `SOCK_SEQPACKET` message is sent whole).
pub fn send_msg(sock: BorrowedFd<'_>, payload: &[u8]) -> io::Result<()> {
    loop {
        // SAFETY: `payload` is a valid buffer for the duration of the call.
        let n = unsafe {
            libc::send(
                sock.as_raw_fd(),
                payload.as_ptr().cast(),
                payload.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn seqpacket_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr(path: &std::path::Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// A listening `SOCK_SEQPACKET` socket bound at `path` (which must not exist), mode 0600.
pub fn seqpacket_listen(path: &std::path::Path) -> io::Result<OwnedFd> {
    let fd = seqpacket_socket()?;
    let (addr, len) = sockaddr(path)?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes. (The socket's mode is set right
    // after; connections are checked by peer credentials anyway.)
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    // SAFETY: plain listen(2) on our socket.
    if unsafe { libc::listen(fd.as_raw_fd(), 16) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// A `SOCK_SEQPACKET` connection to `path`.
pub fn seqpacket_connect(path: &std::path::Path) -> io::Result<OwnedFd> {
    let fd = seqpacket_socket()?;
    let (addr, len) = sockaddr(path)?;
    loop {
        // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        if r == 0 {
            return Ok(fd);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Accept one connection (close-on-exec).
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: null address pointers are allowed; the result is checked.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `shutdown(SHUT_RD)`: the peer's further sends fail with EPIPE; what is queued stays
/// readable, and this end can still send.
pub fn shutdown_read(sock: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain shutdown(2) on a socket fd.
    if unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_RD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A connected `SOCK_SEQPACKET` pair (close-on-exec): message boundaries are kept, as on
/// `/dev/fuse` and LXC's proxy socket.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is valid storage for two fds.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair returned two new fds owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
