//! Rings by namespace: creation on first use, counters, and reclamation.
//!
//! Every ring belongs to one namespace, named by an [`NsKey`] (kind and nsfs inode; nsfs inode
//! numbers are unique across kinds). The host ring is created with the registry and is never
//! reclaimed. A container ring is created the first time an opener resolves to it
//! ([`Registry::acquire`]) and is reclaimed ([`Registry::reclaim`]) when
//!
//! 1. nothing holds it (frontends count their open handles as holders), and
//! 2. its namespace is gone: no process in `/proc/*/ns/<kind>` has it and no nsfs bind mount
//!    keeps it (the caller passes that set, see [`crate::sys::proc::live_namespaces`]), and
//! 3. it is older than the minimum age, so a ring created between two scans survives at least
//!    one full scan interval.
//!
//! Namespaces kept alive only by an open nsfs file descriptor in some process, or by processes
//! the daemon may not inspect, are not seen; their rings are reclaimed when unheld and recreated
//! empty on the next open (documented in docs/security.md).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::ring::{Ring, RingConfig};
use crate::sys::proc::NsKind;

/// Budget of ring creation and reclaim lines: namespaces are made by clients (an unprivileged
/// user can make thousands a second), so these lines are limited to 30 per 10 s.
pub(crate) static RING_LOG_BUDGET: crate::ratelimit::LogBudget =
    crate::ratelimit::LogBudget::new(Duration::from_secs(10), 30);

/// `log::info!` within [`RING_LOG_BUDGET`], saying how many lines were left out before.
macro_rules! ring_log {
    ($($arg:tt)*) => {
        match RING_LOG_BUDGET.admit(Instant::now()) {
            Some(0) => log::info!($($arg)*),
            Some(n) => {
                log::info!("({n} ring lines left out by the log budget)");
                log::info!($($arg)*);
            }
            None => {}
        }
    };
}

/// A namespace: its kind and nsfs inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NsKey {
    /// The namespace kind.
    pub kind: NsKind,
    /// The nsfs inode number (`stat -L /proc/<pid>/ns/<kind>`).
    pub inode: u64,
}

impl std::fmt::Display for NsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:[{}]", self.kind.name(), self.inode)
    }
}

/// One ring and its bookkeeping.
pub struct RingSlot {
    /// The namespace the ring belongs to.
    pub key: NsKey,
    /// Whether this is the host ring.
    pub host: bool,
    /// The user namespace owning [`RingSlot::key`] (for the access policy), when known.
    pub owner_userns: Option<u64>,
    /// The namespace's unique id (`NS_GET_ID`), when the kernel reports it. nsfs inode numbers
    /// are reused as soon as a namespace is freed; the id tells a new namespace with a reused
    /// inode from the dead one that owned this ring.
    pub ns_id: Option<u64>,
    /// The ring.
    pub ring: Arc<Ring>,
    created: Instant,
    holders: AtomicUsize,
    /// Open files that may read the ring (stats: open readers).
    pub readers: AtomicUsize,
    /// Records written through a frontend (`write(2)` on the kmsg file).
    pub writes: AtomicU64,
    /// Writes dropped by the per-file ratelimit (A7.5).
    pub writes_dropped: AtomicU64,
}

impl std::fmt::Debug for RingSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingSlot")
            .field("key", &self.key)
            .field("host", &self.host)
            .field("holders", &self.holders.load(Ordering::Relaxed))
            .finish()
    }
}

impl RingSlot {
    fn new(
        key: NsKey,
        host: bool,
        owner_userns: Option<u64>,
        ns_id: Option<u64>,
        config: RingConfig,
    ) -> Self {
        Self::with_ring(key, host, owner_userns, ns_id, Arc::new(Ring::new(config)))
    }

    fn with_ring(
        key: NsKey,
        host: bool,
        owner_userns: Option<u64>,
        ns_id: Option<u64>,
        ring: Arc<Ring>,
    ) -> Self {
        RingSlot {
            key,
            host,
            owner_userns,
            ns_id,
            ring,
            created: Instant::now(),
            holders: AtomicUsize::new(0),
            readers: AtomicUsize::new(0),
            writes: AtomicU64::new(0),
            writes_dropped: AtomicU64::new(0),
        }
    }

    /// Current holders (open handles of all frontends).
    pub fn holders(&self) -> usize {
        self.holders.load(Ordering::SeqCst)
    }

    /// Whether a namespace with inode `key.inode` and id `ns_id` is this ring's namespace
    /// (ids compared when both are known).
    pub fn same_namespace(&self, ns_id: Option<u64>) -> bool {
        match (self.ns_id, ns_id) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }

    /// A snapshot of the counters for the stats file.
    pub fn stats(&self) -> RingReport {
        let s = self.ring.stats();
        RingReport {
            key: self.key.to_string(),
            kind: self.key.kind.name(),
            inode: self.key.inode,
            host: self.host,
            ns_id: self.ns_id,
            records: s.records,
            bytes: s.bytes,
            appended: s.appended,
            overruns: s.overwritten,
            first_seq: self.ring.first_seq(),
            next_seq: self.ring.next_seq(),
            clear_seq: self.ring.clear_seq(),
            open_readers: self.readers.load(Ordering::Relaxed) as u64,
            holders: self.holders() as u64,
            writes: self.writes.load(Ordering::Relaxed),
            writes_dropped_ratelimit: self.writes_dropped.load(Ordering::Relaxed),
            retired: false,
        }
    }
}

