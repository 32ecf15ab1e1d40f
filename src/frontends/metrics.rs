//! `DIR/metrics`: the daemon's counters in the Prometheus text exposition format (0.0.4).
//!
//! [`render`] is a pure function of the stats document, the same value that `DIR/stats` shows
//! as JSON, so the two files can never disagree and every counter added to the stats file by a
//! subsystem (attribution, the seccomp agent) shows up here without a second code path.
//!
//! Families:
//!
//! * `kmsgfs_host_*`: the host kernel log reader (records read, lost, overruns, parse errors).
//! * `kmsgfs_ring_*{ring,kind,host}`: per ring, records in (`appended`, `writes`), held
//!   (`records`, `bytes`), overwritten before being read by everyone (`overruns`), writes dropped
//!   by the `--devkmsg ratelimit` policy, and open readers.
//! * `kmsgfs_attribution_records_total{method}` and
//!   `kmsgfs_unattributed_records_total{reason}`: how BPF attribution decided records' owners,
//!   from the `counters` of the stats file's `attribution` object; its other counters become
//!   `kmsgfs_attribution_<field>_total`, and `kmsgfs_attribution_bpf_active` is 1 while the BPF
//!   programs run (`attribution.source.bpf`).
//! * `kmsgfs_open_files`, `kmsgfs_interrupts_*`.
//!
//! A missing field is left out rather than reported as zero.

use std::fmt::Write as _;

use serde_json::Value;

/// Content type of the exposition, for anyone serving the file over HTTP.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Counters of the attribution stats that name how a record's owner was decided.
const METHODS: [&str; 4] = ["exact", "continuation", "fallback", "unattributed"];

