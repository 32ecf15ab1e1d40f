//! [`Attribution`]: the BPF source and the router glued together, the one object the daemon's
//! host-ingestion loop owns.
//!
//! The daemon reads host records from `/dev/kmsg` itself and hands each to
//! [`Attribution::on_host_record`]; it polls [`Attribution::epoll_fd`] together with its kmsg
//! fd, wakes at [`Attribution::next_deadline`] at the latest, and delivers what
//! [`Attribution::poll`] returns to the rings. Everything else (draining events before a
//! record is routed, reporting ring-buffer drops, writing calibration nonces when the router
//! asks) happens inside.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::attribution::router::{Counters, Event, Routed, Router, RouterConfig, RouterStatus};
use crate::record::Record;
use crate::sources::bpf::{
    write_calibration_nonce, AttributionStatus, BpfConfig, BpfSource, KernelStats,
};

/// Ordinary events do not wake the reader (`BPF_RB_NO_WAKEUP`); drain at least this often.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

/// Everything the daemon's statistics show about attribution.
#[derive(Debug, Clone, Serialize)]
pub struct AttributionStats {
    /// Active features.
    pub source: AttributionStatus,
    /// Join state.
    pub router: RouterStatus,
    /// Router counters.
    pub counters: Counters,
    /// BPF-side counters, when BPF runs.
    pub kernel: Option<KernelStats>,
}

/// BPF source + router.
#[derive(Debug)]
pub struct Attribution {
    source: Option<BpfSource>,
    router: Router,
    status: AttributionStatus,
    buf: Vec<Event>,
    /// Handing over: events are left in the ring buffer for the next daemon.
    frozen: bool,
}

impl Attribution {
    /// Start the BPF source (degrading with one warning if it cannot run) and the router;
    /// `router.bpf` is overridden by whether the source runs. Writes the first calibration
    /// nonce.
    pub fn start(bpf: &BpfConfig, router: RouterConfig, now: Instant) -> Self {
        Self::start_after(bpf, router, now, crate::sources::bpf::KeptBpf::default())
    }

    /// [`Attribution::start`] after a previous daemon whose BPF state the holder kept
    /// ([`crate::sources::bpf::BpfSource::start_after`]).
    pub fn start_after(
        bpf: &BpfConfig,
        mut router: RouterConfig,
        now: Instant,
        kept: crate::sources::bpf::KeptBpf,
    ) -> Self {
        let (source, status) = crate::sources::bpf::start_or_degrade_after(bpf, kept);
        if source.is_some() && status.nf_log_all_netns == Some(false) {
            crate::sources::bpf::netns_log::warn_if_disabled();
        }
        router.bpf = source.is_some();
        let mut a = Attribution {
            source,
            router: Router::new(router),
            status,
            buf: Vec::new(),
            frozen: false,
        };
        a.maybe_calibrate(now);
        a
    }

    /// The router alone in no-BPF mode, BPF not even tried (for sources that are not the host
    /// `/dev/kmsg`: their seqs have no relation to printk descriptor ids). `reason` is shown in
    /// the status.
    pub fn without_bpf(reason: String, mut router: RouterConfig) -> Self {
        router.bpf = false;
        Attribution {
            source: None,
            router: Router::new(router),
            status: AttributionStatus::off(reason),
            buf: Vec::new(),
            frozen: false,
        }
    }

    /// The router, for inspection.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Active features.
    pub fn status(&self) -> &AttributionStatus {
        &self.status
    }

    /// Everything for the statistics file.
    pub fn stats(&self) -> AttributionStats {
        AttributionStats {
            source: self.status.clone(),
            router: self.router.status(),
            counters: self.router.counters().clone(),
            kernel: self.source.as_ref().and_then(|s| s.kernel_stats().ok()),
        }
    }

    /// The BPF source, if running.
    pub fn source(&self) -> Option<&BpfSource> {
        self.source.as_ref()
    }

    /// An fd to poll for forced wakeups, if BPF runs.
    pub fn epoll_fd(&self) -> Option<RawFd> {
        self.source.as_ref().map(BpfSource::epoll_fd)
    }

    /// Stop taking events from the ring buffer (a hand-over: the next daemon takes the rest,
    /// [`crate::sources::bpf::BpfSource::start_after`]); returns the host seq up to which this daemon must
    /// still read records ([`Router::newest_event_seq`]) after a last drain.
    pub fn freeze(&mut self) -> Option<u64> {
        self.drain_events();
        self.frozen = true;
        self.router.newest_event_seq()
    }

    /// Move available BPF events into the router.
    pub fn drain_events(&mut self) {
        if self.frozen {
            return;
        }
        let Some(src) = &mut self.source else { return };
        if let Err(e) = src.drain(&mut self.buf) {
            log::warn!("kmsgfs attribution: {e}");
        }
        let lost = src.new_drops();
        if lost > 0 {
            self.router.on_events_lost(lost);
        }
        for ev in self.buf.drain(..) {
            self.router.on_event(ev);
        }
    }

    /// A host record, in host order. Events are drained first, so the record's event (committed
    /// before the record became readable) is already there.
    pub fn on_host_record(&mut self, rec: Record, now: Instant) {
        self.drain_events();
        self.router.on_record(rec, now);
    }

    /// Route what can be routed now.
    pub fn poll(&mut self, now: Instant) -> Vec<Routed> {
        self.drain_events();
        self.maybe_calibrate(now);
        self.router.poll(now)
    }

    /// When to call [`Attribution::poll`] at the latest.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let d = self.router.next_deadline();
        if self.source.is_some() {
            let periodic = now + DRAIN_INTERVAL;
            Some(d.map_or(periodic, |d| d.min(periodic)))
        } else {
            d
        }
    }

    fn maybe_calibrate(&mut self, now: Instant) {
        if !self.router.wants_calibration(now) {
            return;
        }
        match write_calibration_nonce() {
            Ok(nonce) => self.router.begin_calibration(nonce, now),
            Err(e) => {
                log::warn!("kmsgfs attribution: cannot write the calibration record: {e}");
                // Counts as an attempt, so it is retried later rather than in a loop.
                self.router.begin_calibration(Vec::new(), now);
            }
        }
    }
}
