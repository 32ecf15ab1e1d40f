//! The open kmsg files, in a table a restarted daemon can adopt (docs/architecture.md
//! "Restart").
//!
//! The kernel names an open file to the daemon only by the 64-bit handle the daemon gave it at
//! OPEN. A daemon that adopts a live FUSE connection receives READs, POLLs and RELEASEs for
//! handles its predecessor chose, so each handle must say where its state is: the handle is a
//! slot of this table (plus a generation, so that a handle of a released file never aliases a
//! later one), and the slot holds everything a kmsg file needs to go on: which ring (the
//! ring's keeper serial, `restart::keeper::META_SERIAL`), the access the open granted, the
//! cursor, and the kernel's poll handle.
//!
//! | word | contents |
//! |---|---|
//! | 0 | bits 0-7 [`FileKind`] (0: free), bit 8 read, bit 9 write, bits 32-62 generation |
//! | 1 | ring serial |
//! | 2 | cursor `seq` |
//! | 3 | cursor `pos` |
//! | 4 | previous cursor `seq` |
//! | 5 | previous cursor `pos` |
//! | 6 | the kernel's poll handle + 1 (0: the file was never polled with a notify request) |
//! | 7 | reserved |
//!
//! Word 0 is stored last on insert (Release) and first on remove, so an adopter sees either a
//! complete entry or a free slot. Handles never have bit 63 set (the filesystem's other
//! handles use it).
//!
//! # Exactly once across a crash
//!
//! A reply that moves a cursor may or may not have reached the kernel when the daemon dies.
//! The filesystem therefore stores, *before* it replies ([`OpenTable::advance`]): the cursor
//! the request started from as the previous cursor (words 4-5), then the new `pos` (word 3),
//! then the new `seq` (word 2). The first READ of an adopted handle tells the two cases apart
//! by its offset, which is the `f_pos` the kernel holds:
//!
//! * offset = new `pos`: the reply arrived; continue at the new cursor.
//! * offset = previous `pos`: it did not (the READ is the same request, resent by the kernel,
//!   or a new one from an `f_pos` that never moved); read again from the previous cursor, so
//!   the records are delivered once.
//!
//! A crash between the stores leaves no torn state that matters: until word 3 changes, the
//! current cursor is still the old one and matches the old offset; once word 3 changes the
//! reply has not been sent, so the READ carries the previous `pos`, stored completely before.
//! Every data reply adds its length to `pos` and every seek adds 1, so the two never collide.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use parking_lot::Mutex;

use super::cursor::Cursor;

/// Words per slot.
pub const SLOT_WORDS: usize = 8;
/// Header words: magic, version, slots.
const HEADER_WORDS: usize = 8;
/// "KMSGOPEN", little-endian.
const MAGIC: u64 = u64::from_le_bytes(*b"KMSGOPEN");
const VERSION: u64 = 1;

/// What an open file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `kmsg` or `ns/<inode>/kmsg`.
    Kmsg = 1,
    /// `proc-kmsg`.
    ProcKmsg = 2,
}

/// One open file's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenEntry {
    /// The file.
    pub kind: FileKind,
    /// The ring's keeper serial.
    pub ring_serial: u64,
    /// Opened for reading.
    pub read: bool,
    /// Opened for writing.
    pub write: bool,
    /// Where it reads next.
    pub cursor: Cursor,
    /// Where the last reply that moved the cursor started ([`OpenTable::advance`]).
    pub prev: Cursor,
    /// The kernel's poll handle, once the file was polled with a notify request.
    pub poll_kh: Option<u64>,
}

impl OpenEntry {
    /// A new open file at `cursor`, never polled.
    pub fn new(kind: FileKind, ring_serial: u64, read: bool, write: bool, cursor: Cursor) -> Self {
        OpenEntry {
            kind,
            ring_serial,
            read,
            write,
            cursor,
            prev: cursor,
            poll_kh: None,
        }
    }

    /// The cursor the first READ after an adoption continues from, given its `offset`: see the
    /// module docs. `None` when neither matches (a seek in the kernel; sync as usual).
    pub fn resume_at(&self, offset: u64) -> Option<Cursor> {
        if offset == self.cursor.pos {
            Some(self.cursor)
        } else if offset == self.prev.pos {
            Some(self.prev)
        } else {
            None
        }
    }
}

