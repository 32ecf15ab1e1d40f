//! `DIR/metrics`: the daemon's counters in the Prometheus text exposition format (0.0.4).
//!
//! [`render`] is a pure function of the typed stats ([`StatsReport`]), the same value that
//! `DIR/stats` shows as JSON, so the two files can never disagree; every router counter shows
//! up here through [`Counters::fields`], which names each field of the struct.
//!
//! Families:
//!
//! * `kmsgfs_host_*`: the host kernel log reader (records read, lost, overruns, parse errors).
//! * `kmsgfs_ring_*{ring,kind,host}`: per ring, records in (`appended`, `writes`), held
//!   (`records`, `bytes`), overwritten before being read by everyone (`overruns`), writes dropped
//!   by the `--devkmsg ratelimit` policy, and open readers.
//! * `kmsgfs_attribution_records_total{method}` and
//!   `kmsgfs_unattributed_records_total{reason}`: how BPF attribution decided records' owners
//!   (the router's [`Counters`]); its other counters become
//!   `kmsgfs_router_<field>_total`, and `kmsgfs_attribution_bpf_active` is 1 while the BPF
//!   programs run (`attribution.source.bpf`).
//! * `kmsgfs_open_files`, `kmsgfs_interrupts_*`.
//!
//! Objects the daemon does not have (no restart holder, no attribution yet) are left out rather
//! than reported as zero.

use std::fmt::Write as _;

use crate::attribution::router::{CounterGroup, Counters};
use crate::frontends::stats::{RestartReport, StatsReport};
use crate::ring::registry::RingReport;
use crate::sources::host::HostReport;

/// Content type of the exposition, for anyone serving the file over HTTP.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

struct Family {
    name: String,
    kind: Kind,
    help: String,
    samples: Vec<(String, u64)>,
}

#[derive(Default)]
struct Out {
    families: Vec<Family>,
}

impl Out {
    fn sample(&mut self, name: &str, kind: Kind, help: &str, labels: &[(&str, &str)], v: u64) {
        let labels = format_labels(labels);
        if let Some(f) = self.families.iter_mut().find(|f| f.name == name) {
            f.samples.push((labels, v));
            return;
        }
        self.families.push(Family {
            name: name.to_string(),
            kind,
            help: help.to_string(),
            samples: vec![(labels, v)],
        });
    }

    fn finish(self) -> String {
        let mut s = String::new();
        for f in self.families {
            let _ = writeln!(s, "# HELP {} {}", f.name, f.help);
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(s, "# TYPE {} {kind}", f.name);
            for (labels, v) in f.samples {
                let _ = writeln!(s, "{}{labels} {v}", f.name);
            }
        }
        s
    }
}

fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn format_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// The Prometheus text exposition of the daemon's statistics.
pub fn render(stats: &StatsReport) -> String {
    let mut out = Out::default();
    host(&mut out, &stats.host);
    if let Some(r) = &stats.restart {
        restart(&mut out, r);
    }
    for r in &stats.rings {
        ring(&mut out, r);
    }
    if let Some(a) = &stats.attribution {
        out.sample(
            "kmsgfs_attribution_bpf_active",
            Kind::Gauge,
            "1 when BPF attribution programs are loaded and attached.",
            &[],
            u64::from(a.source.bpf),
        );
        attribution(&mut out, &a.counters);
    }
    out.sample(
        "kmsgfs_open_files",
        Kind::Gauge,
        "Files open on the kmsgfs mount.",
        &[],
        stats.open_files as u64,
    );
    let i = &stats.interrupts;
    out.sample(
        "kmsgfs_interrupts_delivered_total",
        Kind::Counter,
        "FUSE INTERRUPTs that ended a parked read.",
        &[],
        i.delivered,
    );
    out.sample(
        "kmsgfs_interrupts_unmatched_total",
        Kind::Counter,
        "FUSE INTERRUPTs for requests no longer parked.",
        &[],
        i.unmatched,
    );
    out.finish()
}

fn host(out: &mut Out, h: &HostReport) {
    use Kind::Counter;
    let l = [("source", h.source.as_str())];
    let samples: [(&str, &str, u64); 5] = [
        (
            "kmsgfs_host_records_read_total",
            "Host kernel log records read and appended to the host ring.",
            h.records_read,
        ),
        (
            "kmsgfs_host_records_lost_total",
            "Host records the kernel overwrote before kmsgfs read them (sequence gaps).",
            h.records_lost,
        ),
        (
            "kmsgfs_host_overruns_total",
            "EPIPE results while reading the host kernel log.",
            h.overruns,
        ),
        (
            "kmsgfs_host_parse_errors_total",
            "Host records that did not parse and were skipped.",
            h.parse_errors,
        ),
        (
            "kmsgfs_host_records_resumed_total",
            "Host records skipped at start-up because the adopted host ring already held them.",
            h.records_resumed,
        ),
    ];
    for (name, help, v) in samples {
        out.sample(name, Counter, help, &l, v);
    }
}

