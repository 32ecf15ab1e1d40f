//! Harness for the `syslog(2)` agent tests (`tests/seccomp_*.rs`).
//!
//! [`Harness`] starts a real [`Agent`] on a socket in a temporary directory, backed by test
//! rings that the test fills itself. [`Harness::run`] starts an unchanged binary in a child
//! that installs the kmsgfs filter ([`install_filter`]) just before `exec`, passes the listener
//! to the parent over a socketpair, and the parent hands it to the agent over the agent's socket
//! in the OCI `ContainerProcessState` shape ([`send_listener`]), exactly as `kmsgfs run` does.
//! No FUSE mount is involved.
//!
//! Host-safety helpers: [`HostTag`] writes one tagged record to the real `/dev/kmsg` and later
//! proves that the host's clear point did not move (a host `/dev/kmsg` reader positioned with
//! `SEEK_DATA` still finds the tag and starts where it did); [`host_printk`] reads the host console levels. Nothing here
//! clears or read-clears the host log.
//!
//! [`oci`]: busybox bundles run by the real OCI runtimes (runc, crun); [`podman`]: real Podman
//! on top of either.
#![allow(dead_code)]

pub mod hostile;
pub mod oci;
pub mod podman;

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kmsgfs::frontends::seccomp::oci::{recv_one_fd, send_fd};
use kmsgfs::frontends::seccomp::{
    install_filter, send_listener, Agent, AgentHandle, AgentOptions, Caller, Container,
    ResolveError, RingResolver, KEY_ANNOTATION,
};
use kmsgfs::record::RecordRef;
use kmsgfs::ring::{Ring, RingConfig};
use kmsgfs::syslog::Policy;

/// Generous functional timeout for a child to finish or a record to arrive.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Size of the test rings: not the host's 131072, so a leaked host answer is visible.
pub const RING_BYTES: usize = 64 * 1024;

pub use super::{require_root, require_tool, unique_tag, which, TempDir};

