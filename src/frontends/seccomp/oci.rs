//! The OCI `listenerPath` protocol: the `ContainerProcessState` message and fd passing.
//!
//! An OCI runtime (runc ≥ 1.1, crun ≥ 0.19) connects to the agent's `AF_UNIX` `SOCK_STREAM`
//! socket once per process it installs the filter for (`run`, and every `exec`), and sends one
//! `ContainerProcessState` JSON document with the listener fd attached by `SCM_RIGHTS`. The two
//! runtimes format the JSON differently (runc compact, crun pretty-printed), so it is parsed
//! with a real JSON parser and field order does not matter (seccomp-agent.md §6.3). `fds[i]`
//! names the i-th passed fd; the listener is the one named `"seccompFd"`.
//!
//! `kmsgfs run` uses the same message ([`send_listener`]) so that the agent has one entry
//! point. [`send_fd`] and [`recv_fds`] are the raw `SCM_RIGHTS` helpers; [`send_fd`] is
//! async-signal-safe so a `pre_exec` child can hand its listener to the parent.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::SeccompError;

/// The name of the listener fd in [`ContainerProcessState::fds`].
pub const SECCOMP_FD_NAME: &str = "seccompFd";

/// An annotation whose value names the ring a container's calls go to, overriding the
/// namespace of `state.pid`.
pub const KEY_ANNOTATION: &str = "io.kmsgfs.key";

/// Most fds accepted in one message. Runtimes send exactly one.
pub const MAX_FDS: usize = 8;

/// The smallest receive buffer: annotations can be large (seccomp-agent.md §7.1).
pub const RECV_BUFFER: usize = 64 * 1024;

/// `ContainerProcessState` of the OCI runtime spec (config-linux.md, "seccomp").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerProcessState {
    /// Version of the runtime spec the runtime follows.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// Names of the fds passed with the message, in order.
    #[serde(default)]
    pub fds: Vec<String>,
    /// The process the filter was installed for (host PID).
    pub pid: i64,
    /// The profile's `listenerMetadata`, passed through.
    #[serde(default)]
    pub metadata: String,
    /// The container's state.
    pub state: OciState,
}

/// The `state` member: the container, as `runtime state` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciState {
    /// Version of the runtime spec.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// `creating` for `run`, `running` for `exec`.
    #[serde(default)]
    pub status: String,
    /// The container's init (host PID); 0 or absent when it does not exist.
    #[serde(default)]
    pub pid: i64,
    /// Bundle path.
    #[serde(default)]
    pub bundle: String,
    /// The config's annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl ContainerProcessState {
    /// The message `kmsgfs run` (or a test) sends for a process it started itself.
    pub fn for_process(pid: u32, id: &str, annotations: BTreeMap<String, String>) -> Self {
        ContainerProcessState {
            oci_version: "1.0.2".to_owned(),
            fds: vec![SECCOMP_FD_NAME.to_owned()],
            pid: i64::from(pid),
            metadata: String::new(),
            state: OciState {
                oci_version: "1.0.2".to_owned(),
                id: id.to_owned(),
                status: "creating".to_owned(),
                pid: i64::from(pid),
                bundle: String::new(),
                annotations,
            },
        }
    }

    /// Index of the listener in the passed fds.
    pub fn seccomp_fd_index(&self) -> Option<usize> {
        self.fds.iter().position(|n| n == SECCOMP_FD_NAME)
    }
}

/// What parsing a (possibly partial) message gave.
#[derive(Debug)]
pub enum Parsed {
    /// A complete message.
    Complete(ContainerProcessState),
    /// Valid so far, but the document is not finished: wait for more bytes.
    Incomplete,
    /// Not a `ContainerProcessState`.
    Invalid(serde_json::Error),
}

