//! Loom models of the publish/read protocol, of the wake-up protocol (see the module design)
//! and of the hand-over to a successor writer (a restarted daemon adopting the memfd). Run with
//! `cargo test --release --lib --features loom loom`.
//!
//! The rings are tiny (96 bytes of data, two descriptors) so that three 40-byte records wrap
//! the data ring (the third blob straddles the end and overwrites the first) and reuse a
//! descriptor slot. Every record's text is derived from its seq, so a torn copy that slipped
//! past validation would show up as a wrong text.

use std::sync::Arc;
use std::time::Duration;

use loom::sync::atomic::AtomicBool;
use loom::thread;

use super::*;

fn tiny_ring() -> Ring {
    Ring::new_unchecked(RingConfig {
        bytes: 96,
        records: 2,
    })
}

fn text_of(seq: u64) -> [u8; 8] {
    [b'a' + seq as u8; 8]
}

fn append_n(ring: &Ring, n: u64) {
    append_range(ring, 0..n);
}

/// Append the records `seqs` (text, timestamp and priority derived from the seq) and check
/// that each gets its seq.
fn append_range(ring: &Ring, seqs: std::ops::Range<u64>) {
    for s in seqs {
        let text = text_of(s);
        let got = ring.append(&RecordRef {
            seq: 0,
            ts_usec: s * 10,
            prio: s as u16,
            cont: false,
            caller: None,
            text: &text,
            subsystem: b"",
            device: b"",
        });
        assert_eq!(got, s);
    }
}

/// Read `attempts` times from a reader at 0 and check every result against the protocol:
/// records are contiguous and intact, overruns exact.
fn read_and_check(ring: &Ring, attempts: usize) {
    let mut reader = Reader { seq: 0 };
    let mut buf = RecordBuf::new();
    for _ in 0..attempts {
        let before = reader.seq;
        match reader.next(ring, &mut buf) {
            Read::Record(r) => {
                assert_eq!(r.seq, before);
                assert_eq!(r.text, &text_of(before));
                assert_eq!(r.ts_usec, before * 10);
                assert_eq!(u64::from(r.prio), before);
            }
            Read::Overrun { lost, next } => {
                assert!(lost > 0);
                assert_eq!(before + lost, next);
            }
            Read::Empty => thread::yield_now(),
        }
    }
}

/// A ring of one record and 64 bytes: the second 40-byte record wraps the data ring and
/// overwrites the first one's words and descriptor.
fn one_record_ring() -> Ring {
    Ring::new_unchecked(RingConfig {
        bytes: 64,
        records: 1,
    })
}

fn builder(preemptions: usize) -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(preemptions);
    }
    b
}

#[test]
fn loom_publish_read_one_reader() {
    builder(3).check(|| {
        let ring = Arc::new(tiny_ring());
        let r = Arc::clone(&ring);
        let reader = thread::spawn(move || read_and_check(&r, 3));
        append_n(&ring, 3);
        reader.join().unwrap();
        assert_eq!((ring.first_seq(), ring.next_seq()), (1, 3));
    });
}

#[test]
fn loom_publish_read_two_readers() {
    builder(2).check(|| {
        let ring = Arc::new(one_record_ring());
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let r = Arc::clone(&ring);
                thread::spawn(move || read_and_check(&r, 2))
            })
            .collect();
        append_n(&ring, 2);
        for t in readers {
            t.join().unwrap();
        }
    });
}

/// LMM(append:D) / LMM(wait): a sleeper is never left waiting for a record that exists.
/// Loom's condition variable has no timeout, so a lost wake-up is a deadlock in the model.
#[test]
fn loom_wait_for_never_misses_append() {
    builder(3).check(|| {
        let ring = Arc::new(tiny_ring());
        let r = Arc::clone(&ring);
        let sleeper = thread::spawn(move || r.wait_for(0, Duration::from_secs(3600)));
        append_n(&ring, 1);
        assert!(sleeper.join().unwrap());
    });
}

struct Flag(AtomicBool);

impl Listener for Flag {
    fn appended(&self, next_seq: u64) {
        assert!(next_seq >= 1);
        self.0.store(true, Relaxed);
    }
}

/// LMM(append:D) / LMM(listen): an append is either seen by the registering thread's next
/// `next_seq()` or reported to the new listener.
#[test]
fn loom_listener_never_misses_append() {
    builder(3).check(|| {
        let ring = Arc::new(tiny_ring());
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let (r, f) = (Arc::clone(&ring), Arc::clone(&flag));
        let registrar = thread::spawn(move || {
            r.add_listener(f);
            r.next_seq() > 0
        });
        append_n(&ring, 1);
        let seen = registrar.join().unwrap();
        assert!(seen || flag.0.load(Relaxed));
    });
}

/// The hand-over (docs/architecture.md "Restart"): the writer dies in the middle of an append
/// (blob and descriptor written, `next_seq` not), a successor rebuilds its state from the
/// published words and appends on, wrapping over the dead writer's words, while a reader of
/// the old mapping (a draining predecessor) reads throughout. The reader sees every record
/// intact or an exact overrun, never the unpublished one, and the successor numbers on from
/// the last published record.
#[test]
fn loom_a_successor_writer_continues_where_a_dead_one_stopped() {
    builder(2).check(|| {
        let old = Arc::new(Ring::new_model(RingConfig {
            bytes: 96,
            records: 2,
        }));
        append_n(&old, 1);
        let dead = [b'x'; 8];
        old.append_unpublished(&RecordRef {
            seq: 0,
            ts_usec: 999,
            prio: 9,
            cont: false,
            caller: None,
            text: &dead,
            subsystem: b"",
            device: b"",
        });
        let new = Arc::new(old.successor().expect("the model ring is consistent"));
        assert_eq!((new.first_seq(), new.next_seq()), (0, 1));
        let reader = {
            let old = Arc::clone(&old);
            thread::spawn(move || read_and_check(&old, 3))
        };
        // The successor numbers on from the last published record.
        append_range(&new, 1..3);
        reader.join().unwrap();
        read_and_check(&new, 3);
    });
}
