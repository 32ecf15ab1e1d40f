//! Writes to the kmsg file (kmsg-semantics A6, A7, A1.1, E7, E8) over a real FUSE mount.

use crate::support::*;

/// Every record in the host ring, as text.
fn host_records(d: &Daemon) -> Vec<String> {
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    let r = drain(fd);
    close_raw(fd);
    r
}

fn write_one(d: &Daemon, data: &[u8]) -> Result<usize, i32> {
    let fd = open_raw(&d.kmsg(), libc::O_WRONLY).unwrap();
    let r = write_raw(fd, data);
    close_raw(fd);
    r
}

#[test]
fn a6_4_one_write_is_one_record() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    assert_eq!(write_one(&d, b"hello\n"), Ok(6));
    assert_eq!(write_one(&d, b"two\nlines\n"), Ok(10));
    let r = host_records(&d);
    assert_eq!(r.len(), 2);
    let (prio, seq, ts) = header_of(&r[0]);
    assert_eq!((prio, seq), (12, 0));
    assert_eq!(text_of(&r[0]), "hello");
    // Embedded newline kept and escaped (A2.6, A6.6).
    assert_eq!(text_of(&r[1]), "two\\x0alines");
    // Timestamp on CLOCK_MONOTONIC in µs: close to our own monotonic clock.
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let now_us = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1000;
    assert!(
        ts <= now_us && now_us - ts < 60_000_000,
        "ts {ts} now {now_us}"
    );
}

#[test]
fn a6_4_e7_writev_of_five_iovecs_is_one_record() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    let fd = open_raw(&d.kmsg(), libc::O_WRONLY).unwrap();
    let parts: [&[u8]; 5] = [
        b"<30>",
        b"myident",
        b"[4242]: ",
        b"hello from writev",
        b"\n",
    ];
    let iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut _,
            iov_len: p.len(),
        })
        .collect();
    // SAFETY: every iovec points at a live slice of its length.
    let n = unsafe { libc::writev(fd, iov.as_ptr(), 5) };
    let total: usize = parts.iter().map(|p| p.len()).sum();
    assert_eq!(n as usize, total);
    close_raw(fd);
    let r = host_records(&d);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(header_of(&r[0]).0, 30);
    assert_eq!(text_of(&r[0]), "myident[4242]: hello from writev");
}

#[test]
fn a6_5_prefix_parsing_through_the_file() {
    if !require_root() {
        return;
    }
    let d = Daemon::start_args(&["--devkmsg", "on"]);
    let cases: &[(&str, u64, &str)] = &[
        ("plain message", 12, "plain message"),
        ("<3>x", 11, "x"),
        ("<14>x", 14, "x"),
        ("<165>x", 165, "x"),
        ("<0>x", 8, "x"),
        ("<>x", 8, "x"),
        ("<03>x", 11, "x"),
        ("<abc>x", 12, "<abc>x"),
        ("< 3>x", 12, "< 3>x"),
        ("<-1>x", 12, "<-1>x"),
        ("<0x1f>x", 12, "<0x1f>x"),
        ("<4294967295>x", 2047, "x"),
        ("<2048>x", 8, "x"),
        ("<3><4>x", 11, "<4>x"),
    ];
    for (input, _, _) in cases {
        assert_eq!(write_one(&d, input.as_bytes()), Ok(input.len()));
    }
    let r = host_records(&d);
    assert_eq!(r.len(), cases.len());
    for (rec, (input, prio, text)) in r.iter().zip(cases) {
        assert_eq!(header_of(rec).0, *prio, "prio of {input:?}");
        assert_eq!(text_of(rec), *text, "text of {input:?}");
    }
}

