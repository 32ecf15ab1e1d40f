//! Real clients in real containers across a crash and across planned upgrades of the daemon
//! (issue "restart and upgrade"): three `kmsgfs run` containers run util-linux `dmesg -w`,
//! a standalone `systemd-journald` (`ReadKMsg=yes`, `Storage=volatile`, a private `/run`) and
//! a blocked `busybox klogd` (syslog(2) through the agent, logging to a busybox `syslogd`),
//! while a writer thread in each container's network namespace writes tagged records to the
//! real host `/dev/kmsg`, which the BPF attribution routes to that container's ring.
//!
//! * `kill -9` of the daemon, 2 s without one, a new daemon on the same holder: every client
//!   receives every tagged record exactly once (journald: `journalctl -k`), records written
//!   while no daemon ran included; no client was in D state for more than 1 s; no container
//!   was restarted; `dmesg -c` then works.
//! * Ten planned upgrades in a row to another binary under the same load: the same, and no
//!   failed system call in the clients (`dmesg -w` runs under strace; journald and klogd report
//!   their own read errors).
//!
//! Root only (FUSE, BPF, namespaces); every process, mount and the holder are cleaned up by
//! guards, also on failure.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::{
    descendants, proc_stat_field, require_root, require_tool, Daemon, Holder, Options,
};

const TIMEOUT: Duration = Duration::from_secs(30);
const WRITE_EVERY: Duration = Duration::from_millis(20);

/// A `kmsgfs run` container; on drop its whole process tree is killed.
struct Container {
    run: Child,
    name: &'static str,
}

impl Drop for Container {
    fn drop(&mut self) {
        for p in descendants(self.run.id()) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
        let _ = self.run.kill();
        let _ = self.run.wait();
    }
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

impl Container {
    /// `kmsgfs run -- sh -c script` in a private mount namespace prepared by `setup` (run as
    /// host root: `kmsgfs run` drops CAP_SYS_ADMIN, so the container cannot mount itself).
    fn start(d: &Daemon, name: &'static str, setup: &str, script: &str) -> Container {
        let run = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!("{setup} && exec \"$@\""))
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_kmsgfs"))
            .arg("run")
            .arg("--mount")
            .arg(d.dir())
            .args(["--", "sh", "-c", script])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn unshare + kmsgfs run");
        Container { run, name }
    }

    /// The host pid of the one descendant whose comm is `want`, once it exists.
    fn client(&self, want: &str) -> u32 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(p) = descendants(self.run.id())
                .into_iter()
                .find(|&p| comm(p) == want)
            {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "container {}: no `{want}` process",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn running(&mut self) -> bool {
        self.run.try_wait().ok().flatten().is_none()
    }
}

/// Writes `<6>{tag} {i}` for i = 0, 1, … to the host `/dev/kmsg` from the network namespace of
/// `pid` (a fresh open per record, as `echo > /dev/kmsg`: the host's per-open ratelimit never
/// applies), until stopped. Returns how many it wrote.
fn writer(pid: u32, tag: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        support::enter_netns_of(pid);
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let mut f = OpenOptions::new()
                .write(true)
                .open("/dev/kmsg")
                .expect("open /dev/kmsg");
            f.write_all(format!("<6>{tag} {i}\n").as_bytes())
                .expect("write /dev/kmsg");
            i += 1;
            std::thread::sleep(WRITE_EVERY);
        }
        i
    })
}

/// Samples the scheduler state of `pids` every 20 ms until stopped; the longest time any of
/// them was seen in D state without a break.
fn d_state_watch(pids: Vec<u32>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        let mut since: BTreeMap<u32, Instant> = BTreeMap::new();
        let mut worst = Duration::ZERO;
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            for &p in &pids {
                if proc_stat_field(p, 3).as_deref() == Some("D") {
                    let s = *since.entry(p).or_insert(now);
                    worst = worst.max(now - s);
                } else {
                    since.remove(&p);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        worst
    })
}

