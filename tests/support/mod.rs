//! Shared harness for the root-only integration tests.
//!
//! [`Daemon`] starts the built `kmsgfs serve` binary on a fresh temporary mount directory, with
//! `--source` pointing at a FIFO the test owns. Host-ring content is therefore deterministic
//! (the test feeds records with [`Daemon::feed`] / [`Daemon::feed_raw`]) and tests never read or
//! flood the real host log. The guard kills the daemon and lazily unmounts (`umount2(MNT_DETACH)`)
//! when it goes out of scope, including on panic.
//!
//! Every mount of one test run lives under [`run_root`] (keyed by the parent process id: cargo,
//! or the shell loop of `.ci/test.sh` that runs the suites one after another), so that the
//! last suite can assert that none is left in `/proc/self/mountinfo` ([`leftover_mounts`]).
//!
//! The submodules hold what only some suites need: [`bpf`] (network namespaces, netfilter pairs,
//! a follower of the host log), [`seccomp`] (the agent harness, OCI runtimes, Podman, hostile
//! callers) and [`memcg`] (memory cgroups for real OOM kills).
//!
//! Call [`require_root`] first in every test: it fails with a clear message unless the test runs
//! as root, or returns `false` (skip) when `KMSGFS_ALLOW_SKIP=1`.
//!
//! Usage:
//!
//! ```ignore
//! use crate::support;
//! #[test]
//! fn a3_7_one_record_per_read() {
//!     if !support::require_root() { return; }
//!     let d = support::Daemon::start();
//!     d.feed(6, "hello");
//!     d.wait_host_records(1);
//!     let mut f = std::fs::File::open(d.kmsg()).unwrap();
//!     // ...
//! }
//! ```
#![allow(dead_code)]

pub mod bpf;
pub mod memcg;
pub mod seccomp;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Generous functional timeout for the daemon to become ready or for a record to arrive.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// `true` if `ok`. Otherwise the test fails with a message naming `what`, unless a human set
/// `KMSGFS_ALLOW_SKIP=1`: then it prints a SKIP line and returns `false`, and the caller returns
/// early. Every "this test needs X" check of the suites goes through here.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var("KMSGFS_ALLOW_SKIP").as_deref() == Ok("1") {
        eprintln!("SKIP: this test needs {what} (KMSGFS_ALLOW_SKIP=1)");
        return false;
    }
    panic!("this test needs {what}; set KMSGFS_ALLOW_SKIP=1 to skip it");
}

/// Give SIGINT, SIGQUIT, SIGHUP and SIGTERM their default action in this test process, once.
/// A shell starts a background job with SIGINT and SIGQUIT ignored (`nohup` ignores SIGHUP),
/// and an ignored signal stays ignored across `exec`: every child a test signals would inherit
/// it, and `dmesg -w`, `kmsgfs run` and their commands would survive the signal the test sends.
fn default_signal_actions() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGTERM] {
            // SAFETY: SIG_DFL is a valid disposition for these signals; no handler runs.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    });
}

/// Root (euid 0): FUSE mounts, namespaces, seccomp listeners, `/proc/<pid>/mem`. Every test
/// calls it first, so it also resets the signal actions the tests rely on
/// ([`default_signal_actions`]).
pub fn require_root() -> bool {
    default_signal_actions();
    let euid = kmsgfs::sys::geteuid();
    require(euid == 0, &format!("root (euid 0); running as euid {euid}"))
}

/// `tool` on PATH, naming the Debian package that has it.
pub fn require_tool(tool: &str) -> bool {
    let package = match tool {
        "busybox" => "busybox-static",
        "cc" => "gcc",
        "dmesg" | "unshare" | "nsenter" | "setpriv" => "util-linux",
        "journalctl" => "systemd",
        "rsyslogd" => "rsyslog",
        "go" => "golang-go",
        other => other,
    };
    require(
        which(tool).is_some(),
        &format!("`{tool}` on PATH (Debian: apt-get install {package})"),
    )
}

/// `path` exists (a kernel interface or an installed file), `why` saying what provides it.
pub fn require_path(path: &Path, why: &str) -> bool {
    require(path.exists(), &format!("{} ({why})", path.display()))
}

