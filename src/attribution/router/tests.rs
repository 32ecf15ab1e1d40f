//! Unit and property tests of the router state machine.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

const HOST: HostNs = HostNs {
    net: 1000,
    user: 2000,
    pid: 3000,
};
const K: u64 = 0xFFFF_F000;

fn cfg() -> RouterConfig {
    RouterConfig::new(HOST)
}

fn rec(seq: u64, text: &str) -> Record {
    Record {
        seq,
        ts_usec: seq * 10,
        prio: 14,
        text: text.as_bytes().to_vec(),
        ..Record::default()
    }
}

/// A task-context printk event for record `seq` (with `K`), in network namespace `net`, user
/// chain `users` and pid chain `pids` (innermost first, host last).
fn ev(seq: u64, text: &str, net: u32) -> Event {
    let mut e = Event::printk(seq + K, text.as_bytes());
    e.ts_ns = seq * 10_000 + 5_000_000;
    e.ns.net = net;
    e.net = net;
    e.user_chain = Chain::new(&[HOST.user], false);
    e.net_user_chain = Chain::new(&[HOST.user], false);
    e.pid_chain = Chain::new(&[HOST.pid], false);
    e.pid = 4242;
    e.cur_pid = 4242;
    e
}

fn owners(r: &Routed) -> Vec<u32> {
    r.targets.owner_inodes().unwrap_or_default()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn calibrated(cfg: RouterConfig) -> Router {
    let mut r = Router::new(cfg);
    r.set_k(K, None);
    r
}

#[test]
fn exact_join_routes_by_network_namespace() {
    let t0 = Instant::now();
    let mut r = calibrated(cfg());
    r.on_event(ev(1, "a", 11));
    r.on_event(ev(2, "b", 12));
    r.on_event(ev(3, "c", HOST.net));
    for (s, t) in [(1, "a"), (2, "b"), (3, "c")] {
        r.on_record(rec(s, t), t0);
    }
    let out = r.poll(t0);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].targets.owner_inodes(), Some(vec![11]));
    assert_eq!(out[1].targets.owner_inodes(), Some(vec![12]));
    assert_eq!(out[2].targets, Targets::Host);
    assert!(out.iter().all(|o| o.how == How::Exact));
    assert_eq!(r.counters().exact, 3);
    assert_eq!(r.counters().host_owned, 1);
    assert_eq!(r.counters().owned, 2);
}

#[test]
fn record_is_held_for_its_event_then_released_unattributed() {
    let t0 = Instant::now();
    let mut r = calibrated(cfg());
    r.on_record(rec(1, "lost"), t0);
    assert!(r.poll(t0).is_empty());
    assert!(r.poll(t0 + ms(4)).is_empty());
    assert_eq!(r.next_deadline(), Some(t0 + ms(5)));
    let out = r.poll(t0 + ms(5));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].targets, Targets::Host);
    assert_eq!(out[0].how, How::Unattributed(Reason::NoEvent));
    assert_eq!(r.counters().no_event, 1);
}

#[test]
fn unattributed_all_goes_to_every_ring() {
    let t0 = Instant::now();
    let mut c = cfg();
    c.unattributed = Unattributed::All;
    let mut r = calibrated(c);
    r.on_record(rec(1, "lost"), t0);
    let out = r.poll(t0 + ms(5));
    assert_eq!(out[0].targets, Targets::All);
    assert!(out[0].targets.includes(12345));
}

#[test]
fn late_event_within_hold_joins_exactly() {
    let t0 = Instant::now();
    let mut r = calibrated(cfg());
    r.on_record(rec(1, "x"), t0);
    assert!(r.poll(t0 + ms(1)).is_empty());
    r.on_event(ev(1, "x", 11));
    let out = r.poll(t0 + ms(2));
    assert_eq!(out[0].targets.owner_inodes(), Some(vec![11]));
}

