//! Processes, namespaces, mounts, capabilities and signals: the calls `kmsgfs run` and
//! `kmsgfs oci-hook` make to build and watch a container.
//!
//! Each wrapper makes exactly one call (or one small fixed sequence), converts the C result into
//! a `Result`, and names the call and its arguments in the error, so that a failure reads like
//! "`mount(proc, /proc, proc, MS_NOSUID|MS_NODEV|MS_NOEXEC)` failed: Operation not permitted".
//! The launcher logic (`cli/run.rs`, `cli/oci_hook.rs`) is safe code.

use std::ffi::{CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libc::{c_int, c_ulong, pid_t};

use super::{Result, SysError};

fn cstring(path: &OsStr, call: &str) -> Result<CString> {
    CString::new(path.as_bytes()).map_err(|_| {
        SysError::new(
            format!("{call}({})", path.to_string_lossy()),
            io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
        )
    })
}

/// `unshare(flags)`: move the calling process into new namespaces (unshare(2)).
pub fn unshare(flags: c_int, flags_text: &str) -> Result<()> {
    // SAFETY: unshare only changes the calling process's namespace membership; it takes no
    // pointers.
    let rc = unsafe { libc::unshare(flags) };
    if rc == -1 {
        return Err(SysError::last(format!("unshare({flags_text})")));
    }
    Ok(())
}

/// `mount(source, target, fstype, flags, NULL)` (mount(2)). `flags_text` names the flags for
/// the error message.
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: c_ulong,
    flags_text: &str,
) -> Result<()> {
    let call = || {
        format!(
            "mount({}, {}, {}, {flags_text})",
            source.map_or("NULL".into(), |s| s.display().to_string()),
            target.display(),
            fstype.unwrap_or("NULL"),
        )
    };
    let source_c = source
        .map(|s| cstring(s.as_os_str(), "mount"))
        .transpose()?;
    let target_c = cstring(target.as_os_str(), "mount")?;
    let fstype_c = fstype
        .map(|f| cstring(OsStr::new(f), "mount"))
        .transpose()?;
    // SAFETY: every pointer is either null or a NUL-terminated string that outlives the call;
    // `data` is null, which mount(2) accepts for all the filesystem types used here.
    let rc = unsafe {
        libc::mount(
            source_c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            target_c.as_ptr(),
            fstype_c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    if rc == -1 {
        return Err(SysError::last(call()));
    }
    Ok(())
}

/// The mount flags (`ST_*` from statvfs(3)) of the mount that holds `path`.
pub fn statvfs_flags(path: &Path) -> Result<c_ulong> {
    let path_c = cstring(path.as_os_str(), "statvfs")?;
    let mut buf = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path_c` is NUL-terminated and `buf` is valid for writes of one `statvfs`.
    let rc = unsafe { libc::statvfs(path_c.as_ptr(), buf.as_mut_ptr()) };
    if rc == -1 {
        return Err(SysError::last(format!("statvfs({})", path.display())));
    }
    // SAFETY: statvfs returned 0, so it filled in the whole structure.
    let buf = unsafe { buf.assume_init() };
    Ok(buf.f_flag)
}

/// The two ends of a new `pipe2(O_CLOEXEC)`: (read, write).
pub fn pipe_cloexec() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc == -1 {
        return Err(SysError::last("pipe2(O_CLOEXEC)"));
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let pair = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok(pair)
}

/// `poll(fd, 0 events, 0 ms)`: whether the write end of the pipe `fd` reads from was closed by
/// every holder (`POLLHUP`).
pub fn pipe_hung_up(fd: BorrowedFd<'_>) -> Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    if rc == -1 {
        return Err(SysError::last(format!("poll({}, POLLHUP)", fd.as_raw_fd())));
    }
    Ok(pfd.revents & libc::POLLHUP != 0)
}

/// What `fork()` returned in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    /// In the parent, with the child's pid.
    Parent(pid_t),
    /// In the child.
    Child,
}

/// `fork()` (fork(2)).
///
/// # Safety
///
/// The calling process must be single-threaded. Otherwise the child holds copies of locks that
/// other threads may have held at the time of the fork (the allocator's, stdio's, the logger's),
/// and anything but async-signal-safe calls may deadlock in it.
pub unsafe fn fork() -> Result<Fork> {
    // SAFETY: the caller guarantees the process is single-threaded, so the child is a complete
    // copy of a consistent process.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(SysError::last("fork()")),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid)),
    }
}

/// `kill(pid, sig)` (kill(2)).
pub fn kill(pid: pid_t, sig: c_int) -> Result<()> {
    // SAFETY: kill takes no pointers.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc == -1 {
        return Err(SysError::last(format!("kill({pid}, {})", signal_name(sig))));
    }
    Ok(())
}

/// `waitpid(pid, &status, WNOHANG)`: `Some((pid, raw status))` for a child that changed state,
/// `None` if none did yet or no child is left (ECHILD).
pub fn waitpid_nohang(pid: pid_t) -> Result<Option<(pid_t, c_int)>> {
    let mut status: c_int = 0;
    loop {
        // SAFETY: `status` is valid for writes of one int.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        match rc {
            0 => return Ok(None),
            -1 => {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ECHILD) => return Ok(None),
                    _ => return Err(SysError::new(format!("waitpid({pid}, WNOHANG)"), err)),
                }
            }
            child => return Ok(Some((child, status))),
        }
    }
}

/// A set of signals (`sigset_t`).
#[derive(Clone, Copy)]
pub struct SigSet(libc::sigset_t);

impl SigSet {
    /// The set holding exactly `signals`.
    pub fn of(signals: &[c_int]) -> Self {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given; sigaddset only fails for invalid
        // signal numbers, and the callers pass libc constants.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for &sig in signals {
                libc::sigaddset(set.as_mut_ptr(), sig);
            }
            SigSet(set.assume_init())
        }
    }

    /// `sigprocmask(SIG_BLOCK, self)`: block these signals, returning the previous mask.
    pub fn block(&self) -> Result<SigSet> {
        let mut old = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: both pointers are valid; `old` is written by the call before we read it.
        let rc = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &self.0, old.as_mut_ptr()) };
        if rc == -1 {
            return Err(SysError::last("sigprocmask(SIG_BLOCK)"));
        }
        // SAFETY: sigprocmask succeeded and filled in `old`.
        Ok(SigSet(unsafe { old.assume_init() }))
    }

    /// `sigprocmask(SIG_SETMASK, self)`: make this the signal mask. Async-signal-safe, so it
    /// may run between fork and exec.
    pub fn set_mask(&self) -> io::Result<()> {
        // SAFETY: the pointer is valid for the call; the old mask is not requested.
        let rc = unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
        if rc == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `sigwaitinfo(self)`: wait for one of these (blocked) signals; returns its number and
    /// `si_code`. Retries on EINTR.
    pub fn wait(&self) -> Result<(c_int, c_int)> {
        loop {
            let mut info = MaybeUninit::<libc::siginfo_t>::uninit();
            // SAFETY: the set and the siginfo buffer are valid for the duration of the call.
            let sig = unsafe { libc::sigwaitinfo(&self.0, info.as_mut_ptr()) };
            if sig == -1 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(SysError::new("sigwaitinfo()", err));
            }
            // SAFETY: sigwaitinfo returned a signal, so it filled in `info`.
            let info = unsafe { info.assume_init() };
            return Ok((sig, info.si_code));
        }
    }
}

/// `signal(sig, SIG_DFL)`: restore the default action (for SIGCHLD, in case the caller
/// inherited SIG_IGN, which would make the kernel reap children before we can wait for them).
pub fn default_action(sig: c_int) -> Result<()> {
    // SAFETY: installing SIG_DFL involves no handler code.
    let rc = unsafe { libc::signal(sig, libc::SIG_DFL) };
    if rc == libc::SIG_ERR {
        return Err(SysError::last(format!(
            "signal({}, SIG_DFL)",
            signal_name(sig)
        )));
    }
    Ok(())
}

/// `prctl(PR_SET_PDEATHSIG, sig)`: get `sig` when the parent exits.
pub fn set_parent_death_signal(sig: c_int) -> Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as c_ulong, 0, 0, 0) };
    if rc == -1 {
        return Err(SysError::last(format!(
            "prctl(PR_SET_PDEATHSIG, {})",
            signal_name(sig)
        )));
    }
    Ok(())
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`: orphaned descendants are re-parented to this process.
pub fn set_child_subreaper() -> Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes a flag and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as c_ulong, 0, 0, 0) };
    if rc == -1 {
        return Err(SysError::last("prctl(PR_SET_CHILD_SUBREAPER, 1)"));
    }
    Ok(())
}

