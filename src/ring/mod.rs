//! One namespace's kernel log: a bounded ring of records with the kernel's semantics.
//!
//! PLACEHOLDER IMPLEMENTATION: a mutex around a `VecDeque`, with the final public API, so that
//! the syslog core and the frontends can be built against it. The lock-free implementation
//! (and this module's design document) replaces the internals without changing the API.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

use crate::record::{Record, RecordRef};

/// Default ring size in bytes, like `CONFIG_LOG_BUF_SHIFT=17` (`log_buf_len` = 128 KiB).
pub const DEFAULT_BYTES: usize = 128 * 1024;

/// Size limits of one ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Text bytes the ring holds, like `log_buf_len`; reported by `SYSLOG_ACTION_SIZE_BUFFER`.
    pub bytes: usize,
    /// Most records the ring holds, like the kernel's descriptor ring (`log_buf_len / 32`).
    pub records: usize,
}

impl RingConfig {
    /// A ring of `bytes` bytes and `bytes / 32` records, as the kernel sizes its rings.
    pub fn with_bytes(bytes: usize) -> Self {
        RingConfig {
            bytes,
            records: (bytes / 32).max(1),
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
    rec: Record,
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

/// Told after every append; frontends use it to answer parked reads and poll handles.
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

struct Inner {
    records: VecDeque<Record>,
    first: u64,
    next: u64,
    bytes: usize,
    overwritten: u64,
}

/// A ring of kernel log records. One writer at a time (appends are serialised internally),
/// any number of readers.
pub struct Ring {
    config: RingConfig,
    inner: Mutex<Inner>,
    clear_seq: Mutex<u64>,
    syslog: Mutex<SyslogState>,
    listeners: RwLock<Vec<Arc<dyn Listener>>>,
    sleep_lock: Mutex<()>,
    sleep_cv: Condvar,
}

/// Bytes a record occupies in the ring: its text and dictionary plus a fixed header.
pub fn footprint(rec: &RecordRef<'_>) -> usize {
    (32 + rec.text.len() + rec.subsystem.len() + rec.device.len()).next_multiple_of(8)
}

impl Ring {
    /// An empty ring.
    pub fn new(config: RingConfig) -> Self {
        Ring {
            config,
            inner: Mutex::new(Inner {
                records: VecDeque::new(),
                first: 0,
                next: 0,
                bytes: 0,
                overwritten: 0,
            }),
            clear_seq: Mutex::new(0),
            syslog: Mutex::new(SyslogState::default()),
            listeners: RwLock::new(Vec::new()),
            sleep_lock: Mutex::new(()),
            sleep_cv: Condvar::new(),
        }
    }

    /// The limits this ring was made with.
    pub fn config(&self) -> RingConfig {
        self.config
    }

    /// Append a record (its `seq` is ignored) and return the seq it was given. The oldest
    /// whole records are dropped to make room.
    pub fn append(&self, rec: &RecordRef<'_>) -> u64 {
        let seq;
        let next;
        {
            let mut inner = self.inner.lock();
            let size = footprint(rec);
            while !inner.records.is_empty()
                && (inner.bytes + size > self.config.bytes
                    || inner.records.len() + 1 > self.config.records)
            {
                let old = inner.records.pop_front().expect("not empty");
                inner.bytes -= footprint(&old.as_ref());
                inner.first += 1;
                inner.overwritten += 1;
            }
            seq = inner.next;
            let mut owned = rec.to_owned();
            owned.seq = seq;
            inner.records.push_back(owned);
            inner.bytes += size;
            inner.next += 1;
            next = inner.next;
        }
        {
            let _g = self.sleep_lock.lock();
            self.sleep_cv.notify_all();
        }
        for l in self.listeners.read().iter() {
            l.appended(next);
        }
        seq
    }

    /// The oldest record still stored (`prb_first_valid_seq`); equals [`Ring::next_seq`] when
    /// the ring is empty.
    pub fn first_seq(&self) -> u64 {
        self.inner.lock().first
    }

    /// The seq the next append will get (`prb_next_seq`).
    pub fn next_seq(&self) -> u64 {
        self.inner.lock().next
    }

    /// Copy record `seq` into `buf`.
    pub fn read<'b>(&self, seq: u64, buf: &'b mut RecordBuf) -> Read<'b> {
        let inner = self.inner.lock();
        if seq >= inner.next {
            return Read::Empty;
        }
        if seq < inner.first {
            return Read::Overrun {
                lost: inner.first - seq,
                next: inner.first,
            };
        }
        let idx = usize::try_from(seq - inner.first).expect("index fits");
        buf.rec.clone_from(&inner.records[idx]);
        drop(inner);
        Read::Record(buf.rec.as_ref())
    }

    /// The clear point (`clear_seq`, A9.3): never moved by overwrites.
    pub fn clear_seq(&self) -> u64 {
        *self.clear_seq.lock()
    }

    /// Move the clear point (SYSLOG_ACTION_CLEAR sets it to [`Ring::next_seq`]).
    pub fn set_clear_seq(&self, seq: u64) {
        *self.clear_seq.lock() = seq;
    }

    /// The destructive syslog cursor and console level, locked.
    pub fn syslog_state(&self) -> MutexGuard<'_, SyslogState> {
        self.syslog.lock()
    }

    /// Register a listener told after every append.
    pub fn add_listener(&self, listener: Arc<dyn Listener>) {
        self.listeners.write().push(listener);
    }

    /// Block until a record with seq `>= seq` exists or `timeout` passes; returns whether one
    /// exists.
    pub fn wait_for(&self, seq: u64, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut g = self.sleep_lock.lock();
        loop {
            if self.next_seq() > seq {
                return true;
            }
            if self.sleep_cv.wait_until(&mut g, deadline).timed_out() {
                return self.next_seq() > seq;
            }
        }
    }

    /// Counters.
    pub fn stats(&self) -> RingStats {
        let inner = self.inner.lock();
        RingStats {
            appended: inner.next,
            overwritten: inner.overwritten,
            records: inner.records.len() as u64,
            bytes: inner.bytes as u64,
        }
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
}
