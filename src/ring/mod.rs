//! One namespace's kernel log: a bounded ring of records with the kernel's semantics.
//!
//! A ring holds the newest records of one container, bounded like the kernel's printk ring by
//! bytes (`log_buf_len`, 128 KiB by default) and by a record count (its descriptor ring), and
//! drops the oldest **whole** records to make room (kmsg-semantics 0.3, A9.1). Every record gets
//! the next per-ring sequence number, from 0, without gaps. Any number of readers follow it,
//! each with its own cursor, without taking a lock and without ever holding up the writer or
//! each other; a reader that falls behind is told how many records it lost and is moved to the
//! oldest one (A3.3, A9.2). The ring also keeps the two global cursors of the kernel log: the
//! clear point `clear_seq`, which overwrites do not move (A9.3, A4.3, B5.1), and the destructive
//! `syslog(2)`/`/proc/kmsg` cursor with its partial offset (B4). Frontends hook in through
//! [`Listener`] and [`Ring::wait_for`] to answer parked reads, polls and blocking READs.
//!
//! # Design
//!
//! The layout follows the kernel's `printk_ringbuffer` (a data ring plus a descriptor ring,
//! `kernel/printk/printk_ringbuffer.c`), simplified by one decision: appends are serialised by
//! a writer mutex. The kernel must accept records from NMI context on many CPUs at once and
//! therefore reserves space with cmpxchg loops; kmsgfs has a handful of producers (host
//! ingestion, FUSE writes) in ordinary threads, so a short uncontended lock costs less than
//! the reservation protocol and removes its states (reserved, committed, finalized, reusable)
//! and its ABA problems. The readers, which are many and must never be blocked, stay lockless.
//!
//! ## Data structure
//!
//! * **Data ring** `data`: `ceil(bytes / 8)` `AtomicU64` words. A record is stored as one
//!   8-byte-aligned *blob* of [`footprint`] bytes: a 4-word header followed by the text, the
//!   `SUBSYSTEM` value and the `DEVICE` value, back to back, zero-padded to a whole word:
//!
//!   | word | contents |
//!   |---|---|
//!   | 0 | `seq` (a tag: readers check it) |
//!   | 1 | `ts_usec` |
//!   | 2 | bits 0-15 `prio`, bit 16 `cont`, bits 17-18 caller kind (0 none, 1 thread, 2 CPU), bits 32-63 caller id |
//!   | 3 | bits 0-31 text length, bits 32-47 subsystem length, bits 48-63 device length |
//!   | 4.. | payload bytes, little-endian within each word |
//!
//!   Blobs are laid out one after the other and **wrap word by word** at the end of the array
//!   (a blob may start near the end and continue at word 0). Nothing is wasted on padding at
//!   the wrap, so the bytes in use are exactly the sum of the stored records' footprints, the
//!   quantity the byte bound is applied to, and a copy is at most two contiguous runs.
//! * **Descriptor ring** `descs`: one `AtomicU64` per slot holding the word index where the
//!   blob of the record in that slot starts. Record `seq` uses slot `seq & mask`. There are
//!   `records.next_power_of_two()` slots so that the index is a mask, while the record bound
//!   stays `records`.
//! * **`first_seq`, `next_seq`**: the oldest stored record and the seq the next append gets
//!   (`prb_first_valid_seq`, `prb_next_seq`). Both only grow; neither ever wraps (u64).
//! * **Writer state** (behind the writer mutex): the next blob position, the bytes in use, the
//!   length of each slot's blob, scratch buffers to encode into, and the number of sleepers
//!   and listeners to wake.
//!
//! ## Record states
//!
//! For a sequence number `s`, as any reader can classify it from `first_seq` and `next_seq`:
//!
//! | state | condition | the blob and descriptor of `s` |
//! |---|---|---|
//! | *unpublished* | `s >= next_seq` | may be being written; never read |
//! | *valid* | `first_seq <= s < next_seq` | complete and immutable |
//! | *reclaimed* | `s < first_seq`, bytes not yet reused | still intact, but no longer promised |
//! | *overwritten* | `s < first_seq`, bytes reused | anything |
//!
//! Only the writer moves a record forward through these states, in this order: it publishes
//! (`next_seq`), it reclaims (`first_seq`), and only then does it overwrite. A reader treats
//! reclaimed and overwritten alike ([`Read::Overrun`]).
//!
//! ## Who writes what
//!
//! | location | written by | read by |
//! |---|---|---|
//! | `data`, `descs` | writer, under the writer mutex, `Relaxed` | readers, `Relaxed`, validated afterwards |
//! | `first_seq` | writer, `Relaxed` + release fence (append:A/B) | readers, `Relaxed` (read:C) |
//! | `next_seq` | writer, `Release` (append:C) | readers, `Acquire` (read:A) |
//! | writer state | writer, under the writer mutex | [`Ring::stats`], under the writer mutex |
//! | sleeper count | [`Ring::wait_for`], under the writer mutex | writer, under the writer mutex |
//! | listener count | [`Ring::add_listener`], [`Ring::remove_listener`], under the writer mutex | writer, under the writer mutex |
//! | listener list | the same, under its `RwLock` | writer, after an append, under its `RwLock` |
//! | `clear_seq` | [`Ring::set_clear_seq`] (`Release`) | anyone (`Acquire`) |
//! | [`SyslogState`] | holders of [`Ring::syslog_state`] (a mutex: one destructive cursor) | the same |
//!
//! ## The append (writer) protocol
//!
//! Under the writer mutex, for a record of `n` bytes:
//!
//! 1. **Reclaim.** While the ring is not empty and either `used + n > bytes` or the record
//!    bound would be exceeded, drop the oldest record (`first += 1`, `used -= its footprint`).
//!    If anything was dropped: `first_seq.store(first, Relaxed)` (**append:A**) then
//!    `fence(Release)` (**append:B**). Everything after this point may overwrite the dropped
//!    records' bytes and descriptors.
//! 2. **Write.** Encode the blob and store its words at the head position, then the
//!    descriptor, all `Relaxed`. The space written was either never used or belongs to records
//!    reclaimed in step 1 (or earlier).
//! 3. **Publish.** `next_seq.store(seq + 1, Release)` (**append:C**), and note the sleeper
//!    and listener counts (**append:D**).
//!
//! Then, outside the mutex:
//!
//! 4. **Wake.** If there were sleepers, notify the condition variable; if there were
//!    listeners, call every [`Listener`] (under the list's read lock). With no sleepers and no
//!    listeners an append takes no lock other than the writer mutex and no atomic
//!    read-modify-write other than the mutex's own two.
//!
//! ## The read protocol
//!
//! To read `s` (a seqlock-style optimistic copy, validated after the fact):
//!
//! 1. `next = next_seq.load(Acquire)` (**read:A**); `s >= next` → [`Read::Empty`].
//! 2. `first = first_seq.load(Relaxed)`; `s < first` → [`Read::Overrun`] `{ lost: first - s,
//!    next: first }`. (An early exit only; correctness rests on step 5.)
//! 3. Load the descriptor of `s`, then the blob's header and payload words, all `Relaxed`,
//!    into the caller's [`RecordBuf`]. Lengths are clamped so that even a torn header cannot
//!    make the copy go out of bounds.
//! 4. `fence(Acquire)` (**read:B**).
//! 5. `first = first_seq.load(Relaxed)` (**read:C**); `s < first` → the copy may be torn:
//!    discard it and return [`Read::Overrun`]. Otherwise the copy is exactly record `s`.
//!
//! ## Memory-ordering pairs
//!
//! * **append:C → read:A** (`next_seq`, release/acquire): publication. A reader that sees
//!   `next_seq > s` also sees every store the writer made for `s` (and for all earlier
//!   records): the descriptor and every word of the blob, or later values of those words.
//! * **append:A/B → read:B/C** (`first_seq`, release fence / acquire fence): reclamation
//!   before reuse, the seqlock validation (H.-J. Boehm, "Can seqlocks get along with
//!   programming language memory models?", MSPC 2012). A word of `s`'s blob, or its
//!   descriptor, is stored again only by a later append that has reclaimed `s`, that is,
//!   after an append:A that set `first_seq > s` and the append:B fence after it. If any load
//!   of read step 3 returned such a store, the writer's release fence synchronises with the
//!   reader's acquire fence (read:B), so append:A happens before read:C, and read:C returns a
//!   value past `s`: the copy is discarded. Conversely, if read:C finds `s >= first_seq`, no
//!   load returned a later store, and none returned an earlier one either (append:C →
//!   read:A): the copy is exactly record `s`.
//! * **append:D ↔ wait** and **append:D ↔ listen** (the writer mutex): a sleeper in
//!   [`Ring::wait_for`] registers (`sleepers += 1`) and checks for its record under the
//!   writer mutex, and sleeps on a condition variable paired with that mutex, which releases
//!   it atomically; the writer publishes and reads the count under the same mutex. So either
//!   the append's critical section comes first, and the sleeper's check sees the record, or
//!   the sleeper's comes first, and the writer sees the count and notifies a sleeper that is
//!   already waiting. [`Ring::add_listener`] likewise inserts into the list, then counts
//!   under the writer mutex: either the append comes first, and the registering thread's
//!   next [`Ring::next_seq`] sees it, or the writer sees the count, and the list's lock
//!   orders the insertion before the writer's traversal.
//!
//!   This replaces the more usual Dekker pair (`fence(SeqCst)` after publishing, and after
//!   registering a sleeper): that costs a full fence on *every* append, while counting under
//!   the lock the writer already holds costs nothing, and the only price, that a thread about
//!   to sleep takes the writer mutex for a moment, is paid when there is nothing to read.
//! * The writer mutex's own acquire/release orders successive appends (from any producer),
//!   so that each append sees the writer state and data left by the previous one.
//!
//! ## Sizes
//!
//! A ring holds at most `bytes` bytes of footprints and `records` records. [`Ring::new`]
//! raises `bytes` to at least [`MIN_BYTES`] (4 KiB) and at most [`MAX_BYTES`], and keeps
//! `records` between 1 and `bytes / 32` (no record is smaller than 32 bytes, so more
//! descriptors could never be used); [`RingConfig::validate`] reports what it would change.
//! Record fields are cut to the kernel's limits on append ([`TEXT_MAX`], [`SUBSYSTEM_MAX`],
//! [`DEVICE_MAX`], 0.3), so a record is at most [`MAX_FOOTPRINT`] bytes and always fits.
//!
//! Counters are u64 and only grow, so there is no ABA: a descriptor or word that changed
//! under a reader is always detected by `first_seq`.
//!
//! There is no `unsafe`: the data ring is made of atomic words, so a torn copy holds stale or
//! mixed values, never undefined behaviour. The price is word-by-word copies that the
//! compiler cannot turn into `memcpy`.
//!
//! ## Waiting
//!
//! Frontends have three hooks, none of which the append path pays for unless it is used:
//! [`Listener`]s, called after every append (parked FUSE reads, poll notifications);
//! [`Ring::wait_for`], a blocking wait with a timeout (blocking syslog READ); and
//! [`Ring::readiness`] / [`Reader::readiness`], the poll mask without a copy (A5).

