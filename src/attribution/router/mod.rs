//! The router: which namespace rings receive each host kernel log record.
//!
//! A pure, deterministic state machine. Its inputs are the host records read from `/dev/kmsg`
//! ([`Router::on_record`]) and the BPF attribution events ([`Router::on_event`]); its output,
//! from [`Router::poll`], is every record exactly once and in host order, each with the set of
//! rings it goes to ([`Targets`]). Time is passed in, so hold timeouts are testable.
//!
//! **Join.** An event carries the printk descriptor id of its record and `seq = id − K`
//! (docs/attribution.md §"Join"). `K` is calibrated with a nonce record
//! ([`Router::begin_calibration`]); every exact join is also checked against the 32-byte text
//! prefix in the event, and repeated mismatches invalidate `K` and ask for a recalibration. A
//! record whose event has not arrived yet is held for at most [`RouterConfig::hold`]. Without a
//! `K` (calibration failed) records are joined by text prefix and nearest timestamp
//! ([`How::Fallback`]). Records without an event go to the host ring only, or to every ring
//! (`--unattributed all`, [`Unattributed`]).
//!
//! **Decision.** Every record goes to the host ring. It also goes to the rings of the owner's
//! namespace for the chosen [`KeyKind`]: the network namespace (flat), or the user or pid
//! namespace *and its ancestors below the host's* (hierarchical: a container that runs nested
//! containers sees their records too). Printks on an IRQ stack take the network namespace of
//! the packet being received; netfilter LOG lines use the user namespace owning the `struct
//! net`. The OOM report block printed by one task, from "invoked oom-killer" to
//! "Killed process", goes to the victim's rings (and the trigger's, by [`OomPolicy`]).
//!
//! The kernel's own log has no owner concept; these rules are kmsgfs's. Spec context:
//! kmsg-semantics 0.3 (record fields) and A2 (record format).

mod store;
pub mod text;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::record::Record;

pub use crate::sources::events::{
    Chain, Event, EventKind, HostNs, NetSource, NsSet, CHAIN, PREFIX,
};
use store::EventStore;

/// The namespace type whose rings records are routed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// Network namespace (the default): flat.
    Net,
    /// User namespace: hierarchical. Netfilter records use the user namespace owning the
    /// `struct net`.
    User,
    /// Active pid namespace: hierarchical.
    Pid,
}

/// Where records without an owner go (`--unattributed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unattributed {
    /// The host ring only (the default).
    Host,
    /// Every ring.
    All,
}

/// Who receives an OOM report block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OomPolicy {
    /// The victim's rings only.
    Victim,
    /// The victim's and the triggering task's rings (the default).
    VictimAndTrigger,
}

/// A value given on the command line was not recognised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}` (expected one of: {expected})")]
pub struct ParseOptionError {
    what: &'static str,
    value: String,
    expected: &'static str,
}

macro_rules! option_enum {
    ($ty:ident, $what:literal, $($s:literal => $v:ident),+) => {
        impl FromStr for $ty {
            type Err = ParseOptionError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($ty::$v),)+
                    _ => Err(ParseOptionError {
                        what: $what,
                        value: s.to_string(),
                        expected: concat!($($s, " "),+),
                    }),
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $($ty::$v => $s,)+ })
            }
        }
    };
}
option_enum!(KeyKind, "routing key", "net" => Net, "user" => User, "pid" => Pid);
option_enum!(Unattributed, "--unattributed value", "host" => Host, "all" => All);
option_enum!(OomPolicy, "OOM policy", "victim" => Victim, "victim-and-trigger" => VictimAndTrigger);

/// Router settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// Namespace type of the rings.
    pub key: KeyKind,
    /// Where records without an owner go.
    pub unattributed: Unattributed,
    /// Who receives OOM reports.
    pub oom_policy: OomPolicy,
    /// The host's namespaces.
    pub host: HostNs,
    /// BPF events are expected. `false` (`--no-bpf`, or BPF failed to load): every record is
    /// routed at once as unattributed.
    pub bpf: bool,
    /// Longest wait for a record's event.
    pub hold: Duration,
    /// Longest wait for the calibration nonce's record and event.
    pub calibration_timeout: Duration,
    /// Longest wait for an OOM report block to close.
    pub oom_hold: Duration,
    /// Re-check `K` with a new nonce this often.
    pub recalibrate_every: Duration,
    /// After a failed calibration, try again after this long.
    pub retry_calibration_after: Duration,
    /// Most events kept waiting for their records.
    pub max_events: usize,
}

