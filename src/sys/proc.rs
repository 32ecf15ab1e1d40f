//! A process looked up by pid, robust against the pid exiting or being reused.
//!
//! The FUSE request header carries the caller's thread id in the daemon's pid namespace
//! (fuse-notes §10, pitfall 10). Between receiving the request and looking at
//! `/proc/<tid>` the caller may exit and the id may be reused by an unrelated task. Therefore
//! [`Proc::open`] opens `/proc/<tid>` once as a directory fd (which stays bound to that task:
//! lookups through it fail once the task is gone, they never reach a new task with the same
//! id), reads the start time (field 22 of `stat`) through it, and [`Proc::verify`] re-reads the
//! start time after the namespace inodes were taken. Every other lookup goes through the same
//! fd with the `*at` calls.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{Result, SysError};

/// A namespace kind, named as in `/proc/<pid>/ns/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NsKind {
    /// Network namespace.
    Net,
    /// User namespace.
    User,
    /// PID namespace (the task's own, not `pid_for_children`).
    Pid,
    /// Mount namespace.
    Mnt,
}

impl NsKind {
    /// The link name under `/proc/<pid>/ns/`.
    pub fn name(self) -> &'static str {
        match self {
            NsKind::Net => "net",
            NsKind::User => "user",
            NsKind::Pid => "pid",
            NsKind::Mnt => "mnt",
        }
    }

    /// Parse a link name.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "net" => NsKind::Net,
            "user" => NsKind::User,
            "pid" => NsKind::Pid,
            "mnt" => NsKind::Mnt,
            _ => return None,
        })
    }

    /// Every kind.
    pub const ALL: [NsKind; 4] = [NsKind::Net, NsKind::User, NsKind::Pid, NsKind::Mnt];
}

/// A pinned `/proc/<pid>` directory.
#[derive(Debug)]
pub struct Proc {
    pid: u32,
    dir: OwnedFd,
    start_time: u64,
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in static path")
}

impl Proc {
    /// Open `/proc/<pid>` (a thread id works too) and read its start time.
    pub fn open(pid: u32) -> Result<Proc> {
        let path = format!("/proc/{pid}");
        let c = cstr(&path);
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
        let mut p = Proc {
            pid,
            dir,
            start_time: 0,
        };
        p.start_time = p.read_start_time()?;
        Ok(p)
    }

    /// The current process.
    pub fn current() -> Result<Proc> {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        Proc::open(u32::try_from(pid).unwrap_or(0))
    }