/// Counters of the attribution stats that name why a record has no owner.
const REASONS: [&str; 7] = [
    "pre_attach",
    "no_event",
    "no_bpf",
    "kernel_thread",
    "interrupt",
    "rx_mismatch",
    "verify_mismatch",
];

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

    fn field(
        &mut self,
        obj: &Value,
        field: &str,
        name: &str,
        kind: Kind,
        help: &str,
        labels: &[(&str, &str)],
    ) {
        if let Some(v) = obj.get(field).and_then(Value::as_u64) {
            self.sample(name, kind, help, labels, v);
        }
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

/// A metric name made from a stats field: `[a-zA-Z0-9_]` only.
fn sanitize(field: &str) -> String {
    field
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The Prometheus text exposition of a stats document (the JSON of `DIR/stats`).
pub fn render(stats: &Value) -> String {
    use Kind::{Counter, Gauge};
    let mut out = Out::default();

    if let Some(host) = stats.get("host") {
        let source = host.get("source").and_then(Value::as_str).unwrap_or("");
        let l = [("source", source)];
        out.field(
            host,
            "records_read",
            "kmsgfs_host_records_read_total",
            Counter,
            "Host kernel log records read and appended to the host ring.",
            &l,
        );
        out.field(
            host,
            "records_lost",
            "kmsgfs_host_records_lost_total",
            Counter,
            "Host records the kernel overwrote before kmsgfs read them (sequence gaps).",
            &l,
        );
        out.field(
            host,
            "overruns",
            "kmsgfs_host_overruns_total",
            Counter,
            "EPIPE results while reading the host kernel log.",
            &l,
        );
        out.field(
            host,
            "parse_errors",
            "kmsgfs_host_parse_errors_total",
            Counter,
            "Host records that did not parse and were skipped.",
            &l,
        );
        out.field(
            host,
            "records_resumed",
            "kmsgfs_host_records_resumed_total",
            Counter,
            "Host records skipped at start-up because the adopted host ring already held them.",
            &l,
        );
    }

    if let Some(r) = stats.get("restart").filter(|r| r.is_object()) {
        let l: [(&str, &str); 0] = [];
        out.field(
            r,
            "restarts",
            "kmsgfs_restarts_total",
            Counter,
            "Daemon restarts the rings survived (daemons that adopted the host ring from the holder).",
            &l,
        );
        out.field(
            r,
            "adopted_rings",
            "kmsgfs_restart_adopted_rings",
            Gauge,
            "Rings this daemon adopted from the holder at start-up (records and cursors of the previous daemon).",
            &l,
        );
        out.field(
            r,
            "refused_rings",
            "kmsgfs_restart_refused_rings",
            Gauge,
            "Rings kept by the holder that this daemon could not adopt (dropped).",
            &l,
        );
        out.field(
            r,
            "unkept_rings",
            "kmsgfs_restart_unkept_rings_total",
            Counter,
            "Rings the holder could not keep (served from memory, lost on a restart).",
            &l,
        );
        out.field(
            r,
            "adopted_fuse_fds",
            "kmsgfs_restart_adopted_fuse_fds",
            Gauge,
            "/dev/fuse fds of the live connection this daemon adopted from the holder (0: it mounted afresh).",
            &l,
        );
        out.field(
            r,
            "adopted_open_files",
            "kmsgfs_restart_adopted_open_files",
            Gauge,
            "Open kmsg and proc-kmsg files this daemon took over from the previous daemon.",
            &l,
        );
        out.field(
            r,
            "lost_open_files",
            "kmsgfs_restart_lost_open_files",
            Gauge,
            "Open files of the previous daemon whose ring did not survive (their reads get EBADF).",
            &l,
        );
        out.field(
            r,
            "adopted_listeners",
            "kmsgfs_restart_adopted_listeners",
            Gauge,
            "seccomp listeners this daemon's syslog(2) agent took over from the holder.",
            &l,
        );
    }

    for ring in stats
        .get("rings")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let key = ring.get("key").and_then(Value::as_str).unwrap_or("");
        let kind = ring.get("kind").and_then(Value::as_str).unwrap_or("");
        let host = if ring.get("host").and_then(Value::as_bool) == Some(true) {
            "true"
        } else {
            "false"
        };
        let l = [("ring", key), ("kind", kind), ("host", host)];
        let fields: [(&str, &str, Kind, &str); 7] = [
            (
                "appended",
                "kmsgfs_ring_records_in_total",
                Counter,
                "Records appended to the ring (routed kernel records and writes).",
            ),
            (
                "writes",
                "kmsgfs_ring_writes_total",
                Counter,
                "Writes to the ring's kmsg file.",
            ),
            (
                "writes_dropped_ratelimit",
                "kmsgfs_ring_writes_dropped_total",
                Counter,
                "Writes dropped by the --devkmsg ratelimit policy.",
            ),
            (
                "overruns",
                "kmsgfs_ring_overruns_total",
                Counter,
                "Records overwritten to make room for new ones.",
            ),
            (
                "records",
                "kmsgfs_ring_records",
                Gauge,
                "Records currently held in the ring.",
            ),
            (
                "bytes",
                "kmsgfs_ring_bytes",
                Gauge,
                "Bytes currently held in the ring.",
            ),
            (
                "open_readers",
                "kmsgfs_ring_readers",
                Gauge,
                "Open kmsg files reading the ring.",
            ),
        ];
        for (field, name, k, help) in fields {
            out.field(ring, field, name, k, help, &l);
        }
    }

    let attribution = stats.get("attribution").or_else(|| stats.get("router"));
    if let Some(active) = attribution
        .and_then(|a| a.get("source"))
        .and_then(|s| s.get("bpf"))
        .and_then(Value::as_bool)
    {
        out.sample(
            "kmsgfs_attribution_bpf_active",
            Gauge,
            "1 when BPF attribution programs are loaded and attached.",
            &[],
            u64::from(active),
        );
    }
    if let Some(a) = attribution {
        let counters = a.get("counters").unwrap_or(a);
        if let Some(obj) = counters.as_object() {
            for m in METHODS {
                out.field(
                    counters,
                    m,
                    "kmsgfs_attribution_records_total",
                    Counter,
                    "Host records by how their owning namespace was decided.",
                    &[("method", m)],
                );
            }
            for r in REASONS {
                out.field(
                    counters,
                    r,
                    "kmsgfs_unattributed_records_total",
                    Counter,
                    "Host records left without an owner, by reason.",
                    &[("reason", r)],
                );
            }
            for (field, v) in obj {
                if METHODS.contains(&field.as_str()) || REASONS.contains(&field.as_str()) {
                    continue;
                }
                if let Some(v) = v.as_u64() {
                    out.sample(
                        &format!("kmsgfs_attribution_{}_total", sanitize(field)),
                        Counter,
                        &format!("Attribution counter `{field}` of the stats file."),
                        &[],
                        v,
                    );
                }
            }
        }
    }

    out.field(
        stats,
        "open_files",
        "kmsgfs_open_files",
        Gauge,
        "Files open on the kmsgfs mount.",
        &[],
    );
    if let Some(i) = stats.get("interrupts") {
        out.field(
            i,
            "delivered",
            "kmsgfs_interrupts_delivered_total",
            Counter,
            "FUSE INTERRUPTs that ended a parked read.",
            &[],
        );
        out.field(
            i,
            "unmatched",
            "kmsgfs_interrupts_unmatched_total",
            Counter,
            "FUSE INTERRUPTs for requests no longer parked.",
            &[],
        );
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn golden_exposition() {
        let stats = json!({
            "version": "0.1.0",
            "host": {"source": "/dev/kmsg", "records_read": 10, "records_lost": 1,
                     "overruns": 2, "parse_errors": 0},
            "rings": [
                {"key": "net:[4026531840]", "kind": "net", "inode": 4026531840u64, "host": true,
                 "records": 10, "bytes": 640, "appended": 12, "overruns": 2,
                 "open_readers": 0, "writes": 0, "writes_dropped_ratelimit": 0},
                {"key": "net:[4026532001]", "kind": "net", "inode": 4026532001u64, "host": false,
                 "records": 3, "bytes": 120, "appended": 3, "overruns": 0,
                 "open_readers": 1, "writes": 3, "writes_dropped_ratelimit": 1}
            ],
            "attribution": {"source": {"bpf": true, "reason": null},
                            "router": {"k": 5, "exact_join": true},
                            "counters": {"exact": 7, "fallback": 1, "unattributed": 2,
                                          "no_bpf": 2, "events_lost": 0}},
            "open_files": 1,
            "interrupts": {"delivered": 0, "unmatched": 0}
        });
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
# HELP kmsgfs_attribution_bpf_active 1 when BPF attribution programs are loaded and attached.
# TYPE kmsgfs_attribution_bpf_active gauge
kmsgfs_attribution_bpf_active 1
# HELP kmsgfs_attribution_records_total Host records by how their owning namespace was decided.
# TYPE kmsgfs_attribution_records_total counter
kmsgfs_attribution_records_total{method="exact"} 7
kmsgfs_attribution_records_total{method="fallback"} 1
kmsgfs_attribution_records_total{method="unattributed"} 2
# HELP kmsgfs_unattributed_records_total Host records left without an owner, by reason.
# TYPE kmsgfs_unattributed_records_total counter
kmsgfs_unattributed_records_total{reason="no_bpf"} 2
# HELP kmsgfs_attribution_events_lost_total Attribution counter `events_lost` of the stats file.
# TYPE kmsgfs_attribution_events_lost_total counter
kmsgfs_attribution_events_lost_total 0
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
        assert_eq!(render(&stats), want);
    }

    #[test]
    fn label_values_are_escaped() {
        let stats = json!({"host": {"source": "a\"b\\c\nd", "records_read": 1}});
        assert!(render(&stats).contains(r#"{source="a\"b\\c\nd"} 1"#));
    }

    #[test]
    fn empty_document_renders_nothing() {
        assert_eq!(render(&json!({})), "");
    }
}