#[test]
fn order_is_preserved_behind_a_held_record() {
    let t0 = Instant::now();
    let mut r = calibrated(cfg());
    r.on_event(ev(2, "second", 12));
    r.on_record(rec(1, "first"), t0);
    r.on_record(rec(2, "second"), t0);
    assert!(
        r.poll(t0 + ms(1)).is_empty(),
        "record 2 waits behind record 1"
    );
    let out = r.poll(t0 + ms(5));
    let seqs: Vec<u64> = out.iter().map(|o| o.record.seq).collect();
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(out[1].targets.owner_inodes(), Some(vec![12]));
}

#[test]
fn calibration_sets_k_and_marks_earlier_records_pre_attach() {
    let t0 = Instant::now();
    let mut r = Router::new(cfg());
    assert!(r.wants_calibration(t0));
    let nonce = b"kmsgfs-calibrate-0123456789abcde".to_vec();
    r.begin_calibration(nonce.clone(), t0);
    assert!(!r.wants_calibration(t0));
    // Backlog from before attach: no events.
    for s in 1..=3 {
        r.on_record(rec(s, "boot"), t0);
    }
    // After attach: events for 4 (a container) and the nonce (5).
    r.on_event(ev(4, "container", 11));
    let mut nev = ev(5, "", HOST.net);
    nev.len = nonce.len() as u32;
    nev.prefix.copy_from_slice(&nonce[..PREFIX]);
    r.on_event(nev);
    r.on_record(rec(4, "container"), t0);
    assert!(r.poll(t0 + ms(10)).is_empty(), "records wait for K");
    let mut n = rec(5, "");
    n.text = nonce;
    r.on_record(n, t0 + ms(10));
    assert_eq!(r.k(), Some(K));
    let out = r.poll(t0 + ms(10));
    assert_eq!(out.len(), 5);
    for o in &out[..3] {
        assert_eq!(o.how, How::Unattributed(Reason::PreAttach));
    }
    assert_eq!(out[3].targets.owner_inodes(), Some(vec![11]));
    assert_eq!(out[4].targets, Targets::Host);
    assert_eq!(r.counters().calibrations, 1);
    assert_eq!(r.counters().pre_attach, 3);
    assert!(!r.wants_calibration(t0 + ms(20)));
    assert!(r.wants_calibration(t0 + Duration::from_secs(601)));
}

#[test]
fn recalibration_with_a_different_k_is_counted() {
    let t0 = Instant::now();
    let mut r = calibrated(cfg());
    let nonce = b"kmsgfs-calibrate-aaaaaaaaaaaaaaa".to_vec();
    r.begin_calibration(nonce.clone(), t0);
    let mut e = Event::printk(K + 7 + 1, &nonce);
    e.ns.net = HOST.net;
    e.net = HOST.net;
    r.on_event(e);
    let mut n = rec(7, "");
    n.text = nonce;
    r.on_record(n, t0);
    assert_eq!(r.k(), Some(K + 1));
    assert_eq!(r.counters().k_changes, 1);
}

#[test]
fn calibration_timeout_falls_back_to_text_and_timestamp() {
    let t0 = Instant::now();
    let mut r = Router::new(cfg());
    r.begin_calibration(b"kmsgfs-calibrate-never-seen-0000".to_vec(), t0);
    // Identical text from two namespaces; only the timestamps tell them apart.
    let mut a = ev(1, "same", 11);
    let mut b = ev(2, "same", 12);
    a.id = 999_999; // ids are meaningless without K
    b.id = 999_998;
    r.on_event(b);
    r.on_event(a);
    r.on_record(rec(1, "same"), t0);
    r.on_record(rec(2, "same"), t0);
    assert!(r.poll(t0 + ms(100)).is_empty(), "waiting for calibration");
    let out = r.poll(t0 + Duration::from_secs(2));
    assert_eq!(r.counters().calibration_failures, 1);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|o| o.how == How::Fallback));
    // Without a clock offset the oldest id wins first; either way each goes somewhere once.
    let mut got: Vec<u32> = out.iter().flat_map(owners).collect();
    got.sort();
    assert_eq!(got, vec![11, 12]);
    assert_eq!(r.counters().fallback, 2);
    assert!(r.wants_calibration(t0 + Duration::from_secs(40)));
}

