//! (c) Netfilter LOG attribution: iptables (nft backend) `-j LOG` and a native nft `log` rule
//! in network namespace A, connected by a veth pair to namespace B. Every LOG line, whether
//! printed in process context (A's ping, OUTPUT) or in softirq context (packets from B
//! arriving over the veth, INPUT, and the echo replies A generates for them), is routed to A
//! and none to B. The test creates both namespaces itself (never touching the host's network
//! or firewall), sets `nf_log_all_netns=1` only while it runs, and removes everything.

use std::time::{Duration, Instant};

use crate::support::bpf::*;
use kmsgfs::attribution::pipeline::Attribution;
use kmsgfs::attribution::router::{How, RouterConfig};
use kmsgfs::sources::bpf::netns_log::NfLogAllNetnsGuard;
use kmsgfs::sources::bpf::{host_namespaces, BpfConfig};

const PINGS: usize = 25;
const MIN_LINES: usize = 20;

#[derive(Default, Debug)]
struct Tally {
    to_a: usize,
    to_b: usize,
    other: usize,
}

#[test]
fn c_netfilter_log_lines_go_to_the_rules_namespace() {
    if !need_basics(&["ip", "iptables", "nft", "ping"]) {
        return;
    }
    if !require(
        std::path::Path::new(kmsgfs::sources::bpf::netns_log::NF_LOG_ALL_NETNS).exists(),
        "net.netfilter.nf_log_all_netns (netfilter logging in the kernel)",
    ) {
        return;
    }
    let host = host_namespaces().unwrap();
    let pair = NetfilterPair::create("nf", 251);
    let (a, b, ip_a, ip_b) = (&pair.a, &pair.b, &pair.ip_a, &pair.ip_b);
    let (xout, xin, nin) = (&pair.xout, &pair.xin, &pair.nin);
    let (net_a, net_b) = (pair.net_a, pair.net_b);
    assert_ne!(net_a, net_b);

    let _nflog = NfLogAllNetnsGuard::enable().expect("set nf_log_all_netns=1");
    let tail = KmsgTail::start();
    let t0 = Instant::now();
    let mut attr = Attribution::start(&BpfConfig::default(), RouterConfig::new(host), t0);
    assert!(attr.status().bpf, "{}", attr.status().summary());
    eprintln!("{}", attr.status().summary());

    // Phase 1: A pings B. OUTPUT in A in process context; replies arrive over the veth.
    NetfilterPair::ping(a, ip_b, PINGS);
    // Phase 2: B pings A. INPUT in A in softirq (current task: B's ping), replies too.
    NetfilterPair::ping(b, ip_a, PINGS);

    // Four kinds of line, each expected PINGS times in each direction.
    let kinds = [
        (
            "OUTPUT process context (A's echo requests)",
            xout.clone(),
            "TYPE=8",
        ),
        (
            "OUTPUT softirq (A's echo replies to B)",
            xout.clone(),
            "TYPE=0",
        ),
        ("INPUT softirq (B's echo requests)", xin.clone(), "TYPE=8"),
        ("INPUT softirq (B's echo replies)", xin.clone(), "TYPE=0"),
        (
            "nft log INPUT softirq (B's echo requests)",
            nin.clone(),
            "TYPE=8",
        ),
        (
            "nft log INPUT softirq (B's echo replies)",
            nin.clone(),
            "TYPE=0",
        ),
    ];
    let mut tallies: Vec<Tally> = kinds.iter().map(|_| Tally::default()).collect();
    let mut not_exact = 0;
    let end = Instant::now() + Duration::from_secs(30);
    let expected = kinds.len() * PINGS;
    let mut seen = 0;
    while seen < expected && Instant::now() < end {
        if let Some(r) = tail.recv_timeout(Duration::from_millis(10)) {
            attr.on_host_record(r, Instant::now());
        }
        for r in attr.poll(Instant::now()) {
            let text = String::from_utf8_lossy(&r.record.text).to_string();
            let Some(i) = kinds
                .iter()
                .position(|(_, p, ty)| text.starts_with(p.as_str()) && text.contains(ty))
            else {
                continue;
            };
            seen += 1;
            if r.how != How::Exact {
                not_exact += 1;
            }
            let t = &mut tallies[i];
            if r.targets.includes(net_b) {
                t.to_b += 1;
            }
            if r.targets.owner_inodes() == Some(vec![net_a]) {
                t.to_a += 1;
            } else {
                t.other += 1;
                eprintln!("misrouted: {text} -> {:?} ({:?})", r.targets, r.how);
            }
        }
    }
    let stats = attr.stats();
    for ((name, _, _), t) in kinds.iter().zip(&tallies) {
        eprintln!("{name}: {t:?}");
    }
    eprintln!("counters {:?}\nkernel {:?}", stats.counters, stats.kernel);
    for ((name, _, _), t) in kinds.iter().zip(&tallies) {
        assert_eq!(t.to_b, 0, "{name}: routed to B");
        assert_eq!(t.other, 0, "{name}: not routed to A alone");
        assert!(
            t.to_a >= MIN_LINES,
            "{name}: only {} lines routed to A",
            t.to_a
        );
    }
    assert_eq!(not_exact, 0);
    assert!(stats.kernel.unwrap().rx_used > 0 || stats.kernel.unwrap().fentry_used > 0);
}
