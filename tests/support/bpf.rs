//! Shared helpers for the BPF attribution integration tests (real kernel, root).
//!
//! * [`need`]: fail (or skip with `KMSGFS_ALLOW_SKIP=1`) naming a missing requirement.
//! * [`KmsgTail`]: a non-destructive reader of the host `/dev/kmsg` from its end, on its own
//!   real-time thread so that bursts do not overrun it.
//! * [`Spawned`]: a child process killed and reaped on drop; [`start_netns_writers`] starts
//!   released writers, each in its own new network namespace.
//! * [`NetfilterPair`]: two named network namespaces joined by a veth pair, with iptables and
//!   nft LOG rules in the first (netfilter attribution tests); [`run`] runs one setup command.
#![allow(dead_code)]

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kmsgfs::record::Record;

pub use super::{require, unique_tag};

/// Root, kernel BTF and the given commands.
pub fn need_basics(cmds: &[&str]) -> bool {
    // SAFETY: geteuid has no preconditions.
    if !require(unsafe { libc::geteuid() } == 0, "root") {
        return false;
    }
    if !require(
        std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        "kernel BTF (/sys/kernel/btf/vmlinux)",
    ) {
        return false;
    }
    for c in cmds {
        if !super::require_tool(c) {
            return false;
        }
    }
    true
}

/// Write one record to the host `/dev/kmsg` through a fresh fd (avoids the per-fd ratelimit).
pub fn write_kmsg(line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .expect("open /dev/kmsg for writing");
    f.write_all(format!("{line}\n").as_bytes())
        .expect("write /dev/kmsg");
}

/// Parse the fields the tests need from one `/dev/kmsg` read (A2): prio, seq, ts, flag, text
/// (unescaped). Dictionary lines are ignored.
pub fn parse_kmsg(buf: &[u8]) -> Option<Record> {
    let semi = buf.iter().position(|&c| c == b';')?;
    let header = std::str::from_utf8(&buf[..semi]).ok()?;
    let mut f = header.split(',');
    let prio: u16 = f.next()?.parse().ok()?;
    let seq: u64 = f.next()?.parse().ok()?;
    let ts_usec: u64 = f.next()?.parse().ok()?;
    let cont = f.next()? == "c";
    let body = &buf[semi + 1..];
    let end = body.iter().position(|&c| c == b'\n').unwrap_or(body.len());
    let esc = &body[..end];
    let mut text = Vec::with_capacity(esc.len());
    let mut i = 0;
    while i < esc.len() {
        if esc[i] == b'\\' && i + 3 < esc.len() && esc[i + 1] == b'x' {
            let h = std::str::from_utf8(&esc[i + 2..i + 4]).ok()?;
            text.push(u8::from_str_radix(h, 16).ok()?);
            i += 4;
        } else {
            text.push(esc[i]);
            i += 1;
        }
    }
    Some(Record {
        seq,
        ts_usec,
        prio,
        cont,
        text,
        ..Record::default()
    })
}

