//! Daemon lifecycle and host ingestion: lost-record accounting, crash recovery, thread options.

use std::time::Duration;

use crate::support::*;

#[test]
fn ingestion_counts_lost_host_records_and_logs_the_gap() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    d.feed(6, "before gap");
    d.skip_host_seq(7);
    d.feed(6, "after gap");
    d.wait_host_records(2);
    let s = d.stats();
    assert_eq!(s["host"]["records_lost"], 7, "{s}");
    assert!(
        d.wait_log("7 records lost", TIMEOUT),
        "no log line for the gap:\n{}",
        d.log_text()
    );
    // The ring numbers records itself: no gap in the ring's seqs.
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    let r = drain(fd);
    close_raw(fd);
    assert_eq!(header_of(&r[0]).1, 0);
    assert_eq!(header_of(&r[1]).1, 1);
}

#[test]
fn ingestion_skips_and_counts_unparsable_records() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    d.feed_raw("this is not a kmsg record\n");
    d.feed(6, "good");
    d.wait_host_records(1);
    let s = d.stats();
    assert_eq!(s["host"]["parse_errors"], 1, "{s}");
}

#[test]
fn crash_recovery_after_kill_9_restart_on_the_same_dir() {
    if !require_root() {
        return;
    }
    let mut d = Daemon::start();
    d.kill9();
    // The dead mount stays behind (no AutoUnmount) and gives ENOTCONN.
    assert!(
        is_kmsgfs_mounted(d.dir()),
        "stale mount expected after SIGKILL"
    );
    assert_eq!(
        open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK),
        Err(libc::ENOTCONN)
    );
    d.restart(Options::default());
    assert!(d.log_text().contains("removed 1 stale kmsgfs mount"));
    d.feed(6, "after restart");
    d.wait_host_records(1);
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    let r = drain(fd);
    close_raw(fd);
    assert_eq!(r.len(), 1);
    assert_eq!(text_of(&r[0]), "after restart");
    // Exactly one kmsgfs mount on the directory now.
    let n = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&format!(" {} ", d.dir().display())) && l.contains(" kmsgfs "))
        .count();
    assert_eq!(n, 1);
}

#[test]
fn single_thread_and_pinned_threads_serve_reads() {
    if !require_root() {
        return;
    }
    for args in [
        &["--threads", "1"][..],
        &["--threads", "2", "--pin-threads"][..],
    ] {
        let d = Daemon::start_args(args);
        d.feed_many(50, "threaded");
        d.wait_host_records(50);
        let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
        assert_eq!(drain(fd).len(), 50, "{args:?}");
        close_raw(fd);
        if args.contains(&"--pin-threads") {
            assert!(d.wait_log("pinned to CPU", Duration::from_secs(5)));
        }
    }
}

#[test]
fn a_blocked_reader_does_not_stall_other_clients_one_thread() {
    if !require_root() {
        return;
    }
    no_stall(&["--threads", "1"]);
}

#[test]
fn a_blocked_reader_does_not_stall_other_clients_two_threads() {
    if !require_root() {
        return;
    }
    no_stall(&["--threads", "2"]);
}

fn no_stall(args: &[&str]) {
    let d = Daemon::start_args(args);
    d.feed(6, "one");
    d.wait_host_records(1);
    // Several blocking readers parked at the end...
    let fds: Vec<i32> = (0..8)
        .map(|_| {
            let fd = open_raw(&d.kmsg(), libc::O_RDONLY).unwrap();
            read_raw(fd, 8192).unwrap();
            fd
        })
        .collect();
    let threads: Vec<_> = fds
        .iter()
        .map(|&fd| std::thread::spawn(move || read_raw(fd, 8192)))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // ...while another client still gets served, even with one event-loop thread.
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    assert_eq!(drain(fd).len(), 1);
    close_raw(fd);
    let _ = d.stats();
    d.feed(6, "two");
    for t in threads {
        let r = String::from_utf8(t.join().unwrap().unwrap()).unwrap();
        assert_eq!(text_of(&r), "two");
    }
    for fd in fds {
        close_raw(fd);
    }
}

#[test]
fn sigint_shuts_down_cleanly_too() {
    if !require_root() {
        return;
    }
    let mut d = Daemon::start();
    d.signal(libc::SIGINT);
    assert!(d.wait_log("signal 2", TIMEOUT), "{}", d.log_text());
    let st = d.stop().expect("exit status");
    assert!(st.success(), "{st:?}");
    assert!(!is_kmsgfs_mounted(d.dir()));
}

#[test]
fn invalid_ring_size_is_refused() {
    if !require_root() {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kmsgfs"))
        .args(["serve", "--mount", "/nonexistent", "--ring-size", "100"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ring-size 100"));
}
