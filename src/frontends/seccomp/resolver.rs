//! The daemon's [`RingResolver`]: the agent answers a container's `syslog(2)` from the same
//! ring its `/dev/kmsg` (the FUSE `kmsg` file) and `/proc/kmsg` (`proc-kmsg`) lead to.
//!
//! * A listener whose container carries the [`super::KEY_ANNOTATION`] annotation gets a
//!   *named* ring ([`Registry::named_ring`]: counted against `--max-rings` and listed in
//!   `stats`), shared by every listener with the same value and kept while one of them
//!   lives. Named rings are served to `syslog(2)` only; the FUSE files keep resolving by
//!   namespace. Only runtimes in the agent's own pid and user namespaces reach its socket
//!   (docs/security.md T4), so the name is trusted.
//! * Otherwise each call chooses its ring from the namespaces of the **calling task**
//!   (`/proc/<tid>`, then `ID_VALID`) with exactly the rule of a FUSE open ([`policy::resolve`]):
//!   the ring of its key, pid or mount namespace, created in the registry if the container never
//!   opened its `kmsg` file yet. A caller in the host's key, pid and mount namespaces gets EPERM:
//!   the agent never answers from the host ring. `state.pid` is not trusted for this (crun 1.8
//!   names the `crun exec` process there). [`RingResolver::ring_for`] keeps the old
//!   per-container rule for callers of the library.
//! * Permissions follow the kernel (B1) with `dmesg_restrict` set from `--restrict`
//!   ([`super::Caller::kernel_policy`]).

use std::sync::Arc;

use super::{Caller, Container, ResolveError, RingResolver, TaskRing};
use crate::frontends::policy::{self, HostIdentity, Opener, Restrict, SyslogAccess, Target};
use crate::ring::registry::Registry;
use crate::ring::Ring;
use crate::syslog::Policy;

/// Rings from the daemon's [`Registry`] (module docs).
pub struct RegistryResolver {
    registry: Arc<Registry>,
    host: HostIdentity,
    restrict: Restrict,
    access: SyslogAccess,
}

impl std::fmt::Debug for RegistryResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryResolver")
            .field("restrict", &self.restrict)
            .finish()
    }
}

impl RegistryResolver {
    /// A resolver over `registry`, for a daemon in the namespaces `host`, with `--restrict`.
    pub fn new(registry: Arc<Registry>, host: HostIdentity, restrict: Restrict) -> Self {
        Self::with_access(registry, host, restrict, SyslogAccess::default())
    }

    /// [`RegistryResolver::new`] with `--syslog-access` (who counts as privileged).
    pub fn with_access(
        registry: Arc<Registry>,
        host: HostIdentity,
        restrict: Restrict,
        access: SyslogAccess,
    ) -> Self {
        RegistryResolver {
            registry,
            host,
            restrict,
            access,
        }
    }

    fn named_ring(&self, name: &str) -> Result<Arc<Ring>, ResolveError> {
        self.registry.named_ring(name).ok_or_else(|| {
            format!("no ring named {name:?}: the daemon holds its limit of rings (--max-rings)")
                .into()
        })
    }
}

impl RingResolver for RegistryResolver {
    fn ring_for(&self, container: &Container) -> Result<Arc<Ring>, ResolveError> {
        if let Some(name) = container.key_override() {
            return self.named_ring(name);
        }
        let (op, proc_) = Opener::inspect(container.init_pid, 0)?;
        match policy::resolve(&self.host, &op) {
            Target::Host => {
                log::info!(
                    "container {:?} (pid {}) is in the host's namespaces: host ring",
                    container.id,
                    container.init_pid
                );
                Ok(Arc::clone(&self.registry.host().ring))
            }
            Target::Ns(key) => {
                let owner = proc_.ns_owner_userns(key.kind).ok();
                let slot = self.registry.acquire(key, owner, op.ns_id(key.kind));
                // The namespace being alive keeps the ring; the agent holds the ring itself.
                self.registry.release(&slot);
                log::info!(
                    "container {:?} (pid {}): syslog(2) from ring {key}",
                    container.id,
                    container.init_pid
                );
                Ok(Arc::clone(&slot.ring))
            }
        }
    }