pub mod registry;
mod sync;

#[cfg(all(test, feature = "loom"))]
mod loom_tests;
#[cfg(all(test, not(feature = "loom")))]
mod tests;

use std::fmt;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::record::{Caller, RecordRef, DEVICE_MAX, SUBSYSTEM_MAX, TEXT_MAX};
use sync::{fence, AtomicU64, CachePadded, Condvar, Mutex, RwLock};

/// Default ring size in bytes, like `CONFIG_LOG_BUF_SHIFT=17` (`log_buf_len` = 128 KiB).
pub const DEFAULT_BYTES: usize = 128 * 1024;
/// Smallest ring [`Ring::new`] makes: a few of the largest records.
pub const MIN_BYTES: usize = 4096;
/// Largest ring [`Ring::new`] makes (1 GiB).
pub const MAX_BYTES: usize = 1 << 30;
/// Bytes of the fixed per-record header.
pub const HEADER_BYTES: usize = 32;
/// Footprint of the largest record the ring stores (text, subsystem and device at their
/// limits).
pub const MAX_FOOTPRINT: usize =
    (HEADER_BYTES + TEXT_MAX + SUBSYSTEM_MAX + DEVICE_MAX).next_multiple_of(8);

const HEADER_WORDS: usize = HEADER_BYTES / 8;

/// Size limits of one ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Text bytes the ring holds, like `log_buf_len`; reported by `SYSLOG_ACTION_SIZE_BUFFER`.
    pub bytes: usize,
    /// Most records the ring holds, like the kernel's descriptor ring (`log_buf_len / 32`).
    pub records: usize,
}

