//! A hostile container against the kmsg file (docs/security.md §7, threats T1, T2, T8): page
//! cache reads across rings, D-state wedges through readahead and mmap, and log floods through
//! requests fuser answers by default. The attacker is a small C program
//! (`tests/hostile/pagecache.c`) run as root of its own network namespace (`unshare -n`),
//! which is a container under the default `--key net`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn tools() -> bool {
    require_root() && require_tool("unshare") && require_tool("cc") && require_tool("busybox")
}

/// Build the attacker into the daemon's scratch directory.
fn attacker(d: &Daemon) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/pagecache.c");
    let bin = d.scratch().join("pagecache");
    let o = Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run cc");
    assert!(
        o.status.success(),
        "cc {}: {}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    bin
}

/// Run `argv` in a new network namespace (a container's ring) and wait for it.
fn in_netns(argv: &[&str]) -> std::process::Output {
    let mut c = Command::new("unshare");
    c.arg("-n").args(argv);
    output_within(c, Duration::from_secs(30))
}

/// `cmd` with stdin closed and its output captured, waited for up to `limit`.
fn output_within(mut cmd: Command, limit: Duration) -> std::process::Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    wait_bounded(child, limit)
}

/// Wait for `child`, failing (and killing it) if it takes longer than `limit`.
fn wait_bounded(mut child: Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let state = proc_stat_field(child.id(), 3).unwrap_or_default();
            let _ = child.kill();
            panic!(
                "pid {} still running after {limit:?} (state {state})",
                child.id()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().expect("wait_with_output")
}

/// `stat` and `open` of `path` by a fresh process, which must finish within 1 s and never sit
/// in D state for longer. Returns how long it took.
fn stat_and_open_promptly(path: &Path, who: &str) -> Duration {
    let script = format!(
        "stat -c %s {p} >/dev/null && exec 3<{p} && echo opened",
        p = path.display()
    );
    let start = Instant::now();
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let deadline = start + Duration::from_secs(1);
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            let o = child.wait_with_output().expect("output");
            assert!(
                st.success() && String::from_utf8_lossy(&o.stdout).contains("opened"),
                "{who}: stat/open of {} failed: {}",
                path.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            return start.elapsed();
        }
        if Instant::now() > deadline {
            let state = proc_stat_field(child.id(), 3).unwrap_or_default();
            let wchan =
                std::fs::read_to_string(format!("/proc/{}/wchan", child.id())).unwrap_or_default();
            // A process in D state cannot be killed; the daemon's Drop aborts the connection,
            // which releases it.
            let _ = child.kill();
            panic!(
                "{who}: stat/open of {} blocked for more than 1 s (state {state}, wchan {wchan})",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The victim container (a new network namespace) writes `secret` into its ring, then it and
/// host root pull their rings through every page-cache path (sendfile as busybox `cat` does,
/// splice, mmap) `rounds` times each, in the background.
fn page_cache_load(bin: &Path, k: &str, secret: &str, rounds: u32) -> (Child, Child) {
    let b = bin.display();
    let pull = format!(
        "i=0; while [ $i -lt {rounds} ]; do {b} steal {k} 1 >/dev/null 2>&1; \
         {b} sendfile {k} >/dev/null 2>&1; i=$((i+1)); done"
    );
    let spawn = |mut c: Command, what: &str| {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"))
    };
    let mut victim = Command::new("unshare");
    victim
        .args(["-n", "sh", "-c"])
        .arg(format!("echo '<6>{secret}' > {k}; {pull}"));
    let mut host = Command::new("sh");
    host.arg("-c").arg(&pull);
    (spawn(victim, "victim"), spawn(host, "host reader"))
}

#[test]
fn t1_page_cache_never_carries_another_rings_records() {
    if !tools() {
        return;
    }
    let d = Daemon::start_args(&["--no-bpf"]);
    let bin = attacker(&d);
    let host_secret = format!("HOSTSECRET-{}", std::process::id());
    let victim_secret = format!("VICTIMSECRET-{}", std::process::id());
    for i in 0..20 {
        d.feed(6, &format!("{host_secret} {i}"));
    }
    d.wait_host_records(20);
    let kmsg = d.kmsg();
    let k = kmsg.display().to_string();
    // The victim container writes its secret and pulls its ring through every page-cache path
    // (sendfile as busybox cat does, splice, mmap) in a loop, while host root does the same.
    let (victim, host) = page_cache_load(&bin, &k, &victim_secret, 150);
    let attack = in_netns(&[bin.to_str().unwrap(), "steal", &k, "400"]);
    let victim = wait_bounded(victim, Duration::from_secs(60));
    let host = wait_bounded(host, Duration::from_secs(60));
    assert!(victim.status.success() && host.status.success());
    let got = String::from_utf8_lossy(&attack.stdout);
    let status = String::from_utf8_lossy(&attack.stderr);
    eprintln!("attacker: {status}");
    assert!(attack.status.success(), "attacker failed: {status}");
    assert!(
        !got.contains(&victim_secret),
        "the attacker read another container's record through the page cache"
    );
    assert!(
        !got.contains(&host_secret),
        "the attacker read the host's record through the page cache"
    );
    // Every page-cache path is refused, as sendfile and splice are on the device; the mmap
    // fault gets SIGBUS instead of data.
    for round in status.lines().filter(|l| l.starts_with("round")) {
        assert!(
            round.contains("sendfile=-1(Invalid argument)")
                && round.contains("splice=-1(Invalid argument)")
                && round.contains("mmap=SIGBUS"),
            "a page-cache path was not refused: {round}"
        );
    }
    assert!(status.lines().filter(|l| l.starts_with("round")).count() == 2);
}

#[test]
fn t1_busybox_cat_prints_the_ring_and_follows_like_the_device() {
    if !tools() {
        return;
    }
    let d = Daemon::start_args(&["--no-bpf"]);
    d.feed(6, "cat-first");
    d.feed(6, "cat-second");
    d.wait_host_records(2);
    let out = d.scratch().join("cat.out");
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec busybox cat {} > {}",
            d.kmsg().display(),
            out.display()
        ))
        .spawn()
        .expect("spawn busybox cat");
    let deadline = Instant::now() + TIMEOUT;
    let seen = |needle: &str| {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains(needle)
    };
    while !seen("cat-second") {
        assert!(
            Instant::now() < deadline,
            "busybox cat printed {:?}",
            std::fs::read_to_string(&out).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Still running: it follows, and prints a record appended now.
    d.feed(6, "cat-third");
    while !seen("cat-third") {
        assert!(Instant::now() < deadline, "busybox cat did not follow");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        texts(&text),
        vec!["cat-first", "cat-second", "cat-third"],
        "whole records, in order, once each"
    );
}

/// `echo … > /dev/kmsg` opens with O_TRUNC. With FUSE's atomic O_TRUNC the kernel then sets the
/// one shared inode's cached size to 0 itself, and until the next GETATTR every other opener's
/// sendfile or splice sees end of file (returns 0): busybox `cat` in another container prints
/// nothing and exits. The size must stay what the daemon reports.
#[test]
fn t1_a_writer_with_o_trunc_cannot_make_other_readers_see_end_of_file() {
    if !tools() {
        return;
    }
    let d = Daemon::start_args(&["--no-bpf"]);
    let k = d.kmsg().display().to_string();
    let mut pipe = [0i32; 2];
    // SAFETY: `pipe` is a valid two-element array the call fills.
    let made = unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_NONBLOCK) };
    assert_eq!(made, 0, "pipe2");
    for i in 0..5 {
        // The reader opens first, as a following busybox `cat` has; then another container
        // opens with `>`, writing a record and writing nothing.
        let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
        let w = Command::new("unshare")
            .args(["-n", "sh", "-c"])
            .arg(format!(": > {k}; echo '<6>trunc-{i}' > {k}; : > {k}"))
            .output()
            .expect("unshare");
        assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
        // SAFETY: both fds are open; a null offset uses and moves the file position.
        let n = unsafe { libc::sendfile(pipe[1], fd, std::ptr::null_mut(), 65536) };
        let errno = std::io::Error::last_os_error().raw_os_error();
        close_raw(fd);
        assert!(
            n == -1 && errno == Some(libc::EINVAL),
            "round {i}: after another opener's O_TRUNC write, sendfile returned {n} ({errno:?}); \
             0 would be end of file, and busybox cat would print nothing"
        );
    }
    close_raw(pipe[0]);
    close_raw(pipe[1]);
}

#[test]
fn t2_readahead_and_fadvise_leave_nobody_waiting() {
    if !tools() {
        return;
    }
    let d = Daemon::start_args(&["--no-bpf"]);
    let bin = attacker(&d);
    let k = d.kmsg().display().to_string();
    for mode in ["wedge", "wedge-far"] {
        // The attacker raises the cached size, asks for readahead of page 0 and exits.
        let o = in_netns(&[bin.to_str().unwrap(), mode, &k]);
        assert!(
            o.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Host root, another container and the attacker's successor all stat and open at once.
        stat_and_open_promptly(&d.kmsg(), &format!("host root after {mode}"));
        let other = Command::new("unshare")
            .args(["-n", "sh", "-c"])
            .arg(format!(
                "stat -c %s {k} >/dev/null && exec 3<{k} && echo opened"
            ))
            .output()
            .expect("unshare");
        assert!(
            String::from_utf8_lossy(&other.stdout).contains("opened"),
            "another container after {mode}: {}",
            String::from_utf8_lossy(&other.stderr)
        );
    }
    // The daemon is still serving reads.
    d.feed(6, "still-serving");
    d.wait_host_records(1);
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    let recs = drain(fd);
    close_raw(fd);
    assert!(recs.iter().any(|r| text_of(r) == "still-serving"));
}

#[test]
fn t2_a_mapped_page_fault_is_answered_at_once() {
    if !tools() {
        return;
    }
    let d = Daemon::start_args(&["--no-bpf"]);
    let bin = attacker(&d);
    let k = d.kmsg().display().to_string();
    // An empty ring: before, the fault's READ was parked and held the page lock until a record
    // arrived. Now it fails at once with SIGBUS.
    let start = Instant::now();
    let o = in_netns(&[bin.to_str().unwrap(), "steal", &k, "5"]);
    let status = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{status}");
    assert!(status.contains("mmap=SIGBUS"), "{status}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "five rounds took {:?}",
        start.elapsed()
    );
    stat_and_open_promptly(&d.kmsg(), "host root after mmap faults");
}

/// Run `argv` as root of a `kmsgfs run` container (its `/dev/kmsg` is the daemon's `kmsg`),
/// with `--unshare LIST` if given, and wait for it.
fn in_run(d: &Daemon, unshare: Option<&str>, argv: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kmsgfs"));
    c.arg("run").arg("--mount").arg(d.dir());
    if let Some(list) = unshare {
        c.arg("--unshare").arg(list);
    }
    c.arg("--").args(argv);
    output_within(c, Duration::from_secs(60))
}

/// T1 and T2 as the issue states them: the attacker is root of a `kmsgfs run` container, with
/// and without a user namespace, using its own `/dev/kmsg`, while a victim container and host
/// root pull their rings through every page-cache path. It gets no byte of theirs, and after
/// its readahead wedges host root's `stat` and `open` return at once.
#[test]
fn t1_t2_attacker_inside_kmsgfs_run_with_and_without_a_user_namespace() {
    if !tools() {
        return;
    }
    let d = Daemon::start_args(&["--no-bpf"]);
    let bin = attacker(&d);
    let b = bin.to_str().unwrap();
    let host_secret = format!("HOSTSECRET-RUN-{}", std::process::id());
    let victim_secret = format!("VICTIMSECRET-RUN-{}", std::process::id());
    for i in 0..20 {
        d.feed(6, &format!("{host_secret} {i}"));
    }
    d.wait_host_records(20);
    let k = d.kmsg().display().to_string();
    for unshare in [None, Some("user,net,pid")] {
        let (victim, host) = page_cache_load(&bin, &k, &victim_secret, 100);
        let attack = in_run(&d, unshare, &[b, "steal", "/dev/kmsg", "200"]);
        let victim = wait_bounded(victim, Duration::from_secs(60));
        let host = wait_bounded(host, Duration::from_secs(60));
        assert!(victim.status.success() && host.status.success());
        let got = String::from_utf8_lossy(&attack.stdout);
        let status = String::from_utf8_lossy(&attack.stderr);
        assert!(
            attack.status.success(),
            "--unshare {unshare:?}: attacker failed: {status}"
        );
        assert!(
            !got.contains(&victim_secret) && !got.contains(&host_secret),
            "--unshare {unshare:?}: the attacker read another ring through the page cache"
        );
        let rounds: Vec<&str> = status.lines().filter(|l| l.starts_with("round")).collect();
        assert!(
            !rounds.is_empty(),
            "--unshare {unshare:?}: no rounds: {status}"
        );
        for round in rounds {
            assert!(
                round.contains("sendfile=-1(Invalid argument)")
                    && round.contains("splice=-1(Invalid argument)")
                    && round.contains("mmap=SIGBUS"),
                "--unshare {unshare:?}: a page-cache path was not refused: {round}"
            );
        }
        for mode in ["wedge", "wedge-far"] {
            let o = in_run(&d, unshare, &[b, mode, "/dev/kmsg"]);
            assert!(
                o.status.success(),
                "--unshare {unshare:?} {mode}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            stat_and_open_promptly(
                &d.kmsg(),
                &format!("host root after {mode} in kmsgfs run --unshare {unshare:?}"),
            );
        }
    }
}

#[test]
fn t8_requests_a_client_sends_do_not_flood_the_log() {
    if !tools() {
        return;
    }
    let d = Daemon::start_args(&["--no-bpf"]);
    let bin = attacker(&d);
    let k = d.kmsg().display().to_string();
    let before = d.log_text().len();
    // 3 000 rounds of 13 requests each, from a container.
    let o = in_netns(&[bin.to_str().unwrap(), "noise", &k, "3000"]);
    let status = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{status}");
    // isatty() says no, as on the device (ENOTTY).
    assert!(status.contains("isatty=0 after 3000 rounds"), "{status}");
    std::thread::sleep(Duration::from_millis(200));
    let log = d.log_text();
    let added = &log[before..];
    assert!(
        added.len() < 8 * 1024,
        "39 000 client requests added {} bytes of log:\n{}",
        added.len(),
        &added[..added.len().min(2000)]
    );
    assert!(!added.contains("Not Implemented"), "{added}");
}

/// Resident set size of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn ring_count(d: &Daemon) -> usize {
    d.stats()["rings"].as_array().map_or(0, Vec::len)
}

#[test]
fn t7_one_unprivileged_uid_cannot_make_the_daemon_hold_unbounded_rings() {
    if !(tools() && require_tool("setpriv")) {
        return;
    }
    let d = Daemon::start_args(&["--no-bpf", "--max-rings-per-uid", "20"]);
    let k = d.kmsg().display().to_string();
    // uid 65534 makes 40 throwaway user+network namespaces and holds its ring open in each.
    let mut holders = Vec::new();
    for _ in 0..40 {
        let c = Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .args(["unshare", "-U", "-r", "-n", "sh", "-c"])
            .arg(format!(
                "if msg=$( {{ true 3<{k}; }} 2>&1 ); then echo opened; exec sleep 600 3<{k}; \
                 else echo \"refused $msg\"; fi"
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn setpriv unshare");
        holders.push(c);
    }
    let mut opened = 0;
    let mut refused = 0;
    let mut errors = String::new();
    for c in &mut holders {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(c.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        match line.trim() {
            "opened" => opened += 1,
            l if l.starts_with("refused") => {
                refused += 1;
                errors.push_str(l);
            }
            other => panic!("holder said {other:?}"),
        }
    }
    for c in &mut holders {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert_eq!(opened, 20, "the uid's share of rings");
    assert_eq!(refused, 20, "the rest are refused");
    assert!(
        errors.contains("No space left on device"),
        "a refused opener sees ENOSPC: {errors}"
    );
    // Host root is not bound by the per-uid limit and still gets its ring.
    stat_and_open_promptly(&d.kmsg(), "host root");
    assert!(ring_count(&d) <= 21, "{} rings", ring_count(&d));
    assert!(
        d.log_text().matches("no new ring").count() <= 10,
        "refusals are logged within a budget"
    );
}

#[test]
fn t7_memory_returns_after_2000_namespaces_come_and_go() {
    if !tools() {
        return;
    }
    let d = Daemon::start_args(&["--no-bpf", "--reclaim-interval", "1"]);
    let pid = d.pid().unwrap();
    let k = d.kmsg().display().to_string();
    let churn = |n: u32| {
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "i=0; while [ $i -lt {n} ]; do unshare -n sh -c \
                 'echo \"<6>churn $i\" > {k} && dd if={k} iflag=nonblock bs=8192 count=1 \
                 status=none >/dev/null' || exit 1; i=$((i+1)); done"
            ))
            .status()
            .expect("churn");
        assert!(st.success());
    };
    // "Where it started" is a daemon that has served: a few namespaces first, so that one-time
    // allocations (the first thread stacks, allocator arenas, /proc read buffers) are part of
    // the baseline and only what the churn holds on to is measured.
    churn(50);
    let deadline = Instant::now() + TIMEOUT;
    while ring_count(&d) > 1 {
        assert!(Instant::now() < deadline, "warm-up rings not reclaimed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let start = rss_kib(pid);
    churn(2000);
    let peak = rss_kib(pid);
    // Every ring is reclaimed once its namespace is gone, and its memory goes back.
    let deadline = Instant::now() + TIMEOUT;
    while ring_count(&d) > 1 || rss_kib(pid) * 10 > start * 12 {
        assert!(
            Instant::now() < deadline,
            "after 2000 namespaces: {} rings, RSS {} KiB (start {start} KiB, peak {peak} KiB)",
            ring_count(&d),
            rss_kib(pid)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "RSS start {start} KiB, peak {peak} KiB, end {} KiB",
        rss_kib(pid)
    );
}

/// T7, open files: a container that opens its kmsg file without end takes at most 4096 slots
/// of the open-file table (EMFILE beyond, for its ring only), and the table as a whole is
/// bounded by `--max-open-files` (ENFILE beyond); a closed file frees its slot.
#[test]
fn t7_open_files_are_bounded_per_ring_and_in_all() {
    if !require_root() {
        return;
    }
    // Enough fds for this process to reach the per-ring bound.
    let lim = libc::rlimit {
        rlim_cur: 8192,
        rlim_max: 8192,
    };
    // SAFETY: setrlimit reads a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let d = Daemon::start();
    let flags = libc::O_RDONLY | libc::O_NONBLOCK;
    let mut fds: Vec<i32> = (0..4096)
        .map(|i| open_raw(&d.kmsg(), flags).unwrap_or_else(|e| panic!("open {i}: errno {e}")))
        .collect();
    assert_eq!(
        open_raw(&d.kmsg(), flags),
        Err(libc::EMFILE),
        "open 4097 of one ring"
    );
    close_raw(fds.pop().unwrap());
    fds.push(open_raw(&d.kmsg(), flags).expect("a closed file frees its slot"));
    for fd in fds {
        close_raw(fd);
    }
    drop(d);

    let d = Daemon::start_args(&["--max-open-files", "3"]);
    let fds: Vec<i32> = (0..3)
        .map(|_| open_raw(&d.kmsg(), flags).unwrap())
        .collect();
    assert_eq!(
        open_raw(&d.kmsg(), flags),
        Err(libc::ENFILE),
        "a full table"
    );
    for fd in fds {
        close_raw(fd);
    }
    assert!(open_raw(&d.kmsg(), flags).map(close_raw).is_ok());
}