/// Reads the host `/dev/kmsg` from its current end on a SCHED_FIFO thread.
pub struct KmsgTail {
    pub rx: mpsc::Receiver<Record>,
    stop: Arc<AtomicBool>,
    /// Records lost to EPIPE (the reader was overrun).
    pub lost: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl KmsgTail {
    pub fn start() -> Self {
        let path = CString::new("/dev/kmsg").unwrap();
        // SAFETY: valid NUL-terminated path; flags are plain ints.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
        assert!(
            fd >= 0,
            "open(/dev/kmsg) failed: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd was just opened and is owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: lseek on a valid fd.
        let r = unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_END) };
        assert!(r >= 0, "lseek(/dev/kmsg, SEEK_END) failed");
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicU64::new(0));
        let (s2, l2) = (Arc::clone(&stop), Arc::clone(&lost));
        let thread = std::thread::spawn(move || {
            let param = libc::sched_param { sched_priority: 10 };
            // SAFETY: sets the calling thread's policy; param is valid. Failure is harmless.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
            let mut buf = vec![0u8; 8192];
            let mut last_seq: Option<u64> = None;
            while !s2.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 50) };
                loop {
                    // SAFETY: reading into a buffer of buf.len() bytes from a valid fd.
                    let n =
                        unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                    if n < 0 {
                        let e = std::io::Error::last_os_error();
                        match e.raw_os_error() {
                            Some(libc::EAGAIN) => break,
                            Some(libc::EPIPE) => continue,
                            _ => panic!("read(/dev/kmsg) failed: {e}"),
                        }
                    }
                    if let Some(rec) = parse_kmsg(&buf[..n as usize]) {
                        if let Some(l) = last_seq {
                            if rec.seq > l + 1 {
                                l2.fetch_add(rec.seq - l - 1, Ordering::Relaxed);
                            }
                        }
                        last_seq = Some(rec.seq);
                        if tx.send(rec).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        KmsgTail {
            rx,
            stop,
            lost,
            thread: Some(thread),
        }
    }

    /// Records available within `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Record> {
        self.rx.recv_timeout(timeout).ok()
    }
}

impl Drop for KmsgTail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A child process killed and reaped on drop.
pub struct Spawned {
    pub child: Child,
}

impl Spawned {
    pub fn new(cmd: &mut Command) -> Self {
        let child = cmd
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Spawned { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a line to its stdin.
    pub fn release(&mut self) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.write_all(b"go\n");
            let _ = stdin.flush();
        }
    }

