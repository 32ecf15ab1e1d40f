//! Rings survive a crash of the daemon (issue "restart and upgrade", state that survives):
//! with a real `kmsgfs holder`, `kill -9` of a real `kmsgfs serve`, and a new one started on
//! the same holder, every ring comes back with its records and sequence numbers, the host
//! source resumes after the last host record the dead daemon ingested (no duplicates), and
//! records produced while no daemon ran are read afterwards. Root only (FUSE mounts,
//! network namespaces).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::{
    close_raw, drain, open_raw, require_root, require_tool, text_of, Daemon, Holder, Options,
};

/// A process in a new network namespace, killed on drop.
struct NetnsMember(Child);

impl Drop for NetnsMember {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn records(path: &Path) -> Vec<String> {
    let fd = open_raw(path, libc::O_RDONLY | libc::O_NONBLOCK)
        .unwrap_or_else(|e| panic!("open {}: errno {e}", path.display()));
    let r = drain(fd);
    close_raw(fd);
    r
}

/// The `/dev/kmsg` sequence number of a record line (`prio,seq,ts,flags;text`).
fn seq_of(rec: &str) -> u64 {
    rec.split(',')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("seq field")
}

#[test]
fn rings_come_back_after_kill_9_with_their_records_and_sequence_numbers() {
    if !(require_root() && require_tool("unshare") && require_tool("sh")) {
        return;
    }
    let scratch = tempdir();
    let holder = Holder::start(&scratch);
    let sock = holder.socket.to_str().unwrap().to_owned();
    let args = [
        "--holder-socket",
        sock.as_str(),
        "--devkmsg",
        "on",
        "--reclaim-interval",
        "3600",
    ];
    let mut d = Daemon::start_with(Options::args(&args));
    for i in 0..10 {
        d.feed(6, &format!("before {i}"));
    }
    d.wait_host_records(10);

    // A container writes into its own ring and stays alive.
    let tag = format!("kmsgfs-restart-{}", std::process::id());
    let k = d.kmsg().display().to_string();
    let member = NetnsMember(
        Command::new("unshare")
            .args(["-n", "sh", "-c"])
            .arg(format!("echo '<6>{tag} ns-before' > {k} && exec sleep 600"))
            .spawn()
            .expect("spawn unshare -n"),
    );
    let pid = member.0.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let inode = loop {
        let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
        let me = std::fs::read_link("/proc/self/ns/net").unwrap();
        if link != me
            && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e.ends_with("sleep"))
        {
            let s = link.to_string_lossy().into_owned();
            break s
                .trim_start_matches("net:[")
                .trim_end_matches(']')
                .to_owned();
        }
        assert!(Instant::now() < deadline, "the member did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    let ns_ring = d.ns_dir().join(&inode).join("kmsg");
    assert_eq!(
        records(&ns_ring)
            .iter()
            .map(|r| text_of(r).to_owned())
            .collect::<Vec<_>>(),
        [format!("{tag} ns-before")]
    );

    d.kill9();
    // Produced while no daemon runs: waits in the source (a FIFO here; the kernel's ring for
    // /dev/kmsg) and is read by the next daemon.
    d.feed(6, "while down");
    d.restart(Options::args(&args));
    assert!(
        d.log_text().contains("adopted 2 ring(s)"),
        "the new daemon did not adopt the host and namespace rings:\n{}",
        d.log_text()
    );
    // A host record the dead daemon had already ingested comes again (a source re-read from
    // its start after a restart): skipped, not duplicated.
    d.feed_raw("6,3,1030,-;before 3\n");
    d.feed(6, "after");
    let deadline = Instant::now() + Duration::from_secs(20);
    let host = loop {
        let host = records(&d.kmsg());
        if host.iter().any(|r| text_of(r) == "after") {
            break host;
        }
        assert!(Instant::now() < deadline, "no `after` record: {host:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let texts: Vec<&str> = host.iter().map(|r| text_of(r)).collect();
    let mut want: Vec<String> = (0..10).map(|i| format!("before {i}")).collect();
    want.push("while down".into());
    want.push("after".into());
    assert_eq!(texts, want, "every host record exactly once, in order");
    let seqs: Vec<u64> = host.iter().map(|r| seq_of(r)).collect();
    assert_eq!(
        seqs,
        (0..12).collect::<Vec<u64>>(),
        "sequence numbers continue"
    );
    let st = d.stats();
    assert_eq!(st["restart"]["adopted_rings"], 2, "{st}");
    assert_eq!(st["restart"]["restarts"], 1, "{st}");
    let metrics = std::fs::read_to_string(d.dir().join("metrics")).unwrap();
    assert!(metrics.contains("kmsgfs_restarts_total 1"), "{metrics}");
    assert!(
        metrics.contains("kmsgfs_restart_adopted_rings 2"),
        "{metrics}"
    );
    assert_eq!(st["host"]["records_resumed"], 1, "{st}");

    // The namespace ring: its record, and the next write gets the next sequence number.
    let o = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["--", "sh", "-c"])
        .arg(format!("echo '<6>{tag} ns-after' > {k}"))
        .status()
        .expect("nsenter");
    assert!(o.success());
    let ns = records(&ns_ring);
    assert_eq!(
        ns.iter().map(|r| text_of(r).to_owned()).collect::<Vec<_>>(),
        [format!("{tag} ns-before"), format!("{tag} ns-after")]
    );
    assert_eq!(ns.iter().map(|r| seq_of(r)).collect::<Vec<_>>(), [0, 1]);
    drop(member);
    drop(d);
    drop(holder);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// A container's `syslog(2)` keeps working across `kill -9` of the daemon: the holder kept
/// its seccomp listener and its ring, and the new daemon's agent serves both again. (Without
/// the holder the listener dies with the agent and busybox `dmesg` fails with ENOSYS.)
#[test]
fn syslog_of_a_running_container_survives_kill_9() {
    if !(require_root() && require_tool("busybox")) {
        return;
    }
    use std::io::{BufRead, BufReader, Write};
    let scratch = tempdir();
    let holder = Holder::start(&scratch);
    let sock = holder.socket.to_str().unwrap().to_owned();
    let args = ["--holder-socket", sock.as_str(), "--devkmsg", "on"];
    let mut d = Daemon::start_with(Options::args(&args));
    let tag = format!("kmsgfs-restart-syslog-{}", std::process::id());
    let mut run = Command::new(env!("CARGO_BIN_EXE_kmsgfs"))
        .arg("run")
        .arg("--mount")
        .arg(d.dir())
        .args(["--", "sh", "-c"])
        .arg(format!(
            "echo '<6>{tag} one' > /dev/kmsg && echo ready && read x && \
             busybox dmesg; echo rc=$?"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn kmsgfs run");
    let mut stdin = run.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = run.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut wait_for = |prefix: &str| loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => {
                let done = l.starts_with(prefix);
                lines.push(l);
                if done {
                    return;
                }
            }
            Err(_) => panic!("no `{prefix}` line; container printed {lines:?}"),
        }
    };
    wait_for("ready");
    d.kill9();
    d.restart(Options::args(&args));
    assert!(
        d.log_text()
            .contains("serving 1 seccomp listener(s) of the previous daemon"),
        "{}",
        d.log_text()
    );
    stdin.write_all(b"\n").unwrap();
    wait_for("rc=");
    let _ = run.kill();
    let _ = run.wait();
    assert!(
        lines.iter().any(|l| l == "rc=0"),
        "busybox dmesg failed after the restart: {lines:?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.ends_with(&format!("{tag} one")))
            .count(),
        1,
        "the container's record, from its adopted ring, once: {lines:?}"
    );
    drop(d);
    drop(holder);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The drain path of a kernel without FUSE_NOTIFY_RESEND (before 6.9; `--no-resend` makes the
/// daemons behave so here): at an upgrade the old daemon stops reading requests but stays to
/// answer the READs it holds, the new one serves everything new, and an INTERRUPT for a READ
/// the old one holds (its caller was killed) is answered by the new one, so the caller does
/// not stay in D state until a record arrives.
#[test]
fn without_resend_the_old_daemon_drains_its_reads_while_the_new_one_serves() {
    if !(require_root() && require_tool("dd")) {
        return;
    }
    let scratch = tempdir();
    let holder = Holder::start(&scratch);
    let sock = holder.socket.to_str().unwrap().to_owned();
    let args = [
        "--holder-socket",
        sock.as_str(),
        "--no-resend",
        "--no-seccomp",
    ];
    let mut d = Daemon::start_with(Options::args(&args));
    let dd = |d: &Daemon| {
        Command::new("dd")
            .arg(format!("if={}", d.kmsg().display()))
            .args(["bs=8192", "count=1", "status=none"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn dd")
    };
    let waiting = dd(&d);
    let mut killed = dd(&d);
    support::wait_blocked_in_fuse(waiting.id());
    support::wait_blocked_in_fuse(killed.id());

    let mut old = d.upgrade_detached(
        Path::new(env!("CARGO_BIN_EXE_kmsgfs")),
        Options::args(&args),
    );
    let log = d.log_text();
    assert!(log.contains("without FUSE_HAS_RESEND"), "{log}");
    assert!(
        old.try_wait().unwrap().is_none(),
        "the old daemon left without answering the READs it holds"
    );

    // Killed while the old daemon holds its READ: the new one answers the INTERRUPT.
    let t = Instant::now();
    killed.kill().unwrap();
    let deadline = t + Duration::from_secs(5);
    while killed.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "a reader killed during the drain stays blocked (state {:?})",
            support::proc_stat_field(killed.id(), 3)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());

    // A record, ingested by the new daemon: the old one answers its READ with it and exits.
    d.feed(6, "after the upgrade");
    let out = waiting.wait_with_output().unwrap();
    assert_eq!(
        text_of(String::from_utf8_lossy(&out.stdout).trim_end()),
        "after the upgrade"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        if let Some(st) = old.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the old daemon did not finish its drain"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(st.success(), "{st}");
    // The log is collected by a reader thread: the old daemon's last line may still be in the
    // pipe when its exit is seen, so wait for it rather than look once.
    assert!(
        d.wait_log(
            "drain: every request this daemon held is answered",
            Duration::from_secs(5)
        ),
        "{}",
        d.log_text()
    );
    // The new daemon serves new opens and reads.
    let fresh = dd(&d);
    d.feed(6, "served by the new daemon");
    let out = fresh.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("after the upgrade"),
        "{out:?}"
    );
    drop(d);
    drop(holder);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// Only root of the holder's own pid and user namespaces may use it (docs/security.md T12): a
/// root of another user namespace, and a process of another pid namespace, that can open the
/// socket get no entry, while a root peer of the holder's namespaces does.
#[test]
fn the_holder_answers_no_peer_outside_its_namespaces() {
    if !(require_root() && require_tool("unshare") && require_tool("python3")) {
        return;
    }
    let scratch = tempdir();
    let holder = Holder::start(&scratch);
    let client = format!(
        "import socket,sys\n\
         s=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET)\n\
         s.connect({:?})\n\
         s.settimeout(5)\n\
         try:\n  s.send(b'\"take\"'); r=s.recv(65536)\n\
         except OSError as e: r=b''\n\
         print('ANSWER' if r else 'REFUSED')\n",
        holder.socket.display().to_string()
    );
    let run = |prefix: &[&str]| {
        let o = Command::new(prefix[0])
            .args(&prefix[1..])
            .args(["python3", "-c", &client])
            .output()
            .expect("run the client");
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    assert_eq!(run(&["env"]), "ANSWER", "root of the holder's namespaces");
    assert_eq!(
        run(&["unshare", "-U", "-r", "--"]),
        "REFUSED",
        "root of another user namespace"
    );
    assert_eq!(
        run(&["unshare", "-p", "-f", "--"]),
        "REFUSED",
        "another pid namespace"
    );
    drop(holder);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// Without a reachable holder, `--holder-socket` fails at start with a message naming it.
#[test]
fn an_unreachable_holder_is_a_clear_start_up_error() {
    if !require_root() {
        return;
    }
    let scratch = tempdir();
    let sock = scratch.join("nobody.sock");
    let mnt = scratch.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_kmsgfs"))
        .args(["serve", "--source", "/dev/null", "--mount"])
        .arg(&mnt)
        .arg("--holder-socket")
        .arg(&sock)
        .output()
        .expect("run kmsgfs serve");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("--holder-socket") && err.contains(sock.to_str().unwrap()),
        "{err}"
    );
    assert!(!support::is_kmsgfs_mounted(&mnt), "nothing may be mounted");
    let _ = std::fs::remove_dir_all(&scratch);
}

fn tempdir() -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "kmsgfs-restart-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&p).unwrap();
    p
}
