//! Unchanged util-linux and busybox `dmesg`/`klogd` against the `syslog(2)` agent
//! (kmsg-semantics B2–B6, D1, D2; seccomp-agent.md §5, §17).
//!
//! Each test starts a real agent with a pre-filled test ring, runs the real binary under the
//! kmsgfs filter (installed just before exec) and checks what it printed, what happened to the
//! test ring, and that the host's log and console settings did not change. Root only.

use std::sync::Arc;

use crate::support::seccomp::*;
use kmsgfs::frontends::seccomp::AgentOptions;
use kmsgfs::ring::{Ring, RingConfig, DEFAULT_CONSOLE_LEVEL};

fn lines(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{tag} line {i}")).collect()
}

fn ready(tools: &[&str]) -> bool {
    require_root() && tools.iter().all(|t| require_tool(t))
}

/// The lines of `out` that mention `tag`.
fn tagged<'a>(out: &'a str, tag: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.contains(tag)).collect()
}

#[test]
fn d1_dmesg_syslog_method_prints_the_ring() {
    if !ready(&["dmesg"]) {
        return;
    }
    let host = HostTag::write("host-d1");
    let tag = unique_tag("ring");
    let h = Harness::new(&lines(&tag, 5));
    let out = ok(&h.run(&["dmesg", "-S"]), "dmesg -S");
    let got = tagged(&out, &tag);
    assert_eq!(got.len(), 5, "dmesg -S output: {out:?}");
    assert_eq!(got[0], format!("[    1.000000] {tag} line 0"));
    assert_eq!(got[4], format!("[    5.000000] {tag} line 4"));
    assert!(!out.contains(&host.tag), "a host record leaked: {out:?}");
    host.assert_host_not_cleared();
}

#[test]
fn d1_dmesg_clear_then_read_prints_nothing() {
    if !ready(&["dmesg"]) {
        return;
    }
    let host = HostTag::write("host-d1-clear");
    let printk = host_printk();
    let tag = unique_tag("ring");
    let h = Harness::new(&lines(&tag, 3));
    let o = h.run(&["dmesg", "-C"]);
    ok(&o, "dmesg -C");
    assert_eq!(
        h.ring.clear_seq(),
        h.ring.next_seq(),
        "CLEAR moved the ring's clear point"
    );
    let out = ok(&h.run(&["dmesg", "-S"]), "dmesg -S after -C");
    assert_eq!(out, "", "dmesg -S after -C printed something");
    // New records after the clear are visible again.
    push(&h.ring, 9_000_000, &format!("{tag} after clear"));
    let out = ok(&h.run(&["dmesg", "-S"]), "dmesg -S");
    assert_eq!(
        tagged(&out, &tag),
        vec![format!("[    9.000000] {tag} after clear")]
    );
    host.assert_host_not_cleared();
    assert_eq!(host_printk(), printk);
}

#[test]
fn d1_dmesg_syslog_read_and_clear() {
    if !ready(&["dmesg"]) {
        return;
    }
    let host = HostTag::write("host-d1-sc");
    let tag = unique_tag("ring");
    let h = Harness::new(&lines(&tag, 4));
    let out = ok(&h.run(&["dmesg", "-S", "-c"]), "dmesg -S -c");
    assert_eq!(tagged(&out, &tag).len(), 4, "{out:?}");
    let out = ok(&h.run(&["dmesg", "-S"]), "dmesg -S after -S -c");
    assert_eq!(out, "");
    host.assert_host_not_cleared();
}

#[test]
fn d1_dmesg_console_level_changes_only_the_ring() {
    if !ready(&["dmesg"]) {
        return;
    }
    let printk = host_printk();
    let h = Harness::new(&[]);
    ok(&h.run(&["dmesg", "-n", "1"]), "dmesg -n 1");
    assert_eq!(h.ring.syslog_state().console_level, 1);
    ok(&h.run(&["dmesg", "-n", "debug"]), "dmesg -n debug");
    assert_eq!(h.ring.syslog_state().console_level, 8);
    assert_eq!(host_printk(), printk, "the HOST console level changed");
}

