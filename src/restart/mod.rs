//! Surviving a daemon restart: the fds that must outlive `kmsgfs serve`, and the process that
//! keeps them (docs/architecture.md "Restart").
//!
//! A FUSE connection lives as long as any copy of its `/dev/fuse` fd; a seccomp listener as
//! long as any copy of its fd; a shared ring ([`crate::ring::Ring::new_shared`]) as long as its
//! memfd. If only the daemon holds them, its death ends them: every container's bind-mounted
//! `/dev/kmsg` fails with ENOTCONN, its `syslog(2)` with ENOSYS, and every ring is gone.
//!
//! [`holder`]: `kmsgfs holder`, a small process that does nothing but keep copies of such fds
//! under names, with a little JSON each (the FUSE parameters, a container's identity), and
//! give them all to whoever asks (the next daemon). It reads no client data, touches no
//! filesystem and runs no FUSE or seccomp code, so nothing a container does can kill it. It
//! drops an fd once the kernel reports it dead (`POLLHUP`/`POLLERR`: a listener whose
//! container is gone, an unmounted FUSE connection), so it never keeps a dead container's
//! resources.
//!
//! [`keeper`]: the registry's rings in memfds the holder keeps, adopted at start-up.
//!
//! [`listeners`]: the agent's seccomp listeners, kept and served again after a restart.
//!
//! [`session`]: the FUSE connection's fds and the open-file table, adopted after a restart.
//!
//! [`upgrade`]: a starting daemon replaces the running one (planned upgrade).
//!
//! [`attribution`]: the BPF programs' links and event ring buffer, so that records printed
//! while no daemon runs are still attributed.
//!
//! [`client`]: the daemon's side: [`client::HolderClient::put`] an fd as soon as it exists,
//! [`client::HolderClient::take`] everything at start-up.
//!
//! The protocol is one JSON object per `SOCK_SEQPACKET` message, at most one fd attached
//! ([`crate::sys::scm`]), on a socket only root peers in the holder's own pid and user
//! namespaces may use (the same rule as the agent's socket, docs/security.md T4).

pub mod attribution;
pub mod client;
pub mod holder;
pub mod keeper;
pub mod listeners;
pub mod session;
pub mod upgrade;

use serde::{Deserialize, Serialize};

/// Largest message either side sends or accepts.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// A request to the holder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Keep the attached fd (if any) and `meta` under `name`, replacing an entry of that name.
    Put {
        /// The entry's name (`fuse`, `ring:net:4026531840:3`, `listener:<id>`, …).
        name: String,
        /// Anything the next daemon needs with the fd.
        meta: serde_json::Value,
    },
    /// Forget `name` and close its fd.
    Drop {
        /// The entry.
        name: String,
    },
    /// Send every entry, one [`Reply::Entry`] message each (with its fd), then [`Reply::End`].
    Take,
    /// Send the JSON of one entry, without its fd ([`Reply::Meta`]).
    Meta {
        /// The entry.
        name: String,
    },
}

/// A message from the holder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The request was carried out.
    Ok,
    /// It was refused.
    Error {
        /// Why.
        message: String,
    },
    /// One entry of a [`Request::Take`]; its fd, if it has one, is attached.
    Entry {
        /// Its name.
        name: String,
        /// Its JSON.
        meta: serde_json::Value,
        /// Whether an fd is attached.
        fd: bool,
    },
    /// The answer to [`Request::Meta`]: the entry's JSON, `None` if there is no such entry.
    Meta {
        /// Its JSON.
        meta: Option<serde_json::Value>,
    },
    /// The end of a [`Request::Take`]: `entries` were sent.
    End {
        /// How many.
        entries: usize,
    },
}

/// The holder socket of a daemon mounted on `mount`: the mount path with `.holder.sock`
/// appended (a sibling of the mount point, like the agent's socket).
pub fn default_socket_for(mount: &std::path::Path) -> std::path::PathBuf {
    let mut s = mount
        .components()
        .collect::<std::path::PathBuf>()
        .into_os_string();
    s.push(".holder.sock");
    s.into()
}
