//! The state machines of the two ring files, one front per ring: [`RingFront`] for `kmsg`
//! (a cursor per open file, kmsg-semantics A3-A8) and [`ProcFront`] for `proc-kmsg` (the
//! ring's shared syslog cursor, C). [`super::fs`] resolves which ring a request is about and
//! maps these results to FUSE replies; everything a request does to a ring happens here.
//!
//! A front is generic over [`ReadReply`], where the answer to a READ goes: the wire's
//! [`ReplyData`] in the daemon, a recorder in the unit tests below, which drive parking,
//! append wake-ups, interrupts, shutdown, overruns and writes without a kernel or root.
//!
//! Concurrency: a front's mutex guards its open files' cursors, the parked READs and the
//! armed poll notifiers. A READ that finds nothing parks under that mutex; the ring's append
//! [`Listener`] takes the same mutex after the record is stored, so a record can never slip
//! between "nothing to read" and "parked". Replies and poll notifications are sent after the
//! mutex is released (fuse-notes §7). Appends never happen under the mutex (the listener would
//! deadlock).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;

use super::cursor::{Cursor, Step};
use super::interrupt::{Cancel, Interrupts};
use super::open_table::{FileKind, OpenEntry, OpenTable};
use super::wire::{Errno, PollNotifier, ReplyData};
use crate::frontends::proc_kmsg::{self, ReadResult};
use crate::ratelimit::{self, DevkmsgMode, RateLimit};
use crate::record::{self, RecordRef};
use crate::ring::registry::RingSlot;
use crate::ring::{Listener, RecordBuf};
use crate::sys;
use crate::syslog::printk_time;

/// Most open files of one ring (EMFILE beyond), so one container cannot take every slot of
/// the open-file table (`--max-open-files`, ENFILE beyond) from the others.
pub const MAX_OPEN_PER_RING: usize = 4096;

/// `default_message_loglevel` for writes without a `<N>` prefix (A6.5).
pub const DEFAULT_WRITE_LEVEL: u8 = 4;

/// prio of the ratelimit report: facility kern, level warning (A7.6).
pub const SUPPRESSED_PRIO: u16 = 4;

/// Where the answer to one READ goes.
pub trait ReadReply: Send + 'static {
    /// Answer with `data`.
    fn data(self, data: &[u8]);
    /// Answer with `-errno`.
    fn error(self, errno: Errno);
}

impl ReadReply for ReplyData {
    fn data(self, data: &[u8]) {
        ReplyData::data(self, data);
    }
    fn error(self, errno: Errno) {
        ReplyData::error(self, errno);
    }
}

/// The parts of a READ request a ring file needs.
#[derive(Debug, Clone, Copy)]
pub struct ReadArgs {
    /// The request id (interrupts name it).
    pub unique: u64,
    /// The open file.
    pub fh: u64,
    /// The file position the kernel keeps (kmsg: the sequence number the reader expects).
    pub offset: u64,
    /// The reader's buffer size.
    pub size: u32,
    /// `O_NONBLOCK` as the READ carries it (fcntl after open counts).
    pub nonblock: bool,
}

/// One open `kmsg` file.
struct HandleState {
    cursor: Cursor,
    read: bool,
    write: bool,
    notifier: Option<PollNotifier>,
    rl: RateLimit,
    /// The writer whose lines were suppressed, named in the release message (E8).
    comm: Option<String>,
    /// Left by the previous daemon: the first READ picks the stored cursor its offset matches
    /// ([`OpenEntry::resume_at`]).
    adopted: bool,
}

impl HandleState {
    fn new(cursor: Cursor, read: bool, write: bool) -> Self {
        HandleState {
            cursor,
            read,
            write,
            notifier: None,
            rl: RateLimit::default(),
            comm: None,
            adopted: false,
        }
    }
}

/// A READ waiting for a record.
pub struct Parked<R> {
    /// The open file (none for `proc-kmsg`, whose cursor is the ring's).
    fh: u64,
    unique: u64,
    size: usize,
    reply: R,
}

enum Answer {
    Data(Vec<u8>),
    Err(Errno),
}

/// Send the answers and poll notifications a front collected under its lock, after the lock
/// was released (replies must never be sent with it held: fuse-notes §7).
fn deliver<R: ReadReply>(answers: Vec<(R, Answer)>, notes: Vec<PollNotifier>) {
    for (reply, a) in answers {
        match a {
            Answer::Data(d) => reply.data(&d),
            Answer::Err(e) => reply.error(e),
        }
    }
    for n in notes {
        if let Err(e) = n.notify() {
            log::debug!("poll notification failed: {e}");
        }
    }
}

/// Remove the parked READ with request id `unique`, if it is still parked.
fn take_parked<R>(parked: &mut Vec<Parked<R>>, unique: u64) -> Option<Parked<R>> {
    let i = parked.iter().position(|p| p.unique == unique)?;
    Some(parked.swap_remove(i))
}

/// Answer every READ in `parked` with EINTR (shutdown) and forget their interrupt ids.
fn interrupt_all<R: ReadReply>(parked: &mut Vec<Parked<R>>, interrupts: &Interrupts) {
    for p in std::mem::take(parked) {
        interrupts.unpark(p.unique);
        p.reply.error(Errno::EINTR);
    }
}

