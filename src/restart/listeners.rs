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

use super::client::{ClientError, HolderClient, Taken};
use crate::frontends::seccomp::calls::{CallTable, DEFAULT_SLOTS};
use crate::frontends::seccomp::notify::Notification;
use crate::frontends::seccomp::{ContainerProcessState, LxcSocket};

/// Name of the entry of the LXC proxy's listening socket.
pub const LXC_SOCKET: &str = "lxc-socket";

/// The LXC proxy's listening socket at `path`: the previous daemon's from `taken` (monitors
/// that reconnect while no daemon runs wait in its backlog), else a new one, given to the
/// holder. A kept socket bound at another path is dropped.
pub fn lxc_socket(
    holder: &HolderClient,
    taken: &mut Vec<Taken>,
    path: &std::path::Path,
) -> Result<LxcSocket, LxcSocketError> {
    use std::os::fd::AsFd;
    if let Some(i) = taken.iter().position(|t| t.name == LXC_SOCKET) {
        let t = taken.swap_remove(i);
        match (t.meta["path"].as_str(), t.fd) {
            (Some(p), Some(fd)) if std::path::Path::new(p) == path && path.exists() => {
                return Ok(LxcSocket::adopt(path, fd));
            }
            _ => log::info!(
                "holder: the kept LXC socket is not bound at {}; binding anew",
                path.display()
            ),
        }
    }
    let socket = LxcSocket::bind(path)?;
    let meta = serde_json::json!({ "path": path.to_string_lossy() });
    holder.put(LXC_SOCKET, meta, Some(socket.fd.as_fd()))?;
    Ok(socket)
}

/// Why the LXC proxy socket could not be set up with the holder.
#[derive(Debug, thiserror::Error)]
pub enum LxcSocketError {
    /// Binding it failed.
    #[error(transparent)]
    Bind(#[from] crate::frontends::seccomp::SeccompError),
    /// The holder refused it.
    #[error(transparent)]
    Holder(#[from] ClientError),
}

/// Name of the parked-call table's entry ([`crate::frontends::seccomp::calls`]).
pub const SYSLOG_CALLS: &str = "syslog-calls";

/// The agent's parked-call table: the previous agent's (with the calls it held, for
/// `AgentHandle::resume`) if `taken` has it, else a new one given to the holder.
pub fn call_table(
    holder: &HolderClient,
    taken: &mut Vec<Taken>,
) -> Result<(CallTable, Vec<Notification>), ClientError> {
    use std::os::fd::AsFd;
    if let Some(i) = taken.iter().position(|t| t.name == SYSLOG_CALLS) {
        if let Some(adopted) = taken.swap_remove(i).fd.and_then(CallTable::adopt) {
            return Ok(adopted);
        }
        log::warn!("holder: the kept syslog(2) call table has another layout; replacing it");
    }
    let table = CallTable::new_shared(DEFAULT_SLOTS).map_err(|e| ClientError::Protocol {
        path: holder.path().to_path_buf(),
        message: e.to_string(),
    })?;
    let fd = table.memfd().expect("a shared table has a memfd");
    holder.put(SYSLOG_CALLS, serde_json::Value::Null, Some(fd.as_fd()))?;
    Ok((table, Vec::new()))
}

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
