//! The notify side of a seccomp listener: receive, validate, write into the caller, reply.
//!
//! Rules from seccomp-agent.md §4, §10 and §15:
//!
//! * `SECCOMP_IOCTL_NOTIF_RECV` needs a zeroed struct; ENOENT means the caller left between the
//!   poll and the receive, and is not an error.
//! * A write into the caller goes `open("/proc/<tid>/mem")` → `NOTIF_ID_VALID` → `pwrite` through
//!   that fd. Once the id is valid after the open, the fd is bound to the caller's address space;
//!   if the caller dies later the write returns 0, so a short write is a failure. A plain
//!   `process_vm_writev(pid)` could write into an unrelated process that reused the pid.
//! * `/proc/<tid>/mem` ignores page protections on kernels built with
//!   `CONFIG_PROC_MEM_ALWAYS_FORCE`, where the real `copy_to_user` gives EFAULT. The target range
//!   is therefore checked against `/proc/<tid>/maps` (read before the id check) and must be
//!   writable, private and anonymous: the agent never writes into memory that can fault into a
//!   file (docs/security.md T3).
//! * The reply never carries `SECCOMP_USER_NOTIF_FLAG_CONTINUE`: that would run the host's real
//!   `syslog` for the container.

use std::io;
use std::os::fd::BorrowedFd;

use crate::sys::maps::{self, TaskMem};
use crate::sys::seccomp;
use crate::sys::SysError;

use super::filter::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, NR_SYSLOG, X32_SYSCALL_BIT};

/// One received notification, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Notification {
    /// Cookie for `ID_VALID` and `SEND`.
    pub id: u64,
    /// The calling thread, in the agent's PID namespace (0 if the agent cannot see it).
    pub tid: u32,
    /// `seccomp_data.arch`.
    pub arch: u32,
    /// `seccomp_data.nr`.
    pub nr: i32,
    /// `seccomp_data.args`.
    pub args: [u64; 6],
}

/// `syslog(type, buf, len)` as the kernel's `SYSCALL_DEFINE3(syslog, int, char __user *, int)`
/// sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyslogArgs {
    /// `type`, the low 32 bits of the first argument.
    pub action: i32,
    /// `buf`.
    pub buf: u64,
    /// `len`, the low 32 bits of the third argument.
    pub len: i32,
}

impl Notification {
    /// The `syslog(2)` arguments, or `None` if this is not a `syslog` call of a known ABI.
    pub fn syslog_args(&self) -> Option<SyslogArgs> {
        let nr = self.nr as u32;
        let compat = match (self.arch, nr) {
            (AUDIT_ARCH_X86_64, NR_SYSLOG) => false,
            (AUDIT_ARCH_X86_64, n) if n == NR_SYSLOG | X32_SYSCALL_BIT => true,
            (AUDIT_ARCH_I386, NR_SYSLOG) => true,
            _ => return None,
        };
        // `int` arguments: the kernel uses the low 32 bits; the upper half of the register may
        // hold anything. Compat pointers are 32 bits.
        let buf = if compat {
            self.args[1] & 0xffff_ffff
        } else {
            self.args[1]
        };
        Some(SyslogArgs {
            action: self.args[0] as u32 as i32,
            buf,
            len: self.args[2] as u32 as i32,
        })
    }
}

/// `SECCOMP_IOCTL_NOTIF_RECV`. Blocks until a notification is pending; call it only when the
/// listener polled readable. `Ok(None)`: the caller went away first (ENOENT).
pub fn recv(listener: BorrowedFd<'_>) -> io::Result<Option<Notification>> {
    let req = loop {
        match seccomp::notif_recv(listener) {
            Ok(req) => break req,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        }
    };
    Ok(Some(Notification {
        id: req.id,
        tid: req.pid,
        arch: req.data.arch,
        nr: req.data.nr,
        args: req.data.args,
    }))
}

/// `SECCOMP_IOCTL_NOTIF_ID_VALID`: the task behind `id` is still waiting for this reply.
pub fn id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    seccomp::notif_id_valid(listener, id)
}

