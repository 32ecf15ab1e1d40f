//! Unit and property tests of the ring, named after kmsg-semantics items where one applies.
//!
//! The property tests run the ring side by side with [`Model`], the obvious `VecDeque`
//! implementation of the same semantics, and compare every observable after every step.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::record::Record;

fn rec(text: &[u8]) -> RecordRef<'_> {
    RecordRef {
        seq: 0,
        ts_usec: 7,
        prio: 6,
        cont: false,
        caller: None,
        text,
        subsystem: b"",
        device: b"",
    }
}

fn read_owned(ring: &Ring, seq: u64) -> Result<Record, Read<'static>> {
    let mut buf = RecordBuf::new();
    match ring.read(seq, &mut buf) {
        Read::Record(r) => Ok(r.to_owned()),
        Read::Overrun { lost, next } => Err(Read::Overrun { lost, next }),
        Read::Empty => Err(Read::Empty),
    }
}

#[test]
fn state_0_3_seqs_start_at_zero_without_gaps() {
    let ring = Ring::new(RingConfig::default());
    for i in 0..10u64 {
        assert_eq!(ring.append(&rec(format!("r{i}").as_bytes())), i);
    }
    for i in 0..10u64 {
        let r = read_owned(&ring, i).unwrap();
        assert_eq!(r.seq, i);
        assert_eq!(r.text, format!("r{i}").as_bytes());
    }
    assert_eq!(ring.first_seq(), 0);
    assert_eq!(ring.next_seq(), 10);
}

