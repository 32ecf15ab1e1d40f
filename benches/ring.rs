//! Ring benchmarks: the lock-free ring against a `Mutex<VecDeque>` ring with the same
//! semantics (the crate's original placeholder), side by side in one run.
//!
//! * `append_<size>B/<impl>/<mode>-<readers>`: one append of a record with `size` bytes of
//!   text while `readers` threads read the ring concurrently:
//!   * `follow`: each reader tails the ring like a `/dev/kmsg` follower (journald): it reads
//!     every record it can and yields the CPU when caught up;
//!   * `scan`: each reader reads the stored records over and over without pause, like
//!     back-to-back `dmesg` dumps: it restarts from the oldest record when caught up.
//! * `read_<size>B/<impl>`: one read of a stored record (a reader walking a full ring, no
//!   writer).
//! * `read_live_<size>B/<impl>`: one record read while a writer thread appends without
//!   pause: the time for the reader to get its next record (skipping ahead after an
//!   overrun), i.e. the reader's side of the contention the `append_*` groups show from the
//!   writer's side.
//!
//! Run with `cargo bench --bench ring`; results are summarised in docs/benchmarks.md.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use parking_lot::Mutex;

use kmsgfs::record::{Record, RecordRef};
use kmsgfs::ring::{footprint, Read, RecordBuf, Ring, RingConfig};

/// What a reader got, without the borrowed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    Record,
    Overrun(u64),
    Empty,
}

/// The operations the benchmarks need, over both implementations.
trait BenchRing: Send + Sync + 'static {
    type Buf: Default;
    fn append(&self, rec: &RecordRef<'_>) -> u64;
    fn read(&self, seq: u64, buf: &mut Self::Buf) -> Got;
    fn first_seq(&self) -> u64;
}

impl BenchRing for Ring {
    type Buf = RecordBuf;

    fn append(&self, rec: &RecordRef<'_>) -> u64 {
        Ring::append(self, rec)
    }

    fn read(&self, seq: u64, buf: &mut RecordBuf) -> Got {
        match Ring::read(self, seq, buf) {
            Read::Record(r) => {
                black_box(r.text);
                Got::Record
            }
            Read::Overrun { next, .. } => Got::Overrun(next),
            Read::Empty => Got::Empty,
        }
    }

    fn first_seq(&self) -> u64 {
        Ring::first_seq(self)
    }
}

/// The baseline: the placeholder ring's storage and reading, one mutex around a `VecDeque`
/// of owned records. (Its wake-up step, an unconditional condvar notify under a second lock,
/// is left out so that only storage and reading are compared.)
struct MutexRing {
    config: RingConfig,
    inner: Mutex<Inner>,
}

struct Inner {
    records: VecDeque<Record>,
    first: u64,
    next: u64,
    bytes: usize,
    overwritten: u64,
}

impl MutexRing {
    fn new(config: RingConfig) -> Self {
        MutexRing {
            config,
            inner: Mutex::new(Inner {
                records: VecDeque::new(),
                first: 0,
                next: 0,
                bytes: 0,
                overwritten: 0,
            }),
        }
    }
}

impl BenchRing for MutexRing {
    type Buf = Record;

    fn append(&self, rec: &RecordRef<'_>) -> u64 {
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
        let seq = inner.next;
        let mut owned = rec.to_owned();
        owned.seq = seq;
        inner.records.push_back(owned);
        inner.bytes += size;
        inner.next += 1;
        seq
    }

    fn read(&self, seq: u64, buf: &mut Record) -> Got {
        let inner = self.inner.lock();
        if seq >= inner.next {
            return Got::Empty;
        }
        if seq < inner.first {
            return Got::Overrun(inner.first);
        }
        let idx = usize::try_from(seq - inner.first).expect("index fits");
        buf.clone_from(&inner.records[idx]);
        drop(inner);
        black_box(&buf.text);
        Got::Record
    }

    fn first_seq(&self) -> u64 {
        self.inner.lock().first
    }
}

fn record(text: &[u8]) -> RecordRef<'_> {
    RecordRef {
        seq: 0,
        ts_usec: 1_234_567,
        prio: 6,
        cont: false,
        caller: None,
        text,
        subsystem: b"",
        device: b"",
    }
}

/// How the concurrent readers of an append benchmark behave.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Follow,
    Scan,
}

