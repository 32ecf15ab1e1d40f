//! A task's address space as the `syslog(2)` agent needs it (docs/security.md T3).
//!
//! * [`TaskMem::open`] opens `/proc/<tid>` once as a directory fd and then `mem` and `maps`
//!   through it, so both are bound to the same task (a reused tid cannot swap one of them).
//! * [`range_anon_private`]: the destination lies entirely in writable, private, anonymous
//!   mappings (no backing file; `[heap]`, `[stack]`, `[anon:<name>]` or no name). Writing there
//!   can page in zeroes or swap, never a file, so no filesystem (a stalled FUSE daemon, the
//!   caller's own `/dev/kmsg`) can be reached from the agent's write.
//! * [`access_ok`]: the kernel's `access_ok(buf, len)` of x86_64 (`buf + len` must not pass
//!   the top of the user address space), which `syslog(2)` checks before anything is copied.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use super::{Result, SysError};

/// `/proc/<tid>/mem` and the `maps` text read through the same pinned `/proc/<tid>` fd.
#[derive(Debug)]
pub struct TaskMem {
    tid: u32,
    mem: File,
    maps: String,
}

fn openat(dir: &OwnedFd, what: &str, name: &str, flags: i32) -> Result<OwnedFd> {
    let c = CString::new(name).expect("static name without NUL");
    // SAFETY: `dir` is a valid fd and `c` a NUL-terminated path; the result is checked.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(SysError::last(format!("openat({what}/{name})")));
    }
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl TaskMem {
    /// Open `/proc/<tid>`, then `mem` (read-write) and `maps` through it, and read `maps`.
    pub fn open(tid: u32) -> Result<TaskMem> {
        let path = format!("/proc/{tid}");
        let c = CString::new(path.clone()).expect("no NUL in a /proc path");
        // SAFETY: `c` is a valid NUL-terminated path; the result is checked.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(SysError::last(format!("open({path})")));
        }
        // SAFETY: `fd` was just returned by open and is owned by nobody else.
        let dir = unsafe { OwnedFd::from_raw_fd(fd) };
        let mem = File::from(openat(&dir, &path, "mem", libc::O_RDWR)?);
        let mut maps = String::new();
        File::from(openat(&dir, &path, "maps", libc::O_RDONLY)?)
            .read_to_string(&mut maps)
            .map_err(|e| SysError::new(format!("read({path}/maps)"), e))?;
        Ok(TaskMem { tid, mem, maps })
    }

    /// The `maps` text read at [`TaskMem::open`].
    pub fn maps(&self) -> &str {
        &self.maps
    }

    /// `pwrite` into the task's memory at `addr`.
    pub fn write_at(&self, data: &[u8], addr: u64) -> Result<usize> {
        self.mem
            .write_at(data, addr)
            .map_err(|e| SysError::new(format!("pwrite(/proc/{}/mem, {addr:#x})", self.tid), e))
    }
}

/// Whether one `maps` line describes a mapping the agent may write into: writable, private,
/// inode 0 and no file name (nameless, `[heap]`, `[stack]` or `[anon:<name>]`).
fn anon_private(perms: &str, inode: &str, name: &str) -> bool {
    let p = perms.as_bytes();
    let named_ok = name.is_empty()
        || name == "[heap]"
        || name == "[stack]"
        || (name.starts_with("[anon:") && name.ends_with(']'));
    p.len() >= 4 && p[1] == b'w' && p[3] == b'p' && inode == "0" && named_ok
}

/// Whether `[addr, addr + len)` lies entirely in anonymous private writable mappings of a
/// `/proc/<pid>/maps` text (module docs). An empty range qualifies; a wrapping one does not.
pub fn range_anon_private(maps: &str, addr: u64, len: u64) -> bool {
    range_covered(maps, addr, len, anon_private)
}

/// Whether `[addr, addr + len)` lies entirely in mappings of a `/proc/<pid>/maps` text for
/// which `ok(perms, inode, name)` holds, without holes. An empty range qualifies; a wrapping
/// one does not.
pub fn range_covered(
    maps: &str,
    addr: u64,
    len: u64,
    ok: impl Fn(&str, &str, &str) -> bool,
) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    let mut pos = addr;
    if pos == end {
        return true;
    }
    // maps is sorted by address.
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms), Some(_off), Some(_dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let name = f.collect::<Vec<_>>().join(" ");
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) else {
            continue;
        };
        if hi <= pos {
            continue;
        }
        if lo > pos || !ok(perms, inode, &name) {
            return false;
        }
        pos = hi;
        if pos >= end {
            return true;
        }
    }
    false
}

