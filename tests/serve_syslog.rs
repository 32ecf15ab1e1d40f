//! `kmsgfs serve` with its syslog(2) agent and `proc-kmsg`, driven by real, unchanged clients
//! inside `kmsgfs run` (kmsg-semantics B, C, D1, D2; docs/deploy.md).
//!
//! Each test starts its own daemon (FIFO host source, so the host ring is the FIFO's and the
//! real kernel log is never read through kmsgfs), runs a shell script in fresh namespaces with
//! `kmsgfs run` (which installs the syslog filter and hands the listener to the daemon's
//! socket, and binds `DIR/proc-kmsg` over `/proc/kmsg`), and checks the script's output
//! section by section (`@@name` lines). Records carry a unique tag. The real kernel log is only
//! written to (one tagged record in the leak test) and inspected with a SEEK_DATA reader, never
//! cleared.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::Daemon;

/// Generous bound for anything that should take milliseconds.
const TIMEOUT: Duration = Duration::from_secs(60);

fn ready(tools: &[&str]) -> bool {
    support::require_root() && tools.iter().all(|t| support::require_tool(t))
}

fn daemon() -> Daemon {
    Daemon::start_args(&["--devkmsg", "on"])
}

fn run_cmd(d: &Daemon, script: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kmsgfs"));
    cmd.arg("run")
        .arg("--mount")
        .arg(d.dir())
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A `kmsgfs run` child, killed and reaped on drop.
struct Running(Option<Child>);

impl Running {
    fn wait(mut self) -> Output {
        let mut child = self.0.take().unwrap();
        let deadline = Instant::now() + TIMEOUT;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        eprintln!(
            "kmsgfs run -> {:?}\n--- stdout\n{}--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(d: &Daemon, script: &str) -> Running {
    Running(Some(run_cmd(d, script).spawn().expect("spawn kmsgfs run")))
}

/// Run `script` inside `kmsgfs run` and return its output split into `@@name` sections.
fn run_sections(d: &Daemon, script: &str) -> HashMap<String, String> {
    let out = spawn(d, script).wait();
    assert_eq!(
        out.status.code(),
        Some(0),
        "kmsgfs run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    sections(&String::from_utf8_lossy(&out.stdout))
}

fn sections(out: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    let mut cur = String::new();
    for line in out.lines() {
        if let Some(name) = line.strip_prefix("@@") {
            cur = name.to_string();
            map.entry(cur.clone()).or_insert_with(String::new);
        } else {
            map.entry(cur.clone())
                .or_insert_with(String::new)
                .push_str(&format!("{line}\n"));
        }
    }
    map
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// Writes `n` records `<tag>-<i>` to the container's /dev/kmsg.
fn write_script(tag: &str, n: usize) -> String {
    format!("for i in $(seq 1 {n}); do echo \"<6>{tag}-$i\" > /dev/kmsg; done; ")
}

/// The seq of the first record a fresh reader of the REAL /dev/kmsg sees after
/// `lseek(SEEK_DATA)`, i.e. the host's clear point (A4.3). Read-only; never clears.
fn host_clear_point() -> u64 {
    let fd = support::open_raw(Path::new("/dev/kmsg"), libc::O_RDONLY | libc::O_NONBLOCK)
        .expect("open the real /dev/kmsg");
    support::lseek_raw(fd, 0, libc::SEEK_DATA).expect("lseek(SEEK_DATA) on /dev/kmsg");
    let rec = loop {
        match support::read_raw(fd, 8192) {
            Ok(r) => break r,
            Err(libc::EPIPE) => continue,
            Err(e) => panic!("read the real /dev/kmsg: errno {e}"),
        }
    };
    support::close_raw(fd);
    let s = String::from_utf8_lossy(&rec);
    s.split(',').nth(1).unwrap().parse().unwrap()
}

fn printk_sysctl() -> String {
    std::fs::read_to_string("/proc/sys/kernel/printk").unwrap()
}

#[test]
fn d1_util_linux_dmesg_c_consumes_only_the_namespace_records() {
    if !ready(&["dmesg"]) {
        return;
    }
    let d = daemon();
    d.feed(6, "host-ring-record-must-not-show");
    let t = support::unique_tag("sys-c");
    let host_clear = host_clear_point();
    let script = format!(
        "{}echo @@c; dmesg -c; echo @@after; dmesg; echo @@S; dmesg -S; echo @@end",
        write_script(&t, 3)
    );
    let s = run_sections(&d, &script);
    for i in 1..=3 {
        assert_eq!(
            count(&s["c"], &format!("{t}-{i}\n")),
            1,
            "dmesg -c: {}",
            s["c"]
        );
    }
    assert_eq!(count(&s["after"], &t), 0, "dmesg after -c: {}", s["after"]);
    assert_eq!(count(&s["S"], &t), 0, "dmesg -S after -c: {}", s["S"]);
    assert!(!s.values().any(|v| v.contains("host-ring-record")));
    assert_eq!(
        host_clear_point(),
        host_clear,
        "the host's clear point moved"
    );
}

#[test]
fn d1_util_linux_dmesg_big_c_clears_and_s_reads_via_syslog() {
    if !ready(&["dmesg"]) {
        return;
    }
    let d = daemon();
    let t = support::unique_tag("sys-C");
    let host_clear = host_clear_point();
    let script = format!(
        "{}echo @@S; dmesg -S; echo @@C; dmesg -C; echo rc=$?; echo @@after; dmesg; dmesg -S; \
         echo @@new; echo '<6>{t}-new' > /dev/kmsg; dmesg -S; echo @@end",
        write_script(&t, 2)
    );
    let s = run_sections(&d, &script);
    // -S is the syslog(2) READ_ALL path (B3 text, decoded by dmesg).
    assert_eq!(count(&s["S"], &format!("{t}-1\n")), 1, "{}", s["S"]);
    assert_eq!(count(&s["S"], &format!("{t}-2\n")), 1, "{}", s["S"]);
    assert_eq!(s["C"], "rc=0\n");
    assert_eq!(count(&s["after"], &t), 0, "{}", s["after"]);
    assert_eq!(count(&s["new"], &t), 1, "{}", s["new"]);
    assert_eq!(
        host_clear_point(),
        host_clear,
        "the host's clear point moved"
    );
}

#[test]
fn d1_util_linux_dmesg_n_d_e_leave_the_host_console_alone() {
    if !ready(&["dmesg"]) {
        return;
    }
    let d = daemon();
    let before = printk_sysctl();
    let script = "echo @@n; dmesg -n 1; echo rc=$?; echo @@D; dmesg -D; echo rc=$?; \
                  echo @@E; dmesg -E; echo rc=$?; echo @@end";
    let s = run_sections(&d, script);
    assert_eq!(s["n"], "rc=0\n");
    assert_eq!(s["D"], "rc=0\n");
    assert_eq!(s["E"], "rc=0\n");
    assert_eq!(
        printk_sysctl(),
        before,
        "the host's console loglevel changed"
    );
}

#[test]
fn d2_busybox_dmesg_c_and_s() {
    if !ready(&["busybox", "strace"]) {
        return;
    }
    let d = daemon();
    let t = support::unique_tag("sys-bb");
    let host_clear = host_clear_point();
    let script = format!(
        "{}echo @@s100; strace -qq -e trace=syslog -e signal=none -s 0 \
           busybox dmesg -s 100 2>&1 >/dev/null; echo @@all; busybox dmesg; \
         echo @@c; busybox dmesg -c; echo @@after; busybox dmesg; echo @@end",
        write_script(&t, 3)
    );
    let s = run_sections(&d, &script);
    for i in 1..=3 {
        assert_eq!(count(&s["all"], &format!("{t}-{i}\n")), 1, "{}", s["all"]);
        assert_eq!(count(&s["c"], &format!("{t}-{i}\n")), 1, "{}", s["c"]);
    }
    // busybox rounds -s up to its minimum buffer; READ_ALL fills at most the length it asked
    // for (B5).
    let call = s["s100"]
        .lines()
        .find(|l| l.contains("SYSLOG_ACTION_READ_ALL"))
        .unwrap_or_else(|| panic!("no READ_ALL: {}", s["s100"]));
    let (args, ret) = call.rsplit_once(") = ").unwrap();
    let len: usize = args.rsplit(", ").next().unwrap().trim().parse().unwrap();
    let ret: usize = ret.trim().parse().unwrap();
    assert!(ret > 0 && ret <= len, "{call}");
    assert_eq!(count(&s["after"], &t), 0, "{}", s["after"]);
    assert_eq!(
        host_clear_point(),
        host_clear,
        "the host's clear point moved"
    );
}

#[test]
fn d2_busybox_klogd_receives_records_written_after_it_started() {
    if !ready(&["busybox", "strace", "timeout"]) {
        return;
    }
    let d = daemon();
    let t = support::unique_tag("sys-klogd");
    // klogd logs through syslog(3) to /dev/log, which does not exist here; strace shows the
    // syslog(2) READs it made and what they returned.
    let script = format!(
        "echo '<6>{t}-before' > /dev/kmsg; \
         timeout -s KILL 5 strace -f -qq -e trace=syslog -e signal=none -s 400 -o /dev/stdout \
           busybox klogd -n & sleep 1; \
         echo '<6>{t}-after1' > /dev/kmsg; echo '<6>{t}-after2' > /dev/kmsg; wait; echo @@end"
    );
    let out = spawn(&d, &script).wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("SYSLOG_ACTION_READ */"),
        "klogd made no READ: {text}"
    );
    assert!(text.contains(&format!("{t}-after1")), "{text}");
    assert!(text.contains(&format!("{t}-after2")), "{text}");
}

#[test]
fn c4_cat_proc_kmsg_streams_b3_text_destructively() {
    if !ready(&["timeout", "dmesg"]) {
        return;
    }
    let d = daemon();
    let t = support::unique_tag("sys-proc");
    let script = format!(
        "{}echo @@cat; timeout -s INT 2 cat /proc/kmsg; echo; echo @@again; \
         timeout -s INT 1 cat /proc/kmsg; echo @@nb; dd if=/proc/kmsg iflag=nonblock bs=4096 \
         status=none; echo rc=$?; echo @@S; dmesg -S | grep -c {t}; echo @@end",
        write_script(&t, 2)
    );
    let out = spawn(&d, &script).wait();
    let s = sections(&String::from_utf8_lossy(&out.stdout));
    for i in 1..=2 {
        let line = s["cat"]
            .lines()
            .find(|l| l.ends_with(&format!("{t}-{i}")))
            .unwrap_or_else(|| panic!("no record {i}: {}", s["cat"]));
        // B3: "<6>[    s.uuuuuu] text".
        // Written as <6> without a facility: LOG_USER, so prio 14 (A6.5).
        assert!(line.starts_with("<14>["), "{line:?}");
        assert_eq!(line.find("] ").map(|p| p > 4), Some(true), "{line:?}");
    }
    assert_eq!(count(&s["again"], &t), 0, "consumed: {}", s["again"]);
    assert_eq!(count(&s["nb"], &t), 0, "{}", s["nb"]);
    assert!(
        s["nb"].contains("rc=1"),
        "O_NONBLOCK gives EAGAIN: {}",
        s["nb"]
    );
    // /proc/kmsg consumes the syslog cursor only; READ_ALL still shows both records.
    assert_eq!(s["S"].trim(), "2");
}

#[test]
fn e6_another_containers_ring_is_untouched() {
    if !ready(&["dmesg", "busybox"]) {
        return;
    }
    let d = daemon();
    let t = support::unique_tag("sys-other");
    let flag = d.scratch().join("go");
    let wrote = d.scratch().join("wrote");
    let b = spawn(
        &d,
        &format!(
            "echo '<6>{t}-B' > /dev/kmsg; touch {w}; \
             while [ ! -e {f} ]; do sleep 0.05; done; \
             echo @@B; dmesg; echo @@BS; busybox dmesg; echo @@end",
            w = wrote.display(),
            f = flag.display()
        ),
    );
    wait_file(&wrote);
    let s = run_sections(
        &d,
        &format!(
            "{}echo @@A; dmesg -c; dmesg -C; busybox dmesg -c; echo @@end",
            write_script(&t, 1)
        ),
    );
    assert_eq!(count(&s["A"], &format!("{t}-1")), 1, "{}", s["A"]);
    assert_eq!(count(&s["A"], &format!("{t}-B")), 0, "{}", s["A"]);
    std::fs::write(&flag, "").unwrap();
    let out = b.wait();
    let sb = sections(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(count(&sb["B"], &format!("{t}-B")), 1, "{}", sb["B"]);
    assert_eq!(count(&sb["BS"], &format!("{t}-B")), 1, "{}", sb["BS"]);
    assert_eq!(count(&sb["B"], &format!("{t}-1")), 0, "{}", sb["B"]);
}

fn wait_file(p: &Path) {
    let deadline = Instant::now() + TIMEOUT;
    while !p.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn agent_death_never_leaks_the_host_log() {
    if !ready(&["dmesg"]) {
        return;
    }
    let mut d = daemon();
    let t = support::unique_tag("sys-leak");
    // A tagged record in the REAL host log, which a fallback to the host's syslog(2) would show.
    std::fs::write("/dev/kmsg", format!("<6>{t}-host\n")).expect("write the real /dev/kmsg");
    let flag = d.scratch().join("go");
    let started = d.scratch().join("started");
    let c = spawn(
        &d,
        &format!(
            "echo '<6>{t}-ns' > /dev/kmsg; touch {s}; \
             while [ ! -e {f} ]; do sleep 0.05; done; \
             echo @@dmesg; dmesg 2>&1; echo rc=$?; echo @@S; dmesg -S 2>&1; echo rc=$?; \
             echo @@proc; timeout 1 cat /proc/kmsg 2>&1; echo @@end",
            s = started.display(),
            f = flag.display()
        ),
    );
    wait_file(&started);
    d.kill9();
    std::fs::write(&flag, "").unwrap();
    let out = c.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    let s = sections(&text);
    assert!(
        !text.contains(&format!("{t}-host")),
        "host record leaked: {text}"
    );
    // /dev/kmsg is ENOTCONN, syslog(2) ENOSYS: dmesg fails.
    assert!(!s["dmesg"].contains("rc=0"), "{}", s["dmesg"]);
    assert!(!s["S"].contains("rc=0"), "{}", s["S"]);
}

#[test]
fn seccomp_profile_subcommand_names_the_listener() {
    let out = Command::new(env!("CARGO_BIN_EXE_kmsgfs"))
        .args(["seccomp-profile", "--listener", "/run/x.sock"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["listenerPath"], "/run/x.sock");
    assert_eq!(v["syscalls"][0]["action"], "SCMP_ACT_NOTIFY");
    let out = Command::new(env!("CARGO_BIN_EXE_kmsgfs"))
        .arg("seccomp-profile")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["listenerPath"], "/run/kmsgfs.seccomp.sock");
}

#[test]
fn c1_proc_kmsg_refuses_non_root_and_works_under_a_user_namespace() {
    if !ready(&["dmesg", "setpriv", "timeout"]) {
        return;
    }
    let d = daemon();
    let t = support::unique_tag("sys-userns");
    // Container root in its own user namespace: syslog(2) and /proc/kmsg on its ring.
    let script = format!(
        "{}echo @@S; dmesg -S; echo @@proc; timeout -s INT 1 cat /proc/kmsg; echo; \
         echo @@nobody; setpriv --reuid 1 --regid 1 --clear-groups cat /proc/kmsg 2>&1; \
         echo rc=$?; echo @@end",
        write_script(&t, 1)
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kmsgfs"));
    cmd.arg("run")
        .arg("--mount")
        .arg(d.dir())
        .args(["--unshare", "user,net,pid", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = Running(Some(cmd.spawn().unwrap())).wait();
    assert_eq!(out.status.code(), Some(0));
    let s = sections(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(count(&s["S"], &format!("{t}-1")), 1, "{}", s["S"]);
    assert_eq!(count(&s["proc"], &format!("{t}-1")), 1, "{}", s["proc"]);
    // Mode 0400 root: EACCES for anyone else (C1). uid 1 is unmapped in this user namespace
    // (only root is mapped), so setpriv itself may fail first; either way nothing is read.
    assert!(!s["nobody"].contains(&t), "{}", s["nobody"]);
    assert!(!s["nobody"].contains("rc=0"), "{}", s["nobody"]);
}

#[test]
fn c1_proc_kmsg_refuses_a_non_root_container_user() {
    if !ready(&["setpriv"]) {
        return;
    }
    let d = daemon();
    let script = "setpriv --reuid 65534 --regid 65534 --clear-groups cat /proc/kmsg 2>&1; \
                  echo rc=$?";
    let out = spawn(&d, script).wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Permission denied"), "{text}");
    assert!(text.contains("rc=1"), "{text}");
}

#[test]
fn c4_blocked_proc_kmsg_read_wakes_on_a_new_record() {
    if !ready(&["timeout"]) {
        return;
    }
    let d = daemon();
    let t = support::unique_tag("sys-wake");
    // cat blocks on an empty cursor (parked READ) until the background write appends.
    let script = format!(
        "(sleep 1; echo '<6>{t}-late' > /dev/kmsg) & \
         echo @@cat; timeout -s INT 10 head -n 1 /proc/kmsg; echo rc=$?; wait; echo @@end"
    );
    let s = run_sections(&d, &script);
    assert_eq!(
        count(&s["cat"], &format!("] {t}-late\n")),
        1,
        "{}",
        s["cat"]
    );
    assert!(
        s["cat"].contains("rc=0"),
        "woken, not timed out: {}",
        s["cat"]
    );
}
