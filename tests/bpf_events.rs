//! (a) BPF events on the real kernel: records written to the host `/dev/kmsg` from processes in
//! new namespaces produce events that carry those processes' namespace inodes, and the event's
//! `descriptor id − K` equals the record's `/dev/kmsg` sequence number.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::bpf::*;
use kmsgfs::attribution::router::{Event, EventKind, NetSource};
use kmsgfs::sources::bpf::{write_calibration_nonce, BpfConfig, BpfSource};

/// Calibrate K directly from a nonce: returns (K, events seen so far by id).
fn calibrate(src: &mut BpfSource, tail: &KmsgTail) -> (u64, HashMap<u64, Event>) {
    let nonce = write_calibration_nonce().expect("write nonce");
    let mut events = HashMap::new();
    let mut buf = Vec::new();
    let (mut seq, mut id) = (None, None);
    let end = Instant::now() + Duration::from_secs(10);
    while seq.is_none() || id.is_none() {
        assert!(Instant::now() < end, "calibration record or event not seen");
        if let Some(r) = tail.recv_timeout(Duration::from_millis(20)) {
            if r.text == nonce {
                seq = Some(r.seq);
            }
        }
        src.drain(&mut buf).unwrap();
        for e in buf.drain(..) {
            if e.kind == EventKind::Printk
                && e.len as usize == nonce.len()
                && e.matches_text(&nonce)
            {
                assert!(
                    !e.irq_stack,
                    "nonce written in task context flagged IRQ-stack"
                );
                id = Some(e.id);
            }
            events.insert(e.id, e);
        }
    }
    (id.unwrap().wrapping_sub(seq.unwrap()), events)
}

const NS_KINDS: [&str; 8] = [
    "net",
    "user",
    "pid",
    "pid_for_children",
    "mnt",
    "uts",
    "ipc",
    "cgroup",
];

fn ns_all(pid: u32) -> HashMap<&'static str, u32> {
    NS_KINDS.iter().map(|k| (*k, ns_of(pid, k))).collect()
}

/// The memory cgroup directory inode of `pid` (v1 `memory` hierarchy or v2), if findable.
fn memcg_inode(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in cg.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrl, path) = (parts.next()?, parts.next()?, parts.next()?);
        let dir = if ctrl.split(',').any(|c| c == "memory") {
            format!("/sys/fs/cgroup/memory{path}")
        } else if ctrl.is_empty()
            && std::fs::metadata("/sys/fs/cgroup/cgroup.controllers").is_ok()
            && !std::path::Path::new("/sys/fs/cgroup/memory").exists()
        {
            format!("/sys/fs/cgroup{path}")
        } else {
            continue;
        };
        return std::fs::metadata(dir).ok().map(|m| m.ino());
    }
    None
}

