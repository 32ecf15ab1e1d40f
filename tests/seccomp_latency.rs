//! Latency of an emulated `syslog(2)` call (seccomp agent) against the native call, for
//! docs/benchmarks.md, section "syslog(2) emulation (seccomp agent)". Root only.
//!
//! Each case forks a child that makes the same call many times and times every call on its
//! own (`clock_gettime(CLOCK_MONOTONIC)` around it); the parent reports median / p90 / p99.
//! Native children run without a filter and only make calls that never change the host:
//! SIZE_BUFFER (10), SIZE_UNREAD (9) and READ_ALL (3), which is non-destructive. Emulated
//! children install the kmsgfs filter and are answered by a real [`Agent`] from a test ring of
//! [`RECORDS`] records, so READ_ALL also exercises the `/proc/<pid>/mem` write.
//!
//! * `emulated_calls_return_the_ring_answers` (CI): 100 calls per action, return values and
//!   bytes checked against [`syslog::compute`] on the same ring.
//! * `syslog_emulation_latency` (`#[ignore]`, measurement):
//!   `cargo test --release --test seccomp_latency -- --ignored --nocapture`
//!   (`KMSGFS_BENCH_CALLS` overrides the 20 000 calls per case).
//!
//! [`Agent`]: kmsgfs::frontends::seccomp::Agent

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::support::seccomp::*;
use kmsgfs::frontends::seccomp::oci::{recv_one_fd, send_fd};
use kmsgfs::frontends::seccomp::{caller, install_filter, send_listener, AgentOptions};
use kmsgfs::syslog::{self, action, printk_time, Call, Outcome, Policy};

/// Records in the test ring.
const RECORDS: usize = 100;
/// READ_ALL buffer.
const READ_BUF: usize = 16 * 1024;
/// Untimed calls before the timed ones (the first emulated call also waits for the agent to
/// adopt the listener).
const WARMUP: usize = 200;

/// What one measuring child reports.
struct Run {
    /// Return value of the first timed call (`-errno` on failure).
    first: i64,
    /// Timed calls whose return value differed from the first.
    mismatches: i64,
    /// Nanoseconds per call, in call order.
    ns: Vec<u64>,
    /// The buffer after the last call.
    buf: Vec<u8>,
}

/// A test ring of [`RECORDS`] records of about 100 bytes each.
fn bench_ring() -> std::sync::Arc<kmsgfs::ring::Ring> {
    let lines: Vec<String> = (0..RECORDS)
        .map(|i| format!("kmsgfs latency record {i:03} {}", "x".repeat(70)))
        .collect();
    ring_with(&lines)
}

/// A harness whose agent thread runs on `cpu` (it inherits this thread's affinity while it is
/// created; the affinity of this thread is restored afterwards).
fn harness_on(cpu: Option<usize>, sync_wakeup: bool) -> Harness {
    let ring = bench_ring();
    let options = AgentOptions {
        sync_wakeup,
        ..AgentOptions::default()
    };
    let Some(cpu) = cpu else {
        return Harness::with(ring, true, options);
    };
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut saved: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the size matches the set passed.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&saved), &mut saved) };
    assert_eq!(rc, 0, "sched_getaffinity failed");
    pin(cpu).expect("pin the test thread before starting the agent");
    let h = Harness::with(ring, true, options);
    // SAFETY: restores the set read above.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&saved), &saved) };
    assert_eq!(rc, 0, "sched_setaffinity (restore) failed");
    h
}

/// Pin the calling thread to `cpu`. Async-signal-safe.
fn pin(cpu: usize) -> Result<(), i32> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE for any machine this runs on.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: the size matches the set passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) } == 0 {
        Ok(())
    } else {
        Err(-1)
    }
}

/// Monotonic nanoseconds. Async-signal-safe.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `write` all of `bytes` to `fd`. Async-signal-safe.
fn write_all(fd: i32, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: writes from a live slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return false;
        }
        bytes = &bytes[n as usize..];
    }
    true
}

