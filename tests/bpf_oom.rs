//! (d) OOM attribution: in a small memory cgroup created by the test, a victim process in
//! network namespace A holds memory (with `oom_score_adj` 1000, so the OOM killer picks it)
//! and a trigger process in namespace B allocates until the cgroup runs out. The report block
//! (from "invoked oom-killer" to "Killed process") is printed by the trigger, in B's context;
//! the router sends it to A's ring (and, by the default policy, to B's), and with the
//! victim-only policy to A's alone.

use std::ffi::CString;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::bpf::*;
use kmsgfs::attribution::router::{How, OomPolicy, Routed, Router, RouterConfig};
use kmsgfs::sources::bpf::{host_namespaces, write_calibration_nonce, BpfConfig, BpfSource};

const LIMIT: usize = 32 << 20;
const VICTIM_BYTES: usize = 24 << 20;
const TRIGGER_BYTES: usize = 16 << 20;

/// A forked process, SIGKILLed and reaped on drop.
struct Forked {
    pid: libc::pid_t,
    reaped: Option<i32>,
}

impl Forked {
    /// Wait up to `timeout` for exit; returns the wait status.
    fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let end = Instant::now() + timeout;
        while self.reaped.is_none() && Instant::now() < end {
            let mut st = 0;
            // SAFETY: waitpid on our own child with a valid status pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut st, libc::WNOHANG) };
            if r == self.pid {
                self.reaped = Some(st);
            } else {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.reaped
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            // SAFETY: signalling and reaping our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                let mut st = 0;
                libc::waitpid(self.pid, &mut st, 0);
            }
        }
    }
}

fn pipe() -> (libc::c_int, libc::c_int) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (fds[0], fds[1])
}

/// Fork a process that enters a new network namespace, joins the cgroup, sets its
/// `oom_score_adj`, waits for a byte on `go` (if given), touches `bytes` of anonymous memory,
/// writes a byte to `ready`, then either sleeps forever (`stay`) or exits.
///
/// The child only makes raw system calls (async-signal-safe after fork in a threaded
/// process): everything it needs is prepared before the fork.
fn fork_hog(
    procs: &CString,
    adj: &CString,
    bytes: usize,
    go: Option<libc::c_int>,
    ready: libc::c_int,
    stay: bool,
) -> Forked {
    let adj_path = CString::new("/proc/self/oom_score_adj").unwrap();
    // SAFETY: fork; the child below uses only async-signal-safe system calls on data prepared
    // before the fork, and ends with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: child process; raw syscalls only, on valid pointers prepared above.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                libc::_exit(10);
            }
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0\n".as_ptr().cast(), 2) != 2 {
                libc::_exit(11);
            }
            libc::close(fd);
            let fd = libc::open(adj_path.as_ptr(), libc::O_WRONLY);
            let n = adj.as_bytes().len();
            if fd < 0 || libc::write(fd, adj.as_ptr().cast(), n) != n as isize {
                libc::_exit(12);
            }
            libc::close(fd);
            if let Some(go) = go {
                let mut b = 0u8;
                if libc::read(go, (&raw mut b).cast(), 1) != 1 {
                    libc::_exit(13);
                }
            }
            let p = libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                libc::_exit(14);
            }
            let p = p.cast::<u8>();
            let mut off = 0;
            while off < bytes {
                std::ptr::write_volatile(p.add(off), 1);
                off += 4096;
            }
            libc::write(ready, b"r".as_ptr().cast(), 1);
            if stay {
                loop {
                    libc::pause();
                }
            }
            libc::_exit(0);
        }
    }
    Forked { pid, reaped: None }
}

fn read_byte(fd: libc::c_int, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    if r != 1 {
        return false;
    }
    let mut b = 0u8;
    // SAFETY: reading one byte into a valid buffer.
    unsafe { libc::read(fd, (&raw mut b).cast(), 1) == 1 }
}

