//! Rings that survive the daemon: every ring the registry makes lives in a memfd that the
//! holder keeps ([`crate::ring::Ring::new_shared`]), and a restarted daemon adopts them all,
//! records, sequence numbers, clear points, syslog cursors and console levels included.
//!
//! Each ring is kept under the name `ring:<serial>`; its serial is also in word
//! [`META_SERIAL`] of the ring's [`crate::ring::Ring::meta`], and the entry's JSON is the
//! [`RingIdent`] the registry needs to put it back under its namespace.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::client::{ClientError, HolderClient, Taken};
use crate::ring::{Ring, RingConfig};

/// Word of [`Ring::meta`] holding the ring's keeper serial (0: not kept).
pub const META_SERIAL: usize = 0;
/// Word of the host ring's [`Ring::meta`] counting the daemons that adopted it: the restarts
/// this node's rings survived.
pub const META_HOST_RESTARTS: usize = 2;

/// What the registry needs to know about a kept ring to restore it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingIdent {
    /// Namespace kind (`net`, `user`, `pid`, `mnt`, …).
    pub kind: String,
    /// Namespace inode.
    pub inode: u64,
    /// Namespace id, when known.
    pub ns_id: Option<u64>,
    /// Owning user namespace, when known.
    pub owner_userns: Option<u64>,
    /// The host ring.
    pub host: bool,
    /// A ring named by a listener's `io.kmsgfs.key` (kind `named`, inode 0), not a
    /// namespace's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl RingIdent {
    /// The ring of namespace `key` (the host's when `host`).
    pub fn of_namespace(
        key: crate::ring::registry::NsKey,
        ns_id: Option<u64>,
        owner_userns: Option<u64>,
        host: bool,
    ) -> RingIdent {
        RingIdent {
            kind: key.kind.name().into(),
            inode: key.inode,
            ns_id,
            owner_userns,
            host,
            name: None,
        }
    }
}

/// The registry's link to the holder.
pub struct RingKeeper {
    client: Mutex<HolderClient>,
    next_serial: AtomicU64,
    /// Rings that could not be kept (memfd or holder failure): served from memory, lost on a
    /// restart.
    unkept: AtomicU64,
}

impl std::fmt::Debug for RingKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingKeeper")
            .field("next_serial", &self.next_serial.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What a start-up found in the holder.
#[derive(Debug, Default)]
pub struct Adopted {
    /// Rings, with their identity.
    pub rings: Vec<(RingIdent, Arc<Ring>)>,
    /// Kept rings that could not be adopted (dropped from the holder), with why.
    pub refused: Vec<(String, String)>,
    /// Every other entry, for the other parts of the daemon.
    pub others: Vec<Taken>,
}

impl RingKeeper {
    /// A keeper over a connection to the holder.
    pub fn new(client: HolderClient) -> RingKeeper {
        RingKeeper {
            client: Mutex::new(client),
            next_serial: AtomicU64::new(1),
            unkept: AtomicU64::new(0),
        }
    }

    /// Take everything the holder keeps and adopt the rings among it.
    pub fn adopt(&self) -> Result<Adopted, ClientError> {
        let taken = self.client.lock().take()?;
        let mut out = Adopted::default();
        let mut max = 0;
        for t in taken {
            let Some(serial) = t
                .name
                .strip_prefix("ring:")
                .and_then(|s| s.parse::<u64>().ok())
            else {
                out.others.push(t);
                continue;
            };
            max = max.max(serial);
            let ident = serde_json::from_value::<RingIdent>(t.meta.clone());
            let result = match (ident, t.fd) {
                (Ok(ident), Some(fd)) => Ring::adopt(fd)
                    .map(|r| (ident, Arc::new(r)))
                    .map_err(|e| e.to_string()),
                (Err(e), _) => Err(format!("bad identity: {e}")),
                (_, None) => Err("no memfd".into()),
            };
            match result {
                Ok((ident, ring)) => {
                    ring.meta()[META_SERIAL].store(serial, Ordering::Relaxed);
                    out.rings.push((ident, ring));
                }
                Err(why) => {
                    let _ = self.client.lock().remove(&t.name);
                    out.refused.push((t.name, why));
                }
            }
        }
        self.next_serial.store(max + 1, Ordering::Relaxed);
        Ok(out)
    }

    /// A new ring for `ident`, kept by the holder; a ring in memory (counted in
    /// [`RingKeeper::unkept`], logged) if that fails, so the daemon goes on serving.
    pub fn create(&self, config: RingConfig, ident: &RingIdent) -> Ring {
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        let name = format!("ring:{serial}");
        let kept = Ring::new_shared(config, &format!("kmsgfs-{name}"))
            .map_err(|e| e.to_string())
            .and_then(|ring| {
                let meta = serde_json::to_value(ident).map_err(|e| e.to_string())?;
                let fd = ring.memfd().expect("a shared ring has a memfd");
                self.client
                    .lock()
                    .put(&name, meta, Some(fd))
                    .map_err(|e| e.to_string())?;
                ring.meta()[META_SERIAL].store(serial, Ordering::Relaxed);
                Ok(ring)
            });
        match kept {
            Ok(ring) => ring,
            Err(why) => {
                self.unkept.fetch_add(1, Ordering::Relaxed);
                if crate::ring::registry::RING_LOG_BUDGET
                    .admit(std::time::Instant::now())
                    .is_some()
                {
                    log::warn!(
                        "ring of {}:[{}] is not kept by the holder ({why}); a restart loses it",
                        ident.kind,
                        ident.inode
                    );
                }
                Ring::new(config)
            }
        }
    }

    /// The ring's identity changed (its owner was learnt later): keep it under the new one.
    pub fn update(&self, ring: &Ring, ident: &RingIdent) {
        let serial = ring.meta()[META_SERIAL].load(Ordering::Relaxed);
        let (Some(fd), true) = (ring.memfd(), serial != 0) else {
            return;
        };
        let Ok(meta) = serde_json::to_value(ident) else {
            return;
        };
        if let Err(e) = self
            .client
            .lock()
            .put(&format!("ring:{serial}"), meta, Some(fd))
        {
            log::debug!("holder: updating ring:{serial}: {e}");
        }
    }

    /// The ring is gone from the registry: the holder may close its memfd.
    pub fn forget(&self, ring: &Ring) {
        self.forget_serial(ring.meta()[META_SERIAL].load(Ordering::Relaxed));
    }

    /// [`RingKeeper::forget`] by keeper serial (the ring itself may be gone already).
    pub fn forget_serial(&self, serial: u64) {
        if serial == 0 {
            return;
        }
        if let Err(e) = self.client.lock().remove(&format!("ring:{serial}")) {
            log::debug!("holder: forgetting ring:{serial}: {e}");
        }
    }

    /// Rings served from memory because the holder could not keep them.
    pub fn unkept(&self) -> u64 {
        self.unkept.load(Ordering::Relaxed)
    }
}
