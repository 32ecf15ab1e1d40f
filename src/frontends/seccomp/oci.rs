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
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use crate::sys::SysError;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::SeccompError;

/// The name of the listener fd in [`ContainerProcessState::fds`].
pub const SECCOMP_FD_NAME: &str = "seccompFd";

/// An annotation whose value names the ring a container's calls go to, overriding the
/// namespace of `state.pid`.
pub const KEY_ANNOTATION: &str = "io.kmsgfs.key";

pub use crate::sys::scm::MAX_FDS;

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

pub use crate::sys::scm::{recv_fds, recv_one_fd, send_fd};

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
    send_fd(stream.as_fd(), &payload, fd).map_err(|source| {
        SeccompError::Sys(SysError::new(
            format!("sendmsg({})", socket.display()),
            source,
        ))
    })
}

/// Send an arbitrary `state` with `fd` to the agent on `socket`.
pub fn send_state(
    socket: &Path,
    state: &ContainerProcessState,
    fd: BorrowedFd<'_>,
) -> Result<(), SeccompError> {
    let payload = serde_json::to_vec(state).expect("ContainerProcessState serialises");
    let stream = UnixStream::connect(socket).map_err(|source| {
        SeccompError::Sys(SysError::new(
            format!("connect({})", socket.display()),
            source,
        ))
    })?;
    send_fd(stream.as_fd(), &payload, fd).map_err(|source| {
        SeccompError::Sys(SysError::new(
            format!("sendmsg({})", socket.display()),
            source,
        ))
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
        assert!(crate::sys::fd::is_cloexec(fds[0].as_fd()).unwrap());
    }
}