/// `TASK_SIZE_MAX` with 4-level paging: the first address past the user address space.
pub const TASK_SIZE_MAX_4LEVEL: u64 = 0x0000_7fff_ffff_f000;
/// `TASK_SIZE_MAX` with 5-level paging (LA57).
pub const TASK_SIZE_MAX_5LEVEL: u64 = 0x00ff_ffff_ffff_f000;

/// The kernel's user pointer limit, probed once: `read(/dev/null, TASK_SIZE_MAX_4LEVEL, 1)`
/// copies nothing but runs `access_ok`, so EFAULT there means 4-level paging.
pub fn user_ptr_max() -> u64 {
    static MAX: OnceLock<u64> = OnceLock::new();
    *MAX.get_or_init(|| {
        let Ok(null) = File::open("/dev/null") else {
            return TASK_SIZE_MAX_4LEVEL;
        };
        // SAFETY: reading /dev/null copies no bytes; the kernel only validates the range.
        let rc = unsafe {
            libc::read(
                null.as_raw_fd(),
                TASK_SIZE_MAX_4LEVEL as usize as *mut libc::c_void,
                1,
            )
        };
        if rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT) {
            TASK_SIZE_MAX_4LEVEL
        } else {
            TASK_SIZE_MAX_5LEVEL
        }
    })
}

/// The kernel's `access_ok(addr, len)` for a variable length: `addr + len` does not wrap and
/// does not pass [`user_ptr_max`].
pub fn access_ok(addr: u64, len: u64) -> bool {
    addr.checked_add(len)
        .is_some_and(|end| end <= user_ptr_max())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 fe:01 123 /usr/bin/dmesg
55d0c0a20000-55d0c0a21000 rw-p 00020000 fe:01 123 /usr/bin/dmesg
55d0c0a21000-55d0c0a42000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000001000 rw-p 00000000 00:2f 77 /mnt/fuse/file
7f0000001000-7f0000002000 rw-p 00000000 00:00 0
7f0000002000-7f0000003000 rw-s 00000000 00:01 9 /dev/zero (deleted)
7f0000003000-7f0000004000 rw-p 00000000 00:00 0 [anon:glibc malloc]
7f0000004000-7f0000005000 rw-p 00000000 00:05 11 /memfd:x (deleted)
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";

    #[test]
    fn anonymous_private_ranges_only() {
        assert!(range_anon_private(MAPS, 0x55d0c0a21000, 0x100));
        assert!(range_anon_private(MAPS, 0x7ffd00000000, 0x21000));
        assert!(range_anon_private(MAPS, 0x7f0000001000, 0x1000));
        assert!(range_anon_private(MAPS, 0x7f0000003000, 0x10));
        assert!(range_anon_private(MAPS, 0x1000, 0));
        // The binary's own private file mapping (.data) can fault into the file.
        assert!(!range_anon_private(MAPS, 0x55d0c0a20ff0, 0x20));
        // A FUSE file mapping, shared anonymous memory, a memfd.
        assert!(!range_anon_private(MAPS, 0x7f0000000000, 1));
        assert!(!range_anon_private(MAPS, 0x7f0000000ff0, 0x20));
        assert!(!range_anon_private(MAPS, 0x7f0000002000, 1));
        assert!(!range_anon_private(MAPS, 0x7f0000004000, 1));
        // Runs from anonymous memory into a shared mapping.
        assert!(!range_anon_private(MAPS, 0x7f0000001ff0, 0x20));
        // Unmapped, wrapping.
        assert!(!range_anon_private(MAPS, 0x1000, 1));
        assert!(!range_anon_private(MAPS, u64::MAX - 1, 4));
    }

    #[test]
    fn access_ok_matches_the_kernel() {
        let max = user_ptr_max();
        assert!(access_ok(max - 1, 1));
        assert!(access_ok(0x1000, 0));
        assert!(!access_ok(max, 1));
        assert!(!access_ok(0x0000_8000_0000_0000, 1));
        assert!(!access_ok(0xffff_8000_0000_0000, 0x10));
        assert!(!access_ok(u64::MAX, 2));
        // The kernel agrees: read(2) runs the same check before copying from /dev/null.
        let null = File::open("/dev/null").unwrap();
        for (addr, len) in [(max - 1, 1usize), (max, 1), (max - 4096, 4097)] {
            // SAFETY: /dev/null copies nothing; the kernel only validates the range.
            let rc =
                unsafe { libc::read(null.as_raw_fd(), addr as usize as *mut libc::c_void, len) };
            assert_eq!(rc == 0, access_ok(addr, len as u64), "{addr:#x}+{len}");
        }
    }
}
