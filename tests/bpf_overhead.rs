//! Benchmark for docs/benchmarks.md ("BPF attribution and routing") and docs/attribution.md §6
//! (the measurement is ignored by default; it is not a pass/fail test):
//!
//! * the writer's wall time per host `/dev/kmsg` write with the attribution programs detached
//!   and attached, side by side: `ALTERNATIONS` pairs of `BATCH` writes, the programs loaded
//!   and attached before each attached batch and dropped (detached) after it, the order inside
//!   a pair alternating so that drift hits both sides alike; medians, ranges and the ratio;
//! * BPF run time per printk and per received packet, from the kernel's per-program statistics
//!   (enabled through a `BPF_ENABLE_STATS` fd only while the programs are attached; no sysctl
//!   is changed).
//!
//! 40,000 tagged debug-level (`<7>`) records are written to the host log in all.
//!
//! `cargo test --release --test bpf_overhead -- --ignored --nocapture`

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use crate::support::bpf::*;
use kmsgfs::sources::bpf::{BpfConfig, BpfSource, StatsGuard};

/// Detached/attached pairs.
const ALTERNATIONS: usize = 10;
/// Writes per batch.
const BATCH: usize = 2000;

/// Write `n` records, reopening `/dev/kmsg` every 10 writes (per-fd ratelimit); µs per write.
fn write_burst(tag: &str, side: &str, round: usize, n: usize) -> f64 {
    let t = Instant::now();
    let mut f = None;
    for i in 0..n {
        if i % 10 == 0 {
            f = Some(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/kmsg")
                    .unwrap(),
            );
        }
        let line = format!("<7>{tag} {side} {round} {i}\n");
        f.as_mut().unwrap().write_all(line.as_bytes()).unwrap();
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Median, minimum and maximum.
fn summary(v: &[f64]) -> (f64, f64, f64) {
    assert!(!v.is_empty(), "no samples");
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    let median = if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    };
    (median, s[0], s[s.len() - 1])
}

#[test]
fn summary_gives_median_and_range() {
    assert_eq!(summary(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
    assert_eq!(summary(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
    assert_eq!(summary(&[7.0]), (7.0, 7.0, 7.0));
}

/// Per-program totals over several attach periods.
#[derive(Default)]
struct Runs {
    progs: Vec<(&'static str, u64, u64)>,
}

impl Runs {
    fn add(&mut self, src: &BpfSource) {
        for p in src.run_stats() {
            match self.progs.iter_mut().find(|(n, _, _)| *n == p.name) {
                Some(e) => {
                    e.1 += p.run_cnt;
                    e.2 += p.run_time_ns;
                }
                None => self.progs.push((p.name, p.run_cnt, p.run_time_ns)),
            }
        }
    }
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn overhead_per_printk_and_per_packet() {
    if !need_basics(&["unshare", "ping", "ip"]) {
        return;
    }
    let tag = unique_tag("bench");
    let mut detached = Vec::new();
    let mut attached = Vec::new();
    let mut printk = Runs::default();
    let mut events = 0usize;
    let mut buf = Vec::new();
    for round in 0..ALTERNATIONS {
        for attach_first in [round % 2 == 1, round % 2 == 0] {
            if !attach_first {
                detached.push(write_burst(&tag, "off", round, BATCH));
                continue;
            }
            let mut src = BpfSource::start(&BpfConfig::default()).unwrap();
            let stats = StatsGuard::enable().unwrap();
            attached.push(write_burst(&tag, "on", round, BATCH));
            drop(stats);
            printk.add(&src);
            src.drain(&mut buf).unwrap();
            events += buf.len();
            buf.clear();
            eprintln!(
                "round {round}: kernel {:?}, decode errors {}",
                src.kernel_stats().unwrap(),
                src.decode_errors()
            );
        }
    }

    // Per packet: a separate attach period with only loopback pings.
    let mut src = BpfSource::start(&BpfConfig::default()).unwrap();
    let stats = StatsGuard::enable().unwrap();
    let ping = Command::new("unshare")
        .args([
            "-n",
            "sh",
            "-c",
            "ip link set lo up && ping -q -f -c 5000 127.0.0.1 >/dev/null",
        ])
        .status()
        .unwrap();
    assert!(ping.success());
    let mut packets = Runs::default();
    packets.add(&src);
    drop(stats);
    src.drain(&mut buf).unwrap();

    let per = |cnt: u64, ns: u64| if cnt > 0 { ns as f64 / cnt as f64 } else { 0.0 };
    for (name, cnt, ns) in &printk.progs {
        eprintln!(
            "writes: {name}: {cnt} runs, {:.0} ns per run",
            per(*cnt, *ns)
        );
    }
    for (name, cnt, ns) in &packets.progs {
        eprintln!(
            "pings: {name}: {cnt} runs, {:.0} ns per run",
            per(*cnt, *ns)
        );
    }
    let (dm, dlo, dhi) = summary(&detached);
    let (am, alo, ahi) = summary(&attached);
    let pair: Vec<f64> = attached.iter().zip(&detached).map(|(a, d)| a / d).collect();
    let (pm, plo, phi) = summary(&pair);
    eprintln!("detached µs/write per batch: {detached:.2?}");
    eprintln!("attached µs/write per batch: {attached:.2?}");
    eprintln!(
        "writer: {ALTERNATIONS} × {BATCH} writes per side; detached median {dm:.2} µs \
         ({dlo:.2}–{dhi:.2}), attached median {am:.2} µs ({alo:.2}–{ahi:.2}), ratio of medians \
         {:.2}; per-pair ratio median {pm:.2} ({plo:.2}–{phi:.2}); {events} events drained",
        am / dm
    );
}
