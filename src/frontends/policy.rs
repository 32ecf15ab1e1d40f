//! Which ring an opener gets, and whether it may read or write it (kmsg-semantics E6;
//! docs/security.md).
//!
//! The daemon only sees the caller's uid, gid and thread id in the FUSE request header, not its
//! capabilities. It inspects the caller through `/proc/<tid>` ([`crate::sys::proc::Proc`]):
//! namespace inodes, the uid mapped into the caller's user namespace, and the user namespace
//! that owns the ring's namespace.
//!
//! **Ring selection** ([`resolve`]). The host ring only when the opener's key namespace, pid
//! namespace and mount namespace all equal the daemon's. Otherwise the ring of the opener's key
//! namespace if that differs from the host's; else (a container sharing only the key namespace
//! with the host, e.g. a host-network container under `--key net`) the ring of its pid
//! namespace if that differs; else the ring of its mount namespace.
//!
//! **Access** ([`Access`]):
//! * host root (uid 0 in the daemon's user, key, pid and mount namespaces) may read and write
//!   every ring;
//! * a ring may be read by root of the namespace that owns it: the caller's uid maps to 0 in its
//!   own user namespace, and that user namespace owns the ring's namespace; with
//!   `--restrict none` any member of the ring's namespace may read (like `dmesg_restrict=0`);
//! * writes need root of the owning namespace, like DAC on a `0644 root` file;
//! * `ns/<inode>` entries are visible only to host root and to members of that namespace.

use std::collections::HashMap;

use crate::ring::registry::{NsKey, RingSlot};
use crate::sys::proc::{NsKind, Proc};
use crate::sys::SysError;

/// `--restrict`: who may read a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restrict {
    /// Root of the owning namespace and host root (like `dmesg_restrict=1`).
    Root,
    /// Any member of the namespace (like `dmesg_restrict=0`).
    None,
}

/// The daemon's own namespaces.
#[derive(Debug, Clone)]
pub struct HostIdentity {
    /// The `--key` namespace kind.
    pub key: NsKind,
    /// The daemon's namespace inodes.
    pub ns: HashMap<NsKind, u64>,
    /// The daemon's namespace ids (`NS_GET_ID`), when the kernel reports them.
    pub ns_id: HashMap<NsKind, Option<u64>>,
}

impl HostIdentity {
    /// Read the daemon's namespaces.
    pub fn current(key: NsKind) -> Result<Self, SysError> {
        let p = Proc::current()?;
        let mut ns = HashMap::new();
        let mut ns_id = HashMap::new();
        for k in NsKind::ALL {
            ns.insert(k, p.ns_inode(k)?);
            ns_id.insert(k, p.ns_id(k)?);
        }
        Ok(HostIdentity { key, ns, ns_id })
    }

    /// The host ring's namespace id.
    pub fn host_ns_id(&self) -> Option<u64> {
        self.ns_id.get(&self.key).copied().flatten()
    }

    /// The host ring's key.
    pub fn host_key(&self) -> NsKey {
        NsKey {
            kind: self.key,
            inode: self.ns[&self.key],
        }
    }

    fn ns(&self, k: NsKind) -> u64 {
        self.ns.get(&k).copied().unwrap_or(0)
    }
}

/// What the daemon knows about the caller of one request.
#[derive(Debug, Clone)]
pub struct Opener {
    /// Thread id in the daemon's pid namespace.
    pub pid: u32,
    /// uid as FUSE reports it (the daemon's user namespace).
    pub uid: u32,
    /// The caller's uid inside its own user namespace (`None`: unmapped).
    pub uid_in_ns: Option<u32>,
    /// The caller's namespace inodes.
    pub ns: HashMap<NsKind, u64>,
    /// The caller's namespace ids (`NS_GET_ID`), when the kernel reports them.
    pub ns_id: HashMap<NsKind, Option<u64>>,
    /// CAP_SYSLOG is in the caller's effective set (`/proc/<pid>/status` `CapEff`); it counts in
    /// the caller's own user namespace.
    pub cap_syslog: bool,
}

