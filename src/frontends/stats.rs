//! The daemon's statistics, typed: what `DIR/stats` shows as JSON and `DIR/metrics` renders
//! for Prometheus ([`crate::frontends::metrics::render`]). One value feeds both files, so they
//! never disagree and no reader goes through JSON to find a counter.

use serde::Serialize;

use crate::attribution::pipeline::AttributionStats;
use crate::ring::registry::RingReport;
use crate::sources::host::HostReport;

/// Interrupt counters in the stats file.
#[derive(Debug, Serialize)]
pub struct InterruptReport {
    /// FUSE INTERRUPTs that ended a parked read.
    pub delivered: u64,
    /// FUSE INTERRUPTs for requests no longer parked.
    pub unmatched: u64,
}

/// The stats file.
#[derive(Debug, Serialize)]
pub struct StatsReport {
    /// The daemon's version.
    pub version: &'static str,
    /// The routing key (`--key`).
    pub key: &'static str,
    /// The write policy (`--devkmsg`).
    pub devkmsg: &'static str,
    /// Who may read (`--restrict`).
    pub restrict: &'static str,
    /// FUSE event-loop threads.
    pub threads: usize,
    /// The host kernel log reader.
    pub host: HostReport,
    /// Every namespace ring, the host ring and retired rings included.
    pub rings: Vec<RingReport>,
    /// Rings named by a listener's `io.kmsgfs.key` (syslog(2) only).
    pub named_rings: Vec<NamedRingReport>,
    /// Files open on the mount.
    pub open_files: usize,
    /// FUSE interrupts.
    pub interrupts: InterruptReport,
    /// Attributed records that reached no ring of their own.
    pub delivery: DeliveryReport,
    /// With `--holder-socket`: what survived the last restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartReport>,
    /// BPF attribution and the router (`None` before ingestion started routing).
    pub attribution: Option<AttributionStats>,
}

/// The `restart` object of the stats file.
#[derive(Debug, Serialize)]
pub struct RestartReport {
    /// Daemon restarts the rings survived.
    pub restarts: u64,
    /// Rings this daemon adopted from the holder.
    pub adopted_rings: u64,
    /// Rings the holder kept that this daemon could not adopt.
    pub refused_rings: u64,
    /// Rings the holder could not keep.
    pub unkept_rings: u64,
    /// `/dev/fuse` fds of the connection this daemon adopted (0: it mounted afresh).
    pub adopted_fuse_fds: u64,
    /// Open files this daemon took over from its predecessor.
    pub adopted_open_files: u64,
    /// Open files of the predecessor whose ring did not survive.
    pub lost_open_files: u64,
    /// seccomp listeners this daemon's agent took over.
    pub adopted_listeners: u64,
}

/// One named ring in the stats file.
#[derive(Debug, Serialize)]
pub struct NamedRingReport {
    /// The listener's `io.kmsgfs.key`.
    pub name: String,
    /// Records held.
    pub records: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Records appended since creation.
    pub appended: u64,
    /// Records overwritten to make room.
    pub overruns: u64,
}

/// Attributed records that reached no namespace ring of their own (docs/security.md T7, T10).
#[derive(Debug, Serialize)]
pub struct DeliveryReport {
    /// From a dead namespace whose inode's ring is bound to a newer namespace.
    pub stale: u64,
    /// A new ring would have exceeded `--max-rings`.
    pub refused_max_rings: u64,
}
