//! End to end: real clients inside `kmsgfs run`, against the real `kmsgfs serve` daemon.
//!
//! Every test starts its own daemon (the shared harness in `common`, with a FIFO as the host
//! source so the real host log is never read or flooded) and runs clients in fresh namespaces
//! with `kmsgfs run --mount <daemon dir>`, exactly as a user would: the clients open
//! `/dev/kmsg`, which is the daemon's file bound over it.
//!
//! * util-linux `dmesg`, `dmesg -r`, `dmesg -x`, `dmesg -w` and `dmesg -W` (kmsg-semantics D1).
//! * A journald-style client (D3) and a Go-runtime-style client (D4), written here. They run
//!   **inside** `kmsgfs run` by re-executing this test binary (`--exact client_entry`) with
//!   `KMSGFS_E2E_CLIENT` set. That is more faithful than driving the host-ring file from the
//!   test process: the client reaches its ring through the bind mount and the daemon's
//!   namespace resolution, like a containerised journald or kubelet, and the records it waits
//!   for are written by processes of its own namespace. The overrun is forced from inside too,
//!   by writing more records than a small `--ring-size` holds while the client is not reading.
//! * Signals: a `dmesg -w` blocked in read sleeps in S (not D) before and after other readers
//!   were interrupted (fuse-notes §9), and Ctrl-C and SIGKILL end it promptly (E5).
//!
//! Every run uses a unique tag, counts records exactly, and checks that none of them reached
//! the real host log. Latencies are printed, never asserted beyond generous timeouts.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::Daemon;

/// Generous bound for anything that should take milliseconds.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Tells this test binary, re-executed inside `kmsgfs run`, which client to be.
const CLIENT_ENV: &str = "KMSGFS_E2E_CLIENT";
/// The tag the client's records carry.
const TAG_ENV: &str = "KMSGFS_E2E_TAG";
/// Prefix of the client's result line on stdout.
const RESULT_PREFIX: &str = "E2E-RESULT ";

// ---------------------------------------------------------------------------------------------
// Helpers on the test side.

fn require_root_and_dmesg() -> bool {
    support::require_root() && support::require_tool("dmesg")
}

/// Daemon for these tests: `--devkmsg on` so that the per-fd write ratelimit (A7.5) does not
/// drop the test's bursts.
fn daemon(extra: &[&str]) -> Daemon {
    let mut args = vec!["--devkmsg", "on"];
    args.extend_from_slice(extra);
    Daemon::start_args(&args)
}

/// `kmsgfs run --mount DIR --` (CMD follows).
fn kmsgfs_run(d: &Daemon) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kmsgfs"));
    cmd.arg("run").arg("--mount").arg(d.dir()).arg("--");
    cmd
}