fn restart(out: &mut Out, r: &RestartReport) {
    use Kind::{Counter, Gauge};
    let samples: [(&str, Kind, &str, u64); 8] = [
        (
            "kmsgfs_restarts_total",
            Counter,
            "Daemon restarts the rings survived (daemons that adopted the host ring from the holder).",
            r.restarts,
        ),
        (
            "kmsgfs_restart_adopted_rings",
            Gauge,
            "Rings this daemon adopted from the holder at start-up (records and cursors of the previous daemon).",
            r.adopted_rings,
        ),
        (
            "kmsgfs_restart_refused_rings",
            Gauge,
            "Rings kept by the holder that this daemon could not adopt (dropped).",
            r.refused_rings,
        ),
        (
            "kmsgfs_restart_unkept_rings_total",
            Counter,
            "Rings the holder could not keep (served from memory, lost on a restart).",
            r.unkept_rings,
        ),
        (
            "kmsgfs_restart_adopted_fuse_fds",
            Gauge,
            "/dev/fuse fds of the live connection this daemon adopted from the holder (0: it mounted afresh).",
            r.adopted_fuse_fds,
        ),
        (
            "kmsgfs_restart_adopted_open_files",
            Gauge,
            "Open kmsg and proc-kmsg files this daemon took over from the previous daemon.",
            r.adopted_open_files,
        ),
        (
            "kmsgfs_restart_lost_open_files",
            Gauge,
            "Open files of the previous daemon whose ring did not survive (their reads get EBADF).",
            r.lost_open_files,
        ),
        (
            "kmsgfs_restart_adopted_listeners",
            Gauge,
            "seccomp listeners this daemon's syslog(2) agent took over from the holder.",
            r.adopted_listeners,
        ),
    ];
    for (name, kind, help, v) in samples {
        out.sample(name, kind, help, &[], v);
    }
}

fn ring(out: &mut Out, r: &RingReport) {
    use Kind::{Counter, Gauge};
    let host = if r.host { "true" } else { "false" };
    let l = [("ring", r.key.as_str()), ("kind", r.kind), ("host", host)];
    let samples: [(&str, Kind, &str, u64); 7] = [
        (
            "kmsgfs_ring_records_in_total",
            Counter,
            "Records appended to the ring (routed kernel records and writes).",
            r.appended,
        ),
        (
            "kmsgfs_ring_writes_total",
            Counter,
            "Writes to the ring's kmsg file.",
            r.writes,
        ),
        (
            "kmsgfs_ring_writes_dropped_total",
            Counter,
            "Writes dropped by the --devkmsg ratelimit policy.",
            r.writes_dropped_ratelimit,
        ),
        (
            "kmsgfs_ring_overruns_total",
            Counter,
            "Records overwritten to make room for new ones.",
            r.overruns,
        ),
        (
            "kmsgfs_ring_records",
            Gauge,
            "Records currently held in the ring.",
            r.records,
        ),
        (
            "kmsgfs_ring_bytes",
            Gauge,
            "Bytes currently held in the ring.",
            r.bytes,
        ),
        (
            "kmsgfs_ring_readers",
            Gauge,
            "Open kmsg files reading the ring.",
            r.open_readers,
        ),
    ];
    for (name, kind, help, v) in samples {
        out.sample(name, kind, help, &l, v);
    }
}

