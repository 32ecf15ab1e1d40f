//! Who is calling: the credentials of a notified task, read from `/proc/<tid>`.
//!
//! seccomp runs before the kernel's own permission check, so the agent decides who may use an
//! action (kmsgfs-semantics B1). The kernel asks `capable(CAP_SYSLOG)` in the initial user
//! namespace; for a container's own ring the equivalent is CAP_SYSLOG in the **container's**
//! user namespace: the caller holds CAP_SYSLOG in its effective set and lives in the same user
//! namespace as the container's init. A process that made itself a nested user namespace has a
//! full capability set there, but not in the container's namespace, so it does not count.
//! Like the kernel, the uid does not matter (B1.4: uid 65534 with CAP_SYSLOG succeeds); it is
//! read (mapped into the caller's namespace through `uid_map`) for logging and for resolvers
//! that want a stricter rule.
//!
//! Everything here is read by pid, so it can describe a different process once the pid is
//! reused: the agent reads first and then confirms with `SECCOMP_IOCTL_NOTIF_ID_VALID` that the
//! notifying task was still there (seccomp-agent.md §10).

use crate::sys::proc::{parse_status, CAP_SYSLOG};
use std::fs;
use std::io;

/// Credentials of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Creds {
    /// `CapEff` from `/proc/<tid>/status`.
    pub cap_eff: u64,
    /// Effective uid as the daemon (initial user namespace) sees it.
    pub euid: u32,
    /// Inode of `/proc/<tid>/ns/user`.
    pub user_ns: u64,
}

impl Creds {
    /// CAP_SYSLOG is in the effective set.
    pub fn has_cap_syslog(&self) -> bool {
        self.cap_eff & (1u64 << CAP_SYSLOG) != 0
    }
}

/// Read the credentials of task `tid`.
pub fn read_creds(tid: u32) -> io::Result<Creds> {
    let status = fs::read_to_string(format!("/proc/{tid}/status"))?;
    let (cap_eff, euid) = parse_status(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{tid}/status has no CapEff or Uid line"),
        )
    })?;
    // The policy needs the capability set and the user namespace only (the kernel checks
    // CAP_SYSLOG, never the uid, B1); each /proc read costs microseconds per call.
    let user_ns = user_ns_of(tid)?;
    Ok(Creds {
        cap_eff,
        euid,
        user_ns,
    })
}

/// Inode of the user namespace of `pid`.
pub fn user_ns_of(pid: u32) -> io::Result<u64> {
    let link = fs::read_link(format!("/proc/{pid}/ns/user"))?;
    parse_ns_link(&link.to_string_lossy()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/ns/user link {}", link.display()),
        )
    })
}

/// `user:[4026531837]` → 4026531837.
pub fn parse_ns_link(link: &str) -> Option<u64> {
    link.split_once(":[")?.1.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::proc::map_id;

    #[test]
    fn status_fields() {
        let s = "Name:\tdmesg\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\n\
                 CapPrm:\t000001ffffffffff\nCapEff:\t00000004a80425fb\nCapBnd:\t000001ffffffffff\n";
        let (cap, euid) = parse_status(s).unwrap();
        assert_eq!(euid, 0);
        assert_eq!(cap, 0x4a80425fb);
        assert!(Creds {
            cap_eff: cap,
            euid,
            user_ns: 1
        }
        .has_cap_syslog());
        // The default runc set (seccomp-agent.md §11) has no CAP_SYSLOG.
        assert!(!Creds {
            cap_eff: 0x2000_0420,
            euid: 0,
            user_ns: 1
        }
        .has_cap_syslog());
        assert_eq!(parse_status("Uid:\t0\t0\t0\t0\n"), None);
    }

    #[test]
    fn ns_links() {
        assert_eq!(parse_ns_link("user:[4026531837]"), Some(4026531837));
        assert_eq!(parse_ns_link("user:4026531837"), None);
        assert_eq!(parse_ns_link("user:[x]"), None);
    }

    #[test]
    fn uid_maps() {
        let identity = "         0          0 4294967295\n";
        assert_eq!(map_id(identity, 0), Some(0));
        assert_eq!(map_id(identity, 1000), Some(1000));
        let userns = "0 100000 65536\n65536 5000 1\n";
        assert_eq!(map_id(userns, 100000), Some(0));
        assert_eq!(map_id(userns, 165535), Some(65535));
        assert_eq!(map_id(userns, 165536), None);
        assert_eq!(map_id(userns, 5000), Some(65536));
        assert_eq!(map_id(userns, 0), None);
        assert_eq!(map_id("", 0), None);
    }

    proptest::proptest! {
        /// Every uid inside a single-line map round-trips; uids outside it do not map.
        #[test]
        fn uid_map_single_range(inside in 0u32..100_000, first in 0u32..1_000_000, count in 1u32..100_000, probe in 0u32..2_000_000) {
            let map = format!("{inside} {first} {count}\n");
            let expected = (probe >= first && probe - first < count).then(|| inside + (probe - first));
            proptest::prop_assert_eq!(map_id(&map, probe), expected);
        }
    }

    #[test]
    fn own_creds() {
        let c = read_creds(std::process::id()).unwrap();
        assert_eq!(c.euid, crate::sys::geteuid());
        assert_eq!(c.user_ns, user_ns_of(std::process::id()).unwrap());
    }
}