#[test]
fn a6_1_writes_over_1024_bytes_are_einval() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    let ok = vec![b'A'; 1024];
    assert_eq!(write_one(&d, &ok), Ok(1024));
    let too_long = vec![b'B'; 1025];
    assert_eq!(write_one(&d, &too_long), Err(libc::EINVAL));
    let r = host_records(&d);
    assert_eq!(r.len(), 1);
    // Text cut to 1023 bytes (A6.6).
    assert_eq!(text_of(&r[0]).len(), 1023);
}

#[test]
fn a6_6_a6_9_nul_stops_text_and_write_returns_full_length() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    assert_eq!(write_one(&d, b"abc\0def\n"), Ok(8));
    assert_eq!(write_one(&d, b"trail\n\n"), Ok(7));
    let r = host_records(&d);
    assert_eq!(text_of(&r[0]), "abc");
    assert_eq!(text_of(&r[1]), "trail\\x0a");
}

#[test]
fn a6_10_write_on_read_only_fd_is_ebadf() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY).unwrap();
    assert_eq!(write_raw(fd, b"x\n"), Err(libc::EBADF));
    close_raw(fd);
}

#[test]
fn e_shell_redirect_with_o_trunc_works() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    let out = sh(&format!(
        "echo '<5>from shell' > {k} && echo '<6>appended' >> {k}",
        k = d.kmsg().display()
    ));
    assert_eq!(out.code, 0, "{}", out.err);
    let r = host_records(&d);
    assert_eq!(r.len(), 2);
    assert_eq!((header_of(&r[0]).0, text_of(&r[0])), (13, "from shell"));
    assert_eq!((header_of(&r[1]).0, text_of(&r[1])), (14, "appended"));
}

#[test]
fn a7_5_a7_6_ratelimit_ten_per_window_and_report_on_close() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    let fd = open_raw(&d.kmsg(), libc::O_WRONLY).unwrap();
    for i in 0..15 {
        let m = format!("line {i}\n");
        // Dropped writes still return their length (A7.5, A6.9).
        assert_eq!(write_raw(fd, m.as_bytes()), Ok(m.len()));
    }
    // Another open file is not limited meanwhile.
    let other = open_raw(&d.kmsg(), libc::O_WRONLY).unwrap();
    for i in 0..3 {
        write_raw(other, format!("other {i}\n").as_bytes()).unwrap();
    }
    close_raw(other);
    let before_close = host_records(&d);
    assert_eq!(before_close.len(), 13);
    close_raw(fd);
    // The report arrives with the release, which is asynchronous: wait for it.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let r = loop {
        let r = host_records(&d);
        if r.len() == 14 || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(r.len(), 14, "{r:?}");
    let last = &r[13];
    assert_eq!(header_of(last).0, 4, "kern.warning");
    let text = text_of(last);
    assert!(
        text.starts_with("printk: ")
            && text.ends_with(": 5 output lines suppressed due to ratelimiting"),
        "{text}"
    );
    let stats = d.stats();
    assert_eq!(stats["rings"][0]["writes_dropped_ratelimit"], 5, "{stats}");
}

#[test]
fn a7_3_devkmsg_on_has_no_limit() {
    if !require_root() {
        return;
    }
    let d = Daemon::start_args(&["--devkmsg", "on"]);
    let fd = open_raw(&d.kmsg(), libc::O_WRONLY).unwrap();
    for i in 0..30 {
        write_raw(fd, format!("n {i}\n").as_bytes()).unwrap();
    }
    close_raw(fd);
    assert_eq!(host_records(&d).len(), 30);
}

#[test]
fn a1_1_a7_4_devkmsg_off_refuses_every_open_with_eperm() {
    if !require_root() {
        return;
    }
    let d = Daemon::start_args(&["--devkmsg", "off"]);
    assert_eq!(open_raw(&d.kmsg(), libc::O_RDONLY), Err(libc::EPERM));
    assert_eq!(open_raw(&d.kmsg(), libc::O_WRONLY), Err(libc::EPERM));
    assert_eq!(open_raw(&d.kmsg(), libc::O_RDWR), Err(libc::EPERM));
}
