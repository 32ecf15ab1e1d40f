//! The agent's failure modes: agent death (ENOSYS, never the host log), callers that leave
//! after the agent received their call, PID reuse between RECV and the memory write
//! (seccomp-agent.md §9, §10, §12). Root only.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::support::seccomp::*;
use kmsgfs::frontends::seccomp::oci::{recv_one_fd, send_fd};
use kmsgfs::frontends::seccomp::{install_filter, send_listener, AgentHooks, AgentOptions};
use kmsgfs::syslog::action;

fn ready(tools: &[&str]) -> bool {
    require_root() && tools.iter().all(|t| require_tool(t))
}

/// Run `argv` under the filter and close the listener at once: nobody answers.
fn run_unanswered(argv: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    let (child, listener) = spawn_filtered(cmd);
    drop(listener);
    wait_output(child, TIMEOUT)
}

#[test]
fn death_no_listener_gives_enosys_and_never_the_host_log() {
    if !ready(&["dmesg", "busybox"]) {
        return;
    }
    let host = HostTag::write("host-death");
    let o = run_unanswered(&["dmesg", "-S"]);
    assert!(!o.status.success(), "dmesg -S succeeded without an agent");
    assert!(
        stderr(&o).contains("Function not implemented"),
        "{:?}",
        stderr(&o)
    );
    assert!(!stdout(&o).contains(&host.tag), "HOST record leaked");
    assert_eq!(stdout(&o), "");

    let o = run_unanswered(&["busybox", "dmesg"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("klogctl: Function not implemented"),
        "{:?}",
        stderr(&o)
    );
    assert!(!stdout(&o).contains(&host.tag), "HOST record leaked");

    // A clear without an agent does not reach the host either.
    let o = run_unanswered(&["busybox", "dmesg", "-c"]);
    assert!(!o.status.success());
    let o = run_unanswered(&["dmesg", "-C"]);
    assert!(!o.status.success());
    host.assert_host_not_cleared();
}

#[test]
fn death_agent_stopping_mid_container_turns_later_calls_into_enosys() {
    if !ready(&["busybox"]) {
        return;
    }
    let host = HostTag::write("host-death-mid");
    let tag = unique_tag("ring");
    let h = Harness::new(&[format!("{tag} one")]);
    let mut cmd = Command::new("busybox");
    cmd.args([
        "sh",
        "-c",
        "busybox dmesg; echo first=$?; read x; busybox dmesg; echo second=$?",
    ]);
    let (mut child, listener) = spawn_filtered_io(cmd, true);
    send_listener(&h.socket(), child.id(), listener.as_fd(), BTreeMap::new()).unwrap();
    drop(listener);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("first=") {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child ended: {seen:?}"
        );
        seen.push_str(&line);
    }
    assert!(seen.contains(&format!("{tag} one")), "{seen:?}");
    assert!(seen.contains("first=0"));

    let Harness { agent, .. } = h;
    drop(agent);
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let o = wait_output(child, TIMEOUT);
    assert!(rest.contains("second=1"), "{rest:?}");
    assert!(
        stderr(&o).contains("klogctl: Function not implemented"),
        "{:?}",
        stderr(&o)
    );
    assert!(!rest.contains(&host.tag), "HOST record leaked: {rest:?}");
    host.assert_host_not_cleared();
}

#[test]
fn death_agent_stopping_fails_a_parked_read_with_enosys() {
    if !ready(&["busybox"]) {
        return;
    }
    let h = Harness::new(&[]);
    let child = h.spawn(&["busybox", "klogd", "-n"], BTreeMap::new());
    h.wait_stats("klogd's READ to be parked", |s| s.parked == 1);
    let Harness { agent, ring, .. } = h;
    drop(agent);
    // klogd's blocked READ returns ENOSYS, and klogd gives up.
    let o = wait_output(child, TIMEOUT);
    assert!(!o.status.success(), "klogd kept running: {o:?}");
    assert_eq!(ring.syslog_state().seq, 0, "nothing was consumed");
}

/// Where the agent is held.
#[derive(Clone, Copy, PartialEq, Eq)]
enum At {
    /// Right after RECV.
    Received,
    /// After the credentials were read and confirmed, just before `/proc/<tid>/mem` is opened.
    BeforeWrite,
    /// After the effect was applied, just before SEND.
    BeforeReply,
}

/// Blocks the agent at one point for one action, until released.
struct Gate {
    at: At,
    action: i32,
    reached: Mutex<mpsc::Sender<u32>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl Gate {
    fn hold(&self, at: At, tid: u32, action: i32) {
        if at == self.at && action == self.action {
            let _ = self.reached.lock().unwrap().send(tid);
            // Bounded, so that a failing test cannot leave the agent (and its join) hanging.
            let _ = self.release.lock().unwrap().recv_timeout(TIMEOUT);
        }
    }
}

impl AgentHooks for Gate {
    fn received(&self, tid: u32, action: i32) {
        self.hold(At::Received, tid, action);
    }