impl RouterConfig {
    /// Defaults: net key, unattributed to the host, OOM to victim and trigger, 5 ms hold.
    pub fn new(host: HostNs) -> Self {
        RouterConfig {
            key: KeyKind::Net,
            unattributed: Unattributed::Host,
            oom_policy: OomPolicy::VictimAndTrigger,
            host,
            bpf: true,
            hold: Duration::from_millis(5),
            calibration_timeout: Duration::from_secs(2),
            oom_hold: Duration::from_secs(2),
            recalibrate_every: Duration::from_secs(600),
            retry_calibration_after: Duration::from_secs(30),
            max_events: 1 << 16,
        }
    }
}

/// The rings a record goes to. The host ring is always included.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Targets {
    /// The host ring only.
    Host,
    /// The host ring and these namespaces' rings (of the key's namespace type), the owner
    /// first, then its ancestors for hierarchical keys. Never empty.
    Owners(Vec<NsRef>),
    /// The host ring and every namespace ring.
    All,
}

/// One namespace instance, as the BPF side saw it when the record was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct NsRef {
    /// Its nsfs inode number (reused by a new namespace as soon as this one is freed).
    pub inode: u32,
    /// Its namespace id (`NS_GET_ID`, never reused), when the kernel has one.
    pub ns_id: Option<u64>,
}

impl NsRef {
    /// A namespace known by its inode only.
    pub fn inode(inode: u32) -> Self {
        NsRef { inode, ns_id: None }
    }
}

impl Targets {
    /// Whether the ring of namespace `inum` receives the record.
    pub fn includes(&self, inum: u32) -> bool {
        match self {
            Targets::Host => false,
            Targets::Owners(v) => v.iter().any(|o| o.inode == inum),
            Targets::All => true,
        }
    }

    /// The owners' inodes, for [`Targets::Owners`].
    pub fn owner_inodes(&self) -> Option<Vec<u32>> {
        match self {
            Targets::Owners(v) => Some(v.iter().map(|o| o.inode).collect()),
            _ => None,
        }
    }

    fn from_owners(owners: Vec<NsRef>) -> Self {
        if owners.is_empty() {
            Targets::Host
        } else {
            Targets::Owners(owners)
        }
    }
}

/// Why a record has no owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// BPF attribution is off.
    NoBpf,
    /// The record was logged before the BPF programs were attached.
    PreAttach,
    /// No event arrived in time (BPF ring buffer full, or no join possible).
    NoEvent,
    /// Printed by a kernel thread.
    KernelThread,
    /// Printed on an IRQ stack with no received packet to attribute it to.
    InterruptNoNet,
    /// Netfilter line in interrupt context whose `IN=`/`OUT=` devices do not match the
    /// received packet's device: the rx stash is stale.
    RxMismatch,
    /// Packet-context record with the pid key: packets have no pid namespace.
    NoPidForPacket,
    /// The event carried no namespace (a task being torn down).
    NoNamespace,
    /// The event at `seq + K` has different text (the join is unreliable until recalibrated).
    VerifyMismatch,
}

/// How a record's targets were decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum How {
    /// Exact join by sequence number.
    Exact,
    /// Only a continuation fragment's event was found (same caller as the record).
    Continuation,
    /// Text + timestamp join.
    Fallback,
    /// Part of an OOM report block, routed by [`OomPolicy`].
    Oom {
        /// Victim pid from `tp_btf/mark_victim`, 0 if the victim is unknown.
        victim_pid: u32,
    },
    /// `oom_reaper` line for a recent victim.
    OomReaper,
    /// No owner.
    Unattributed(Reason),
}

/// One routing decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The host record, unchanged.
    pub record: Record,
    /// Where it goes.
    pub targets: Targets,
    /// Why.
    pub how: How,
}

