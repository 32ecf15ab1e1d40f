//! Benchmark note for docs/attribution.md (not a pass/fail test; ignored by default):
//! BPF run time per printk and per received packet, from the kernel's per-program statistics
//! (enabled through a `BPF_ENABLE_STATS` fd only while measuring; no sysctl is changed), and
//! the writer's wall time per `/dev/kmsg` write with and without the programs attached.
//!
//! `cargo test --release --test bpf_overhead -- --ignored --nocapture`

mod bpf_common;

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use bpf_common::*;
use kmsgfs::sources::bpf::{BpfConfig, BpfSource, StatsGuard};

const WRITES: usize = 5000;

/// Write `n` records, reopening `/dev/kmsg` every 10 writes (per-fd ratelimit); µs per write.
fn write_burst(tag: &str, n: usize) -> f64 {
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
        let line = format!("<7>{tag} {i}\n");
        f.as_mut().unwrap().write_all(line.as_bytes()).unwrap();
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn overhead_per_printk_and_per_packet() {
    if !need_basics(&["unshare", "ping", "ip"]) {
        return;
    }
    let tag = run_tag("bench");
    let base = write_burst(&tag, WRITES);
    let mut src = BpfSource::start(&BpfConfig::default()).unwrap();
    let stats = StatsGuard::enable().unwrap();
    let mut buf = Vec::new();
    let with = write_burst(&tag, WRITES);
    src.drain(&mut buf).unwrap();
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
    let run = src.run_stats();
    drop(stats);
    src.drain(&mut buf).unwrap();
    for p in &run {
        let per = if p.run_cnt > 0 {
            p.run_time_ns as f64 / p.run_cnt as f64
        } else {
            0.0
        };
        eprintln!("{}: {} runs, {:.0} ns per run", p.name, p.run_cnt, per);
    }
    eprintln!(
        "writer: {base:.2} µs per write without BPF, {with:.2} µs with ({} events drained, \
         kernel {:?})",
        buf.len(),
        src.kernel_stats().unwrap()
    );
}
