//! Events waiting for their `/dev/kmsg` record: indexed by descriptor id for the exact join and
//! by text prefix for the text + timestamp fallback.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::sources::events::{Event, PREFIX};

/// Printk and continuation events not yet joined.
#[derive(Debug, Default)]
pub(crate) struct EventStore {
    printk: BTreeMap<u64, Event>,
    /// First continuation fragment seen per descriptor id.
    conts: BTreeMap<u64, Event>,
    /// Prefix hash → ids in `printk`.
    by_prefix: HashMap<u64, Vec<u64>>,
}

fn prefix_key(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes[..bytes.len().min(PREFIX)].hash(&mut h);
    h.finish()
}

impl EventStore {
    pub(crate) fn len(&self) -> usize {
        self.printk.len() + self.conts.len()
    }

    /// Store a first-fragment event. A second event with the same id replaces the first (it
    /// cannot happen for real descriptor ids; a replaced one is returned).
    pub(crate) fn insert(&mut self, ev: Event) -> Option<Event> {
        let id = ev.id;
        let key = prefix_key(ev.text_prefix());
        let old = self.printk.insert(id, ev);
        if let Some(old) = &old {
            self.unindex(old);
        }
        self.by_prefix.entry(key).or_default().push(id);
        old
    }

    pub(crate) fn insert_cont(&mut self, ev: Event) {
        self.conts.entry(ev.id).or_insert(ev);
    }

    fn unindex(&mut self, ev: &Event) {
        let key = prefix_key(ev.text_prefix());
        if let Some(ids) = self.by_prefix.get_mut(&key) {
            if let Some(i) = ids.iter().position(|&x| x == ev.id) {
                ids.swap_remove(i);
            }
            if ids.is_empty() {
                self.by_prefix.remove(&key);
            }
        }
    }

    pub(crate) fn take(&mut self, id: u64) -> Option<Event> {
        let ev = self.printk.remove(&id)?;
        self.unindex(&ev);
        Some(ev)
    }

    pub(crate) fn take_cont(&mut self, id: u64) -> Option<Event> {
        self.conts.remove(&id)
    }

    /// The smallest stored id in `[lo, hi]`.
    pub(crate) fn min_id_in(&self, lo: u64, hi: u64) -> Option<u64> {
        self.printk.range(lo..=hi).next().map(|(id, _)| *id)
    }

    /// Drop events with ids up to and including `id`. Returns how many were dropped.
    /// The largest descriptor id of a stored event (printk or continuation).
    pub(crate) fn newest_id(&self) -> Option<u64> {
        let a = self.printk.keys().next_back().copied();
        let b = self.conts.keys().next_back().copied();
        a.max(b)
    }

    pub(crate) fn prune_through(&mut self, id: u64) -> usize {
        let keep = match id.checked_add(1) {
            Some(next) => self.printk.split_off(&next),
            None => BTreeMap::new(),
        };
        let gone = std::mem::replace(&mut self.printk, keep);
        for ev in gone.values() {
            self.unindex(ev);
        }
        let keep_c = match id.checked_add(1) {
            Some(next) => self.conts.split_off(&next),
            None => BTreeMap::new(),
        };
        let gone_c = std::mem::replace(&mut self.conts, keep_c);
        gone.len() + gone_c.len()
    }

    /// Drop the oldest events until at most `max` remain. Returns how many were dropped.
    pub(crate) fn prune_to(&mut self, max: usize) -> usize {
        let mut n = 0;
        while self.printk.len() > max {
            if let Some((_, ev)) = self.printk.pop_first() {
                self.unindex(&ev);
                n += 1;
            }
        }
        while self.conts.len() > max {
            self.conts.pop_first();
            n += 1;
        }
        n
    }

    /// Fallback join: the stored event whose text prefix matches `text` and whose timestamp is
    /// closest to `want_ts_ns` (the oldest one if `want_ts_ns` is `None`). Returns the event and
    /// how many candidates there were.
    pub(crate) fn take_by_text(
        &mut self,
        text: &[u8],
        want_ts_ns: Option<u64>,
    ) -> Option<(Event, usize)> {
        // An event keys on min(len, PREFIX) bytes of its fragment; the fragment may be shorter
        // than the record (KERN_CONT merged), so try every key length the record allows.
        let mut best: Option<(u64, u64)> = None; // (distance, id)
        let mut count = 0;
        for l in (0..=text.len().min(PREFIX)).rev() {
            let Some(ids) = self.by_prefix.get(&prefix_key(&text[..l])) else {
                continue;
            };
            for &id in ids {
                let Some(ev) = self.printk.get(&id) else {
                    continue;
                };
                if ev.text_prefix().len() != l || !ev.matches_text(text) {
                    continue;
                }
                count += 1;
                let dist = match want_ts_ns {
                    Some(t) => ev.ts_ns.abs_diff(t),
                    None => id,
                };
                if best.is_none_or(|(d, i)| (dist, id) < (d, i)) {
                    best = Some((dist, id));
                }
            }
        }
        let (_, id) = best?;
        self.take(id).map(|ev| (ev, count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: u64, text: &[u8], ts: u64) -> Event {
        let mut e = Event::printk(id, text);
        e.ts_ns = ts;
        e
    }

    #[test]
    fn take_and_prune() {
        let mut s = EventStore::default();
        for id in 10..20 {
            s.insert(ev(id, b"x", id));
        }
        assert_eq!(s.take(12).map(|e| e.id), Some(12));
        assert!(s.take(12).is_none());
        assert_eq!(s.prune_through(14), 4);
        assert_eq!(s.min_id_in(0, 100), Some(15));
        assert_eq!(s.prune_to(2), 3);
        assert_eq!(s.len(), 2);
        assert!(s.by_prefix.values().all(|v| v.len() == 2));
    }

    #[test]
    fn text_fallback_prefers_nearest_timestamp() {
        let mut s = EventStore::default();
        s.insert(ev(1, b"same text", 1_000));
        s.insert(ev(2, b"same text", 5_000));
        s.insert(ev(3, b"other", 5_000));
        let (e, n) = s.take_by_text(b"same text", Some(4_900)).unwrap();
        assert_eq!((e.id, n), (2, 2));
        let (e, n) = s.take_by_text(b"same text", None).unwrap();
        assert_eq!((e.id, n), (1, 1));
        assert!(s.take_by_text(b"same text", None).is_none());
        // A longer record (continuation merged) still matches its first fragment.
        s.insert(ev(4, b"first part", 0));
        assert_eq!(
            s.take_by_text(b"first part and more", None)
                .map(|(e, _)| e.id),
            Some(4)
        );
    }
}