enum Words {
    Heap(Box<[AtomicU64]>),
    Shared(crate::sys::shm::SharedWords),
}

impl Words {
    fn get(&self) -> &[AtomicU64] {
        match self {
            Words::Heap(w) => w,
            Words::Shared(m) => m.words(),
        }
    }
}

/// The table. Handles are `generation << 32 | (slot + 1)`, never 0.
pub struct OpenTable {
    words: Words,
    slots: usize,
    free: Mutex<Vec<u32>>,
}

impl std::fmt::Debug for OpenTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenTable")
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl OpenTable {
    /// A table of `slots` in process memory (no restart support).
    pub fn new(slots: usize) -> OpenTable {
        let w: Box<[AtomicU64]> = (0..HEADER_WORDS + slots * SLOT_WORDS)
            .map(|_| AtomicU64::new(0))
            .collect();
        Self::init(Words::Heap(w), slots)
    }

    /// A table of `slots` in a new sealed memfd ([`OpenTable::memfd`]) for a holder to keep.
    pub fn new_shared(slots: usize) -> Result<OpenTable, crate::sys::SysError> {
        let m = crate::sys::shm::SharedWords::create(
            "kmsgfs-open-files",
            HEADER_WORDS + slots * SLOT_WORDS,
        )?;
        Ok(Self::init(Words::Shared(m), slots))
    }

    fn init(words: Words, slots: usize) -> OpenTable {
        let w = words.get();
        w[0].store(MAGIC, Relaxed);
        w[1].store(VERSION, Relaxed);
        w[2].store(slots as u64, Relaxed);
        OpenTable {
            words,
            slots,
            free: Mutex::new((0..slots as u32).rev().collect()),
        }
    }

    /// The table a previous daemon left in `fd`, with every open file it holds (by handle).
    /// `None` if `fd` is not a table of this layout.
    pub fn adopt(fd: std::os::fd::OwnedFd) -> Option<(OpenTable, Vec<(u64, OpenEntry)>)> {
        let (m, slots) =
            crate::sys::shm::adopt_table(fd, MAGIC, VERSION, HEADER_WORDS, SLOT_WORDS)?;
        let t = OpenTable {
            words: Words::Shared(m),
            slots,
            free: Mutex::new(Vec::new()),
        };
        let mut open = Vec::new();
        let mut free = Vec::new();
        for i in (0..slots).rev() {
            match t.entry_at(i) {
                Some((gen, e)) => open.push((handle(gen, i), e)),
                None => free.push(i as u32),
            }
        }
        *t.free.lock() = free;
        open.reverse();
        Some((t, open))
    }

    /// The memfd of a shared table.
    pub fn memfd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match &self.words {
            Words::Shared(m) => Some(m.fd()),
            Words::Heap(_) => None,
        }
    }

    fn slot(&self, i: usize) -> &[AtomicU64] {
        let at = HEADER_WORDS + i * SLOT_WORDS;
        &self.words.get()[at..at + SLOT_WORDS]
    }

    fn entry_at(&self, i: usize) -> Option<(u32, OpenEntry)> {
        let s = self.slot(i);
        let w0 = s[0].load(Acquire);
        let kind = match w0 & 0xff {
            1 => FileKind::Kmsg,
            2 => FileKind::ProcKmsg,
            _ => return None,
        };
        let kh = s[6].load(Relaxed);
        Some((
            generation(w0),
            OpenEntry {
                kind,
                ring_serial: s[1].load(Relaxed),
                read: w0 & 1 << 8 != 0,
                write: w0 & 1 << 9 != 0,
                cursor: Cursor {
                    seq: s[2].load(Relaxed),
                    pos: s[3].load(Relaxed),
                },
                prev: Cursor {
                    seq: s[4].load(Relaxed),
                    pos: s[5].load(Relaxed),
                },
                poll_kh: kh.checked_sub(1),
            },
        ))
    }

    /// Record a new open file; its handle, or `None` when every slot is in use (the open
    /// then fails with ENFILE).
    pub fn insert(&self, e: &OpenEntry) -> Option<u64> {
        let i = self.free.lock().pop()? as usize;
        let s = self.slot(i);
        let gen = (generation(s[0].load(Relaxed)).wrapping_add(1) & GENERATION_MASK).max(1);
        s[1].store(e.ring_serial, Relaxed);
        s[2].store(e.cursor.seq, Relaxed);
        s[3].store(e.cursor.pos, Relaxed);
        s[4].store(e.prev.seq, Relaxed);
        s[5].store(e.prev.pos, Relaxed);
        s[6].store(e.poll_kh.map_or(0, |k| k.wrapping_add(1)), Relaxed);
        let w0 =
            e.kind as u64 | u64::from(e.read) << 8 | u64::from(e.write) << 9 | u64::from(gen) << 32;
        s[0].store(w0, Release);
        Some(handle(gen, i))
    }

    /// The slot of `fh` if it names a live entry of this generation.
    fn live_slot(&self, fh: u64) -> Option<usize> {
        let i = (fh & 0xffff_ffff).checked_sub(1)? as usize;
        if i >= self.slots {
            return None;
        }
        let w0 = self.slot(i)[0].load(Acquire);
        (w0 & 0xff != 0 && u64::from(generation(w0)) == fh >> 32).then_some(i)
    }

    /// The entry of `fh`, if it is open.
    pub fn get(&self, fh: u64) -> Option<OpenEntry> {
        let i = self.live_slot(fh)?;
        self.entry_at(i).map(|(_, e)| e)
    }

    /// A reply is about to move `fh`'s cursor from `from` to `to`: store both, in the order
    /// the module docs explain, before the reply is written.
    pub fn advance(&self, fh: u64, from: Cursor, to: Cursor) {
        if let Some(i) = self.live_slot(fh) {
            let s = self.slot(i);
            // Release: a store is never moved before the ones above it (the order is what
            // makes a crash between any two of them harmless). The adopter runs after this
            // process is gone, so every executed store is visible to it.
            s[4].store(from.seq, Release);
            s[5].store(from.pos, Release);
            s[3].store(to.pos, Release);
            s[2].store(to.seq, Release);
        }
    }

    /// Remember the kernel's poll handle of `fh`, so that a successor can wake its waiters.
    pub fn set_poll_handle(&self, fh: u64, kh: u64) {
        if let Some(i) = self.live_slot(fh) {
            self.slot(i)[6].store(kh.wrapping_add(1), Release);
        }
    }

    /// `fh` was released: free its slot (keeping its generation).
    pub fn remove(&self, fh: u64) {
        if let Some(i) = self.live_slot(fh) {
            let s = self.slot(i);
            let gen = s[0].load(Relaxed) & !0xffff_ffff;
            s[0].store(gen, Release);
            s[6].store(0, Relaxed);
            self.free.lock().push(i as u32);
        }
    }
}