#[test]
fn fallback_uses_learned_clock_offset() {
    let t0 = Instant::now();
    let mut c = cfg();
    c.calibration_timeout = ms(1);
    let mut r = Router::new(c);
    r.begin_calibration(b"x".to_vec(), t0);
    r.poll(t0 + ms(1)); // calibration fails
                        // A unique text teaches the offset (event ts = record ts * 1000 + 5 ms).
    r.on_event(ev(1, "unique", 11));
    r.on_record(rec(1, "unique"), t0);
    r.poll(t0 + ms(10));
    // Now two identical texts, events delivered in the wrong order with wrong ids.
    let mut a = ev(2, "dup", 21);
    let mut b = ev(3, "dup", 22);
    a.id = 50;
    b.id = 40;
    r.on_event(a);
    r.on_event(b);
    r.on_record(rec(2, "dup"), t0 + ms(10));
    r.on_record(rec(3, "dup"), t0 + ms(10));
    let out = r.poll(t0 + ms(20));
    assert_eq!(owners(&out[0]), vec![21]);
    assert_eq!(owners(&out[1]), vec![22]);
}

#[test]
fn repeated_text_mismatch_invalidates_k() {
    let t0 = Instant::now();
    let mut r = calibrated(cfg());
    r.begin_calibration(b"n".to_vec(), t0);
    r.on_record(rec(100, "n"), t0);
    r.on_event(Event::printk(100 + K, b"n")); // calibration completes with the same K
    r.poll(t0);
    for s in 1..=3u64 {
        r.on_event(ev(100 + s, "other text", 11));
        r.on_record(rec(100 + s, "real text"), t0);
    }
    let out = r.poll(t0);
    assert_eq!(out.len(), 3);
    assert!(out
        .iter()
        .all(|o| o.how == How::Unattributed(Reason::VerifyMismatch)));
    assert_eq!(r.counters().verify_mismatch, 3);
    assert_eq!(r.k(), None);
    assert!(r.wants_calibration(t0));
}

#[test]
fn interrupt_context_uses_the_rx_stash() {
    let t0 = Instant::now();
    let mut r = calibrated(cfg());
    // Softirq LOG: current task is in namespace 12, the packet arrived in 11 on vA.
    let text = "A-IN IN=vA OUT= MAC= SRC=10.0.0.2";
    let mut e = ev(1, text, 12);
    e.irq_stack = true;
    e.net_source = NetSource::RxStash;
    e.net = 11;
    e.ifname[..2].copy_from_slice(b"vA");
    r.on_event(e);
    // Softirq printk without rx stash.
    let mut e = ev(2, "irq", 12);
    e.irq_stack = true;
    r.on_event(e);
    // Kernel thread, not netfilter, stash present: not attributed.
    let mut e = ev(3, "kworker says hi", 12);
    e.kthread = true;
    e.net_source = NetSource::RxStash;
    e.net = 11;
    r.on_event(e);
    // ksoftirqd running netfilter: stash used.
    let text4 = "A-IN IN=vA OUT= SRC=1";
    let mut e = ev(4, text4, HOST.net);
    e.kthread = true;
    e.net_source = NetSource::RxStash;
    e.net = 11;
    e.ifname[..2].copy_from_slice(b"vA");
    r.on_event(e);
    // Stale stash: devices do not match.
    let text5 = "A-OUT IN= OUT=eth9 SRC=1";
    let mut e = ev(5, text5, 12);
    e.irq_stack = true;
    e.net_source = NetSource::RxStash;
    e.net = 11;
    e.ifname[..2].copy_from_slice(b"vA");
    r.on_event(e);
    for (s, t) in [
        (1, text),
        (2, "irq"),
        (3, "kworker says hi"),
        (4, text4),
        (5, text5),
    ] {
        r.on_record(rec(s, t), t0);
    }
    let out = r.poll(t0);
    assert_eq!(out[0].targets.owner_inodes(), Some(vec![11]));
    assert_eq!(out[1].how, How::Unattributed(Reason::InterruptNoNet));
    assert_eq!(out[2].how, How::Unattributed(Reason::KernelThread));
    assert_eq!(out[3].targets.owner_inodes(), Some(vec![11]));
    assert_eq!(out[4].how, How::Unattributed(Reason::RxMismatch));
    assert_eq!(r.counters().interrupt, 1);
    assert_eq!(r.counters().kernel_thread, 1);
    assert_eq!(r.counters().rx_mismatch, 1);
}