/// How often each index of `tag` occurs in `text`'s lines (a line counts if it ends with
/// `{tag} {i}`).
fn counts(text: &str, tag: &str) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        if let Some(i) = line
            .trim_end()
            .rsplit_once(&format!("{tag} "))
            .and_then(|(_, i)| i.parse::<u64>().ok())
        {
            *m.entry(i).or_default() += 1;
        }
    }
    m
}

/// What is wrong with `got` for `n` records written (missing and repeated indices).
fn exactly_once(got: &BTreeMap<u64, usize>, n: u64) -> Option<String> {
    let missing: Vec<u64> = (0..n).filter(|i| !got.contains_key(i)).collect();
    let twice: Vec<(u64, usize)> = got
        .iter()
        .filter(|(_, &c)| c != 1)
        .map(|(&i, &c)| (i, c))
        .collect();
    let extra: Vec<u64> = got.keys().filter(|&&i| i >= n).copied().collect();
    (!missing.is_empty() || !twice.is_empty() || !extra.is_empty())
        .then(|| format!("missing {missing:?}, more than once {twice:?}, never written {extra:?}"))
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default()
}

/// The scratch directory shared with the containers (they see the host's file system).
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("kmsgfs-{what}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The three containers and their clients.
struct Clients {
    containers: Vec<Container>,
    /// (container, client pid, tag)
    pids: Vec<(usize, u32, String)>,
}

fn start_clients(d: &Daemon, s: &Scratch, tag: &str) -> Clients {
    let dir = s.0.display();
    let stop = s.file("stop").display().to_string();
    // A: util-linux dmesg -w under strace, then dmesg -c and dmesg once stopped.
    let a = Container::start(
        d,
        "dmesg",
        "true",
        &format!(
            "strace -f -qq -e trace=openat,read,fcntl -o {dir}/a.strace dmesg -w > {dir}/a.out 2>&1 & W=$!; \
             while [ ! -e {stop} ]; do sleep 0.1; done; kill -9 $W $(pidof dmesg); wait $W; \
             dmesg -c > {dir}/a.c1 2>&1; echo rc=$? >> {dir}/a.c1; dmesg > {dir}/a.c2 2>&1; \
             touch {dir}/a.done"
        ),
    );
    // B: journald with a private /run; its journal is read with journalctl once stopped.
    let b = Container::start(
        d,
        "journald",
        "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journald.conf.d && \
         printf '[Journal]\\nStorage=volatile\\nReadKMsg=yes\\nRateLimitBurst=0\\n' \
           > /run/systemd/journald.conf.d/test.conf",
        &format!(
            "(/lib/systemd/systemd-journald > {dir}/b.err 2>&1 &) ; \
             while [ ! -e {stop} ]; do sleep 0.1; done; sleep 1; \
             journalctl -D /run/log/journal -k -o cat --no-pager > {dir}/b.out 2>&1; \
             journalctl -D /run/log/journal -t systemd-journald -o cat --no-pager > {dir}/b.self 2>&1; \
             touch {dir}/b.done"
        ),
    );
    // C: busybox klogd, blocked in syslog(2) READ, logging through busybox syslogd.
    fs::create_dir_all(s.file("dev")).unwrap();
    let c = Container::start(
        d,
        "klogd",
        &format!(
            "mount -t tmpfs tmpfs {dir}/dev && \
             for n in null zero full random urandom tty kmsg; do \
               touch {dir}/dev/$n && mount --bind /dev/$n {dir}/dev/$n || exit 1; done && \
             mount --bind {dir}/dev /dev"
        ),
        &format!(
            "busybox syslogd -n -O {dir}/c.out & sleep 0.5; \
             busybox klogd -n 2> {dir}/c.err & K=$!; \
             while [ ! -e {stop} ]; do sleep 0.1; done; sleep 1; kill $K; touch {dir}/c.done"
        ),
    );
    let pa = a.client("dmesg");
    let pb = b.client("systemd-journal");
    let pc = c.client("busybox");
    // klogd is the busybox process that is not syslogd: the one blocked in syslog(2) (103).
    let deadline = Instant::now() + TIMEOUT;
    let pc = loop {
        let k = descendants(c.run.id()).into_iter().find(|&p| {
            comm(p) == "busybox"
                && read(Path::new(&format!("/proc/{p}/syscall"))).starts_with("103 ")
        });
        if let Some(k) = k {
            break k;
        }
        assert!(
            Instant::now() < deadline,
            "klogd did not block in syslog(2) (pid {pc})"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Clients {
        containers: vec![a, b, c],
        pids: vec![
            (0, pa, format!("{tag}-a")),
            (1, pb, format!("{tag}-b")),
            (2, pc, format!("{tag}-c")),
        ],
    }
}

/// Run the load, call `disrupt` in the middle, and check every client's records.
fn exercise(name: &str, disrupt: &mut dyn FnMut(&mut Daemon, &dyn Fn() -> Options), upgrade: bool) {
    let s = Scratch::new(name);
    let holder = Holder::start(&s.0);
    let sock = holder.socket.display().to_string();
    let opts = || {
        let mut o = Options::args(&["--holder-socket", &sock]);
        o.source = Some(PathBuf::from("/dev/kmsg"));
        o
    };
    let mut d = Daemon::start_with(opts());
    let tag = format!("kmsgfs-rc-{}-{name}", std::process::id());
    let mut clients = start_clients(&d, &s, &tag);
    // Let every client reach its steady state (journald's first flush, klogd parked).
    std::thread::sleep(Duration::from_millis(1500));

    let stop_writing = Arc::new(AtomicBool::new(false));
    let stop_watching = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = clients
        .pids
        .iter()
        .map(|(_, pid, tag)| writer(*pid, tag.clone(), Arc::clone(&stop_writing)))
        .collect();
    let watch = d_state_watch(
        clients.pids.iter().map(|(_, p, _)| *p).collect(),
        Arc::clone(&stop_watching),
    );
    std::thread::sleep(Duration::from_secs(1));
    disrupt(&mut d, &opts);
    std::thread::sleep(Duration::from_secs(1));
    stop_writing.store(true, Ordering::SeqCst);
    let written: Vec<u64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    eprintln!("{name}: records written per container: {written:?}");
    assert!(
        written.iter().all(|&n| n >= 50),
        "the writers barely ran: {written:?}"
    );

    // dmesg -w and klogd: wait until each has every record (or the timeout shows what not).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let a = counts(&read(&s.file("a.out")), &clients.pids[0].2);
        let c = counts(&read(&s.file("c.out")), &clients.pids[2].2);
        if (a.len() as u64 >= written[0] && c.len() as u64 >= written[2])
            || Instant::now() >= deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_watching.store(true, Ordering::SeqCst);
    let worst_d = watch.join().unwrap();
    for (i, c) in clients.containers.iter_mut().enumerate() {
        assert!(
            c.running(),
            "container {} ({i}) was restarted or died",
            c.name
        );
    }
    for (_, pid, _) in &clients.pids {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "client {pid} ({}) is gone",
            comm(*pid)
        );
    }
    fs::write(s.file("stop"), b"").unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while !["a.done", "b.done", "c.done"]
        .iter()
        .all(|f| s.file(f).exists())
    {
        assert!(Instant::now() < deadline, "the containers did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }

    let log = d.log_text();
    let mut failures = Vec::new();
    for (k, (file, what)) in [
        ("a.out", "dmesg -w"),
        ("b.out", "journalctl -k"),
        ("c.out", "klogd"),
    ]
    .iter()
    .enumerate()
    {
        let got = counts(&read(&s.file(file)), &clients.pids[k].2);
        if let Some(why) = exactly_once(&got, written[k]) {
            failures.push(format!("{what}: {} written; {why}", written[k]));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n--- a.out tail:\n{}\n--- b.out:\n{}\n--- b.err:\n{}\n--- c.err:\n{}\n--- daemon:\n{log}",
        failures.join("\n"),
        read(&s.file("a.out")).lines().rev().take(5).collect::<Vec<_>>().join("\n"),
        read(&s.file("b.out")).lines().rev().take(5).collect::<Vec<_>>().join("\n"),
        read(&s.file("b.err")),
        read(&s.file("c.err")),
    );
    assert!(
        worst_d <= Duration::from_secs(1),
        "a client was in D state for {worst_d:?}"
    );

    // dmesg -c: prints the container's records and clears its ring.
    let c1 = read(&s.file("a.c1"));
    let c2 = read(&s.file("a.c2"));
    assert!(c1.contains("rc=0"), "dmesg -c failed: {c1}");
    assert!(
        counts(&c1, &clients.pids[0].2).len() as u64 >= written[0].min(10),
        "dmesg -c printed no records of the container: {c1}"
    );
    assert!(
        counts(&c2, &clients.pids[0].2).is_empty(),
        "dmesg after dmesg -c still shows the cleared records: {c2}"
    );

    // Failed calls: dmesg's reads of /dev/kmsg (only EAGAIN of its first, non-blocking pass),
    // journald's and klogd's own complaints.
    let strace = read(&s.file("a.strace"));
    let kmsg_fd = strace
        .lines()
        .find(|l| l.contains("\"/dev/kmsg\""))
        .and_then(|l| l.rsplit(" = ").next())
        .and_then(|fd| fd.trim().parse::<i32>().ok())
        .expect("dmesg opened /dev/kmsg");
    let bad: Vec<&str> = strace
        .lines()
        .filter(|l| l.contains(&format!("read({kmsg_fd},")))
        .filter(|l| l.contains(" = -1 ") && !l.contains("EAGAIN") || l.contains("= ?"))
        .filter(|l| !l.contains("+++") && !l.contains("killed by"))
        .collect();
    // The read that `kill` ends at the stop is interrupted (`= ?`); anything else is a fault.
    let bad: Vec<&&str> = bad.iter().filter(|l| !l.contains("<unfinished")).collect();
    if upgrade {
        assert!(
            bad.len() <= 1,
            "dmesg -w saw failed reads of /dev/kmsg:\n{}",
            bad.iter().map(|l| **l).collect::<Vec<_>>().join("\n")
        );
    }
    let jself = read(&s.file("b.self"));
    assert!(
        !jself.to_lowercase().contains("kmsg"),
        "journald complained about /dev/kmsg:\n{jself}"
    );
    let kerr = read(&s.file("c.err"));
    assert!(kerr.trim().is_empty(), "klogd complained: {kerr}");
    drop(clients);
    drop(d);
    drop(holder);
}

fn require_all() -> bool {
    require_root()
        && require_tool("dmesg")
        && require_tool("strace")
        && require_tool("busybox")
        && require_tool("journalctl")
        && support::require_path(
            Path::new("/lib/systemd/systemd-journald"),
            "apt-get install systemd",
        )
}

#[test]
fn clients_in_three_containers_get_every_record_once_across_kill_9() {
    if !require_all() {
        return;
    }
    let downtime = Mutex::new(None);
    exercise(
        "kill9",
        &mut |d: &mut Daemon, opts: &dyn Fn() -> Options| {
            d.kill9();
            std::thread::sleep(Duration::from_secs(2));
            let t = Instant::now();
            d.restart(opts());
            *downtime.lock().unwrap() = Some(t.elapsed());
            let log = d.log_text();
            assert!(
                log.contains("serving the FUSE connection of the previous daemon again"),
                "the new daemon did not adopt the connection:\n{log}"
            );
        },
        false,
    );
    eprintln!("restart to ready: {:?}", downtime.lock().unwrap());
}

#[test]
fn clients_in_three_containers_see_no_failure_across_ten_upgrades() {
    if !require_all() {
        return;
    }
    // A second binary stands for the new version.
    let s = Scratch::new("upgrade-bin");
    let bin = s.file("kmsgfs-next");
    fs::copy(env!("CARGO_BIN_EXE_kmsgfs"), &bin).unwrap();
    exercise(
        "upgrade",
        &mut |d: &mut Daemon, opts: &dyn Fn() -> Options| {
            for _ in 0..10 {
                let st = d.upgrade(&bin, opts());
                assert!(st.success(), "the old daemon exited with {st}");
                std::thread::sleep(Duration::from_millis(300));
            }
            let log = d.log_text();
            assert_eq!(
                log.matches("handed over in").count(),
                10,
                "not every upgrade was a hand-over:\n{log}"
            );
        },
        true,
    );
}