#[test]
fn d_oom_report_goes_to_the_victims_namespace() {
    if !need_basics(&[]) {
        return;
    }
    let name = format!("kmsgfs-oom-{}", std::process::id());
    let cg = match support::memcg::MemCg::create(&name, LIMIT) {
        Ok(c) => c,
        Err(what) => {
            require(false, &what);
            return;
        }
    };
    let host = host_namespaces().unwrap();
    let mut src = BpfSource::start(&BpfConfig::default())
        .unwrap_or_else(|e| panic!("BPF source failed to start: {e}"));
    if !require(
        src.status().oom_victim,
        "tp_btf/mark_victim (OOM victim events)",
    ) {
        return;
    }
    let tail = KmsgTail::start();
    let t0 = Instant::now();
    let mut routers: Vec<Router> = [OomPolicy::VictimAndTrigger, OomPolicy::Victim]
        .into_iter()
        .map(|p| {
            let mut c = RouterConfig::new(host);
            c.oom_policy = p;
            Router::new(c)
        })
        .collect();
    let nonce = write_calibration_nonce().unwrap();
    for r in &mut routers {
        r.begin_calibration(nonce.clone(), t0);
    }

    let procs = cg.procs();
    let (ready_r, ready_w) = pipe();
    let (go_r, go_w) = pipe();
    let victim_adj = CString::new("1000").unwrap();
    let trigger_adj = CString::new("0").unwrap();
    let mut victim = fork_hog(&procs, &victim_adj, VICTIM_BYTES, None, ready_w, true);
    assert!(
        read_byte(ready_r, Duration::from_secs(20)),
        "victim did not get ready"
    );
    let mut trigger = fork_hog(
        &procs,
        &trigger_adj,
        TRIGGER_BYTES,
        Some(go_r),
        ready_w,
        false,
    );
    let net_a = wait_netns_change(victim.pid as u32, host.net);
    let net_b = wait_netns_change(trigger.pid as u32, host.net);
    assert_ne!(net_a, net_b);
    // SAFETY: writing one byte from a valid buffer to our pipe.
    assert_eq!(unsafe { libc::write(go_w, b"g".as_ptr().cast(), 1) }, 1);

    let kill_line = format!("Killed process {} ", victim.pid);
    let mut routed: Vec<Vec<Routed>> = vec![Vec::new(), Vec::new()];
    let mut buf = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    let mut kill_seen_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        assert!(now < end, "no OOM kill of the victim was logged");
        if kill_seen_at.is_some_and(|t| now > t + Duration::from_secs(3)) {
            break;
        }
        let rec = tail.recv_timeout(Duration::from_millis(10));
        src.drain(&mut buf).unwrap();
        for r in &mut routers {
            for e in &buf {
                r.on_event(e.clone());
            }
        }
        buf.clear();
        if let Some(rec) = rec {
            if kill_seen_at.is_none() && String::from_utf8_lossy(&rec.text).contains(&kill_line) {
                kill_seen_at = Some(now);
            }
            for r in &mut routers {
                r.on_record(rec.clone(), now);
            }
        }
        for (r, out) in routers.iter_mut().zip(&mut routed) {
            out.extend(r.poll(now));
        }
    }
    for (r, out) in routers.iter_mut().zip(&mut routed) {
        out.extend(r.poll(Instant::now() + Duration::from_secs(5)));
    }
    let vst = victim.wait(Duration::from_secs(10));
    assert!(
        vst.is_some_and(|s| libc::WIFSIGNALED(s) && libc::WTERMSIG(s) == libc::SIGKILL),
        "the victim was not OOM-killed: {vst:?}"
    );
    let tst = trigger.wait(Duration::from_secs(20));
    assert!(tst.is_some_and(|s| libc::WIFEXITED(s)), "trigger: {tst:?}");

    for (policy, out) in [OomPolicy::VictimAndTrigger, OomPolicy::Victim]
        .iter()
        .zip(&routed)
    {
        let block: Vec<&Routed> = out
            .iter()
            .filter(|r| {
                r.how
                    == How::Oom {
                        victim_pid: victim.pid as u32,
                    }
            })
            .collect();
        let texts: Vec<String> = block
            .iter()
            .map(|r| String::from_utf8_lossy(&r.record.text).to_string())
            .collect();
        eprintln!(
            "{policy}: {} block records; first {:?}",
            block.len(),
            texts.first()
        );
        assert!(
            texts
                .first()
                .is_some_and(|t| t.contains(" invoked oom-killer: ")),
            "{policy}: the block does not start with the oom-killer line"
        );
        assert!(
            texts.last().is_some_and(|t| t.contains(&kill_line)),
            "{policy}: the block does not end with the Killed process line"
        );
        assert!(
            block.len() >= 10,
            "{policy}: block of only {} records",
            block.len()
        );
        let first = block.first().unwrap().record.seq;
        let last = block.last().unwrap().record.seq;
        // Nothing between the first and last line of the block was routed to the trigger's
        // namespace alone: it was all printed by the trigger on the victim's behalf.
        for r in out
            .iter()
            .filter(|r| (first..=last).contains(&r.record.seq))
        {
            if r.how
                != (How::Oom {
                    victim_pid: victim.pid as u32,
                })
            {
                assert!(
                    !r.targets.includes(net_b),
                    "record {} went to B",
                    r.record.seq
                );
            }
        }
        for r in &block {
            assert!(
                r.targets.includes(net_a),
                "block record not routed to the victim (A)"
            );
            match policy {
                OomPolicy::VictimAndTrigger => assert!(r.targets.includes(net_b)),
                OomPolicy::Victim => assert!(!r.targets.includes(net_b)),
            }
        }
        // The oom_reaper line (if the reaper had work to do) follows the victim.
        for r in out {
            let t = String::from_utf8_lossy(&r.record.text);
            if t.starts_with(&format!("oom_reaper: reaped process {} ", victim.pid)) {
                assert_eq!(r.how, How::OomReaper);
                assert!(r.targets.includes(net_a));
            }
        }
    }
    // SAFETY: closing our own pipe fds.
    unsafe {
        for fd in [ready_r, ready_w, go_r, go_w] {
            libc::close(fd);
        }
    }
    drop(victim);
    drop(trigger);
    drop(cg);
}