/// Why a [`RingConfig`] is out of range.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RingConfigError {
    /// Smaller than [`MIN_BYTES`].
    #[error("`RingConfig::validate`: ring size {bytes} bytes is below the minimum of {MIN_BYTES}")]
    TooSmall {
        /// The requested size.
        bytes: usize,
    },
    /// Larger than [`MAX_BYTES`].
    #[error("`RingConfig::validate`: ring size {bytes} bytes is above the maximum of {MAX_BYTES}")]
    TooLarge {
        /// The requested size.
        bytes: usize,
    },
    /// A record limit of 0.
    #[error("`RingConfig::validate`: a ring must hold at least one record")]
    NoRecords,
}

impl RingConfig {
    /// A ring of `bytes` bytes and `bytes / 32` records, as the kernel sizes its rings.
    pub fn with_bytes(bytes: usize) -> Self {
        RingConfig {
            bytes,
            records: (bytes / 32).max(1),
        }
    }

    /// Check the limits [`Ring::new`] enforces: `bytes` within
    /// [`MIN_BYTES`]`..=`[`MAX_BYTES`] and `records >= 1`. (A `records` above `bytes / 32` is
    /// not an error; it is lowered, since such records could never all be stored.)
    pub fn validate(&self) -> Result<(), RingConfigError> {
        if self.bytes < MIN_BYTES {
            Err(RingConfigError::TooSmall { bytes: self.bytes })
        } else if self.bytes > MAX_BYTES {
            Err(RingConfigError::TooLarge { bytes: self.bytes })
        } else if self.records == 0 {
            Err(RingConfigError::NoRecords)
        } else {
            Ok(())
        }
    }

    /// The limits a [`Ring::new`] with this configuration actually uses.
    pub fn effective(self) -> Self {
        let bytes = self.bytes.clamp(MIN_BYTES, MAX_BYTES);
        RingConfig {
            bytes,
            records: self.records.clamp(1, bytes / HEADER_BYTES),
        }
    }
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig::with_bytes(DEFAULT_BYTES)
    }
}

/// The result of reading one sequence number.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<'b> {
    /// The record, borrowed from the caller's [`RecordBuf`].
    Record(RecordRef<'b>),
    /// The requested record was overwritten: `lost` records are gone and `next` is the oldest
    /// record still stored (EPIPE semantics, A3.3 and A9.2).
    Overrun {
        /// Records lost between the requested seq and `next`.
        lost: u64,
        /// The oldest record still stored.
        next: u64,
    },
    /// No record at this seq yet.
    Empty,
}

/// Scratch space a reader copies a record into; reuse it across reads to avoid allocation.
#[derive(Debug, Default)]
pub struct RecordBuf {
    /// Text, subsystem and device, back to back, padded to whole words.
    payload: Vec<u8>,
}

impl RecordBuf {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The destructive `syslog(2)` READ / `/proc/kmsg` cursor and the virtual console level of a
/// ring (B2, B4). Changed only under [`Ring::syslog_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyslogState {
    /// `syslog_seq`: the next record a destructive READ returns.
    pub seq: u64,
    /// `syslog_partial`: bytes of record `seq` already returned.
    pub partial: usize,
    /// `syslog_time`: the printk.time setting in force when the partial record was started.
    pub time: bool,
    /// Virtual `console_loglevel` (field 1 of `/proc/sys/kernel/printk`).
    pub console_level: u8,
    /// Level saved by CONSOLE_OFF, restored by CONSOLE_ON.
    pub saved_console_level: Option<u8>,
}

/// Default virtual console level, `CONSOLE_LOGLEVEL_DEFAULT` on the reference system (0.1).
pub const DEFAULT_CONSOLE_LEVEL: u8 = 4;
/// `minimum_console_loglevel` (0.1).
pub const MINIMUM_CONSOLE_LEVEL: u8 = 1;

impl Default for SyslogState {
    fn default() -> Self {
        SyslogState {
            seq: 0,
            partial: 0,
            time: true,
            console_level: DEFAULT_CONSOLE_LEVEL,
            saved_console_level: None,
        }
    }
}

impl SyslogState {
    /// If the cursor's record was overwritten (`seq < first_seq`), move it to `first_seq` and
    /// forget the partial offset, as READ and SIZE_UNREAD do silently (B4.5, B6.1). Returns the
    /// number of records skipped (0 if the cursor was still valid).
    pub fn skip_overwritten(&mut self, first_seq: u64) -> u64 {
        if self.seq >= first_seq {
            return 0;
        }
        let lost = first_seq - self.seq;
        self.seq = first_seq;
        self.partial = 0;
        lost
    }
}

/// Told after every append; frontends use it to answer parked reads and poll handles.
///
/// Calls come from the appending thread, after the record is readable, and are not ordered
/// between concurrent producers: treat `next_seq` as "at least", and keep `appended` short
/// (it delays the producer, not the readers). It runs under the listener list's read lock, so
/// it must not call [`Ring::add_listener`], [`Ring::remove_listener`] or [`Ring::append`];
/// reading the ring is fine.
pub trait Listener: Send + Sync {
    /// Records up to `next_seq - 1` are readable.
    fn appended(&self, next_seq: u64);
}

/// Counters of one ring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Records appended since creation (equals `next_seq`).
    pub appended: u64,
    /// Records overwritten to make room.
    pub overwritten: u64,
    /// Records currently stored.
    pub records: u64,
    /// Bytes currently stored (record text, dictionary and per-record overhead).
    pub bytes: u64,
}

/// What a read at a position would return, without copying anything (poll, A5.2-A5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// A record is there: `POLLIN|POLLRDNORM`.
    Ready,
    /// The position was overwritten; a read gives EPIPE: `POLLIN|POLLRDNORM|POLLERR|POLLPRI`.
    Overrun,
    /// Nothing at or after the position: no event.
    Empty,
}

/// State only the writer touches (under [`Ring::writer`]).
struct Writer {
    /// Same as `Ring::first_seq`, which only the writer stores.
    first: u64,
    /// Same as `Ring::next_seq`, which only the writer stores.
    next: u64,
    /// Word index where the next blob starts.
    head: usize,
    /// Sum of the footprints of the stored records.
    used: usize,
    /// Blob length in words of the record in each descriptor slot.
    words: Box<[u32]>,
    /// Payload bytes being encoded (records with a dictionary, or that wrap).
    bytes: Vec<u8>,
    /// The blob being encoded (records with a dictionary, or that wrap).
    scratch: Vec<u64>,
    /// Threads in [`Ring::wait_for`].
    sleepers: usize,
    /// Registered listeners.
    listeners: usize,
}