/// Per-ring counters as the stats file shows them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RingReport {
    /// `kind:[inode]`.
    pub key: String,
    /// Namespace kind.
    pub kind: &'static str,
    /// Namespace inode.
    pub inode: u64,
    /// Whether this is the host ring.
    pub host: bool,
    /// The namespace id the ring is bound to (`NS_GET_ID`), when known.
    pub ns_id: Option<u64>,
    /// Records stored.
    pub records: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Records appended since creation.
    pub appended: u64,
    /// Records overwritten to make room.
    pub overruns: u64,
    /// Oldest stored seq.
    pub first_seq: u64,
    /// Next seq.
    pub next_seq: u64,
    /// Clear point.
    pub clear_seq: u64,
    /// Open files that may read the ring.
    pub open_readers: u64,
    /// Open files of any mode.
    pub holders: u64,
    /// Records written by clients.
    pub writes: u64,
    /// Writes dropped by the ratelimit.
    pub writes_dropped_ratelimit: u64,
    /// Replaced in the map by a newer namespace with the same inode, kept alive by open files
    /// of the old namespace (it still holds memory, so it is listed).
    pub retired: bool,
}

/// Bounds on the rings openers may create (docs/security.md T7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLimits {
    /// Rings in total, the host ring and retired rings included (`--max-rings`).
    pub max_rings: usize,
    /// Rings created by the openers of one host uid other than 0 (`--max-rings-per-uid`).
    pub max_rings_per_uid: usize,
}

impl Default for RingLimits {
    fn default() -> Self {
        RingLimits {
            max_rings: 4096,
            max_rings_per_uid: 128,
        }
    }
}

/// Why a new ring was not created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingRefused {
    /// `--max-rings` reached.
    #[error("the daemon holds {0} rings, its limit (--max-rings)")]
    Total(usize),
    /// `--max-rings-per-uid` reached for this uid.
    #[error("uid {uid} created {count} rings, its limit (--max-rings-per-uid)")]
    PerUid {
        /// The host uid of the openers.
        uid: u32,
        /// Rings it created that still exist.
        count: usize,
    },
}

/// All rings of the daemon.
pub struct Registry {
    config: RingConfig,
    host: Arc<RingSlot>,
    rings: Mutex<HashMap<NsKey, Arc<RingSlot>>>,
    limits: RingLimits,
    /// The host uid whose opener created each ring (not for rings created by delivery or by
    /// uid 0), for [`RingLimits::max_rings_per_uid`].
    charged: Mutex<HashMap<NsKey, u32>>,
    /// Rings replaced in `rings` by a namespace reusing their inode; listed while alive.
    retired: Mutex<Vec<std::sync::Weak<RingSlot>>>,
    /// See [`Registry::stale_delivered`].
    stale_delivered: AtomicU64,
    /// See [`Registry::delivery_refused`].
    delivery_refused: AtomicU64,
    /// Namespace instances found dead on delivery (another namespace has their inode), so that
    /// their further records skip the `/proc` scan; at most [`DEAD_IDS_KEPT`].
    dead_ids: Mutex<HashSet<(NsKey, u64)>>,
    /// Rings named by a listener's `io.kmsgfs.key` annotation (`syslog(2)` only), alive while
    /// a listener holds them ([`Registry::named_ring`]).
    /// With the ring's keeper serial (0: not kept), to tell the holder when it is gone.
    named: Mutex<HashMap<String, (std::sync::Weak<Ring>, u64)>>,
    /// Named rings adopted from the holder, held until a listener with their name claims them
    /// again or the first reclaim scan finds none did ([`Registry::reclaim`]).
    adopted_named: Mutex<HashMap<String, Arc<Ring>>>,
    /// Where namespace rings are kept across restarts (`--holder-socket`), if anywhere.
    keeper: Option<Arc<crate::restart::keeper::RingKeeper>>,
    /// Rings adopted from, and refused of, the holder at start-up.
    adopted: (AtomicU64, AtomicU64),
}

/// Bound of [`Registry`]'s dead-namespace memo (cleared when full).
const DEAD_IDS_KEPT: usize = 1024;

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.host.key)
            .field("rings", &self.rings.lock().len())
            .finish()
    }
}

impl Registry {
    /// A registry with the host ring under `host_key` (namespace id `host_ns_id`).
    pub fn new(config: RingConfig, host_key: NsKey, host_ns_id: Option<u64>) -> Self {
        let host = Arc::new(RingSlot::new(host_key, true, None, host_ns_id, config));
        let mut rings = HashMap::new();
        rings.insert(host_key, Arc::clone(&host));
        Registry {
            config,
            host,
            rings: Mutex::new(rings),
            limits: RingLimits::default(),
            charged: Mutex::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
            stale_delivered: AtomicU64::new(0),
            delivery_refused: AtomicU64::new(0),
            dead_ids: Mutex::new(HashSet::new()),
            named: Mutex::new(HashMap::new()),
            adopted_named: Mutex::new(HashMap::new()),
            keeper: None,
            adopted: (AtomicU64::new(0), AtomicU64::new(0)),
        }
    }

