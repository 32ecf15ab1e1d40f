//! Stress test of the lock-free ring: one writer appends 5 M records while eight readers
//! follow it (kmsg-semantics 0.3, A3.3, A9.1, A9.2).
//!
//! Every record's contents are a function of its seq, so a reader can check that each record
//! it gets is whole and intact. Each reader must see contiguous seqs, except where an overrun
//! moved it forward, and `records read + records lost` must equal the records appended.
//! Some readers are deliberately slow so that overruns happen; one stalls until its position
//! has certainly been overwritten, so the overrun path is always exercised.
//!
//! Run with `cargo test --release --test ring_stress -- --nocapture` to see the counts.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use kmsgfs::record::{Caller, RecordRef};
use kmsgfs::ring::{Read, Reader, RecordBuf, Ring, RingConfig};

const RECORDS: u64 = 5_000_000;
const READERS: usize = 8;
/// The reader that stalls until it has been overrun.
const STALLER: usize = READERS - 1;

fn mix(seq: u64) -> u64 {
    // splitmix64 finaliser
    let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Owned contents of record `seq`.
struct Expected {
    text: Vec<u8>,
    subsystem: Vec<u8>,
    device: Vec<u8>,
}

impl Expected {
    fn new() -> Self {
        Expected {
            text: Vec::with_capacity(1100),
            subsystem: Vec::with_capacity(16),
            device: Vec::with_capacity(48),
        }
    }

    /// Fill in the contents of record `seq`: its seq in hex, then a seq-derived filler of
    /// seq-derived length (0-400 bytes), then a checksum byte; sometimes a dictionary.
    fn fill(&mut self, seq: u64) {
        let h = mix(seq);
        self.text.clear();
        self.text
            .extend_from_slice(format!("{seq:016x}:").as_bytes());
        let len = (h % 401) as usize;
        let base = (h >> 16) as u8;
        self.text
            .extend((0..len).map(|i| base.wrapping_add((i as u8).wrapping_mul(13))));
        let sum = self.text.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        self.text.push(sum);
        self.subsystem.clear();
        self.device.clear();
        if h & (1 << 40) != 0 {
            self.subsystem
                .extend_from_slice(format!("s{:03x}", (h >> 50) & 0xfff).as_bytes());
        }
        if h & (1 << 41) != 0 {
            self.device
                .extend_from_slice(format!("+d:{:x}", h >> 20).as_bytes());
        }
    }

    fn record(&self, seq: u64) -> RecordRef<'_> {
        let h = mix(seq);
        RecordRef {
            seq,
            ts_usec: seq.wrapping_mul(3),
            prio: (h % 2048) as u16,
            cont: h & (1 << 42) != 0,
            caller: match (h >> 43) % 3 {
                0 => None,
                1 => Some(Caller::Thread(h as u32)),
                _ => Some(Caller::Cpu((h >> 8) as u32 & 0xff)),
            },
            text: &self.text,
            subsystem: &self.subsystem,
            device: &self.device,
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    read: u64,
    lost: u64,
    overruns: u64,
}

fn reader(ring: &Ring, index: usize) -> Tally {
    let mut pos = Reader { seq: 0 };
    let mut buf = RecordBuf::new();
    let mut want = Expected::new();
    let mut tally = Tally::default();
    let mut idle = 0u32;
    loop {
        let before = pos.seq;
        match pos.next(ring, &mut buf) {
            Read::Record(r) => {
                idle = 0;
                assert_eq!(r.seq, before, "reader {index}: record out of order");
                want.fill(before);
                assert_eq!(
                    r,
                    want.record(before),
                    "reader {index}: record {before} damaged"
                );
                tally.read += 1;
                if index == STALLER && tally.read == 1 {
                    // Stall until record 1 is certainly gone.
                    while ring.first_seq() <= 1 {
                        thread::sleep(Duration::from_millis(1));
                    }
                } else if index % 2 == 1 && tally.read % 4096 == 0 {
                    // Slow readers: fall behind now and then.
                    thread::sleep(Duration::from_micros(200));
                }
            }
            Read::Overrun { lost, next } => {
                assert!(lost > 0, "reader {index}: empty overrun at {before}");
                assert_eq!(before + lost, next, "reader {index}: overrun miscounted");
                assert_eq!(pos.seq, next);
                tally.lost += lost;
                tally.overruns += 1;
            }
            Read::Empty => {
                if before >= RECORDS {
                    break;
                }
                idle += 1;
                if idle < 16 {
                    thread::yield_now();
                } else {
                    ring.wait_for(before, Duration::from_millis(50));
                }
            }
        }
    }
    tally
}

#[test]
fn stress_one_writer_eight_readers() {
    let ring = Arc::new(Ring::new(RingConfig::default()));
    let start = Instant::now();
    let readers: Vec<_> = (0..READERS)
        .map(|i| {
            let ring = Arc::clone(&ring);
            thread::spawn(move || reader(&ring, i))
        })
        .collect();

    let mut rec = Expected::new();
    for seq in 0..RECORDS {
        rec.fill(seq);
        assert_eq!(ring.append(&rec.record(seq)), seq);
        if seq % 256 == 255 {
            // Let the readers catch up now and then, so that they read many records as well
            // as lose many.
            thread::yield_now();
        }
    }
    let write_time = start.elapsed();

    let tallies: Vec<Tally> = readers.into_iter().map(|t| t.join().unwrap()).collect();
    let stats = ring.stats();
    eprintln!(
        "appended {} records in {write_time:?}, all readers done after {:?}; ring {stats:?}",
        RECORDS,
        start.elapsed()
    );
    for (i, t) in tallies.iter().enumerate() {
        eprintln!("reader {i}: {t:?}");
        assert_eq!(
            t.read + t.lost,
            RECORDS,
            "reader {i}: records read + lost != appended"
        );
    }
    assert!(
        tallies[STALLER].overruns >= 1,
        "the stalled reader was never overrun"
    );
    assert_eq!(stats.appended, RECORDS);
    assert_eq!(stats.overwritten, ring.first_seq());
    assert_eq!(stats.records, RECORDS - ring.first_seq());
    assert!(stats.bytes as usize <= ring.config().bytes);
}