#[test]
fn fentry_net_wins_over_everything() {
    let t0 = Instant::now();
    let mut r = calibrated(cfg());
    let mut e = ev(1, "LOG IN= OUT=x", 12);
    e.irq_stack = true;
    e.net_source = NetSource::Fentry;
    e.net = 11;
    r.on_event(e);
    r.on_record(rec(1, "LOG IN= OUT=x"), t0);
    assert_eq!(r.poll(t0)[0].targets.owner_inodes(), Some(vec![11]));
}

#[test]
fn user_key_delivers_to_nested_user_namespaces() {
    let t0 = Instant::now();
    let mut c = cfg();
    c.key = KeyKind::User;
    let mut r = calibrated(c);
    // Task in user ns 22, child of 21, child of the host's.
    let mut e = ev(1, "hello", 11);
    e.user_chain = Chain::new(&[22, 21, HOST.user], false);
    r.on_event(e);
    // Task in 21.
    let mut e = ev(2, "hello", 11);
    e.user_chain = Chain::new(&[21, HOST.user], false);
    r.on_event(e);
    // Netfilter line in task context: the owner of the struct net (31), not the task's (22).
    let nf = "X IN= OUT=lo SRC=127.0.0.1";
    let mut e = ev(3, nf, 11);
    e.user_chain = Chain::new(&[22, 21, HOST.user], false);
    e.net_user_chain = Chain::new(&[31, HOST.user], false);
    r.on_event(e);
    // Softirq with rx stash: owner of the packet's netns.
    let mut e = ev(4, "Y IN=vA OUT= SRC=1", 11);
    e.irq_stack = true;
    e.net_source = NetSource::RxStash;
    e.net_user_chain = Chain::new(&[32, 21, HOST.user], false);
    e.ifname[..2].copy_from_slice(b"vA");
    r.on_event(e);
    // Host task.
    r.on_event(ev(5, "host", HOST.net));
    for (s, t) in [
        (1, "hello"),
        (2, "hello"),
        (3, nf),
        (4, "Y IN=vA OUT= SRC=1"),
        (5, "host"),
    ] {
        r.on_record(rec(s, t), t0);
    }
    let out = r.poll(t0);
    assert_eq!(out[0].targets.owner_inodes(), Some(vec![22, 21]));
    assert_eq!(out[1].targets.owner_inodes(), Some(vec![21]));
    assert_eq!(out[2].targets.owner_inodes(), Some(vec![31]));
    assert_eq!(out[3].targets.owner_inodes(), Some(vec![32, 21]));
    assert_eq!(out[4].targets, Targets::Host);
    // The parent's ring (21) sees its own record and its child's; the child's (22) only its own.
    assert_eq!(out.iter().filter(|o| o.targets.includes(21)).count(), 3);
    assert_eq!(out.iter().filter(|o| o.targets.includes(22)).count(), 1);
}

