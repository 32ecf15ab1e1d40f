//! seccomp listeners that survive the agent: every listener a runtime hands the agent is also
//! given to the holder (`listener:<serial>`, with the container state the runtime sent), and a
//! restarted daemon's agent serves them all again ([`ListenerKeeper::adopt`]). A container's
//! `syslog(2)` therefore never sees ENOSYS because the daemon restarted; calls made while no
//! agent runs wait in the kernel until the next agent receives them.
//!
//! The holder drops a listener once no task uses it (`POLLHUP`), so entries of dead containers
//! go away by themselves.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::client::{HolderClient, Taken};
use crate::frontends::seccomp::ContainerProcessState;

/// The agent's link to the holder.
pub struct ListenerKeeper {
    client: Mutex<HolderClient>,
    next_serial: AtomicU64,
}

impl ListenerKeeper {
    /// A keeper over its own connection to the holder.
    pub fn new(client: HolderClient) -> ListenerKeeper {
        ListenerKeeper {
            client: Mutex::new(client),
            next_serial: AtomicU64::new(1),
        }
    }

    /// The listeners among the holder's entries (`taken`, from
    /// [`super::keeper::Adopted::others`]), with their container state, for
    /// [`crate::frontends::seccomp::AgentHandle::adopt`]. Entries that do not parse are dropped
    /// from the holder.
    pub fn adopt(&self, taken: Vec<Taken>) -> Vec<(OwnedFd, ContainerProcessState)> {
        let mut out = Vec::new();
        let mut max = 0;
        for t in taken {
            let Some(serial) = t
                .name
                .strip_prefix("listener:")
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            max = max.max(serial);
            match (
                serde_json::from_value::<ContainerProcessState>(t.meta),
                t.fd,
            ) {
                (Ok(state), Some(fd)) => out.push((fd, state)),
                (state, _) => {
                    log::warn!(
                        "holder: dropping {}: {}",
                        t.name,
                        state.err().map_or("no fd".into(), |e| e.to_string())
                    );
                    let _ = self.client.lock().remove(&t.name);
                }
            }
        }
        self.next_serial.fetch_max(max + 1, Ordering::Relaxed);
        out
    }

    /// Give the holder a copy of a listener the agent now serves.
    pub fn keep(&self, fd: BorrowedFd<'_>, state: &ContainerProcessState) {
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        let meta = match serde_json::to_value(state) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("holder: container state does not serialise: {e}");
                return;
            }
        };
        if let Err(e) = self
            .client
            .lock()
            .put(&format!("listener:{serial}"), meta, Some(fd))
        {
            // Only runtimes (root peers in the host's namespaces) hand over listeners, so this
            // line cannot be triggered by a container.
            log::warn!("holder: a listener is not kept ({e}); a restart ends its syslog(2)");
        }
    }
}
