//! `/proc/kmsg` on a container's ring (kmsg-semantics C), for a file the FUSE layer serves.
//!
//! `/proc/kmsg` is a thin wrapper around the destructive `syslog(2)` READ: every reader and
//! every `syslog(2)` READ caller share **one** cursor per ring (the ring's `syslog_seq` and
//! `syslog_partial`, C8), each byte is delivered once, and the text is the B3 format. rsyslog's
//! imklog reads it (D5). The functions here hold the semantics; the FUSE layer maps them to
//! replies:
//!
//! | call | here | reply |
//! |---|---|---|
//! | `open` | [`open`]: needs CAP_SYSLOG even with `dmesg_restrict = 0` (C2) | EPERM or success |
//! | `read(n)` | [`read`] (C4): [`ReadResult::Data`], [`ReadResult::Again`] for O_NONBLOCK with nothing unread, [`ReadResult::WouldBlock`] otherwise | park the read and call [`read`] again when the ring appends (its [`crate::ring::Listener`]) |
//! | `poll` | [`readable`]: `POLLIN \| POLLRDNORM` while unread records exist, never POLLERR (C5) | |
//! | `lseek`, `pread` | no effect on the data (C6): serve reads from the cursor, ignore the offset | |
//!
//! No permission check happens after open (C3): an opener that drops privileges keeps reading.
//!
//! The agent and these functions both consume the cursor. [`cursor_lock`] serialises them per
//! ring, so a byte that one of them delivered is never delivered again by the other.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::ring::Ring;
use crate::syslog::{self, action, Call, Outcome, Policy};

/// The lock that makes compute → deliver → apply of a cursor-consuming call atomic per ring.
///
/// Shared by the `syslog(2)` agent and the `/proc/kmsg` readers of the same ring. Keyed by the
/// ring's address; the entry dies with the last holder.
pub fn cursor_lock(ring: &Arc<Ring>) -> Arc<Mutex<()>> {
    static LOCKS: Mutex<Option<HashMap<usize, Weak<Mutex<()>>>>> = Mutex::new(None);
    let key = Arc::as_ptr(ring) as usize;
    let mut map = LOCKS.lock();
    let map = map.get_or_insert_with(HashMap::new);
    if let Some(l) = map.get(&key).and_then(Weak::upgrade) {
        return l;
    }
    if map.len() > 64 {
        map.retain(|_, w| w.strong_count() > 0);
    }
    let l = Arc::new(Mutex::new(()));
    map.insert(key, Arc::downgrade(&l));
    l
}

/// `open()` (C2): OPEN is a restricted action for every `dmesg_restrict` value, so the opener
/// needs CAP_SYSLOG (`policy.privileged`). `Err(errno)` on refusal.
pub fn open(ring: &Ring, policy: Policy) -> Result<(), i32> {
    // OPEN is restricted regardless of dmesg_restrict (C2); ask with restrict set so the
    // answer does not depend on the caller's setting.
    let policy = Policy {
        restrict: true,
        ..policy
    };
    let call = Call {
        action: action::OPEN,
        buf_is_null: true,
        len: 0,
    };
    match syslog::compute(ring, policy, call, true) {
        Outcome::Error(e) => Err(e),
        _ => Ok(()),
    }
}

/// The result of one `read()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResult {
    /// These bytes (B3 format), already consumed from the cursor.
    Data(Vec<u8>),
    /// O_NONBLOCK and nothing unread: EAGAIN (C4).
    Again,
    /// Blocking read and nothing unread: park it and retry after the ring appends.
    WouldBlock,
    /// Fail with this errno.
    Error(i32),
}

/// Whether a reader would find unread records: `poll` reports `POLLIN | POLLRDNORM` exactly
/// then (C5). The kernel asks SIZE_UNREAD in records, which is non-zero while the cursor is
/// before the end.
pub fn readable(ring: &Ring) -> bool {
    let seq = ring.syslog_state().seq;
    seq < ring.next_seq()
}