#[test]
fn pid_key_delivers_to_ancestor_pid_namespaces() {
    let t0 = Instant::now();
    let mut c = cfg();
    c.key = KeyKind::Pid;
    let mut r = calibrated(c);
    let mut e = ev(1, "inner", 11);
    e.pid_chain = Chain::new(&[42, 41, HOST.pid], false);
    r.on_event(e);
    let mut e = ev(2, "outer", 11);
    e.pid_chain = Chain::new(&[41, HOST.pid], false);
    r.on_event(e);
    let mut e = ev(3, "packet IN=vA OUT= SRC=1", 11);
    e.irq_stack = true;
    e.net_source = NetSource::RxStash;
    e.ifname[..2].copy_from_slice(b"vA");
    r.on_event(e);
    // A chain cut at CHAIN entries keeps the nearest ancestors.
    let deep: Vec<u32> = (100..110).collect();
    let mut e = ev(4, "deep", 11);
    e.pid_chain = Chain::new(&deep, true);
    r.on_event(e);
    for (s, t) in [
        (1, "inner"),
        (2, "outer"),
        (3, "packet IN=vA OUT= SRC=1"),
        (4, "deep"),
    ] {
        r.on_record(rec(s, t), t0);
    }
    let out = r.poll(t0);
    assert_eq!(out[0].targets.owner_inodes(), Some(vec![42, 41]));
    assert_eq!(out[1].targets.owner_inodes(), Some(vec![41]));
    assert_eq!(out[2].how, How::Unattributed(Reason::NoPidForPacket));
    assert_eq!(out[3].targets.owner_inodes(), Some(deep[..CHAIN].to_vec()));
}

fn oom_scenario(policy: OomPolicy, with_victim: bool) -> (Vec<Routed>, Router) {
    let t0 = Instant::now();
    let mut c = cfg();
    c.oom_policy = policy;
    let mut r = calibrated(c);
    // Trigger: pid 77 in netns 12. Victim: pid 55 in netns 11.
    let block = [
        "stress invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        "CPU: 1 PID: 77 Comm: stress",
        "Tasks state (memory values in pages):",
        "Memory cgroup out of memory: Killed process 55 (victim) total-vm:1kB",
    ];
    let mut seq = 1;
    for (i, t) in block.iter().enumerate() {
        let mut e = ev(seq, t, 12);
        e.pid = 77;
        e.cur_pid = 77;
        r.on_event(e);
        if i == 1 {
            // Another task's record in the middle of the block.
            seq += 1;
            r.on_event(ev(seq, "unrelated", 13));
        }
        seq += 1;
    }
    if with_victim {
        let mut v = ev(0, "", 11);
        v.kind = EventKind::OomVictim;
        v.pid = 55;
        v.tgid = 55;
        v.cur_pid = 77;
        r.on_event(v);
    }
    // The reaper line, from a kernel thread.
    let mut e = ev(
        seq,
        "oom_reaper: reaped process 55 (victim), now anon-rss:0kB",
        HOST.net,
    );
    e.kthread = true;
    r.on_event(e);
    let texts = [
        block[0],
        block[1],
        "unrelated",
        block[2],
        block[3],
        "oom_reaper: reaped process 55 (victim), now anon-rss:0kB",
    ];
    let mut out = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        r.on_record(rec(i as u64 + 1, t), t0);
        out.extend(r.poll(t0));
    }
    out.extend(r.poll(t0 + Duration::from_secs(3)));
    (out, r)
}

#[test]
fn oom_block_goes_to_victim_and_trigger() {
    let (out, r) = oom_scenario(OomPolicy::VictimAndTrigger, true);
    assert_eq!(out.len(), 6);
    let seqs: Vec<u64> = out.iter().map(|o| o.record.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6], "host order is kept");
    for i in [0, 1, 3, 4] {
        assert_eq!(
            out[i].targets.owner_inodes(),
            Some(vec![11, 12]),
            "record {i}"
        );
        assert_eq!(out[i].how, How::Oom { victim_pid: 55 });
    }
    assert_eq!(out[2].targets.owner_inodes(), Some(vec![13]));
    assert_eq!(out[5].targets.owner_inodes(), Some(vec![11]));
    assert_eq!(out[5].how, How::OomReaper);
    assert_eq!(r.counters().oom_blocks, 1);
}

