//! The agent's socket: the OCI `listenerPath` protocol as runc and crun speak it
//! (seccomp-agent.md §6.3, §7). Root only.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;

use crate::support::seccomp::*;
use kmsgfs::frontends::seccomp::oci::send_fd;
use kmsgfs::frontends::seccomp::{Agent, AgentOptions, SeccompError};

/// crun's pretty-printed message for `pid`, naming ring `key`.
fn crun_message(pid: u32, key: &str) -> String {
    format!(
        r#"{{
    "ociVersion": "0.2.0",
    "fds": [
        "seccompFd"
    ],
    "pid": {pid},
    "metadata": "kmsgfs-v1",
    "state": {{
        "ociVersion": "0.2.0",
        "id": "crun-like",
        "status": "creating",
        "pid": {pid},
        "bundle": "/tmp/bundle",
        "annotations": {{
            "io.kmsgfs.key": "{key}"
        }}
    }}
}}"#
    )
}

/// runc's compact message.
fn runc_message(pid: u32, key: &str) -> String {
    format!(
        r#"{{"ociVersion":"1.0.2-dev","fds":["seccompFd"],"pid":{pid},"metadata":"kmsgfs-v1","state":{{"ociVersion":"1.0.2-dev","id":"runc-like","status":"creating","pid":{pid},"bundle":"/tmp/b","annotations":{{"io.kmsgfs.key":"{key}","big":"{}"}}}}}}"#,
        "x".repeat(20_000)
    )
}

/// Start `busybox dmesg` under the filter; return it and its listener (not yet handed over).
fn filtered_dmesg() -> (std::process::Child, std::os::fd::OwnedFd) {
    let mut cmd = Command::new("busybox");
    cmd.arg("dmesg");
    spawn_filtered(cmd)
}

fn ready() -> bool {
    require_root() && require_tool("busybox")
}

#[test]
fn oci_crun_pretty_json_in_two_writes_on_a_connection_left_open() {
    if !ready() {
        return;
    }
    let tag = unique_tag("ring");
    let h = Harness::new(&[]);
    h.resolver.add("k", ring_with(&[format!("{tag} one")]));
    let (child, listener) = filtered_dmesg();
    let msg = crun_message(child.id(), "k");
    let (a, b) = msg.as_bytes().split_at(msg.len() / 2);
    let mut conn = UnixStream::connect(h.socket()).unwrap();
    send_fd(conn.as_fd(), a, listener.as_fd()).unwrap();
    drop(listener);
    std::thread::sleep(std::time::Duration::from_millis(50));
    conn.write_all(b).unwrap();
    // The connection stays open, as runc leaves it: the agent must not wait for EOF.
    let out = ok(&wait_output(child, TIMEOUT), "busybox dmesg");
    assert!(out.contains(&format!("{tag} one")), "{out:?}");
    drop(conn);
    let seen = h.resolver.seen.lock().unwrap().clone();
    assert_eq!(seen[0].id, "crun-like");
    assert_eq!(seen[0].metadata, "kmsgfs-v1");
}

#[test]
fn oci_runc_compact_json_with_large_annotations() {
    if !ready() {
        return;
    }
    let tag = unique_tag("ring");
    let h = Harness::new(&[]);
    h.resolver.add("k", ring_with(&[format!("{tag} one")]));
    let (child, listener) = filtered_dmesg();
    let msg = runc_message(child.id(), "k");
    let conn = UnixStream::connect(h.socket()).unwrap();
    send_fd(conn.as_fd(), msg.as_bytes(), listener.as_fd()).unwrap();
    drop(listener);
    let out = ok(&wait_output(child, TIMEOUT), "busybox dmesg");
    assert!(out.contains(&format!("{tag} one")), "{out:?}");
    let seen = h.resolver.seen.lock().unwrap().clone();
    assert_eq!(seen[0].annotations["big"].len(), 20_000);
    drop(conn);
}

#[test]
fn oci_empty_and_garbage_connections_do_not_disturb_the_agent() {
    if !ready() {
        return;
    }
    let tag = unique_tag("ring");
    let h = Harness::new(&[format!("{tag} one")]);
    // crun connects first and may close without sending anything.
    drop(UnixStream::connect(h.socket()).unwrap());
    let mut g = UnixStream::connect(h.socket()).unwrap();
    g.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    drop(g);
    h.wait_stats("the garbage to be rejected", |s| s.rejected == 1);
    let out = ok(&h.run(&["busybox", "dmesg"]), "busybox dmesg");
    assert!(out.contains(&format!("{tag} one")));
    assert_eq!(
        h.agent.stats().rejected,
        1,
        "the empty connection counted as an error"
    );
}

#[test]
fn oci_unknown_ring_drops_the_listener_and_the_container_gets_enosys() {
    if !ready() {
        return;
    }
    let h = Harness::new(&[]);
    let (child, listener) = filtered_dmesg();
    let conn = UnixStream::connect(h.socket()).unwrap();
    send_fd(
        conn.as_fd(),
        crun_message(child.id(), "no-such-ring").as_bytes(),
        listener.as_fd(),
    )
    .unwrap();
    drop(listener);
    let o = wait_output(child, TIMEOUT);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Function not implemented"),
        "{:?}",
        stderr(&o)
    );
    assert_eq!(h.agent.stats().rejected, 1);
}

#[test]
fn oci_message_without_seccomp_fd_is_rejected() {
    if !ready() {
        return;
    }
    let h = Harness::new(&[]);
    let (child, listener) = filtered_dmesg();
    let msg = crun_message(child.id(), "k").replace("seccompFd", "otherFd");
    let conn = UnixStream::connect(h.socket()).unwrap();
    send_fd(conn.as_fd(), msg.as_bytes(), listener.as_fd()).unwrap();
    drop(listener);
    let o = wait_output(child, TIMEOUT);
    assert!(!o.status.success());
    assert_eq!(h.agent.stats().rejected, 1);
    assert_eq!(h.agent.stats().listeners_accepted, 0);
}

#[test]
fn socket_is_private_and_single_owner() {
    if !require_root() {
        return;
    }
    let h = Harness::new(&[]);
    let mode = std::fs::metadata(h.socket()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let second = Agent::spawn_with(h.socket(), h.resolver.clone(), AgentOptions::default());
    assert!(
        matches!(second, Err(SeccompError::InUse(_))),
        "a second agent took over a live socket"
    );
    let path = h.socket();
    drop(h);
    assert!(!path.exists(), "the socket was left behind");
}

/// A sender that cannot name its host pid (inside a PID namespace) sends 0; the agent then
/// takes the sender's pid from `SO_PEERCRED`.
#[test]
fn oci_pid_zero_means_the_sender() {
    if !ready() {
        return;
    }
    let tag = unique_tag("ring");
    let h = Harness::new(&[format!("{tag} one")]);
    let (child, listener) = filtered_dmesg();
    kmsgfs::frontends::seccomp::send_listener(
        &h.socket(),
        0,
        listener.as_fd(),
        std::collections::BTreeMap::new(),
    )
    .unwrap();
    drop(listener);
    let out = ok(&wait_output(child, TIMEOUT), "busybox dmesg");
    assert!(out.contains(&format!("{tag} one")));
    let seen = h.resolver.seen.lock().unwrap().clone();
    assert_eq!(seen[0].init_pid, std::process::id());
    assert_eq!(seen[0].process_pid, std::process::id());
    assert!(seen[0].user_ns.is_some());
}