/// The words of a ring: header, descriptor ring and data ring, in one array ([`layout`]).
enum Region {
    /// Process memory ([`Ring::new`]).
    Heap(Box<[AtomicU64]>),
    /// A sealed memfd that outlives the process ([`Ring::new_shared`], [`Ring::adopt`]).
    #[cfg(not(all(feature = "loom", test)))]
    Shared(crate::sys::shm::SharedWords),
    /// Under the loom model: words two `Ring` values share, standing for the memfd a dead
    /// writer and its successor map ([`Ring::successor`]).
    #[cfg(all(feature = "loom", test))]
    Model(std::sync::Arc<[AtomicU64]>),
}

impl Region {
    fn words(&self) -> &[AtomicU64] {
        match self {
            Region::Heap(w) => w,
            #[cfg(not(all(feature = "loom", test)))]
            Region::Shared(m) => m.words(),
            #[cfg(all(feature = "loom", test))]
            Region::Model(w) => w,
        }
    }
}

/// The word layout of a ring's [`Region`]: the same in memory and in a memfd, so that a
/// restarted daemon finds a ring exactly as the dead one left it (docs/architecture.md
/// "Restart").
///
/// | words | contents |
/// |---|---|
/// | 0 | [`layout::MAGIC`] |
/// | 1 | [`layout::VERSION`] |
/// | 2, 3 | `bytes`, `records` of the ring's [`RingConfig`] |
/// | 4 | `next_seq` (writer: `Release`; readers: `Acquire`) |
/// | 5 | `first_seq` (writer: `Relaxed` + release fence; readers: `Relaxed` + acquire fence) |
/// | 8 | `clear_seq` |
/// | 9, 10, 11 | [`SyslogState`]: `seq`, `partial`, flags (bit 0 `time`, bits 8-15 console level, bit 16 a saved level, bits 24-31 the saved level) — a copy, written when [`Ring::syslog_state`]'s guard is dropped |
/// | 16..32 | [`Ring::meta`]: 16 words for the ring's owner (the registry's key and ids) |
/// | 32.. | the descriptor ring (`records.next_power_of_two()` words), then the data ring (`ceil(bytes / 8)` words) |
///
/// Words 0-7 share the first cache line (read by every reader, stored to only by appends);
/// the rest of the header is touched only by `syslog(2)`, CLEAR and the owner.
pub mod layout {
    /// "KMSGRING", little-endian.
    pub const MAGIC: u64 = u64::from_le_bytes(*b"KMSGRING");
    /// Bumped on any change of this layout; a ring of another version is not adopted.
    pub const VERSION: u64 = 1;
    pub(super) const MAGIC_AT: usize = 0;
    pub(super) const VERSION_AT: usize = 1;
    pub(super) const BYTES_AT: usize = 2;
    pub(super) const RECORDS_AT: usize = 3;
    pub(super) const NEXT_AT: usize = 4;
    pub(super) const FIRST_AT: usize = 5;
    pub(super) const CLEAR_AT: usize = 8;
    pub(super) const SYSLOG_SEQ_AT: usize = 9;
    pub(super) const SYSLOG_PARTIAL_AT: usize = 10;
    pub(super) const SYSLOG_FLAGS_AT: usize = 11;
    pub(super) const META_AT: usize = 16;
    /// Words of [`super::Ring::meta`].
    pub const META_WORDS: usize = 16;
    /// Header words before the descriptor ring.
    pub const HEADER_WORDS: usize = 32;
}

/// Why [`Ring::adopt`] refused a memfd.
#[derive(Debug, Error)]
pub enum RingAdoptError {
    /// Mapping it failed.
    #[error("`Ring::adopt`: {0}")]
    Map(#[from] crate::sys::SysError),
    /// Not a ring of this layout.
    #[error("`Ring::adopt`: not a kmsgfs ring of layout version {} (magic {magic:#x}, version {version})", layout::VERSION)]
    Layout {
        /// Word 0.
        magic: u64,
        /// Word 1.
        version: u64,
    },
    /// The header's limits, sequence numbers or records are inconsistent.
    #[error("`Ring::adopt`: inconsistent ring: {0}")]
    Inconsistent(String),
}

/// A ring of kernel log records. One writer at a time (appends are serialised internally),
/// any number of readers.
pub struct Ring {
    config: RingConfig,
    /// The data ring's size in words.
    capacity: usize,
    /// Descriptor slots - 1.
    mask: u64,
    /// Word index of the data ring in `region`.
    data_at: usize,
    region: Region,
    writer: CachePadded<Mutex<Writer>>,
    /// Written now and then by others than the writer; kept off the lines readers load.
    shared: CachePadded<Shared>,
}

/// The parts of a ring that neither the read path nor (without listeners) the append path
/// touch.
struct Shared {
    /// Where [`Ring::wait_for`] sleeps, with the writer mutex.
    wake: Condvar,
    syslog: parking_lot::Mutex<SyslogState>,
    listeners: RwLock<Vec<Arc<dyn Listener>>>,
}

/// [`Ring::syslog_state`]'s guard: the state, locked; its words in the ring's header are
/// updated when the guard is dropped, so that a restarted daemon finds the cursor.
pub struct SyslogGuard<'a> {
    guard: parking_lot::MutexGuard<'a, SyslogState>,
    header: &'a [AtomicU64],
}

impl std::ops::Deref for SyslogGuard<'_> {
    type Target = SyslogState;
    fn deref(&self) -> &SyslogState {
        &self.guard
    }
}

impl std::ops::DerefMut for SyslogGuard<'_> {
    fn deref_mut(&mut self) -> &mut SyslogState {
        &mut self.guard
    }
}

impl Drop for SyslogGuard<'_> {
    fn drop(&mut self) {
        let st = &*self.guard;
        self.header[layout::SYSLOG_SEQ_AT].store(st.seq, Relaxed);
        self.header[layout::SYSLOG_PARTIAL_AT].store(st.partial as u64, Relaxed);
        self.header[layout::SYSLOG_FLAGS_AT].store(syslog_flags(st), Relaxed);
    }
}

fn syslog_flags(st: &SyslogState) -> u64 {
    u64::from(st.time)
        | u64::from(st.console_level) << 8
        | st.saved_console_level
            .map_or(0, |l| 1 << 16 | u64::from(l) << 24)
}

fn syslog_from_words(seq: u64, partial: u64, flags: u64) -> SyslogState {
    SyslogState {
        seq,
        partial: partial as usize,
        time: flags & 1 != 0,
        console_level: (flags >> 8) as u8,
        saved_console_level: (flags >> 16 & 1 != 0).then_some((flags >> 24) as u8),
    }
}