/// Parse the bytes received so far on a connection.
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut de = serde_json::Deserializer::from_slice(bytes).into_iter::<ContainerProcessState>();
    match de.next() {
        None => Parsed::Incomplete,
        Some(Ok(state)) => Parsed::Complete(state),
        Some(Err(e)) if e.is_eof() => Parsed::Incomplete,
        Some(Err(e)) => Parsed::Invalid(e),
    }
}

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
    if payload.is_empty() {
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
            // The fd goes with the first bytes only.
            msg.msg_control = cmsg.0.as_mut_ptr().cast();
            // SAFETY: arithmetic only.
            msg.msg_controllen =
                unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
            // SAFETY: msg_control points to a buffer of at least msg_controllen bytes, aligned
            // for cmsghdr, so the first header and its data lie inside it.
            unsafe {
                let hdr = libc::CMSG_FIRSTHDR(&msg);
                (*hdr).cmsg_level = libc::SOL_SOCKET;
                (*hdr).cmsg_type = libc::SCM_RIGHTS;
                (*hdr).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(hdr).cast::<RawFd>(), fd.as_raw_fd());
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

/// Hand a listener to the agent listening on `socket`, as an OCI runtime does: one
/// connection, one `ContainerProcessState` for `pid` (used as both the process and the
/// container init), the listener attached. `annotations` may carry [`KEY_ANNOTATION`].
///
/// `pid` is a host pid, as the agent sees it: the agent reads the container's namespaces
/// from `/proc/<pid>`. A sender inside a PID namespace passes 0, and the agent uses the
/// sender's own pid from `SO_PEERCRED`, which the kernel translates for it.
pub fn send_listener(
    socket: &Path,
    pid: u32,
    fd: BorrowedFd<'_>,
    annotations: BTreeMap<String, String>,
) -> Result<(), SeccompError> {
    let state = ContainerProcessState::for_process(pid, &format!("kmsgfs-run-{pid}"), annotations);
    send_state(socket, &state, fd)
}

/// Like [`send_listener`], on a connection made earlier (`kmsgfs run` connects before it hides
/// the socket from the container it builds; docs/security.md T4). `socket` names it in errors.
pub fn send_listener_on(
    stream: &UnixStream,
    socket: &Path,
    pid: u32,
    fd: BorrowedFd<'_>,
) -> Result<(), SeccompError> {
    let state =
        ContainerProcessState::for_process(pid, &format!("kmsgfs-run-{pid}"), BTreeMap::new());
    let payload = serde_json::to_vec(&state).expect("ContainerProcessState serialises");
    send_fd(stream.as_fd(), &payload, fd).map_err(|source| SeccompError::Io {
        call: format!("sendmsg({})", socket.display()),
        source,
    })
}

/// Send an arbitrary `state` with `fd` to the agent on `socket`.
pub fn send_state(
    socket: &Path,
    state: &ContainerProcessState,
    fd: BorrowedFd<'_>,
) -> Result<(), SeccompError> {
    let payload = serde_json::to_vec(state).expect("ContainerProcessState serialises");
    let stream = UnixStream::connect(socket).map_err(|source| SeccompError::Io {
        call: format!("connect({})", socket.display()),
        source,
    })?;
    send_fd(stream.as_fd(), &payload, fd).map_err(|source| SeccompError::Io {
        call: format!("sendmsg({})", socket.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNC: &str = r#"{"ociVersion":"1.0.2-dev","fds":["seccompFd"],"pid":29532,"metadata":"kmsgfs-v1","state":{"ociVersion":"1.0.2-dev","id":"e1","status":"creating","pid":29532,"bundle":"/var/lib/kmsgfs-test/bundle","annotations":{"io.example.owner":"team-a","io.example.vkmsg/ring":"per-container"}}}"#;

    const CRUN: &str = r#"{
    "ociVersion": "0.2.0",
    "fds": [
        "seccompFd"
    ],
    "pid": 29800,
    "metadata": "kmsgfs-v1",
    "state": {
        "ociVersion": "0.2.0",
        "id": "e3",
        "status": "creating",
        "pid": 29800,
        "bundle": "/var/lib/kmsgfs-test/bundle",
        "annotations": {
            "io.example.vkmsg/ring": "per-container",
            "io.kmsgfs.key": "team-a"
        }
    }
}"#;

    fn complete(s: &str) -> ContainerProcessState {
        match parse(s.as_bytes()) {
            Parsed::Complete(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn runc_compact_message() {
        let c = complete(RUNC);
        assert_eq!(c.pid, 29532);
        assert_eq!(c.state.id, "e1");
        assert_eq!(c.state.status, "creating");
        assert_eq!(c.metadata, "kmsgfs-v1");
        assert_eq!(c.seccomp_fd_index(), Some(0));
        assert_eq!(c.state.annotations.len(), 2);
    }

    #[test]
    fn crun_pretty_message() {
        let c = complete(CRUN);
        assert_eq!(c.oci_version, "0.2.0");
        assert_eq!(c.state.pid, 29800);
        assert_eq!(c.state.annotations[KEY_ANNOTATION], "team-a");
    }

    #[test]
    fn field_order_and_unknown_fields_do_not_matter() {
        let s = r#"{"state":{"annotations":{},"id":"x","ociVersion":"1","extra":1},"pid":7,"fds":["other","seccompFd"],"ociVersion":"1","new":[1,2]}"#;
        let c = complete(s);
        assert_eq!(c.seccomp_fd_index(), Some(1));
        assert_eq!(c.state.pid, 0);
        assert_eq!(c.metadata, "");
    }

    #[test]
    fn every_proper_prefix_is_incomplete() {
        for msg in [RUNC, CRUN] {
            for cut in 0..msg.len() {
                assert!(
                    matches!(parse(&msg.as_bytes()[..cut]), Parsed::Incomplete),
                    "cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn garbage_is_invalid() {
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(br#"{"pid":"x"}"#), Parsed::Invalid(_)));
    }

    #[test]
    fn for_process_round_trips() {
        let mut ann = BTreeMap::new();
        ann.insert(KEY_ANNOTATION.to_owned(), "k".to_owned());
        let s = ContainerProcessState::for_process(42, "c", ann);
        let bytes = serde_json::to_vec(&s).unwrap();
        assert_eq!(complete(std::str::from_utf8(&bytes).unwrap()), s);
    }

    #[test]
    fn fd_passing_over_a_socketpair() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        send_fd(a.as_fd(), CRUN.as_bytes(), file.as_fd()).unwrap();
        let mut buf = vec![0u8; RECV_BUFFER];
        let (n, fds) = recv_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], CRUN.as_bytes());
        assert_eq!(fds.len(), 1);
        // SAFETY: fcntl F_GETFD on an fd we own.
        let flags = unsafe { libc::fcntl(fds[0].as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }
}