    /// A registry whose rings live in memfds the holder keeps (`keeper`), with the rings a
    /// previous daemon left (`adopted`, from [`crate::restart::keeper::RingKeeper::adopt`]) put
    /// back under their namespaces. The host ring is the adopted one of `host_key` if there is
    /// one, else a new kept ring. Adopted rings of another kind than `host_key`'s (a daemon
    /// restarted with another `--key`) are dropped from the holder.
    pub fn kept(
        config: RingConfig,
        host_key: NsKey,
        host_ns_id: Option<u64>,
        keeper: Arc<crate::restart::keeper::RingKeeper>,
        adopted: Vec<(crate::restart::keeper::RingIdent, Arc<Ring>)>,
    ) -> Self {
        let mut host_ring = None;
        let mut others = Vec::new();
        let mut named = HashMap::new();
        for (ident, ring) in adopted {
            if let Some(name) = &ident.name {
                named.insert(name.clone(), ring);
                continue;
            }
            let kind = NsKind::from_name(&ident.kind);
            if ident.host && kind == Some(host_key.kind) && ident.inode == host_key.inode {
                host_ring = Some(ring);
            } else if let (Some(kind), false) = (kind, ident.host) {
                others.push((
                    NsKey {
                        kind,
                        inode: ident.inode,
                    },
                    ident,
                    ring,
                ));
            } else {
                log::info!(
                    "dropping the kept ring of {}:[{}]: not a ring of this daemon's host",
                    ident.kind,
                    ident.inode
                );
                keeper.forget(&ring);
            }
        }
        if let Some(h) = &host_ring {
            h.meta()[crate::restart::keeper::META_HOST_RESTARTS].fetch_add(1, Ordering::Relaxed);
        }
        let host_ring = host_ring.unwrap_or_else(|| {
            Arc::new(keeper.create(
                config,
                &crate::restart::keeper::RingIdent::of_namespace(host_key, host_ns_id, None, true),
            ))
        });
        let mut r = Registry::new(config, host_key, host_ns_id);
        let host = Arc::new(RingSlot::with_ring(
            host_key, true, None, host_ns_id, host_ring,
        ));
        {
            let mut rings = r.rings.lock();
            rings.insert(host_key, Arc::clone(&host));
            for (key, ident, ring) in others {
                if key.kind != host_key.kind || key == host_key {
                    keeper.forget(&ring);
                    continue;
                }
                rings.insert(
                    key,
                    Arc::new(RingSlot::with_ring(
                        key,
                        false,
                        ident.owner_userns,
                        ident.ns_id,
                        ring,
                    )),
                );
            }
        }
        r.host = host;
        r.keeper = Some(keeper);
        *r.adopted_named.lock() = named;
        r
    }

    /// A new ring for a namespace ring slot: kept by the holder when there is one.
    fn new_ring(&self, key: NsKey, owner_userns: Option<u64>, ns_id: Option<u64>) -> Arc<Ring> {
        Arc::new(match &self.keeper {
            Some(k) => k.create(
                self.config,
                &crate::restart::keeper::RingIdent::of_namespace(key, ns_id, owner_userns, false),
            ),
            None => Ring::new(self.config),
        })
    }

    /// The ring left the registry: the holder need not keep it any more.
    fn forget(&self, ring: &Ring) {
        if let Some(k) = &self.keeper {
            k.forget(ring);
        }
    }

    /// With a holder: (restarts the host ring survived, rings adopted at start-up, kept
    /// rings refused, rings the holder could not keep) for `stats`.
    pub fn restart_counts(&self) -> Option<(u64, u64, u64, u64)> {
        self.keeper.as_ref().map(|k| {
            (
                self.host.ring.meta()[crate::restart::keeper::META_HOST_RESTARTS]
                    .load(Ordering::Relaxed),
                self.adopted.0.load(Ordering::Relaxed),
                self.adopted.1.load(Ordering::Relaxed),
                k.unkept(),
            )
        })
    }

    /// Record what the start-up adoption found (`stats`).
    pub fn set_adopted(&self, adopted: u64, refused: u64) {
        self.adopted.0.store(adopted, Ordering::Relaxed);
        self.adopted.1.store(refused, Ordering::Relaxed);
    }