/// Generations are 31 bits, so that no handle has bit 63 set.
const GENERATION_MASK: u32 = 0x7fff_ffff;

fn generation(w0: u64) -> u32 {
    (w0 >> 32) as u32 & GENERATION_MASK
}

fn handle(gen: u32, slot: usize) -> u64 {
    u64::from(gen) << 32 | (slot as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(serial: u64, seq: u64) -> OpenEntry {
        OpenEntry::new(
            FileKind::Kmsg,
            serial,
            true,
            false,
            Cursor { seq, pos: seq * 3 },
        )
    }

    #[test]
    fn handles_name_live_entries_only_and_are_never_reused_as_is() {
        let t = OpenTable::new(2);
        let a = t.insert(&entry(1, 0)).unwrap();
        let b = t.insert(&entry(2, 5)).unwrap();
        assert!(t.insert(&entry(3, 0)).is_none(), "full");
        assert_ne!(a, 0);
        assert_eq!(t.get(b), Some(entry(2, 5)));
        t.remove(a);
        assert_eq!(t.get(a), None);
        let c = t.insert(&entry(3, 1)).unwrap();
        assert_ne!(c, a, "a new generation for a reused slot");
        assert_eq!(
            t.get(a),
            None,
            "the released handle does not alias the new file"
        );
        t.advance(a, Cursor::at_open(0), Cursor { seq: 99, pos: 99 });
        assert_eq!(
            t.get(c),
            Some(entry(3, 1)),
            "a stale handle changes nothing"
        );
        assert_eq!(t.get(0), None);
        assert_eq!(t.get(u64::MAX), None);
    }

    #[test]
    fn a_successor_adopts_every_open_file_with_its_cursor() {
        let t = OpenTable::new_shared(8).unwrap();
        let a = t.insert(&entry(1, 0)).unwrap();
        let b = t.insert(&entry(2, 0)).unwrap();
        let c = t.insert(&entry(2, 0)).unwrap();
        t.advance(b, entry(2, 0).cursor, Cursor { seq: 17, pos: 4242 });
        t.set_poll_handle(b, 0);
        t.remove(c);
        let fd = t.memfd().unwrap().try_clone_to_owned().unwrap();
        drop(t);
        let (t, open) = OpenTable::adopt(fd).unwrap();
        let mut want = entry(2, 0);
        want.cursor = Cursor { seq: 17, pos: 4242 };
        want.poll_kh = Some(0);
        assert_eq!(open, vec![(a, entry(1, 0)), (b, want)]);
        // The adopter goes on: released slots are free, held ones are not handed out again.
        let d = t.insert(&entry(5, 0)).unwrap();
        assert!(d != a && d != b && d != c);
        assert_eq!(t.get(b), Some(want));
    }

    #[test]
    fn handles_never_have_bit_63_set_whatever_the_generation() {
        let t = OpenTable::new(1);
        for _ in 0..3 {
            let h = t.insert(&entry(1, 0)).unwrap();
            assert_eq!(h >> 63, 0);
            t.remove(h);
        }
        // A slot whose generation reached the top wraps to 1, not into bit 63.
        t.slot(0)[0].store(u64::from(GENERATION_MASK) << 32, Relaxed);
        let h = t.insert(&entry(1, 0)).unwrap();
        assert_eq!(h, 1 << 32 | 1);
    }

    #[test]
    fn the_first_read_after_adoption_resumes_where_the_kernel_is() {
        let from = Cursor { seq: 10, pos: 300 };
        let to = Cursor { seq: 12, pos: 420 };
        let mut e = entry(1, 0);
        e.prev = from;
        e.cursor = to;
        assert_eq!(e.resume_at(420), Some(to), "the reply reached the reader");
        assert_eq!(
            e.resume_at(300),
            Some(from),
            "it did not: read the records again"
        );
        assert_eq!(e.resume_at(7), None, "a seek in the kernel");
    }

    /// Every prefix of the stores of [`OpenTable::advance`] (a crash after any of them) leaves a
    /// table from which the reader's READ resumes at the right cursor: the old one while the
    /// reply was not sent.
    #[test]
    fn a_crash_between_any_two_stores_of_advance_loses_and_repeats_nothing() {
        let from = Cursor { seq: 10, pos: 300 };
        let to = Cursor { seq: 12, pos: 420 };
        let before = Cursor { seq: 4, pos: 100 };
        // The words 2..=5 in store order, and their values after `advance(from, to)`.
        let order = [(4, from.seq), (5, from.pos), (3, to.pos), (2, to.seq)];
        for done in 0..=order.len() {
            let t = OpenTable::new(1);
            let mut e = entry(1, 0);
            e.cursor = from;
            e.prev = before;
            let h = t.insert(&e).unwrap();
            for &(w, v) in &order[..done] {
                t.slot(0)[w].store(v, Relaxed);
            }
            let got = t.get(h).unwrap();
            // The reply was not sent (it is written only after all stores): the READ carries
            // from.pos and must resume at `from`.
            assert_eq!(got.resume_at(from.pos), Some(from), "after {done} stores");
        }
        let t = OpenTable::new(1);
        let h = t.insert(&entry(1, 0)).unwrap();
        t.advance(h, from, to);
        assert_eq!(
            t.get(h).unwrap().resume_at(to.pos),
            Some(to),
            "after the reply"
        );
    }
}
