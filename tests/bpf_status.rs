//! (e) Degrading honestly: `--no-bpf` reports everything off and routes every record to the
//! host ring at once; with BPF on, the status names exactly which features run and why others
//! do not.

use std::time::Instant;

use crate::support::bpf::*;
use kmsgfs::attribution::pipeline::Attribution;
use kmsgfs::attribution::router::{How, Reason, RouterConfig, Targets};
use kmsgfs::record::Record;
use kmsgfs::sources::bpf::{
    host_namespaces, probe_fentry, start_or_degrade, BpfConfig, BpfError, BpfSource,
    NetfilterMethod,
};

#[test]
fn e_no_bpf_reports_everything_off() {
    let cfg = BpfConfig {
        enabled: false,
        ..BpfConfig::default()
    };
    assert!(matches!(BpfSource::start(&cfg), Err(BpfError::Disabled)));
    let (src, st) = start_or_degrade(&cfg);
    assert!(src.is_none());
    assert!(!st.bpf && !st.printk_events && !st.oom_victim);
    assert_eq!(st.netfilter, NetfilterMethod::Off);
    assert_eq!(st.reason.as_deref(), Some("disabled by --no-bpf"));
    assert!(
        st.summary().contains("off (disabled by --no-bpf)"),
        "{}",
        st.summary()
    );
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["netfilter"], "off");

    // The pipeline in --no-bpf mode: no calibration record is written, no waiting.
    let t0 = Instant::now();
    let host = host_namespaces().unwrap();
    let mut a = Attribution::start(&cfg, RouterConfig::new(host), t0);
    assert!(!a.router().config().bpf);
    assert!(!a.router().wants_calibration(t0));
    assert!(a.epoll_fd().is_none());
    a.on_host_record(
        Record {
            seq: 7,
            text: b"x".to_vec(),
            ..Record::default()
        },
        t0,
    );
    let out = a.poll(t0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].targets, Targets::Host);
    assert_eq!(out[0].how, How::Unattributed(Reason::NoBpf));
    let stats = a.stats();
    assert_eq!(stats.counters.no_bpf, 1);
    assert!(stats.kernel.is_none());
    assert_eq!(a.next_deadline(t0), None);
}

#[test]
fn e_status_names_active_and_degraded_features() {
    if !need_basics(&[]) {
        return;
    }
    let src = BpfSource::start(&BpfConfig::default())
        .unwrap_or_else(|e| panic!("BPF source failed to start: {e}"));
    let st = src.status().clone();
    eprintln!("{}", st.summary());
    assert!(st.bpf && st.printk_events);
    let attached = src.attached();
    assert!(attached.contains(&"kmsgfs_console"));
    // The status agrees with the probe and with what is attached.
    let probe = probe_fentry();
    assert_eq!(st.fentry_allowed, Some(probe.is_ok()));
    match st.netfilter {
        NetfilterMethod::Fentry => {
            assert!(probe.is_ok());
            assert!(attached.contains(&"kmsgfs_nf_ip_in"));
        }
        NetfilterMethod::RxStash => {
            assert!(attached.contains(&"kmsgfs_rx"));
            if let Err(why) = &probe {
                assert!(
                    st.notes.iter().any(|n| n.contains("fentry")),
                    "refused fentry must be noted: {:?}",
                    st.notes
                );
                assert!(st.summary().contains("degraded"), "{why}");
            }
        }
        NetfilterMethod::Off => assert!(!st.notes.is_empty()),
    }
    assert_eq!(st.oom_victim, attached.contains(&"kmsgfs_victim"));
    assert_eq!(
        st.nf_log_all_netns,
        kmsgfs::sources::bpf::netns_log::nf_log_all_netns().unwrap()
    );
}