/// Running counts, for the daemon's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Host records received.
    pub records: u64,
    /// Events received (all kinds).
    pub events: u64,
    /// Records routed.
    pub routed: u64,
    /// Exact seq joins.
    pub exact: u64,
    /// Records attributed through a continuation fragment's event.
    pub continuation: u64,
    /// Records joined by text + timestamp.
    pub fallback: u64,
    /// Records with no owner (all reasons).
    pub unattributed: u64,
    /// ... of which logged before attach.
    pub pre_attach: u64,
    /// ... of which had no event (or one with the wrong text).
    pub no_event: u64,
    /// ... of which arrived while BPF attribution was off.
    pub no_bpf: u64,
    /// ... of which came from kernel threads.
    pub kernel_thread: u64,
    /// ... of which ran in interrupt context without a packet namespace.
    pub interrupt: u64,
    /// ... of which had a stale rx stash.
    pub rx_mismatch: u64,
    /// Records routed to at least one namespace ring.
    pub owned: u64,
    /// Records owned by the host's namespace (host ring only).
    pub host_owned: u64,
    /// Exact joins whose text prefix did not match.
    pub verify_mismatch: u64,
    /// Records missing from the host reader (seq gaps: it was overrun).
    pub host_gap: u64,
    /// Events the BPF side could not send (ring buffer full).
    pub events_lost: u64,
    /// Events dropped unjoined (stale or over capacity).
    pub events_pruned: u64,
    /// Events that arrived after their record had been routed.
    pub events_late: u64,
    /// Continuation fragments that could not be linked.
    pub unlinked_continuations: u64,
    /// Successful calibrations.
    pub calibrations: u64,
    /// Calibrations that timed out.
    pub calibration_failures: u64,
    /// Calibrations that found a different `K`.
    pub k_changes: u64,
    /// Calibration nonce events that were flagged as IRQ-stack (a wrong THREAD_SIZE).
    pub irq_check_suspect: u64,
    /// OOM report blocks routed.
    pub oom_blocks: u64,
    /// OOM blocks closed without a victim event.
    pub oom_no_victim: u64,
}

/// What a [`Counters`] field counts, for the metrics file's families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterGroup {
    /// Records by how their owner was decided (`exact`, `continuation`, ...).
    Method,
    /// Records without an owner, by reason.
    Reason,
    /// Anything else.
    Other,
}

impl Counters {
    /// Every counter with its stats-file name and its group. The destructuring names every
    /// field, so a counter added to the struct cannot be missing from the metrics file.
    pub fn fields(&self) -> [(CounterGroup, &'static str, u64); 27] {
        use CounterGroup::{Method, Other, Reason};
        let Counters {
            records,
            events,
            routed,
            exact,
            continuation,
            fallback,
            unattributed,
            pre_attach,
            no_event,
            no_bpf,
            kernel_thread,
            interrupt,
            rx_mismatch,
            owned,
            host_owned,
            verify_mismatch,
            host_gap,
            events_lost,
            events_pruned,
            events_late,
            unlinked_continuations,
            calibrations,
            calibration_failures,
            k_changes,
            irq_check_suspect,
            oom_blocks,
            oom_no_victim,
        } = *self;
        [
            (Method, "exact", exact),
            (Method, "continuation", continuation),
            (Method, "fallback", fallback),
            (Method, "unattributed", unattributed),
            (Reason, "pre_attach", pre_attach),
            (Reason, "no_event", no_event),
            (Reason, "no_bpf", no_bpf),
            (Reason, "kernel_thread", kernel_thread),
            (Reason, "interrupt", interrupt),
            (Reason, "rx_mismatch", rx_mismatch),
            (Other, "records", records),
            (Other, "events", events),
            (Other, "routed", routed),
            (Other, "owned", owned),
            (Other, "host_owned", host_owned),
            // Every exact join whose text differed; the record itself is counted under
            // `no_event`, so this is not one more reason.
            (Other, "verify_mismatch", verify_mismatch),
            (Other, "host_gap", host_gap),
            (Other, "events_lost", events_lost),
            (Other, "events_pruned", events_pruned),
            (Other, "events_late", events_late),
            (Other, "unlinked_continuations", unlinked_continuations),
            (Other, "calibrations", calibrations),
            (Other, "calibration_failures", calibration_failures),
            (Other, "k_changes", k_changes),
            (Other, "irq_check_suspect", irq_check_suspect),
            (Other, "oom_blocks", oom_blocks),
            (Other, "oom_no_victim", oom_no_victim),
        ]
    }
}

/// A snapshot of the join state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouterStatus {
    /// Routing key.
    pub key: KeyKind,
    /// `K = descriptor id − seq`, when calibrated.
    pub k: Option<u64>,
    /// Joining by sequence number (`K` known) rather than text + timestamp.
    pub exact_join: bool,
    /// BPF events expected at all.
    pub bpf: bool,
    /// A calibration nonce is outstanding.
    pub calibrating: bool,
    /// Records waiting for events.
    pub pending: usize,
    /// Events waiting for records.
    pub stored_events: usize,
}