/// A handle for a new open file of `slot` whose ring already has `open_of_ring` of them,
/// recorded in `table`.
fn insert_entry(
    table: &OpenTable,
    open_of_ring: usize,
    slot: &RingSlot,
    kind: FileKind,
    read: bool,
    write: bool,
    cursor: Cursor,
) -> Result<u64, Errno> {
    if open_of_ring >= MAX_OPEN_PER_RING {
        return Err(Errno::EMFILE);
    }
    let serial = slot.ring.meta()[crate::restart::keeper::META_SERIAL].load(Ordering::Relaxed);
    table
        .insert(&OpenEntry::new(kind, serial, read, write, cursor))
        .ok_or(Errno::ENFILE)
}

/// The ring listener of a front. It holds the front weakly: the registry owns the ring, the
/// filesystem owns the front, and a dropped front must not be kept alive by its ring.
struct FrontListener<S>(Weak<Front<S>>);

impl<S: FileState> Listener for FrontListener<S> {
    fn appended(&self, _next_seq: u64) {
        if let Some(f) = self.0.upgrade() {
            f.on_append();
        }
    }
}

thread_local! {
    /// The record and output buffers of an immediate READ, reused across READs of a thread.
    static SCRATCH: RefCell<(RecordBuf, Vec<u8>)> =
        RefCell::new((RecordBuf::new(), Vec::with_capacity(8192)));
}

/// What a front keeps under its lock, per kind of file ([`KmsgState`], [`ProcKmsgState`]).
pub trait FileState: Send + 'static {
    /// Where the answers of this front's READs go.
    type Reply: ReadReply;
    /// The READs parked here.
    fn parked(&mut self) -> &mut Vec<Parked<Self::Reply>>;
    /// A record was appended to the front's ring.
    fn on_append(front: &Front<Self>)
    where
        Self: Sized;
}

/// The FUSE side of one ring for one kind of file: the state under the lock, and what every
/// kind shares.
pub struct Front<S> {
    slot: Arc<RingSlot>,
    state: Mutex<S>,
    interrupts: Arc<Interrupts>,
    /// Where every open file (and a `kmsg` file's cursor) is also stored, before each reply
    /// that changes it.
    table: Arc<OpenTable>,
}

impl<S> std::fmt::Debug for Front<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front")
            .field("slot", &self.slot.key)
            .finish()
    }
}

impl<S: FileState> Front<S> {
    /// The front of `slot` with `state`, woken by the ring's appends.
    fn attach_with(
        slot: &Arc<RingSlot>,
        interrupts: &Arc<Interrupts>,
        table: &Arc<OpenTable>,
        state: S,
    ) -> Arc<Self> {
        let front = Arc::new(Front {
            slot: Arc::clone(slot),
            state: Mutex::new(state),
            interrupts: Arc::clone(interrupts),
            table: Arc::clone(table),
        });
        slot.ring
            .add_listener(Arc::new(FrontListener(Arc::downgrade(&front))));
        front
    }

    /// The ring this front serves.
    pub fn slot(&self) -> &Arc<RingSlot> {
        &self.slot
    }

    /// READs parked here.
    pub fn parked(&self) -> usize {
        self.state.lock().parked().len()
    }

    /// Answer every parked READ with EINTR (shutdown).
    pub fn interrupt_all(&self) {
        interrupt_all(self.state.lock().parked(), &self.interrupts);
    }

    /// Answer the parked READs that can complete now and fire armed poll notifiers (what the
    /// ring's append listener does; also the drain of a hand-over, where appends come from
    /// the successor and no listener fires).
    pub fn on_append(&self) {
        S::on_append(self);
    }

    /// Park `p`, or answer it EINTR: after shutdown began (read under the lock, so
    /// [`Self::interrupt_all`] cannot miss it) or when its interrupt already arrived.
    fn park_or_eintr(
        self: &Arc<Self>,
        mut st: parking_lot::MutexGuard<'_, S>,
        p: Parked<S::Reply>,
        shutting_down: &AtomicBool,
    ) {
        let owner = Arc::clone(self) as Arc<dyn Cancel>;
        if shutting_down.load(Ordering::SeqCst) || !self.interrupts.park(p.unique, owner) {
            drop(st);
            return p.reply.error(Errno::EINTR);
        }
        st.parked().push(p);
    }
}

impl<S: FileState> Cancel for Front<S> {
    fn cancel(&self, unique: u64) {
        // The lock is released at the end of this statement, before the reply goes out.
        let p = take_parked(self.state.lock().parked(), unique);
        if let Some(p) = p {
            p.reply.error(Errno::EINTR);
        }
    }
}

/// The state of a `kmsg` front: a cursor per open file, parked READs, poll notifiers.
pub struct KmsgState<R> {
    handles: HashMap<u64, HandleState>,
    parked: Vec<Parked<R>>,
    /// Handles with a poll notifier armed.
    armed: usize,
}

