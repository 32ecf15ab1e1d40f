//! Many callers at once, and the agent and `/proc/kmsg` sharing one destructive cursor
//! (kmsg-semantics B4.4, C8). Root only.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::support::seccomp::*;
use kmsgfs::frontends::proc_kmsg::{self, ReadResult};

fn ready() -> bool {
    require_root() && require_tool("busybox")
}

/// Six "containers" (own listener, own ring) call `dmesg` in loops while their rings grow;
/// each sees only its own ring.
#[test]
fn many_listeners_served_concurrently() {
    if !ready() {
        return;
    }
    let h = Harness::new(&[]);
    let tags: Vec<String> = (0..6).map(|i| unique_tag(&format!("c{i}"))).collect();
    let rings: Vec<_> = tags
        .iter()
        .map(|t| ring_with(&[format!("{t} first")]))
        .collect();
    for (i, r) in rings.iter().enumerate() {
        h.resolver.add(&format!("c{i}"), r.clone());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (rings, tags, stop) = (rings.clone(), tags.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (r, t) in rings.iter().zip(&tags) {
                    push(r, 2_000_000 + n, &format!("{t} more {n}"));
                }
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    let script = "i=0; while [ $i -lt 40 ]; do busybox dmesg >/dev/null || exit 1; \
                  busybox dmesg -n 3 || exit 1; i=$((i+1)); done; busybox dmesg";
    let children: Vec<_> = (0..6)
        .map(|i| {
            let mut cmd = Command::new("busybox");
            cmd.args(["sh", "-c", script]);
            let (child, listener) = spawn_filtered(cmd);
            kmsgfs::frontends::seccomp::send_listener(
                &h.socket(),
                child.id(),
                std::os::fd::AsFd::as_fd(&listener),
                key(&format!("c{i}")),
            )
            .unwrap();
            child
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = ok(&wait_output(child, TIMEOUT), &format!("caller {i}"));
        assert!(out.contains(&format!("{} first", tags[i])), "{out:?}");
        for (j, t) in tags.iter().enumerate() {
            if j != i {
                assert!(!out.contains(t.as_str()), "caller {i} saw ring {j}");
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    for r in &rings {
        assert_eq!(r.syslog_state().console_level, 3);
    }
    assert!(h.agent.stats().answered >= 6 * 81);
}

/// klogd (syslog READ through the agent) and a `/proc/kmsg` reader drain one ring at the same
/// time: every record is delivered exactly once, to one of them.
#[test]
fn c8_agent_read_and_proc_kmsg_share_one_cursor() {
    if !ready() {
        return;
    }
    let tag = unique_tag("shared");
    let h = Harness::new(&[]);
    let mut klogd = Klogd::start(&h);
    h.wait_stats("klogd's READ to be parked", |s| s.parked == 1);

    const N: usize = 300;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (ring, stop) = (h.ring.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut got = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match proc_kmsg::read(&ring, 300, true, true) {
                    ReadResult::Data(d) => got.extend(d),
                    ReadResult::Again => std::thread::yield_now(),
                    other => panic!("/proc/kmsg read: {other:?}"),
                }
            }
            String::from_utf8(got).unwrap()
        })
    };
    for i in 0..N {
        push(&h.ring, 1_000_000 + i as u64, &format!("{tag} rec {i:04}"));
        if i % 16 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    // Drain: wait until the shared cursor reached the end, then stop the reader.
    wait_until("the ring to be drained", || {
        h.ring.syslog_state().seq == h.ring.next_seq()
    });
    stop.store(true, Ordering::Relaxed);
    let from_proc = reader.join().unwrap();

    let ids = |text: &str| -> Vec<usize> {
        text.match_indices(&format!("{tag} rec "))
            .map(|(at, m)| text[at + m.len()..at + m.len() + 4].parse().unwrap())
            .collect()
    };
    let proc_ids = ids(&from_proc);
    // Whatever /proc/kmsg did not get, klogd must have logged.
    let mut klogd_ids = Vec::new();
    let want: BTreeSet<usize> = (0..N).collect();
    let mut all: BTreeSet<usize> = proc_ids.iter().copied().collect();
    while all != want {
        let m = klogd.recv();
        for id in ids(&m) {
            klogd_ids.push(id);
            all.insert(id);
        }
    }
    let mut both: Vec<usize> = proc_ids.iter().chain(&klogd_ids).copied().collect();
    both.sort_unstable();
    let dupes: Vec<_> = both
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    assert!(dupes.is_empty(), "delivered twice: {dupes:?}");
    assert!(!proc_ids.is_empty() || !klogd_ids.is_empty());
    eprintln!(
        "/proc/kmsg got {} records, klogd {}",
        proc_ids.len(),
        klogd_ids.len()
    );
}

const MT_ENV: &str = "KMSGFS_MT_HELPER_EXPECT";

/// A multi-threaded caller: the notification names the calling thread (TID), and the answer
/// is written into that thread's buffer through `/proc/<tid>/mem` (seccomp-agent.md §13). The
/// test binary re-executes itself under the filter as [`mt_helper`].
#[test]
fn threads_of_one_caller_each_get_their_answer() {
    if !require_root() {
        return;
    }
    let tag = unique_tag("mt");
    let h = Harness::new(&[format!("{tag} one"), format!("{tag} two")]);
    let expect = format!("<6>[    1.000000] {tag} one\n<6>[    2.000000] {tag} two\n");
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "seccomp_concurrency::mt_helper",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(MT_ENV, &expect);
    let (child, listener) = spawn_filtered(cmd);
    kmsgfs::frontends::seccomp::send_listener(
        &h.socket(),
        child.id(),
        std::os::fd::AsFd::as_fd(&listener),
        std::collections::BTreeMap::new(),
    )
    .unwrap();
    drop(listener);
    let o = wait_output(child, TIMEOUT);
    let out = ok(&o, "the multi-threaded helper");
    assert!(out.contains("MT-HELPER-DONE 800"), "{out:?} {}", stderr(&o));
}

/// Helper of [`threads_of_one_caller_each_get_their_answer`]; does nothing unless started by it.
#[test]
fn mt_helper() {
    let Ok(expect) = std::env::var(MT_ENV) else {
        return; // A helper: the outer test runs it under the filter.
    };
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let expect = expect.clone();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    let mut buf = vec![0u8; 4096];
                    let n = raw_syslog(3, buf.as_mut_ptr() as u64, buf.len() as i32);
                    assert_eq!(n, expect.len() as i64, "READ_ALL");
                    assert_eq!(&buf[..n as usize], expect.as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    println!("MT-HELPER-DONE {}", 8 * 100);
}
