//! Who is on the other end of a Unix socket, robust against pid reuse.
//!
//! `SO_PEERCRED` gives the peer's pid at `connect()`; the peer may have exited since and its
//! pid been reused. [`peer_namespaces`] therefore takes `SO_PEERPIDFD` (Linux 6.5+) first, reads
//! `/proc/<pid>/ns/{pid,user}` and then confirms through the pidfd that the same process is
//! still alive (a live pidfd's pid cannot have been reused).

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{Result, SysError};

/// `SO_PEERPIDFD` (include/uapi/asm-generic/socket.h).
const SO_PEERPIDFD: libc::c_int = 77;

/// A namespace as `stat(2)` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsId {
    /// `st_dev` of the nsfs inode.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

/// The peer's pid (agent's view), uid, and pid and user namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// `SO_PEERCRED` pid (0 if not visible).
    pub pid: u32,
    /// `SO_PEERCRED` uid.
    pub uid: u32,
    /// `/proc/<pid>/ns/pid`.
    pub pid_ns: NsId,
    /// `/proc/<pid>/ns/user`.
    pub user_ns: NsId,
    /// The parent of [`Peer::user_ns`] (`ioctl(NS_GET_PARENT)`), `None` for the initial one.
    pub user_ns_parent: Option<NsId>,
    /// Whether `/proc/<pid>/uid_map` is exactly `0 0 1`: only root is mapped, to root of the
    /// parent user namespace (what `kmsgfs run --unshare user` sets up as host root).
    pub root_only_map: bool,
}

/// `NS_GET_PARENT`: `_IO(0xb7, 0x2)`.
const NS_GET_PARENT: libc::c_ulong = 0xb702;

fn parent_user_ns(pid: u32) -> Result<Option<NsId>> {
    let path = format!("/proc/{pid}/ns/user");
    let c = CString::new(path.clone()).expect("no NUL in a /proc path");
    // SAFETY: `c` is NUL-terminated; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(SysError::last(format!("open({path})")));
    }
    // SAFETY: a new fd owned by nobody else.
    let ns = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: NS_GET_PARENT takes no argument and returns a new fd or -1.
    let parent = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_PARENT) };
    if parent < 0 {
        let e = std::io::Error::last_os_error();
        // EPERM: the parent is outside the caller's (our) user namespace: the initial one.
        if e.raw_os_error() == Some(libc::EPERM) {
            return Ok(None);
        }
        return Err(SysError::new(format!("ioctl({path}, NS_GET_PARENT)"), e));
    }
    // SAFETY: a new fd owned by nobody else.
    let parent = unsafe { OwnedFd::from_raw_fd(parent) };
    // SAFETY: an all-zero stat is valid storage for fstat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and writable `st`.
    if unsafe { libc::fstat(parent.as_raw_fd(), &mut st) } < 0 {
        return Err(SysError::last(format!("fstat(parent of {path})")));
    }
    Ok(Some(NsId {
        dev: st.st_dev,
        ino: st.st_ino,
    }))
}

/// Whether a `uid_map` text is exactly the one line `0 0 1`.
pub fn is_root_only_map(map: &str) -> bool {
    let lines: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|f: &Vec<&str>| !f.is_empty())
        .collect();
    lines == [vec!["0", "0", "1"]]
}

/// `stat(path)` as an [`NsId`].
pub fn ns_of_path(path: &str) -> Result<NsId> {
    let c = CString::new(path).map_err(|_| {
        SysError::new(
            format!("stat({path})"),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })?;
    // SAFETY: an all-zero stat is valid storage for stat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` writable; the result is checked.
    if unsafe { libc::stat(c.as_ptr(), &mut st) } < 0 {
        return Err(SysError::last(format!("stat({path})")));
    }
    Ok(NsId {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

fn getsockopt<T>(fd: BorrowedFd<'_>, opt: libc::c_int, what: &str, out: &mut T) -> Result<()> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `out`, valid and writable.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (out as *mut T).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(SysError::last(format!("getsockopt({what})")));
    }
    Ok(())
}

/// `SO_PEERCRED` of the connected socket `fd`: (pid, uid) as the caller's namespaces see them,
/// taken by the kernel at `connect()`, so valid after the peer exited.
pub fn peer_cred(fd: BorrowedFd<'_>) -> Result<(u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    getsockopt(fd, libc::SO_PEERCRED, "SO_PEERCRED", &mut cred)?;
    Ok((u32::try_from(cred.pid).unwrap_or(0), cred.uid))
}

/// Identify the peer of the connected socket `fd` (module docs).
pub fn peer_namespaces(fd: BorrowedFd<'_>) -> Result<Peer> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    getsockopt(fd, libc::SO_PEERCRED, "SO_PEERCRED", &mut cred)?;
    let mut raw: libc::c_int = -1;
    getsockopt(fd, SO_PEERPIDFD, "SO_PEERPIDFD", &mut raw)?;
    if raw < 0 {
        return Err(SysError::new(
            "getsockopt(SO_PEERPIDFD)",
            std::io::Error::from_raw_os_error(libc::ESRCH),
        ));
    }
    // SAFETY: the kernel returned a new pidfd that nobody else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let pid = u32::try_from(cred.pid).unwrap_or(0);
    if pid == 0 {
        return Err(SysError::new(
            "SO_PEERCRED (peer not visible in the agent's pid namespace)",
            std::io::Error::from_raw_os_error(libc::ESRCH),
        ));
    }
    let pid_ns = ns_of_path(&format!("/proc/{pid}/ns/pid"))?;
    let user_ns = ns_of_path(&format!("/proc/{pid}/ns/user"))?;
    let user_ns_parent = parent_user_ns(pid)?;
    let uid_map_path = format!("/proc/{pid}/uid_map");
    let root_only_map = is_root_only_map(
        &std::fs::read_to_string(&uid_map_path)
            .map_err(|e| SysError::new(format!("read({uid_map_path})"), e))?,
    );
    // SAFETY: signal 0 through a valid pidfd only checks that the process exists.
    let alive = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if alive < 0 {
        return Err(SysError::last(format!(
            "pidfd_send_signal(peer {pid}, 0) after reading its namespaces"
        )));
    }
    Ok(Peer {
        pid,
        uid: cred.uid,
        pid_ns,
        user_ns,
        user_ns_parent,
        root_only_map,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_only_maps() {
        assert!(is_root_only_map("         0          0          1\n"));
        assert!(!is_root_only_map("         0          0 4294967295\n"));
        assert!(!is_root_only_map("0 1000 1\n"));
        assert!(!is_root_only_map("0 0 1\n1 100000 65536\n"));
        assert!(!is_root_only_map(""));
    }
}