impl<R: ReadReply> FileState for KmsgState<R> {
    type Reply = R;
    fn parked(&mut self) -> &mut Vec<Parked<R>> {
        &mut self.parked
    }
    fn on_append(front: &Front<Self>) {
        front.answer_parked();
    }
}

/// The `kmsg` side of one ring.
pub type RingFront<R = ReplyData> = Front<KmsgState<R>>;

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The line is in the ring.
    Appended,
    /// The ratelimit (or `printk_devkmsg=off`) discarded it; the write still succeeds (A6.2).
    Suppressed,
}

impl<R: ReadReply> RingFront<R> {
    /// The front of `slot`, woken by the ring's appends.
    pub fn attach(
        slot: &Arc<RingSlot>,
        interrupts: &Arc<Interrupts>,
        table: &Arc<OpenTable>,
    ) -> Arc<Self> {
        let state = KmsgState {
            handles: HashMap::new(),
            parked: Vec::new(),
            armed: 0,
        };
        Front::attach_with(slot, interrupts, table, state)
    }

    /// Open a file at the oldest record (A3.1): its handle, recorded in the open-file table.
    /// EMFILE past [`MAX_OPEN_PER_RING`], ENFILE when the table is full.
    pub fn open(&self, read: bool, write: bool) -> Result<u64, Errno> {
        let mut st = self.state.lock();
        let cursor = Cursor::at_open(self.slot.ring.first_seq());
        let fh = insert_entry(
            &self.table,
            st.handles.len(),
            &self.slot,
            FileKind::Kmsg,
            read,
            write,
            cursor,
        )?;
        st.handles.insert(fh, HandleState::new(cursor, read, write));
        drop(st);
        if read {
            self.slot.readers.fetch_add(1, Ordering::Relaxed);
        }
        Ok(fh)
    }

    /// Take over file `fh` a previous daemon left in the table.
    pub fn adopt(&self, fh: u64, e: &OpenEntry) {
        let mut h = HandleState::new(e.cursor, e.read, e.write);
        h.adopted = true;
        self.state.lock().handles.insert(fh, h);
        if e.read {
            self.slot.readers.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// READ of `kmsg` (A3): answer at once from the file's cursor, or park until a record
    /// arrives. The cursor is stored in the table before the answer is sent: a crash after the
    /// reply must not repeat the record, one before it must not lose it (open_table, "Exactly
    /// once"). `shutting_down` is read under the lock, so a READ parked concurrently with
    /// [`Self::interrupt_all`] is still answered.
    pub fn read(self: &Arc<Self>, r: ReadArgs, reply: R, shutting_down: &AtomicBool) {
        let ReadArgs {
            unique,
            fh,
            offset,
            size,
            nonblock,
        } = r;
        let ring = &self.slot.ring;
        let mut st = self.state.lock();
        let first = ring.first_seq();
        let Some(h) = st.handles.get_mut(&fh) else {
            drop(st);
            return reply.error(Errno::EBADF);
        };
        let stored = h.cursor;
        // The table, not the copy taken at adoption: a draining predecessor may have answered
        // a READ of this file since (and stored the cursor before its reply).
        if std::mem::take(&mut h.adopted) {
            if let Some(c) = self.table.get(fh).and_then(|e| e.resume_at(offset)) {
                h.cursor = c;
            }
        }
        h.cursor.sync(offset, first);
        let synced = h.cursor;
        let step = SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let (buf, out) = &mut *s;
            match h.cursor.step(ring, size as usize, buf, out) {
                Step::Data(_) => Ok(std::mem::take(out)),
                other => Err(other),
            }
        });
        if h.cursor != stored {
            self.table.advance(fh, synced, h.cursor);
        }
        match step {
            Ok(data) => {
                drop(st);
                reply.data(&data);
                self.interrupts.answered(unique);
                SCRATCH.with(|s| {
                    let mut data = data;
                    data.clear();
                    s.borrow_mut().1 = data;
                });
            }
            Err(Step::Overrun) => {
                drop(st);
                reply.error(Errno::EPIPE);
            }
            Err(Step::TooSmall) => {
                drop(st);
                reply.error(Errno::EINVAL);
            }
            Err(_) if nonblock => {
                // O_NONBLOCK as the READ carries it: fcntl(F_SETFL) after open counts (A3.2, E4).
                drop(st);
                reply.error(Errno::EAGAIN);
            }
            Err(_) => {
                let p = Parked {
                    fh,
                    unique,
                    size: size as usize,
                    reply,
                };
                self.park_or_eintr(st, p, shutting_down);
            }
        }
    }