/// `_exit(code)`: end the process without running atexit handlers or flushing stdio buffers
/// that a forked child shares with its parent.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// `geteuid()` and `getegid()`.
pub fn effective_ids() -> (libc::uid_t, libc::gid_t) {
    // SAFETY: both calls always succeed and take no arguments.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// `write(path, contents)` for a proc file such as `/proc/self/uid_map`, as one write(2), which
/// those files require.
pub fn write_proc_file(path: &str, contents: &str) -> Result<()> {
    std::fs::write(path, contents)
        .map_err(|err| SysError::new(format!("write({path}, {:?})", contents.trim_end()), err))
}

/// The conventional name of a signal, for messages.
pub fn signal_name(sig: c_int) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// `struct __user_cap_header_struct` (capget(2)).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

/// `struct __user_cap_data_struct` (capget(2)); version 3 uses two of them (caps 0-31, 32-63).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// Removes the capabilities `caps` (numbers, with names for messages) from the calling
/// process for good: `prctl(PR_CAPBSET_DROP)` for each, so no later execve(2) can gain them,
/// then `capset(2)` without them in the effective, permitted and inheritable sets (which also
/// clears them from the ambient set).
pub fn drop_capabilities(caps: &[(u32, &str)]) -> Result<()> {
    for &(cap, name) in caps {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and no pointers.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as c_ulong, 0, 0, 0) };
        if rc == -1 {
            return Err(SysError::last(format!("prctl(PR_CAPBSET_DROP, {name})")));
        }
    }
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: `header` and `data` are valid for the kernel's reads and writes of one v3 header
    // and two data structures, which is what version 3 transfers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if rc == -1 {
        return Err(SysError::last("capget(0)"));
    }
    for &(cap, _) in caps {
        let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        if let Some(d) = data.get_mut(word) {
            d.effective &= !bit;
            d.permitted &= !bit;
            d.inheritable &= !bit;
        }
    }
    let names: Vec<&str> = caps.iter().map(|&(_, name)| name).collect();
    // SAFETY: as for capget; capset only reads the two structures.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if rc == -1 {
        return Err(SysError::last(format!(
            "capset(0, without {})",
            names.join("|")
        )));
    }
    Ok(())
}

