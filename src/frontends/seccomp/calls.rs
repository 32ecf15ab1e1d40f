//! The blocked `syslog(2)` calls the agent holds, in memory a restarted agent adopts
//! (docs/architecture.md "Restart").
//!
//! A seccomp notification is received once: after `SECCOMP_IOCTL_NOTIF_RECV` the kernel never
//! offers it again, and its caller waits until someone answers its id (or a signal). An agent
//! that dies with parked READs (a blocked `busybox klogd`, `dmesg -w` through syslog) would
//! leave those callers waiting, so every parked call is also written here, in a memfd the
//! holder keeps; the next agent answers each one still valid
//! ([`super::AgentHandle::resume`]; `SECCOMP_IOCTL_NOTIF_ID_VALID` tells it which listener
//! issued it, and whether it is still waiting).
//!
//! | word | contents |
//! |---|---|
//! | 0 | 1: in use, 0: free |
//! | 1 | notification id |
//! | 2 | tid |
//! | 3 | arch, nr << 32 |
//! | 4-9 | args |
//!
//! Word 0 is stored last on insert (Release) and first on removal, so an adopter sees either
//! a complete call or a free slot. A call answered but not yet removed when the agent died is
//! harmless: its id is no longer valid anywhere.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use super::notify::Notification;
use crate::sys::shm::SharedWords;

const SLOT_WORDS: usize = 10;
const HEADER_WORDS: usize = 4;
/// "KMSGCALL", little-endian.
const MAGIC: u64 = u64::from_le_bytes(*b"KMSGCALL");
const VERSION: u64 = 1;

/// Slots of the table the daemon makes: parked calls beyond it are served, but not kept
/// across a crash.
pub const DEFAULT_SLOTS: usize = 4096;

enum Words {
    Heap(Box<[AtomicU64]>),
    Shared(SharedWords),
}

/// The table, and which id is in which slot.
pub struct CallTable {
    words: Words,
    slots: usize,
    free: Vec<usize>,
    by_id: HashMap<u64, usize>,
}

impl std::fmt::Debug for CallTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallTable")
            .field("slots", &self.slots)
            .field("recorded", &self.by_id.len())
            .finish()
    }
}

impl CallTable {
    /// A table in process memory (no restart support).
    pub fn new(slots: usize) -> CallTable {
        let w = (0..HEADER_WORDS + slots * SLOT_WORDS)
            .map(|_| AtomicU64::new(0))
            .collect();
        Self::init(Words::Heap(w), slots)
    }

    /// A table in a new sealed memfd ([`CallTable::memfd`]) for a holder to keep.
    pub fn new_shared(slots: usize) -> Result<CallTable, crate::sys::SysError> {
        let m = SharedWords::create("kmsgfs-syslog-calls", HEADER_WORDS + slots * SLOT_WORDS)?;
        Ok(Self::init(Words::Shared(m), slots))
    }

    fn init(words: Words, slots: usize) -> CallTable {
        let t = CallTable {
            words,
            slots,
            free: (0..slots).rev().collect(),
            by_id: HashMap::new(),
        };
        let w = t.all();
        w[0].store(MAGIC, Relaxed);
        w[1].store(VERSION, Relaxed);
        w[2].store(slots as u64, Relaxed);
        t
    }

    /// The table a previous agent left in `fd`, emptied, and the calls it held. `None` if `fd`
    /// is not a table of this layout.
    pub fn adopt(fd: std::os::fd::OwnedFd) -> Option<(CallTable, Vec<Notification>)> {
        let (m, slots) =
            crate::sys::shm::adopt_table(fd, MAGIC, VERSION, HEADER_WORDS, SLOT_WORDS)?;
        let t = CallTable {
            words: Words::Shared(m),
            slots,
            free: (0..slots).rev().collect(),
            by_id: HashMap::new(),
        };
        let mut calls = Vec::new();
        for i in 0..slots {
            let s = t.slot(i);
            if s[0].load(Acquire) != 1 {
                continue;
            }
            let an = s[3].load(Relaxed);
            calls.push(Notification {
                id: s[1].load(Relaxed),
                tid: s[2].load(Relaxed) as u32,
                arch: an as u32,
                nr: (an >> 32) as u32 as i32,
                args: std::array::from_fn(|k| s[4 + k].load(Relaxed)),
            });
            // The adopter records again what it parks.
            s[0].store(0, Release);
        }
        Some((t, calls))
    }

