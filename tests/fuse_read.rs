//! kmsg file reads, seeks and poll over a real FUSE mount (kmsg-semantics A3, A4, A5, A8, E).
//!
//! Root only. Host records come from the harness FIFO; the test process is in the host's
//! namespaces, so `DIR/kmsg` is the host ring.

use std::time::Duration;

use crate::support::*;

/// Every event a kmsg fd could report, so revents shows the full mask (poll(2) masks revents
/// with the requested events plus POLLERR|POLLHUP).
const ALL: i16 = libc::POLLIN | libc::POLLRDNORM | libc::POLLPRI | libc::POLLOUT | libc::POLLWRNORM;

fn start_with_records(n: usize) -> Daemon {
    let d = Daemon::start();
    for i in 0..n {
        d.feed(6, &format!("record {i}"));
    }
    d.wait_host_records(n as u64);
    d
}

#[test]
fn a3_7_one_record_per_read_with_dictionary() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    d.feed_raw("6,100,5000,-;first\n");
    d.feed_raw("3,101,6000,-;with dict\n SUBSYSTEM=acpi\n DEVICE=+acpi:PNP0A08:00\n");
    d.feed_raw("4,102,7000,-;tab\\x09esc\n");
    d.wait_host_records(3);
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    let a = read_raw(fd, 8192).unwrap();
    let b = read_raw(fd, 8192).unwrap();
    let c = read_raw(fd, 8192).unwrap();
    // The ring numbers records itself (seq 0, 1, 2); timestamps are the host's.
    assert_eq!(String::from_utf8_lossy(&a), "6,0,5000,-;first\n");
    assert_eq!(
        String::from_utf8_lossy(&b),
        "3,1,6000,-;with dict\n SUBSYSTEM=acpi\n DEVICE=+acpi:PNP0A08:00\n"
    );
    assert_eq!(String::from_utf8_lossy(&c), "4,2,7000,-;tab\\x09esc\n");
    assert_eq!(read_raw(fd, 8192), Err(libc::EAGAIN));
    close_raw(fd);
}

#[test]
fn a3_5_einval_consumes_record_and_keeps_f_pos() {
    if !require_root() {
        return;
    }
    let d = start_with_records(3);
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    let first = read_raw(fd, 8192).unwrap();
    let pos = lseek_raw(fd, 0, libc::SEEK_CUR).unwrap();
    assert_eq!(pos as usize, first.len());
    // Record 1 does not fit in 10 bytes: EINVAL, consumed, f_pos unchanged.
    assert_eq!(read_raw(fd, 10), Err(libc::EINVAL));
    assert_eq!(lseek_raw(fd, 0, libc::SEEK_CUR).unwrap(), pos);
    let next = String::from_utf8(read_raw(fd, 8192).unwrap()).unwrap();
    assert_eq!(text_of(&next), "record 2");
    close_raw(fd);
    // count = len - 1 fails and consumes, count = len succeeds (A3.5). Fresh opens avoid the
    // documented ambiguity of SEEK_SET 0 while f_pos is 0.
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    let r0 = read_raw(fd, 8192).unwrap();
    close_raw(fd);
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    assert_eq!(read_raw(fd, r0.len() - 1), Err(libc::EINVAL));
    let r1 = String::from_utf8(read_raw(fd, 8192).unwrap()).unwrap();
    assert_eq!(text_of(&r1), "record 1");
    close_raw(fd);
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    assert_eq!(read_raw(fd, r0.len()).unwrap(), r0);
    close_raw(fd);
}