    /// The pid this handle was opened for.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Start time in clock ticks since boot (field 22 of `stat`), read at [`Proc::open`].
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    fn open_at(&self, name: &str, flags: i32) -> Result<OwnedFd> {
        let c = cstr(name);
        // SAFETY: the dirfd is valid for our lifetime, `c` is NUL-terminated; checked below.
        let fd = unsafe { libc::openat(self.dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(SysError::last(format!("openat(/proc/{}/{name})", self.pid)));
        }
        // SAFETY: `fd` was just returned by openat and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Read a small file under this `/proc/<pid>` directory.
    pub fn read_file(&self, name: &str) -> Result<String> {
        let fd = self.open_at(name, libc::O_RDONLY)?;
        let mut f = std::fs::File::from(fd);
        let mut s = String::new();
        f.read_to_string(&mut s)
            .map_err(|e| SysError::new(format!("read(/proc/{}/{name})", self.pid), e))?;
        Ok(s)
    }

    fn read_start_time(&self) -> Result<u64> {
        let stat = self.read_file("stat")?;
        parse_start_time(&stat).ok_or_else(|| {
            SysError::new(
                format!("parse(/proc/{}/stat)", self.pid),
                std::io::Error::from(std::io::ErrorKind::InvalidData),
            )
        })
    }

    /// Check that the task behind the fd is still the one we opened (same start time).
    pub fn verify(&self) -> Result<()> {
        let now = self.read_start_time()?;
        if now != self.start_time {
            return Err(SysError::new(
                format!("verify(/proc/{}/stat start time)", self.pid),
                std::io::Error::from_raw_os_error(libc::ESRCH),
            ));
        }
        Ok(())
    }

    /// The inode of namespace `kind` (`fstatat(dirfd, "ns/<kind>")`, following the link).
    pub fn ns_inode(&self, kind: NsKind) -> Result<u64> {
        let name = format!("ns/{}", kind.name());
        let c = cstr(&name);
        // SAFETY: an all-zero stat is valid storage for fstatat to fill.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: the dirfd is valid, `c` is NUL-terminated, `st` is writable.
        let rc = unsafe { libc::fstatat(self.dir.as_raw_fd(), c.as_ptr(), &mut st, 0) };
        if rc != 0 {
            return Err(SysError::last(format!(
                "fstatat(/proc/{}/{name})",
                self.pid
            )));
        }
        Ok(st.st_ino)
    }

    /// The inode of the user namespace that owns namespace `kind` of this task
    /// (`ioctl(NS_GET_USERNS)`); for [`NsKind::User`] the user namespace itself.
    pub fn ns_owner_userns(&self, kind: NsKind) -> Result<u64> {
        if kind == NsKind::User {
            return self.ns_inode(NsKind::User);
        }
        let name = format!("ns/{}", kind.name());
        let ns = self.open_at(&name, libc::O_RDONLY)?;
        // SAFETY: `ns` is an open nsfs fd; NS_GET_USERNS takes no argument and returns a new fd.
        let ufd = unsafe { libc::ioctl(ns.as_raw_fd(), libc::NS_GET_USERNS) };
        if ufd < 0 {
            return Err(SysError::last(format!(
                "ioctl(/proc/{}/{name}, NS_GET_USERNS)",
                self.pid
            )));
        }
        // SAFETY: `ufd` was just returned by the ioctl and is owned by nobody else.
        let ufd = unsafe { OwnedFd::from_raw_fd(ufd) };
        let f = std::fs::File::from(ufd);
        let md = f
            .metadata()
            .map_err(|e| SysError::new(format!("fstat(userns of /proc/{}/{name})", self.pid), e))?;
        Ok(std::os::unix::fs::MetadataExt::ino(&md))
    }

    /// The namespace's unique 64-bit id (`ioctl(NS_GET_ID)`, Linux 6.18+). Unlike the nsfs
    /// inode number, which is reused as soon as a namespace is freed, the id is never reused
    /// while the system runs. `None` when the kernel does not support the ioctl.
    pub fn ns_id(&self, kind: NsKind) -> Result<Option<u64>> {
        let name = format!("ns/{}", kind.name());
        let ns = self.open_at(&name, libc::O_RDONLY)?;
        ns_id_of_fd(ns.as_raw_fd(), &format!("/proc/{}/{name}", self.pid))
    }

    /// Map `host_uid` (a uid of the daemon's user namespace, as FUSE reports it) into this
    /// task's user namespace through `uid_map`; `None` when it is unmapped there.
    pub fn map_uid(&self, host_uid: u32) -> Result<Option<u32>> {
        let map = self.read_file("uid_map")?;
        Ok(map_id(&map, host_uid))
    }

    /// The task's `comm` (without the newline).
    pub fn comm(&self) -> Result<String> {
        Ok(self.read_file("comm")?.trim_end_matches('\n').to_owned())
    }
}

/// `NS_GET_ID`: `_IOR(NSIO, 13, __u64)` from `<linux/nsfs.h>` of Linux 6.18.
pub const NS_GET_ID: libc::c_ulong = 0x8008_b70d;

fn ns_id_of_fd(fd: i32, what: &str) -> Result<Option<u64>> {
    let mut id: u64 = 0;
    // SAFETY: `fd` is an open nsfs fd; NS_GET_ID writes one u64 to the pointer we pass.
    let rc = unsafe { libc::ioctl(fd, NS_GET_ID as _, &mut id as *mut u64) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTTY) | Some(libc::EINVAL) => Ok(None),
            _ => Err(SysError::new(format!("ioctl({what}, NS_GET_ID)"), e)),
        };
    }
    Ok(Some(id))
}