    /// A record was appended: answer parked READs that can now complete and fire armed poll
    /// notifiers (A3.2, A5, E3).
    fn answer_parked(&self) {
        let mut answers: Vec<(R, Answer)> = Vec::new();
        let mut notes: Vec<PollNotifier> = Vec::new();
        {
            let mut st = self.state.lock();
            if st.parked.is_empty() && st.armed == 0 {
                return;
            }
            let parked = std::mem::take(&mut st.parked);
            let mut buf = RecordBuf::new();
            for p in parked {
                let Some(h) = st.handles.get_mut(&p.fh) else {
                    self.interrupts.unpark(p.unique);
                    answers.push((p.reply, Answer::Err(Errno::EBADF)));
                    continue;
                };
                let mut out = Vec::new();
                let from = h.cursor;
                let a = match h.cursor.step(&self.slot.ring, p.size, &mut buf, &mut out) {
                    Step::Empty => {
                        st.parked.push(p);
                        continue;
                    }
                    Step::Data(_) => Answer::Data(out),
                    Step::Overrun => Answer::Err(Errno::EPIPE),
                    Step::TooSmall => Answer::Err(Errno::EINVAL),
                };
                self.table.advance(p.fh, from, h.cursor);
                self.interrupts.unpark(p.unique);
                answers.push((p.reply, a));
            }
            if st.armed > 0 {
                notes.extend(st.handles.values_mut().filter_map(|h| h.notifier.take()));
                st.armed = 0;
            }
        }
        deliver(answers, notes);
    }

    /// `lseek(SEEK_END)` of `fh` (A4.2): after the newest record. The file size the kernel
    /// then adds 1 to, or `None` for an unknown handle.
    pub fn seek_end(&self, fh: u64) -> Option<u64> {
        let mut st = self.state.lock();
        let next = self.slot.ring.next_seq();
        let h = st.handles.get_mut(&fh)?;
        // An adopted handle's stored cursor is the one the kernel's f_pos follows once this
        // reply arrives.
        h.adopted = false;
        let from = h.cursor;
        let size = h.cursor.seek_end(next);
        self.table.advance(fh, from, h.cursor);
        Some(size)
    }

    /// `lseek(SEEK_DATA)` of `fh` (A4.3): at the first record after the last clear.
    pub fn seek_data(&self, fh: u64) -> Result<u64, Errno> {
        let mut st = self.state.lock();
        let clear = self.slot.ring.clear_seq();
        let h = st.handles.get_mut(&fh).ok_or(Errno::EBADF)?;
        h.adopted = false;
        let from = h.cursor;
        let pos = h.cursor.seek_data(clear);
        self.table.advance(fh, from, h.cursor);
        Ok(pos)
    }

    /// POLL of `fh` (A5): the ready mask, arming `notifier` (the kernel's poll handle) for the
    /// next append if one is given. 0 for an unknown handle.
    pub fn poll(&self, fh: u64, notifier: Option<PollNotifier>) -> u32 {
        let mut st = self.state.lock();
        let ring = &self.slot.ring;
        let (first, next) = (ring.first_seq(), ring.next_seq());
        let Some(h) = st.handles.get_mut(&fh) else {
            return 0;
        };
        let mut newly_armed = false;
        if let Some(n) = notifier {
            newly_armed = h.notifier.is_none();
            self.table.set_poll_handle(fh, n.kh());
            h.notifier = Some(n);
        }
        let mask = h.cursor.poll_mask(first, next);
        if newly_armed {
            st.armed += 1;
        }
        mask
    }

    /// WRITE to `fh` (A6): one record from `data` as the device parses it, unless the
    /// ratelimit of `mode` discards it. EINVAL for a line longer than the device takes or
    /// malformed, EBADF for a file not opened for writing.
    pub fn write(&self, fh: u64, data: &[u8], mode: DevkmsgMode) -> Result<WriteOutcome, Errno> {
        // Longer than PRINTKRB_RECORD_MAX: EINVAL before anything else (A6.1).
        if data.len() > record::WRITE_MAX {
            return Err(Errno::EINVAL);
        }
        let allowed = {
            let mut st = self.state.lock();
            let h = st.handles.get_mut(&fh).ok_or(Errno::EBADF)?;
            if !h.write {
                return Err(Errno::EBADF);
            }
            match mode {
                DevkmsgMode::On => true,
                // Only files opened before a switch to off could get here (A6.2); the mode is
                // fixed per daemon, so this is unreachable, but discard like the kernel.
                DevkmsgMode::Off => false,
                DevkmsgMode::Ratelimit => h.rl.allow(Instant::now()),
            }
        };
        if !allowed {
            self.slot.writes_dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(WriteOutcome::Suppressed);
        }
        let w = record::parse_user_write(data, DEFAULT_WRITE_LEVEL).map_err(|_| Errno::EINVAL)?;
        self.append_now(w.prio, w.text);
        self.slot.writes.fetch_add(1, Ordering::Relaxed);
        Ok(WriteOutcome::Appended)
    }

    /// Name the writer of `fh` whose output was suppressed, for the message at its release.
    pub fn note_suppressed_writer(&self, fh: u64, comm: String) {
        if let Some(h) = self.state.lock().handles.get_mut(&fh) {
            h.comm = Some(comm);
        }
    }