    fn before_write(&self, tid: u32, action: i32) {
        self.hold(At::BeforeWrite, tid, action);
    }

    fn before_reply(&self, tid: u32, action: i32) {
        self.hold(At::BeforeReply, tid, action);
    }
}

fn gated(action: i32) -> (AgentOptions, mpsc::Receiver<u32>, mpsc::Sender<()>) {
    gated_at(At::Received, action)
}

fn gated_at(at: At, action: i32) -> (AgentOptions, mpsc::Receiver<u32>, mpsc::Sender<()>) {
    let (tx_recv, rx_recv) = mpsc::channel();
    let (tx_rel, rx_rel) = mpsc::channel();
    let gate = Gate {
        at,
        action,
        reached: Mutex::new(tx_recv),
        release: Mutex::new(rx_rel),
    };
    let opts = AgentOptions {
        hooks: Some(Arc::new(gate)),
        ..AgentOptions::default()
    };
    (opts, rx_recv, tx_rel)
}

#[test]
fn b5_4_read_clear_of_a_caller_killed_after_recv_clears_nothing() {
    if !ready(&["busybox"]) {
        return;
    }
    let tag = unique_tag("ring");
    let (opts, received, release) = gated(action::READ_CLEAR);
    let h = Harness::with(ring_with(&[format!("{tag} keep me")]), true, opts);
    let child = h.spawn(&["busybox", "dmesg", "-c"], BTreeMap::new());
    let tid = received.recv_timeout(TIMEOUT).expect("READ_CLEAR received");
    assert_eq!(tid, child.id());
    // SAFETY: kill has no memory preconditions; the child is not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let o = wait_output(child, TIMEOUT);
    assert!(!o.status.success());
    release.send(()).unwrap();
    h.wait_stats("the dead caller to be noticed", |s| s.stale >= 1);
    assert_eq!(
        h.ring.clear_seq(),
        0,
        "READ_CLEAR of a dead caller cleared the ring"
    );
    let out = ok(&h.run(&["busybox", "dmesg"]), "busybox dmesg");
    assert!(out.contains(&format!("{tag} keep me")));
}

/// Kill the caller of `argv` when the agent reaches `at` for `action`; return the ring.
fn kill_caller_at(at: At, action: i32, argv: &[&str], lines: &[String]) -> Harness {
    let (opts, reached, release) = gated_at(at, action);
    let h = Harness::with(ring_with(lines), true, opts);
    let child = h.spawn(argv, BTreeMap::new());
    let tid = reached
        .recv_timeout(TIMEOUT)
        .expect("the agent reached the gate");
    assert_eq!(tid, child.id());
    let answered = h.agent.stats().answered;
    // SAFETY: kill has no memory preconditions; the child is not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let o = wait_output(child, TIMEOUT);
    assert!(!o.status.success());
    release.send(()).unwrap();
    h.wait_stats("the dead caller to be noticed", |s| s.stale >= 1);
    assert_eq!(
        h.agent.stats().answered,
        answered,
        "a reply reached a dead caller"
    );
    h
}

#[test]
fn b2_clear_whose_reply_cannot_be_delivered_is_undone() {
    if !ready(&["dmesg"]) {
        return;
    }
    let tag = unique_tag("ring");
    let h = kill_caller_at(
        At::BeforeReply,
        action::CLEAR,
        &["dmesg", "-C"],
        &[format!("{tag} keep me")],
    );
    assert_eq!(
        h.ring.clear_seq(),
        0,
        "the undelivered CLEAR stayed applied"
    );
}

#[test]
fn b5_4_read_clear_whose_reply_cannot_be_delivered_is_undone() {
    if !ready(&["busybox"]) {
        return;
    }
    let tag = unique_tag("ring");
    let h = kill_caller_at(
        At::BeforeReply,
        action::READ_CLEAR,
        &["busybox", "dmesg", "-c"],
        &[format!("{tag} keep me")],
    );
    assert_eq!(
        h.ring.clear_seq(),
        0,
        "the undelivered READ_CLEAR stayed applied"
    );
    let out = ok(&h.run(&["busybox", "dmesg"]), "busybox dmesg");
    assert!(out.contains(&format!("{tag} keep me")));
}

#[test]
fn b4_read_whose_reply_cannot_be_delivered_consumes_nothing() {
    if !ready(&["busybox"]) {
        return;
    }
    let tag = unique_tag("ring");
    let h = kill_caller_at(
        At::BeforeReply,
        action::READ,
        &["busybox", "klogd", "-n"],
        &[format!("{tag} keep me")],
    );
    assert_eq!(
        h.ring.syslog_state().seq,
        0,
        "the undelivered READ consumed"
    );
    assert_eq!(h.ring.syslog_state().partial, 0);
}

const PID_REUSE_ENV: &str = "KMSGFS_PID_REUSE_INNER";
const PID_REUSE_MARK: &str = "PID-REUSE-CONSTRUCTED";

/// Runs [`pid_reuse_inner`] as PID 1 of a private PID namespace (`unshare --pid --fork
/// --mount-proc`), where `ns_last_pid` can hand a dead caller's pid to a new process.
fn run_pid_reuse(at: &str) {
    let exe = std::env::current_exe().unwrap();
    let o = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(exe)
        .args([
            "--exact",
            "seccomp_safety::pid_reuse_inner",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PID_REUSE_ENV, at)
        .output()
        .expect("run unshare");
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(o.status.success(), "inner test failed:\n{out}\n{err}");
    assert!(
        out.contains(PID_REUSE_MARK) || err.contains(PID_REUSE_MARK),
        "the inner test did not construct the reuse:\n{out}\n{err}"
    );
}

/// The caller dies and its pid is reused right after RECV: caught by the `ID_VALID` check that
/// confirms the credentials.
#[test]
fn pid_reuse_after_recv_never_writes_into_the_new_process() {
    if ready(&["unshare"]) {
        run_pid_reuse("received");
    }
}

/// The caller dies and its pid is reused after the credentials were confirmed, just before the
/// memory write: caught because `/proc/<tid>/mem` is opened before `ID_VALID` is checked.
#[test]
fn pid_reuse_before_write_never_writes_into_the_new_process() {
    if ready(&["unshare"]) {
        run_pid_reuse("before_write");
    }
}

/// The PID-reuse scenario of seccomp-agent.md §10; only does something when started by
/// [`pid_reuse_after_recv_never_writes_into_the_new_process`].
#[test]
fn pid_reuse_inner() {
    let at = match std::env::var(PID_REUSE_ENV).as_deref() {
        Ok("received") => At::Received,
        Ok("before_write") => At::BeforeWrite,
        _ => return, // A helper: the outer tests run it inside a PID namespace.
    };
    assert_eq!(std::process::id(), 1, "not PID 1 of a fresh PID namespace");
    let tag = unique_tag("ring");
    let (opts, received, release) = gated_at(at, action::READ_ALL);
    let h = Harness::with(ring_with(&[format!("{tag} secret")]), true, opts);

    // The buffer the victim passes to syslog(READ_ALL); every forked child has it at the
    // same address, filled with 0xAA.
    const LEN: usize = 4096;
    let buf = vec![0xAAu8; LEN];
    let addr = buf.as_ptr() as u64;

    // Victim: filter, hand over the listener, syslog(READ_ALL, buf, LEN).
    let (parent, child_end) = UnixStream::pair().unwrap();
    let sock = child_end.as_raw_fd();
    // SAFETY: the child makes only async-signal-safe calls and then blocks in syslog.
    let victim = unsafe { libc::fork() };
    assert!(victim >= 0);
    if victim == 0 {
        // SAFETY: in the forked child only seccomp, sendmsg, syslog and _exit run.
        unsafe {
            let Ok(l) = install_filter() else {
                libc::_exit(2)
            };
            if send_fd(BorrowedFd::borrow_raw(sock), b"L", l.as_fd()).is_err() {
                libc::_exit(3);
            }
            drop(l);
            libc::syscall(libc::SYS_syslog, action::READ_ALL, addr, LEN as i64);
            libc::_exit(0);
        }
    }
    drop(child_end);
    let listener = recv_one_fd(parent.as_fd()).unwrap();
    send_listener(
        &h.socket(),
        victim as u32,
        listener.as_fd(),
        BTreeMap::new(),
    )
    .unwrap();
    drop(listener);

    // The agent has the call and is held at the gate.
    let tid = received
        .recv_timeout(TIMEOUT)
        .expect("the agent reached the gate");
    assert_eq!(tid, victim as u32);
    // SAFETY: kill and waitpid on our own child.
    unsafe {
        libc::kill(victim, libc::SIGKILL);
        let mut st = 0;
        assert_eq!(libc::waitpid(victim, &mut st, 0), victim);
    }

    // Hand the victim's pid to an unrelated process.
    std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", victim - 1))
        .expect("write ns_last_pid");
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: new fds owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let rd_raw = rd.as_raw_fd();
    // SAFETY: the child only blocks in read and _exits.
    let reuser = unsafe { libc::fork() };
    assert!(reuser >= 0);
    if reuser == 0 {
        let mut b = [0u8; 1];
        // SAFETY: read into a valid byte, then _exit.
        unsafe {
            libc::read(rd_raw, b.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    drop(rd);
    assert_eq!(reuser, victim, "could not reuse the pid (ns_last_pid)");

    // Let the agent go on with the stale notification.
    release.send(()).unwrap();
    h.wait_stats("the stale call to be dropped", |s| s.stale >= 1);
    assert_eq!(h.agent.stats().answered, 0);

    let mem_path = format!("/proc/{reuser}/mem");
    let read_reuser = || {
        let f = std::fs::File::open(&mem_path).expect("open the reuser's mem");
        let mut got = vec![0u8; LEN];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut got, addr).expect("read its buffer");
        got
    };
    let got = read_reuser();
    assert!(
        got.iter().all(|&b| b == 0xAA),
        "the agent wrote into the process that reused pid {reuser}: {:?}",
        String::from_utf8_lossy(&got[..64])
    );

    // Control: a naive writer by pid at this point does land in the unrelated process, so
    // the scenario really was constructed.
    let data = b"NAIVE";
    let local = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: valid iovecs for the duration of the call.
    let n = unsafe { libc::process_vm_writev(reuser, &local, 1, &remote, 1, 0) };
    assert_eq!(n, data.len() as isize);
    assert_eq!(&read_reuser()[..5], data);

    // SAFETY: write one byte to release the reuser, then reap it.
    unsafe {
        libc::write(wr.as_raw_fd(), b"x".as_ptr().cast(), 1);
        let mut st = 0;
        libc::waitpid(reuser, &mut st, 0);
    }
    println!("{PID_REUSE_MARK} pid={reuser}");
}

/// The caller's buffer is checked like `copy_to_user` would: a read-only page or an unmapped
/// address gives EFAULT (even where `/proc/<pid>/mem` could force the write), and an invalid
/// pointer is not touched when nothing has to be copied (B5.6).
#[test]
fn b5_6_efault_for_unwritable_buffers_only_when_bytes_are_copied() {
    if !require_root() {
        return;
    }
    let tag = unique_tag("ring");
    let h = Harness::new(&[format!("{tag} one")]);
    let r = in_filtered_fork(&h, || {
        // SAFETY: an anonymous private read-only mapping; only its address is used.
        let ro = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        } as u64;
        let mut ok_buf = [0u8; 4096];
        [
            raw_syslog(action::READ_ALL, ro, 4096),
            raw_syslog(action::READ_ALL, 0x1000, 4096),
            raw_syslog(action::READ_ALL, 0x1, 10),
            raw_syslog(action::READ_ALL, ok_buf.as_mut_ptr() as u64, 4096),
        ]
    });
    assert_eq!(r[0], -i64::from(libc::EFAULT), "read-only page");
    assert_eq!(r[1], -i64::from(libc::EFAULT), "unmapped address");
    assert_eq!(r[2], 0, "nothing fits in 10 bytes: no copy, no EFAULT");
    let expected = format!("<6>[    1.000000] {tag} one\n").len() as i64;
    assert_eq!(r[3], expected);
    assert_eq!(h.agent.stats().faults, 2);
}

/// The fd-holder design of docs/deploy.md §8: while another process (here: the test) keeps a
/// copy of the listener, a stopped agent does not cause ENOSYS; the container's call waits, and
/// a new agent that adopts the copy answers it.
#[test]
fn death_restart_with_a_held_listener_loses_no_call() {
    if !ready(&["busybox"]) {
        return;
    }
    let tag = unique_tag("ring");
    let ring = ring_with(&[format!("{tag} one")]);
    let h1 = Harness::with(ring.clone(), true, AgentOptions::default());
    let mut cmd = Command::new("busybox");
    cmd.args([
        "sh",
        "-c",
        "busybox dmesg; echo first=$?; read x; busybox dmesg; echo second=$?",
    ]);
    let (mut child, listener) = spawn_filtered_io(cmd, true);
    let held = listener
        .try_clone()
        .expect("dup the listener (the holder's copy)");
    let state = kmsgfs::frontends::seccomp::ContainerProcessState::for_process(
        child.id(),
        "held",
        BTreeMap::new(),
    );
    send_listener(&h1.socket(), child.id(), listener.as_fd(), BTreeMap::new()).unwrap();
    drop(listener);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("first=") {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child ended: {seen:?}"
        );
        seen.push_str(&line);
    }
    assert!(seen.contains("first=0"), "{seen:?}");

    // The agent goes away; the holder's copy keeps the listener alive.
    drop(h1);
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    // The second dmesg now waits for an agent (it must not have failed).
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the child did not wait for the agent"
    );

    let h2 = Harness::with(ring, true, AgentOptions::default());
    h2.agent.adopt(held, state);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let o = wait_output(child, TIMEOUT);
    assert!(
        rest.contains(&format!("{tag} one")),
        "{rest:?} {:?}",
        stderr(&o)
    );
    assert!(rest.contains("second=0"), "{rest:?}");
}