#[test]
fn a3_3_a9_2_epipe_repositions_after_overrun_and_a5_3_poll_0x4b() {
    if !require_root() {
        return;
    }
    // The smallest ring (4096 bytes) holds about 90 of these records.
    let d = Daemon::start_args(&["--ring-size", "4096"]);
    d.feed_many(3, "early");
    d.wait_host_records(3);
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    let r = String::from_utf8(read_raw(fd, 8192).unwrap()).unwrap();
    assert_eq!(text_of(&r), "early 0");
    d.feed_many(300, "flood");
    d.wait_host_records(303);
    assert_eq!(poll_raw(fd, ALL, 0), 0x4b);
    assert_eq!(read_raw(fd, 8192), Err(libc::EPIPE));
    assert_eq!(poll_raw(fd, ALL, 0), 0x41);
    // After EPIPE the reader is at the oldest record, where a fresh open starts too.
    let after = String::from_utf8(read_raw(fd, 8192).unwrap()).unwrap();
    let fd2 = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    let fresh = String::from_utf8(read_raw(fd2, 8192).unwrap()).unwrap();
    assert_eq!(after, fresh);
    assert!(text_of(&after).starts_with("flood "));
    // Reads continue normally to the end.
    let rest = drain(fd);
    assert_eq!(text_of(rest.last().unwrap()), "flood 299");
    let stats = d.stats();
    let host = &stats["rings"][0];
    assert!(host["overruns"].as_u64().unwrap() > 0, "{stats}");
    close_raw(fd);
    close_raw(fd2);
}

#[test]
fn a3_2_eagain_with_o_nonblock_and_after_fcntl_setfl() {
    if !require_root() {
        return;
    }
    let d = start_with_records(1);
    // Opened blocking, switched to non-blocking with F_SETFL (Go runtime, D4).
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY).unwrap();
    assert!(read_raw(fd, 8192).is_ok());
    // SAFETY: fd is open; F_SETFL with integer flags.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
    assert_eq!(rc, 0);
    assert_eq!(read_raw(fd, 8192), Err(libc::EAGAIN));
    // Back to blocking: the read now waits and is woken by the next record.
    // SAFETY: as above.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFL, 0) };
    assert_eq!(rc, 0);
    let t = std::thread::spawn(move || read_raw(fd, 8192));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!t.is_finished(), "blocking read returned without a record");
    d.feed(6, "wake up");
    let got = String::from_utf8(t.join().unwrap().unwrap()).unwrap();
    assert_eq!(text_of(&got), "wake up");
    close_raw(fd);
}

#[test]
fn a3_2_blocking_reads_of_several_readers_woken_by_one_append() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    let fds: Vec<i32> = (0..4)
        .map(|_| open_raw(&d.kmsg(), libc::O_RDONLY).unwrap())
        .collect();
    let threads: Vec<_> = fds
        .iter()
        .map(|&fd| std::thread::spawn(move || read_raw(fd, 8192)))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    d.feed(5, "for everyone");
    for t in threads {
        let r = String::from_utf8(t.join().unwrap().unwrap()).unwrap();
        assert_eq!(r, "5,0,1000,-;for everyone\n");
    }
    for fd in fds {
        close_raw(fd);
    }
}

#[test]
fn a3_8_pread_ignores_offset() {
    if !require_root() {
        return;
    }
    let d = start_with_records(3);
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    read_raw(fd, 8192).unwrap();
    let mut buf = vec![0u8; 8192];
    // SAFETY: buf has 8192 writable bytes.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), 8192, 123456) };
    assert!(n > 0);
    let s = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
    assert_eq!(text_of(&s), "record 1");
    close_raw(fd);
}

#[test]
fn a3_9_read_on_write_only_fd_is_ebadf() {
    if !require_root() {
        return;
    }
    let d = start_with_records(1);
    let fd = open_raw(&d.kmsg(), libc::O_WRONLY).unwrap();
    assert_eq!(read_raw(fd, 8192), Err(libc::EBADF));
    close_raw(fd);
}

#[test]
fn a8_2_readers_have_independent_positions() {
    if !require_root() {
        return;
    }
    let d = start_with_records(3);
    let a = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    let b = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    assert_eq!(drain(a).len(), 3);
    let rb = String::from_utf8(read_raw(b, 8192).unwrap()).unwrap();
    assert_eq!(text_of(&rb), "record 0");
    close_raw(a);
    close_raw(b);
}

#[test]
fn a8_1_fstat_is_a_regular_0644_file_not_a_char_device() {
    if !require_root() {
        return;
    }
    let d = start_with_records(1);
    let md = std::fs::metadata(d.kmsg()).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    // Deviation (docs/semantics.md): a FUSE file cannot be S_IFCHR.
    assert!(md.file_type().is_file());
    assert!(!md.file_type().is_char_device());
    assert_eq!(md.mode() & 0o7777, 0o644);
    assert_eq!(md.uid(), 0);
    // One page, so that sendfile reaches the daemon and fails with EINVAL as on the device
    // (docs/semantics.md §4.1, `resting_size` in src/frontends/fuse/fs.rs).
    assert_eq!(md.size(), 4096);
}

