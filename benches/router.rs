//! Router and delivery throughput (docs/benchmarks.md, "BPF attribution and routing").
//!
//! Synthetic host records and their attribution events (no kernel, no BPF): printk events from
//! writers spread over 16 network namespaces, joined by the router on `seq + K` (the exact
//! join), then appended like the daemon delivers them: every record to the host ring, and each
//! routed record to its owner's ring (16 [`Ring`]s, used directly instead of the registry,
//! which resolves namespace owners through `/proc`). The clock is fixed, so nothing waits for
//! the hold timeout: this measures the router's and the rings' CPU cost per record.
//!
//! `cargo bench --bench router` (about 20 s).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kmsgfs::attribution::router::{
    Chain, Event, HostNs, How, Routed, Router, RouterConfig, Targets,
};
use kmsgfs::record::Record;
use kmsgfs::ring::Ring;

const HOST: HostNs = HostNs {
    net: 1000,
    user: 2000,
    pid: 3000,
};
/// Offset between the BPF event id and the `/dev/kmsg` sequence number.
const K: u64 = 0xFFFF_F000;
/// Namespace rings.
const NAMESPACES: u32 = 16;
/// Records per measured batch.
const BATCH: u64 = 4096;
/// Events and records fed between two polls (the daemon's drain loop handles bursts).
const CHUNK: usize = 64;

/// Inode of the `i`-th container network namespace.
fn ns_inode(i: u64) -> u32 {
    5000 + (i % u64::from(NAMESPACES)) as u32
}

/// Record `seq` and its printk event, written from namespace `ns_inode(seq)`.
fn record_and_event(seq: u64) -> (Record, Event) {
    let text = format!("container app[{}]: request {seq} served in 3 ms", seq % 977);
    let rec = Record {
        seq,
        ts_usec: seq * 10,
        prio: 14,
        text: text.clone().into_bytes(),
        ..Record::default()
    };
    let net = ns_inode(seq);
    let mut e = Event::printk(seq + K, text.as_bytes());
    e.ts_ns = seq * 10_000;
    e.ns.net = net;
    e.net = net;
    e.user_chain = Chain::new(&[HOST.user], false);
    e.net_user_chain = Chain::new(&[HOST.user], false);
    e.pid_chain = Chain::new(&[HOST.pid], false);
    e.pid = 4242;
    e.cur_pid = 4242;
    (rec, e)
}

fn batch(first: u64) -> (Vec<Record>, Vec<Event>) {
    (first..first + BATCH).map(record_and_event).unzip()
}

fn router() -> Router {
    let mut r = Router::new(RouterConfig::new(HOST));
    r.set_k(K, None);
    r
}

struct Rings {
    host: Ring,
    ns: Vec<Ring>,
}

impl Rings {
    fn new() -> Self {
        Rings {
            host: Ring::new(Default::default()),
            ns: (0..NAMESPACES)
                .map(|_| Ring::new(Default::default()))
                .collect(),
        }
    }

    /// Deliver one routing decision; returns the namespace rings written.
    fn deliver(&self, r: &Routed) -> usize {
        let rec = r.record.as_ref();
        self.host.append(&rec);
        match &r.targets {
            Targets::Host => 0,
            Targets::Owners(v) => {
                for o in v {
                    self.ns[(o.inode - 5000) as usize].append(&rec);
                }
                v.len()
            }
            Targets::All => {
                for ring in &self.ns {
                    ring.append(&rec);
                }
                self.ns.len()
            }
        }
    }
}

/// Route (and, with `rings`, deliver) one batch; returns the routed records.
fn run(
    router: &mut Router,
    recs: Vec<Record>,
    evs: Vec<Event>,
    now: Instant,
    rings: Option<&Rings>,
    out: &mut Vec<Routed>,
) -> usize {
    let mut n = 0;
    let mut recs = recs.into_iter();
    let mut evs = evs.into_iter();
    loop {
        let mut fed = 0;
        for ev in evs.by_ref().take(CHUNK) {
            router.on_event(ev);
        }
        for rec in recs.by_ref().take(CHUNK) {
            router.on_record(rec, now);
            fed += 1;
        }
        router.poll_into(now, out);
        n += out.len();
        if let Some(rings) = rings {
            for r in out.iter() {
                black_box(rings.deliver(r));
            }
        }
        out.clear();
        if fed == 0 {
            return n;
        }
    }
}

/// The join must be exact and every record must reach its own namespace, or the numbers
/// measure the wrong path.
fn check() {
    let (recs, evs) = batch(1);
    let mut r = router();
    let now = Instant::now();
    let mut out = Vec::new();
    let mut recs_it = recs.into_iter();
    for ev in evs {
        r.on_event(ev);
    }
    for rec in recs_it.by_ref() {
        r.on_record(rec, now);
    }
    r.poll_into(now, &mut out);
    assert_eq!(
        out.len() as u64,
        BATCH,
        "every record routed without waiting"
    );
    for x in &out {
        assert_eq!(x.how, How::Exact, "record {}", x.record.seq);
        assert_eq!(x.targets.owner_inodes(), Some(vec![ns_inode(x.record.seq)]));
    }
    let rings = Rings::new();
    let n: usize = out.iter().map(|x| rings.deliver(x)).sum();
    assert_eq!(n as u64, BATCH);
    let per_ns = BATCH / u64::from(NAMESPACES);
    for ring in &rings.ns {
        assert_eq!(ring.stats().records, per_ns);
    }
}

fn benches(c: &mut Criterion) {
    check();
    let mut g = c.benchmark_group("router_16ns");
    g.throughput(Throughput::Elements(BATCH));
    let now = Instant::now();
    let rings = Rings::new();
    let mut out = Vec::with_capacity(CHUNK);
    let mut next = 1u64;
    for (name, deliver) in [("route_only", false), ("route_and_deliver", true)] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let (recs, evs) = batch(next);
                    next += BATCH;
                    (router(), recs, evs)
                },
                |(mut r, recs, evs)| {
                    let n = run(&mut r, recs, evs, now, deliver.then_some(&rings), &mut out);
                    assert_eq!(n as u64, BATCH);
                    r
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(30)
}

criterion_group! {
    name = router_bench;
    config = config();
    targets = benches
}
criterion_main!(router_bench);