    /// RELEASE of `fh`: forget the file; if its writes were suppressed, log how many, as the
    /// device does at close (A6.2, E8). False for an unknown handle.
    pub fn close(&self, fh: u64) -> bool {
        let h = {
            let mut st = self.state.lock();
            let h = st.handles.remove(&fh);
            self.table.remove(fh);
            if h.as_ref().is_some_and(|h| h.notifier.is_some()) {
                st.armed = st.armed.saturating_sub(1);
            }
            h
        };
        let Some(h) = h else { return false };
        if h.rl.missed() > 0 {
            let comm = h.comm.as_deref().unwrap_or("?");
            let text = ratelimit::suppressed_message(comm, h.rl.missed());
            self.append_now(SUPPRESSED_PRIO, text.as_bytes());
        }
        if h.read {
            self.slot.readers.fetch_sub(1, Ordering::Relaxed);
        }
        true
    }

    /// Append one record stamped now (never under the front's lock: the listener takes it).
    fn append_now(&self, prio: u16, text: &[u8]) {
        let now = sys::clock::monotonic_usec();
        self.slot.ring.append(&RecordRef::plain(now, prio, text));
    }
}

/// The state of a `proc-kmsg` front: parked READs and armed poll notifiers (the cursor is
/// the ring's syslog cursor, shared with the `syslog(2)` agent).
pub struct ProcKmsgState<R> {
    parked: Vec<Parked<R>>,
    notifiers: HashMap<u64, PollNotifier>,
    /// Open files of this `proc-kmsg`.
    open: usize,
}

impl<R: ReadReply> FileState for ProcKmsgState<R> {
    type Reply = R;
    fn parked(&mut self) -> &mut Vec<Parked<R>> {
        &mut self.parked
    }
    fn on_append(front: &Front<Self>) {
        front.answer_parked();
    }
}

/// The `proc-kmsg` side of one ring: the destructive stream on its syslog cursor.
pub type ProcFront<R = ReplyData> = Front<ProcKmsgState<R>>;

impl<R: ReadReply> ProcFront<R> {
    /// The front of `slot`, woken by the ring's appends.
    pub fn attach(
        slot: &Arc<RingSlot>,
        interrupts: &Arc<Interrupts>,
        table: &Arc<OpenTable>,
    ) -> Arc<Self> {
        let state = ProcKmsgState {
            parked: Vec::new(),
            notifiers: HashMap::new(),
            open: 0,
        };
        Front::attach_with(slot, interrupts, table, state)
    }

    /// Open a file (the caller checked C1/C2): its handle, recorded in the open-file table.
    pub fn open(&self) -> Result<u64, Errno> {
        let mut st = self.state.lock();
        let fh = insert_entry(
            &self.table,
            st.open,
            &self.slot,
            FileKind::ProcKmsg,
            true,
            false,
            Cursor::at_open(0),
        )?;
        st.open += 1;
        drop(st);
        self.slot.readers.fetch_add(1, Ordering::Relaxed);
        Ok(fh)
    }

    /// Take over a file a previous daemon left in the table.
    pub fn adopt(&self) {
        self.state.lock().open += 1;
        self.slot.readers.fetch_add(1, Ordering::Relaxed);
    }

    /// READ of `proc-kmsg` (C3, C4): consume from the syslog cursor, or park until a record
    /// arrives. `shutting_down` as for [`RingFront::read`].
    pub fn read(self: &Arc<Self>, r: ReadArgs, reply: R, shutting_down: &AtomicBool) {
        let st = self.state.lock();
        match proc_kmsg::read(&self.slot.ring, r.size as usize, r.nonblock, printk_time()) {
            ReadResult::Data(d) => {
                drop(st);
                reply.data(&d);
                self.interrupts.answered(r.unique);
            }
            ReadResult::Again => {
                drop(st);
                reply.error(Errno::EAGAIN);
            }
            ReadResult::Error(e) => {
                drop(st);
                reply.error(Errno::from_i32(e));
            }
            ReadResult::WouldBlock => {
                let p = Parked {
                    fh: r.fh,
                    unique: r.unique,
                    size: r.size as usize,
                    reply,
                };
                self.park_or_eintr(st, p, shutting_down);
            }
        }
    }

    /// A record was appended: answer parked READs and fire every armed poll notifier.
    fn answer_parked(&self) {
        let mut answers: Vec<(R, Answer)> = Vec::new();
        let notes: Vec<PollNotifier>;
        {
            let mut st = self.state.lock();
            if st.parked.is_empty() && st.notifiers.is_empty() {
                return;
            }
            let time = printk_time();
            for p in std::mem::take(&mut st.parked) {
                let a = match proc_kmsg::read(&self.slot.ring, p.size, false, time) {
                    ReadResult::Data(d) => Answer::Data(d),
                    ReadResult::Error(e) => Answer::Err(Errno::from_i32(e)),
                    // Another reader (or the agent) consumed it first.
                    ReadResult::WouldBlock | ReadResult::Again => {
                        st.parked.push(p);
                        continue;
                    }
                };
                self.interrupts.unpark(p.unique);
                answers.push((p.reply, a));
            }
            notes = st.notifiers.drain().map(|(_, n)| n).collect();
        }
        deliver(answers, notes);
    }

    /// POLL of `fh`: readable while unread records exist, never POLLERR (C5); arms
    /// `notifier` for the next append if one is given.
    pub fn poll(&self, fh: u64, notifier: Option<PollNotifier>) -> bool {
        let mut st = self.state.lock();
        if let Some(n) = notifier {
            self.table.set_poll_handle(fh, n.kh());
            st.notifiers.insert(fh, n);
        }
        proc_kmsg::readable(&self.slot.ring)
    }

