//! The two BPF calls kmsgfs makes itself (the skeleton and libbpf-rs make the rest): run-time
//! statistics of a loaded program, for the attribution's cost report.

use std::io;
use std::os::fd::AsRawFd;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

use libbpf_rs::libbpf_sys;

/// `bpf(BPF_ENABLE_STATS, BPF_STATS_RUN_TIME)`: the kernel counts each program's runs and run
/// time while the returned fd is open (no sysctl is changed).
pub fn enable_run_time_stats() -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall wrapper taking an enum value and no pointers.
    let fd = unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: `fd` is a fresh descriptor returned by the kernel and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `bpf(BPF_OBJ_GET_INFO_BY_FD)` on a program fd: `(run_cnt, run_time_ns)`.
pub fn prog_run_stats(prog: BorrowedFd<'_>) -> Option<(u64, u64)> {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = u32::try_from(std::mem::size_of_val(&info)).ok()?;
    // SAFETY: `info` is a valid, writable bpf_prog_info of `len` bytes; the kernel writes at
    // most `len` bytes; `prog` is open for the call.
    let ret = unsafe {
        libbpf_sys::bpf_obj_get_info_by_fd(prog.as_raw_fd(), (&raw mut info).cast(), &mut len)
    };
    (ret == 0).then_some((info.run_cnt, info.run_time_ns))
}