    /// A named ring for the [`super::KEY_ANNOTATION`]; otherwise every call picks its ring
    /// from the calling task ([`RegistryResolver::task_ring`]). `state.pid` is never used to
    /// choose a ring: crun 1.8 reports the `crun exec` process, in the host's namespaces, as
    /// `state.pid` of an exec'd process's listener.
    fn listener_ring(&self, container: &Container) -> Result<Option<Arc<Ring>>, ResolveError> {
        container
            .key_override()
            .map(|name| self.named_ring(name))
            .transpose()
    }

    /// The calling task's namespaces with the rule of a FUSE open ([`policy::resolve`]); a
    /// task in the host's key, pid and mount namespaces gets EPERM: the agent never answers
    /// from the host ring.
    fn task_ring(&self, _container: &Container, tid: u32) -> Result<TaskRing, i32> {
        // The caller's uid as FUSE would report it (the daemon's user namespace), so that the
        // access decision is the FUSE open's, to the letter.
        let euid = super::caller::read_creds(tid)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::ESRCH))?
            .euid;
        let (op, proc_) =
            Opener::inspect(tid, euid).map_err(|e| e.errno().unwrap_or(libc::ESRCH))?;
        match policy::resolve(&self.host, &op) {
            Target::Host => Err(libc::EPERM),
            Target::Ns(key) => {
                let owner = proc_.ns_owner_userns(key.kind).ok();
                let slot = self.registry.acquire(key, owner, op.ns_id(key.kind));
                // The namespace being alive keeps the ring; the agent holds the ring itself.
                self.registry.release(&slot);
                let privileged = policy::privileged(&self.host, self.access, &op, &slot);
                Ok(TaskRing {
                    ring: Arc::clone(&slot.ring),
                    user_ns: owner,
                    privileged: Some(privileged),
                })
            }
        }
    }

    /// The `--syslog-access` decision made with the ring ([`TaskRing::privileged`]); for a
    /// named ring, the kernel's rule (CAP_SYSLOG in the container).
    fn policy_for(&self, caller: &Caller<'_>) -> Policy {
        let mut p = caller.kernel_policy(self.restrict == Restrict::Root);
        if let Some(privileged) = caller.privileged {
            p.privileged = privileged;
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::RingConfig;
    use crate::sys::proc::NsKind;
    use std::collections::BTreeMap;

    fn container(pid: u32, ann: &[(&str, &str)]) -> Container {
        Container {
            id: "t".into(),
            init_pid: pid,
            process_pid: pid,
            status: "creating".into(),
            metadata: String::new(),
            annotations: ann
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            user_ns: None,
        }
    }

    fn resolver() -> RegistryResolver {
        let host = HostIdentity::current(NsKind::Net).expect("read own namespaces");
        let reg = Arc::new(Registry::new(
            RingConfig::with_bytes(4096),
            host.host_key(),
            host.host_ns_id(),
        ));
        RegistryResolver::new(reg, host, Restrict::Root)
    }

    #[test]
    fn own_process_gets_the_host_ring() {
        let r = resolver();
        let ring = r.ring_for(&container(std::process::id(), &[])).unwrap();
        assert!(Arc::ptr_eq(&ring, &r.registry.host().ring));
    }

    #[test]
    fn named_rings_are_shared_by_name() {
        let r = resolver();
        let a = r
            .ring_for(&container(0, &[(super::super::KEY_ANNOTATION, "a")]))
            .unwrap();
        let a2 = r
            .ring_for(&container(0, &[(super::super::KEY_ANNOTATION, "a")]))
            .unwrap();
        let b = r
            .ring_for(&container(0, &[(super::super::KEY_ANNOTATION, "b")]))
            .unwrap();
        assert!(Arc::ptr_eq(&a, &a2));
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &r.registry.host().ring));
    }

    #[test]
    fn unknown_pid_is_refused() {
        let r = resolver();
        assert!(r.ring_for(&container(0, &[])).is_err());
    }
}