    /// The memfd of a shared table.
    pub fn memfd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match &self.words {
            Words::Shared(m) => Some(m.fd()),
            Words::Heap(_) => None,
        }
    }

    fn all(&self) -> &[AtomicU64] {
        match &self.words {
            Words::Heap(w) => w,
            Words::Shared(m) => m.words(),
        }
    }

    fn slot(&self, i: usize) -> &[AtomicU64] {
        let at = HEADER_WORDS + i * SLOT_WORDS;
        &self.all()[at..at + SLOT_WORDS]
    }

    /// Make the recorded calls exactly `parked` (the agent's parked calls after a loop turn):
    /// new ones are written, gone ones freed. Returns how many could not be recorded (full).
    pub fn sync<'a>(&mut self, parked: impl Iterator<Item = &'a Notification>) -> usize {
        let mut keep: HashMap<u64, &Notification> = HashMap::new();
        for n in parked {
            keep.insert(n.id, n);
        }
        let gone: Vec<u64> = self
            .by_id
            .keys()
            .filter(|id| !keep.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(i) = self.by_id.remove(&id) {
                self.slot(i)[0].store(0, Release);
                self.free.push(i);
            }
        }
        keep.into_values().filter(|n| !self.record(n)).count()
    }

    /// Record one more call, keeping the others (false: the table is full). The agent records
    /// a call as soon as it is received, before it is answered or parked: a received
    /// notification is never delivered again, so a crash in between would lose it.
    pub fn record(&mut self, n: &Notification) -> bool {
        if self.by_id.contains_key(&n.id) {
            return true;
        }
        let Some(i) = self.free.pop() else {
            return false;
        };
        let s = self.slot(i);
        s[1].store(n.id, Relaxed);
        s[2].store(u64::from(n.tid), Relaxed);
        s[3].store(u64::from(n.arch) | u64::from(n.nr as u32) << 32, Relaxed);
        for (k, a) in n.args.iter().enumerate() {
            s[4 + k].store(*a, Relaxed);
        }
        s[0].store(1, Release);
        self.by_id.insert(n.id, i);
        true
    }

    /// How many calls are recorded.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: u64) -> Notification {
        Notification {
            id,
            tid: 77,
            arch: 0xc000_003e,
            nr: 103,
            args: [2, 0x7fff_0000, 4096, 0, 0, id],
        }
    }

    #[test]
    fn a_successor_gets_exactly_the_calls_parked_at_the_end() {
        let mut t = CallTable::new_shared(4).unwrap();
        assert_eq!(t.sync([call(1), call(2), call(3)].iter()), 0);
        // 2 was answered, 4 parked.
        assert_eq!(t.sync([call(1), call(3), call(4)].iter()), 0);
        assert_eq!(t.len(), 3);
        let fd = t.memfd().unwrap().try_clone_to_owned().unwrap();
        drop(t);
        let (mut t, mut calls) = CallTable::adopt(fd).unwrap();
        calls.sort_by_key(|c| c.id);
        assert_eq!(calls, vec![call(1), call(3), call(4)]);
        assert!(t.is_empty(), "the adopter records its own parked calls");
        assert_eq!(t.sync([call(9)].iter()), 0);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_full_table_reports_what_it_could_not_keep() {
        let mut t = CallTable::new(2);
        assert_eq!(t.sync([call(1), call(2), call(3)].iter()), 1);
        assert_eq!(t.len(), 2);
        assert_eq!(t.sync([call(3)].iter()), 0, "freed slots are used again");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_call_recorded_at_receipt_reaches_a_successor_until_the_turn_ends() {
        let mut t = CallTable::new_shared(4).unwrap();
        assert_eq!(t.sync([call(1)].iter()), 0);
        // Received, not yet answered or parked: the agent dies here.
        assert!(t.record(&call(2)));
        assert!(t.record(&call(2)), "recording twice keeps one slot");
        let fd = t.memfd().unwrap().try_clone_to_owned().unwrap();
        let (_, mut calls) = CallTable::adopt(fd).unwrap();
        calls.sort_by_key(|c| c.id);
        assert_eq!(calls, vec![call(1), call(2)]);
        // Or it lives on: the turn's end drops the call it answered.
        assert_eq!(t.sync([call(1)].iter()), 0);
        assert_eq!(t.len(), 1);
        let mut small = CallTable::new(1);
        assert!(small.record(&call(1)));
        assert!(!small.record(&call(2)), "full");
    }

    #[test]
    fn a_memfd_of_another_kind_is_refused() {
        let m = SharedWords::create("other", 64).unwrap();
        let fd = m.fd().try_clone_to_owned().unwrap();
        assert!(CallTable::adopt(fd).is_none());
    }
}