    /// RELEASE of `fh`.
    pub fn close(&self, fh: u64) {
        {
            let mut st = self.state.lock();
            st.notifiers.remove(&fh);
            st.open = st.open.saturating_sub(1);
            self.table.remove(fh);
        }
        self.slot.readers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    //! The fronts driven as the FUSE loop drives them, with a recorder where the kernel's
    //! reply would go: no mount, no root.

    use super::*;
    use crate::ring::registry::{NsKey, Registry};
    use crate::ring::RingConfig;
    use crate::sys::proc::NsKind;

    type Answered = (u64, Result<Vec<u8>, Errno>);

    /// Where the answers of one test's READs go, in order.
    #[derive(Clone, Default)]
    struct Answers(Arc<Mutex<Vec<Answered>>>);

    struct Recorder {
        unique: u64,
        answers: Answers,
    }

    impl ReadReply for Recorder {
        fn data(self, data: &[u8]) {
            self.answers.0.lock().push((self.unique, Ok(data.to_vec())));
        }
        fn error(self, errno: Errno) {
            self.answers.0.lock().push((self.unique, Err(errno)));
        }
    }

    struct Rig {
        registry: Registry,
        interrupts: Arc<Interrupts>,
        table: Arc<OpenTable>,
        answers: Answers,
        shutting_down: AtomicBool,
        next_unique: u64,
    }

    impl Rig {
        fn new(ring_bytes: usize) -> Rig {
            let host = NsKey {
                kind: NsKind::Net,
                inode: 1,
            };
            Rig {
                registry: Registry::new(RingConfig::with_bytes(ring_bytes), host, None),
                interrupts: Arc::new(Interrupts::new(false)),
                table: Arc::new(OpenTable::new(MAX_OPEN_PER_RING + 8)),
                answers: Answers::default(),
                shutting_down: AtomicBool::new(false),
                next_unique: 1,
            }
        }

        fn kmsg(&self) -> Arc<RingFront<Recorder>> {
            RingFront::attach(self.registry.host(), &self.interrupts, &self.table)
        }

        fn proc_kmsg(&self) -> Arc<ProcFront<Recorder>> {
            ProcFront::attach(self.registry.host(), &self.interrupts, &self.table)
        }

        fn args(&mut self, fh: u64, offset: u64, size: u32, nonblock: bool) -> ReadArgs {
            let unique = self.next_unique;
            self.next_unique += 1;
            ReadArgs {
                unique,
                fh,
                offset,
                size,
                nonblock,
            }
        }

        fn recorder(&self, r: &ReadArgs) -> Recorder {
            Recorder {
                unique: r.unique,
                answers: self.answers.clone(),
            }
        }

        /// READ `fh` of `front` at `offset`; the request id.
        fn read(
            &mut self,
            front: &Arc<RingFront<Recorder>>,
            fh: u64,
            offset: u64,
            nonblock: bool,
        ) -> u64 {
            let r = self.args(fh, offset, 4096, nonblock);
            front.read(r, self.recorder(&r), &self.shutting_down);
            r.unique
        }

        fn read_proc(&mut self, front: &Arc<ProcFront<Recorder>>, size: u32, nb: bool) -> u64 {
            let r = self.args(1, 0, size, nb);
            front.read(r, self.recorder(&r), &self.shutting_down);
            r.unique
        }

        fn append(&self, text: &str) {
            let rec = RecordRef::plain(1_000_000, 6, text.as_bytes());
            self.registry.host().ring.append(&rec);
        }

        /// The answers since the last call.
        fn answers(&self) -> Vec<Answered> {
            std::mem::take(&mut *self.answers.0.lock())
        }
    }

    /// Every record of `ring`, oldest first: (prio, text).
    fn records(ring: &crate::ring::Ring) -> Vec<(u16, String)> {
        let mut reader = crate::ring::Reader::at_oldest(ring);
        let mut buf = RecordBuf::new();
        let mut out = Vec::new();
        while let crate::ring::Read::Record(r) = reader.next(ring, &mut buf) {
            out.push((r.prio, String::from_utf8_lossy(r.text).into_owned()));
        }
        out
    }

    fn text(answer: &Answered) -> String {
        let data = answer.1.as_ref().expect("data, not an error");
        String::from_utf8(data.clone()).unwrap()
    }

    #[test]
    fn a_read_with_nothing_to_read_parks_and_the_next_append_answers_it() {
        let mut rig = Rig::new(1 << 16);
        let front = rig.kmsg();
        let fh = front.open(true, false).unwrap();
        let nb = rig.read(&front, fh, 0, true);
        assert_eq!(rig.answers(), vec![(nb, Err(Errno::EAGAIN))]);
        let blocking = rig.read(&front, fh, 0, false);
        assert!(rig.answers().is_empty(), "answered with nothing to read");
        assert_eq!(front.parked(), 1);
        rig.append("first");
        let got = rig.answers();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, blocking);
        assert!(text(&got[0]).starts_with("6,0,"), "{}", text(&got[0]));
        assert!(text(&got[0]).ends_with(";first\n"));
        assert_eq!(front.parked(), 0);
        // The stored cursor moved before the answer (a successor must not repeat it).
        assert_eq!(rig.table.get(fh).unwrap().cursor.seq, 1);
        // The next READ (at the new f_pos) gets the next record, not the same one.
        let pos = got[0].1.as_ref().unwrap().len() as u64;
        rig.append("second");
        let u = rig.read(&front, fh, pos, true);
        let got = rig.answers();
        assert_eq!(got[0].0, u);
        assert!(text(&got[0]).ends_with(";second\n"));
    }