#[test]
fn oom_block_victim_only_policy() {
    let (out, _) = oom_scenario(OomPolicy::Victim, true);
    for i in [0, 1, 3, 4] {
        assert_eq!(out[i].targets.owner_inodes(), Some(vec![11]));
    }
}

#[test]
fn oom_block_without_victim_event_goes_to_trigger_after_timeout() {
    let (out, r) = oom_scenario(OomPolicy::VictimAndTrigger, false);
    assert_eq!(out.len(), 6);
    for i in [0, 1, 3, 4] {
        assert_eq!(out[i].targets.owner_inodes(), Some(vec![12]));
        assert_eq!(out[i].how, How::Oom { victim_pid: 0 });
    }
    assert_eq!(out[5].how, How::Unattributed(Reason::KernelThread));
    assert_eq!(r.counters().oom_no_victim, 1);
}

#[test]
fn oom_block_holds_later_records_until_it_closes() {
    let t0 = Instant::now();
    let mut r = calibrated(cfg());
    let mut e = ev(1, "x invoked oom-killer: gfp_mask=0", 12);
    e.cur_pid = 9;
    r.on_event(e);
    r.on_event(ev(2, "later", 13));
    r.on_record(rec(1, "x invoked oom-killer: gfp_mask=0"), t0);
    r.on_record(rec(2, "later"), t0);
    assert!(r.poll(t0).is_empty());
    assert_eq!(r.next_deadline(), Some(t0 + Duration::from_secs(2)));
    assert_eq!(r.poll(t0 + Duration::from_secs(2)).len(), 2);
}

#[test]
fn no_bpf_routes_everything_to_the_host_at_once() {
    let t0 = Instant::now();
    let mut c = cfg();
    c.bpf = false;
    let mut r = Router::new(c);
    assert!(!r.wants_calibration(t0));
    r.on_record(rec(1, "a"), t0);
    r.on_record(rec(2, "b"), t0);
    let out = r.poll(t0);
    assert_eq!(out.len(), 2);
    assert!(out
        .iter()
        .all(|o| o.targets == Targets::Host && o.how == How::Unattributed(Reason::NoBpf)));
    assert_eq!(r.counters().no_bpf, 2);
}

#[test]
fn continuation_event_stands_in_for_a_lost_first_fragment() {
    let t0 = Instant::now();
    let mut r = calibrated(cfg());
    let mut c = ev(1, " in libc.so", 11);
    c.kind = EventKind::Continuation;
    r.on_event(c);
    r.on_record(rec(1, "segfault at 0 in libc.so"), t0);
    let out = r.poll(t0);
    assert_eq!(out[0].how, How::Continuation);
    assert_eq!(out[0].targets.owner_inodes(), Some(vec![11]));
}

#[test]
fn gaps_and_late_events_are_counted() {
    let t0 = Instant::now();
    let mut r = calibrated(cfg());
    r.on_event(ev(1, "a", 11));
    r.on_record(rec(1, "a"), t0);
    r.on_event(ev(5, "e", 11));
    r.on_record(rec(5, "e"), t0);
    r.poll(t0);
    assert_eq!(r.counters().host_gap, 3);
    r.on_event(ev(3, "c", 11));
    assert_eq!(r.counters().events_late, 1);
    assert_eq!(r.status().stored_events, 0);
}