/// Bytes a record occupies in the ring: its text and dictionary plus a fixed header.
pub fn footprint(rec: &RecordRef<'_>) -> usize {
    (HEADER_BYTES + rec.text.len() + rec.subsystem.len() + rec.device.len()).next_multiple_of(8)
}

/// `rec` with its text and dictionary values cut to the kernel's limits (0.3): what
/// [`Ring::append`] stores.
pub fn clamp_fields<'a>(rec: &RecordRef<'a>) -> RecordRef<'a> {
    RecordRef {
        text: &rec.text[..rec.text.len().min(TEXT_MAX)],
        subsystem: &rec.subsystem[..rec.subsystem.len().min(SUBSYSTEM_MAX)],
        device: &rec.device[..rec.device.len().min(DEVICE_MAX)],
        ..*rec
    }
}

const CALLER_NONE: u64 = 0;
const CALLER_THREAD: u64 = 1;
const CALLER_CPU: u64 = 2;

impl Ring {
    /// An empty ring with the limits of `config.effective()` (see [`RingConfig::validate`]).
    pub fn new(config: RingConfig) -> Self {
        let effective = config.effective();
        if effective != config {
            log::warn!("ring limits {config:?} adjusted to {effective:?}");
        }
        Self::build(effective)
    }

    /// A ring with exactly `config`, below [`MIN_BYTES`] if asked (for models of tiny rings).
    /// Records that do not fit are cut to fit.
    #[cfg(test)]
    pub(crate) fn new_unchecked(config: RingConfig) -> Self {
        assert!(config.bytes >= 2 * HEADER_BYTES && config.records >= 1);
        Self::build(config)
    }

    /// Words of the region of a ring with `config`: header, descriptors, data.
    fn region_words(config: RingConfig) -> usize {
        layout::HEADER_WORDS + config.records.next_power_of_two() + config.bytes.div_ceil(8)
    }

    fn build(config: RingConfig) -> Self {
        let region = Region::Heap(sync::zeroed_atomics(Self::region_words(config)));
        Self::assemble(config, region, None)
    }

    /// An empty ring like [`Ring::new`] whose words live in a new sealed memfd named `name`
    /// ([`Ring::memfd`]): a holder that keeps the fd lets a restarted daemon [`Ring::adopt`]
    /// it with every record and cursor.
    #[cfg(not(all(feature = "loom", test)))]
    pub fn new_shared(config: RingConfig, name: &str) -> Result<Self, crate::sys::SysError> {
        let config = config.effective();
        let m = crate::sys::shm::SharedWords::create(name, Self::region_words(config))?;
        Ok(Self::assemble(config, Region::Shared(m), None))
    }

    /// The ring a previous daemon left in the memfd `fd` (made by [`Ring::new_shared`]): its
    /// records, sequence numbers, clear point, syslog cursor and console level. The header
    /// and every stored record are checked first; the writer's state (head, bytes in use,
    /// blob lengths) is rebuilt from the records. An append the previous process did not
    /// finish was never published (`next_seq`), so it is simply not there.
    #[cfg(not(all(feature = "loom", test)))]
    pub fn adopt(fd: std::os::fd::OwnedFd) -> Result<Self, RingAdoptError> {
        let m = crate::sys::shm::SharedWords::from_fd(fd)?;
        let w = m.words();
        let bad = |what: String| Err(RingAdoptError::Inconsistent(what));
        if w.len() < layout::HEADER_WORDS {
            return bad(format!("{} words", w.len()));
        }
        let (magic, version) = (
            w[layout::MAGIC_AT].load(Acquire),
            w[layout::VERSION_AT].load(Acquire),
        );
        if magic != layout::MAGIC || version != layout::VERSION {
            return Err(RingAdoptError::Layout { magic, version });
        }
        let config = RingConfig {
            bytes: w[layout::BYTES_AT].load(Relaxed) as usize,
            records: w[layout::RECORDS_AT].load(Relaxed) as usize,
        };
        if config.effective() != config || Self::region_words(config) != w.len() {
            return bad(format!("limits {config:?} for {} words", w.len()));
        }
        let next = w[layout::NEXT_AT].load(Acquire);
        let first = w[layout::FIRST_AT].load(Acquire);
        if first > next || (next - first) as usize > config.records {
            return bad(format!("first_seq {first}, next_seq {next}"));
        }
        let state = (first, next);
        Ok(Self::assemble(config, Region::Shared(m), Some(state)))
            .and_then(|r| r.rebuild_writer().map(|()| r))
    }