/// `read(fd, buf, len)` on `/proc/kmsg` (C4): a destructive read from the ring's shared syslog
/// cursor, with the B3 format and partial-record continuation of READ (B4). `time` is the
/// current `printk.time` ([`crate::syslog::printk_time`]). A zero-length read returns no data.
pub fn read(ring: &Arc<Ring>, len: usize, nonblock: bool, time: bool) -> ReadResult {
    if len == 0 {
        return ReadResult::Data(Vec::new());
    }
    let lock = cursor_lock(ring);
    let _g = lock.lock();
    if nonblock && !readable(ring) {
        return ReadResult::Again;
    }
    let call = Call {
        action: action::READ,
        buf_is_null: false,
        len: i32::try_from(len).unwrap_or(i32::MAX),
    };
    // No permission checks after open (C3).
    let policy = Policy {
        privileged: true,
        restrict: true,
    };
    match syslog::compute(ring, policy, call, time) {
        Outcome::Done { data, effect, .. } => {
            // Under the cursor lock nobody else consumes, so the cursor is still `from`.
            let applied = syslog::apply(ring, effect);
            debug_assert!(applied, "cursor moved under the cursor lock");
            ReadResult::Data(data)
        }
        Outcome::WouldBlock if nonblock => ReadResult::Again,
        Outcome::WouldBlock => ReadResult::WouldBlock,
        Outcome::Error(e) => ReadResult::Error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordRef;
    use crate::ring::RingConfig;

    fn ring_with(texts: &[&str]) -> Arc<Ring> {
        let ring = Arc::new(Ring::new(RingConfig::default()));
        for (i, t) in texts.iter().enumerate() {
            push(&ring, i as u64, t);
        }
        ring
    }

    fn push(ring: &Ring, ts: u64, text: &str) {
        ring.append(&RecordRef::plain(1_000_000 + ts, 6, text.as_bytes()));
    }

    const ROOT: Policy = Policy {
        privileged: true,
        restrict: true,
    };
    const NOBODY: Policy = Policy {
        privileged: false,
        restrict: false,
    };

    #[test]
    fn c2_open_needs_cap_syslog_even_without_restrict() {
        let ring = ring_with(&[]);
        assert_eq!(open(&ring, ROOT), Ok(()));
        assert_eq!(open(&ring, NOBODY), Err(libc::EPERM));
    }

    #[test]
    fn c4_read_is_destructive_and_b3_formatted() {
        let ring = ring_with(&["first", "second"]);
        assert!(readable(&ring));
        let got = read(&ring, 4096, true, true);
        assert_eq!(
            got,
            ReadResult::Data(b"<6>[    1.000000] first\n<6>[    1.000001] second\n".to_vec())
        );
        assert!(!readable(&ring));
        assert_eq!(read(&ring, 4096, true, true), ReadResult::Again);
        assert_eq!(read(&ring, 4096, false, true), ReadResult::WouldBlock);
        push(&ring, 2, "third");
        assert!(readable(&ring));
        assert_eq!(
            read(&ring, 4096, false, false),
            ReadResult::Data(b"<6>third\n".to_vec())
        );
    }

    #[test]
    fn c4_partial_reads_continue_where_they_stopped() {
        let ring = ring_with(&["abcdefghij"]);
        let mut all = Vec::new();
        loop {
            match read(&ring, 7, true, true) {
                ReadResult::Data(d) => {
                    assert!(d.len() <= 7);
                    all.extend(d);
                }
                ReadResult::Again => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(all, b"<6>[    1.000000] abcdefghij\n");
    }

    #[test]
    fn c4_zero_length_read_returns_nothing_and_consumes_nothing() {
        let ring = ring_with(&["x"]);
        assert_eq!(read(&ring, 0, true, true), ReadResult::Data(Vec::new()));
        assert!(readable(&ring));
    }

    #[test]
    fn c8_one_cursor_shared_with_syslog_read() {
        let ring = ring_with(&["a", "b"]);
        // A syslog(2) READ consumes the first record...
        let call = Call {
            action: action::READ,
            buf_is_null: false,
            len: 22,
        };
        match syslog::compute(&ring, ROOT, call, true) {
            Outcome::Done { data, effect, .. } => {
                assert_eq!(data, b"<6>[    1.000000] a\n");
                assert!(syslog::apply(&ring, effect));
            }
            other => panic!("{other:?}"),
        }
        // ...so /proc/kmsg continues with the second.
        assert_eq!(
            read(&ring, 4096, true, true),
            ReadResult::Data(b"<6>[    1.000001] b\n".to_vec())
        );
    }

    #[test]
    fn cursor_lock_is_per_ring() {
        let a = ring_with(&[]);
        let b = ring_with(&[]);
        let la = cursor_lock(&a);
        assert!(Arc::ptr_eq(&la, &cursor_lock(&a)));
        assert!(!Arc::ptr_eq(&la, &cursor_lock(&b)));
        let _g = la.lock();
        // Another ring's lock is free while this one is held.
        assert!(cursor_lock(&b).try_lock().is_some());
    }
}
