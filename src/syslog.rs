//! `syslog(2)` actions 0–10 as pure logic over one [`Ring`] (kmsg-semantics B1–B6).
//!
//! The kernel keeps one `clear_seq`, one destructive cursor (`syslog_seq`, `syslog_partial`,
//! `syslog_time`) and one console level; kmsgfs keeps them per ring ([`Ring::clear_seq`],
//! [`Ring::syslog_state`]). This module decides what a call returns and how that state must
//! change; it never blocks, never touches the caller's memory and never changes the ring by
//! itself.
//!
//! # Two steps: compute, then apply
//!
//! A reading action hands bytes to a caller in another process (through FUSE or a seccomp
//! notification reply), and that delivery can fail. So that nothing is consumed or cleared for
//! a result nobody received, a call is answered in two steps:
//!
//! 1. [`compute`] checks permissions and arguments, reads the ring and returns an [`Outcome`]:
//!    the return value, the bytes for the caller's buffer and an [`Effect`].
//! 2. The frontend delivers `data` and `ret` to the caller.
//! 3. Only if delivery succeeded, the frontend calls [`apply`] with the effect. If delivery
//!    failed it drops the effect: the caller saw an error, and the kernel state is as if the
//!    call had not happened (for READ this matches EFAULT with nothing copied, B4.6).
//!
//! On [`Outcome::WouldBlock`] (READ with nothing unread, B4.1) the frontend parks the request,
//! registers for the ring's [`Listener`](crate::ring::Listener) (or uses
//! [`Ring::wait_for`]) and, when it fires, **recomputes** from step 1: the cursor may have
//! moved meanwhile. A signal ends the wait with EINTR. A `/proc/kmsg` read with `O_NONBLOCK`
//! answers WouldBlock with EAGAIN instead (C4).
//!
//! # Concurrent readers
//!
//! READ and `/proc/kmsg` share one cursor (B4.4, C8). [`Effect::Consume`] carries the cursor
//! it was computed from, and [`apply`] moves the cursor only if it is still there, returning
//! false otherwise. A frontend that serialises READs on a ring (one lock held from [`compute`]
//! to [`apply`]) never sees false; one that does not learns from false that the bytes it just
//! delivered were also delivered to someone else, which it should log. Either way no byte is
//! delivered twice without detection.
//!
//! # How the actions map
//!
//! * Permissions (B1) come before every argument check: with `restrict` every action, invalid
//!   ones included, needs [`Policy::privileged`]; without it only READ_ALL (3) and SIZE_BUFFER
//!   (10) are open. Otherwise EPERM.
//! * READ (B4) copies whole records from the cursor while they fit, starts the first one
//!   partially if it does not fit at all, and jumps silently to the oldest record when the
//!   cursor was overwritten (B4.5).
//! * READ_ALL and READ_CLEAR (B5) return the newest whole records that fit, starting no earlier
//!   than `max(clear_seq, oldest)`. The selection uses the kernel's size estimate
//!   ([`record::syslog_len`], B5.3), the bytes come from [`record::format_syslog`]. READ_CLEAR
//!   clears up to the end of what it looked at, so records that did not fit are cleared too
//!   (B5.4).
//! * SIZE_UNREAD (B6.1) is the estimate of what READ would still return. When the cursor was
//!   overwritten it also moves the cursor to the oldest record, as the kernel does; that move is
//!   returned as an [`Effect::Consume`] like any other cursor change.
//! * CONSOLE_OFF/ON/LEVEL (B2 rows 6–8) act on a per-ring virtual console level with the
//!   kernel's save/restore rules; they never reach the host console.
//!
//! `/proc/kmsg` (C) uses the same functions: its reads are READ with a privileged policy
//! (no checks after open, C3) and its poll is [`unread_records`] (B6.2, C5).

use crate::record;
use crate::ring::{Read, RecordBuf, Ring, MINIMUM_CONSOLE_LEVEL};

/// `SYSLOG_ACTION_*` numbers (`include/linux/syslog.h`).
pub mod action {
    /// Close the log. No-op.
    pub const CLOSE: i32 = 0;
    /// Open the log. No-op.
    pub const OPEN: i32 = 1;
    /// Destructive read from the syslog cursor.
    pub const READ: i32 = 2;
    /// Non-destructive read of the newest records since the clear point.
    pub const READ_ALL: i32 = 3;
    /// READ_ALL, then move the clear point.
    pub const READ_CLEAR: i32 = 4;
    /// Move the clear point to the end.
    pub const CLEAR: i32 = 5;
    /// Console output off.
    pub const CONSOLE_OFF: i32 = 6;
    /// Console output back on.
    pub const CONSOLE_ON: i32 = 7;
    /// Set the console level.
    pub const CONSOLE_LEVEL: i32 = 8;
    /// Bytes a READ would return.
    pub const SIZE_UNREAD: i32 = 9;
    /// Size of the log buffer.
    pub const SIZE_BUFFER: i32 = 10;
}

/// Who is calling, as far as permissions go (B1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The caller counts as holding CAP_SYSLOG for this ring.
    pub privileged: bool,
    /// `dmesg_restrict`: when set every action needs privilege; otherwise READ_ALL and
    /// SIZE_BUFFER are open to everyone.
    pub restrict: bool,
}

/// One `syslog(type, buf, len)` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// `type`.
    pub action: i32,
    /// `buf == NULL`.
    pub buf_is_null: bool,
    /// `len`.
    pub len: i32,
}

/// A state change to make after the result was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing changes.
    None,
    /// Set the clear point to `seq` (CLEAR, READ_CLEAR).
    SetClear {
        /// New `clear_seq`.
        seq: u64,
    },
    /// Advance the syslog cursor (READ) from `from` to `to`, each `(seq, partial, time)`.
    Consume {
        /// Cursor the result was computed from.
        from: (u64, usize, bool),
        /// Cursor after the bytes returned.
        to: (u64, usize, bool),
    },
    /// Set the virtual console level and the saved level (CONSOLE_OFF/ON/LEVEL).
    Console {
        /// New `console_loglevel`.
        level: u8,
        /// New saved level.
        saved: Option<u8>,
    },
}

/// The answer to one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Return `ret` to the caller after copying `data` into its buffer, then [`apply`] `effect`.
    Done {
        /// The syscall's return value.
        ret: i32,
        /// Bytes for the caller's buffer (`ret` of them for the reading actions).
        data: Vec<u8>,
        /// What to change once delivered.
        effect: Effect,
    },
    /// READ with nothing unread: block until a record arrives (or a signal: EINTR).
    WouldBlock,
    /// Fail with this errno.
    Error(i32),
}