#[test]
fn d1_dmesg_console_off_and_on() {
    if !ready(&["dmesg"]) {
        return;
    }
    let printk = host_printk();
    let h = Harness::new(&[]);
    ok(&h.run(&["dmesg", "-D"]), "dmesg -D");
    {
        let st = h.ring.syslog_state();
        assert_eq!(st.console_level, 1);
        assert_eq!(st.saved_console_level, Some(DEFAULT_CONSOLE_LEVEL));
    }
    assert_eq!(host_printk(), printk, "dmesg -D changed the HOST console");
    ok(&h.run(&["dmesg", "-E"]), "dmesg -E");
    {
        let st = h.ring.syslog_state();
        assert_eq!(st.console_level, DEFAULT_CONSOLE_LEVEL);
        assert_eq!(st.saved_console_level, None);
    }
    assert_eq!(host_printk(), printk, "dmesg -E changed the HOST console");
}

#[test]
fn b1_without_cap_syslog_dmesg_gets_eperm() {
    if !ready(&["dmesg", "setpriv"]) {
        return;
    }
    let tag = unique_tag("ring");
    let h = Harness::new(&lines(&tag, 2));
    let o = h.run(&["setpriv", "--bounding-set", "-syslog", "dmesg", "-S"]);
    assert!(!o.status.success(), "dmesg -S without CAP_SYSLOG succeeded");
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{:?}",
        stderr(&o)
    );
    assert_eq!(stdout(&o), "");
    // The same caller with CAP_SYSLOG (no setpriv) reads the ring.
    assert_eq!(
        tagged(&ok(&h.run(&["dmesg", "-S"]), "dmesg -S"), &tag).len(),
        2
    );
}

#[test]
fn b1_restrict_none_opens_read_all_but_not_clear() {
    if !ready(&["dmesg", "setpriv"]) {
        return;
    }
    let tag = unique_tag("ring");
    let h = Harness::with(ring_with(&lines(&tag, 2)), false, AgentOptions::default());
    let out = ok(
        &h.run(&["setpriv", "--bounding-set", "-syslog", "dmesg", "-S"]),
        "dmesg -S with dmesg_restrict=0",
    );
    assert_eq!(tagged(&out, &tag).len(), 2);
    let o = h.run(&["setpriv", "--bounding-set", "-syslog", "dmesg", "-C"]);
    assert!(!o.status.success(), "dmesg -C without CAP_SYSLOG succeeded");
    assert_eq!(h.ring.clear_seq(), 0);
}

#[test]
fn d2_busybox_dmesg_prints_the_ring() {
    if !ready(&["busybox"]) {
        return;
    }
    let host = HostTag::write("host-d2");
    let tag = unique_tag("ring");
    let h = Harness::new(&lines(&tag, 5));
    let out = ok(&h.run(&["busybox", "dmesg"]), "busybox dmesg");
    let got = tagged(&out, &tag);
    assert_eq!(got.len(), 5, "{out:?}");
    // busybox strips the <prio> prefix.
    assert_eq!(got[2], format!("[    3.000000] {tag} line 2"));
    assert!(!out.contains(&host.tag));
    host.assert_host_not_cleared();
}

#[test]
fn d2_busybox_dmesg_c_reads_and_clears() {
    if !ready(&["busybox"]) {
        return;
    }
    let host = HostTag::write("host-d2-c");
    let tag = unique_tag("ring");
    let h = Harness::new(&lines(&tag, 5));
    let out = ok(&h.run(&["busybox", "dmesg", "-c"]), "busybox dmesg -c");
    assert_eq!(tagged(&out, &tag).len(), 5, "{out:?}");
    assert_eq!(h.ring.clear_seq(), h.ring.next_seq());
    let out = ok(&h.run(&["busybox", "dmesg"]), "busybox dmesg after -c");
    assert_eq!(out, "");
    host.assert_host_not_cleared();
}