/// A running `kmsgfs run`, killed and reaped on drop so a failing test leaves nothing behind.
/// Declare it after the [`Daemon`] so that it is dropped first.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Running {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits for exit, failing the test after [`TIMEOUT`].
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "`kmsgfs run` (pid {}) did not exit within {TIMEOUT:?}",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits for exit and collects stdout and stderr, failing the test after [`TIMEOUT`].
    fn output(mut self) -> Output {
        let mut out = self.0.stdout.take().unwrap();
        let mut err = self.0.stderr.take().unwrap();
        let out_t = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            v
        });
        let err_t = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = err.read_to_end(&mut v);
            v
        });
        let status = self.wait();
        let output = Output {
            status,
            stdout: out_t.join().unwrap(),
            stderr: err_t.join().unwrap(),
        };
        eprintln!(
            "--- kmsgfs run: {:?}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

/// Starts `sh -c script` under `kmsgfs run` with piped stdout and stderr.
fn spawn_sh(d: &Daemon, script: &str, env: &[(&str, &str)]) -> Running {
    let mut cmd = kmsgfs_run(d);
    cmd.args(["sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Running(cmd.spawn().expect("spawn kmsgfs run"))
}

fn sh(d: &Daemon, script: &str, env: &[(&str, &str)]) -> Output {
    spawn_sh(d, script, env).output()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The records of the real host `/dev/kmsg` (read non-destructively, A8.3) that contain `tag`.
fn host_records_with(tag: &str) -> Vec<String> {
    let fd = support::open_raw(Path::new("/dev/kmsg"), libc::O_RDONLY | libc::O_NONBLOCK)
        .unwrap_or_else(|e| panic!("open host /dev/kmsg: errno {e}"));
    let found = support::drain(fd)
        .into_iter()
        .filter(|r| r.contains(tag))
        .collect();
    support::close_raw(fd);
    found
}

/// Asserts that neither the real host log nor the daemon's host ring has `tag`.
fn assert_not_on_host(d: &Daemon, tag: &str) {
    let host = host_records_with(tag);
    assert!(
        host.is_empty(),
        "records leaked into the host /dev/kmsg: {host:?}"
    );
    let fd = support::open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK)
        .unwrap_or_else(|e| panic!("open host-ring kmsg: errno {e}"));
    let ring: Vec<String> = support::drain(fd)
        .into_iter()
        .filter(|r| r.contains(tag))
        .collect();
    support::close_raw(fd);
    assert!(
        ring.is_empty(),
        "records leaked into the daemon's host ring: {ring:?}"
    );
}

/// Host pids of the descendants of `pid` whose comm is `comm`.
fn descendants_named(pid: u32, comm: &str) -> Vec<u32> {
    support::descendants(pid)
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

/// Waits until the single `comm` process under `run` is blocked in `read(2)` (syscall 0 in
/// `/proc/<pid>/syscall`) and returns its host pid.
fn wait_blocked_in_read(run: &Running, comm: &str) -> u32 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let [pid] = descendants_named(run.pid(), comm)[..] {
            let syscall =
                std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
            if syscall.split(' ').next() == Some("0") {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no `{comm}` blocked in read under pid {} within {TIMEOUT:?}",
            run.pid()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The scheduler state (field 3 of `/proc/<pid>/stat`) sampled `n` times, 10 ms apart.
fn states(pid: u32, n: usize) -> String {
    (0..n)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(10));
            support::proc_stat_field(pid, 3).unwrap_or_else(|| "?".into())
        })
        .collect()
}

/// Shell snippet that writes `<6>$TAG <what> <i>` for i in 1..=n, one open and write each
/// (as `echo > /dev/kmsg` does).
fn write_records(what: &str, n: usize) -> String {
    format!(
        "i=1; while [ $i -le {n} ]; do echo \"<6>$TAG {what} $i\" > /dev/kmsg; i=$((i+1)); done; "
    )
}

/// The message part of a `dmesg` line: what follows the `[ timestamp] ` prefix.
fn after_timestamp(line: &str) -> &str {
    line.split_once("] ").map_or(line, |(_, rest)| rest)
}

// ---------------------------------------------------------------------------------------------
// util-linux dmesg.

#[test]
fn d1_dmesg_r_x_show_exactly_the_namespace_records() {
    if !require_root_and_dmesg() {
        return;
    }
    let d = daemon(&[]);
    let tag = support::unique_tag("e2e-dmesg");
    let n = 7;
    let script = format!(
        "{} echo ==plain; dmesg; echo ==raw; dmesg -r; echo ==decode; dmesg -x; echo ==end",
        write_records("rec", n)
    );
    let out = sh(&d, &script, &[("TAG", &tag)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let section = |name: &str| -> Vec<String> {
        stdout
            .split(&format!("=={name}\n"))
            .nth(1)
            .unwrap()
            .split("\n==")
            .next()
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let expected: Vec<String> = (1..=n).map(|i| format!("{tag} rec {i}")).collect();

    // Plain: `[    12.345678] <text>`, only our records, in order.
    let plain = section("plain");
    assert_eq!(
        plain.iter().map(|l| after_timestamp(l)).collect::<Vec<_>>(),
        expected,
        "dmesg"
    );
    assert!(plain.iter().all(|l| l.starts_with('[')), "{plain:?}");

    // Raw: the record is user.info (prio 14: facility 0 from userspace becomes user, A6.5),
    // which util-linux 2.38.1 prints as `<7>`: it rebuilds the prefix with glibc's
    // `LOG_MAKEPRI(facility, level)`, which ORs the unshifted facility 1 with level 6. The real
    // /dev/kmsg gives the same `<7>` for an `echo "<6>..." > /dev/kmsg`.
    let raw = section("raw");
    assert_eq!(raw.len(), n, "dmesg -r: {raw:?}");
    for (line, want) in raw.iter().zip(&expected) {
        assert!(line.starts_with("<7>["), "dmesg -r: {line}");
        assert_eq!(after_timestamp(line), want, "dmesg -r");
    }

    // Decoded: `user  :info  : [...] text`.
    let decoded = section("decode");
    assert_eq!(decoded.len(), n, "dmesg -x: {decoded:?}");
    for (line, want) in decoded.iter().zip(&expected) {
        let fields: Vec<&str> = line.splitn(3, ':').collect();
        assert_eq!(fields[0].trim(), "user", "dmesg -x facility: {line}");
        assert_eq!(fields[1].trim(), "info", "dmesg -x level: {line}");
        assert_eq!(after_timestamp(line), want, "dmesg -x");
    }

    assert_not_on_host(&d, &tag);
}

#[test]
fn d1_dmesg_sees_its_records_in_a_user_namespace_and_with_only_a_new_netns() {
    if !require_root_and_dmesg() {
        return;
    }
    let d = daemon(&[]);
    let n = 4;
    // Rings are keyed on the network namespace: a user namespace (container root without
    // CAP_SYSLOG in the initial namespace) and a run without new pid/uts/ipc namespaces both
    // get a ring of their own.
    for unshare in ["user,net,pid", "net"] {
        let tag = support::unique_tag("e2e-userns");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kmsgfs"));
        cmd.arg("run")
            .arg("--mount")
            .arg(d.dir())
            .args(["--unshare", unshare, "--", "sh", "-c"])
            .arg(format!("{} dmesg", write_records("rec", n)))
            .env("TAG", &tag)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = Running(cmd.spawn().unwrap()).output();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{unshare}: {}",
            text(&out.stderr)
        );
        let expected: Vec<String> = (1..=n).map(|i| format!("{tag} rec {i}")).collect();
        let stdout = text(&out.stdout);
        let lines: Vec<&str> = stdout.lines().map(after_timestamp).collect();
        assert_eq!(lines, expected, "--unshare {unshare}");
        assert_not_on_host(&d, &tag);
    }
}

#[test]
fn d1_dmesg_w_and_dmesg_w_new_see_records_written_after_start() {
    if !require_root_and_dmesg() {
        return;
    }
    let d = daemon(&[]);
    let tag = support::unique_tag("e2e-follow");
    let out_dir = d.scratch().join("follow");
    std::fs::create_dir_all(&out_dir).unwrap();
    // Both followers run under `timeout` so that nothing hangs; they are stopped with SIGINT as
    // soon as they printed what they should. `/proc/<pid>/syscall` starting with 0 means the
    // follower has done its lseek and sits in read(2), so later records are "after start".
    let script = format!(
        "{before}\
         timeout -s INT 50 dmesg -w > \"$OUT/w\" & w=$!; \
         timeout -s INT 50 dmesg -W > \"$OUT/W\" & W=$!; \
         blocked() {{ for p in $(cat /proc/$1/task/$1/children); do \
             [ \"$(cut -d' ' -f1 /proc/$p/syscall 2>/dev/null)\" = 0 ] && return 0; done; return 1; }}; \
         until blocked $w && blocked $W; do sleep 0.01; done; \
         start=$(date +%s%N); \
         {after}\
         until [ \"$(grep -c 'after' \"$OUT/w\")\" = 3 ] && [ \"$(grep -c 'after' \"$OUT/W\")\" = 3 ]; do sleep 0.005; done; \
         echo latency_ms=$(( ($(date +%s%N) - start) / 1000000 )); \
         kill -INT $(cat /proc/$w/task/$w/children) $(cat /proc/$W/task/$W/children); wait",
        before = write_records("before", 3),
        after = write_records("after", 3),
    );
    let out = sh(
        &d,
        &script,
        &[("TAG", &tag), ("OUT", out_dir.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    eprintln!(
        "followers saw the new records: {}",
        text(&out.stdout).trim()
    );
    let read = |name: &str| -> Vec<String> {
        std::fs::read_to_string(out_dir.join(name))
            .unwrap()
            .lines()
            .map(|l| after_timestamp(l).to_owned())
            .collect()
    };
    let before: Vec<String> = (1..=3).map(|i| format!("{tag} before {i}")).collect();
    let after: Vec<String> = (1..=3).map(|i| format!("{tag} after {i}")).collect();
    assert_eq!(read("w"), [before, after.clone()].concat(), "dmesg -w");
    assert_eq!(read("W"), after, "dmesg -W (--follow-new)");
    assert_not_on_host(&d, &tag);
}

#[test]
fn d1_two_concurrent_runs_never_see_each_other() {
    if !require_root_and_dmesg() {
        return;
    }
    let d = daemon(&[]);
    let base = support::unique_tag("e2e-pair");
    let sync = d.scratch().join("pair");
    std::fs::create_dir_all(&sync).unwrap();
    let n = 5;
    // Each side writes its records, announces it, waits for the other side, then dumps its log.
    let script = |me: &str, other: &str| {
        format!(
            "{} touch \"$SYNC/{me}\"; until [ -e \"$SYNC/{other}\" ]; do sleep 0.01; done; \
             dmesg; echo ==follow; timeout -s INT 1 dmesg -w",
            write_records("rec", n)
        )
    };
    let tag_a = format!("{base}-A");
    let tag_b = format!("{base}-B");
    let sync_s = sync.to_str().unwrap();
    let a = spawn_sh(&d, &script("a", "b"), &[("TAG", &tag_a), ("SYNC", sync_s)]);
    let b = spawn_sh(&d, &script("b", "a"), &[("TAG", &tag_b), ("SYNC", sync_s)]);
    for (out, tag) in [(a.output(), &tag_a), (b.output(), &tag_b)] {
        // `timeout` ends the follower with SIGINT, so the script's status is 124.
        assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let (dump, follow) = stdout.split_once("==follow\n").unwrap();
        let expected: Vec<String> = (1..=n).map(|i| format!("{tag} rec {i}")).collect();
        for listing in [dump, follow] {
            let lines: Vec<&str> = listing.lines().map(after_timestamp).collect();
            assert_eq!(lines, expected, "only this namespace's records");
        }
    }
    assert_not_on_host(&d, &tag_a);
    assert_not_on_host(&d, &tag_b);
}

// ---------------------------------------------------------------------------------------------
// Blocked readers and signals.

/// Starts `kmsgfs run -- dmesg -w` in its own process group (as a shell job would be) and
/// returns it with the host pid of its `dmesg`, once that is blocked in read(2).
fn start_follower(d: &Daemon) -> (Running, u32) {
    let mut cmd = kmsgfs_run(d);
    cmd.args(["dmesg", "-w"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let run = Running(cmd.spawn().unwrap());
    let pid = wait_blocked_in_read(&run, "dmesg");
    (run, pid)
}

/// Sends `sig` and returns how long `run` took to exit, with its status.
fn signal_and_time(run: &mut Running, target: i32, sig: i32) -> (Duration, ExitStatus) {
    let start = Instant::now();
    // SAFETY: kill takes no pointers; `target` is one of our children or its process group.
    assert_eq!(unsafe { libc::kill(target, sig) }, 0);
    let status = run.wait();
    (start.elapsed(), status)
}

#[test]
fn e5_blocked_dmesg_w_sleeps_in_s_and_ends_promptly_on_ctrl_c_and_sigkill() {
    if !require_root_and_dmesg() {
        return;
    }
    let d = daemon(&[]);
    let (mut a, a_dmesg) = start_follower(&d);
    let before = states(a_dmesg, 10);
    eprintln!("reader A states before any interrupt: {before}");
    assert!(
        before.chars().all(|c| c == 'S'),
        "a blocked reader must sleep interruptibly (S), not in D: {before}"
    );

    // Ctrl-C: the terminal sends SIGINT to the whole foreground process group.
    let (mut b, _) = start_follower(&d);
    let group = -(b.pid() as i32);
    let (took, status) = signal_and_time(&mut b, group, libc::SIGINT);
    eprintln!("reader B ended {took:?} after Ctrl-C (SIGINT to its process group)");
    assert_eq!(status.code(), Some(128 + libc::SIGINT));

    // SIGKILL of the blocked dmesg itself.
    let (mut c, c_dmesg) = start_follower(&d);
    let (took, status) = signal_and_time(&mut c, c_dmesg as i32, libc::SIGKILL);
    eprintln!("reader C ended {took:?} after SIGKILL");
    assert_eq!(status.code(), Some(128 + libc::SIGKILL));

    // Interrupting B and C must not have turned the connection's other sleepers into D
    // (FUSE's no_interrupt fallback, fuse-notes §9).
    let after = states(a_dmesg, 10);
    eprintln!("reader A states after B and C were interrupted: {after}");
    assert!(after.chars().all(|c| c == 'S'), "reader A: {after}");
    let fresh = start_follower(&d);
    let fresh_states = states(fresh.1, 10);
    assert!(
        fresh_states.chars().all(|c| c == 'S'),
        "a reader blocked after the interrupts: {fresh_states}"
    );
    drop(fresh);

    let group = -(a.pid() as i32);
    let (took, status) = signal_and_time(&mut a, group, libc::SIGINT);
    eprintln!("reader A ended {took:?} after Ctrl-C");
    assert_eq!(status.code(), Some(128 + libc::SIGINT));
}

#[test]
fn run_reports_a_dead_daemon_clearly() {
    if !support::require_root() {
        return;
    }
    let mut d = daemon(&[]);
    d.kill9();
    let out = sh(&d, "echo must-not-run", &[]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("is kmsgfs serve running on"),
        "ENOTCONN must be explained: {stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// journald-style and Go-runtime-style clients, run inside `kmsgfs run`.

/// Runs `client` inside `kmsgfs run` (this test binary, re-executed) and returns its result.
fn run_client(d: &Daemon, client: &str, tag: &str) -> serde_json::Value {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = kmsgfs_run(d);
    cmd.arg(exe)
        .args([
            "--exact",
            "e2e_clients::client_entry",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CLIENT_ENV, client)
        .env(TAG_ENV, tag)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = Running(cmd.spawn().unwrap()).output();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{client} client failed:\n{}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.find(RESULT_PREFIX).map(|i| &l[i + RESULT_PREFIX.len()..]))
        .unwrap_or_else(|| panic!("no result line from the {client} client:\n{stdout}"));
    serde_json::from_str(line).unwrap()
}

/// Ring size for the client tests: small, so that the overrun phase wraps it many times.
const SMALL_RING: &str = "8192";

#[test]
fn d3_journald_style_client_level_triggered_epoll_and_overrun() {
    if !support::require_root() {
        return;
    }
    let d = daemon(&["--ring-size", SMALL_RING]);
    let tag = support::unique_tag("e2e-journald");
    let r = run_client(&d, "journald", &tag);
    eprintln!("journald client: {r:#}");
    let n = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing in {r}"))
    };
    assert_eq!(n("flushed"), n("pre_written"), "startup flush");
    assert_eq!(n("live_received"), n("live_written"), "live records");
    assert!(
        n("spurious") <= 5,
        "level-triggered epoll woke without a record: {r}"
    );
    assert!(n("overrun_spurious") <= 5, "after the overrun: {r}");
    assert_eq!(n("idle_wakeups"), 0, "readable while nothing is pending");
    assert!(n("pollerr") >= 1, "no EPOLLERR after the overrun");
    assert_eq!(n("epipe"), 1, "exactly one EPIPE after the overrun");
    assert!(n("missed") > 0, "the overrun lost nothing?");
    // "missed" is journald's arithmetic: the seq gap after the EPIPE.
    assert_eq!(
        n("missed") + n("overrun_received"),
        n("overrun_written"),
        "missed + received must account for every record written"
    );
    assert_eq!(n("after_overrun_received"), n("after_overrun_written"));
    assert_not_on_host(&d, &tag);
}

#[test]
fn d4_go_style_client_edge_triggered_epoll_never_hangs() {
    if !support::require_root() {
        return;
    }
    let d = daemon(&[]);
    let tag = support::unique_tag("e2e-go");
    let r = run_client(&d, "go", &tag);
    eprintln!("go client: {r:#}");
    let n = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing in {r}"))
    };
    assert_eq!(n("received"), n("written"), "every record delivered");
    assert_eq!(n("pollout"), 0, "POLLOUT must never be reported (A5.5)");
    assert!(n("wakeups") >= 1);
    // An edge can be pending for a record that the drain loop already read, so a wakeup may
    // find nothing; but every wakeup needs a record's edge, so a busy loop shows as far more
    // wakeups than records.
    assert!(
        n("wakeups") <= n("written") + 5,
        "more wakeups than records: busy loop: {r}"
    );
    assert_not_on_host(&d, &tag);
}

/// Not a test: the entry point of the clients above when this binary is re-executed inside
/// `kmsgfs run` with `KMSGFS_E2E_CLIENT` set. Without it there is nothing to do.
#[test]
#[ignore = "client entry point, run inside `kmsgfs run` by the d3/d4 tests"]
fn client_entry() {
    let Ok(kind) = std::env::var(CLIENT_ENV) else {
        eprintln!("{CLIENT_ENV} is not set: client_entry only runs inside the e2e tests");
        return;
    };
    let tag = std::env::var(TAG_ENV).expect("KMSGFS_E2E_TAG");
    let result = match kind.as_str() {
        "journald" => clients::journald(&tag),
        "go" => clients::go(&tag),
        other => panic!("unknown client {other}"),
    };
    // On a line of its own: libtest may already have printed "test client_entry ... ".
    println!("\n{RESULT_PREFIX}{result}");
}

/// The clients. They use raw system calls in the order the real programs make them
/// (kmsg-semantics D3 and D4, from strace and source).
mod clients {
    use std::os::fd::RawFd;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use serde_json::json;

    use crate::support;

    const KMSG: &str = "/dev/kmsg";
    /// How long a client waits for an event before declaring a hang.
    const HANG: Duration = Duration::from_secs(30);

    /// CLOCK_MONOTONIC in microseconds, shared by the writer and reader threads.
    fn now_us() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is valid for writes.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
    }

    /// Splits `"<text> t=<us>"` into the text and the write-to-read latency in microseconds.
    fn split_stamp(text: &str) -> (&str, u64) {
        let (body, stamp) = text.rsplit_once(" t=").expect("stamped record");
        (body, now_us().saturating_sub(stamp.parse().expect("stamp")))
    }

    /// Median and maximum of `v`, for printing.
    fn median_max(mut v: Vec<u64>) -> serde_json::Value {
        v.sort_unstable();
        json!({ "median": v.get(v.len() / 2), "max": v.last() })
    }

    /// Record text of `rec` if it carries `tag`.
    fn tagged<'a>(rec: &'a str, tag: &str) -> Option<&'a str> {
        let t = support::text_of(rec);
        t.contains(tag).then_some(t)
    }

    /// One record written the way journald forwards to kmsg: a 5-element writev (D3.6).
    fn writev_record(fd: RawFd, text: &str) {
        let parts: [&[u8]; 5] = [b"<6>", b"e2e", b"[1]: ", text.as_bytes(), b"\n"];
        let iov: Vec<libc::iovec> = parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        // SAFETY: every iovec points into a live slice of `parts` for the duration of the call.
        let n = unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as i32) };
        let total: usize = parts.iter().map(|p| p.len()).sum();
        assert_eq!(
            n,
            total as isize,
            "writev: {}",
            std::io::Error::last_os_error()
        );
    }

    /// A writer's own `/dev/kmsg` fd, as another process of the namespace would have.
    fn writer_fd() -> RawFd {
        support::open_raw(Path::new(KMSG), libc::O_WRONLY).expect("open /dev/kmsg O_WRONLY")
    }

    fn epoll_add(fd: RawFd, events: u32) -> RawFd {
        // SAFETY: plain syscalls; `ev` lives across epoll_ctl.
        unsafe {
            let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            assert!(
                ep >= 0,
                "epoll_create1: {}",
                std::io::Error::last_os_error()
            );
            let mut ev = libc::epoll_event {
                events,
                u64: fd as u64,
            };
            let rc = libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev);
            assert_eq!(rc, 0, "epoll_ctl ADD: {}", std::io::Error::last_os_error());
            ep
        }
    }

    /// `epoll_wait` for one event: its mask, or 0 on timeout.
    fn epoll_wait(ep: RawFd, timeout: Duration) -> u32 {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        loop {
            // SAFETY: `ev` has room for the one event requested.
            let n = unsafe { libc::epoll_wait(ep, &mut ev, 1, timeout.as_millis() as i32) };
            match n {
                1 => return ev.events,
                0 => return 0,
                _ if support::errno() == libc::EINTR => continue,
                _ => panic!("epoll_wait: {}", std::io::Error::last_os_error()),
            }
        }
    }

    /// journald (D3): `open(O_RDWR|O_CLOEXEC|O_NONBLOCK|O_NOCTTY)`, no lseek, a startup flush
    /// until EAGAIN, then level-triggered EPOLLIN with exactly one read per dispatch, EPOLLERR
    /// noted as "buffer overrun", seq gaps counted as "Missed N kernel messages".
    pub fn journald(tag: &str) -> serde_json::Value {
        let fd = support::open_raw(
            Path::new(KMSG),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_NOCTTY,
        )
        .expect("open /dev/kmsg O_RDWR|O_NONBLOCK");
        let ep = epoll_add(fd, libc::EPOLLIN as u32);
        let mut expected_seq: Option<u64> = None;
        let mut missed = 0u64;
        let mut epipe = 0u64;

        // One journald read: a record, or None for EAGAIN/EPIPE (transient, D3.3).
        let mut read_one = |missed: &mut u64, epipe: &mut u64| -> Option<String> {
            match support::read_raw(fd, 8192) {
                Ok(b) => {
                    assert!(!b.is_empty(), "read returned 0");
                    let rec = String::from_utf8_lossy(&b).into_owned();
                    assert!(rec.ends_with('\n'), "record without newline: {rec:?}");
                    let (_, seq, _) = support::header_of(&rec);
                    if let Some(want) = expected_seq {
                        assert!(seq >= want, "seq went backwards: {seq} < {want}");
                        *missed += seq - want;
                    }
                    expected_seq = Some(seq + 1);
                    Some(rec)
                }
                Err(libc::EAGAIN) => None,
                Err(libc::EPIPE) => {
                    *epipe += 1;
                    None
                }
                Err(libc::EINVAL) => panic!("EINVAL on an 8192-byte read disables journald"),
                Err(e) => panic!("read: errno {e}"),
            }
        };

        // Phase 1: records that exist before the flush, written through journald's own fd.
        let pre_written = 20;
        for i in 0..pre_written {
            writev_record(fd, &format!("{tag} pre {i}"));
        }
        let mut flushed = 0;
        while let Some(rec) = read_one(&mut missed, &mut epipe) {
            assert!(tagged(&rec, tag).is_some(), "foreign record {rec:?}");
            flushed += 1;
        }

        // Phase 2: live records from another process's fd, at varying pace; one read per
        // level-triggered dispatch.
        let live_written = 60u64;
        let writer = std::thread::spawn({
            let tag = tag.to_string();
            move || {
                let w = writer_fd();
                for i in 0..live_written {
                    let rec = format!("<6>{tag} live {i} t={}\n", now_us());
                    support::write_raw(w, rec.as_bytes()).unwrap();
                    if i % 10 != 9 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                support::close_raw(w);
            }
        });
        let (mut live_received, mut live_wakeups, mut spurious) = (0u64, 0u64, 0u64);
        let mut live_latency_us = Vec::new();
        let start = Instant::now();
        while live_received < live_written {
            let events = epoll_wait(ep, HANG);
            assert_ne!(
                events, 0,
                "journald client hung after {live_received} records"
            );
            live_wakeups += 1;
            match read_one(&mut missed, &mut epipe) {
                Some(rec) => {
                    let text = tagged(&rec, tag).expect("foreign record");
                    let (text, latency) = split_stamp(text);
                    assert_eq!(text, format!("{tag} live {live_received}"), "order");
                    live_latency_us.push(latency);
                    live_received += 1;
                }
                None => spurious += 1,
            }
        }
        let live_ms = start.elapsed().as_millis();
        writer.join().unwrap();
        // Drained: a level-triggered fd must not be readable now.
        let mut idle_wakeups = 0;
        if epoll_wait(ep, Duration::from_millis(300)) != 0 {
            idle_wakeups += 1;
        }

        // Phase 3: overrun. Write far more than the ring holds while not reading, then
        // dispatch as journald does until the fd is no longer readable.
        let overrun_written = 1000u64;
        let w = writer_fd();
        for i in 0..overrun_written {
            support::write_raw(w, format!("<6>{tag} ovr {i:04}\n").as_bytes()).unwrap();
        }
        let (missed_before, epipe_before) = (missed, epipe);
        let (mut pollerr, mut overrun_received, mut overrun_dispatches) = (0u64, 0u64, 0u64);
        let mut first_after: Option<String> = None;
        loop {
            // The first dispatch must come (the fd is readable); afterwards a quiet fd means
            // drained.
            let wait = if overrun_dispatches == 0 {
                HANG
            } else {
                Duration::from_millis(300)
            };
            let events = epoll_wait(ep, wait);
            if events == 0 {
                assert!(overrun_dispatches > 0, "no dispatch after the overrun");
                break;
            }
            overrun_dispatches += 1;
            if events & libc::EPOLLERR as u32 != 0 {
                // journald: "/dev/kmsg buffer overrun, some messages lost."
                pollerr += 1;
            }
            if let Some(rec) = read_one(&mut missed, &mut epipe) {
                let text = tagged(&rec, tag).expect("foreign record").to_string();
                if first_after.is_none() {
                    first_after = Some(text);
                }
                overrun_received += 1;
            }
            assert!(
                overrun_dispatches <= overrun_written + 10,
                "busy loop after the overrun"
            );
        }
        let overrun_spurious = overrun_dispatches - overrun_received - (epipe - epipe_before);

        // Phase 4: the client keeps working after the overrun.
        let after_overrun_written = 5u64;
        for i in 0..after_overrun_written {
            support::write_raw(w, format!("<6>{tag} after {i}\n").as_bytes()).unwrap();
        }
        let mut after_overrun_received = 0u64;
        while after_overrun_received < after_overrun_written {
            assert_ne!(epoll_wait(ep, HANG), 0, "hung after the overrun");
            if read_one(&mut missed, &mut epipe).is_some() {
                after_overrun_received += 1;
            }
        }
        support::close_raw(w);
        support::close_raw(ep);
        support::close_raw(fd);
        json!({
            "pre_written": pre_written, "flushed": flushed,
            "live_written": live_written, "live_received": live_received,
            "live_wakeups": live_wakeups, "spurious": spurious, "live_ms": live_ms,
            "live_write_to_read_us": median_max(live_latency_us),
            "idle_wakeups": idle_wakeups,
            "overrun_written": overrun_written, "overrun_received": overrun_received,
            "missed": missed - missed_before, "epipe": epipe - epipe_before, "pollerr": pollerr,
            "overrun_spurious": overrun_spurious,
            "first_after_overrun": first_after,
            "after_overrun_written": after_overrun_written,
            "after_overrun_received": after_overrun_received,
        })
    }

    /// The Go runtime's use of `os.Open` + `Read` (D4): a blocking open, registration with
    /// the netpoller (edge-triggered, EPOLLIN|EPOLLOUT|EPOLLRDHUP), then O_NONBLOCK through
    /// fcntl, reads until EAGAIN, and a wait for the next edge.
    pub fn go(tag: &str) -> serde_json::Value {
        // A few records exist before the reader starts (go-kmsg-parser reads from the oldest).
        let w = writer_fd();
        let pre = 5u64;
        for i in 0..pre {
            support::write_raw(w, format!("<6>{tag} rec {i}\n").as_bytes()).unwrap();
        }
        support::close_raw(w);

        let fd = support::open_raw(Path::new(KMSG), libc::O_RDONLY).expect("open /dev/kmsg");
        let ep = epoll_add(
            fd,
            (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
        );
        // SAFETY: fcntl on our own fd.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            assert!(fl >= 0);
            assert_eq!(libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK), 0);
        }

        let total = 120u64;
        let writer = std::thread::spawn({
            let tag = tag.to_string();
            move || {
                // A fresh writer fd per burst: different processes logging.
                let mut i = pre;
                while i < total {
                    let burst = if i % 3 == 0 { 10 } else { 1 };
                    let w = writer_fd();
                    for _ in 0..burst {
                        if i < total {
                            let rec = format!("<6>{tag} rec {i} t={}\n", now_us());
                            support::write_raw(w, rec.as_bytes()).unwrap();
                            i += 1;
                        }
                    }
                    support::close_raw(w);
                    std::thread::sleep(Duration::from_millis(3));
                }
            }
        });

        let (mut received, mut wakeups, mut spurious, mut pollout) = (0u64, 0u64, 0u64, 0u64);
        let mut wait_us = Vec::new();
        let mut write_to_read_us = Vec::new();
        loop {
            // Read until EAGAIN, like Go's fd.Read before parking on the poller.
            let mut got = 0;
            loop {
                match support::read_raw(fd, 8192) {
                    Ok(b) => {
                        assert!(!b.is_empty(), "read returned 0: fatal for go-kmsg-parser");
                        let rec = String::from_utf8_lossy(&b).into_owned();
                        let text = tagged(&rec, tag).expect("foreign record");
                        let text = if received < pre {
                            text
                        } else {
                            let (text, latency) = split_stamp(text);
                            write_to_read_us.push(latency);
                            text
                        };
                        assert_eq!(text, format!("{tag} rec {received}"), "order");
                        received += 1;
                        got += 1;
                    }
                    Err(libc::EAGAIN) => break,
                    Err(libc::EPIPE) => continue,
                    Err(e) => panic!("read: errno {e} (fatal for go-kmsg-parser)"),
                }
            }
            if received == total {
                break;
            }
            if wakeups > 0 && got == 0 {
                spurious += 1;
            }
            let t = Instant::now();
            let events = epoll_wait(ep, HANG);
            assert_ne!(
                events, 0,
                "go client hung: no edge after EAGAIN ({received}/{total} records)"
            );
            wait_us.push(t.elapsed().as_micros() as u64);
            wakeups += 1;
            if events & libc::EPOLLOUT as u32 != 0 {
                pollout += 1;
            }
        }
        writer.join().unwrap();
        support::close_raw(ep);
        support::close_raw(fd);
        json!({
            "written": total, "received": received, "wakeups": wakeups,
            "spurious": spurious, "pollout": pollout, "epoll_wait_us": median_max(wait_us),
            "write_to_read_us": median_max(write_to_read_us),
        })
    }
}