#[derive(Debug)]
struct Calibration {
    nonce: Vec<u8>,
    deadline: Instant,
    seq: Option<u64>,
    id: Option<u64>,
}

#[derive(Debug)]
struct Pending {
    rec: Record,
    arrived: Instant,
}

#[derive(Debug)]
struct Decided {
    rec: Record,
    /// `None` while an OOM block it belongs to is open.
    targets: Option<Targets>,
    how: How,
    block: Option<u32>,
}

#[derive(Debug)]
struct OomBlock {
    opened: Instant,
    trigger: Targets,
    closing: bool,
}

/// Consecutive text mismatches after which `K` is no longer trusted.
const MISMATCH_LIMIT: u32 = 3;
/// Victim events kept waiting for their OOM block.
const MAX_VICTIMS: usize = 64;
/// In text + timestamp mode, events this far (in descriptor ids) behind a joined one are stale.
const FALLBACK_WINDOW: u64 = 1 << 14;
/// How long an OOM victim stays known for its `oom_reaper` line.
const REAPER_WINDOW: Duration = Duration::from_secs(30);

/// The routing state machine. See the module documentation.
#[derive(Debug)]
pub struct Router {
    cfg: RouterConfig,
    k: Option<u64>,
    first_id: Option<u64>,
    cal: Option<Calibration>,
    last_cal_attempt: Option<Instant>,
    last_cal_ok: bool,
    mismatches: u32,
    events: EventStore,
    /// Victim events by trigger pid, oldest first.
    victims: VecDeque<Event>,
    recent_victims: VecDeque<(u32, u32, Targets, Instant)>,
    pending: VecDeque<Pending>,
    decided: VecDeque<Decided>,
    blocks: HashMap<u32, OomBlock>,
    ts_offset_ns: Option<i64>,
    last_seq: Option<u64>,
    counters: Counters,
}