    /// The memfd of a shared ring, to hand to a holder process.
    #[cfg(not(all(feature = "loom", test)))]
    pub fn memfd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match &self.region {
            Region::Shared(m) => Some(m.fd()),
            Region::Heap(_) => None,
        }
    }

    /// Set up a ring over `region`: a fresh one (`adopted` None: header written) or one a
    /// previous process left (`adopted` = its `(first_seq, next_seq)`: header read).
    fn assemble(config: RingConfig, region: Region, adopted: Option<(u64, u64)>) -> Self {
        let capacity = config.bytes.div_ceil(8);
        let slots = config.records.next_power_of_two();
        let words = region.words();
        let syslog = match adopted {
            None => {
                words[layout::MAGIC_AT].store(layout::MAGIC, Relaxed);
                words[layout::VERSION_AT].store(layout::VERSION, Relaxed);
                words[layout::BYTES_AT].store(config.bytes as u64, Relaxed);
                words[layout::RECORDS_AT].store(config.records as u64, Relaxed);
                let st = SyslogState::default();
                words[layout::SYSLOG_FLAGS_AT].store(syslog_flags(&st), Relaxed);
                st
            }
            Some(_) => syslog_from_words(
                words[layout::SYSLOG_SEQ_AT].load(Relaxed),
                words[layout::SYSLOG_PARTIAL_AT].load(Relaxed),
                words[layout::SYSLOG_FLAGS_AT].load(Relaxed),
            ),
        };
        let (first, next) = adopted.unwrap_or((0, 0));
        Ring {
            config,
            capacity,
            mask: slots as u64 - 1,
            data_at: layout::HEADER_WORDS + slots,
            region,
            writer: CachePadded(Mutex::new(Writer {
                first,
                next,
                head: 0,
                used: 0,
                words: vec![0; slots].into_boxed_slice(),
                bytes: Vec::with_capacity(MAX_FOOTPRINT),
                scratch: Vec::with_capacity(MAX_FOOTPRINT / 8),
                sleepers: 0,
                listeners: 0,
            })),
            shared: CachePadded(Shared {
                wake: Condvar::new(),
                syslog: parking_lot::Mutex::new(syslog),
                listeners: RwLock::new(Vec::new()),
            }),
        }
    }

    /// Under the loom model the ring's atomics are loom's, which cannot live in shared
    /// memory: no shared rings (the model checks the protocol, which is the same).
    #[cfg(all(feature = "loom", test))]
    pub fn new_shared(_config: RingConfig, name: &str) -> Result<Self, crate::sys::SysError> {
        Err(crate::sys::SysError::new(
            format!("memfd ring {name} under loom"),
            std::io::Error::from_raw_os_error(libc::ENOSYS),
        ))
    }

    /// See the loom [`Ring::new_shared`].
    #[cfg(all(feature = "loom", test))]
    pub fn adopt(_fd: std::os::fd::OwnedFd) -> Result<Self, RingAdoptError> {
        Err(RingAdoptError::Inconsistent(
            "no shared rings under loom".into(),
        ))
    }

    /// See the loom [`Ring::new_shared`].
    #[cfg(all(feature = "loom", test))]
    pub fn memfd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }

    /// Under loom: an empty ring whose words a [`Ring::successor`] can share.
    #[cfg(all(feature = "loom", test))]
    pub(crate) fn new_model(config: RingConfig) -> Self {
        let words: std::sync::Arc<[AtomicU64]> =
            sync::zeroed_atomics(Self::region_words(config)).into();
        Self::assemble(config, Region::Model(words), None)
    }

    /// Under loom: what [`Ring::adopt`] makes of a memfd, over the same words as `self`: the
    /// published bounds read from the header, the writer state rebuilt from the records.
    #[cfg(all(feature = "loom", test))]
    pub(crate) fn successor(&self) -> Result<Self, RingAdoptError> {
        let Region::Model(words) = &self.region else {
            unreachable!("successor of a model ring only")
        };
        let first = words[layout::FIRST_AT].load(Acquire);
        let next = words[layout::NEXT_AT].load(Acquire);
        let r = Self::assemble(
            self.config,
            Region::Model(std::sync::Arc::clone(words)),
            Some((first, next)),
        );
        r.rebuild_writer().map(|()| r)
    }

    /// Under loom: the writer dies in the middle of an append: steps 1 and 2 (reclaim, blob,
    /// descriptor) happen, the publication (append:C) does not.
    #[cfg(all(feature = "loom", test))]
    pub(crate) fn append_unpublished(&self, rec: &RecordRef<'_>) {
        self.append_steps(rec, false);
    }

    /// After [`Ring::adopt`]: check every stored record's header and recompute the writer's
    /// head, bytes in use and blob lengths from them.
    fn rebuild_writer(&self) -> Result<(), RingAdoptError> {
        let mut w = self.writer.lock();
        let (first, next) = (w.first, w.next);
        let data = self.data();
        let mut head = 0usize;
        let mut used = 0usize;
        for seq in first..next {
            let at = self.descs()[(seq & self.mask) as usize].load(Relaxed) as usize;
            if at >= self.capacity {
                return Err(RingAdoptError::Inconsistent(format!(
                    "record {seq} at word {at} of {}",
                    self.capacity
                )));
            }
            let word = |i: usize| data[(at + i) % self.capacity].load(Relaxed);
            let lens = word(3);
            let (text, sub, dev) = (
                (lens & 0xffff_ffff) as usize,
                (lens >> 32 & 0xffff) as usize,
                (lens >> 48) as usize,
            );
            if word(0) != seq || text > TEXT_MAX || sub > SUBSYSTEM_MAX || dev > DEVICE_MAX {
                return Err(RingAdoptError::Inconsistent(format!(
                    "record {seq}: header {:#x} {lens:#x}",
                    word(0)
                )));
            }
            let size = (HEADER_BYTES + text + sub + dev).next_multiple_of(8);
            w.words[(seq & self.mask) as usize] = (size / 8) as u32;
            used += size;
            head = (at + size / 8) % self.capacity;
        }
        if used > self.config.bytes {
            return Err(RingAdoptError::Inconsistent(format!(
                "{used} bytes stored in a ring of {}",
                self.config.bytes
            )));
        }
        w.head = head;
        w.used = used;
        Ok(())
    }

    fn header(&self) -> &[AtomicU64] {
        &self.region.words()[..layout::HEADER_WORDS]
    }

    fn descs(&self) -> &[AtomicU64] {
        &self.region.words()[layout::HEADER_WORDS..self.data_at]
    }

    fn data(&self) -> &[AtomicU64] {
        &self.region.words()[self.data_at..]
    }

    fn next_word(&self) -> &AtomicU64 {
        &self.region.words()[layout::NEXT_AT]
    }

    fn first_word(&self) -> &AtomicU64 {
        &self.region.words()[layout::FIRST_AT]
    }

    /// [`layout::META_WORDS`] words the ring's owner keeps with it (in a shared ring they
    /// survive a restart with the records): the registry stores the namespace key and ids.
    pub fn meta(&self) -> &[AtomicU64] {
        &self.region.words()[layout::META_AT..layout::META_AT + layout::META_WORDS]
    }

    /// The limits this ring was made with.
    pub fn config(&self) -> RingConfig {
        self.config
    }

    /// `rec` as it will be stored: fields cut to the kernel's limits, and (only in rings made
    /// by `new_unchecked`) to what fits in the ring.
    fn fit<'a>(&self, rec: &RecordRef<'a>) -> RecordRef<'a> {
        let rec = clamp_fields(rec);
        let cap = self.config.bytes / 8 * 8;
        if footprint(&rec) <= cap {
            return rec;
        }
        let avail = cap - HEADER_BYTES;
        let sub = rec.subsystem.len().min(avail);
        let dev = rec.device.len().min(avail - sub);
        let text = rec.text.len().min(avail - sub - dev);
        RecordRef {
            text: &rec.text[..text],
            subsystem: &rec.subsystem[..sub],
            device: &rec.device[..dev],
            ..rec
        }
    }

    /// Append a record (its `seq` is ignored) and return the seq it was given. The oldest
    /// whole records are dropped to make room. Text and dictionary values longer than the
    /// kernel's limits ([`TEXT_MAX`], [`SUBSYSTEM_MAX`], [`DEVICE_MAX`]) are cut.
    pub fn append(&self, rec: &RecordRef<'_>) -> u64 {
        self.append_steps(rec, true)
    }

    /// [`Ring::append`]; without `publish` it stops before step 3 (a writer that dies there,
    /// for the loom model of the hand-over).
    fn append_steps(&self, rec: &RecordRef<'_>, publish: bool) -> u64 {
        let rec = self.fit(rec);
        let size = footprint(&rec);
        let nwords = size / 8;

        let mut guard = self.writer.lock();
        let w = &mut *guard;
        let seq = w.next;

        // 1. Reclaim the oldest whole records until the new one fits both bounds.
        let old_first = w.first;
        while w.first < w.next
            && (w.used + size > self.config.bytes
                || (w.next - w.first) as usize >= self.config.records)
        {
            w.used -= w.words[(w.first & self.mask) as usize] as usize * 8;
            w.first += 1;
        }
        if w.first != old_first {
            // LMM(append:A): the dropped records are no longer promised to anyone ...
            self.first_word().store(w.first, Relaxed);
            // LMM(append:B): ... before any of their words or descriptors is reused.
            // Pairs with LMM(read:B).
            fence(Release);
        }

        // 2. Write the blob, then its descriptor.
        let (kind, id) = match rec.caller {
            None => (CALLER_NONE, 0),
            Some(Caller::Thread(id)) => (CALLER_THREAD, id),
            Some(Caller::Cpu(id)) => (CALLER_CPU, id),
        };
        let header = [
            seq,
            rec.ts_usec,
            u64::from(rec.prio)
                | (u64::from(rec.cont) << 16)
                | (kind << 17)
                | (u64::from(id) << 32),
            rec.text.len() as u64
                | ((rec.subsystem.len() as u64) << 32)
                | ((rec.device.len() as u64) << 48),
        ];
        let head = w.head;
        let end = head + nwords;
        let data = self.data();
        if end <= self.capacity && rec.subsystem.is_empty() && rec.device.is_empty() {
            // The common case: no wrap, and the payload is the text alone.
            let (hdr, body) = data[head..end].split_at(HEADER_WORDS);
            for (slot, word) in hdr.iter().zip(header) {
                slot.store(word, Relaxed);
            }
            let mut chunks = rec.text.chunks_exact(8);
            for (slot, c) in body.iter().zip(&mut chunks) {
                slot.store(u64::from_le_bytes(c.try_into().expect("8 bytes")), Relaxed);
            }
            let rest = chunks.remainder();
            if !rest.is_empty() {
                let mut last = [0u8; 8];
                last[..rest.len()].copy_from_slice(rest);
                body[body.len() - 1].store(u64::from_le_bytes(last), Relaxed);
            }
        } else {
            w.bytes.clear();
            w.bytes.extend_from_slice(rec.text);
            w.bytes.extend_from_slice(rec.subsystem);
            w.bytes.extend_from_slice(rec.device);
            w.bytes.resize(size - HEADER_BYTES, 0);
            w.scratch.clear();
            w.scratch.extend_from_slice(&header);
            w.scratch.extend(
                w.bytes
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))),
            );
            let run = nwords.min(self.capacity - head);
            for (slot, word) in data[head..head + run].iter().zip(&w.scratch) {
                slot.store(*word, Relaxed);
            }
            for (slot, word) in data.iter().zip(&w.scratch[run..]) {
                slot.store(*word, Relaxed);
            }
        }
        let slot = (seq & self.mask) as usize;
        self.descs()[slot].store(head as u64, Relaxed);
        w.words[slot] = nwords as u32;
        w.head = if end >= self.capacity {
            end - self.capacity
        } else {
            end
        };
        w.used += size;
        w.next = seq + 1;
        if !publish {
            return seq;
        }

        // 3. LMM(append:C): publish. Pairs with LMM(read:A).
        self.next_word().store(seq + 1, Release);
        // LMM(append:D): who to wake, read under the writer mutex. Pairs with LMM(wait) and
        // LMM(listen).
        let (sleepers, listeners) = (w.sleepers, w.listeners);
        drop(guard);

        // 4. Wake. The counts were read under the writer mutex, which sleepers and
        // `add_listener` also take, so none can be missed.
        if sleepers != 0 {
            self.shared.wake.notify_all();
        }
        if listeners != 0 {
            for l in self.shared.listeners.read().iter() {
                l.appended(seq + 1);
            }
        }
        seq
    }

    /// The oldest record still stored (`prb_first_valid_seq`); equals [`Ring::next_seq`] when
    /// the ring is empty.
    pub fn first_seq(&self) -> u64 {
        self.first_word().load(Acquire)
    }

    /// The seq the next append will get (`prb_next_seq`).
    pub fn next_seq(&self) -> u64 {
        self.next_word().load(Acquire)
    }

    /// Copy record `seq` into `buf`. Takes no lock and never waits.
    pub fn read<'b>(&self, seq: u64, buf: &'b mut RecordBuf) -> Read<'b> {
        // LMM(read:A): pairs with LMM(append:C); the stores for every seq < next are visible.
        let next = self.next_word().load(Acquire);
        if seq >= next {
            return Read::Empty;
        }
        let first = self.first_word().load(Relaxed);
        if seq < first {
            return Read::Overrun {
                lost: first - seq,
                next: first,
            };
        }

        // Optimistic copy. Any of these loads may return a later overwrite; the lengths are
        // clamped so that a torn header cannot take the copy out of bounds, and `torn`
        // records anything that could only come from an overwrite.
        let cap = self.capacity;
        let data = self.data();
        let mut at = self.descs()[(seq & self.mask) as usize].load(Relaxed) as usize;
        if at >= cap {
            at %= cap;
        }
        let mut hdr = [0u64; HEADER_WORDS];
        for h in &mut hdr {
            *h = data[at].load(Relaxed);
            at += 1;
            if at == cap {
                at = 0;
            }
        }
        let text_len = (hdr[3] & 0xffff_ffff) as usize;
        let sub_len = (hdr[3] >> 32 & 0xffff) as usize;
        let dev_len = (hdr[3] >> 48) as usize;
        let kind = hdr[2] >> 17 & 3;
        let mut torn = hdr[0] != seq
            || text_len > TEXT_MAX
            || sub_len > SUBSYSTEM_MAX
            || dev_len > DEVICE_MAX
            || kind > CALLER_CPU;
        let pwords = if torn {
            0
        } else {
            (text_len + sub_len + dev_len).div_ceil(8)
        };
        if pwords + HEADER_WORDS > cap {
            torn = true;
        } else {
            buf.payload.resize(pwords * 8, 0);
            let run = pwords.min(cap - at);
            let (p1, p2) = buf.payload.split_at_mut(run * 8);
            for (dst, src) in p1.chunks_exact_mut(8).zip(&data[at..at + run]) {
                dst.copy_from_slice(&src.load(Relaxed).to_le_bytes());
            }
            for (dst, src) in p2.chunks_exact_mut(8).zip(&data[..pwords - run]) {
                dst.copy_from_slice(&src.load(Relaxed).to_le_bytes());
            }
        }

        // LMM(read:B): pairs with LMM(append:B). If the copy saw any overwrite, the reload
        // below sees the `first_seq` stored before it.
        fence(Acquire);
        // LMM(read:C)
        let first = self.first_word().load(Relaxed);
        if seq < first {
            return Read::Overrun {
                lost: first - seq,
                next: first,
            };
        }
        assert!(
            !torn,
            "ring invariant broken: record {seq} changed while first_seq was {first}"
        );

        let id = (hdr[2] >> 32) as u32;
        let p = &buf.payload;
        Read::Record(RecordRef {
            seq,
            ts_usec: hdr[1],
            prio: hdr[2] as u16,
            cont: hdr[2] >> 16 & 1 != 0,
            caller: match kind {
                CALLER_THREAD => Some(Caller::Thread(id)),
                CALLER_CPU => Some(Caller::Cpu(id)),
                _ => None,
            },
            text: &p[..text_len],
            subsystem: &p[text_len..text_len + sub_len],
            device: &p[text_len + sub_len..text_len + sub_len + dev_len],
        })
    }

    /// What [`Ring::read`] at `seq` would return, without copying (poll, A5).
    pub fn readiness(&self, seq: u64) -> Readiness {
        let next = self.next_word().load(Acquire);
        if seq < self.first_word().load(Acquire) {
            Readiness::Overrun
        } else if seq >= next {
            Readiness::Empty
        } else {
            Readiness::Ready
        }
    }

    /// The clear point (`clear_seq`, A9.3): never moved by overwrites.
    pub fn clear_seq(&self) -> u64 {
        self.header()[layout::CLEAR_AT].load(Acquire)
    }

    /// Move the clear point (SYSLOG_ACTION_CLEAR sets it to [`Ring::next_seq`]).
    pub fn set_clear_seq(&self, seq: u64) {
        self.header()[layout::CLEAR_AT].store(seq, Release);
    }

    /// The destructive syslog cursor and console level, locked.
    pub fn syslog_state(&self) -> SyslogGuard<'_> {
        SyslogGuard {
            guard: self.shared.syslog.lock(),
            header: self.header(),
        }
    }

    /// Register a listener told after every append.
    ///
    /// Every append that a [`Ring::next_seq`] call made after this returns does not see is
    /// reported to the listener; so register first, then catch up from `next_seq()`.
    pub fn add_listener(&self, listener: Arc<dyn Listener>) {
        self.shared.listeners.write().push(listener);
        // LMM(listen): counted under the writer mutex, after the list entry exists.
        self.writer.lock().listeners += 1;
    }

    /// Unregister a listener added with [`Ring::add_listener`] (compared by pointer); returns
    /// whether it was registered. An append already under way may still call it once.
    pub fn remove_listener(&self, listener: &Arc<dyn Listener>) -> bool {
        let mut list = self.shared.listeners.write();
        let before = list.len();
        list.retain(|l| !Arc::ptr_eq(l, listener));
        let removed = before - list.len();
        self.writer.lock().listeners -= removed;
        removed != 0
    }

    /// Block until a record with seq `>= seq` exists or `timeout` passes; returns whether one
    /// exists.
    ///
    /// Only a caller that has to sleep takes a lock (the writer mutex, briefly, to register
    /// as a sleeper and then to sleep on the condition variable that goes with it).
    pub fn wait_for(&self, seq: u64, timeout: Duration) -> bool {
        if self.next_word().load(Acquire) > seq {
            return true;
        }
        let deadline = Instant::now().checked_add(timeout);
        let mut w = self.writer.lock();
        // LMM(wait): registered and checked under the writer mutex; the wait releases it
        // atomically, so an append either ran before (and is seen here) or sees the sleeper.
        w.sleepers += 1;
        let found = loop {
            if w.next > seq {
                break true;
            }
            let (g, timed_out) = self.shared.wake.wait_until(w, deadline);
            w = g;
            if timed_out {
                break w.next > seq;
            }
        };
        w.sleepers -= 1;
        found
    }

    /// Counters (a consistent snapshot: takes the writer mutex).
    pub fn stats(&self) -> RingStats {
        let w = self.writer.lock();
        RingStats {
            appended: w.next,
            overwritten: w.first,
            records: w.next - w.first,
            bytes: w.used as u64,
        }
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("config", &self.config)
            .field("first_seq", &self.first_seq())
            .field("next_seq", &self.next_seq())
            .field("clear_seq", &self.clear_seq())
            .finish_non_exhaustive()
    }
}