#[test]
fn d2_busybox_dmesg_s_100_returns_the_newest_records_that_fit() {
    if !ready(&["busybox"]) {
        return;
    }
    // About 30 KiB of records; busybox clamps -s 100 to a 16384-byte READ_ALL (D2).
    let tag = unique_tag("ring");
    let many: Vec<String> = (0..300)
        .map(|i| format!("{tag} record {i:04} {}", "x".repeat(60)))
        .collect();
    let h = Harness::new(&many);
    let o = h.run(&["busybox", "dmesg", "-r", "-s", "100"]);
    let out = ok(&o, "busybox dmesg -s 100");
    assert!(out.len() <= 16384, "{} bytes", out.len());
    let got = tagged(&out, &tag);
    assert!(got.len() > 100 && got.len() < 300, "{} records", got.len());
    assert!(got.last().unwrap().contains(&format!("{tag} record 0299")));
    // Whole records only, the newest ones, in order.
    let first: usize = got[0]
        .split(" record ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(first + got.len(), 300);
    assert!(got.iter().all(|l| l.starts_with("<6>[")));
}

#[test]
fn d2_busybox_klogd_receives_records_appended_later() {
    if !ready(&["busybox"]) {
        return;
    }
    let tag = unique_tag("klogd");
    let h = Harness::new(&[format!("{tag} before")]);
    let mut klogd = Klogd::start(&h);
    let first = klogd.recv_containing(&format!("{tag} before"));
    assert!(first.contains("kernel"), "{first:?}");
    // klogd is now blocked in READ: the agent holds its call.
    h.wait_stats("klogd's READ to be parked", |s| s.parked == 1);
    for i in 0..3 {
        push(&h.ring, 10_000_000 + i, &format!("{tag} after {i}"));
        klogd.recv_containing(&format!("{tag} after {i}"));
    }
    // Everything was consumed from the ring's syslog cursor.
    h.wait_stats("klogd to block again", |s| s.parked == 1);
    assert_eq!(h.ring.syslog_state().seq, h.ring.next_seq());
    let out = klogd.kill();
    assert!(!out.status.success());
    // The parked call of the killed klogd is forgotten (ID_VALID sweep).
    h.wait_stats("the dead klogd's parked READ to be dropped", |s| {
        s.parked == 0
    });
}

#[test]
fn b2_repeated_console_level_keeps_host_untouched_under_load() {
    // Many small calls through one listener: the agent answers each (no state leak between
    // calls, no host change).
    if !ready(&["busybox"]) {
        return;
    }
    let printk = host_printk();
    let h = Harness::new(&[]);
    let o = h.run(&[
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 1 2 3 4 5 6 7 8; do busybox dmesg -n $i || exit 1; done",
    ]);
    ok(&o, "busybox dmesg -n loop");
    assert_eq!(h.ring.syslog_state().console_level, 8);
    assert!(h.agent.stats().answered >= 16);
    assert_eq!(host_printk(), printk);
}

/// `syslog(SIZE_BUFFER)` through `int 0x80` (i386) and the x32 number, from a forked child
/// under the filter: (i386 result, x32 result), negative for -errno. A child killed by SIGSEGV
/// means the kernel lacks CONFIG_IA32_EMULATION.
fn compat_abi_size_buffer(h: &Harness) -> (i64, i64) {
    let r = in_filtered_fork(h, || {
        let i386: i64;
        // SAFETY: int 0x80 with eax = 103 (syslog), ebx = 10 (SIZE_BUFFER), ecx = edx = 0;
        // LLVM reserves rbx, so it is swapped in and out around the call.
        unsafe {
            std::arch::asm!(
                "xchg {b}, rbx",
                "int 0x80",
                "xchg {b}, rbx",
                b = inout(reg) 10u64 => _,
                inout("rax") 103i64 => i386,
                in("rcx") 0u64,
                in("rdx") 0u64,
            );
        }
        // SAFETY: a raw syscall with integer arguments only.
        let x32 = unsafe { libc::syscall(0x4000_0067, 10, 0, 0) };
        let x32 = if x32 < 0 {
            // SAFETY: errno location of the calling thread.
            -i64::from(unsafe { *libc::__errno_location() })
        } else {
            x32
        };
        [i386, x32, 0, 0]
    });
    (r[0], r[1])
}

#[test]
fn abi_i386_and_x32_syslog_are_answered_from_the_ring() {
    if !require_root() {
        return;
    }
    let ring = Arc::new(Ring::new(RingConfig::with_bytes(RING_BYTES)));
    let h = Harness::with(ring, true, AgentOptions::default());
    let (i386, x32) = compat_abi_size_buffer(&h);
    assert_eq!(
        i386, RING_BYTES as i64,
        "int 0x80 syslog(SIZE_BUFFER) was not answered from the ring (the host's is 131072)"
    );
    assert_eq!(x32, RING_BYTES as i64, "x32 syslog(SIZE_BUFFER)");
}