impl Opener {
    /// Inspect the caller `pid` with FUSE uid `uid` (robust against pid reuse, see
    /// [`Proc`]).
    pub fn inspect(pid: u32, uid: u32) -> Result<(Opener, Proc), SysError> {
        if pid == 0 {
            return Err(SysError::new(
                "inspect(pid 0: caller not visible in the daemon's pid namespace)",
                std::io::Error::from_raw_os_error(libc::ESRCH),
            ));
        }
        let p = Proc::open(pid)?;
        let mut ns = HashMap::new();
        let mut ns_id = HashMap::new();
        for k in NsKind::ALL {
            ns.insert(k, p.ns_inode(k)?);
            ns_id.insert(k, p.ns_id(k)?);
        }
        let uid_in_ns = p.map_uid(uid)?;
        let cap_syslog = crate::sys::proc::parse_status(&p.read_file("status")?)
            .is_some_and(|(cap_eff, _)| cap_eff & 1 << crate::sys::proc::CAP_SYSLOG != 0);
        p.verify()?;
        Ok((
            Opener {
                pid,
                uid,
                uid_in_ns,
                ns,
                ns_id,
                cap_syslog,
            },
            p,
        ))
    }

    /// The inode of the caller's namespace of kind `k`.
    pub fn ns(&self, k: NsKind) -> u64 {
        self.ns.get(&k).copied().unwrap_or(0)
    }

    /// The id of the caller's namespace of kind `k`, if known.
    pub fn ns_id(&self, k: NsKind) -> Option<u64> {
        self.ns_id.get(&k).copied().flatten()
    }
}

/// Where an opener's `kmsg` leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The host ring.
    Host,
    /// The ring of this namespace.
    Ns(NsKey),
}

/// Whether the opener is in the host's key, pid and mount namespaces.
pub fn in_host_namespaces(host: &HostIdentity, op: &Opener) -> bool {
    [host.key, NsKind::Pid, NsKind::Mnt]
        .iter()
        .all(|&k| op.ns(k) == host.ns(k))
}

/// The ring selection rule (module docs).
pub fn resolve(host: &HostIdentity, op: &Opener) -> Target {
    if in_host_namespaces(host, op) {
        return Target::Host;
    }
    for k in [host.key, NsKind::Pid, NsKind::Mnt] {
        if op.ns(k) != host.ns(k) {
            return Target::Ns(NsKey {
                kind: k,
                inode: op.ns(k),
            });
        }
    }
    Target::Host
}

/// Host root: uid 0 in the daemon's user namespace and in the host's namespaces.
pub fn is_host_root(host: &HostIdentity, op: &Opener) -> bool {
    op.uid == 0 && op.ns(NsKind::User) == host.ns(NsKind::User) && in_host_namespaces(host, op)
}

/// Whether the opener is a member of the namespace of `slot`: same inode and, where the
/// kernel reports namespace ids, the same id (nsfs inodes are reused once a namespace dies).
pub fn is_member(host: &HostIdentity, op: &Opener, slot: &RingSlot) -> bool {
    if slot.host {
        in_host_namespaces(host, op)
    } else {
        op.ns(slot.key.kind) == slot.key.inode && slot.same_namespace(op.ns_id(slot.key.kind))
    }
}

/// Whether the opener is root of the namespace owning `slot`: its uid maps to 0 in its own
/// user namespace and that user namespace owns the ring's namespace (the host ring is owned
/// by the daemon's user namespace).
pub fn is_ns_root(host: &HostIdentity, op: &Opener, slot: &RingSlot) -> bool {
    let owner = if slot.host {
        Some(host.ns(NsKind::User))
    } else {
        slot.owner_userns
    };
    op.uid_in_ns == Some(0) && owner == Some(op.ns(NsKind::User)) && is_member(host, op, slot)
}

/// Who counts as privileged for a ring (`--syslog-access`): the one decision behind reading
/// `kmsg` under `--restrict root`, opening `proc-kmsg`, and every privileged `syslog(2)`
/// action (CLEAR, READ_CLEAR, CONSOLE_*, READ, and READ_ALL under `dmesg_restrict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyslogAccess {
    /// Root of the container (uid 0 in the user namespace owning the ring's namespace) or
    /// CAP_SYSLOG there: a container's root may read and clear its own log whatever
    /// capabilities its runtime granted, which is what a per-container log is for.
    #[default]
    Container,
    /// The kernel's rule applied to the container: CAP_SYSLOG in the user namespace owning the
    /// ring's namespace, nothing else (runtimes drop CAP_SYSLOG by default, so default
    /// containers get EPERM from `dmesg -c` as they would on the host).
    Kernel,
}