#[test]
fn state_0_3_fields_round_trip() {
    let ring = Ring::new(RingConfig::default());
    let text = vec![b'x'; TEXT_MAX];
    let cases = [
        RecordRef {
            seq: 99,
            ts_usec: u64::MAX,
            prio: 2047,
            cont: true,
            caller: Some(Caller::Thread(u32::MAX)),
            text: &text,
            subsystem: b"123456789012345",
            device: &[b'd'; DEVICE_MAX],
        },
        RecordRef {
            seq: 0,
            ts_usec: 0,
            prio: 0,
            cont: false,
            caller: Some(Caller::Cpu(3)),
            text: b"a\nb\0c\xff",
            subsystem: b"",
            device: b"+pci:0000:00:01.0",
        },
        RecordRef {
            caller: None,
            text: b"",
            ..rec(b"")
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let seq = ring.append(c);
        let got = read_owned(&ring, seq).unwrap();
        assert_eq!(got, RecordRef { seq, ..*c }.to_owned(), "case {i}");
    }
}

#[test]
fn state_0_3_fields_cut_to_kernel_limits() {
    let ring = Ring::new(RingConfig::default());
    let text = vec![b't'; TEXT_MAX + 100];
    let sub = vec![b's'; SUBSYSTEM_MAX + 1];
    let dev = vec![b'd'; DEVICE_MAX + 1];
    let r = RecordRef {
        text: &text,
        subsystem: &sub,
        device: &dev,
        ..rec(b"")
    };
    let seq = ring.append(&r);
    let got = read_owned(&ring, seq).unwrap();
    assert_eq!(got.text.len(), TEXT_MAX);
    assert_eq!(got.subsystem.len(), SUBSYSTEM_MAX);
    assert_eq!(got.device.len(), DEVICE_MAX);
    assert_eq!(ring.stats().bytes as usize, MAX_FOOTPRINT);
}

#[test]
fn config_validation_and_minimum() {
    assert_eq!(RingConfig::default().validate(), Ok(()));
    assert_eq!(
        RingConfig::with_bytes(1024).validate(),
        Err(RingConfigError::TooSmall { bytes: 1024 })
    );
    assert_eq!(
        RingConfig::with_bytes(MAX_BYTES + 1).validate(),
        Err(RingConfigError::TooLarge {
            bytes: MAX_BYTES + 1
        })
    );
    let zero = RingConfig {
        bytes: 8192,
        records: 0,
    };
    assert_eq!(zero.validate(), Err(RingConfigError::NoRecords));
    assert_eq!(Ring::new(zero).config().records, 1);
    assert_eq!(
        Ring::new(RingConfig::with_bytes(100)).config().bytes,
        MIN_BYTES
    );
    let many = RingConfig {
        bytes: 8192,
        records: usize::MAX,
    };
    assert_eq!(Ring::new(many).config().records, 8192 / 32);
    assert_eq!(
        Ring::new(RingConfig::default()).config(),
        RingConfig::default()
    );
}

#[test]
fn a9_1_oldest_whole_records_dropped_by_bytes() {
    let ring = Ring::new(RingConfig::with_bytes(MIN_BYTES));
    let text = [b'q'; 120]; // footprint 152
    for _ in 0..1000 {
        ring.append(&rec(&text));
    }
    let fits = (MIN_BYTES / 152) as u64;
    let s = ring.stats();
    assert_eq!(s.records, fits);
    assert_eq!(s.bytes, fits * 152);
    assert_eq!(s.appended, 1000);
    assert_eq!(s.overwritten, 1000 - fits);
    assert_eq!(ring.first_seq(), 1000 - fits);
    for seq in ring.first_seq()..ring.next_seq() {
        let r = read_owned(&ring, seq).unwrap();
        assert_eq!((r.seq, r.text.as_slice()), (seq, &text[..]));
    }
}

#[test]
fn a9_1_oldest_records_dropped_by_count() {
    let ring = Ring::new(RingConfig {
        bytes: 64 * 1024,
        records: 5,
    });
    for i in 0..12 {
        ring.append(&rec(format!("{i}").as_bytes()));
    }
    assert_eq!(ring.first_seq(), 7);
    assert_eq!(ring.stats().records, 5);
}

#[test]
fn a1_4_a3_3_overrun_moves_reader_to_oldest() {
    let ring = Ring::new(RingConfig::with_bytes(MIN_BYTES));
    let mut reader = Reader::at_oldest(&ring);
    assert_eq!(reader.seq, 0);
    let mut buf = RecordBuf::new();
    assert_eq!(reader.next(&ring, &mut buf), Read::Empty);
    for _ in 0..200 {
        ring.append(&rec(&[b'z'; 100]));
    }
    let first = ring.first_seq();
    assert!(first > 0);
    assert_eq!(reader.readiness(&ring), Readiness::Overrun);
    assert_eq!(
        reader.next(&ring, &mut buf),
        Read::Overrun {
            lost: first,
            next: first
        }
    );
    assert_eq!(reader.seq, first);
    assert_eq!(reader.readiness(&ring), Readiness::Ready);
    match reader.next(&ring, &mut buf) {
        Read::Record(r) => assert_eq!(r.seq, first),
        other => panic!("expected record {first}, got {other:?}"),
    }
    assert_eq!(Reader::at_oldest(&ring).seq, first);
}

#[test]
fn a4_seek_set_end_data() {
    let ring = Ring::new(RingConfig::with_bytes(MIN_BYTES));
    for _ in 0..100 {
        ring.append(&rec(&[b'a'; 100]));
    }
    ring.set_clear_seq(3);
    let mut reader = Reader::at_oldest(&ring);
    reader.seek_end(&ring);
    assert_eq!(reader.seq, 100);
    assert_eq!(reader.readiness(&ring), Readiness::Empty);
    reader.seek_oldest(&ring);
    assert_eq!(reader.seq, ring.first_seq());
    // A4.3 / A9.3: the clear point is behind the ring, the next read reports EPIPE.
    reader.seek_clear(&ring);
    assert_eq!(reader.seq, 3);
    let mut buf = RecordBuf::new();
    let first = ring.first_seq();
    assert_eq!(
        reader.next(&ring, &mut buf),
        Read::Overrun {
            lost: first - 3,
            next: first
        }
    );
}

#[test]
fn a9_3_clear_seq_not_moved_by_overwrite() {
    let ring = Ring::new(RingConfig::with_bytes(MIN_BYTES));
    ring.append(&rec(b"one"));
    ring.set_clear_seq(ring.next_seq());
    for _ in 0..500 {
        ring.append(&rec(&[b'b'; 64]));
    }
    assert_eq!(ring.clear_seq(), 1);
    assert!(ring.first_seq() > 1);
}

#[test]
fn b4_5_syslog_cursor_skips_overwritten() {
    let ring = Ring::new(RingConfig::with_bytes(MIN_BYTES));
    {
        let mut st = ring.syslog_state();
        st.partial = 10;
        assert_eq!(st.skip_overwritten(ring.first_seq()), 0);
        assert_eq!(st.partial, 10);
    }
    for _ in 0..500 {
        ring.append(&rec(&[b'b'; 64]));
    }
    let first = ring.first_seq();
    let mut st = ring.syslog_state();
    assert_eq!(st.skip_overwritten(first), first);
    assert_eq!((st.seq, st.partial), (first, 0));
}

#[test]
fn wait_for_wakes_on_append_and_times_out() {
    let ring = Arc::new(Ring::new(RingConfig::default()));
    assert!(!ring.wait_for(0, Duration::from_millis(20)));
    let r2 = Arc::clone(&ring);
    let t = thread::spawn(move || r2.wait_for(0, Duration::from_secs(60)));
    thread::sleep(Duration::from_millis(50));
    ring.append(&rec(b"wake"));
    assert!(t.join().unwrap());
    assert!(ring.wait_for(0, Duration::ZERO));
    assert!(!ring.wait_for(1, Duration::ZERO));
    assert!(ring.wait_for(0, Duration::MAX));
}

struct Counter(AtomicU64);

impl Listener for Counter {
    fn appended(&self, next_seq: u64) {
        self.0.fetch_max(next_seq, Ordering::SeqCst);
    }
}

#[test]
fn listeners_told_after_append_until_removed() {
    let ring = Ring::new(RingConfig::default());
    ring.append(&rec(b"before"));
    let c = Arc::new(Counter(AtomicU64::new(0)));
    let l: Arc<dyn Listener> = c.clone();
    ring.add_listener(Arc::clone(&l));
    assert_eq!(c.0.load(Ordering::SeqCst), 0);
    ring.append(&rec(b"after"));
    assert_eq!(c.0.load(Ordering::SeqCst), 2);
    assert!(ring.remove_listener(&l));
    assert!(!ring.remove_listener(&l));
    ring.append(&rec(b"gone"));
    assert_eq!(c.0.load(Ordering::SeqCst), 2);
}

#[test]
fn tiny_unchecked_ring_cuts_records_to_fit() {
    let ring = Ring::new_unchecked(RingConfig {
        bytes: 100,
        records: 3,
    });
    let r = RecordRef {
        subsystem: b"sub",
        device: b"dev",
        ..rec(&[b'x'; 200])
    };
    let seq = ring.append(&r);
    let got = read_owned(&ring, seq).unwrap();
    assert_eq!(got.subsystem, b"sub");
    assert_eq!(got.device, b"dev");
    assert_eq!(got.text.len(), 96 - 32 - 6);
    assert!(ring.stats().bytes <= 100);
}

// ---------------------------------------------------------------------------------------
// Property tests against a model.

/// The placeholder implementation's semantics, kept obvious.
struct Model {
    cfg: RingConfig,
    recs: VecDeque<Record>,
    first: u64,
    next: u64,
    bytes: usize,
    clear: u64,
    syslog: (u64, usize),
}

impl Model {
    fn new(cfg: RingConfig) -> Self {
        Model {
            cfg,
            recs: VecDeque::new(),
            first: 0,
            next: 0,
            bytes: 0,
            clear: 0,
            syslog: (0, 0),
        }
    }

    fn append(&mut self, r: &RecordRef<'_>) -> u64 {
        let r = clamp_fields(r);
        let size = footprint(&r);
        while !self.recs.is_empty()
            && (self.bytes + size > self.cfg.bytes || self.recs.len() + 1 > self.cfg.records)
        {
            let old = self.recs.pop_front().unwrap();
            self.bytes -= footprint(&old.as_ref());
            self.first += 1;
        }
        let mut owned = r.to_owned();
        owned.seq = self.next;
        self.recs.push_back(owned);
        self.bytes += size;
        self.next += 1;
        self.next - 1
    }

    fn read(&self, seq: u64) -> Result<Record, Read<'static>> {
        if seq >= self.next {
            Err(Read::Empty)
        } else if seq < self.first {
            Err(Read::Overrun {
                lost: self.first - seq,
                next: self.first,
            })
        } else {
            Ok(self.recs[(seq - self.first) as usize].clone())
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        text: usize,
        sub: usize,
        dev: usize,
        fill: u8,
        prio: u16,
        cont: bool,
        caller: u8,
    },
    Read(usize),
    SeekOldest(usize),
    SeekEnd(usize),
    SeekClear(usize),
    Clear,
    /// A destructive READ consuming up to `n` records, leaving `partial` bytes of the next.
    SyslogRead {
        n: u64,
        partial: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            prop_oneof![0..64usize, 0..1200usize],
            0..20usize,
            0..60usize,
            any::<u8>(),
            0..2048u16,
            any::<bool>(),
            0..3u8
        )
            .prop_map(|(text, sub, dev, fill, prio, cont, caller)| Op::Append {
                text,
                sub,
                dev,
                fill,
                prio,
                cont,
                caller
            }),
        6 => (0..3usize).prop_map(Op::Read),
        1 => (0..3usize).prop_map(Op::SeekOldest),
        1 => (0..3usize).prop_map(Op::SeekEnd),
        1 => (0..3usize).prop_map(Op::SeekClear),
        1 => Just(Op::Clear),
        1 => (0..4u64, 0..50usize).prop_map(|(n, partial)| Op::SyslogRead { n, partial }),
    ]
}