    /// Wait for exit up to `timeout`; returns whether it exited successfully.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/proc/<pid>/ns/<kind>` inode.
pub fn ns_of(pid: u32, kind: &str) -> u32 {
    kmsgfs::sources::bpf::ns_inode(&pid.to_string(), kind)
        .unwrap_or_else(|e| panic!("namespace {kind} of {pid}: {e}"))
}

/// Wait until `pid` is in a network namespace other than `host_net`.
pub fn wait_netns_change(pid: u32, host_net: u32) -> u32 {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let n = ns_of(pid, "net");
        if n != host_net {
            return n;
        }
        assert!(Instant::now() < end, "pid {pid} never left the host netns");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The first child of `pid` (for `unshare -f`).
pub fn first_child(pid: u32) -> u32 {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let s =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(c) = s.split_whitespace().next() {
            return c.parse().unwrap();
        }
        assert!(Instant::now() < end, "pid {pid} has no child");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Start `count` writers `nice -n 10 unshare -n -- sh -c <script>`, each in its own new network
/// namespace (checked distinct from each other and from `host_net`), then release them (the
/// script should begin with `read x`). Returns the writers and their network namespaces.
pub fn start_netns_writers(count: usize, script: &str, host_net: u32) -> (Vec<Spawned>, Vec<u32>) {
    let mut writers = Vec::new();
    let mut nets = Vec::new();
    for _ in 0..count {
        let mut cmd = Command::new("nice");
        cmd.args(["-n", "10", "unshare", "-n", "--", "sh", "-c", script]);
        let w = Spawned::new(&mut cmd);
        nets.push(wait_netns_change(w.pid(), host_net));
        writers.push(w);
    }
    let mut uniq = nets.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), count, "writers must be in distinct namespaces");
    for w in &mut writers {
        w.release();
    }
    (writers, nets)
}

/// Run `args` to completion; panic with its stderr if it fails.
pub fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Named network namespaces, deleted on drop.
pub struct Netns(Vec<String>);

impl Netns {
    pub fn add(&mut self, name: &str) {
        run(&["ip", "netns", "add", name]);
        self.0.push(name.to_string());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in self.0.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Two named network namespaces A and B (`/30` addresses on a veth pair `vA`–`vB`, links up)
/// with, in A only, iptables `-j LOG` rules on OUTPUT and INPUT (prefixes [`Self::xout`],
/// [`Self::xin`]) and a native nft `log` rule on input ([`Self::nin`]), all for ICMP. The host's
/// network and firewall are not touched; the namespaces (and with them the rules) are deleted on
/// drop.
pub struct NetfilterPair {
    /// Namespace names (`ip netns`).
    pub a: String,
    pub b: String,
    pub ip_a: String,
    pub ip_b: String,
    /// Log prefixes: iptables OUTPUT, iptables INPUT, nft input.
    pub xout: String,
    pub xin: String,
    pub nin: String,
    /// Network namespace inodes.
    pub net_a: u32,
    pub net_b: u32,
    _ns: Netns,
}

impl NetfilterPair {
    /// Namespaces `kmsgfs-<name>a-<id>` / `kmsgfs-<name>b-<id>` on `10.<octet>.<id>.0/30`, with
    /// `<id>` derived from this process's pid (so runs of different test binaries do not meet).
    pub fn create(name: &str, octet: u8) -> Self {
        // iptables cuts --log-prefix at 29 characters: keep the tag short.
        let long = unique_tag("nf");
        let tag = format!("kmsgfs{}", &long[long.len() - 8..]);
        let id = std::process::id() % 200 + 20;
        let (a, b) = (
            format!("kmsgfs-{name}a-{id}"),
            format!("kmsgfs-{name}b-{id}"),
        );
        let (ip_a, ip_b) = (format!("10.{octet}.{id}.1"), format!("10.{octet}.{id}.2"));
        let mut ns = Netns(Vec::new());
        ns.add(&a);
        ns.add(&b);
        run(&[
            "ip", "-n", &a, "link", "add", "vA", "type", "veth", "peer", "name", "vB", "netns", &b,
        ]);
        for (n, ip, dev) in [(&a, &ip_a, "vA"), (&b, &ip_b, "vB")] {
            run(&[
                "ip",
                "-n",
                n,
                "addr",
                "add",
                &format!("{ip}/30"),
                "dev",
                dev,
            ]);
        }
        for (n, dev) in [(&a, "vA"), (&b, "vB")] {
            run(&["ip", "-n", n, "link", "set", "lo", "up"]);
            run(&["ip", "-n", n, "link", "set", dev, "up"]);
        }
        let xout = format!("{tag}-XOUT ");
        let xin = format!("{tag}-XIN ");
        let nin = format!("{tag}-NIN ");
        let exec = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", a.as_str()];
            v.extend_from_slice(args);
            run(&v);
        };
        for (chain, prefix) in [("OUTPUT", &xout), ("INPUT", &xin)] {
            exec(&[
                "iptables",
                "-A",
                chain,
                "-p",
                "icmp",
                "-j",
                "LOG",
                "--log-prefix",
                prefix,
            ]);
        }
        exec(&["nft", "add", "table", "inet", "kmsgfs_t"]);
        exec(&[
            "nft",
            "add chain inet kmsgfs_t in { type filter hook input priority 10 ; }",
        ]);
        exec(&[
            "nft",
            &format!("add rule inet kmsgfs_t in ip protocol icmp log prefix \"{nin}\""),
        ]);
        let ino = |n: &str| {
            let s = std::fs::metadata(format!("/run/netns/{n}")).unwrap();
            std::os::unix::fs::MetadataExt::ino(&s) as u32
        };
        let (net_a, net_b) = (ino(&a), ino(&b));
        NetfilterPair {
            a,
            b,
            ip_a,
            ip_b,
            xout,
            xin,
            nin,
            net_a,
            net_b,
            _ns: ns,
        }
    }

    /// `ip netns exec <from> ping -q -c <count> -i 0.02 -W 2 <to>`.
    pub fn ping(from: &str, to: &str, count: usize) {
        run(&[
            "ip",
            "netns",
            "exec",
            from,
            "ping",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.02",
            "-W",
            "2",
            to,
        ]);
    }
}
