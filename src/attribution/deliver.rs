//! Delivery of routed host records to namespace rings.
//!
//! The router ([`crate::attribution::router`]) names the owners of a host record as nsfs inode numbers of the
//! routing key's namespace type (`--key`); for the hierarchical keys (`user`, `pid`) the owner
//! comes first, then its ancestors below the host. Each inode maps to the registry ring
//! `NsKey { kind: key, inode }`, the same ring an opener in that namespace resolves to. A ring
//! that does not exist yet is created without a holder, so a container's records are kept
//! until it first opens its log (and reclaimed like any ring once its namespace is gone).
//!
//! Each owner also carries the namespace id the BPF side read with the record (Linux 6.18+):
//! a ring is bound to one namespace instance from its first record on, so records of a dead
//! namespace never reach a newcomer that reuses its inode, nor the reverse
//! ([`Registry::ring_for_delivery`], docs/security.md T10).
//!
//! A new ring needs its owning user namespace (the access policy's "root of the namespace")
//! and, on kernels without ids in the event, its namespace id. Both are read from some process
//! that is a member of the namespace (one `/proc` scan per new ring); if none is found, they stay
//! unknown until the first opener supplies them ([`Registry::acquire`]).

use std::sync::Arc;

use crate::attribution::router::{Routed, Targets};
use crate::ring::registry::{NsKey, Registry};
use crate::sys::proc::{NsKind, Proc};

/// Maps routing targets to registry rings and appends.
#[derive(Debug, Clone)]
pub struct Delivery {
    registry: Arc<Registry>,
    kind: NsKind,
}

impl Delivery {
    /// Deliver to rings of namespace type `kind` in `registry`.
    pub fn new(registry: Arc<Registry>, kind: NsKind) -> Self {
        Delivery { registry, kind }
    }

    /// Append `r.record` to every namespace ring among its targets (the host ring is fed by
    /// the reader directly). Returns the number of namespace rings that received it.
    pub fn deliver(&self, r: &Routed) -> usize {
        let rec = r.record.as_ref();
        match &r.targets {
            Targets::Host => 0,
            Targets::Owners(owners) => {
                let mut n = 0;
                for o in owners {
                    let key = NsKey {
                        kind: self.kind,
                        inode: u64::from(o.inode),
                    };
                    let slot = self
                        .registry
                        .ring_for_delivery(key, o.ns_id, || resolve(self.kind, u64::from(o.inode)));
                    if let Some(slot) = slot.filter(|s| !s.host) {
                        slot.ring.append(&rec);
                        n += 1;
                    }
                }
                n
            }
            Targets::All => {
                let rings = self.registry.namespace_rings();
                for s in &rings {
                    s.ring.append(&rec);
                }
                rings.len()
            }
        }
    }
}

/// Owner user namespace and namespace id of namespace `inode` of type `kind`, read from a
/// member process.
fn resolve(kind: NsKind, inode: u64) -> (Option<u64>, Option<u64>) {
    let fallback_owner = (kind == NsKind::User).then_some(inode);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (fallback_owner, None);
    };
    for ent in dir.flatten() {
        let name = ent.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let link = format!("/proc/{pid}/ns/{}", kind.name());
        if std::fs::metadata(&link)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok()
            != Some(inode)
        {
            continue;
        }
        let Ok(p) = Proc::open(pid) else { continue };
        let owner = p.ns_owner_userns(kind).ok().or(fallback_owner);
        let id = p.ns_id(kind).ok().flatten();
        // The process may have switched namespaces meanwhile: trust it only if it still is in.
        if p.ns_inode(kind).ok() == Some(inode) {
            return (owner, id);
        }
    }
    log::debug!(
        "no process found in {}:[{inode}]; its ring's owner stays unknown until an opener",
        kind.name()
    );
    (fallback_owner, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::router::{How, NsRef};
    use crate::record::Record;
    use crate::ring::RingConfig;

    fn routed(targets: Targets) -> Routed {
        Routed {
            record: Record {
                seq: 7,
                ts_usec: 1,
                prio: 6,
                cont: false,
                caller: None,
                text: b"hello".to_vec(),
                subsystem: Vec::new(),
                device: Vec::new(),
            },
            targets,
            how: How::Exact,
        }
    }

    fn key(i: u64) -> NsKey {
        NsKey {
            kind: NsKind::Pid,
            inode: i,
        }
    }

    #[test]
    fn owners_get_rings_created_and_all_reaches_existing_rings_only() {
        let reg = Arc::new(Registry::new(RingConfig::with_bytes(1 << 16), key(1), None));
        let d = Delivery::new(Arc::clone(&reg), NsKind::Pid);
        assert_eq!(d.deliver(&routed(Targets::Host)), 0);
        assert!(reg.namespace_rings().is_empty());
        // Inner namespace first, then its ancestor (hierarchical key). No process has these
        // inodes, so the owners stay unknown.
        assert_eq!(
            d.deliver(&routed(Targets::Owners(vec![
                NsRef::inode(0xffff_fff1),
                NsRef::inode(0xffff_fff0)
            ]))),
            2
        );
        assert_eq!(
            d.deliver(&routed(Targets::Owners(vec![NsRef::inode(0xffff_fff0)]))),
            1
        );
        let inner = reg.get(key(0xffff_fff1)).unwrap();
        let outer = reg.get(key(0xffff_fff0)).unwrap();
        assert_eq!(inner.ring.stats().appended, 1);
        assert_eq!(outer.ring.stats().appended, 2);
        assert_eq!(inner.holders(), 0, "delivery holds no ring");
        assert_eq!(inner.owner_userns, None);
        assert_eq!(d.deliver(&routed(Targets::All)), 2);
        assert_eq!(
            reg.host().ring.stats().appended,
            0,
            "the reader feeds the host ring"
        );
        assert_eq!(outer.ring.stats().appended, 3);
    }
}