/// Full path of `tool` on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A tag no other test, run or process uses, for records that must be recognised later:
/// `kmsgfs-WHAT-PID-N-NANOS` (the counter separates calls within one process; pid and time
/// separate processes, including PID-namespace inits that all have pid 1).
pub fn unique_tag(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "kmsgfs-{what}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temporary directory, removed on drop (also when the test fails).
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique_tag(tag));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The directory holding every mount of this `cargo test` invocation.
pub fn run_root() -> PathBuf {
    // SAFETY: getppid has no preconditions and cannot fail.
    let ppid = unsafe { libc::getppid() };
    std::env::temp_dir().join(format!("kmsgfs-test-run-{ppid}"))
}

/// kmsgfs mounts under [`run_root`] still present in `/proc/self/mountinfo`.
pub fn leftover_mounts() -> Vec<String> {
    let root = run_root();
    let root = root.to_string_lossy().into_owned();
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    info.lines()
        .filter(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let Some(sep) = f.iter().position(|x| *x == "-") else {
                return false;
            };
            let mnt = f.get(4).copied().unwrap_or("");
            let src = f.get(sep + 2).copied().unwrap_or("");
            src == "kmsgfs" && mnt.starts_with(&root)
        })
        .map(str::to_owned)
        .collect()
}

/// Whether `dir` is a mount point with source `kmsgfs` in `/proc/self/mountinfo`.
pub fn is_kmsgfs_mounted(dir: &Path) -> bool {
    let want = dir.to_string_lossy().replace(' ', "\\040");
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            return false;
        };
        f.get(4) == Some(&want.as_str()) && f.get(sep + 2) == Some(&"kmsgfs")
    })
}