#[test]
fn a4_1_seek_set_0_goes_to_oldest() {
    if !require_root() {
        return;
    }
    let d = start_with_records(3);
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    assert_eq!(drain(fd).len(), 3);
    assert_eq!(lseek_raw(fd, 0, libc::SEEK_SET).unwrap(), 0);
    let r = String::from_utf8(read_raw(fd, 8192).unwrap()).unwrap();
    assert_eq!(text_of(&r), "record 0");
    close_raw(fd);
}

#[test]
fn a4_2_seek_end_then_only_new_records_and_a5_4_poll_0() {
    if !require_root() {
        return;
    }
    let d = start_with_records(3);
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    lseek_raw(fd, 0, libc::SEEK_END).unwrap();
    assert_eq!(poll_raw(fd, ALL, 0), 0);
    assert_eq!(read_raw(fd, 8192), Err(libc::EAGAIN));
    d.feed(6, "after end");
    d.wait_host_records(4);
    assert_eq!(poll_raw(fd, ALL, 0), 0x41);
    let r = String::from_utf8(read_raw(fd, 8192).unwrap()).unwrap();
    assert_eq!(text_of(&r), "after end");
    // SEEK_SET 0 after SEEK_END is distinguishable from continuing.
    lseek_raw(fd, 0, libc::SEEK_SET).unwrap();
    let r = String::from_utf8(read_raw(fd, 8192).unwrap()).unwrap();
    assert_eq!(text_of(&r), "record 0");
    // SEEK_END on a write-only fd works too (A4.7).
    let wo = open_raw(&d.kmsg(), libc::O_WRONLY).unwrap();
    assert!(lseek_raw(wo, 0, libc::SEEK_END).is_ok());
    close_raw(wo);
    close_raw(fd);
}

#[test]
fn a4_3_seek_data_goes_to_clear_point_and_a4_4_a4_5_errors() {
    if !require_root() {
        return;
    }
    let d = start_with_records(3);
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    assert_eq!(drain(fd).len(), 3);
    // The clear point is 0 (nothing cleared yet): SEEK_DATA goes back to record 0.
    assert!(lseek_raw(fd, 0, libc::SEEK_DATA).unwrap() > 0);
    let r = String::from_utf8(read_raw(fd, 8192).unwrap()).unwrap();
    assert_eq!(text_of(&r), "record 0");
    assert_eq!(lseek_raw(fd, 1, libc::SEEK_DATA), Err(libc::ESPIPE));
    assert_eq!(lseek_raw(fd, 0, libc::SEEK_HOLE), Err(libc::EINVAL));
    close_raw(fd);
}

#[test]
fn a4_3_a9_3_seek_data_behind_the_ring_gives_epipe() {
    if !require_root() {
        return;
    }
    let d = Daemon::start_args(&["--ring-size", "4096"]);
    d.feed_many(300, "wrap");
    d.wait_host_records(300);
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    lseek_raw(fd, 0, libc::SEEK_DATA).unwrap();
    // clear_seq 0 was overwritten: EPIPE, then the oldest record (dmesg's first read).
    assert_eq!(read_raw(fd, 8192), Err(libc::EPIPE));
    let r = String::from_utf8(read_raw(fd, 8192).unwrap()).unwrap();
    assert!(text_of(&r).starts_with("wrap "));
    close_raw(fd);
}

#[test]
fn a5_2_a5_5_poll_masks_and_never_pollout() {
    if !require_root() {
        return;
    }
    let d = start_with_records(1);
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    assert_eq!(poll_raw(fd, ALL, 0), 0x41);
    assert_eq!(
        poll_raw(fd, libc::POLLOUT, 0),
        0,
        "POLLOUT is never reported"
    );
    drain(fd);
    assert_eq!(poll_raw(fd, ALL, 0), 0);
    // A write-only fd reports POLLIN (A5.5) and still no POLLOUT.
    let wo = open_raw(&d.kmsg(), libc::O_WRONLY).unwrap();
    assert_eq!(poll_raw(wo, ALL, 0), 0x41);
    close_raw(wo);
    close_raw(fd);
}