/// A `/dev/kmsg`-style reader position on a ring. It holds no lock and never blocks the
/// writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reader {
    /// The next seq this reader returns.
    pub seq: u64,
}

impl Reader {
    /// A reader at the oldest stored record, as a fresh `open()` of `/dev/kmsg` (A1.4).
    pub fn at_oldest(ring: &Ring) -> Self {
        Reader {
            seq: ring.first_seq(),
        }
    }

    /// Read the record at this position. On success the position advances; on
    /// [`Read::Overrun`] it moves to the oldest stored record; on [`Read::Empty`] it stays.
    pub fn next<'b>(&mut self, ring: &Ring, buf: &'b mut RecordBuf) -> Read<'b> {
        let r = ring.read(self.seq, buf);
        match r {
            Read::Record(_) => self.seq += 1,
            Read::Overrun { next, .. } => self.seq = next,
            Read::Empty => {}
        }
        r
    }

    /// `lseek(fd, 0, SEEK_SET)`: to the oldest stored record (A4.1).
    pub fn seek_oldest(&mut self, ring: &Ring) {
        self.seq = ring.first_seq();
    }

    /// `lseek(fd, 0, SEEK_END)`: just after the newest record (A4.2).
    pub fn seek_end(&mut self, ring: &Ring) {
        self.seq = ring.next_seq();
    }

    /// `lseek(fd, 0, SEEK_DATA)`: to the clear point, which may already be overwritten, in
    /// which case the next read reports the overrun (A4.3).
    pub fn seek_clear(&mut self, ring: &Ring) {
        self.seq = ring.clear_seq();
    }

    /// What the next read would return, for poll (A5.2-A5.4).
    pub fn readiness(&self, ring: &Ring) -> Readiness {
        ring.readiness(self.seq)
    }
}