/// `setns(fd, nstype)` (setns(2)): join the namespace `fd` refers to; `what` names it for the
/// error message.
pub fn setns(fd: BorrowedFd<'_>, nstype: c_int, what: &str) -> Result<()> {
    // SAFETY: setns takes a descriptor and a flag and no pointers; `fd` is open for the call.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), nstype) };
    if rc == -1 {
        return Err(SysError::last(format!("setns({what})")));
    }
    Ok(())
}

/// `waitpid(pid, &status, 0)`, retried on EINTR: the raw status.
pub fn waitpid_blocking(pid: pid_t) -> Result<c_int> {
    let mut status: c_int = 0;
    loop {
        // SAFETY: `status` is valid for writes of one int.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == -1 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(SysError::new(format!("waitpid({pid}, 0)"), err));
        }
        return Ok(status);
    }
}

/// The number of threads of the calling process (`/proc/self/task`): [`fork`] needs 1.
pub fn thread_count() -> Result<usize> {
    let entries = std::fs::read_dir("/proc/self/task")
        .map_err(|err| SysError::new("opendir(/proc/self/task)", err))?;
    Ok(entries.count())
}

/// `open(path, O_PATH | O_DIRECTORY | O_CLOEXEC)`: a directory to resolve names below without
/// following anything above it.
pub fn open_dir_path(path: &Path) -> Result<OwnedFd> {
    let c = cstring(path.as_os_str(), "open")?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call; no mode without O_CREAT.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(SysError::last(format!(
            "open({}, O_PATH|O_DIRECTORY)",
            path.display()
        )));
    }
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat(dir, name, flags | O_CLOEXEC, 0644)`; `dir_text` names `dir` for the error message.
pub fn openat(dir: BorrowedFd<'_>, dir_text: &str, name: &str, flags: c_int) -> Result<OwnedFd> {
    let call = || format!("openat({dir_text}, {name})");
    let c = cstring(OsStr::new(name), "openat")?;
    // SAFETY: `c` is a NUL-terminated name that outlives the call and `dir` is open; the mode
    // is used only with O_CREAT.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return Err(SysError::last(call()));
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `fd` (opened with `O_PATH | O_NOFOLLOW`) is a symbolic link (fstat(2)).
pub fn is_symlink(fd: BorrowedFd<'_>) -> bool {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is open and `st` is valid storage for one stat, filled on success.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) };
    // SAFETY: fstat returned 0, so it initialised `st`.
    rc == 0 && unsafe { st.assume_init() }.st_mode & libc::S_IFMT == libc::S_IFLNK
}