#[test]
fn a_events_carry_caller_namespaces_and_seq() {
    if !need_basics(&["unshare", "sh"]) {
        return;
    }
    let mut src = BpfSource::start(&BpfConfig::default())
        .unwrap_or_else(|e| panic!("BPF source failed to start: {e}"));
    assert!(src.status().printk_events);
    let tail = KmsgTail::start();
    let (k, mut events) = calibrate(&mut src, &tail);
    eprintln!("K = {k:#x}");

    let host = kmsgfs::sources::bpf::host_namespaces().unwrap();
    let tag = unique_tag("events");
    let script = r#"read x; echo "<6>$0" > /dev/kmsg"#;
    let mut kids = Vec::new();
    for (i, flags) in [
        vec!["-n", "-u"],
        vec!["-n", "-i"],
        vec!["-U", "-r", "-p", "-f", "-m", "-n", "-u", "-i", "-C"],
    ]
    .into_iter()
    .enumerate()
    {
        let t = format!("{tag}-{i}");
        let mut cmd = Command::new("unshare");
        cmd.args(&flags).args(["--", "sh", "-c", script, &t]);
        let sp = Spawned::new(&mut cmd);
        let pid = if flags.contains(&"-f") {
            first_child(sp.pid())
        } else {
            sp.pid()
        };
        wait_netns_change(pid, host.net);
        // The writer's namespaces, before it writes.
        let ns = ns_all(pid);
        let memcg = memcg_inode(pid);
        kids.push((t, sp, pid, ns, memcg, flags.contains(&"-U")));
    }
    for kid in &mut kids {
        kid.1.release();
    }
    for kid in &mut kids {
        assert!(
            kid.1.wait(Duration::from_secs(10)),
            "writer {} failed",
            kid.0
        );
    }

    // Collect the tagged records, and every record for the seq/text cross-check.
    let mut found: HashMap<String, u64> = HashMap::new();
    let mut records = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    let mut buf = Vec::new();
    while found.len() < kids.len() {
        assert!(
            Instant::now() < end,
            "tagged records not all seen: {found:?}"
        );
        if let Some(r) = tail.recv_timeout(Duration::from_millis(20)) {
            let text = String::from_utf8_lossy(&r.text).to_string();
            if kids.iter().any(|k| k.0 == text) {
                found.insert(text, r.seq);
            }
            records.push(r);
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    src.drain(&mut buf).unwrap();
    for e in buf.drain(..) {
        events.insert(e.id, e);
    }

    for (t, _, pid, ns, memcg, userns) in &kids {
        let seq = found[t];
        let ev = events
            .get(&seq.wrapping_add(k))
            .unwrap_or_else(|| panic!("no event with id = seq {seq} + K for {t}"));
        assert_eq!(ev.kind, EventKind::Printk);
        assert!(
            ev.matches_text(t.as_bytes()),
            "event at seq+K has different text"
        );
        assert_eq!(ev.len as usize, t.len());
        assert_eq!(ev.pid, *pid, "{t}: pid");
        assert_eq!(ev.tgid, *pid, "{t}: tgid");
        assert_eq!(ev.comm_str(), b"sh", "{t}: comm");
        assert!(!ev.irq_stack && !ev.kthread, "{t}: flags");
        assert_eq!(ev.net_source, NetSource::Task);
        let got = [
            ("net", ev.ns.net),
            ("user", ev.ns.user),
            ("pid", ev.ns.pid),
            ("pid_for_children", ev.ns.pid_for_children),
            ("mnt", ev.ns.mnt),
            ("uts", ev.ns.uts),
            ("ipc", ev.ns.ipc),
            ("cgroup", ev.ns.cgroup),
        ];
        for (kind, v) in got {
            assert_eq!(v, ns[kind], "{t}: namespace {kind}");
        }
        assert_eq!(ev.net, ns["net"]);
        if *userns {
            assert_eq!(ev.user_chain.as_slice(), &[ns["user"], host.user]);
            assert_eq!(ev.net_user_chain.as_slice(), &[ns["user"], host.user]);
            assert_eq!(ev.pid_chain.as_slice(), &[ns["pid"], host.pid]);
            assert_eq!(ev.pid_level, 1);
        } else {
            assert_eq!(ev.user_chain.as_slice(), &[host.user]);
            assert_eq!(ev.net_user_chain.as_slice(), &[host.user]);
            assert_eq!(ev.pid_chain.as_slice(), &[host.pid]);
        }
        if let Some(m) = memcg {
            assert_eq!(ev.memcg_id, *m, "{t}: memory cgroup id");
        }
    }

    // Every record seen during the test whose event we have: same text prefix at seq + K.
    let mut checked = 0;
    for r in &records {
        if let Some(ev) = events.get(&r.seq.wrapping_add(k)) {
            if ev.kind == EventKind::Printk {
                assert!(
                    ev.matches_text(&r.text),
                    "seq {} joined to the wrong event",
                    r.seq
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= kids.len());
    let ks = src.kernel_stats().unwrap();
    assert_eq!(ks.drops, 0, "ring buffer dropped events");
    assert_eq!(src.decode_errors(), 0);
}

/// A segfault report is one record printed as several `KERN_CONT` fragments (`" in …"`,
/// `" likely on CPU …"`): the continuation events carry the first fragment's descriptor id,
/// and the merged record is attributed to the crashing task's namespace.
#[test]
fn a_continuation_fragments_link_to_their_record() {
    if !need_basics(&[]) {
        return;
    }
    if !require(
        std::fs::read_to_string("/proc/sys/debug/exception-trace").is_ok_and(|s| s.trim() != "0"),
        "debug.exception-trace=1 (the kernel prints segfault reports)",
    ) {
        return;
    }
    let mut src = BpfSource::start(&BpfConfig::default())
        .unwrap_or_else(|e| panic!("BPF source failed to start: {e}"));
    let tail = KmsgTail::start();
    let (k, mut events) = calibrate(&mut src, &tail);
    let host = kmsgfs::sources::bpf::host_namespaces().unwrap();

    // SAFETY: the child only makes raw system calls and then faults; it never returns.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: child after fork: async-signal-safe calls only, then a deliberate fault.
        unsafe {
            libc::prctl(libc::PR_SET_DUMPABLE, 0); // no core file
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                libc::_exit(10);
            }
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            libc::usleep(200_000);
            std::ptr::write_volatile(std::ptr::null_mut::<u8>().wrapping_add(8), 1);
            libc::_exit(11);
        }
    }
    let net = wait_netns_change(pid as u32, host.net);
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    assert!(
        libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSEGV,
        "status {st}"
    );

    let marker = format!("[{pid}]: segfault at ");
    let end = Instant::now() + Duration::from_secs(10);
    let rec = loop {
        assert!(
            Instant::now() < end,
            "no segfault record for pid {pid} (printk ratelimited?)"
        );
        if let Some(r) = tail.recv_timeout(Duration::from_millis(20)) {
            if String::from_utf8_lossy(&r.text).contains(&marker) {
                break r;
            }
        }
    };
    std::thread::sleep(Duration::from_millis(50));
    let mut buf = Vec::new();
    src.drain(&mut buf).unwrap();
    let conts: Vec<Event> = buf
        .iter()
        .filter(|e| e.kind == EventKind::Continuation && e.id == rec.seq.wrapping_add(k))
        .cloned()
        .collect();
    for e in buf {
        events.entry(e.id).or_insert(e);
    }
    let first = &events[&rec.seq.wrapping_add(k)];
    assert_eq!(first.kind, EventKind::Printk);
    assert!(first.matches_text(&rec.text));
    assert!(
        (first.len as usize) < rec.text.len(),
        "the record was not built from fragments"
    );
    assert_eq!(first.ns.net, net);
    eprintln!(
        "record of {} bytes: first fragment {} bytes, {} continuation events",
        rec.text.len(),
        first.len,
        conts.len()
    );
    assert!(
        !conts.is_empty(),
        "no continuation event linked to seq {}",
        rec.seq
    );
    let total: usize = first.len as usize + conts.iter().map(|c| c.len as usize).sum::<usize>();
    assert_eq!(
        total,
        rec.text.len(),
        "fragment lengths add up to the record"
    );
    for c in &conts {
        assert_eq!(c.ns.net, net, "continuation from the same task");
        assert_eq!(c.pid, pid as u32);
    }
    assert!(src.kernel_stats().unwrap().cont >= conts.len() as u64);
}