/// Fork a child (under the filter, answered by `h`'s agent, if `h` is given; pinned to `cpu`
/// if given) that makes `calls` timed calls of `syslog(act, buf, len)`, `len` = [`READ_BUF`]
/// for READ_ALL and 0 otherwise. `act` = -1 times an empty interval (the timer's own cost).
fn measure(h: Option<&Harness>, cpu: Option<usize>, act: i32, calls: usize) -> Run {
    // Everything the child touches is allocated here: the child is a fork of a multi-threaded
    // process and must not allocate.
    let mut ns = vec![0u64; calls];
    let mut buf = vec![0u8; READ_BUF];
    let len = if act == action::READ_ALL {
        READ_BUF as i32
    } else {
        0
    };
    let (parent, child_end) = UnixStream::pair().expect("socketpair");
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds are new and owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let (sock, wfd) = (child_end.as_raw_fd(), wr.as_raw_fd());
    let filtered = h.is_some();
    // SAFETY: the child makes only raw, async-signal-safe calls (sched_setaffinity, seccomp,
    // sendmsg, clock_gettime, syslog, write, _exit) on memory allocated before the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: see above.
        unsafe {
            if let Some(cpu) = cpu {
                if pin(cpu).is_err() {
                    libc::_exit(4)
                }
            }
            if filtered {
                let Ok(l) = install_filter() else {
                    libc::_exit(2)
                };
                if send_fd(BorrowedFd::borrow_raw(sock), b"L", l.as_fd()).is_err() {
                    libc::_exit(3)
                }
                drop(l);
            }
            let p = buf.as_mut_ptr() as u64;
            let call = |a: i32| {
                if a < 0 {
                    0
                } else {
                    raw_syslog(a, p, len)
                }
            };
            for _ in 0..WARMUP {
                call(act);
            }
            let (mut first, mut mismatches) = (0i64, 0i64);
            for (i, slot) in ns.iter_mut().enumerate() {
                let t0 = now_ns();
                let r = call(act);
                *slot = now_ns() - t0;
                if i == 0 {
                    first = r;
                } else if r != first {
                    mismatches += 1;
                }
            }
            let head = [first, mismatches];
            let ok = write_all(wfd, std::slice::from_raw_parts(head.as_ptr().cast(), 16))
                && write_all(
                    wfd,
                    std::slice::from_raw_parts(ns.as_ptr().cast(), ns.len() * 8),
                )
                && write_all(wfd, &buf);
            libc::_exit(if ok { 0 } else { 5 });
        }
    }
    drop(child_end);
    drop(wr);
    if let Some(h) = h {
        let listener = recv_one_fd(parent.as_fd()).expect("receive the listener from the child");
        send_listener(&h.socket(), pid as u32, listener.as_fd(), BTreeMap::new())
            .expect("hand the listener to the agent");
    }
    let mut rd = File::from(rd);
    let mut head = [0u8; 16];
    let mut raw = vec![0u8; calls * 8];
    let read = rd
        .read_exact(&mut head)
        .and_then(|()| rd.read_exact(&mut raw))
        .and_then(|()| rd.read_exact(&mut buf));
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if let Err(e) = read {
        panic!("the measuring child died (wait status {status:#x}): {e}");
    }
    for (i, slot) in ns.iter_mut().enumerate() {
        *slot = u64::from_ne_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap());
    }
    Run {
        first: i64::from_ne_bytes(head[..8].try_into().unwrap()),
        mismatches: i64::from_ne_bytes(head[8..].try_into().unwrap()),
        ns,
        buf,
    }
}

/// What the agent must answer for `act` on `h`'s ring: (return value, bytes).
fn expected(h: &Harness, act: i32) -> (i64, Vec<u8>) {
    let call = Call {
        action: act,
        buf_is_null: false,
        len: if act == action::READ_ALL {
            READ_BUF as i32
        } else {
            0
        },
    };
    let policy = Policy {
        privileged: true,
        restrict: true,
    };
    match syslog::compute(&h.ring, policy, call, printk_time()) {
        Outcome::Done { ret, data, .. } => (i64::from(ret), data),
        other => panic!("compute({act}) on the test ring gave {other:?}"),
    }
}

/// Assert that an emulated run returned the ring's answer on every call.
fn check_emulated(h: &Harness, act: i32, run: &Run) {
    let (ret, data) = expected(h, act);
    assert_eq!(
        run.first, ret,
        "emulated syslog({act}) returned the wrong value"
    );
    assert_eq!(
        run.mismatches, 0,
        "emulated syslog({act}) returned varying values"
    );
    if act == action::READ_ALL {
        assert!(
            ret > 0 && ret as usize <= READ_BUF,
            "READ_ALL returned {ret}"
        );
        assert_eq!(&run.buf[..ret as usize], &data[..], "READ_ALL bytes differ");
    }
}