/// The destructive cursor as it appears in [`Effect::Consume`]: `(seq, partial, time)`.
type Cursor = (u64, usize, bool);

/// A finished call returning `ret` with no data and no effect.
fn done(ret: i32) -> Outcome {
    Outcome::Done {
        ret,
        data: Vec::new(),
        effect: Effect::None,
    }
}

/// A byte count as the syscall's `int` return value.
fn ret_len(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Whether `action` needs privilege under `policy` (`syslog_action_restricted`, B1.1).
fn restricted(policy: Policy, action: i32) -> bool {
    policy.restrict || !(action == action::READ_ALL || action == action::SIZE_BUFFER)
}

/// The argument checks shared by READ, READ_ALL and READ_CLEAR (B2): EINVAL for a NULL
/// buffer or a negative length, 0 for a zero length. `Ok(len)` when the action should run.
fn check_buffer(call: Call) -> Result<usize, Outcome> {
    if call.buf_is_null || call.len < 0 {
        return Err(Outcome::Error(libc::EINVAL));
    }
    match usize::try_from(call.len) {
        Ok(0) | Err(_) => Err(done(0)),
        Ok(len) => Ok(len),
    }
}

/// Compute the result of `call` on `ring`. `time` is the current `printk.time` setting.
///
/// Nothing in the ring changes; the returned [`Effect`] says what to change once the result
/// was delivered (see the module documentation).
pub fn compute(ring: &Ring, policy: Policy, call: Call, time: bool) -> Outcome {
    // B1.2/B1.3: permissions before anything else, invalid types included.
    if restricted(policy, call.action) && !policy.privileged {
        return Outcome::Error(libc::EPERM);
    }
    match call.action {
        action::CLOSE | action::OPEN => done(0),
        action::READ => match check_buffer(call) {
            Ok(len) => read(ring, len, time),
            Err(outcome) => outcome,
        },
        action::READ_ALL | action::READ_CLEAR => match check_buffer(call) {
            Ok(len) => read_all(ring, len, time, call.action == action::READ_CLEAR),
            Err(outcome) => outcome,
        },
        action::CLEAR => Outcome::Done {
            ret: 0,
            data: Vec::new(),
            effect: Effect::SetClear {
                seq: ring.next_seq(),
            },
        },
        action::CONSOLE_OFF | action::CONSOLE_ON | action::CONSOLE_LEVEL => console(ring, call),
        action::SIZE_UNREAD => size_unread(ring, time),
        action::SIZE_BUFFER => done(ret_len(ring.config().bytes)),
        _ => Outcome::Error(libc::EINVAL),
    }
}

/// The cursor as it is now.
fn cursor(ring: &Ring) -> Cursor {
    let st = ring.syslog_state();
    (st.seq, st.partial, st.time)
}

/// READ (B4): whole records from the cursor while they fit; a first record that does not fit
/// is returned partially and continued by the next READ.
fn read(ring: &Ring, len: usize, time: bool) -> Outcome {
    let from = cursor(ring);
    let (mut seq, mut partial, mut rec_time) = from;
    let mut buf = RecordBuf::new();
    let mut text = Vec::new();
    let mut out = Vec::with_capacity(len.min(8192));
    while out.len() < len {
        match ring.read(seq, &mut buf) {
            Read::Empty => break,
            Read::Overrun { next, .. } => {
                // B4.5: silently jump to the oldest record and drop the partial offset.
                seq = next;
                partial = 0;
            }
            Read::Record(rec) => {
                // B3.4: a record keeps the time format it was started with.
                if partial == 0 {
                    rec_time = time;
                }
                text.clear();
                let n = record::format_syslog(&rec, rec_time, &mut text);
                let rest = &text[partial.min(n)..n];
                let room = len - out.len();
                if rest.len() <= room {
                    out.extend_from_slice(rest);
                    seq += 1;
                    partial = 0;
                } else if out.is_empty() {
                    // B4.3: the first record does not fit at all.
                    out.extend_from_slice(&rest[..room]);
                    partial += room;
                } else {
                    // B4.2: stop before a record that does not fit; never wait for more.
                    break;
                }
            }
        }
    }
    if out.is_empty() {
        // B4.1: nothing at or after the cursor.
        return Outcome::WouldBlock;
    }
    Outcome::Done {
        ret: ret_len(out.len()),
        data: out,
        effect: Effect::Consume {
            from,
            to: (seq, partial, rec_time),
        },
    }
}

/// READ_ALL and READ_CLEAR (B5): the newest whole records that fit in `len`, starting no
/// earlier than `max(clear_seq, oldest)`.
fn read_all(ring: &Ring, len: usize, time: bool, clear: bool) -> Outcome {
    let next = ring.next_seq();
    let mut buf = RecordBuf::new();

    // Pass 1 (`find_first_fitting_seq`): the estimated size of every record from the clear
    // point on. Records overwritten meanwhile are skipped (B5.1).
    let mut sizes: Vec<(u64, usize)> = Vec::new();
    let mut seq = ring.clear_seq().max(ring.first_seq());
    while seq < next {
        match ring.read(seq, &mut buf) {
            Read::Record(rec) => {
                sizes.push((seq, record::syslog_len(&rec, time)));
                seq += 1;
            }
            Read::Overrun { next, .. } => seq = next,
            Read::Empty => break,
        }
    }
    let end = seq;

    // B5.2: drop the oldest records until the rest fits (B5.3: by the estimate).
    let mut total: usize = sizes.iter().map(|&(_, n)| n).sum();
    let mut skip = 0;
    while total > len && skip < sizes.len() {
        total -= sizes[skip].1;
        skip += 1;
    }
    let start = sizes.get(skip).map_or(end, |&(s, _)| s);

    // Pass 2: the bytes. The estimate is never smaller than the output, so everything
    // selected fits; the check only guards against a record replaced under our feet.
    let mut out = Vec::with_capacity(total.min(len));
    let mut text = Vec::new();
    let mut cleared_to = end;
    let mut seq = start;
    while seq < end {
        match ring.read(seq, &mut buf) {
            Read::Record(rec) => {
                text.clear();
                let n = record::format_syslog(&rec, time, &mut text);
                if out.len() + n > len {
                    cleared_to = seq;
                    break;
                }
                out.extend_from_slice(&text[..n]);
                seq += 1;
            }
            Read::Overrun { next, .. } => seq = next,
            Read::Empty => break,
        }
    }

    Outcome::Done {
        ret: ret_len(out.len()),
        data: out,
        // B5.4: everything looked at is cleared, including records that did not fit.
        effect: if clear {
            Effect::SetClear { seq: cleared_to }
        } else {
            Effect::None
        },
    }
}

/// SIZE_UNREAD (B6.1): the estimated bytes a READ would still return.
fn size_unread(ring: &Ring, time: bool) -> Outcome {
    let from = cursor(ring);
    let (mut seq, mut partial, saved_time) = from;
    let mut rec_time = if partial > 0 { saved_time } else { time };
    let mut buf = RecordBuf::new();
    let next = ring.next_seq();
    // The seq of the first unread record, once found.
    let mut first = None;
    let mut total = 0usize;
    while seq < next {
        match ring.read(seq, &mut buf) {
            Read::Record(rec) => {
                first.get_or_insert(seq);
                total += record::syslog_len(&rec, rec_time);
                rec_time = time;
                seq += 1;
            }
            Read::Overrun { next, .. } => {
                if first.is_none() {
                    // The cursor itself was overwritten: count from the oldest record.
                    partial = 0;
                    rec_time = time;
                }
                seq = next;
            }
            Read::Empty => break,
        }
    }
    let Some(first) = first else {
        return done(0);
    };
    Outcome::Done {
        ret: ret_len(total.saturating_sub(partial)),
        data: Vec::new(),
        // B6.1: an overwritten cursor is moved to the oldest record as a side effect.
        effect: if first == from.0 {
            Effect::None
        } else {
            Effect::Consume {
                from,
                to: (first, 0, saved_time),
            }
        },
    }
}

/// CONSOLE_OFF, CONSOLE_ON and CONSOLE_LEVEL on the ring's virtual console level (B2).
fn console(ring: &Ring, call: Call) -> Outcome {
    let (level, saved) = {
        let st = ring.syslog_state();
        (st.console_level, st.saved_console_level)
    };
    let effect = match call.action {
        action::CONSOLE_OFF => Effect::Console {
            level: MINIMUM_CONSOLE_LEVEL,
            // Only the first OFF saves; a repeated OFF keeps the original level.
            saved: Some(saved.unwrap_or(level)),
        },
        action::CONSOLE_ON => match saved {
            Some(saved) => Effect::Console {
                level: saved,
                saved: None,
            },
            None => Effect::None,
        },
        _ => {
            let Ok(new @ 1..=8) = u8::try_from(call.len) else {
                return Outcome::Error(libc::EINVAL);
            };
            Effect::Console {
                level: new.max(MINIMUM_CONSOLE_LEVEL),
                // Setting a level forgets the saved one: OFF, LEVEL 5, ON leaves 5.
                saved: None,
            }
        }
    };
    Outcome::Done {
        ret: 0,
        data: Vec::new(),
        effect,
    }
}

/// Apply `effect` to `ring`. Returns false (and changes nothing) for a [`Effect::Consume`]
/// whose `from` cursor is no longer current, because another reader consumed first.
pub fn apply(ring: &Ring, effect: Effect) -> bool {
    match effect {
        Effect::None => true,
        Effect::SetClear { seq } => {
            ring.set_clear_seq(seq);
            true
        }
        Effect::Consume { from, to } => {
            let mut st = ring.syslog_state();
            if (st.seq, st.partial, st.time) != from {
                log::debug!(
                    "syslog cursor moved from {from:?} to {:?} before a result computed from it \
                     was applied",
                    (st.seq, st.partial, st.time)
                );
                return false;
            }
            (st.seq, st.partial, st.time) = to;
            true
        }
        Effect::Console { level, saved } => {
            let mut st = ring.syslog_state();
            st.console_level = level;
            st.saved_console_level = saved;
            true
        }
    }
}

/// Records a destructive read would still return, counted as `/proc/kmsg` poll and
/// `O_NONBLOCK` reads count them (`SYSLOG_FROM_PROC` SIZE_UNREAD, B6.2, C4, C5). An
/// overwritten cursor counts from the oldest record.
pub fn unread_records(ring: &Ring) -> u64 {
    let seq = ring.syslog_state().seq;
    ring.next_seq().saturating_sub(seq.max(ring.first_seq()))
}

/// The current `printk.time` setting (`/sys/module/printk/parameters/time`), which decides
/// whether the syslog text carries timestamps (B3.4). True if it cannot be read, as on a
/// default kernel.
pub fn printk_time() -> bool {
    std::fs::read("/sys/module/printk/parameters/time")
        .map(|v| parse_printk_time(&v))
        .unwrap_or(true)
}

/// A boolean module parameter as the kernel prints it (`Y`/`N`; `1`/`0` are accepted too).
pub fn parse_printk_time(value: &[u8]) -> bool {
    !matches!(value.first(), Some(b'N' | b'n' | b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use crate::ring::{RingConfig, DEFAULT_CONSOLE_LEVEL};
    use proptest::prelude::*;
    #[test]
    fn b3_4_printk_time_parameter() {
        assert!(parse_printk_time(b"Y\n"));
        assert!(!parse_printk_time(b"N\n"));
        assert!(!parse_printk_time(b"0"));
        assert!(parse_printk_time(b"1"));
        // The test machine runs with the default, printk.time=Y (kmsg-semantics 0.1).
        assert_eq!(
            printk_time(),
            std::fs::read("/sys/module/printk/parameters/time")
                .map(|v| v.first() == Some(&b'Y'))
                .unwrap_or(true)
        );
    }

    const ROOT: Policy = Policy {
        privileged: true,
        restrict: true,
    };

    fn rec(prio: u16, ts_usec: u64, text: &[u8]) -> Record {
        Record {
            prio,
            ts_usec,
            text: text.to_vec(),
            ..Record::default()
        }
    }

    /// A ring large enough never to wrap, holding `texts` at prio 6, one second apart.
    fn ring_of(texts: &[&str]) -> Ring {
        let ring = Ring::new(RingConfig::default());
        for (i, t) in texts.iter().enumerate() {
            ring.append(&rec(6, 1_000_000 * (i as u64 + 1), t.as_bytes()).as_ref());
        }
        ring
    }

    /// A ring that keeps only a few records, so that appends overwrite.
    fn small_ring() -> Ring {
        Ring::new(RingConfig {
            bytes: 1 << 20,
            records: 4,
        })
    }

    fn call(action: i32, len: i32) -> Call {
        Call {
            action,
            buf_is_null: false,
            len,
        }
    }

    /// Compute with printk.time on, apply the effect, and return `ret` and the data (or the
    /// errno as `Err`). Panics on WouldBlock.
    fn run(ring: &Ring, policy: Policy, c: Call) -> Result<(i32, Vec<u8>), i32> {
        run_time(ring, policy, c, true)
    }

    fn run_time(ring: &Ring, policy: Policy, c: Call, time: bool) -> Result<(i32, Vec<u8>), i32> {
        match compute(ring, policy, c, time) {
            Outcome::Done { ret, data, effect } => {
                assert!(apply(ring, effect), "effect {effect:?} was stale");
                Ok((ret, data))
            }
            Outcome::WouldBlock => panic!("{c:?} would block"),
            Outcome::Error(e) => Err(e),
        }
    }

    fn ret(ring: &Ring, policy: Policy, c: Call) -> Result<i32, i32> {
        run(ring, policy, c).map(|(r, _)| r)
    }

    /// The B3 text of the records with these seqs.
    fn text_of(ring: &Ring, seqs: std::ops::Range<u64>, time: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = RecordBuf::new();
        for seq in seqs {
            match ring.read(seq, &mut buf) {
                Read::Record(r) => {
                    record::format_syslog(&r, time, &mut out);
                }
                other => panic!("seq {seq}: {other:?}"),
            }
        }
        out
    }

    fn unread_estimate(ring: &Ring) -> i32 {
        let mut buf = RecordBuf::new();
        let mut n = 0;
        for seq in ring.syslog_state().seq..ring.next_seq() {
            if let Read::Record(r) = ring.read(seq, &mut buf) {
                n += record::syslog_len(&r, true);
            }
        }
        i32::try_from(n).unwrap()
    }

    // ---- B1.4: one test per row of the permission table -------------------------------

    /// Actions of the table with the len used there (2, 3, 4 with len 0; 8 with len 0).
    const TABLE: [i32; 10] = [0, 1, 2, 3, 4, 7, 8, 9, 10, 11];

    fn row(policy: Policy) -> Vec<Result<i32, i32>> {
        let ring = ring_of(&["alpha", "beta", "gamma"]);
        TABLE
            .iter()
            .map(|&a| ret(&ring, policy, call(a, 0)))
            .collect()
    }

    fn privileged_row() -> Vec<Result<i32, i32>> {
        let n = unread_estimate(&ring_of(&["alpha", "beta", "gamma"]));
        vec![
            Ok(0),
            Ok(0),
            Ok(0),
            Ok(0),
            Ok(0),
            Ok(0),
            Err(libc::EINVAL),
            Ok(n),
            Ok(131072),
            Err(libc::EINVAL),
        ]
    }

    /// Rows "root with CAP_SYSLOG" and "uid 65534 with ambient CAP_SYSLOG" of B1.4: the
    /// kernel checks the capability, never the uid, so both are `Policy::privileged` and share
    /// one row.
    #[test]
    fn b1_4_root_with_cap_syslog_row() {
        for restrict in [false, true] {
            let policy = Policy {
                privileged: true,
                restrict,
            };
            assert_eq!(row(policy), privileged_row(), "restrict={restrict}");
        }
    }

    #[test]
    fn b1_4_restrict_without_cap_syslog_row() {
        let policy = Policy {
            privileged: false,
            restrict: true,
        };
        assert_eq!(row(policy), vec![Err(libc::EPERM); TABLE.len()]);
        // B1.1/B1.3: every type, the state-changing and invalid ones included.
        let ring = ring_of(&["x"]);
        for a in [5, 6, -1, 12, i32::MIN, i32::MAX] {
            assert_eq!(
                ret(&ring, policy, call(a, 0)),
                Err(libc::EPERM),
                "action {a}"
            );
        }
        let null = Call {
            action: action::READ_ALL,
            buf_is_null: true,
            len: -1,
        };
        assert_eq!(ret(&ring, policy, null), Err(libc::EPERM));
    }

    #[test]
    fn b1_4_no_restrict_without_cap_syslog_row() {
        let policy = Policy {
            privileged: false,
            restrict: false,
        };
        let mut expected = vec![Err(libc::EPERM); TABLE.len()];
        expected[3] = Ok(0); // READ_ALL
        expected[8] = Ok(131072); // SIZE_BUFFER
        assert_eq!(row(policy), expected);
        let ring = ring_of(&["x"]);
        for a in [5, 6, -1, 12] {
            assert_eq!(
                ret(&ring, policy, call(a, 0)),
                Err(libc::EPERM),
                "action {a}"
            );
        }
        // READ_ALL is open, so its argument check is reached (B1.3).
        let null = Call {
            action: action::READ_ALL,
            buf_is_null: true,
            len: 10,
        };
        assert_eq!(ret(&ring, policy, null), Err(libc::EINVAL));
        // And it really reads.
        let (n, data) = run(&ring, policy, call(action::READ_ALL, 100)).unwrap();
        assert_eq!(data, text_of(&ring, 0..1, true));
        assert_eq!(n as usize, data.len());
    }

    // ---- B2: every action -------------------------------------------------------------

    #[test]
    fn b2_close_and_open_return_0() {
        let ring = ring_of(&["a"]);
        for a in [action::CLOSE, action::OPEN] {
            let out = compute(&ring, ROOT, call(a, -5), true);
            assert_eq!(out, done(0));
        }
    }

    #[test]
    fn b2_read_null_or_negative_len_is_einval() {
        let ring = ring_of(&["a"]);
        for a in [action::READ, action::READ_ALL, action::READ_CLEAR] {
            let null = Call {
                action: a,
                buf_is_null: true,
                len: 10,
            };
            assert_eq!(ret(&ring, ROOT, null), Err(libc::EINVAL), "{a} NULL");
            assert_eq!(
                ret(&ring, ROOT, call(a, -1)),
                Err(libc::EINVAL),
                "{a} len -1"
            );
            let null0 = Call { len: 0, ..null };
            assert_eq!(ret(&ring, ROOT, null0), Err(libc::EINVAL), "{a} NULL len 0");
        }
    }

    #[test]
    fn b2_read_len_0_returns_0_without_blocking() {
        let empty = ring_of(&[]);
        assert_eq!(compute(&empty, ROOT, call(action::READ, 0), true), done(0));
        let ring = ring_of(&["a"]);
        assert_eq!(compute(&ring, ROOT, call(action::READ, 0), true), done(0));
        assert_eq!(ring.syslog_state().seq, 0);
    }

    #[test]
    fn b2_read_returns_bytes_and_consumes() {
        let ring = ring_of(&["one", "two"]);
        let (n, data) = run(&ring, ROOT, call(action::READ, 1000)).unwrap();
        assert_eq!(data, text_of(&ring, 0..2, true));
        assert_eq!(n as usize, data.len());
        assert_eq!(ring.syslog_state().seq, 2);
        assert_eq!(
            compute(&ring, ROOT, call(action::READ, 1000), true),
            Outcome::WouldBlock
        );
    }

    #[test]
    fn b2_read_all_and_read_clear_len_0_return_0() {
        let ring = ring_of(&["a", "b"]);
        assert_eq!(ret(&ring, ROOT, call(action::READ_ALL, 0)), Ok(0));
        assert_eq!(
            compute(&ring, ROOT, call(action::READ_CLEAR, 0), true),
            done(0)
        );
        // len 0 returns before the clear.
        assert_eq!(ring.clear_seq(), 0);
    }

    #[test]
    fn b2_read_all_is_not_destructive() {
        let ring = ring_of(&["a", "b"]);
        let all = text_of(&ring, 0..2, true);
        for _ in 0..2 {
            let (n, data) = run(&ring, ROOT, call(action::READ_ALL, 4096)).unwrap();
            assert_eq!(data, all);
            assert_eq!(n as usize, all.len());
        }
    }

    #[test]
    fn b2_read_clear_reads_then_clears() {
        let ring = ring_of(&["a", "b"]);
        let (_, data) = run(&ring, ROOT, call(action::READ_CLEAR, 4096)).unwrap();
        assert_eq!(data, text_of(&ring, 0..2, true));
        assert_eq!(ring.clear_seq(), 2);
        assert_eq!(ret(&ring, ROOT, call(action::READ_ALL, 4096)), Ok(0));
    }

    #[test]
    fn b2_clear_moves_only_the_clear_point() {
        let ring = ring_of(&["a", "b", "c"]);
        let before = ret(&ring, ROOT, call(action::SIZE_UNREAD, 0)).unwrap();
        let out = compute(&ring, ROOT, call(action::CLEAR, 0), true);
        assert_eq!(
            out,
            Outcome::Done {
                ret: 0,
                data: vec![],
                effect: Effect::SetClear { seq: 3 }
            }
        );
        let Outcome::Done { effect, .. } = out else {
            unreachable!()
        };
        assert!(apply(&ring, effect));
        assert_eq!(ring.clear_seq(), 3);
        assert_eq!(ret(&ring, ROOT, call(action::SIZE_UNREAD, 0)), Ok(before));
        assert_eq!(ring.syslog_state().seq, 0);
        let (_, data) = run(&ring, ROOT, call(action::READ, 4096)).unwrap();
        assert_eq!(data, text_of(&ring, 0..3, true));
    }

    #[test]
    fn b2_console_off_sets_minimum_and_on_restores() {
        let ring = ring_of(&[]);
        assert_eq!(ret(&ring, ROOT, call(action::CONSOLE_OFF, 0)), Ok(0));
        assert_eq!(ring.syslog_state().console_level, MINIMUM_CONSOLE_LEVEL);
        assert_eq!(ret(&ring, ROOT, call(action::CONSOLE_ON, 0)), Ok(0));
        assert_eq!(ring.syslog_state().console_level, DEFAULT_CONSOLE_LEVEL);
    }

    #[test]
    fn b2_console_level_accepts_1_to_8() {
        let ring = ring_of(&[]);
        for level in 1..=8 {
            assert_eq!(ret(&ring, ROOT, call(action::CONSOLE_LEVEL, level)), Ok(0));
            assert_eq!(i32::from(ring.syslog_state().console_level), level);
        }
        for bad in [0, 9, -1, 256 + 5, i32::MIN, i32::MAX] {
            assert_eq!(
                ret(&ring, ROOT, call(action::CONSOLE_LEVEL, bad)),
                Err(libc::EINVAL),
                "level {bad}"
            );
        }
        assert_eq!(ring.syslog_state().console_level, 8);
    }

    #[test]
    fn b2_console_does_not_change_what_is_read() {
        let ring = ring_of(&["a"]);
        let before = run(&ring, ROOT, call(action::READ_ALL, 4096)).unwrap();
        ret(&ring, ROOT, call(action::CONSOLE_OFF, 0)).unwrap();
        assert_eq!(
            run(&ring, ROOT, call(action::READ_ALL, 4096)).unwrap(),
            before
        );
    }

    #[test]
    fn b2_size_unread_is_the_unread_estimate() {
        let ring = ring_of(&["a", "bb\ncc"]);
        assert_eq!(
            ret(&ring, ROOT, call(action::SIZE_UNREAD, 0)),
            Ok(unread_estimate(&ring))
        );
    }

    #[test]
    fn b2_size_buffer_is_log_buf_len() {
        let ring = ring_of(&["a"]);
        assert_eq!(ret(&ring, ROOT, call(action::SIZE_BUFFER, 0)), Ok(131072));
    }

    #[test]
    fn b2_other_actions_are_einval() {
        let ring = ring_of(&["a"]);
        for a in [11, -1, 12, 100, i32::MIN, i32::MAX] {
            for restrict in [false, true] {
                let policy = Policy {
                    privileged: true,
                    restrict,
                };
                assert_eq!(ret(&ring, policy, call(a, 0)), Err(libc::EINVAL), "{a}");
            }
        }
    }

    // ---- B3.4 / B4: READ --------------------------------------------------------------

    #[test]
    fn b4_1_read_blocks_until_a_record_exists() {
        let ring = ring_of(&[]);
        assert_eq!(
            compute(&ring, ROOT, call(action::READ, 100), true),
            Outcome::WouldBlock
        );
        ring.append(&rec(6, 5, b"late").as_ref());
        let (_, data) = run(&ring, ROOT, call(action::READ, 100)).unwrap();
        assert_eq!(data, b"<6>[    0.000005] late\n");
    }

    /// The kernel's example: READ(10), READ(10), READ(200) continuing a 142-byte record and
    /// stopping before a 500-byte one.
    #[test]
    fn b4_3_partial_reads_continue_and_stop_before_a_record_that_does_not_fit() {
        let ring = Ring::new(RingConfig::default());
        let mut first = b"Linux version 6.18.44".to_vec();
        first.resize(123, b'x');
        ring.append(&rec(5, 0, &first).as_ref());
        ring.append(&rec(6, 1, &[b'y'; 480]).as_ref());
        let whole = text_of(&ring, 0..1, true);
        assert_eq!(whole.len(), 142);

        let (n, a) = run(&ring, ROOT, call(action::READ, 10)).unwrap();
        assert_eq!((n, &a[..]), (10, &b"<5>[    0."[..]));
        assert_eq!(ring.syslog_state().partial, 10);
        let (n, b) = run(&ring, ROOT, call(action::READ, 10)).unwrap();
        assert_eq!((n, &b[..]), (10, &b"000000] Li"[..]));
        let (n, c) = run(&ring, ROOT, call(action::READ, 200)).unwrap();
        assert_eq!(n, 122);
        assert_eq!([a, b, c].concat(), whole);
        let st = *ring.syslog_state();
        assert_eq!((st.seq, st.partial), (1, 0));
    }

    #[test]
    fn b4_2_read_copies_whole_records_while_they_fit() {
        let ring = ring_of(&["aaaa", "bbbb", "cccc"]);
        let one = text_of(&ring, 0..1, true).len();
        // Room for two records and most of a third: exactly two come back.
        let len = i32::try_from(3 * one - 1).unwrap();
        let (_, data) = run(&ring, ROOT, call(action::READ, len)).unwrap();
        assert_eq!(data, text_of(&ring, 0..2, true));
        assert_eq!(ring.syslog_state().seq, 2);
        assert_eq!(ring.syslog_state().partial, 0);
    }

    #[test]
    fn b4_3_partial_record_keeps_its_time_format() {
        let ring = ring_of(&["first", "second"]);
        let (_, a) = run_time(&ring, ROOT, call(action::READ, 5), true).unwrap();
        assert!(ring.syslog_state().time);
        // printk.time switched off: the started record finishes with timestamps, the next
        // one has none (B3.4).
        let (_, b) = run_time(&ring, ROOT, call(action::READ, 4096), false).unwrap();
        let expected = [text_of(&ring, 0..1, true), text_of(&ring, 1..2, false)].concat();
        assert_eq!([a, b].concat(), expected);
        assert!(expected.ends_with(b"\n<6>second\n"));
    }

    #[test]
    fn b4_4_consume_is_applied_only_from_the_cursor_it_was_computed_from() {
        let ring = ring_of(&["one", "two"]);
        let first = compute(&ring, ROOT, call(action::READ, 4096), true);
        let second = compute(&ring, ROOT, call(action::READ, 4096), true);
        let (Outcome::Done { effect: e1, .. }, Outcome::Done { effect: e2, .. }) = (first, second)
        else {
            panic!("both reads should have data");
        };
        assert!(apply(&ring, e1));
        let st = *ring.syslog_state();
        assert!(!apply(&ring, e2), "the second reader must learn it raced");
        assert_eq!(*ring.syslog_state(), st, "a stale effect changes nothing");
    }

    #[test]
    fn b4_5_overwritten_cursor_jumps_to_oldest_and_drops_partial() {
        let ring = small_ring();
        ring.append(&rec(6, 0, b"will be overwritten").as_ref());
        let (_, _) = run(&ring, ROOT, call(action::READ, 5)).unwrap();
        assert_eq!(ring.syslog_state().partial, 5);
        for i in 0..20u64 {
            ring.append(&rec(6, i, format!("flood {i:05}").as_bytes()).as_ref());
        }
        let oldest = ring.first_seq();
        assert!(oldest > 1, "the ring must have wrapped");
        let one = text_of(&ring, oldest..oldest + 1, true);
        let len = i32::try_from(one.len() + 1).unwrap();
        let (n, data) = run(&ring, ROOT, call(action::READ, len)).unwrap();
        assert_eq!(data, one, "no error, whole oldest record from its start");
        assert_eq!(n as usize, one.len());
        let st = *ring.syslog_state();
        assert_eq!((st.seq, st.partial), (oldest + 1, 0));
    }

    // ---- B5: READ_ALL and READ_CLEAR ---------------------------------------------------

    /// Ten records of 31 bytes each in the B3 format.
    fn ten_records() -> Ring {
        let texts: Vec<String> = (0..10).map(|i| format!("record {i:05}")).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let ring = ring_of(&refs);
        assert_eq!(text_of(&ring, 0..1, true).len(), 31);
        ring
    }

    #[test]
    fn b5_2_returns_the_newest_records_that_fit() {
        let ring = ten_records();
        let (n, data) = run(&ring, ROOT, call(action::READ_ALL, 200)).unwrap();
        assert_eq!(n, 186);
        assert_eq!(data, text_of(&ring, 4..10, true));
    }

    #[test]
    fn b5_2_len_1_returns_0() {
        let ring = ten_records();
        assert_eq!(
            run(&ring, ROOT, call(action::READ_ALL, 1)).unwrap(),
            (0, vec![])
        );
    }

    #[test]
    fn b5_2_exact_fit_and_one_short() {
        let ring = ten_records();
        let (n, _) = run(&ring, ROOT, call(action::READ_ALL, 310)).unwrap();
        assert_eq!(n, 310);
        let (n, data) = run(&ring, ROOT, call(action::READ_ALL, 309)).unwrap();
        assert_eq!(n, 279);
        assert_eq!(data, text_of(&ring, 1..10, true));
    }

    #[test]
    fn b5_4_read_clear_with_small_len_clears_everything() {
        let ring = ten_records();
        let (n, data) = run(&ring, ROOT, call(action::READ_CLEAR, 40)).unwrap();
        assert_eq!(n, 31);
        assert_eq!(data, text_of(&ring, 9..10, true));
        assert_eq!(ring.clear_seq(), 10);
        assert_eq!(ret(&ring, ROOT, call(action::READ_ALL, 4096)), Ok(0));
    }

    #[test]
    fn b5_4_read_clear_clears_up_to_next_seq_at_compute_time() {
        let ring = ten_records();
        let out = compute(&ring, ROOT, call(action::READ_CLEAR, 1), true);
        ring.append(&rec(6, 99, b"after compute").as_ref());
        let Outcome::Done { ret, effect, .. } = out else {
            panic!("{out:?}")
        };
        assert_eq!(ret, 0);
        assert_eq!(effect, Effect::SetClear { seq: 10 });
        assert!(apply(&ring, effect));
        let (_, data) = run(&ring, ROOT, call(action::READ_ALL, 4096)).unwrap();
        assert_eq!(data, text_of(&ring, 10..11, true));
    }

    #[test]
    fn b5_1_read_all_after_clear_returns_0_then_only_new_records() {
        let ring = ten_records();
        ret(&ring, ROOT, call(action::CLEAR, 0)).unwrap();
        assert_eq!(
            run(&ring, ROOT, call(action::READ_ALL, 4096)).unwrap(),
            (0, vec![])
        );
        ring.append(&rec(6, 1, b"new").as_ref());
        let (_, data) = run(&ring, ROOT, call(action::READ_ALL, 4096)).unwrap();
        assert_eq!(data, text_of(&ring, 10..11, true));
    }

    #[test]
    fn b5_1_clear_point_behind_the_ring_starts_at_oldest() {
        let ring = small_ring();
        for i in 0..20u64 {
            ring.append(&rec(6, i, format!("flood {i:05}").as_bytes()).as_ref());
        }
        assert_eq!(ring.clear_seq(), 0);
        let oldest = ring.first_seq();
        assert!(oldest > 0, "the ring must have wrapped");
        let (_, data) = run(&ring, ROOT, call(action::READ_ALL, 1 << 20)).unwrap();
        assert_eq!(data, text_of(&ring, oldest..20, true));
        // The clear point itself is not moved (A9.3).
        assert_eq!(ring.clear_seq(), 0);
    }

    /// A record so long in lines that its formatted text is cut (B3.7), followed by a short
    /// one. A length that fits the *formatted* text of both but not the estimate gets only
    /// the short one.
    #[test]
    fn b5_3_size_estimate_ignores_truncation() {
        let ring = Ring::new(RingConfig::default());
        let lines: Vec<String> = (0..101).map(|i| format!("line {i:03}")).collect();
        ring.append(&rec(6, 1, lines.join("\n").as_bytes()).as_ref());
        ring.append(&rec(6, 2, b"short").as_ref());
        let mut buf = RecordBuf::new();
        let Read::Record(big) = ring.read(0, &mut buf) else {
            panic!()
        };
        let estimate = record::syslog_len(&big, true);
        let formatted = text_of(&ring, 0..1, true).len();
        assert!(
            formatted < estimate,
            "{formatted} < {estimate}: B3.7 cut expected"
        );
        let short = text_of(&ring, 1..2, true);
        let len = i32::try_from(formatted + short.len()).unwrap();
        let (_, data) = run(&ring, ROOT, call(action::READ_ALL, len)).unwrap();
        assert_eq!(data, short);
        // With room for the estimate both come back, the first one cut.
        let len = i32::try_from(estimate + short.len()).unwrap();
        let (n, data) = run(&ring, ROOT, call(action::READ_ALL, len)).unwrap();
        assert_eq!(data, text_of(&ring, 0..2, true));
        assert_eq!(n as usize, formatted + short.len());
    }

    #[test]
    fn b5_5_read_all_and_read_clear_leave_the_syslog_cursor_alone() {
        let ring = ten_records();
        run(&ring, ROOT, call(action::READ, 40)).unwrap();
        let before = *ring.syslog_state();
        run(&ring, ROOT, call(action::READ_ALL, 4096)).unwrap();
        run(&ring, ROOT, call(action::READ_CLEAR, 4096)).unwrap();
        assert_eq!(*ring.syslog_state(), before);
        let (_, data) = run(&ring, ROOT, call(action::READ, 4096)).unwrap();
        assert_eq!(data, text_of(&ring, 1..10, true));
    }

    // ---- B6: sizes ---------------------------------------------------------------------

    #[test]
    fn b6_1_size_unread_drops_by_exactly_10_after_read_10() {
        let ring = ten_records();
        let before = ret(&ring, ROOT, call(action::SIZE_UNREAD, 0)).unwrap();
        assert_eq!(before, 310);
        run(&ring, ROOT, call(action::READ, 10)).unwrap();
        assert_eq!(
            ret(&ring, ROOT, call(action::SIZE_UNREAD, 0)),
            Ok(before - 10)
        );
        run(&ring, ROOT, call(action::READ, 10)).unwrap();
        assert_eq!(
            ret(&ring, ROOT, call(action::SIZE_UNREAD, 0)),
            Ok(before - 20)
        );
    }

    #[test]
    fn b6_1_size_unread_is_0_when_nothing_is_unread() {
        let ring = ring_of(&[]);
        assert_eq!(ret(&ring, ROOT, call(action::SIZE_UNREAD, 0)), Ok(0));
        let ring = ten_records();
        run(&ring, ROOT, call(action::READ, 4096)).unwrap();
        assert_eq!(ret(&ring, ROOT, call(action::SIZE_UNREAD, 0)), Ok(0));
    }

    #[test]
    fn b6_1_size_unread_uses_the_partial_record_time_format() {
        let ring = ring_of(&["first", "second"]);
        run_time(&ring, ROOT, call(action::READ, 3), true).unwrap();
        let mut buf = RecordBuf::new();
        let mut est = |seq, time| match ring.read(seq, &mut buf) {
            Read::Record(r) => record::syslog_len(&r, time),
            other => panic!("{other:?}"),
        };
        let expected = est(0, true) + est(1, false) - 3;
        let got = run_time(&ring, ROOT, call(action::SIZE_UNREAD, 0), false).unwrap();
        assert_eq!(got.0 as usize, expected);
    }

    #[test]
    fn b6_1_size_unread_moves_an_overwritten_cursor_to_the_oldest_record() {
        let ring = small_ring();
        ring.append(&rec(6, 0, b"gone soon").as_ref());
        run(&ring, ROOT, call(action::READ, 4)).unwrap();
        for i in 0..20u64 {
            ring.append(&rec(6, i, format!("flood {i:05}").as_bytes()).as_ref());
        }
        let oldest = ring.first_seq();
        assert!(oldest > 1, "the ring must have wrapped");
        let out = compute(&ring, ROOT, call(action::SIZE_UNREAD, 0), true);
        let Outcome::Done { ret, effect, .. } = out else {
            panic!("{out:?}")
        };
        assert_eq!(ret, unread_estimate_from(&ring, oldest));
        assert_eq!(
            effect,
            Effect::Consume {
                from: (0, 4, true),
                to: (oldest, 0, true)
            }
        );
        assert!(apply(&ring, effect));
        let st = *ring.syslog_state();
        assert_eq!((st.seq, st.partial), (oldest, 0));
    }

    fn unread_estimate_from(ring: &Ring, from: u64) -> i32 {
        let mut buf = RecordBuf::new();
        let mut n = 0;
        for seq in from..ring.next_seq() {
            if let Read::Record(r) = ring.read(seq, &mut buf) {
                n += record::syslog_len(&r, true);
            }
        }
        i32::try_from(n).unwrap()
    }

    #[test]
    fn b6_2_unread_records_counts_records() {
        let ring = ten_records();
        assert_eq!(unread_records(&ring), 10);
        run(&ring, ROOT, call(action::READ, 40)).unwrap();
        assert_eq!(unread_records(&ring), 9);
        run(&ring, ROOT, call(action::READ, 4096)).unwrap();
        assert_eq!(unread_records(&ring), 0);
    }

    #[test]
    fn b6_3_size_buffer_is_the_ring_config_bytes() {
        for bytes in [4096, 1 << 20] {
            let ring = Ring::new(RingConfig::with_bytes(bytes));
            assert_eq!(
                ret(&ring, ROOT, call(action::SIZE_BUFFER, 0)),
                Ok(i32::try_from(bytes).unwrap())
            );
            let ring_full = ten_records();
            assert_eq!(
                ret(&ring_full, ROOT, call(action::SIZE_BUFFER, 0)),
                Ok(131072)
            );
        }
    }

    // ---- console save/restore -----------------------------------------------------------

    fn console(ring: &Ring) -> (u8, Option<u8>) {
        let st = ring.syslog_state();
        (st.console_level, st.saved_console_level)
    }

    #[test]
    fn console_off_twice_keeps_the_first_saved_level() {
        let ring = ring_of(&[]);
        ret(&ring, ROOT, call(action::CONSOLE_LEVEL, 7)).unwrap();
        ret(&ring, ROOT, call(action::CONSOLE_OFF, 0)).unwrap();
        assert_eq!(console(&ring), (1, Some(7)));
        ret(&ring, ROOT, call(action::CONSOLE_OFF, 0)).unwrap();
        assert_eq!(console(&ring), (1, Some(7)));
        ret(&ring, ROOT, call(action::CONSOLE_ON, 0)).unwrap();
        assert_eq!(console(&ring), (7, None));
    }

    #[test]
    fn console_on_twice_and_on_without_off_do_nothing() {
        let ring = ring_of(&[]);
        assert_eq!(
            compute(&ring, ROOT, call(action::CONSOLE_ON, 0), true),
            done(0)
        );
        assert_eq!(console(&ring), (DEFAULT_CONSOLE_LEVEL, None));
        ret(&ring, ROOT, call(action::CONSOLE_OFF, 0)).unwrap();
        ret(&ring, ROOT, call(action::CONSOLE_ON, 0)).unwrap();
        ret(&ring, ROOT, call(action::CONSOLE_LEVEL, 6)).unwrap();
        ret(&ring, ROOT, call(action::CONSOLE_ON, 0)).unwrap();
        assert_eq!(console(&ring), (6, None));
    }

    #[test]
    fn console_off_level_5_on_leaves_5() {
        let ring = ring_of(&[]);
        ret(&ring, ROOT, call(action::CONSOLE_OFF, 0)).unwrap();
        ret(&ring, ROOT, call(action::CONSOLE_LEVEL, 5)).unwrap();
        assert_eq!(console(&ring), (5, None));
        ret(&ring, ROOT, call(action::CONSOLE_ON, 0)).unwrap();
        assert_eq!(console(&ring), (5, None));
    }

    #[test]
    fn console_invalid_level_changes_nothing() {
        let ring = ring_of(&[]);
        ret(&ring, ROOT, call(action::CONSOLE_OFF, 0)).unwrap();
        assert_eq!(
            ret(&ring, ROOT, call(action::CONSOLE_LEVEL, 9)),
            Err(libc::EINVAL)
        );
        assert_eq!(console(&ring), (1, Some(DEFAULT_CONSOLE_LEVEL)));
    }

    // ---- property: READ delivers every byte exactly once ------------------------------

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            0u16..2048,
            any::<u64>().prop_map(|t| t % 10_000_000_000_000),
            proptest::collection::vec(
                prop_oneof![4 => 0x20u8..0x7f, 1 => Just(b'\n'), 1 => any::<u8>()],
                0..200,
            ),
        )
            .prop_map(|(prio, ts, text)| rec(prio, ts, &text))
    }

    proptest! {
        #[test]
        fn b4_reads_with_random_lengths_reproduce_the_b3_text(
            records in proptest::collection::vec(arb_record(), 0..30),
            lens in proptest::collection::vec(1i32..400, 1..20),
            time in any::<bool>(),
        ) {
            let ring = Ring::new(RingConfig::default());
            let mut expected = Vec::new();
            for r in &records {
                ring.append(&r.as_ref());
                record::format_syslog(&r.as_ref(), time, &mut expected);
            }
            prop_assert_eq!(ring.first_seq(), 0, "the ring must not wrap");
            let mut got = Vec::new();
            for len in lens.iter().cycle() {
                match compute(&ring, ROOT, call(action::READ, *len), time) {
                    Outcome::WouldBlock => break,
                    Outcome::Done { ret, data, effect } => {
                        prop_assert!(ret > 0 && ret <= *len);
                        prop_assert_eq!(ret as usize, data.len());
                        prop_assert!(apply(&ring, effect));
                        got.extend_from_slice(&data);
                    }
                    Outcome::Error(e) => prop_assert!(false, "errno {}", e),
                }
            }
            prop_assert_eq!(got, expected);
            prop_assert_eq!(
                compute(&ring, ROOT, call(action::SIZE_UNREAD, 0), time),
                done(0)
            );
        }

        #[test]
        fn b5_read_all_is_the_longest_fitting_suffix(
            records in proptest::collection::vec(arb_record(), 0..30),
            len in 1i32..3000,
        ) {
            let ring = Ring::new(RingConfig::default());
            let mut est = Vec::new();
            for r in &records {
                ring.append(&r.as_ref());
                est.push(record::syslog_len(&r.as_ref(), true));
            }
            let len_u = usize::try_from(len).unwrap();
            // The first seq whose suffix estimate fits.
            let n = records.len();
            let start = (0..=n).find(|&s| est[s..].iter().sum::<usize>() <= len_u).unwrap();
            let (ret, data) = run(&ring, ROOT, call(action::READ_ALL, len)).unwrap();
            prop_assert_eq!(&data, &text_of(&ring, start as u64..n as u64, true));
            prop_assert_eq!(ret as usize, data.len());
            prop_assert!(data.len() <= len_u);
        }
    }
}