/// A rootfs at `root` holding the static busybox and a symlink to it for each of `applets`,
/// util-linux `dmesg` at `/usr/bin/dmesg`, and the empty directories runtimes mount over
/// (`dev`, `proc`, `sys`, `etc`, `tmp`).
pub fn busybox_rootfs(root: &Path, applets: &[&str]) {
    for d in ["bin", "dev", "proc", "sys", "etc", "tmp"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = which("busybox").expect("busybox");
    fs::copy(&busybox, root.join("bin/busybox")).expect("copy busybox into the rootfs");
    for applet in applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    add_util_linux_dmesg(root);
}

/// util-linux `dmesg` at `/usr/bin/dmesg` in `root`, with the shared libraries `ldd` names, at
/// their host paths (the runtimes' rootfs hold nothing else but busybox).
pub fn add_util_linux_dmesg(root: &Path) {
    let bin = Path::new("/usr/bin/dmesg");
    let ldd = std::process::Command::new("ldd")
        .arg(bin)
        .output()
        .expect("run ldd /usr/bin/dmesg");
    let mut files = vec![bin.to_path_buf()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux… (0x…)`.
        if let Some(p) = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from)
        {
            files.push(p);
        }
    }
    for f in files {
        let dest = root.join(f.strip_prefix("/").unwrap());
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(&f, &dest).unwrap_or_else(|e| panic!("copy {} into the rootfs: {e}", f.display()));
    }
}

/// Lazily unmounts every mount below `dir` (deepest first), so the directory can be removed.
pub fn detach_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        if let Ok(c) = std::ffi::CString::new(p) {
            // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Append one record with `text` (level 6, facility kern) and timestamp `ts_usec`.
pub fn push(ring: &Ring, ts_usec: u64, text: &str) {
    ring.append(&RecordRef::plain(ts_usec, 6, text.as_bytes()));
}

/// A new test ring holding `lines`, timestamps 1.000000 s, 2.000000 s, ...
pub fn ring_with(lines: &[String]) -> Arc<Ring> {
    let ring = Arc::new(Ring::new(RingConfig::with_bytes(RING_BYTES)));
    for (i, l) in lines.iter().enumerate() {
        push(&ring, (i as u64 + 1) * 1_000_000, l);
    }
    ring
}

/// Rings by key for the tests: the [`KEY_ANNOTATION`] names one, everything else gets
/// `default`. `restrict` is `dmesg_restrict`.
pub struct TestResolver {
    pub default: Arc<Ring>,
    pub keyed: Mutex<HashMap<String, Arc<Ring>>>,
    pub restrict: bool,
    pub seen: Mutex<Vec<Container>>,
}

impl TestResolver {
    pub fn new(default: Arc<Ring>) -> TestResolver {
        TestResolver {
            default,
            keyed: Mutex::new(HashMap::new()),
            restrict: true,
            seen: Mutex::new(Vec::new()),
        }
    }

    pub fn add(&self, key: &str, ring: Arc<Ring>) {
        self.keyed.lock().unwrap().insert(key.to_owned(), ring);
    }
}

impl RingResolver for TestResolver {
    fn ring_for(&self, container: &Container) -> Result<Arc<Ring>, ResolveError> {
        self.seen.lock().unwrap().push(container.clone());
        match container.key_override() {
            Some(k) => self
                .keyed
                .lock()
                .unwrap()
                .get(k)
                .cloned()
                .ok_or_else(|| format!("no test ring named {k}").into()),
            None => Ok(self.default.clone()),
        }
    }

    fn policy_for(&self, caller: &Caller<'_>) -> Policy {
        caller.kernel_policy(self.restrict)
    }
}

/// A running agent with test rings, on a socket in a temporary directory.
pub struct Harness {
    pub agent: AgentHandle,
    pub resolver: Arc<TestResolver>,
    pub ring: Arc<Ring>,
    pub dir: TempDir,
}

impl Harness {
    /// An agent whose default ring holds `lines`.
    pub fn new(lines: &[String]) -> Harness {
        Self::with(ring_with(lines), true, AgentOptions::default())
    }

    /// Full control.
    pub fn with(ring: Arc<Ring>, restrict: bool, options: AgentOptions) -> Harness {
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = TempDir::new("seccomp");
        let mut resolver = TestResolver::new(ring.clone());
        resolver.restrict = restrict;
        let resolver = Arc::new(resolver);
        let agent = Agent::spawn_with(dir.path().join("agent.sock"), resolver.clone(), options)
            .expect("start the seccomp agent");
        Harness {
            agent,
            resolver,
            ring,
            dir,
        }
    }

    /// The agent's socket.
    pub fn socket(&self) -> PathBuf {
        self.agent.socket_path().to_path_buf()
    }

    /// Run `argv` under the filter with its listener handed to this agent; wait for it.
    pub fn run(&self, argv: &[&str]) -> Output {
        let child = self.spawn(argv, BTreeMap::new());
        wait_output(child, TIMEOUT)
    }

    /// Start `argv` under the filter with its listener handed to this agent.
    pub fn spawn(&self, argv: &[&str], annotations: BTreeMap<String, String>) -> Child {
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]);
        let (child, listener) = spawn_filtered(cmd);
        send_listener(&self.socket(), child.id(), listener.as_fd(), annotations)
            .expect("hand the listener to the agent");
        child
    }

    /// Wait until `cond(stats)` holds, or panic after [`TIMEOUT`].
    pub fn wait_stats(
        &self,
        what: &str,
        cond: impl Fn(&kmsgfs::frontends::seccomp::AgentStats) -> bool,
    ) {
        wait_until(what, || cond(&self.agent.stats()));
    }
}

/// Annotations naming a keyed ring.
pub fn key(k: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(KEY_ANNOTATION.to_owned(), k.to_owned());
    m
}

/// Poll `cond` every 10 ms until true; panic naming `what` after [`TIMEOUT`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Spawn `cmd` (stdin null, stdout/stderr piped) with the kmsgfs filter installed just before
/// `exec`; returns the child and the listener (the parent's copy).
pub fn spawn_filtered(cmd: Command) -> (Child, OwnedFd) {
    spawn_filtered_io(cmd, false)
}

/// [`spawn_filtered`], with stdin piped if `piped_stdin`.
pub fn spawn_filtered_io(mut cmd: Command, piped_stdin: bool) -> (Child, OwnedFd) {
    let (parent, child_end) = UnixStream::pair().expect("socketpair");
    let raw = child_end.as_raw_fd();
    cmd.stdin(if piped_stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // SAFETY: the closure only makes async-signal-safe calls (seccomp, sendmsg, close); both
    // helpers allocate nothing.
    unsafe {
        cmd.pre_exec(move || {
            let listener = install_filter()?;
            send_fd(BorrowedFd::borrow_raw(raw), b"L", listener.as_fd())?;
            drop(listener);
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn the filtered child");
    drop(child_end);
    let listener = recv_one_fd(parent.as_fd()).expect("receive the listener from the child");
    (child, listener)
}

/// Wait for `child` with a timeout (SIGKILL on expiry, then panic) and collect its output.
pub fn wait_output(child: Child, timeout: Duration) -> Output {
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("wait for the child"),
        Err(_) => {
            // SAFETY: kill has no memory preconditions; the child is not reaped yet (the
            // waiting thread has not returned), so the pid is still ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let out = rx.recv().expect("waiter").expect("wait");
            panic!(
                "child {pid} did not finish within {timeout:?}; stdout {:?} stderr {:?}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert success and return stdout.
pub fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {:?}; stdout {:?} stderr {:?}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// The host's `/proc/sys/kernel/printk` (console levels).
pub fn host_printk() -> String {
    fs::read_to_string("/proc/sys/kernel/printk").expect("read /proc/sys/kernel/printk")
}

/// One record tagged with a unique string, written to the host's real `/dev/kmsg`.
pub struct HostTag {
    pub tag: String,
    /// The tag's sequence number in the host log.
    pub seq: u64,
    /// The host's clear point when the tag was written, if it lies after the oldest stored
    /// record (otherwise it is invisible, and `None`).
    pub clear_point: Option<u64>,
}

/// Where the host's clear point is, as far as a `/dev/kmsg` reader can tell: the seq of the
/// first record after `SEEK_DATA` if that is later than the oldest stored record, else `None`.
/// Also reports whether `tag` is readable from the clear point on.
pub fn host_clear_point(tag: &str) -> (Option<u64>, bool) {
    let found = host_scan(true, tag, false).1.is_some();
    // SEEK_DATA first, oldest second: if the host log wraps in between, the oldest record
    // moves forward, which can only hide a clear point, never invent one.
    let first = host_scan(true, tag, true).0;
    let oldest = host_scan(false, tag, true).0;
    let point = match (first, oldest) {
        (Some(f), Some(o)) if f > o => Some(f),
        _ => None,
    };
    (point, found)
}

impl HostTag {
    /// Write the tag (one small record) and note the host's clear point.
    pub fn write(what: &str) -> HostTag {
        let tag = unique_tag(what);
        let mut f = OpenOptions::new()
            .write(true)
            .open("/dev/kmsg")
            .expect("open /dev/kmsg for writing");
        f.write_all(format!("<6>{tag}\n").as_bytes())
            .expect("write the host tag");
        let (clear_point, found) = host_clear_point(&tag);
        assert!(found, "the host tag {tag} is not readable after SEEK_DATA");
        let seq = host_scan(false, &tag, false)
            .1
            .expect("the host tag is in the host log");
        HostTag {
            tag,
            seq,
            clear_point,
        }
    }

    /// Assert that the host's clear point has not moved: a fresh `/dev/kmsg` reader positioned
    /// with `SEEK_DATA` still reaches the tag, and the clear point is where it was (or was
    /// overwritten, when the host log wrapped meanwhile).
    pub fn assert_host_not_cleared(&self) {
        let (point, found) = host_clear_point(&self.tag);
        if !found {
            // Other suites log to the host too: if the host log wrapped past the tag, the tag
            // is gone for every reader and says nothing about the clear point.
            let oldest = host_scan(false, &self.tag, true).0;
            assert!(
                oldest.is_some_and(|o| o > self.seq),
                "host clear point moved past {} (seq {}, oldest stored {oldest:?}): something \
                 cleared the HOST log",
                self.tag,
                self.seq
            );
            return;
        }
        match (self.clear_point, point) {
            (_, None) => {}
            (Some(before), Some(now)) if before == now => {}
            (before, now) => panic!("the HOST clear point moved from {before:?} to {now:?}"),
        }
    }
}

/// Open the host `/dev/kmsg` (with `lseek(SEEK_DATA)` to the clear point if `seek_data`) and
/// read every record, or only the first if `first_only`: (seq of the first record, seq of the
/// record holding `tag`). Reading `/dev/kmsg` consumes nothing.
pub fn host_scan(seek_data: bool, tag: &str, first_only: bool) -> (Option<u64>, Option<u64>) {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .expect("open /dev/kmsg");
    if seek_data {
        // SAFETY: lseek on an fd we own.
        let rc = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_DATA) };
        assert!(rc >= 0, "lseek(/dev/kmsg, SEEK_DATA) failed");
    }
    let mut first = None;
    let mut found = None;
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = &buf[..n];
                let seq = std::str::from_utf8(rec)
                    .ok()
                    .and_then(|s| s.split(',').nth(1))
                    .and_then(|s| s.parse().ok());
                if first.is_none() {
                    first = seq;
                }
                if rec.windows(tag.len()).any(|w| w == tag.as_bytes()) {
                    found = seq;
                }
                if first_only && first.is_some() {
                    break;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                // Overwritten under us; the next read returns the oldest record.
                first = None;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("read /dev/kmsg: {e}"),
        }
    }
    (first, found)
}

/// A `CString` (panics on NUL).
pub fn cstr(s: impl AsRef<[u8]>) -> CString {
    CString::new(s.as_ref()).expect("no NUL")
}

/// Read a file to a string, empty if missing.
pub fn read_or_empty(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default()
}

/// Append-only open of a file.
pub fn open_append(p: &Path) -> File {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(p)
        .expect("open")
}

/// Fork a child that installs the filter, hands its listener to `h`'s agent and runs `body`
/// (raw syscalls only: it runs in a forked copy of a multi-threaded process, so it must not
/// allocate or take locks). `body`'s four results come back to the caller.
pub fn in_filtered_fork(h: &Harness, body: impl FnOnce() -> [i64; 4]) -> [i64; 4] {
    use std::os::fd::FromRawFd;
    let (parent, child_end) = UnixStream::pair().unwrap();
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds are new and owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut rd = File::from(rd);
    let (sock, wfd) = (child_end.as_raw_fd(), wr.as_raw_fd());
    // SAFETY: the child runs only the filter installation, sendmsg, `body` (raw syscalls by
    // contract), write and _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: see above; every call here is async-signal-safe.
        unsafe {
            let Ok(l) = install_filter() else {
                libc::_exit(2)
            };
            if send_fd(BorrowedFd::borrow_raw(sock), b"L", l.as_fd()).is_err() {
                libc::_exit(3)
            }
            drop(l);
            let out = body();
            libc::write(wfd, out.as_ptr().cast(), std::mem::size_of_val(&out));
            libc::_exit(0);
        }
    }
    drop(child_end);
    drop(wr);
    let listener = recv_one_fd(parent.as_fd()).unwrap();
    send_listener(&h.socket(), pid as u32, listener.as_fd(), BTreeMap::new()).unwrap();
    drop(listener);
    let mut buf = [0u8; 32];
    let read = rd.read_exact(&mut buf);
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if let Err(e) = read {
        panic!("the forked child died (wait status {status:#x}): {e}");
    }
    let mut out = [0i64; 4];
    for (i, o) in out.iter_mut().enumerate() {
        *o = i64::from_ne_bytes(buf[i * 8..i * 8 + 8].try_into().unwrap());
    }
    out
}

/// `syscall(SYS_syslog, action, buf, len)` as `-errno` or the return value. Async-signal-safe.
pub fn raw_syslog(action: i32, buf: u64, len: i32) -> i64 {
    // SAFETY: the kernel (or the agent) validates the buffer; an invalid one gives EFAULT.
    let r = unsafe { libc::syscall(libc::SYS_syslog, action, buf, len) };
    if r < 0 {
        // SAFETY: errno location of the calling thread.
        -i64::from(unsafe { *libc::__errno_location() })
    } else {
        r
    }
}

/// busybox `klogd -n` under the filter, with its `/dev/log` redirected to a socket the test
/// reads: it runs in a private mount namespace with a tmpfs `/dev` holding only `log` (the
/// host's `/dev` is untouched). Killed on drop.
pub struct Klogd {
    child: Option<Child>,
    log: std::os::unix::net::UnixDatagram,
    _dir: TempDir,
}

impl Klogd {
    /// Start it and hand its listener to `h`.
    pub fn start(h: &Harness) -> Klogd {
        let dir = TempDir::new("klogd");
        let sock_path = dir.path().join("log");
        let log =
            std::os::unix::net::UnixDatagram::bind(&sock_path).expect("bind the test /dev/log");
        log.set_read_timeout(Some(TIMEOUT)).unwrap();
        let script = format!(
            "mount --make-rprivate / && mount -t tmpfs none /dev && touch /dev/log && \
             mount --bind {} /dev/log && exec busybox klogd -n",
            sock_path.display()
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "sh", "-c", &script]);
        let (child, listener) = spawn_filtered(cmd);
        send_listener(&h.socket(), child.id(), listener.as_fd(), BTreeMap::new()).unwrap();
        Klogd {
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    /// The next message klogd logged (panics after [`TIMEOUT`]).
    pub fn recv(&mut self) -> String {
        let mut buf = vec![0u8; 8192];
        let n = self.log.recv(&mut buf).expect("klogd logged nothing");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Skip messages until one contains `want`.
    pub fn recv_containing(&mut self, want: &str) -> String {
        loop {
            let m = self.recv();
            if m.contains(want) {
                return m;
            }
        }
    }

    /// SIGKILL klogd and collect its output.
    pub fn kill(&mut self) -> Output {
        let child = self.child.take().expect("klogd running");
        // SAFETY: kill has no memory preconditions; the child is not reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        wait_output(child, TIMEOUT)
    }
}

impl Drop for Klogd {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill();
        }
    }
}
