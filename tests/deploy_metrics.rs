//! `DIR/metrics` through the real FUSE mount: the stats in Prometheus text format, listed in the
//! root directory, readable by host root.

use crate::support::{require_root, Daemon};

#[test]
fn metrics_file_exposes_the_stats_in_prometheus_format() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    d.feed(6, "metrics test record");
    d.wait_host_records(1);
    let names: Vec<String> = std::fs::read_dir(d.dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "metrics"), "{names:?}");
    let text = std::fs::read_to_string(d.dir().join("metrics")).expect("read DIR/metrics");
    assert!(
        text.contains("# TYPE kmsgfs_host_records_read_total counter"),
        "{text}"
    );
    let read = text
        .lines()
        .find(|l| l.starts_with("kmsgfs_host_records_read_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no host records sample:\n{text}"));
    assert!(read >= 1, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("kmsgfs_ring_records_in_total{") && l.contains("host=\"true\"")),
        "{text}"
    );
    // Every sample line is `name{labels} value` or `name value`.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let v = l.rsplit(' ').next().unwrap();
        assert!(v.parse::<u64>().is_ok(), "bad sample line {l:?}");
    }
}