/// `SECCOMP_IOCTL_NOTIF_SET_FLAGS(SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)` (Linux 6.6): the kernel
/// wakes the agent on the caller's CPU and the caller on the agent's, a synchronous hand-off
/// instead of two cross-CPU wake-ups per call (docs/benchmarks.md). EINVAL on older kernels.
pub fn set_sync_wakeup(listener: BorrowedFd<'_>) -> io::Result<()> {
    /// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (include/uapi/linux/seccomp.h).
    const SYNC_WAKE_UP: u64 = 1;
    seccomp::notif_set_flags(listener, SYNC_WAKE_UP)
}

/// `SECCOMP_IOCTL_NOTIF_SEND` with a return value (`error == 0`) or an errno (`val == 0`).
/// ENOENT: the caller left (or was interrupted and will restart with a new id).
pub fn send(listener: BorrowedFd<'_>, id: u64, val: i64, errno: i32) -> io::Result<()> {
    let resp = libc::seccomp_notif_resp {
        id,
        val,
        error: if errno == 0 { 0 } else { -errno },
        // Never SECCOMP_USER_NOTIF_FLAG_CONTINUE.
        flags: 0,
    };
    loop {
        match seccomp::notif_send(listener, &resp) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            r => return r,
        }
    }
}

/// Why bytes could not be delivered into the caller.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The caller is gone (or its pid now names another process): nothing was written and no
    /// reply can be delivered.
    Stale,
    /// The range is not writable memory of the caller, or the write came up short: the
    /// syscall's answer is EFAULT.
    Fault,
    /// The agent cannot access the caller's memory (for example missing ptrace rights).
    Access(io::ErrorKind),
}

/// Write `data` at `addr` in the caller `tid` of notification `id`, in the only safe order:
/// open `/proc/<tid>` and through it `mem` and `maps` ([`TaskMem`]), confirm the id, check the
/// range, write.
///
/// The range must lie entirely in anonymous private writable mappings
/// ([`maps::range_anon_private`]): a buffer in a file mapping (a FUSE file whose daemon never
/// answers, the caller's own `/dev/kmsg`) would make this write fault into that file and block
/// for as long as the file's owner wants. Such a range is EFAULT. The caller can still remap
/// between the check and the write; the agent therefore calls this only on a bounded writer
/// thread ([`super::writer`]), never on the thread that answers other containers.
pub fn write_to_caller(
    listener: BorrowedFd<'_>,
    id: u64,
    tid: u32,
    addr: u64,
    data: &[u8],
) -> Result<(), WriteError> {
    write_to_caller_then(listener, id, tid, addr, data, None)
}

/// [`write_to_caller`], running `checked` after the destination passed its checks and just
/// before the write (instrumentation: [`super::AgentHooks::writing`]).
pub fn write_to_caller_then(
    listener: BorrowedFd<'_>,
    id: u64,
    tid: u32,
    addr: u64,
    data: &[u8],
    checked: Option<Box<dyn FnOnce() + Send>>,
) -> Result<(), WriteError> {
    if tid == 0 {
        // The agent's PID namespace cannot see the caller (seccomp-agent.md §11).
        return Err(WriteError::Access(io::ErrorKind::NotFound));
    }
    let gone = |e: &SysError| matches!(e.errno(), Some(libc::ENOENT | libc::ESRCH));
    let task = TaskMem::open(tid);
    if !id_valid(listener, id) {
        return Err(WriteError::Stale);
    }
    let task = match task {
        Ok(t) => t,
        Err(e) if gone(&e) => return Err(WriteError::Stale),
        Err(e) => return Err(WriteError::Access(e.source.kind())),
    };
    if !maps::range_anon_private(task.maps(), addr, data.len() as u64) {
        return Err(WriteError::Fault);
    }
    if let Some(f) = checked {
        f();
    }
    match task.write_at(data, addr) {
        Ok(n) if n == data.len() => Ok(()),
        Ok(_) => Err(WriteError::Fault),
        Err(e) if matches!(e.errno(), Some(libc::EIO | libc::EFAULT)) => Err(WriteError::Fault),
        Err(e) if gone(&e) => Err(WriteError::Stale),
        Err(e) => Err(WriteError::Access(e.source.kind())),
    }
}

