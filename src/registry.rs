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
    fn new(key: NsKey, host: bool, owner_userns: Option<u64>, config: RingConfig) -> Self {
        RingSlot {
            key,
            host,
            owner_userns,
            ring: Arc::new(Ring::new(config)),
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

    /// A snapshot of the counters for the stats file.
    pub fn stats(&self) -> RingReport {
        let s = self.ring.stats();
        RingReport {
            key: self.key.to_string(),
            kind: self.key.kind.name(),
            inode: self.key.inode,
            host: self.host,
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
}

/// All rings of the daemon.
pub struct Registry {
    config: RingConfig,
    host: Arc<RingSlot>,
    rings: Mutex<HashMap<NsKey, Arc<RingSlot>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.host.key)
            .field("rings", &self.rings.lock().len())
            .finish()
    }
}

impl Registry {
    /// A registry with the host ring under `host_key`.
    pub fn new(config: RingConfig, host_key: NsKey) -> Self {
        let host = Arc::new(RingSlot::new(host_key, true, None, config));
        let mut rings = HashMap::new();
        rings.insert(host_key, Arc::clone(&host));
        Registry {
            config,
            host,
            rings: Mutex::new(rings),
        }
    }

    /// The ring size of new rings.
    pub fn config(&self) -> RingConfig {
        self.config
    }

    /// The host ring.
    pub fn host(&self) -> &Arc<RingSlot> {
        &self.host
    }

    /// The ring of `key`, created if needed, with one more holder. Pair with
    /// [`Registry::release`].
    pub fn acquire(&self, key: NsKey, owner_userns: Option<u64>) -> Arc<RingSlot> {
        let mut rings = self.rings.lock();
        let slot = rings.entry(key).or_insert_with(|| {
            log::info!("new ring for namespace {key}");
            Arc::new(RingSlot::new(key, false, owner_userns, self.config))
        });
        slot.holders.fetch_add(1, Ordering::SeqCst);
        Arc::clone(slot)
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
        for k in &dead {
            rings.remove(k);
            log::info!("reclaimed ring of namespace {k}: namespace gone and no open files");
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
        let r = Registry::new(RingConfig::with_bytes(4096), key(1));
        let a = r.acquire(key(2), None);
        let b = r.acquire(key(2), None);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.holders(), 2);
        assert!(Arc::ptr_eq(&r.by_inode(2).unwrap(), &a));
        assert!(r.list()[0].host);
    }

    #[test]
    fn reclaim_needs_dead_namespace_no_holders_and_age() {
        let r = Registry::new(RingConfig::with_bytes(4096), key(1));
        let a = r.acquire(key(2), None);
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
}