    #[test]
    fn every_reader_of_a_ring_is_answered_by_one_append() {
        let mut rig = Rig::new(1 << 16);
        let front = rig.kmsg();
        let fhs: Vec<u64> = (0..5).map(|_| front.open(true, false).unwrap()).collect();
        let ids: Vec<u64> = fhs
            .iter()
            .map(|&fh| rig.read(&front, fh, 0, false))
            .collect();
        assert_eq!(front.parked(), 5);
        rig.append("all");
        let mut got: Vec<u64> = rig.answers().iter().map(|a| a.0).collect();
        got.sort_unstable();
        assert_eq!(got, ids);
    }

    #[test]
    fn an_interrupt_answers_a_parked_read_eintr_once() {
        let mut rig = Rig::new(1 << 16);
        let front = rig.kmsg();
        let fh = front.open(true, false).unwrap();
        let u = rig.read(&front, fh, 0, false);
        rig.interrupts.interrupt(u);
        assert_eq!(rig.answers(), vec![(u, Err(Errno::EINTR))]);
        assert_eq!(front.parked(), 0);
        rig.append("late");
        assert!(
            rig.answers().is_empty(),
            "an interrupted READ was answered twice"
        );
    }

    #[test]
    fn shutdown_answers_parked_reads_and_refuses_to_park_more() {
        let mut rig = Rig::new(1 << 16);
        let front = rig.kmsg();
        let fh = front.open(true, false).unwrap();
        let u = rig.read(&front, fh, 0, false);
        rig.shutting_down.store(true, Ordering::SeqCst);
        front.interrupt_all();
        assert_eq!(rig.answers(), vec![(u, Err(Errno::EINTR))]);
        let v = rig.read(&front, fh, 0, false);
        assert_eq!(rig.answers(), vec![(v, Err(Errno::EINTR))]);
        assert_eq!(front.parked(), 0);
    }

    #[test]
    fn a_reader_overtaken_by_the_ring_gets_epipe_then_the_oldest_record() {
        let mut rig = Rig::new(1024);
        let front = rig.kmsg();
        let fh = front.open(true, false).unwrap();
        for i in 0..200 {
            rig.append(&format!("record {i:03} padding padding"));
        }
        let u = rig.read(&front, fh, 0, true);
        assert_eq!(rig.answers(), vec![(u, Err(Errno::EPIPE))]);
        let first = rig.registry.host().ring.first_seq();
        assert!(first > 0);
        // EPIPE consumes nothing: the next READ returns the oldest record (A3.3).
        let v = rig.read(&front, fh, 0, true);
        let got = rig.answers();
        assert_eq!(got[0].0, v);
        assert!(text(&got[0]).starts_with(&format!("6,{first},")));
    }

    #[test]
    fn a_buffer_smaller_than_the_record_is_einval_and_consumes_it_as_the_device_does() {
        let mut rig = Rig::new(1 << 16);
        let front = rig.kmsg();
        let fh = front.open(true, false).unwrap();
        rig.append("a record longer than eight bytes");
        rig.append("next");
        let r = rig.args(fh, 0, 8, true);
        front.read(r, rig.recorder(&r), &rig.shutting_down);
        assert_eq!(rig.answers(), vec![(r.unique, Err(Errno::EINVAL))]);
        // The record is lost for this reader, the next READ gets seq+1 (A3.4, A3.5).
        let u = rig.read(&front, fh, 0, true);
        let got = rig.answers();
        assert_eq!(got[0].0, u);
        assert!(text(&got[0]).starts_with("6,1,"), "{}", text(&got[0]));
    }