    /// The same registry with `limits` on ring creation by openers.
    pub fn with_limits(mut self, limits: RingLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Like [`Registry::acquire`], for an opener of host uid `uid`: a ring that does not exist
    /// yet is created only within [`RingLimits`]. uid 0 is bounded by the total only.
    pub fn acquire_for_uid(
        &self,
        key: NsKey,
        owner_userns: Option<u64>,
        ns_id: Option<u64>,
        uid: u32,
    ) -> Result<Arc<RingSlot>, RingRefused> {
        let exists = self
            .rings
            .lock()
            .get(&key)
            .is_some_and(|s| s.host || s.same_namespace(ns_id));
        if !exists {
            let total = self.rings.lock().len() + self.retired_alive() + self.named_alive();
            if total >= self.limits.max_rings {
                return Err(RingRefused::Total(total));
            }
            if uid != 0 {
                let count = self.charged.lock().values().filter(|&&u| u == uid).count();
                if count >= self.limits.max_rings_per_uid {
                    return Err(RingRefused::PerUid { uid, count });
                }
            }
        }
        let slot = self.acquire(key, owner_userns, ns_id);
        if !exists && uid != 0 {
            self.charged.lock().insert(key, uid);
        }
        Ok(slot)
    }

    /// The ring named `name` for `syslog(2)` (the `io.kmsgfs.key` annotation), shared by
    /// every listener with that name and alive while one holds it. It counts against
    /// [`RingLimits::max_rings`] like any ring: `None` when a new one would exceed it.
    pub fn named_ring(&self, name: &str) -> Option<Arc<Ring>> {
        if let Some(r) = self.named.lock().get(name).and_then(|(w, _)| w.upgrade()) {
            return Some(r);
        }
        // A ring the previous daemon kept under this name: its records and cursors go on.
        if let Some(r) = self.adopted_named.lock().remove(name) {
            let serial = r.meta()[crate::restart::keeper::META_SERIAL].load(Ordering::Relaxed);
            self.named
                .lock()
                .insert(name.to_owned(), (Arc::downgrade(&r), serial));
            return Some(r);
        }
        // Counted before `named` is locked again: `rings` is never taken under `named`.
        let total = self.rings.lock().len() + self.retired_alive() + self.named_alive();
        let mut named = self.named.lock();
        if let Some(r) = named.get(name).and_then(|(w, _)| w.upgrade()) {
            return Some(r);
        }
        if total >= self.limits.max_rings {
            if RING_LOG_BUDGET.admit(Instant::now()).is_some() {
                log::warn!(
                    "no named ring {name:?}: the daemon holds {total} rings, its limit (--max-rings)"
                );
            }
            return None;
        }
        self.forget_dead_named(&mut named);
        ring_log!("new named ring {name:?} for syslog(2)");
        let r = Arc::new(match &self.keeper {
            Some(k) => k.create(
                self.config,
                &crate::restart::keeper::RingIdent {
                    kind: "named".into(),
                    inode: 0,
                    ns_id: None,
                    owner_userns: None,
                    host: false,
                    name: Some(name.to_owned()),
                },
            ),
            None => Ring::new(self.config),
        });
        let serial = r.meta()[crate::restart::keeper::META_SERIAL].load(Ordering::Relaxed);
        named.insert(name.to_owned(), (Arc::downgrade(&r), serial));
        Some(r)
    }

    /// Drop the named rings no listener holds any more (and their holder entries).
    fn forget_dead_named(&self, named: &mut HashMap<String, (std::sync::Weak<Ring>, u64)>) {
        named.retain(|_, (w, serial)| {
            let alive = w.strong_count() > 0;
            if !alive {
                if let Some(k) = &self.keeper {
                    k.forget_serial(*serial);
                }
            }
            alive
        });
    }

    /// The named rings alive, by name.
    pub fn named_rings(&self) -> Vec<(String, Arc<Ring>)> {
        let mut v: Vec<(String, Arc<Ring>)> = self
            .named
            .lock()
            .iter()
            .filter_map(|(n, (w, _))| w.upgrade().map(|r| (n.clone(), r)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn named_alive(&self) -> usize {
        self.named
            .lock()
            .values()
            .filter(|(w, _)| w.strong_count() > 0)
            .count()
            + self.adopted_named.lock().len()
    }

    fn retired_alive(&self) -> usize {
        let mut r = self.retired.lock();
        r.retain(|w| w.strong_count() > 0);
        r.len()
    }

    /// Rings replaced by a newer namespace with the same inode that open files still hold.
    pub fn retired(&self) -> Vec<Arc<RingSlot>> {
        let mut r = self.retired.lock();
        r.retain(|w| w.strong_count() > 0);
        r.iter().filter_map(std::sync::Weak::upgrade).collect()
    }

    /// The ring size of new rings.
    pub fn config(&self) -> RingConfig {
        self.config
    }

    /// The host ring.
    pub fn host(&self) -> &Arc<RingSlot> {
        &self.host
    }

    /// The ring of `key` (namespace id `ns_id`), created if needed, with one more holder. Pair
    /// with [`Registry::release`].
    ///
    /// If the registered ring belongs to a dead namespace whose inode number was reused (the
    /// ids differ), it is replaced by a fresh ring: the new namespace never sees the old
    /// namespace's records. Holders of the old ring keep it until they release it.
    pub fn acquire(
        &self,
        key: NsKey,
        owner_userns: Option<u64>,
        ns_id: Option<u64>,
    ) -> Arc<RingSlot> {
        let mut rings = self.rings.lock();
        if let Some(old) = rings.get(&key) {
            if !old.host && !old.same_namespace(ns_id) {
                ring_log!(
                    "namespace inode {key} reused by a new namespace (id {:?} -> {:?}); new ring",
                    old.ns_id,
                    ns_id
                );
                self.retire_locked(&mut rings, key);
            } else if !old.host && old.owner_userns.is_none() && owner_userns.is_some() {
                // Created by record delivery before any opener, when no process of the
                // namespace could be inspected: learn the owner now, keep the records.
                let ring = Arc::clone(&old.ring);
                let ns_id = old.ns_id.or(ns_id);
                log::debug!("ring {key}: owner user namespace learnt from an opener");
                if let Some(k) = &self.keeper {
                    k.update(
                        &ring,
                        &crate::restart::keeper::RingIdent::of_namespace(
                            key,
                            ns_id,
                            owner_userns,
                            false,
                        ),
                    );
                }
                rings.insert(
                    key,
                    Arc::new(RingSlot::with_ring(key, false, owner_userns, ns_id, ring)),
                );
            }
        }
        let slot = rings.entry(key).or_insert_with(|| {
            ring_log!("new ring for namespace {key}");
            let ring = self.new_ring(key, owner_userns, ns_id);
            Arc::new(RingSlot::with_ring(key, false, owner_userns, ns_id, ring))
        });
        slot.holders.fetch_add(1, Ordering::SeqCst);
        Arc::clone(slot)
    }

    /// The ring that receives records attributed to namespace instance `key` + `ns_id` (the
    /// id the BPF side read with the record), created without a holder if needed (a
    /// container's boot messages are kept until it first opens its log). `resolve` gives the
    /// owner user namespace and the id of the live namespace that now has inode `key.inode`,
    /// read from a member process (or `None`s when no process is a member).
    ///
    /// Namespace ids are unique but not ordered in time (the kernel hands them out from
    /// per-CPU batches), so a record whose id differs from its inode's ring is placed by
    /// asking which namespace is alive ([`Delivery`](crate::attribution::deliver)):
    /// * a retired ring bound to the record's id (its namespace is dead, an open file still
    ///   holds the ring) receives it;
    /// * the live namespace with that inode is the record's: the ring's namespace is dead and
    ///   its inode reused; the ring is retired (its holders keep it) and a fresh one is bound
    ///   to the record's namespace, which gets none of the dead namespace's records;
    /// * another namespace is alive with that inode: the record's namespace is dead and has no
    ///   ring; the record stays in the host ring only (counted in
    ///   [`Registry::stale_delivered`]), never in the live namespace's ring;
    /// * no member is alive: records reach the daemon in printk order, so the record's
    ///   namespace came after the ring's (which is dead too): as in the second case.
    ///
    /// `None` when no ring receives the record: stale, or a new ring would exceed
    /// [`RingLimits::max_rings`] (counted in [`Registry::delivery_refused`]).
    pub fn ring_for_delivery(
        &self,
        key: NsKey,
        ns_id: Option<u64>,
        resolve: impl FnOnce() -> (Option<u64>, Option<u64>),
    ) -> Option<Arc<RingSlot>> {
        let mismatch = {
            let rings = self.rings.lock();
            match rings.get(&key) {
                Some(s) if s.host || s.same_namespace(ns_id) => return Some(Arc::clone(s)),
                Some(s) => s.ns_id,
                None => None,
            }
        };
        if let (Some(have), Some(got)) = (mismatch, ns_id) {
            if let Some(r) = self
                .retired()
                .into_iter()
                .find(|r| r.key == key && r.ns_id == Some(got))
            {
                return Some(r);
            }
            if self.dead_ids.lock().contains(&(key, got)) {
                self.stale_delivered.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            // Resolve outside the lock: it scans /proc.
            let (owner, live) = resolve();
            if live.is_some_and(|l| l != got) {
                let mut dead = self.dead_ids.lock();
                if dead.len() >= DEAD_IDS_KEPT {
                    dead.clear();
                }
                dead.insert((key, got));
                self.stale_delivered.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            ring_log!(
                "namespace inode {key} reused (id {have} -> {got}); new ring for the records of the new namespace"
            );
            let owner = if live == Some(got) {
                owner
            } else {
                (key.kind == NsKind::User).then_some(key.inode)
            };
            let mut rings = self.rings.lock();
            if rings.get(&key).is_some_and(|s| s.ns_id == Some(have)) {
                self.retire_locked(&mut rings, key);
            }
            return self.create_for_delivery(rings, key, owner, ns_id);
        }
        let (owner, resolved_id) = resolve();
        // A live member of a different namespace that reuses the inode says nothing about the
        // record's namespace.
        let (owner, ns_id) = match (ns_id, resolved_id) {
            (Some(a), Some(b)) if a != b => {
                ((key.kind == NsKind::User).then_some(key.inode), Some(a))
            }
            (a, b) => (owner, a.or(b)),
        };
        let rings = self.rings.lock();
        self.create_for_delivery(rings, key, owner, ns_id)
    }

    /// Second half of [`Registry::ring_for_delivery`]: a new ring for `key`, within the limit.
    fn create_for_delivery(
        &self,
        mut rings: parking_lot::MutexGuard<'_, HashMap<NsKey, Arc<RingSlot>>>,
        key: NsKey,
        owner: Option<u64>,
        ns_id: Option<u64>,
    ) -> Option<Arc<RingSlot>> {
        if let Some(s) = rings.get(&key) {
            // Created meanwhile by an opener or another delivery.
            return s.same_namespace(ns_id).then(|| Arc::clone(s));
        }
        let total = rings.len() + self.retired_alive() + self.named_alive();
        if total >= self.limits.max_rings {
            drop(rings);
            self.delivery_refused.fetch_add(1, Ordering::Relaxed);
            if RING_LOG_BUDGET.admit(Instant::now()).is_some() {
                log::warn!(
                    "no ring for namespace {key}: the daemon holds {total} rings, its limit (--max-rings); its records stay in the host ring only"
                );
            }
            return None;
        }
        ring_log!("new ring for namespace {key} (first attributed record)");
        let ring = self.new_ring(key, owner, ns_id);
        let slot = Arc::new(RingSlot::with_ring(key, false, owner, ns_id, ring));
        rings.insert(key, Arc::clone(&slot));
        Some(slot)
    }

    /// Move the ring of `key` out of the map into the retired list (its holders keep it).
    fn retire_locked(&self, rings: &mut HashMap<NsKey, Arc<RingSlot>>, key: NsKey) {
        if let Some(old) = rings.remove(&key) {
            self.charged.lock().remove(&key);
            self.forget(&old.ring);
            self.retired.lock().push(Arc::downgrade(&old));
        }
    }

    /// Records of a dead namespace that arrived after its inode's ring was bound to a newer
    /// namespace (kept out of it).
    pub fn stale_delivered(&self) -> u64 {
        self.stale_delivered.load(Ordering::Relaxed)
    }

    /// Attributed records that got no ring of their own because of [`RingLimits::max_rings`].
    pub fn delivery_refused(&self) -> u64 {
        self.delivery_refused.load(Ordering::Relaxed)
    }

    /// Every namespace ring (not the host's).
    pub fn namespace_rings(&self) -> Vec<Arc<RingSlot>> {
        self.rings
            .lock()
            .values()
            .filter(|s| !s.host)
            .cloned()
            .collect()
    }

    /// Take one more holder on an existing slot.
    pub fn hold(&self, slot: &Arc<RingSlot>) {
        let _g = self.rings.lock();
        slot.holders.fetch_add(1, Ordering::SeqCst);
    }

    /// Drop one holder.
    pub fn release(&self, slot: &RingSlot) {
        let _g = self.rings.lock();
        slot.holders.fetch_sub(1, Ordering::SeqCst);
    }

    /// The existing ring of `key`.
    pub fn get(&self, key: NsKey) -> Option<Arc<RingSlot>> {
        self.rings.lock().get(&key).cloned()
    }

    /// The ring whose keeper serial (`restart::keeper::META_SERIAL`) is `serial`: what an
    /// open file adopted from a previous daemon names. `None` for serial 0 (not kept).
    pub fn by_serial(&self, serial: u64) -> Option<Arc<RingSlot>> {
        if serial == 0 {
            return None;
        }
        let is = |s: &Arc<RingSlot>| {
            s.ring.meta()[crate::restart::keeper::META_SERIAL].load(Ordering::Relaxed) == serial
        };
        let found = self.rings.lock().values().find(|s| is(s)).cloned();
        found.or_else(|| self.retired().into_iter().find(is))
    }

    /// The existing ring whose namespace inode is `inode` (any kind).
    pub fn by_inode(&self, inode: u64) -> Option<Arc<RingSlot>> {
        self.rings
            .lock()
            .values()
            .find(|s| s.key.inode == inode)
            .cloned()
    }

    /// Every ring, host first, then by key.
    pub fn list(&self) -> Vec<Arc<RingSlot>> {
        let mut v: Vec<Arc<RingSlot>> = self.rings.lock().values().cloned().collect();
        v.sort_by_key(|s| (!s.host, s.key));
        v
    }

    /// Remove rings whose namespace is not in `live`, that nobody holds and that are older
    /// than `min_age`; returns the removed keys.
    pub fn reclaim(&self, live: &HashSet<u64>, min_age: Duration) -> Vec<NsKey> {
        // Kept named rings no adopted listener claimed since start-up: their containers are
        // gone.
        for (name, ring) in std::mem::take(&mut *self.adopted_named.lock()) {
            ring_log!("dropping the kept named ring {name:?}: no listener claimed it");
            self.forget(&ring);
        }
        self.forget_dead_named(&mut self.named.lock());
        let mut rings = self.rings.lock();
        let dead: Vec<NsKey> = rings
            .values()
            .filter(|s| {
                !s.host
                    && s.holders() == 0
                    && !live.contains(&s.key.inode)
                    && s.created.elapsed() >= min_age
            })
            .map(|s| s.key)
            .collect();
        let mut charged = self.charged.lock();
        for k in &dead {
            if let Some(old) = rings.remove(k) {
                self.forget(&old.ring);
            }
            charged.remove(k);
            ring_log!("reclaimed ring of namespace {k}: namespace gone and no open files");
        }
        dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> NsKey {
        NsKey {
            kind: NsKind::Net,
            inode: i,
        }
    }

    #[test]
    fn acquire_creates_once_and_counts_holders() {
        let r = Registry::new(RingConfig::with_bytes(4096), key(1), None);
        let a = r.acquire(key(2), None, Some(7));
        let b = r.acquire(key(2), None, Some(7));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.holders(), 2);
        assert!(Arc::ptr_eq(&r.by_inode(2).unwrap(), &a));
        assert!(r.list()[0].host);
    }

    #[test]
    fn reclaim_needs_dead_namespace_no_holders_and_age() {
        let r = Registry::new(RingConfig::with_bytes(4096), key(1), None);
        let a = r.acquire(key(2), None, None);
        let live: HashSet<u64> = HashSet::new();
        assert!(r.reclaim(&live, Duration::ZERO).is_empty(), "held");
        r.release(&a);
        assert!(
            r.reclaim(&live, Duration::from_secs(3600)).is_empty(),
            "too young"
        );
        let alive: HashSet<u64> = [2].into_iter().collect();
        assert!(
            r.reclaim(&alive, Duration::ZERO).is_empty(),
            "namespace alive"
        );
        assert_eq!(r.reclaim(&live, Duration::ZERO), vec![key(2)]);
        assert!(r.get(key(2)).is_none());
        // The host ring is never reclaimed.
        assert!(r.get(key(1)).is_some());
    }

    #[test]
    fn delivery_ring_is_created_once_and_learns_its_owner() {
        let r = Registry::new(RingConfig::with_bytes(4096), key(1), None);
        let d = r.ring_for_delivery(key(3), None, || (None, None)).unwrap();
        assert_eq!(d.holders(), 0);
        let again = r
            .ring_for_delivery(key(3), None, || unreachable!("exists"))
            .unwrap();
        assert!(Arc::ptr_eq(&d, &again));
        let a = r.acquire(key(3), Some(77), Some(5));
        assert_eq!(a.owner_userns, Some(77));
        assert!(
            Arc::ptr_eq(&a.ring, &d.ring),
            "records delivered so far are kept"
        );
        assert_eq!(r.namespace_rings().len(), 1);
    }

    #[test]
    fn openers_of_one_uid_create_at_most_their_share_of_rings() {
        let r = Registry::new(RingConfig::with_bytes(4096), key(1), None).with_limits(RingLimits {
            max_rings: 5,
            max_rings_per_uid: 2,
        });
        let a = r.acquire_for_uid(key(2), None, Some(2), 65534).unwrap();
        r.acquire_for_uid(key(3), None, Some(3), 65534).unwrap();
        assert_eq!(
            r.acquire_for_uid(key(4), None, Some(4), 65534).unwrap_err(),
            RingRefused::PerUid {
                uid: 65534,
                count: 2
            }
        );
        // An existing ring is always handed out; another uid has its own share.
        assert!(Arc::ptr_eq(
            &r.acquire_for_uid(key(2), None, Some(2), 65534).unwrap(),
            &a
        ));
        r.acquire_for_uid(key(4), None, Some(4), 1000).unwrap();
        // The total (host ring included) binds uid 0 too.
        r.acquire_for_uid(key(5), None, Some(5), 0).unwrap();
        assert_eq!(
            r.acquire_for_uid(key(6), None, Some(6), 0).unwrap_err(),
            RingRefused::Total(5)
        );
        // Reclaiming gives the share back.
        r.release(&a);
        r.release(&a);
        let live: HashSet<u64> = [3, 4, 5].into_iter().collect();
        assert_eq!(r.reclaim(&live, Duration::ZERO), vec![key(2)]);
        r.acquire_for_uid(key(7), None, Some(7), 65534).unwrap();
    }

    #[test]
    fn a_retired_ring_is_listed_and_counted_while_held() {
        let r = Registry::new(RingConfig::with_bytes(4096), key(1), None).with_limits(RingLimits {
            max_rings: 3,
            max_rings_per_uid: 10,
        });
        let old = r.acquire_for_uid(key(2), None, Some(100), 7).unwrap();
        let _new = r.acquire_for_uid(key(2), None, Some(200), 7).unwrap();
        assert_eq!(r.retired().len(), 1);
        assert!(Arc::ptr_eq(&r.retired()[0], &old));
        // host + new + retired old = 3: the limit counts memory that is still held.
        assert!(r.acquire_for_uid(key(3), None, Some(3), 7).is_err());
        drop(old);
        assert!(r.retired().is_empty());
        r.acquire_for_uid(key(3), None, Some(3), 7).unwrap();
    }

    #[test]
    fn reused_inode_gets_a_fresh_ring() {
        let r = Registry::new(RingConfig::with_bytes(4096), key(1), None);
        let old = r.acquire(key(2), None, Some(100));
        let new = r.acquire(key(2), None, Some(200));
        assert!(!Arc::ptr_eq(&old, &new));
        assert_eq!(old.holders(), 1, "the old ring lives on for its holder");
        assert!(Arc::ptr_eq(&r.get(key(2)).unwrap(), &new));
        assert!(new.same_namespace(Some(200)) && !new.same_namespace(Some(100)));
        assert!(
            new.same_namespace(None),
            "unknown ids fall back to the inode"
        );
    }

    #[test]
    fn delivery_binds_a_ring_to_the_namespace_id_of_its_first_record() {
        let r = Registry::new(RingConfig::with_bytes(4096), key(1), None);
        let none = || (None, None);
        let live = |id: u64| move || (None, Some(id));
        // A dead namespace (id 20) left records in a ring nobody holds.
        let dead = r.ring_for_delivery(key(3), Some(20), none).unwrap();
        assert_eq!(dead.ns_id, Some(20));
        // The inode's next namespace has a smaller id (ids come from per-CPU batches): it is
        // the live one, so it gets a fresh ring; the dead one is gone with its records.
        let new = r.ring_for_delivery(key(3), Some(11), live(11)).unwrap();
        assert!(!Arc::ptr_eq(&dead.ring, &new.ring));
        assert!(Arc::ptr_eq(&r.get(key(3)).unwrap(), &new));
        assert_eq!(new.ns_id, Some(11));
        drop(dead);
        assert!(r.retired().is_empty(), "an unheld dead ring is freed");
        // A late record of the dead namespace (another one is alive with the inode) goes
        // nowhere, never into the new ring; the next one is known dead without a scan.
        assert!(r.ring_for_delivery(key(3), Some(20), live(11)).is_none());
        assert!(r
            .ring_for_delivery(key(3), Some(20), || panic!("scanned again"))
            .is_none());
        assert_eq!(r.stale_delivered(), 2);
        assert!(Arc::ptr_eq(&r.get(key(3)).unwrap(), &new));
        // An opener of the new namespace gets the new ring with its records.
        let a = r.acquire(key(3), None, Some(11));
        assert!(Arc::ptr_eq(&a.ring, &new.ring));
        // A next namespace while that one is held, with no member alive at delivery: records
        // arrive in printk order, so it is the newer one and gets its own ring; a late record
        // of the held one still reaches it through the retired list.
        let newer = r.ring_for_delivery(key(3), Some(5), none).unwrap();
        assert!(!Arc::ptr_eq(&newer.ring, &a.ring));
        let late = r
            .ring_for_delivery(key(3), Some(11), || {
                panic!("the retired ring is found first")
            })
            .unwrap();
        assert!(Arc::ptr_eq(&late.ring, &a.ring));
        // A live member of another namespace with the inode does not lend its id or owner.
        let other = r
            .ring_for_delivery(key(4), Some(20), || (Some(99), Some(21)))
            .unwrap();
        assert_eq!((other.ns_id, other.owner_userns), (Some(20), None));
    }

    #[test]
    fn named_rings_count_against_the_total_and_are_listed_while_held() {
        let r = Registry::new(RingConfig::with_bytes(4096), key(1), None).with_limits(RingLimits {
            max_rings: 3,
            max_rings_per_uid: 10,
        });
        let a = r.named_ring("team-a").unwrap();
        assert!(Arc::ptr_eq(&a, &r.named_ring("team-a").unwrap()));
        let _b = r.named_ring("team-b").unwrap();
        // host + two named = 3: neither a third name nor a namespace ring fits.
        assert!(r.named_ring("team-c").is_none());
        assert!(r.acquire_for_uid(key(2), None, Some(2), 7).is_err());
        assert_eq!(
            r.named_rings()
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["team-a", "team-b"]
        );
        drop(a);
        assert_eq!(r.named_rings().len(), 1, "an unheld named ring is gone");
        r.named_ring("team-c").unwrap();
    }

    #[test]
    fn delivery_creates_no_ring_beyond_the_total_limit() {
        let r = Registry::new(RingConfig::with_bytes(4096), key(1), None).with_limits(RingLimits {
            max_rings: 2,
            max_rings_per_uid: 10,
        });
        assert!(r
            .ring_for_delivery(key(2), Some(2), || (None, None))
            .is_some());
        assert!(r
            .ring_for_delivery(key(3), Some(3), || (None, None))
            .is_none());
        assert_eq!(r.delivery_refused(), 1);
        // Existing rings still receive.
        assert!(r
            .ring_for_delivery(key(2), Some(2), || (None, None))
            .is_some());
    }

    /// A named ring a previous daemon kept comes back to the first listener of that name;
    /// one no listener claims is dropped by the first reclaim scan.
    #[test]
    fn kept_named_rings_are_claimed_by_name_or_dropped_at_the_first_scan() {
        let r = Registry::new(RingConfig::with_bytes(4096), key(1), None);
        let kept = Arc::new(Ring::new(RingConfig::with_bytes(4096)));
        let orphan = Arc::new(Ring::new(RingConfig::with_bytes(4096)));
        r.adopted_named
            .lock()
            .insert("team-a".into(), Arc::clone(&kept));
        r.adopted_named
            .lock()
            .insert("gone".into(), Arc::clone(&orphan));
        let a = r.named_ring("team-a").unwrap();
        assert!(Arc::ptr_eq(&a, &kept), "the kept ring, not a new one");
        assert!(Arc::ptr_eq(&a, &r.named_ring("team-a").unwrap()));
        r.reclaim(&HashSet::new(), Duration::ZERO);
        assert!(r.adopted_named.lock().is_empty());
        assert_eq!(
            Arc::strong_count(&orphan),
            1,
            "the registry let the orphan go"
        );
        let g = r.named_ring("gone").unwrap();
        assert!(
            !Arc::ptr_eq(&g, &orphan),
            "after the scan a name gets a new ring"
        );
    }
}