/// Reader threads that read `ring` until dropped.
struct Followers {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Followers {
    fn start<R: BenchRing>(ring: &Arc<R>, n: usize, mode: Mode) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let ring = Arc::clone(ring);
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    let mut buf = R::Buf::default();
                    let mut seq = ring.first_seq();
                    while !stop.load(Ordering::Relaxed) {
                        match ring.read(seq, &mut buf) {
                            Got::Record => seq += 1,
                            Got::Overrun(next) => seq = next,
                            Got::Empty => match mode {
                                Mode::Follow => thread::yield_now(),
                                Mode::Scan => seq = ring.first_seq(),
                            },
                        }
                    }
                })
            })
            .collect();
        Followers { stop, threads }
    }
}

impl Drop for Followers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().expect("reader thread panicked");
        }
    }
}

fn bench_append<R: BenchRing>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    make: fn(RingConfig) -> R,
    text: &[u8],
) {
    for (mode, readers) in [
        (Mode::Follow, 0),
        (Mode::Follow, 1),
        (Mode::Follow, 4),
        (Mode::Scan, 1),
        (Mode::Scan, 4),
    ] {
        let ring = Arc::new(make(RingConfig::default()));
        let _followers = Followers::start(&ring, readers, mode);
        let id = match (mode, readers) {
            (_, 0) => "0".to_string(),
            (Mode::Follow, n) => format!("follow-{n}"),
            (Mode::Scan, n) => format!("scan-{n}"),
        };
        c.bench_with_input(BenchmarkId::new(name, id), &readers, |b, _| {
            let rec = record(text);
            b.iter(|| ring.append(black_box(&rec)));
        });
    }
}

fn bench_read<R: BenchRing>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    make: fn(RingConfig) -> R,
    text: &[u8],
) {
    let ring = make(RingConfig::default());
    // Fill the ring several times over so that it is full and wrapped.
    for _ in 0..(4 * RingConfig::default().bytes / footprint(&record(text))) {
        ring.append(&record(text));
    }
    let mut buf = R::Buf::default();
    let mut seq = ring.first_seq();
    c.bench_function(name, |b| {
        b.iter(|| match ring.read(black_box(seq), &mut buf) {
            Got::Record => seq += 1,
            Got::Overrun(next) => seq = next,
            Got::Empty => seq = ring.first_seq(),
        });
    });
}

/// A writer thread that appends `text` records to `ring` without pause until dropped.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Writer {
    fn start<R: BenchRing>(ring: &Arc<R>, text: &[u8]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ring, stop2, text) = (Arc::clone(ring), Arc::clone(&stop), text.to_vec());
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                ring.append(&record(&text));
            }
        });
        Writer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("writer thread panicked");
        }
    }
}

fn bench_read_live<R: BenchRing>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    make: fn(RingConfig) -> R,
    text: &[u8],
) {
    let ring = Arc::new(make(RingConfig::default()));
    let _writer = Writer::start(&ring, text);
    let mut buf = R::Buf::default();
    let mut seq = ring.first_seq();
    c.bench_function(name, |b| {
        b.iter(|| loop {
            match ring.read(black_box(seq), &mut buf) {
                Got::Record => {
                    seq += 1;
                    break;
                }
                Got::Overrun(next) => seq = next,
                Got::Empty => std::hint::spin_loop(),
            }
        });
    });
}

fn benches(c: &mut Criterion) {
    for size in [64usize, 512] {
        let text = vec![b'x'; size];
        let mut g = c.benchmark_group(format!("append_{size}B"));
        g.throughput(Throughput::Elements(1));
        bench_append(&mut g, "lockfree", Ring::new, &text);
        bench_append(&mut g, "mutex", MutexRing::new, &text);
        g.finish();

        let mut g = c.benchmark_group(format!("read_{size}B"));
        g.throughput(Throughput::Elements(1));
        bench_read(&mut g, "lockfree", Ring::new, &text);
        bench_read(&mut g, "mutex", MutexRing::new, &text);
        g.finish();

        let mut g = c.benchmark_group(format!("read_live_{size}B"));
        g.throughput(Throughput::Elements(1));
        bench_read_live(&mut g, "lockfree", Ring::new, &text);
        bench_read_live(&mut g, "mutex", MutexRing::new, &text);
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = ring;
    config = config();
    targets = benches
}
criterion_main!(ring);