/// Whether `[addr, addr + len)` lies entirely in writable mappings of a `/proc/<pid>/maps`
/// text. An empty range is writable; a range that wraps around is not.
pub fn range_writable(maps: &str, addr: u64, len: u64) -> bool {
    crate::sys::maps::range_covered(maps, addr, len, |perms, _, _| {
        perms.as_bytes().get(1) == Some(&b'w')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 fe:01 123 /usr/bin/dmesg
55d0c0a02000-55d0c0a10000 r-xp 00002000 fe:01 123 /usr/bin/dmesg
55d0c0a20000-55d0c0a21000 rw-p 00020000 fe:01 123 /usr/bin/dmesg
55d0c0a21000-55d0c0a42000 rw-p 00000000 00:00 0 [heap]
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";

    #[test]
    fn writable_ranges() {
        assert!(range_writable(MAPS, 0x55d0c0a21000, 0x100));
        // Spans two adjacent writable mappings.
        assert!(range_writable(MAPS, 0x55d0c0a20ff0, 0x20));
        // Ends exactly at the end of a mapping.
        assert!(range_writable(MAPS, 0x55d0c0a41000, 0x1000));
        assert!(range_writable(MAPS, 0x1000, 0));
    }

    #[test]
    fn unwritable_ranges() {
        // Read-only text.
        assert!(!range_writable(MAPS, 0x55d0c0a02000, 1));
        // Unmapped.
        assert!(!range_writable(MAPS, 0x1000, 1));
        // Runs past the heap into a hole.
        assert!(!range_writable(MAPS, 0x55d0c0a41000, 0x1001));
        // Starts in a hole before the stack.
        assert!(!range_writable(MAPS, 0x7ffcffffff00, 0x200));
        // Wraps around.
        assert!(!range_writable(MAPS, u64::MAX - 1, 4));
    }

    proptest::proptest! {
        /// `range_writable` agrees with a byte-by-byte model on random maps.
        #[test]
        fn range_writable_matches_a_model(
            spans in proptest::collection::vec((1u64..8, 0u64..4, proptest::bool::ANY), 1..8),
            addr in 0u64..80,
            len in 0u64..40,
        ) {
            // Build sorted, non-overlapping mappings (in units of 1) with gaps between them.
            let mut maps = String::new();
            let mut writable = std::collections::BTreeSet::new();
            let mut at = 0u64;
            for (size, gap, w) in spans {
                let lo = at + gap;
                let hi = lo + size;
                let perms = if w { "rw-p" } else { "r--p" };
                maps.push_str(&format!("{lo:x}-{hi:x} {perms} 00000000 00:00 0\n"));
                if w {
                    writable.extend(lo..hi);
                }
                at = hi;
            }
            let model = (addr..addr + len).all(|b| writable.contains(&b));
            proptest::prop_assert_eq!(range_writable(&maps, addr, len), model);
        }
    }

    fn notif(arch: u32, nr: u32, args: [u64; 6]) -> Notification {
        Notification {
            id: 1,
            tid: 1,
            arch,
            nr: nr as i32,
            args,
        }
    }

    #[test]
    fn syslog_arguments_per_abi() {
        let junk = 0xdead_beef_0000_0000u64;
        let n = notif(
            AUDIT_ARCH_X86_64,
            NR_SYSLOG,
            [junk | 3, 0x7fff_0000_1000, junk | 0xffff_ffff, 0, 0, 0],
        );
        assert_eq!(
            n.syslog_args(),
            Some(SyslogArgs {
                action: 3,
                buf: 0x7fff_0000_1000,
                len: -1
            })
        );
        let n = notif(AUDIT_ARCH_I386, NR_SYSLOG, [10, junk | 0x1000, 8, 0, 0, 0]);
        assert_eq!(n.syslog_args().unwrap().buf, 0x1000);
        let n = notif(
            AUDIT_ARCH_X86_64,
            NR_SYSLOG | X32_SYSCALL_BIT,
            [2, junk | 0x2000, 16, 0, 0, 0],
        );
        assert_eq!(
            n.syslog_args(),
            Some(SyslogArgs {
                action: 2,
                buf: 0x2000,
                len: 16
            })
        );
        assert_eq!(notif(AUDIT_ARCH_X86_64, 59, [0; 6]).syslog_args(), None);
        assert_eq!(
            notif(AUDIT_ARCH_I386, NR_SYSLOG | X32_SYSCALL_BIT, [0; 6]).syslog_args(),
            None
        );
    }
}
