//! The open kmsg files, in a table a restarted daemon can adopt (docs/architecture.md
//! "Restart").
//!
//! The kernel names an open file to the daemon only by the 64-bit handle the daemon gave it at
//! OPEN. A daemon that adopts a live FUSE connection receives READs, POLLs and RELEASEs for
//! handles its predecessor chose, so each handle must say where its state is: the handle is a
//! slot of this table (plus a generation, so that a handle of a released file never aliases a
//! later one), and the slot holds everything a kmsg file needs to go on: which ring (the
//! ring's keeper serial, `restart::keeper::META_SERIAL`), the access the open granted, and the
//! cursor (next sequence number and the `f_pos` the kernel will send).
//!
//! | word | contents |
//! |---|---|
//! | 0 | bits 0-7 [`FileKind`] (0: free), bit 8 read, bit 9 write, bits 32-63 generation |
//! | 1 | ring serial |
//! | 2 | cursor `seq` |
//! | 3 | cursor `pos` |
//! | 4-7 | reserved |
//!
//! Word 0 is stored last on insert (Release) and first on remove, so an adopter sees either a
//! complete entry or a free slot. The filesystem stores a cursor only after the reply that
//! moved it was written to the kernel: a crash in between leaves the old cursor, and since
//! the reply did reach the reader, the reader's next READ carries an `f_pos` the stored cursor
//! does not expect. (Telling that case from a reply that never arrived, to give each record
//! exactly once, needs the unique of the READ in flight; words 4-7 are reserved for it.)

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
        let m = crate::sys::shm::SharedWords::from_fd(fd).ok()?;
        let w = m.words();
        if w.len() < HEADER_WORDS || w[0].load(Relaxed) != MAGIC || w[1].load(Relaxed) != VERSION {
            return None;
        }
        let slots = w[2].load(Relaxed) as usize;
        if HEADER_WORDS + slots * SLOT_WORDS != w.len() {
            return None;
        }
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
        Some((
            (w0 >> 32) as u32,
            OpenEntry {
                kind,
                ring_serial: s[1].load(Relaxed),
                read: w0 & 1 << 8 != 0,
                write: w0 & 1 << 9 != 0,
                cursor: Cursor {
                    seq: s[2].load(Relaxed),
                    pos: s[3].load(Relaxed),
                },
            },
        ))
    }

    /// Record a new open file; its handle, or `None` when every slot is in use (the open
    /// then fails with ENFILE).
    pub fn insert(&self, e: &OpenEntry) -> Option<u64> {
        let i = self.free.lock().pop()? as usize;
        let s = self.slot(i);
        let gen = ((s[0].load(Relaxed) >> 32) as u32).wrapping_add(1).max(1);
        s[1].store(e.ring_serial, Relaxed);
        s[2].store(e.cursor.seq, Relaxed);
        s[3].store(e.cursor.pos, Relaxed);
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
        (w0 & 0xff != 0 && (w0 >> 32) as u32 == (fh >> 32) as u32).then_some(i)
    }

    /// The entry of `fh`, if it is open.
    pub fn get(&self, fh: u64) -> Option<OpenEntry> {
        let i = self.live_slot(fh)?;
        self.entry_at(i).map(|(_, e)| e)
    }

    /// Store the cursor of `fh` after a read or seek.
    pub fn set_cursor(&self, fh: u64, c: Cursor) {
        if let Some(i) = self.live_slot(fh) {
            let s = self.slot(i);
            s[2].store(c.seq, Relaxed);
            s[3].store(c.pos, Relaxed);
        }
    }

    /// `fh` was released: free its slot (keeping its generation).
    pub fn remove(&self, fh: u64) {
        if let Some(i) = self.live_slot(fh) {
            let s = self.slot(i);
            let gen = s[0].load(Relaxed) & !0xffff_ffff;
            s[0].store(gen, Release);
            self.free.lock().push(i as u32);
        }
    }
}

fn handle(gen: u32, slot: usize) -> u64 {
    u64::from(gen) << 32 | (slot as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(serial: u64, seq: u64) -> OpenEntry {
        OpenEntry {
            kind: FileKind::Kmsg,
            ring_serial: serial,
            read: true,
            write: false,
            cursor: Cursor { seq, pos: seq * 3 },
        }
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
        t.set_cursor(a, Cursor { seq: 99, pos: 99 });
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
        t.set_cursor(b, Cursor { seq: 17, pos: 4242 });
        t.remove(c);
        let fd = t.memfd().unwrap().try_clone_to_owned().unwrap();
        drop(t);
        let (t, open) = OpenTable::adopt(fd).unwrap();
        let mut want = entry(2, 0);
        want.cursor = Cursor { seq: 17, pos: 4242 };
        assert_eq!(open, vec![(a, entry(1, 0)), (b, want)]);
        // The adopter goes on: released slots are free, held ones are not handed out again.
        let d = t.insert(&entry(5, 0)).unwrap();
        assert!(d != a && d != b && d != c);
        assert_eq!(t.get(b), Some(want));
    }
}
