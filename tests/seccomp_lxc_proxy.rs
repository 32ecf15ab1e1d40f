//! LXC's seccomp notify proxy protocol as the agent serves it (docs/spec/lxc-seccomp-proxy.md),
//! with this test as the LXC monitor: it receives the real notifications of a filtered
//! process, forwards each as LXC 5.0 does (header, notif, resp, cookie, three fds), and gives
//! the agent's answer to the kernel. Also what a broken or hostile monitor sends: each record
//! gets exactly one answer and never a late one. `tests/lxc_runtime.rs` runs the real LXC.
//! Root only.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::support::seccomp::*;
use kmsgfs::frontends::seccomp::lxc::{self, REPLY_LEN};
use kmsgfs::frontends::seccomp::notify::{self, Notification};
use kmsgfs::frontends::seccomp::{AgentOptions, LxcSocket};
use kmsgfs::sys::scm;

/// The test's LXC monitor: one connection to the agent's LXC socket.
struct Monitor {
    sock: OwnedFd,
}

impl Monitor {
    fn connect(path: &Path) -> Monitor {
        Monitor {
            sock: scm::seqpacket_connect(path).expect("connect to the LXC socket"),
        }
    }

    /// Send `record` with `fds`; the answer record (empty: LXC's default answer).
    fn exchange(&self, record: &[u8], fds: &[BorrowedFd<'_>]) -> Vec<u8> {
        if fds.is_empty() {
            scm::send_msg(self.sock.as_fd(), record).unwrap();
        } else {
            scm::send_fds(self.sock.as_fd(), record, fds).unwrap();
        }
        self.answer(Duration::from_secs(30))
    }

    fn answer(&self, timeout: Duration) -> Vec<u8> {
        let mut p = [libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let n = kmsgfs::sys::fd::poll(&mut p, timeout.as_millis() as i32).unwrap();
        assert_eq!(n, 1, "no answer from the agent within {timeout:?}");
        let mut buf = vec![0u8; 4096];
        let (n, fds) = scm::recv_fds(self.sock.as_fd(), &mut buf).unwrap();
        assert!(fds.is_empty(), "the answer carries fds");
        buf.truncate(n);
        buf
    }

    /// Forward one notification of `listener` as LXC does; the answer's resp.
    fn forward(&self, listener: BorrowedFd<'_>, n: &Notification, init: u32) -> (i64, i32) {
        let dir = File::open(format!("/proc/{}", n.tid)).unwrap();
        let mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{}/mem", n.tid))
            .unwrap();
        let rec = lxc::encode(std::process::id(), init, n, b"test-cookie");
        let a = self.exchange(&rec, &[dir.as_fd(), mem.as_fd(), listener]);
        assert_eq!(a.len(), REPLY_LEN, "answer length");
        assert_eq!(
            &a[..lxc::HEADER_LEN + lxc::NOTIF_LEN],
            &rec[..lxc::HEADER_LEN + lxc::NOTIF_LEN],
            "header and notif echoed"
        );
        let (id, val, error, flags) = lxc::decode_answer(&a).unwrap();
        assert_eq!(id, n.id);
        assert_eq!(flags, 0, "never SECCOMP_USER_NOTIF_FLAG_CONTINUE");
        (val, error)
    }

    /// Act as LXC's monitor for `child` until it exits: every answer goes to the kernel.
    /// Returns each call's (action, val, error).
    fn serve(&self, listener: &OwnedFd, child: &mut Child) -> Vec<(i32, i64, i32)> {
        let mut calls = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        while child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the filtered child did not finish"
            );
            let mut p = [libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            if kmsgfs::sys::fd::poll(&mut p, 50).unwrap() == 0 || p[0].revents & libc::POLLIN == 0 {
                continue;
            }
            let Some(n) = notify::recv(listener.as_fd()).unwrap() else {
                continue;
            };
            let (val, error) = self.forward(listener.as_fd(), &n, child.id());
            calls.push((n.args[0] as i32, val, error));
            let _ = notify::send(listener.as_fd(), n.id, val, -error);
        }
        calls
    }
}

fn harness(lines: &[String]) -> (Harness, TempDir, std::path::PathBuf) {
    let dir = TempDir::new("lxc-proxy");
    let path = dir.path().join("lxc.sock");
    let options = AgentOptions {
        lxc_socket: Some(LxcSocket::bind(&path).expect("bind the LXC socket")),
        ..Default::default()
    };
    let h = Harness::with(ring_with(lines), false, options);
    (h, dir, path)
}

#[test]
fn busybox_dmesg_through_a_forwarding_monitor_prints_the_ring() {
    if !(require_root() && require_tool("busybox")) {
        return;
    }
    let lines = vec![unique_tag("lxc-proxy-a"), unique_tag("lxc-proxy-b")];
    let (_h, _dir, path) = harness(&lines);
    let m = Monitor::connect(&path);
    let mut cmd = Command::new("busybox");
    cmd.arg("dmesg");
    let (mut child, listener) = spawn_filtered(cmd);
    let calls = m.serve(&listener, &mut child);
    let out = wait_output(child, TIMEOUT);
    let text = ok(&out, "busybox dmesg");
    for l in &lines {
        assert_eq!(text.matches(l.as_str()).count(), 1, "{l} once: {text}");
    }
    // busybox asks the size (10), then READ_ALL (3).
    assert!(
        calls.iter().any(|&(a, v, e)| a == 3 && v > 0 && e == 0),
        "{calls:?}"
    );
}

#[test]
fn a_malformed_record_gets_an_empty_answer_and_the_connection_goes_on() {
    if !(require_root() && require_tool("busybox")) {
        return;
    }
    let (h, _dir, path) = harness(&[unique_tag("lxc-proxy-c")]);
    let m = Monitor::connect(&path);
    let null = File::open("/dev/null").unwrap();
    let three = [null.as_fd(), null.as_fd(), null.as_fd()];
    let n = Notification {
        id: 7,
        tid: std::process::id(),
        arch: 0xc000_003e,
        nr: 103,
        args: [3, 0, 100, 0, 0, 0],
    };
    let good = lxc::encode(1, std::process::id(), &n, b"");
    // Too short, a wrong reserved field, a wrong size, one fd instead of three, no fds.
    let mut reserved = good.clone();
    reserved[0] = 1;
    let mut sizes = good.clone();
    sizes[16] = 99;
    let cases: Vec<(&str, Vec<u8>, &[BorrowedFd<'_>])> = vec![
        ("short", good[..64].to_vec(), &three[..]),
        ("reserved", reserved, &three[..]),
        ("sizes", sizes, &three[..]),
        ("one fd", good.clone(), &three[..1]),
        ("no fds", good.clone(), &[]),
    ];
    for (what, rec, fds) in cases {
        let a = m.exchange(&rec, fds);
        assert!(
            a.is_empty(),
            "{what}: LXC's default answer expected, got {a:?}"
        );
    }
    // A well-formed record whose notify fd is no listener (so ID_VALID fails): still exactly
    // one answer, at once, so that LXC never waits its 30 s.
    let t0 = Instant::now();
    let a = m.exchange(&good, &three);
    assert_eq!(a.len(), REPLY_LEN, "{a:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(h.agent.stats().rejected >= 5, "{:?}", h.agent.stats());
    // The same connection still serves a real call.
    let mut cmd = Command::new("busybox");
    cmd.arg("dmesg");
    let (mut child, listener) = spawn_filtered(cmd);
    m.serve(&listener, &mut child);
    let out = wait_output(child, TIMEOUT);
    assert!(ok(&out, "busybox dmesg").contains("lxc-proxy-c"));
}

/// `syslog(SYSLOG_ACTION_READ)` once through python3's ctypes: prints `ret errno text`.
const KLOG_READ: &str = "import ctypes, os\n\
libc = ctypes.CDLL(None, use_errno=True)\n\
buf = ctypes.create_string_buffer(4096)\n\
r = libc.klogctl(2, buf, 4096)\n\
print(r, ctypes.get_errno(), buf.raw[:max(r, 0)].decode())\n";

#[test]
fn a_blocking_read_is_answered_eintr_soon_or_with_the_record_that_arrives() {
    if !(require_root() && require_tool("python3")) {
        return;
    }
    let (h, _dir, path) = harness(&[]);
    let m = Monitor::connect(&path);
    // Nothing to read: EINTR after lxc::READ_WAIT, so that the monitor is free again.
    let mut cmd = Command::new("python3");
    cmd.args(["-c", KLOG_READ]);
    let (mut child, listener) = spawn_filtered(cmd);
    let t0 = Instant::now();
    let calls = m.serve(&listener, &mut child);
    let waited = t0.elapsed();
    let out = wait_output(child, TIMEOUT);
    assert_eq!(
        ok(&out, "klogctl READ").trim(),
        format!("-1 {}", libc::EINTR),
        "{calls:?}"
    );
    assert!(waited >= lxc::READ_WAIT, "answered after {waited:?}");
    // A record appended while the READ waits is its answer.
    let mut cmd = Command::new("python3");
    cmd.args(["-c", KLOG_READ]);
    let (mut child, listener) = spawn_filtered(cmd);
    let tag = unique_tag("lxc-proxy-late");
    let ring = h.ring.clone();
    let tag2 = tag.clone();
    let pusher = std::thread::spawn(move || {
        std::thread::sleep(lxc::READ_WAIT / 4);
        push(&ring, 1_000_000, &tag2);
    });
    // The first READ may still be answered EINTR on a slow machine; the caller (python) does
    // not restart, so retry the whole call until the record came back.
    m.serve(&listener, &mut child);
    pusher.join().unwrap();
    let out = wait_output(child, TIMEOUT);
    let text = ok(&out, "klogctl READ");
    assert!(
        text.contains(&tag) || text.trim() == format!("-1 {}", libc::EINTR),
        "{text}"
    );
    if !text.contains(&tag) {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", KLOG_READ]);
        let (mut child, listener) = spawn_filtered(cmd);
        m.serve(&listener, &mut child);
        let out = wait_output(child, TIMEOUT);
        assert!(ok(&out, "klogctl READ").contains(&tag));
    }
}