fn attribution(out: &mut Out, c: &Counters) {
    for (group, field, v) in c.fields() {
        match group {
            CounterGroup::Method => out.sample(
                "kmsgfs_attribution_records_total",
                Kind::Counter,
                "Host records by how their owning namespace was decided.",
                &[("method", field)],
                v,
            ),
            CounterGroup::Reason => out.sample(
                "kmsgfs_unattributed_records_total",
                Kind::Counter,
                "Host records left without an owner, by reason.",
                &[("reason", field)],
                v,
            ),
            CounterGroup::Other => out.sample(
                // Its own prefix: `kmsgfs_attribution_records_total` is the method family, and
                // the router's plain `records` counter must not land in it unlabelled.
                &format!("kmsgfs_router_{field}_total"),
                Kind::Counter,
                &format!("Router counter `{field}` of the stats file."),
                &[],
                v,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::pipeline::AttributionStats;
    use crate::attribution::router::{KeyKind, RouterStatus};
    use crate::frontends::stats::{DeliveryReport, InterruptReport};
    use crate::sources::bpf::AttributionStatus;

    fn ring_report(inode: u64, host: bool) -> RingReport {
        RingReport {
            key: format!("net:[{inode}]"),
            kind: "net",
            inode,
            host,
            ns_id: None,
            records: 0,
            bytes: 0,
            appended: 0,
            overruns: 0,
            first_seq: 0,
            next_seq: 0,
            clear_seq: 0,
            open_readers: 0,
            holders: 0,
            writes: 0,
            writes_dropped_ratelimit: 0,
            retired: false,
        }
    }

    fn stats() -> StatsReport {
        StatsReport {
            version: "0.1.0",
            key: "net",
            devkmsg: "on",
            restrict: "root",
            threads: 2,
            host: HostReport {
                source: "/dev/kmsg".into(),
                records_read: 10,
                records_lost: 1,
                overruns: 2,
                parse_errors: 0,
                records_resumed: 0,
            },
            rings: vec![
                RingReport {
                    records: 10,
                    bytes: 640,
                    appended: 12,
                    overruns: 2,
                    ..ring_report(4026531840, true)
                },
                RingReport {
                    records: 3,
                    bytes: 120,
                    appended: 3,
                    open_readers: 1,
                    writes: 3,
                    writes_dropped_ratelimit: 1,
                    ..ring_report(4026532001, false)
                },
            ],
            named_rings: Vec::new(),
            open_files: 1,
            interrupts: InterruptReport {
                delivered: 0,
                unmatched: 0,
            },
            delivery: DeliveryReport {
                stale: 0,
                refused_max_rings: 0,
            },
            restart: None,
            attribution: None,
        }
    }

    fn attribution(counters: Counters) -> AttributionStats {
        AttributionStats {
            source: AttributionStatus {
                bpf: true,
                reason: None,
                ..AttributionStatus::off(String::new())
            },
            router: RouterStatus {
                key: KeyKind::Net,
                k: Some(5),
                exact_join: true,
                bpf: true,
                calibrating: false,
                pending: 0,
                stored_events: 0,
            },
            counters,
            kernel: None,
        }
    }

    #[test]
    fn golden_exposition() {
        let want = r#"# HELP kmsgfs_host_records_read_total Host kernel log records read and appended to the host ring.
# TYPE kmsgfs_host_records_read_total counter
kmsgfs_host_records_read_total{source="/dev/kmsg"} 10
# HELP kmsgfs_host_records_lost_total Host records the kernel overwrote before kmsgfs read them (sequence gaps).
# TYPE kmsgfs_host_records_lost_total counter
kmsgfs_host_records_lost_total{source="/dev/kmsg"} 1
# HELP kmsgfs_host_overruns_total EPIPE results while reading the host kernel log.
# TYPE kmsgfs_host_overruns_total counter
kmsgfs_host_overruns_total{source="/dev/kmsg"} 2
# HELP kmsgfs_host_parse_errors_total Host records that did not parse and were skipped.
# TYPE kmsgfs_host_parse_errors_total counter
kmsgfs_host_parse_errors_total{source="/dev/kmsg"} 0
# HELP kmsgfs_host_records_resumed_total Host records skipped at start-up because the adopted host ring already held them.
# TYPE kmsgfs_host_records_resumed_total counter
kmsgfs_host_records_resumed_total{source="/dev/kmsg"} 0
# HELP kmsgfs_ring_records_in_total Records appended to the ring (routed kernel records and writes).
# TYPE kmsgfs_ring_records_in_total counter
kmsgfs_ring_records_in_total{ring="net:[4026531840]",kind="net",host="true"} 12
kmsgfs_ring_records_in_total{ring="net:[4026532001]",kind="net",host="false"} 3
# HELP kmsgfs_ring_writes_total Writes to the ring's kmsg file.
# TYPE kmsgfs_ring_writes_total counter
kmsgfs_ring_writes_total{ring="net:[4026531840]",kind="net",host="true"} 0
kmsgfs_ring_writes_total{ring="net:[4026532001]",kind="net",host="false"} 3
# HELP kmsgfs_ring_writes_dropped_total Writes dropped by the --devkmsg ratelimit policy.
# TYPE kmsgfs_ring_writes_dropped_total counter
kmsgfs_ring_writes_dropped_total{ring="net:[4026531840]",kind="net",host="true"} 0
kmsgfs_ring_writes_dropped_total{ring="net:[4026532001]",kind="net",host="false"} 1
# HELP kmsgfs_ring_overruns_total Records overwritten to make room for new ones.
# TYPE kmsgfs_ring_overruns_total counter
kmsgfs_ring_overruns_total{ring="net:[4026531840]",kind="net",host="true"} 2
kmsgfs_ring_overruns_total{ring="net:[4026532001]",kind="net",host="false"} 0
# HELP kmsgfs_ring_records Records currently held in the ring.
# TYPE kmsgfs_ring_records gauge
kmsgfs_ring_records{ring="net:[4026531840]",kind="net",host="true"} 10
kmsgfs_ring_records{ring="net:[4026532001]",kind="net",host="false"} 3
# HELP kmsgfs_ring_bytes Bytes currently held in the ring.
# TYPE kmsgfs_ring_bytes gauge
kmsgfs_ring_bytes{ring="net:[4026531840]",kind="net",host="true"} 640
kmsgfs_ring_bytes{ring="net:[4026532001]",kind="net",host="false"} 120
# HELP kmsgfs_ring_readers Open kmsg files reading the ring.
# TYPE kmsgfs_ring_readers gauge
kmsgfs_ring_readers{ring="net:[4026531840]",kind="net",host="true"} 0
kmsgfs_ring_readers{ring="net:[4026532001]",kind="net",host="false"} 1
# HELP kmsgfs_open_files Files open on the kmsgfs mount.
# TYPE kmsgfs_open_files gauge
kmsgfs_open_files 1
# HELP kmsgfs_interrupts_delivered_total FUSE INTERRUPTs that ended a parked read.
# TYPE kmsgfs_interrupts_delivered_total counter
kmsgfs_interrupts_delivered_total 0
# HELP kmsgfs_interrupts_unmatched_total FUSE INTERRUPTs for requests no longer parked.
# TYPE kmsgfs_interrupts_unmatched_total counter
kmsgfs_interrupts_unmatched_total 0
"#;
        assert_eq!(render(&stats()), want);
    }

    #[test]
    fn attribution_counters_by_method_reason_and_name() {
        let counters = Counters {
            exact: 7,
            fallback: 1,
            unattributed: 2,
            no_bpf: 2,
            events_lost: 3,
            ..Counters::default()
        };
        let text = render(&StatsReport {
            attribution: Some(attribution(counters)),
            ..stats()
        });
        for line in [
            "kmsgfs_attribution_bpf_active 1",
            "kmsgfs_attribution_records_total{method=\"exact\"} 7",
            "kmsgfs_attribution_records_total{method=\"fallback\"} 1",
            "kmsgfs_attribution_records_total{method=\"unattributed\"} 2",
            "kmsgfs_unattributed_records_total{reason=\"no_bpf\"} 2",
            "kmsgfs_unattributed_records_total{reason=\"rx_mismatch\"} 0",
            "kmsgfs_router_events_lost_total 3",
            "# TYPE kmsgfs_router_events_lost_total counter",
            "kmsgfs_router_records_total 0",
            "kmsgfs_router_verify_mismatch_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
        // A family's samples all carry its labels: the method family holds no unlabelled
        // sample, and the reasons (which add up to `unattributed`) leave out the exact joins
        // whose text differed (their records are counted under `no_event` already).
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("kmsgfs_attribution_records_total ")),
            "{text}"
        );
        assert!(!text.contains("reason=\"verify_mismatch\""), "{text}");
    }

    #[test]
    fn every_router_counter_is_exported_under_its_stats_name() {
        // The metrics name each counter as the stats file's JSON does: a renamed or added
        // field of `Counters` that `fields()` spells differently fails here.
        let json = serde_json::to_value(Counters::default()).unwrap();
        let mut stats_names: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let fields = Counters::default().fields();
        let mut metric_names: Vec<&str> = fields.iter().map(|(_, n, _)| *n).collect();
        stats_names.sort_unstable();
        metric_names.sort_unstable();
        assert_eq!(metric_names, stats_names);
        let text = render(&StatsReport {
            attribution: Some(attribution(Counters::default())),
            ..stats()
        });
        for (_, name, _) in fields {
            assert!(
                text.contains(&format!("\"{name}\"")) || text.contains(&format!("_{name}_total ")),
                "{name}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = stats();
        s.host.source = "a\"b\\c\nd".into();
        assert!(render(&s).contains(r#"{source="a\"b\\c\nd"} 10"#));
    }
}