/// Whether `op` counts as holding CAP_SYSLOG for `slot` under `mode` (host root always does).
pub fn privileged(host: &HostIdentity, mode: SyslogAccess, op: &Opener, slot: &RingSlot) -> bool {
    if is_host_root(host, op) {
        return true;
    }
    let owner = if slot.host {
        Some(host.ns(NsKind::User))
    } else {
        slot.owner_userns
    };
    let in_owner = is_member(host, op, slot) && owner == Some(op.ns(NsKind::User));
    let cap = in_owner && op.cap_syslog;
    match mode {
        SyslogAccess::Kernel => cap,
        SyslogAccess::Container => cap || is_ns_root(host, op, slot),
    }
}

/// The access decision for one opener and ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// May see `ns/<inode>` and open its file at all.
    pub visible: bool,
    /// May open for reading.
    pub read: bool,
    /// May open for writing.
    pub write: bool,
}

/// Decide what `op` may do with `slot`: see it if a member; read it if privileged
/// ([`privileged`]) or with `--restrict none`; write it as root of its namespace (DAC on a
/// `0644 root` file).
pub fn access(
    host: &HostIdentity,
    restrict: Restrict,
    mode: SyslogAccess,
    op: &Opener,
    slot: &RingSlot,
) -> Access {
    if is_host_root(host, op) {
        return Access {
            visible: true,
            read: true,
            write: true,
        };
    }
    let member = is_member(host, op, slot);
    let root = is_ns_root(host, op, slot);
    Access {
        visible: member,
        read: member && (privileged(host, mode, op, slot) || restrict == Restrict::None),
        write: root,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::RingConfig;

    fn host() -> HostIdentity {
        let ns = [
            (NsKind::Net, 100),
            (NsKind::User, 101),
            (NsKind::Pid, 102),
            (NsKind::Mnt, 103),
        ]
        .into_iter()
        .collect();
        HostIdentity {
            key: NsKind::Net,
            ns,
            ns_id: HashMap::new(),
        }
    }

    fn opener(net: u64, user: u64, pid: u64, mnt: u64, uid: u32, uid_in_ns: Option<u32>) -> Opener {
        Opener {
            pid: 1,
            uid,
            uid_in_ns,
            ns: [
                (NsKind::Net, net),
                (NsKind::User, user),
                (NsKind::Pid, pid),
                (NsKind::Mnt, mnt),
            ]
            .into_iter()
            .collect(),
            ns_id: HashMap::new(),
            cap_syslog: false,
        }
    }

    #[test]
    fn host_ring_needs_key_pid_and_mnt() {
        let h = host();
        assert_eq!(
            resolve(&h, &opener(100, 101, 102, 103, 0, Some(0))),
            Target::Host
        );
        // A user namespace alone does not make a container.
        assert_eq!(
            resolve(&h, &opener(100, 555, 102, 103, 0, Some(0))),
            Target::Host
        );
        // Own network namespace: its ring.
        assert_eq!(
            resolve(&h, &opener(200, 101, 102, 103, 0, Some(0))),
            Target::Ns(NsKey {
                kind: NsKind::Net,
                inode: 200
            })
        );
        // Host network, own pid namespace: the pid ring.
        assert_eq!(
            resolve(&h, &opener(100, 101, 300, 400, 0, Some(0))),
            Target::Ns(NsKey {
                kind: NsKind::Pid,
                inode: 300
            })
        );
        // Host network and pid, own mount namespace: the mount ring.
        assert_eq!(
            resolve(&h, &opener(100, 101, 102, 400, 0, Some(0))),
            Target::Ns(NsKey {
                kind: NsKind::Mnt,
                inode: 400
            })
        );
    }

    /// A registry and the ring of network namespace 200 (id 201) in it.
    fn registry_with_container(
        h: &HostIdentity,
    ) -> (
        crate::ring::registry::Registry,
        std::sync::Arc<crate::ring::registry::RingSlot>,
    ) {
        let reg =
            crate::ring::registry::Registry::new(RingConfig::with_bytes(4096), h.host_key(), None);
        let c = reg.acquire(
            NsKey {
                kind: NsKind::Net,
                inode: 200,
            },
            Some(201),
            None,
        );
        (reg, c)
    }

    #[test]
    fn access_rules() {
        let h = host();
        let (reg, c) = registry_with_container(&h);
        let hostring = reg.host().clone();
        let r = Restrict::Root;
        // Host root: everything.
        let a = access(
            &h,
            r,
            SyslogAccess::Container,
            &opener(100, 101, 102, 103, 0, Some(0)),
            &c,
        );
        assert_eq!(
            a,
            Access {
                visible: true,
                read: true,
                write: true
            }
        );
        // Container root in its own user namespace.
        let croot = opener(200, 201, 202, 203, 100000, Some(0));
        assert_eq!(
            access(&h, r, SyslogAccess::Container, &croot, &c),
            Access {
                visible: true,
                read: true,
                write: true
            }
        );
        assert_eq!(
            access(&h, r, SyslogAccess::Container, &croot, &hostring),
            Access {
                visible: false,
                read: false,
                write: false
            }
        );
        // Container non-root user: visible, readable only with --restrict none.
        let cuser = opener(200, 201, 202, 203, 101000, Some(1000));
        assert_eq!(
            access(&h, r, SyslogAccess::Container, &cuser, &c),
            Access {
                visible: true,
                read: false,
                write: false
            }
        );
        assert!(access(&h, Restrict::None, SyslogAccess::Container, &cuser, &c).read);
        // Root of a nested user namespace that does not own the net namespace.
        let nested = opener(200, 999, 202, 203, 101000, Some(0));
        assert!(!access(&h, r, SyslogAccess::Container, &nested, &c).read);
        // Host non-root user.
        let huser = opener(100, 101, 102, 103, 65534, Some(65534));
        assert_eq!(
            access(&h, r, SyslogAccess::Container, &huser, &hostring),
            Access {
                visible: true,
                read: false,
                write: false
            }
        );
        assert!(
            access(
                &h,
                Restrict::None,
                SyslogAccess::Container,
                &huser,
                &hostring
            )
            .read
        );
        // uid 0 in a container without user namespace (same user ns as the host) is not host root.
        let docker_root = opener(200, 101, 202, 203, 0, Some(0));
        assert!(!access(&h, r, SyslogAccess::Container, &docker_root, &hostring).visible);
    }

    /// One decision for every frontend: root of the container is privileged for its ring under
    /// `container`, not under `kernel`; CAP_SYSLOG in the owning user namespace is privileged
    /// under both; CAP_SYSLOG in a nested user namespace, or a non-member, never.
    #[test]
    fn privileged_is_root_of_the_container_or_cap_syslog_in_it() {
        let h = host();
        let (_reg, c) = registry_with_container(&h);
        let croot = opener(200, 201, 202, 203, 100000, Some(0));
        let mut cuser_cap = opener(200, 201, 202, 203, 101000, Some(1000));
        cuser_cap.cap_syslog = true;
        let mut nested_cap = opener(200, 999, 202, 203, 101000, Some(0));
        nested_cap.cap_syslog = true;
        let mut outsider = opener(300, 201, 302, 303, 100000, Some(0));
        outsider.cap_syslog = true;
        use SyslogAccess::{Container, Kernel};
        assert!(privileged(&h, Container, &croot, &c));
        assert!(!privileged(&h, Kernel, &croot, &c));
        assert!(privileged(&h, Container, &cuser_cap, &c));
        assert!(privileged(&h, Kernel, &cuser_cap, &c));
        assert!(!privileged(&h, Container, &nested_cap, &c));
        assert!(!privileged(&h, Container, &outsider, &c));
        // Reading follows it under --restrict root; writing stays root's (DAC).
        assert!(!access(&h, Restrict::Root, Kernel, &croot, &c).read);
        assert!(access(&h, Restrict::Root, Kernel, &croot, &c).write);
        assert!(access(&h, Restrict::Root, Kernel, &cuser_cap, &c).read);
        assert!(!access(&h, Restrict::Root, Kernel, &cuser_cap, &c).write);
    }
}
