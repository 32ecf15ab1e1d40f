//! Clocks.

/// `CLOCK_MONOTONIC` in microseconds: the clock of the kernel's record timestamps (the host's
/// `ts_usec`, A2.3), so records written through kmsgfs sort with host records and `dmesg -T`
/// converts them the same way (fuse-notes §17).
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_usec_grows() {
        let a = monotonic_usec();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = monotonic_usec();
        assert!(b >= a + 1000, "{a} -> {b}");
    }
}