impl Router {
    /// A router with no calibration yet.
    pub fn new(cfg: RouterConfig) -> Self {
        Router {
            cfg,
            k: None,
            first_id: None,
            cal: None,
            last_cal_attempt: None,
            last_cal_ok: false,
            mismatches: 0,
            events: EventStore::default(),
            victims: VecDeque::new(),
            recent_victims: VecDeque::new(),
            pending: VecDeque::new(),
            decided: VecDeque::new(),
            blocks: HashMap::new(),
            ts_offset_ns: None,
            last_seq: None,
            counters: Counters::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The calibrated `K`.
    pub fn k(&self) -> Option<u64> {
        self.k
    }

    /// A snapshot of the join state.
    pub fn status(&self) -> RouterStatus {
        RouterStatus {
            key: self.cfg.key,
            k: self.k,
            exact_join: self.k.is_some(),
            bpf: self.cfg.bpf,
            calibrating: self.cal.is_some(),
            pending: self.pending.len() + self.decided.len(),
            stored_events: self.events.len(),
        }
    }

    /// Set `K` directly (tests, or a value calibrated elsewhere). Records logged before the
    /// smallest stored event id within a window below `anchor_id` count as pre-attach.
    pub fn set_k(&mut self, k: u64, anchor_id: Option<u64>) {
        self.k = Some(k);
        self.mismatches = 0;
        if self.first_id.is_none() {
            if let Some(anchor) = anchor_id {
                let lo = anchor.saturating_sub(self.cfg.max_events as u64);
                self.first_id = self.events.min_id_in(lo, anchor).or(Some(anchor));
            }
        }
    }

    /// Whether the daemon should write a calibration nonce now (start-up, periodic re-check, or
    /// `K` found unreliable). Follow with [`Router::begin_calibration`].
    pub fn wants_calibration(&self, now: Instant) -> bool {
        if !self.cfg.bpf || self.cal.is_some() {
            return false;
        }
        match self.last_cal_attempt {
            None => true,
            Some(_) if self.k.is_none() && self.last_cal_ok => true, // K invalidated
            Some(t) => {
                let every = if self.k.is_some() {
                    self.cfg.recalibrate_every
                } else {
                    self.cfg.retry_calibration_after
                };
                now.saturating_duration_since(t) >= every
            }
        }
    }

    /// A nonce record with exactly this text has been (or is about to be) written to the host
    /// `/dev/kmsg`; when both its record and its event are seen, `K = id − seq`. Until then, or
    /// until [`RouterConfig::calibration_timeout`], records wait if no `K` is known yet.
    pub fn begin_calibration(&mut self, nonce: Vec<u8>, now: Instant) {
        self.last_cal_attempt = Some(now);
        self.last_cal_ok = false;
        self.cal = Some(Calibration {
            nonce,
            deadline: now + self.cfg.calibration_timeout,
            seq: None,
            id: None,
        });
    }

    /// A record read from the host `/dev/kmsg`, in host order.
    pub fn on_record(&mut self, rec: Record, now: Instant) {
        self.counters.records += 1;
        if let Some(last) = self.last_seq {
            if rec.seq > last + 1 {
                self.counters.host_gap += rec.seq - last - 1;
            }
        }
        self.last_seq = Some(rec.seq);
        if let Some(cal) = &mut self.cal {
            if cal.seq.is_none() && !cal.nonce.is_empty() && rec.text == cal.nonce {
                cal.seq = Some(rec.seq);
            }
        }
        self.pending.push_back(Pending { rec, arrived: now });
        self.finish_calibration();
    }

    /// An attribution event.
    pub fn on_event(&mut self, ev: Event) {
        self.counters.events += 1;
        match ev.kind {
            EventKind::OomVictim => {
                if self.victims.len() >= MAX_VICTIMS {
                    self.victims.pop_front();
                }
                self.victims.push_back(ev);
            }
            EventKind::UnlinkedContinuation => self.counters.unlinked_continuations += 1,
            EventKind::Continuation => {
                if self.is_late(ev.id) {
                    self.counters.events_late += 1;
                } else {
                    self.events.insert_cont(ev);
                }
            }
            EventKind::Printk => {
                if let Some(cal) = &mut self.cal {
                    if cal.id.is_none()
                        && !cal.nonce.is_empty()
                        && ev.len as usize == cal.nonce.len()
                        && ev.matches_text(&cal.nonce)
                    {
                        cal.id = Some(ev.id);
                        if ev.irq_stack {
                            self.counters.irq_check_suspect += 1;
                            log::warn!(
                                "kmsgfs attribution: the calibration record was flagged as \
                                 printed on an IRQ stack; the task-stack size setting is \
                                 probably wrong and interrupt attribution will be unreliable"
                            );
                        }
                    }
                }
                if self.is_late(ev.id) {
                    self.counters.events_late += 1;
                } else {
                    self.events.insert(ev);
                    let n = self.events.prune_to(self.cfg.max_events);
                    self.counters.events_pruned += n as u64;
                }
                self.finish_calibration();
            }
        }
    }

    /// The BPF side reported `n` more events it could not send.
    pub fn on_events_lost(&mut self, n: u64) {
        self.counters.events_lost += n;
    }

    fn is_late(&self, id: u64) -> bool {
        match (self.k, self.last_routed_seq()) {
            (Some(k), Some(seq)) => id.wrapping_sub(k) <= seq && seq - id.wrapping_sub(k) < 1 << 32,
            _ => false,
        }
    }

    fn last_routed_seq(&self) -> Option<u64> {
        // Records before the pending ones have been joined.
        match self.pending.front() {
            Some(p) => p.rec.seq.checked_sub(1),
            None => self.last_seq,
        }
    }

    fn finish_calibration(&mut self) {
        let Some(cal) = &self.cal else { return };
        let (Some(seq), Some(id)) = (cal.seq, cal.id) else {
            return;
        };
        let k = id.wrapping_sub(seq);
        if let Some(old) = self.k {
            if old != k {
                self.counters.k_changes += 1;
                log::warn!("kmsgfs attribution: recalibration changed K from {old:#x} to {k:#x}");
            }
        } else {
            log::info!("kmsgfs attribution: calibrated, seq = descriptor id - {k:#x}");
        }
        self.cal = None;
        self.last_cal_ok = true;
        self.counters.calibrations += 1;
        self.set_k(k, Some(id));
    }

    /// The host seq of the newest record whose event is stored (not yet joined): a daemon
    /// handing over reads records up to it, so that no record's event is consumed by one
    /// daemon and its record by the next. `None` without K or without stored events.
    pub fn newest_event_seq(&self) -> Option<u64> {
        let k = self.k?;
        self.events.newest_id().map(|id| id.wrapping_sub(k))
    }

    /// When [`Router::poll`] should next be called even if nothing arrives.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut at = |t: Instant| d = Some(d.map_or(t, |x| x.min(t)));
        if let Some(p) = self.pending.front() {
            match &self.cal {
                Some(cal) if self.k.is_none() => at(cal.deadline),
                _ => at(p.arrived + self.cfg.hold),
            }
        }
        if let Some(cal) = &self.cal {
            at(cal.deadline);
        }
        for b in self.blocks.values() {
            at(b.opened + self.cfg.oom_hold);
        }
        d
    }

    /// Route every record that can be decided at `now`, in host order.
    pub fn poll(&mut self, now: Instant) -> Vec<Routed> {
        let mut out = Vec::new();
        self.poll_into(now, &mut out);
        out
    }

    /// [`Router::poll`] into a caller-owned vector (appends).
    pub fn poll_into(&mut self, now: Instant, out: &mut Vec<Routed>) {
        if let Some(cal) = &self.cal {
            if now >= cal.deadline {
                self.counters.calibration_failures += 1;
                log::warn!(
                    "kmsgfs attribution: calibration timed out (nonce record or its event not \
                     seen); {}",
                    if self.k.is_some() {
                        "keeping the previous K"
                    } else {
                        "joining records by text and timestamp instead of sequence number"
                    }
                );
                self.cal = None;
            }
        }
        while !self.pending.is_empty() {
            let Some((how, ev)) = self.join(now) else {
                break;
            };
            let p = self.pending.pop_front().expect("not empty");
            self.decide(p.rec, how, ev, now);
        }
        if let (Some(k), Some(seq)) = (self.k, self.last_routed_seq()) {
            let n = self.events.prune_through(seq.wrapping_add(k));
            self.counters.events_pruned += n as u64;
        }
        self.expire_blocks(now);
        while self.decided.front().is_some_and(|d| d.targets.is_some()) {
            let d = self.decided.pop_front().expect("front exists");
            let targets = d.targets.expect("checked");
            self.counters.routed += 1;
            out.push(Routed {
                record: d.rec,
                targets,
                how: d.how,
            });
        }
    }

    /// Find the event for the front pending record. `None`: wait.
    fn join(&mut self, now: Instant) -> Option<(How, Option<Event>)> {
        let p = self.pending.front()?;
        if !self.cfg.bpf {
            return Some((How::Unattributed(Reason::NoBpf), None));
        }
        let held_out = now >= p.arrived + self.cfg.hold;
        let Some(k) = self.k else {
            if self.cal.is_some() {
                return None; // wait for K
            }
            if !held_out {
                return None;
            }
            return Some(self.fallback());
        };
        let id = p.rec.seq.wrapping_add(k);
        if let Some(ev) = self.events.take(id) {
            if ev.matches_text(&p.rec.text) {
                self.mismatches = 0;
                self.learn_offset(&ev);
                return Some((How::Exact, Some(ev)));
            }
            self.counters.verify_mismatch += 1;
            self.mismatches += 1;
            if self.mismatches >= MISMATCH_LIMIT {
                log::warn!(
                    "kmsgfs attribution: {MISMATCH_LIMIT} consecutive joins had the wrong text; \
                     K is no longer trusted, recalibrating"
                );
                self.k = None;
            }
            return Some((How::Unattributed(Reason::VerifyMismatch), None));
        }
        if self.first_id.is_some_and(|f| id < f) {
            return Some((How::Unattributed(Reason::PreAttach), None));
        }
        if let Some(ev) = self.events.take_cont(id) {
            return Some((How::Continuation, Some(ev)));
        }
        if !held_out {
            return None;
        }
        Some((How::Unattributed(Reason::NoEvent), None))
    }

    /// Text + timestamp join for the front pending record.
    fn fallback(&mut self) -> (How, Option<Event>) {
        let p = self.pending.front().expect("called with a pending record");
        let want = self
            .ts_offset_ns
            .map(|off| (p.rec.ts_usec as i64 * 1000 + off).max(0) as u64);
        match self.events.take_by_text(&p.rec.text, want) {
            Some((ev, n)) => {
                if n == 1 {
                    self.learn_offset_from(&ev, p.rec.ts_usec);
                }
                if let Some(stale) = ev.id.checked_sub(FALLBACK_WINDOW) {
                    let n = self.events.prune_through(stale);
                    self.counters.events_pruned += n as u64;
                }
                (How::Fallback, Some(ev))
            }
            None => (How::Unattributed(Reason::NoEvent), None),
        }
    }

    fn learn_offset(&mut self, ev: &Event) {
        let ts = self.pending.front().map(|p| p.rec.ts_usec).unwrap_or(0);
        self.learn_offset_from(ev, ts);
    }

    /// Track `event clock − record clock` (they drift by ~50 ppm, docs/attribution.md §10).
    fn learn_offset_from(&mut self, ev: &Event, ts_usec: u64) {
        if ev.ts_ns == 0 {
            return;
        }
        let sample = ev.ts_ns as i64 - ts_usec as i64 * 1000;
        self.ts_offset_ns = Some(match self.ts_offset_ns {
            None => sample,
            Some(old) => old + (sample - old) / 16,
        });
    }

    fn owners(&self, ev: &Event, text: &[u8]) -> Result<Vec<NsRef>, Reason> {
        let nf = text::netfilter_devices(text);
        let packet = match ev.net_source {
            NetSource::Fentry => true,
            NetSource::RxStash => {
                if !ev.irq_stack && nf.is_none() {
                    return Err(Reason::KernelThread);
                }
                if let Some((indev, outdev)) = nf {
                    let name = ev.ifname_str();
                    if !name.is_empty() && indev != name && outdev != name {
                        return Err(Reason::RxMismatch);
                    }
                }
                true
            }
            NetSource::Task => {
                if ev.kthread {
                    return Err(Reason::KernelThread);
                }
                if ev.irq_stack {
                    return Err(Reason::InterruptNoNet);
                }
                false
            }
        };
        let host = self.cfg.host;
        match self.cfg.key {
            KeyKind::Net => {
                // Not a packet: the source is the task, whose namespace `net` is.
                let net = if packet { ev.net } else { ev.ns.net };
                let ns_id = (net == ev.net && ev.net_ns_id != 0).then_some(ev.net_ns_id);
                match net {
                    0 => Err(Reason::NoNamespace),
                    n if n == host.net => Ok(Vec::new()),
                    inode => Ok(vec![NsRef { inode, ns_id }]),
                }
            }
            KeyKind::User => {
                let chain = if packet || nf.is_some() {
                    &ev.net_user_chain
                } else {
                    &ev.user_chain
                };
                below_host(chain, host.user)
            }
            KeyKind::Pid => {
                if packet {
                    return Err(Reason::NoPidForPacket);
                }
                below_host(&ev.pid_chain, host.pid)
            }
        }
    }

    fn unattributed(&mut self, reason: Reason) -> (Targets, How) {
        let c = &mut self.counters;
        c.unattributed += 1;
        match reason {
            Reason::PreAttach => c.pre_attach += 1,
            Reason::NoEvent | Reason::VerifyMismatch | Reason::NoNamespace => c.no_event += 1,
            Reason::NoBpf => c.no_bpf += 1,
            Reason::KernelThread => c.kernel_thread += 1,
            Reason::InterruptNoNet | Reason::NoPidForPacket => c.interrupt += 1,
            Reason::RxMismatch => c.rx_mismatch += 1,
        }
        let t = match self.cfg.unattributed {
            Unattributed::Host => Targets::Host,
            Unattributed::All => Targets::All,
        };
        (t, How::Unattributed(reason))
    }

    fn decide(&mut self, rec: Record, how: How, ev: Option<Event>, now: Instant) {
        match how {
            How::Exact => self.counters.exact += 1,
            How::Continuation => self.counters.continuation += 1,
            How::Fallback => self.counters.fallback += 1,
            _ => {}
        }
        let Some(ev) = ev else {
            let reason = match how {
                How::Unattributed(r) => r,
                _ => Reason::NoEvent,
            };
            // An oom_reaper line names a recent victim.
            if let Some(t) = self.reaper_targets(&rec.text, now) {
                self.push_decided(rec, Some(t), How::OomReaper, None);
                return;
            }
            let (t, how) = self.unattributed(reason);
            self.push_decided(rec, Some(t), how, None);
            return;
        };
        let (targets, how) = match self.owners(&ev, &rec.text) {
            Ok(owners) => (Targets::from_owners(owners), how),
            Err(reason) => {
                if let Some(t) = self.reaper_targets(&rec.text, now) {
                    self.push_decided(rec, Some(t), How::OomReaper, None);
                    return;
                }
                self.unattributed(reason)
            }
        };
        // OOM report block: printed by one task, in task context.
        if !ev.irq_stack {
            let pid = ev.cur_pid;
            if text::is_oom_start(&rec.text) {
                self.blocks.insert(
                    pid,
                    OomBlock {
                        opened: now,
                        trigger: targets,
                        closing: false,
                    },
                );
                self.push_decided(rec, None, how, Some(pid));
                return;
            }
            if let Some(b) = self.blocks.get_mut(&pid) {
                if text::is_oom_kill(&rec.text) {
                    b.closing = true;
                }
                self.push_decided(rec, None, how, Some(pid));
                self.try_close(pid, now, false);
                return;
            }
        }
        self.push_decided(rec, Some(targets), how, None);
    }

    fn push_decided(
        &mut self,
        rec: Record,
        targets: Option<Targets>,
        how: How,
        block: Option<u32>,
    ) {
        if let Some(t) = &targets {
            match t {
                Targets::Owners(_) => self.counters.owned += 1,
                Targets::Host if !matches!(how, How::Unattributed(_)) => {
                    self.counters.host_owned += 1
                }
                _ => {}
            }
        }
        self.decided.push_back(Decided {
            rec,
            targets,
            how,
            block,
        });
    }

    fn reaper_targets(&mut self, text: &[u8], now: Instant) -> Option<Targets> {
        let pid = text::oom_reaper_pid(text)?;
        while self
            .recent_victims
            .front()
            .is_some_and(|v| now.saturating_duration_since(v.3) > REAPER_WINDOW)
        {
            self.recent_victims.pop_front();
        }
        self.recent_victims
            .iter()
            .rev()
            .find(|v| v.0 == pid || v.1 == pid)
            .map(|v| v.2.clone())
    }

    /// Close the OOM block of trigger `pid` if its end and its victim are known, or if `force`.
    fn try_close(&mut self, pid: u32, now: Instant, force: bool) {
        let Some(b) = self.blocks.get(&pid) else {
            return;
        };
        let victim = if b.closing {
            self.take_victim(pid)
        } else {
            None
        };
        if victim.is_none() && !force {
            return;
        }
        let b = self.blocks.remove(&pid).expect("checked");
        self.counters.oom_blocks += 1;
        let (targets, victim_pid) = match victim {
            Some(v) => {
                let vt = self.owners(&v, b"").unwrap_or_default();
                let mut all = vt.clone();
                if self.cfg.oom_policy == OomPolicy::VictimAndTrigger {
                    if let Targets::Owners(t) = &b.trigger {
                        for x in t {
                            if !all.contains(x) {
                                all.push(*x);
                            }
                        }
                    }
                }
                self.recent_victims
                    .push_back((v.pid, v.tgid, Targets::from_owners(vt), now));
                (Targets::from_owners(all), v.pid)
            }
            None => {
                self.counters.oom_no_victim += 1;
                (b.trigger.clone(), 0)
            }
        };
        for d in self.decided.iter_mut().filter(|d| d.block == Some(pid)) {
            d.targets = Some(targets.clone());
            d.block = None;
            d.how = How::Oom { victim_pid };
        }
    }

    fn take_victim(&mut self, trigger: u32) -> Option<Event> {
        let i = self.victims.iter().rposition(|v| v.cur_pid == trigger)?;
        self.victims.remove(i)
    }

    fn expire_blocks(&mut self, now: Instant) {
        let expired: Vec<u32> = self
            .blocks
            .iter()
            .filter(|(_, b)| now >= b.opened + self.cfg.oom_hold)
            .map(|(p, _)| *p)
            .collect();
        for pid in expired {
            // A victim event may still close it properly.
            if let Some(b) = self.blocks.get_mut(&pid) {
                b.closing = true;
            }
            self.try_close(pid, now, true);
        }
        // Blocks whose end was seen and whose victim event came later.
        let closing: Vec<u32> = self
            .blocks
            .iter()
            .filter(|(p, b)| b.closing && self.victims.iter().any(|v| v.cur_pid == **p))
            .map(|(p, _)| *p)
            .collect();
        for pid in closing {
            self.try_close(pid, now, false);
        }
    }
}

/// The namespaces of `chain` below the host's: the owner first, then its ancestors.
fn below_host(chain: &Chain, host: u32) -> Result<Vec<NsRef>, Reason> {
    let inodes = chain.as_slice();
    if inodes.is_empty() {
        return Err(Reason::NoNamespace);
    }
    Ok(inodes
        .iter()
        .copied()
        .take_while(|&x| x != host)
        .enumerate()
        .map(|(i, inode)| NsRef {
            inode,
            ns_id: chain.ns_id(i),
        })
        .collect())
}

#[cfg(test)]
mod tests;