fn config() -> impl Strategy<Value = RingConfig> {
    (MIN_BYTES..3 * MIN_BYTES, 1..80usize)
        .prop_map(|(bytes, records)| RingConfig { bytes, records })
}

fn bytes_of(len: usize, fill: u8, salt: u64) -> Vec<u8> {
    (0..len)
        .map(|i| fill.wrapping_add((i as u64).wrapping_mul(31).wrapping_add(salt) as u8))
        .collect()
}

fn check_same(ring: &Ring, model: &Model) {
    assert_eq!(ring.first_seq(), model.first);
    assert_eq!(ring.next_seq(), model.next);
    assert_eq!(ring.clear_seq(), model.clear);
    let s = ring.stats();
    assert_eq!(
        s,
        RingStats {
            appended: model.next,
            overwritten: model.first,
            records: model.recs.len() as u64,
            bytes: model.bytes as u64,
        }
    );
    assert!(s.bytes as usize <= ring.config().bytes);
    assert!(s.records as usize <= ring.config().records);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Saved failures live next to this file (tests.proptest-regressions), not in a
        // top-level folder.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    /// Every observable of the ring equals the model's after every step: seqs contiguous,
    /// records whole and intact, overrun counts exact, clear and syslog cursors right across
    /// wraps.
    #[test]
    fn prop_ring_matches_model(cfg in config(), ops in prop::collection::vec(op(), 1..300)) {
        let ring = Ring::new(cfg);
        prop_assert_eq!(ring.config(), cfg.effective());
        let mut model = Model::new(ring.config());
        let mut readers = [Reader::at_oldest(&ring); 3];
        let mut model_pos = [0u64; 3];
        let mut last_seq: [Option<u64>; 3] = [None; 3];
        let mut buf = RecordBuf::new();

        for op in ops {
            match op {
                Op::Append { text, sub, dev, fill, prio, cont, caller } => {
                    let salt = model.next;
                    let (t, s, d) = (
                        bytes_of(text, fill, salt),
                        bytes_of(sub, fill ^ 0x55, salt),
                        bytes_of(dev, fill ^ 0xaa, salt),
                    );
                    let r = RecordRef {
                        seq: 12345,
                        ts_usec: salt * 1000 + u64::from(fill),
                        prio,
                        cont,
                        caller: match caller {
                            0 => None,
                            1 => Some(Caller::Thread(u32::from(fill) << 20 | 7)),
                            _ => Some(Caller::Cpu(u32::from(fill))),
                        },
                        text: &t,
                        subsystem: &s,
                        device: &d,
                    };
                    prop_assert_eq!(ring.append(&r), model.append(&r));
                }
                Op::Read(i) => {
                    let before = readers[i].seq;
                    prop_assert_eq!(before, model_pos[i]);
                    let expect = model.read(before);
                    let got = readers[i].next(&ring, &mut buf);
                    match (&got, &expect) {
                        (Read::Record(r), Ok(m)) => {
                            prop_assert_eq!(&r.to_owned(), m);
                            // Contiguous: a record follows the previous one or an overrun
                            // that moved the reader exactly here.
                            if let Some(prev) = last_seq[i] {
                                prop_assert!(r.seq == prev + 1 || r.seq == before);
                            }
                            last_seq[i] = Some(r.seq);
                            model_pos[i] = before + 1;
                        }
                        (Read::Overrun { lost, next }, Err(Read::Overrun { lost: ml, next: mn })) => {
                            prop_assert_eq!((*lost, *next), (*ml, *mn));
                            prop_assert_eq!(before + lost, *next);
                            model_pos[i] = *next;
                        }
                        (Read::Empty, Err(Read::Empty)) => {}
                        _ => prop_assert!(false, "ring {:?} vs model {:?}", got, expect),
                    }
                    prop_assert_eq!(readers[i].seq, model_pos[i]);
                }
                Op::SeekOldest(i) => {
                    readers[i].seek_oldest(&ring);
                    model_pos[i] = model.first;
                    last_seq[i] = None;
                    prop_assert_eq!(readers[i].seq, model_pos[i]);
                }
                Op::SeekEnd(i) => {
                    readers[i].seek_end(&ring);
                    model_pos[i] = model.next;
                    last_seq[i] = None;
                    prop_assert_eq!(readers[i].seq, model_pos[i]);
                }
                Op::SeekClear(i) => {
                    readers[i].seek_clear(&ring);
                    model_pos[i] = model.clear;
                    last_seq[i] = None;
                    prop_assert_eq!(readers[i].seq, model_pos[i]);
                }
                Op::Clear => {
                    ring.set_clear_seq(ring.next_seq());
                    model.clear = model.next;
                }
                Op::SyslogRead { n, partial } => {
                    let mut st = ring.syslog_state();
                    // Model of B4.5: an overwritten cursor jumps to the oldest record.
                    let (mseq, mpartial) = model.syslog;
                    let (mseq, mpartial, mlost) = if mseq < model.first {
                        (model.first, 0, model.first - mseq)
                    } else {
                        (mseq, mpartial, 0)
                    };
                    prop_assert_eq!(st.skip_overwritten(ring.first_seq()), mlost);
                    prop_assert_eq!((st.seq, st.partial), (mseq, mpartial));
                    let to = (mseq + n).min(model.next);
                    let partial = if to < model.next { partial } else { 0 };
                    st.seq = to;
                    st.partial = partial;
                    model.syslog = (to, partial);
                }
            }
            check_same(&ring, &model);
            // Every stored record is whole and equal to the model's, at any time.
            if model.next % 16 == 0 {
                for seq in model.first..model.next {
                    let got = ring.read(seq, &mut buf);
                    match got {
                        Read::Record(r) => prop_assert_eq!(r.to_owned(), model.read(seq).unwrap()),
                        other => prop_assert!(false, "seq {} unreadable: {:?}", seq, other),
                    }
                }
            }
        }
    }

    /// The clear point never moves on overwrite, and SEEK_DATA to it reports exactly the
    /// records lost (A4.3, A9.3).
    #[test]
    fn prop_clear_point_survives_wrap(
        sizes in prop::collection::vec(0..1100usize, 1..200),
        clear_at in 0..200usize,
    ) {
        let ring = Ring::new(RingConfig::with_bytes(MIN_BYTES));
        let mut clear = 0;
        for (i, len) in sizes.iter().enumerate() {
            if i == clear_at {
                clear = ring.next_seq();
                ring.set_clear_seq(clear);
            }
            ring.append(&rec(&bytes_of(*len, 1, i as u64)));
        }
        prop_assert_eq!(ring.clear_seq(), clear);
        let mut reader = Reader::at_oldest(&ring);
        reader.seek_clear(&ring);
        let mut buf = RecordBuf::new();
        let first = ring.first_seq();
        let got = reader.next(&ring, &mut buf);
        if clear < first {
            prop_assert_eq!(got, Read::Overrun { lost: first - clear, next: first });
        } else if clear < ring.next_seq() {
            match got {
                Read::Record(r) => prop_assert_eq!(r.seq, clear),
                other => prop_assert!(false, "expected record {}, got {:?}", clear, other),
            }
        } else {
            prop_assert_eq!(got, Read::Empty);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared rings: a memfd a restarted daemon adopts (docs/architecture.md "Restart").

/// Every record of `ring`, as owned values, oldest first.
fn all_records(ring: &Ring) -> Vec<Record> {
    (ring.first_seq()..ring.next_seq())
        .map(|s| read_owned(ring, s).expect("stored record"))
        .collect()
}

/// A copy of `ring`'s memfd, as a holder process keeps it.
fn holder_copy(ring: &Ring) -> std::os::fd::OwnedFd {
    ring.memfd()
        .expect("shared ring")
        .try_clone_to_owned()
        .unwrap()
}

#[test]
fn adopted_ring_has_every_record_cursor_and_meta_of_the_dead_one() {
    let config = RingConfig::with_bytes(4096);
    let ring = Ring::new_shared(config, "kmsgfs-test-ring").unwrap();
    // Enough records to wrap the data ring several times, one with a dictionary.
    for i in 0..300u64 {
        let text = format!("record {i} {}", "x".repeat((i % 50) as usize));
        let mut r = rec(text.as_bytes());
        if i == 299 {
            r.subsystem = b"pci";
            r.device = b"+pci:0000:00:1f.2";
        }
        ring.append(&r);
    }
    ring.set_clear_seq(ring.next_seq() - 10);
    {
        let mut st = ring.syslog_state();
        st.seq = ring.next_seq() - 5;
        st.partial = 3;
        st.time = false;
        st.console_level = 7;
        st.saved_console_level = Some(2);
    }
    ring.meta()[0].store(0xfeed, Ordering::Relaxed);
    let before = all_records(&ring);
    let (stats, first, next, clear) = (
        ring.stats(),
        ring.first_seq(),
        ring.next_seq(),
        ring.clear_seq(),
    );
    let syslog = *ring.syslog_state();
    let fd = holder_copy(&ring);
    drop(ring); // the daemon dies

    let ring = Ring::adopt(fd).unwrap();
    assert_eq!(ring.config(), config.effective());
    assert_eq!(
        (ring.first_seq(), ring.next_seq(), ring.clear_seq()),
        (first, next, clear)
    );
    assert_eq!(ring.stats(), stats, "the writer state is rebuilt exactly");
    assert_eq!(*ring.syslog_state(), syslog);
    assert_eq!(ring.meta()[0].load(Ordering::Relaxed), 0xfeed);
    assert_eq!(all_records(&ring), before);
    // Appends go on with the next sequence number and reclaim exactly as before the restart:
    // the adopted ring behaves like a heap ring fed the same records.
    let twin = Ring::new(config);
    for r in &before {
        twin.append(&r.as_ref());
    }
    for i in 0..200u64 {
        let text = format!("after {i} {}", "y".repeat((i % 70) as usize));
        let a = ring.append(&rec(text.as_bytes()));
        twin.append(&rec(text.as_bytes()));
        assert_eq!(a, next + i);
    }
    let (got, want) = (all_records(&ring), all_records(&twin));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((&g.text, g.prio), (&w.text, w.prio));
    }
    assert_eq!(ring.stats().bytes, twin.stats().bytes);
}

#[test]
fn an_append_the_dead_daemon_did_not_publish_is_not_there() {
    let ring = Ring::new_shared(RingConfig::with_bytes(4096), "kmsgfs-test-ring").unwrap();
    for i in 0..20u64 {
        ring.append(&rec(format!("published {i}").as_bytes()));
    }
    // A crash in the middle of an append: the blob and descriptor of the next record were
    // written, `next_seq` was not.
    let next = ring.next_seq();
    let slot = (next & ring.mask) as usize;
    let head = ring.writer.lock().head;
    ring.data()[head].store(next, Ordering::Relaxed);
    ring.data()[head + 3].store(999_999, Ordering::Relaxed);
    ring.descs()[slot].store(head as u64, Ordering::Relaxed);
    let fd = holder_copy(&ring);
    drop(ring);
    let ring = Ring::adopt(fd).unwrap();
    assert_eq!(ring.next_seq(), next);
    assert_eq!(read_owned(&ring, next), Err(Read::Empty));
    assert_eq!(ring.append(&rec(b"after")), next);
    assert_eq!(read_owned(&ring, next).unwrap().text, b"after".to_vec());
}

#[test]
fn adopt_refuses_what_is_not_a_consistent_ring() {
    let ring = Ring::new_shared(RingConfig::with_bytes(4096), "kmsgfs-test-ring").unwrap();
    for i in 0..5u64 {
        ring.append(&rec(format!("r{i}").as_bytes()));
    }
    let words = |r: &Ring| -> Vec<u64> {
        r.region
            .words()
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .collect()
    };
    let good = words(&ring);
    let check = |poke: &dyn Fn(&Ring)| {
        for (w, v) in ring.region.words().iter().zip(&good) {
            w.store(*v, Ordering::Relaxed);
        }
        poke(&ring);
        Ring::adopt(holder_copy(&ring))
    };
    assert!(matches!(
        check(&|r| r.header()[layout::MAGIC_AT].store(1, Ordering::Relaxed)),
        Err(RingAdoptError::Layout { .. })
    ));
    assert!(matches!(
        check(&|r| r.header()[layout::VERSION_AT].store(99, Ordering::Relaxed)),
        Err(RingAdoptError::Layout { .. })
    ));
    assert!(matches!(
        check(&|r| r.first_word().store(9, Ordering::Relaxed)),
        Err(RingAdoptError::Inconsistent(_))
    ));
    assert!(matches!(
        check(&|r| r.header()[layout::BYTES_AT].store(8192, Ordering::Relaxed)),
        Err(RingAdoptError::Inconsistent(_))
    ));
    assert!(matches!(
        check(&|r| r.descs()[2].store(1 << 40, Ordering::Relaxed)),
        Err(RingAdoptError::Inconsistent(_))
    ));
    assert!(matches!(
        check(&|r| {
            let at = r.descs()[3].load(Ordering::Relaxed) as usize;
            r.data()[at].store(77, Ordering::Relaxed);
        }),
        Err(RingAdoptError::Inconsistent(_))
    ));
    assert!(check(&|_| {}).is_ok(), "the untouched ring is adopted");
}