    #[test]
    fn a_read_of_a_released_file_is_ebadf_even_when_parked() {
        let mut rig = Rig::new(1 << 16);
        let front = rig.kmsg();
        let fh = front.open(true, false).unwrap();
        let u = rig.read(&front, fh, 0, false);
        assert!(front.close(fh));
        assert!(!front.close(fh), "a handle closed twice");
        rig.append("after close");
        assert_eq!(rig.answers(), vec![(u, Err(Errno::EBADF))]);
        let v = rig.read(&front, fh, 0, true);
        assert_eq!(rig.answers(), vec![(v, Err(Errno::EBADF))]);
        assert!(
            rig.table.get(fh).is_none(),
            "the table still holds a closed file"
        );
        assert_eq!(rig.registry.host().readers.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn writes_follow_the_device_rules() {
        let rig = Rig::new(1 << 16);
        let front = rig.kmsg();
        let ro = front.open(true, false).unwrap();
        let rw = front.open(true, true).unwrap();
        assert_eq!(front.write(ro, b"x", DevkmsgMode::On), Err(Errno::EBADF));
        let long = vec![b'a'; record::WRITE_MAX + 1];
        assert_eq!(front.write(rw, &long, DevkmsgMode::On), Err(Errno::EINVAL));
        assert_eq!(
            front.write(rw, b"<3>hello\n", DevkmsgMode::On),
            Ok(WriteOutcome::Appended)
        );
        assert_eq!(
            front.write(rw, b"no level", DevkmsgMode::On),
            Ok(WriteOutcome::Appended)
        );
        assert_eq!(
            records(&rig.registry.host().ring),
            // Facility 0 becomes LOG_USER (1), A6.3.
            vec![
                (8 | 3, "hello".to_string()),
                (8 | u16::from(DEFAULT_WRITE_LEVEL), "no level".to_string())
            ]
        );
        assert_eq!(rig.registry.host().writes.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn suppressed_writes_are_counted_and_reported_at_release() {
        let rig = Rig::new(1 << 16);
        let front = rig.kmsg();
        let fh = front.open(false, true).unwrap();
        let outcomes: Vec<WriteOutcome> = (0..30)
            .map(|_| front.write(fh, b"flood", DevkmsgMode::Ratelimit).unwrap())
            .collect();
        let dropped = outcomes
            .iter()
            .filter(|o| **o == WriteOutcome::Suppressed)
            .count();
        assert!(dropped > 0, "the ratelimit let 30 lines through at once");
        let slot = rig.registry.host();
        assert_eq!(slot.writes_dropped.load(Ordering::Relaxed), dropped as u64);
        front.note_suppressed_writer(fh, "flooder".into());
        assert!(front.close(fh));
        let (prio, text) = records(&slot.ring).pop().expect("the release message");
        assert!(
            text.contains("flooder") && text.contains(&dropped.to_string()),
            "{text}"
        );
        assert_eq!(prio, SUPPRESSED_PRIO);
    }

    #[test]
    fn one_ring_opens_at_most_max_open_per_ring_files() {
        let rig = Rig::new(1 << 12);
        let front = rig.kmsg();
        for _ in 0..MAX_OPEN_PER_RING {
            front.open(true, false).unwrap();
        }
        assert_eq!(front.open(true, false), Err(Errno::EMFILE));
    }

    #[test]
    fn seek_data_and_seek_end_move_the_stored_cursor() {
        let mut rig = Rig::new(1 << 16);
        let front = rig.kmsg();
        let fh = front.open(true, false).unwrap();
        rig.append("one");
        rig.append("two");
        let end = front.seek_end(fh).unwrap();
        assert_eq!(rig.table.get(fh).unwrap().cursor.seq, 2);
        let u = rig.read(&front, fh, end + 1, true);
        assert_eq!(rig.answers(), vec![(u, Err(Errno::EAGAIN))]);
        let pos = front.seek_data(fh).unwrap();
        assert_eq!(rig.table.get(fh).unwrap().cursor.seq, 0);
        let v = rig.read(&front, fh, pos, true);
        let got = rig.answers();
        assert_eq!(got[0].0, v);
        assert!(text(&got[0]).ends_with(";one\n"));
        assert_eq!(front.seek_data(fh + 1000), Err(Errno::EBADF));
        assert_eq!(front.seek_end(fh + 1000), None);
    }

    #[test]
    fn poll_is_ready_only_with_a_record_to_read() {
        let rig = Rig::new(1 << 16);
        let front = rig.kmsg();
        let fh = front.open(true, false).unwrap();
        let readable = (libc::POLLIN | libc::POLLRDNORM) as u32;
        assert_eq!(front.poll(fh, None) & readable, 0);
        rig.append("ready");
        assert_eq!(front.poll(fh, None) & readable, readable);
        assert_eq!(front.poll(fh + 1000, None), 0);
    }

    #[test]
    fn proc_kmsg_reads_consume_and_a_parked_one_is_answered_once() {
        let mut rig = Rig::new(1 << 16);
        let a = rig.proc_kmsg();
        let fh = a.open().unwrap();
        let u = rig.read_proc(&a, 4096, true);
        assert_eq!(rig.answers(), vec![(u, Err(Errno::EAGAIN))]);
        let p1 = rig.read_proc(&a, 4096, false);
        let p2 = rig.read_proc(&a, 4096, false);
        assert_eq!(a.parked(), 2);
        rig.append("only one");
        // One record, two parked readers: the stream is destructive, one of them gets it.
        let got = rig.answers();
        assert_eq!(got.len(), 1, "{got:?}");
        assert!([p1, p2].contains(&got[0].0));
        assert!(text(&got[0]).contains("only one"));
        assert!(!a.poll(fh, None), "consumed, yet readable");
        assert_eq!(a.parked(), 1);
        a.interrupt_all();
        assert_eq!(rig.answers().len(), 1);
        a.close(fh);
        assert_eq!(rig.registry.host().readers.load(Ordering::Relaxed), 0);
    }
}