#[test]
fn options_parse_and_print() {
    assert_eq!("net".parse::<KeyKind>(), Ok(KeyKind::Net));
    assert_eq!("pid".parse::<KeyKind>(), Ok(KeyKind::Pid));
    assert_eq!("all".parse::<Unattributed>(), Ok(Unattributed::All));
    assert_eq!(
        "victim-and-trigger".parse::<OomPolicy>(),
        Ok(OomPolicy::VictimAndTrigger)
    );
    assert!("uts".parse::<KeyKind>().is_err());
    assert_eq!(KeyKind::User.to_string(), "user");
}

proptest! {
    /// Whatever the interleaving of records, events, event losses and polls: every record is
    /// routed exactly once, in host order; a record whose event arrived within the hold is
    /// routed to its own namespace; the others go to the host ring.
    #[test]
    fn every_record_once_in_order(
        owners in prop::collection::vec(0u32..4, 1..60),
        lost in prop::collection::vec(any::<bool>(), 60),
        event_delay in prop::collection::vec(0u64..8, 60),
        poll_every in 1u64..4,
    ) {
        let t0 = Instant::now();
        let mut r = calibrated(cfg());
        let n = owners.len();
        let ns = |o: u32| if o == 0 { HOST.net } else { 10 + o };
        // Schedule: record i arrives at i ms; its event at i + delay ms unless lost.
        let mut evs: Vec<(u64, usize)> = (0..n)
            .filter(|&i| !lost[i])
            .map(|i| (i as u64 + event_delay[i], i))
            .collect();
        evs.sort();
        let mut out = Vec::new();
        let mut ei = 0;
        for step in 0..(n as u64 + 20) {
            let now = t0 + ms(step);
            while ei < evs.len() && evs[ei].0 <= step {
                let i = evs[ei].1;
                r.on_event(ev(i as u64 + 1, "same text", ns(owners[i])));
                ei += 1;
            }
            if (step as usize) < n {
                r.on_record(rec(step + 1, "same text"), now);
            }
            if step % poll_every == 0 {
                out.extend(r.poll(now));
            }
        }
        out.extend(r.poll(t0 + Duration::from_secs(10)));
        prop_assert_eq!(out.len(), n);
        for (i, o) in out.iter().enumerate() {
            prop_assert_eq!(o.record.seq, i as u64 + 1);
            let arrived_in_time = !lost[i] && event_delay[i] < 5;
            if arrived_in_time {
                prop_assert_eq!(o.how, How::Exact);
                if owners[i] == 0 {
                    prop_assert_eq!(&o.targets, &Targets::Host);
                } else {
                    prop_assert_eq!(o.targets.owner_inodes(), Some(vec![ns(owners[i])]));
                }
            } else if o.how != How::Exact {
                prop_assert_eq!(&o.targets, &Targets::Host);
            }
        }
        let c = r.counters();
        prop_assert_eq!(c.routed, n as u64);
        prop_assert_eq!(c.exact + c.unattributed, n as u64);
    }

    /// Hierarchical keys: a ring receives a record iff its namespace is on the record's chain
    /// below the host's.
    #[test]
    fn hierarchical_delivery_matches_chain(
        chain in prop::collection::vec(1u32..50, 0..8),
        probe in 1u32..50,
        pid_key in any::<bool>(),
    ) {
        let t0 = Instant::now();
        let mut c = cfg();
        c.key = if pid_key { KeyKind::Pid } else { KeyKind::User };
        let host = if pid_key { HOST.pid } else { HOST.user };
        let mut full = chain.clone();
        full.push(host);
        let mut r = calibrated(c);
        let mut e = ev(1, "t", 11);
        e.pid_chain = Chain::new(&full, false);
        e.user_chain = Chain::new(&full, false);
        r.on_event(e);
        r.on_record(rec(1, "t"), t0);
        let out = r.poll(t0);
        prop_assert_eq!(out.len(), 1);
        prop_assert_eq!(out[0].targets.includes(probe), chain.contains(&probe));
        prop_assert_eq!(out[0].targets == Targets::Host, chain.is_empty());
    }
}