/// The CI variant: 100 emulated calls per action, functional results only.
#[test]
fn emulated_calls_return_the_ring_answers() {
    if !require_root() {
        return;
    }
    let h = harness_on(None, true);
    for act in [action::SIZE_BUFFER, action::SIZE_UNREAD, action::READ_ALL] {
        let run = measure(Some(&h), None, act, 100);
        check_emulated(&h, act, &run);
    }
    assert_eq!(
        expected(&h, action::SIZE_BUFFER).0,
        RING_BYTES as i64,
        "SIZE_BUFFER is the test ring's size, not the host's"
    );
    // The agent counts a call after its SEND returns, which can be just after the caller
    // already saw the answer: give the counter a moment to catch up.
    let want = 3 * (100 + WARMUP) as u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while h.agent.stats().answered < want && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let answered = h.agent.stats().answered;
    assert!(
        answered >= want,
        "the agent answered {answered} calls, expected {want}"
    );
}

/// (median, p90, p99, mean) in microseconds.
fn stats(ns: &[u64]) -> (f64, f64, f64, f64) {
    let mut v = ns.to_vec();
    v.sort_unstable();
    let q = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)] as f64 / 1000.0;
    let mean = v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0;
    (q(0.5), q(0.9), q(0.99), mean)
}

/// The measurement for docs/benchmarks.md. Prints a Markdown table.
#[test]
#[ignore = "measurement; run with --release --ignored --nocapture as root"]
fn syslog_emulation_latency() {
    if !require_root() {
        return;
    }
    let calls: usize = std::env::var("KMSGFS_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let names = [
        (action::SIZE_BUFFER, "SIZE_BUFFER (10)"),
        (action::SIZE_UNREAD, "SIZE_UNREAD (9)"),
        (action::READ_ALL, "READ_ALL (3), 16 KiB"),
    ];
    // (placement label, agent cpu, caller cpu)
    let mut placements = vec![("unpinned", None, None), ("same CPU", Some(0), Some(0))];
    if cpus > 1 {
        placements.push(("cross CPU", Some(0), Some(1)));
    }
    let mut rows = Vec::new();
    let timer = measure(None, None, -1, calls);
    rows.push(("timer only (no call)".to_owned(), stats(&timer.ns), None));
    for (act, name) in names {
        let native = measure(None, None, act, calls);
        assert!(
            native.first >= 0,
            "native syslog({act}) failed: {}",
            native.first
        );
        let base = stats(&native.ns);
        rows.push((format!("{name}, native"), base, None));
        let pinned = measure(None, Some(0), act, calls);
        rows.push((format!("{name}, native, CPU 0"), stats(&pinned.ns), None));
        for (label, agent_cpu, caller_cpu) in &placements {
            for (sync, how) in [(true, "sync wake-up"), (false, "plain wake-up")] {
                let h = harness_on(*agent_cpu, sync);
                let run = measure(Some(&h), *caller_cpu, act, calls);
                check_emulated(&h, act, &run);
                let s = stats(&run.ns);
                rows.push((
                    format!("{name}, emulated, {label}, {how}"),
                    s,
                    Some(s.0 / base.0),
                ));
            }
        }
    }
    // Parts of the agent's work per call, timed in this process against this process's own
    // task: the credential read (`/proc/<tid>/status`, `uid_map`, `ns/user`) and `printk.time`.
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    let part = |f: &dyn Fn()| {
        let ns: Vec<u64> = (0..calls.min(5000))
            .map(|_| {
                let t0 = now_ns();
                f();
                now_ns() - t0
            })
            .collect();
        stats(&ns)
    };
    let creds = part(&|| {
        caller::read_creds(tid).expect("read_creds of this task");
    });
    rows.push(("agent part: `caller::read_creds`".to_owned(), creds, None));
    let time = part(&|| {
        std::hint::black_box(printk_time());
    });
    rows.push(("agent part: `printk_time()`".to_owned(), time, None));
    println!("\n{calls} timed calls per case after {WARMUP} untimed; µs per call\n");
    println!("| case | median | p90 | p99 | mean | median / native median |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, (p50, p90, p99, mean), ratio) in rows {
        let ratio = ratio.map_or_else(String::new, |r| format!("{r:.2}"));
        println!("| {name} | {p50:.2} | {p90:.2} | {p99:.2} | {mean:.2} | {ratio} |");
    }
}