/// Field 22 (`starttime`) of a `/proc/<pid>/stat` line; the comm (field 2) may hold spaces and
/// parentheses, so fields are counted after the last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let close = stat.rfind(')')?;
    // After ") " come fields 3, 4, ...; field 22 is index 19 there.
    stat.get(close + 2..)?.split(' ').nth(19)?.parse().ok()
}

/// `CAP_SYSLOG`.
pub const CAP_SYSLOG: u32 = 34;

/// `CapEff` and the effective uid (second field of `Uid:`) from a `/proc/<pid>/status` text.
pub fn parse_status(status: &str) -> Option<(u64, u32)> {
    let mut cap = None;
    let mut euid = None;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("CapEff:") {
            cap = u64::from_str_radix(v.trim(), 16).ok();
        } else if let Some(v) = line.strip_prefix("Uid:") {
            euid = v.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        }
    }
    Some((cap?, euid?))
}

/// Map an id of the outer namespace through a `uid_map`/`gid_map` text (lines
/// `inside outside count`).
pub fn map_id(map: &str, outer: u32) -> Option<u32> {
    for line in map.lines() {
        let mut it = line.split_whitespace().map(|x| x.parse::<u64>());
        let (Some(Ok(inside)), Some(Ok(outside)), Some(Ok(count))) =
            (it.next(), it.next(), it.next())
        else {
            continue;
        };
        let o = u64::from(outer);
        if o >= outside && o < outside + count {
            return u32::try_from(inside + (o - outside)).ok();
        }
    }
    None
}

/// Inodes of namespace `kind` of every process visible in `/proc` (one `stat` per process;
/// processes we may not inspect are skipped).
pub fn live_namespaces(kinds: &[NsKind]) -> std::collections::HashSet<u64> {
    let mut set = std::collections::HashSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return set;
    };
    for ent in dir.flatten() {
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        for k in kinds {
            if let Ok(md) = std::fs::metadata(format!("/proc/{name}/ns/{}", k.name())) {
                set.insert(std::os::unix::fs::MetadataExt::ino(&md));
            }
        }
    }
    // Namespaces kept alive by bind mounts (`ip netns add`) show up as nsfs mounts.
    if let Ok(table) = super::mount::mountinfo() {
        for e in table.iter().filter(|e| e.fstype == "nsfs") {
            if let Some(ino) = e
                .root
                .split_once(":[")
                .and_then(|(_, r)| r.trim_end_matches(']').parse().ok())
            {
                set.insert(ino);
            }
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_comm() {
        let stat =
            "123 (a) b (c) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start_time(stat), Some(98765));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn uid_map_lookup() {
        let host = "         0          0 4294967295\n";
        assert_eq!(map_id(host, 0), Some(0));
        assert_eq!(map_id(host, 65534), Some(65534));
        let userns = "0 100000 65536\n";
        assert_eq!(map_id(userns, 100000), Some(0));
        assert_eq!(map_id(userns, 100005), Some(5));
        assert_eq!(map_id(userns, 0), None);
        assert_eq!(map_id(userns, 165536), None);
    }

    #[test]
    fn own_process_is_inspectable() {
        let p = Proc::current().unwrap();
        let net = p.ns_inode(NsKind::Net).unwrap();
        let md = std::fs::metadata("/proc/self/ns/net").unwrap();
        assert_eq!(net, std::os::unix::fs::MetadataExt::ino(&md));
        p.verify().unwrap();
        assert!(p.start_time() > 0);
        assert!(!p.comm().unwrap().is_empty());
        // NS_GET_ID: distinct ids for distinct namespaces (6.18+), stable for one namespace.
        if let Some(a) = p.ns_id(NsKind::Net).unwrap() {
            assert_eq!(p.ns_id(NsKind::Net).unwrap(), Some(a));
            assert_ne!(p.ns_id(NsKind::Pid).unwrap(), Some(a));
        }
        // The owner of our user namespace's net ns is our user namespace.
        assert_eq!(
            p.ns_owner_userns(NsKind::Net).unwrap(),
            p.ns_inode(NsKind::User).unwrap()
        );
    }
}