#[test]
fn a5_1_poll_blocks_until_a_record_arrives() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    let t = std::thread::spawn(move || poll_raw(fd, ALL, 20_000));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!t.is_finished(), "poll returned with nothing to read");
    d.feed(6, "poll me");
    assert_eq!(t.join().unwrap(), 0x41);
    close_raw(fd);
}

fn epoll_wait_one(ep: i32, timeout_ms: i32) -> i32 {
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: `ev` is one valid epoll_event.
    let n = unsafe { libc::epoll_wait(ep, &mut ev, 1, timeout_ms) };
    assert!(n >= 0, "epoll_wait: {}", std::io::Error::last_os_error());
    if n == 1 {
        assert_ne!(ev.events & libc::EPOLLIN as u32, 0);
        assert_eq!(ev.events & libc::EPOLLOUT as u32, 0);
    }
    n
}

fn epoll_for(fd: i32, events: u32) -> i32 {
    // SAFETY: plain syscall.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0);
    let mut ev = libc::epoll_event { events, u64: 1 };
    // SAFETY: ep and fd are open; ev is valid.
    let rc = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    assert_eq!(rc, 0, "epoll_ctl: {}", std::io::Error::last_os_error());
    ep
}

#[test]
fn a5_6_d4_edge_triggered_epoll_wakes_on_every_record() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    // Go's sequence: blocking open, epoll ET registration, F_SETFL O_NONBLOCK (D4).
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY).unwrap();
    let ep = epoll_for(
        fd,
        (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
    );
    // SAFETY: fd is open.
    unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
    for i in 0..5 {
        assert_eq!(read_raw(fd, 8192), Err(libc::EAGAIN));
        d.feed(6, &format!("edge {i}"));
        assert_eq!(epoll_wait_one(ep, 20_000), 1, "no edge for record {i}");
        let r = String::from_utf8(read_raw(fd, 8192).unwrap()).unwrap();
        assert_eq!(text_of(&r), format!("edge {i}"));
    }
    close_raw(ep);
    close_raw(fd);
}

#[test]
fn a5_6_d3_level_triggered_epoll_ready_only_while_pending() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    let fd = open_raw(&d.kmsg(), libc::O_RDWR | libc::O_NONBLOCK).unwrap();
    let ep = epoll_for(fd, libc::EPOLLIN as u32);
    assert_eq!(epoll_wait_one(ep, 100), 0);
    for i in 0..3 {
        d.feed(6, &format!("level {i}"));
        assert_eq!(epoll_wait_one(ep, 20_000), 1);
        // Still pending: level-triggered reports it again.
        assert_eq!(epoll_wait_one(ep, 0), 1);
        read_raw(fd, 8192).unwrap();
        assert_eq!(epoll_wait_one(ep, 100), 0, "ready with nothing pending");
    }
    close_raw(ep);
    close_raw(fd);
}

#[test]
fn d1_util_linux_dmesg_over_a_bind_mounted_kmsg() {
    if !require_root() || !require_tool("unshare") || !require_tool("dmesg") {
        return;
    }
    let d = Daemon::start();
    // A private mount namespace stands in for a container: it gets its own (mount ns) ring.
    let out = sh(&format!(
        "unshare -m --propagation private sh -c '\
         mount --bind {k} /dev/kmsg && \
         echo \"<3>first line\" > /dev/kmsg && \
         echo \"<14>second line\" > /dev/kmsg && \
         dmesg -x && dmesg -r'",
        k = d.kmsg().display()
    ));
    assert_eq!(out.code, 0, "{}", out.err);
    let lines: Vec<&str> = out.out.lines().collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[0].starts_with("user  :err   : [") && lines[0].ends_with("] first line"));
    assert!(lines[1].starts_with("user  :info  : [") && lines[1].ends_with("] second line"));
    // `dmesg -r` (util-linux 2.38 prints user-facility prios oddly; only the text is checked).
    assert!(lines[2].ends_with("] first line") && lines[3].ends_with("] second line"));
    // The host ring did not get the container's records.
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    assert!(drain(fd).is_empty());
    close_raw(fd);
}