/// Lazily unmount `dir` (`umount2(MNT_DETACH)`); errors are ignored.
pub fn detach(dir: &Path) {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: `c` is a valid NUL-terminated path that lives across the call.
    unsafe {
        libc::umount2(c.as_ptr(), libc::MNT_DETACH);
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Options for [`Daemon::start_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Extra command-line arguments after `serve --mount DIR --source FIFO`.
    pub args: Vec<String>,
    /// `RUST_LOG` for the daemon.
    pub rust_log: String,
    /// Reuse this mount directory instead of a fresh one (crash-recovery tests).
    pub mount_dir: Option<PathBuf>,
    /// `--source` instead of the test's FIFO (e.g. the real `/dev/kmsg` for attribution tests;
    /// [`Daemon::feed`] then has no effect on the daemon).
    pub source: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            args: Vec::new(),
            rust_log: "info".into(),
            mount_dir: None,
            source: None,
        }
    }
}

impl Options {
    /// Options with these extra arguments.
    pub fn args(args: &[&str]) -> Self {
        Options {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Options::default()
        }
    }
}

#[derive(Default)]
struct LogBuf {
    text: String,
    /// stderr reader threads still running (one per daemon process started).
    live: usize,
}

/// A running `kmsgfs serve` and its temporary directory. Dropping it stops the daemon, unmounts
/// lazily and removes the directory.
pub struct Daemon {
    child: Option<Child>,
    base: PathBuf,
    mount: PathBuf,
    fifo: PathBuf,
    fifo_w: File,
    log: Arc<(Mutex<LogBuf>, Condvar)>,
    host_seq: AtomicU64,
    /// Number of `ready` lines seen before this start (restart support).
    ready_seen: usize,
    /// The daemon binary, when not the one cargo built ([`Daemon::upgrade`]).
    binary: Option<PathBuf>,
}

impl Daemon {
    /// Start with default options and wait for `ready`.
    pub fn start() -> Daemon {
        Self::start_with(Options::default())
    }

    /// Start with extra arguments and wait for `ready`.
    pub fn start_args(args: &[&str]) -> Daemon {
        Self::start_with(Options::args(args))
    }

    /// Start with `opts` and wait for `ready`.
    pub fn start_with(opts: Options) -> Daemon {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let base = run_root().join(format!("{}-{}", std::process::id(), n));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).expect("create test base dir");
        let mount = opts.mount_dir.clone().unwrap_or_else(|| base.join("mnt"));
        fs::create_dir_all(&mount).ok();
        let fifo = base.join("source.fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).expect("fifo path");
        // SAFETY: `c` is a valid NUL-terminated path.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(
            rc,
            0,
            "mkfifo {}: {}",
            fifo.display(),
            std::io::Error::last_os_error()
        );
        // O_RDWR on a FIFO never blocks on Linux and keeps a writer open, so the daemon never
        // sees EOF while the test runs.
        let fifo_w = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .expect("open FIFO O_RDWR");
        let mut d = Daemon {
            child: None,
            base,
            mount,
            fifo,
            fifo_w,
            log: Arc::new((Mutex::new(LogBuf::default()), Condvar::new())),
            host_seq: AtomicU64::new(0),
            ready_seen: 0,
            binary: None,
        };
        d.spawn(&opts);
        d
    }

    fn spawn(&mut self, opts: &Options) {
        let mut cmd = Command::new(
            self.binary
                .clone()
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kmsgfs"))),
        );
        cmd.arg("serve")
            .arg("--mount")
            .arg(&self.mount)
            .arg("--source")
            .arg(opts.source.as_deref().unwrap_or(&self.fifo))
            .args(&opts.args)
            .env("RUST_LOG", &opts.rust_log)
            .env_remove("RUST_LOG_STYLE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn kmsgfs serve");
        let stderr = child.stderr.take().expect("stderr pipe");
        let log = Arc::clone(&self.log);
        log.0.lock().unwrap().live += 1;
        let tag = format!("[kmsgfs {}]", child.id());
        std::thread::spawn(move || {
            let r = BufReader::new(stderr);
            for line in r.lines() {
                let Ok(line) = line else { break };
                eprintln!("{tag} {line}");
                let (m, cv) = &*log;
                let mut g = m.lock().unwrap();
                g.text.push_str(&line);
                g.text.push('\n');
                cv.notify_all();
            }
            let (m, cv) = &*log;
            m.lock().unwrap().live -= 1;
            cv.notify_all();
        });
        self.child = Some(child);
        let want = self.ready_seen + 1;
        let ok = self.wait_log_count(" ready", want, TIMEOUT);
        if !ok {
            panic!(
                "kmsgfs serve did not log `ready` within {TIMEOUT:?}; log:\n{}",
                self.log_text()
            );
        }
        self.ready_seen = want;
    }

    /// Restart the daemon on the same mount directory and FIFO (after [`Daemon::kill9`] or
    /// [`Daemon::stop`]), with `args`, and wait for `ready`.
    pub fn restart(&mut self, opts: Options) {
        assert!(self.child.is_none(), "restart needs a stopped daemon");
        self.spawn(&opts);
    }

    /// A planned upgrade: start `binary` (a copy of the daemon, standing for a new version)
    /// with `opts` while the daemon runs; the new process makes the running one hand over,
    /// waits for its exit and becomes ready. Returns the old process's exit status.
    pub fn upgrade(&mut self, binary: &Path, opts: Options) -> std::process::ExitStatus {
        let mut old = self.child.take().expect("upgrade needs a running daemon");
        self.binary = Some(binary.to_path_buf());
        self.spawn(&opts);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(st) = old.try_wait().expect("wait for the old daemon") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "the old daemon did not exit after the upgrade"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// [`Daemon::upgrade`] without waiting for the old process to exit (it may stay to drain
    /// the reads it holds); returns it.
    pub fn upgrade_detached(&mut self, binary: &Path, opts: Options) -> Child {
        let old = self.child.take().expect("upgrade needs a running daemon");
        self.binary = Some(binary.to_path_buf());
        self.spawn(&opts);
        old
    }

    /// The mount directory.
    pub fn dir(&self) -> &Path {
        &self.mount
    }

    /// `DIR/kmsg`.
    pub fn kmsg(&self) -> PathBuf {
        self.mount.join("kmsg")
    }

    /// `DIR/stats`.
    pub fn stats_path(&self) -> PathBuf {
        self.mount.join("stats")
    }

    /// `DIR/ns`.
    pub fn ns_dir(&self) -> PathBuf {
        self.mount.join("ns")
    }

    /// The FIFO the daemon reads host records from.
    pub fn fifo(&self) -> &Path {
        &self.fifo
    }

    /// The test's private scratch directory (parent of the mount directory by default).
    pub fn scratch(&self) -> &Path {
        &self.base
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Write raw bytes into the source FIFO: whole records in the host `/dev/kmsg` format,
    /// `prio,seq,ts,flag;text\n` followed by optional ` KEY=value\n` dictionary lines.
    pub fn feed_raw(&self, bytes: &str) {
        (&self.fifo_w)
            .write_all(bytes.as_bytes())
            .expect("write to source FIFO");
    }

    /// Feed one host record with the next host seq and return that host seq.
    pub fn feed(&self, prio: u16, text: &str) -> u64 {
        let seq = self.host_seq.fetch_add(1, Ordering::SeqCst);
        self.feed_raw(&format!("{prio},{seq},{},-;{text}\n", 1_000 + seq * 10));
        seq
    }

    /// Feed `n` host records `"<prefix> <i>"` at prio 6 in one write per record.
    pub fn feed_many(&self, n: usize, prefix: &str) {
        for i in 0..n {
            self.feed(6, &format!("{prefix} {i}"));
        }
    }

    /// Skip `n` host sequence numbers (simulates records lost before the daemon read them).
    pub fn skip_host_seq(&self, n: u64) {
        self.host_seq.fetch_add(n, Ordering::SeqCst);
    }

    /// The stats file parsed as JSON.
    pub fn stats(&self) -> serde_json::Value {
        let mut s = String::new();
        File::open(self.stats_path())
            .and_then(|mut f| f.read_to_string(&mut s))
            .expect("read stats");
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("stats is not JSON ({e}): {s}"))
    }

    /// Wait until `n` container rings (not the host's) hold a record each: the containers that
    /// write their first record at start are up.
    pub fn wait_container_rings(&self, n: usize) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let up = self.stats()["rings"].as_array().map_or(0, |r| {
                r.iter()
                    .filter(|x| x["host"] == false && x["records"].as_u64() >= Some(1))
                    .count()
            });
            if up >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{up} of {n} containers wrote their first record"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until the daemon has read at least `n` host records (from stats).
    pub fn wait_host_records(&self, n: u64) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let got = self.stats()["host"]["records_read"].as_u64().unwrap_or(0);
            if got >= n {
                return;
            }
            if Instant::now() > deadline {
                panic!("daemon read only {got} of {n} host records within {TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Everything the daemon logged so far.
    pub fn log_text(&self) -> String {
        self.log.0.lock().unwrap().text.clone()
    }

    /// Wait until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_log_count(needle, 1, timeout)
    }

    fn wait_log_count(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let (m, cv) = &*self.log;
        let deadline = Instant::now() + timeout;
        let mut g = m.lock().unwrap();
        loop {
            if g.text.matches(needle).count() >= count {
                return true;
            }
            if g.live == 0 {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// Send `sig` to the daemon.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill has no memory-safety preconditions; the pid is our child.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// SIGKILL the daemon and reap it; the mount stays behind (crash simulation).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM the daemon and wait for it (up to [`TIMEOUT`]); returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill has no memory-safety preconditions; the pid is our child.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match c.try_wait() {
                Ok(Some(st)) => return Some(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    eprintln!("kmsgfs did not stop on SIGTERM within {TIMEOUT:?}; SIGKILL");
                    let _ = c.kill();
                    return c.wait().ok();
                }
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        // Whatever happened, leave no mount behind: detach until none is left on the dir.
        for _ in 0..8 {
            if !is_kmsgfs_mounted(&self.mount) {
                break;
            }
            detach(&self.mount);
        }
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// Open `path` with raw `open(2)` flags; returns the fd or the errno.
pub fn open_raw(path: &Path, flags: i32) -> Result<i32, i32> {
    let c = CString::new(path.as_os_str().as_bytes()).expect("path");
    // SAFETY: `c` is a valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(fd)
    }
}

/// The calling thread's errno.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `read(fd, count)`: the bytes or the errno.
pub fn read_raw(fd: i32, count: usize) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; count];
    // SAFETY: `buf` has `count` writable bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), count) };
    if n < 0 {
        return Err(errno());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// `write(fd, data)`: the count or the errno.
pub fn write_raw(fd: i32, data: &[u8]) -> Result<usize, i32> {
    // SAFETY: `data` is valid for `data.len()` bytes.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

/// `lseek(fd, off, whence)`: the offset or the errno.
pub fn lseek_raw(fd: i32, off: i64, whence: i32) -> Result<i64, i32> {
    // SAFETY: lseek has no memory-safety preconditions.
    let r = unsafe { libc::lseek(fd, off, whence) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// `close(fd)`.
pub fn close_raw(fd: i32) {
    // SAFETY: the caller owns `fd`.
    unsafe {
        libc::close(fd);
    }
}

/// `poll(fd, events, timeout_ms)`: revents (0 on timeout).
pub fn poll_raw(fd: i32, events: i16, timeout_ms: i32) -> i16 {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    assert!(n >= 0, "poll failed: {}", std::io::Error::last_os_error());
    p.revents
}

/// Read records from `fd` (non-blocking) until EAGAIN; EPIPE is skipped like dmesg does.
pub fn drain(fd: i32) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        match read_raw(fd, 8192) {
            Ok(b) => {
                assert!(!b.is_empty(), "read returned 0");
                out.push(String::from_utf8_lossy(&b).into_owned());
            }
            Err(libc::EPIPE) => continue,
            Err(libc::EAGAIN) => return out,
            Err(e) => panic!("read failed: errno {e}"),
        }
    }
}

/// The text of a kmsg record line (after `;`, up to the first `\n`).
pub fn text_of(rec: &str) -> &str {
    let t = rec.split_once(';').map(|x| x.1).unwrap_or("");
    t.split('\n').next().unwrap_or("")
}

/// The header fields (prio, seq, ts) of a kmsg record.
pub fn header_of(rec: &str) -> (u64, u64, u64) {
    let h = rec.split_once(';').expect("record has ;").0;
    let mut it = h.split(',');
    let p = it.next().unwrap().parse().unwrap();
    let s = it.next().unwrap().parse().unwrap();
    let t = it.next().unwrap().parse().unwrap();
    (p, s, t)
}

/// Field `n` (1-based, as in proc(5)) of `/proc/<pid>/stat`, e.g. 3 = state.
pub fn proc_stat_field(pid: u32, n: usize) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = s.rfind(')')?;
    let rest: Vec<&str> = s[close + 2..].split(' ').collect();
    rest.get(n.checked_sub(3)?).map(|x| x.to_string())
}

/// Open `path` read-only, non-blocking, for tests that use `std::fs::File`.
pub fn open_nonblock(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Result of a shell command.
#[derive(Debug)]
pub struct Sh {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub out: String,
    /// Standard error.
    pub err: String,
}

/// Run `cmd` with `sh -c` and capture its output.
pub fn sh(cmd: &str) -> Sh {
    let o = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run sh -c {cmd:?}: {e}"));
    let r = Sh {
        code: o.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    eprintln!(
        "$ {cmd}\n  -> code {} out {:?} err {:?}",
        r.code, r.out, r.err
    );
    r
}

/// A shell command that prints every record readable at `path` (non-blocking, until EAGAIN).
pub fn dump_cmd(path: &Path) -> String {
    format!(
        "dd if={} iflag=nonblock bs=8192 status=none",
        path.display()
    )
}

/// Split concatenated kmsg records into records (dictionary lines stay with their record).
pub fn split_records(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in s.split_inclusive('\n') {
        if line.starts_with(' ') {
            if let Some(last) = out.last_mut() {
                last.push_str(line);
                continue;
            }
        }
        out.push(line.to_owned());
    }
    out
}

/// Texts of the records in `s`.
pub fn texts(s: &str) -> Vec<String> {
    split_records(s)
        .iter()
        .map(|r| text_of(r).to_owned())
        .collect()
}

/// Wait until `pid` is blocked in a FUSE request (wchan `request_wait_answer`).
pub fn wait_blocked_in_fuse(pid: u32) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let w = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        if w == "request_wait_answer" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} did not block in a FUSE request (wchan {w:?})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A running `kmsgfs holder` on `DIR/holder.sock`, killed on drop (which ends every FUSE
/// connection and listener it kept).
pub struct Holder {
    child: Child,
    /// Its socket.
    pub socket: PathBuf,
}

impl Holder {
    /// Start one in `dir` and wait for its socket.
    pub fn start(dir: &Path) -> Holder {
        let socket = dir.join("holder.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_kmsgfs"))
            .args(["holder", "--socket"])
            .arg(&socket)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn kmsgfs holder");
        let deadline = Instant::now() + Duration::from_secs(10);
        while fs::symlink_metadata(&socket).is_err() {
            assert!(Instant::now() < deadline, "the holder made no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Holder { child, socket }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Host pids of every descendant of `pid`, from the ppid field of `/proc/*/stat`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some(pp) = proc_stat_field(p, 4).and_then(|f| f.parse::<u32>().ok()) {
            parent_of.push((p, pp));
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let cur = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == cur)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// Move the calling thread into the network namespace of `pid` (for writes to the host's
/// `/dev/kmsg` that BPF attributes to that namespace).
pub fn enter_netns_of(pid: u32) {
    let ns = fs::File::open(format!("/proc/{pid}/ns/net")).expect("open the netns");
    // SAFETY: setns on a valid netns fd changes only this thread's network namespace.
    let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}
