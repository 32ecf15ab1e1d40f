//! (b) Acceptance test of the issue: 4 network namespaces each write 2,500 records of the SAME
//! text to the host `/dev/kmsg`, concurrently. Routed by the BPF source + router (the real host
//! `/dev/kmsg` is read by a small reader here, not by the FUSE daemon), each namespace's set
//! holds exactly its own 2,500 records and the host all 10,000.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::bpf::*;
use kmsgfs::attribution::pipeline::Attribution;
use kmsgfs::attribution::router::{How, RouterConfig, Targets};
use kmsgfs::sources::bpf::{host_namespaces, BpfConfig};

const WRITERS: usize = 4;
const PER_WRITER: usize = 2500;

#[test]
fn b_identical_text_from_four_namespaces_is_routed_exactly() {
    if !need_basics(&["unshare", "sh", "nice"]) {
        return;
    }
    let host = host_namespaces().unwrap();
    let tail = KmsgTail::start();
    let t0 = Instant::now();
    let mut attr = Attribution::start(&BpfConfig::default(), RouterConfig::new(host), t0);
    assert!(
        attr.status().bpf,
        "BPF did not start: {}",
        attr.status().summary()
    );

    let text = format!("{} identical text", unique_tag("identical"));
    let script = format!(
        r#"read x; i=0; while [ $i -lt {PER_WRITER} ]; do echo "<6>{text}" > /dev/kmsg; i=$((i+1)); done"#
    );
    let (mut writers, nets) = start_netns_writers(WRITERS, &script, host.net);

    let mut per_ns: HashMap<u32, usize> = nets.iter().map(|n| (*n, 0)).collect();
    let mut host_count = 0usize;
    let mut unowned = 0usize;
    let mut multi = 0usize;
    let mut not_exact = 0usize;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut writers_done_at: Option<Instant> = None;
    while host_count < WRITERS * PER_WRITER {
        let now = Instant::now();
        assert!(now < deadline, "timed out with {host_count} records routed");
        if let Some(done) = writers_done_at {
            assert!(
                now < done + Duration::from_secs(20),
                "writers finished but only {host_count} records were routed (reader lost {})",
                tail.lost.load(Ordering::Relaxed)
            );
        } else if writers
            .iter_mut()
            .all(|w| matches!(w.child.try_wait(), Ok(Some(_))))
        {
            writers_done_at = Some(now);
        }
        let mut n = 0;
        while let Ok(rec) = tail.rx.try_recv() {
            attr.on_host_record(rec, Instant::now());
            n += 1;
            if n >= 512 {
                break;
            }
        }
        if n == 0 {
            if let Some(r) = tail.recv_timeout(Duration::from_millis(5)) {
                attr.on_host_record(r, Instant::now());
            }
        }
        for r in attr.poll(Instant::now()) {
            if r.record.text != text.as_bytes() {
                continue;
            }
            host_count += 1;
            if r.how != How::Exact {
                not_exact += 1;
            }
            let owners: Vec<u32> = nets
                .iter()
                .copied()
                .filter(|n| r.targets.includes(*n))
                .collect();
            match owners.len() {
                0 => unowned += 1,
                1 => *per_ns.get_mut(&owners[0]).unwrap() += 1,
                _ => multi += 1,
            }
            assert!(
                !matches!(r.targets, Targets::All),
                "a record was routed to every ring"
            );
        }
    }
    for w in &mut writers {
        assert!(w.wait(Duration::from_secs(30)), "a writer failed");
    }
    let stats = attr.stats();
    eprintln!(
        "per namespace: {per_ns:?}; host {host_count}; unowned {unowned}; multi {multi}; \
         not exact {not_exact}; counters {:?}; kernel {:?}",
        stats.counters, stats.kernel
    );
    assert_eq!(
        tail.lost.load(Ordering::Relaxed),
        0,
        "the test's kmsg reader was overrun"
    );
    assert_eq!(host_count, WRITERS * PER_WRITER);
    assert_eq!(unowned, 0);
    assert_eq!(multi, 0);
    assert_eq!(not_exact, 0);
    for n in &nets {
        assert_eq!(per_ns[n], PER_WRITER, "namespace {n}");
    }
    assert_eq!(stats.counters.verify_mismatch, 0);
    assert_eq!(stats.kernel.map(|k| k.drops), Some(0));
}
