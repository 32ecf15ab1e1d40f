//! The `syslog(2)` agent: per-container `klogctl()` through seccomp user notification.
//!
//! No file system sees `syslog(2)`, yet `dmesg -S`, `dmesg -c`/`-C`, every busybox `dmesg` and
//! busybox `klogd` use it (kmsg-semantics D1, D2). Containers therefore run with a seccomp
//! filter that turns `syslog` into a user notification (`SCMP_ACT_NOTIFY`); the agent receives
//! each call, answers it from the container's own ring with [`crate::syslog::compute`], and
//! makes clears and consumption ([`crate::syslog::apply`]) stick only if the reply was delivered
//! (seccomp-agent.md §9; see [`agent`] for the order). The host's log is never read, cleared or
//! reconfigured on a container's behalf.
//!
//! Pieces:
//!
//! * [`agent`]: the socket the OCI runtimes connect to (`listenerPath`), one epoll loop over all
//!   listeners, parked blocking READs ([`Agent::spawn`], [`AgentHandle`]).
//! * [`RingResolver`]: how the daemon plugs in its ring registry and permission policy.
//! * [`filter`]: the BPF filter for processes kmsgfs starts itself ([`install_filter`]).
//! * [`oci`]: the `ContainerProcessState` message and fd passing ([`send_listener`]).
//! * [`notify`]: the listener ioctls and the PID-reuse-safe write into the caller.
//! * [`calls`]: the parked calls, in memory a restarted agent answers them from.
//! * [`caller`]: the caller's capabilities and user namespace, from `/proc`.
//! * [`profile`]: the OCI seccomp profile fragment (`kmsgfs seccomp-profile`).
//!
//! If every copy of a listener is closed (the daemon dies), the container's `syslog(2)` fails
//! with ENOSYS from then on; nothing reaches the host log (docs/deploy.md, "Agent death").

use std::collections::BTreeMap;
use std::sync::Arc;

use thiserror::Error;

use crate::ring::Ring;
use crate::syslog::Policy;

#[macro_use]
mod logrl;
pub mod agent;
pub mod caller;
pub mod calls;
pub mod filter;
pub mod lxc;
pub mod notify;
pub mod oci;
pub mod profile;
pub mod resolver;
pub mod writer;

pub use agent::{Agent, AgentHandle, AgentHooks, AgentOptions, AgentStats, LxcSocket};
pub use caller::Creds;
pub use filter::install_filter;
pub use oci::{send_listener, ContainerProcessState, KEY_ANNOTATION};
pub use profile::{
    default_socket_for, lxc_socket_for, seccomp_profile, seccomp_profile_json,
    DEFAULT_LISTENER_PATH,
};
pub use resolver::RegistryResolver;

/// Errors of the seccomp frontend, each naming the call that failed.
#[derive(Debug, Error)]
pub enum SeccompError {
    /// A system call or file operation failed; the error names it with its argument (for
    /// example `bind(/run/kmsgfs/seccomp.sock)`).
    #[error(transparent)]
    Sys(#[from] crate::sys::SysError),
    /// The kernel's notification structs are larger than the ones this build knows.
    #[error("kernel seccomp_notif is {kernel} bytes, this build knows {ours}; refusing to RECV")]
    NotifSize {
        /// `seccomp(SECCOMP_GET_NOTIF_SIZES)`.
        kernel: usize,
        /// `size_of::<libc::seccomp_notif>()`.
        ours: usize,
    },
    /// Another agent already serves the socket path.
    #[error("`{0}` is already served by a live agent")]
    InUse(String),
}

/// A resolver's reason for refusing a container.
pub type ResolveError = Box<dyn std::error::Error + Send + Sync>;

/// One container (or process started by `kmsgfs run`) whose listener the agent holds.
///
/// Built from the runtime's `ContainerProcessState` when the listener arrives. Several
/// listeners may describe the same container: `runc exec` adds one per exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// `state.id`.
    pub id: String,
    /// `state.pid`: the container's init (host PID); the process pid if the runtime gave none.
    pub init_pid: u32,
    /// Top-level `pid`: the process the filter was installed for.
    pub process_pid: u32,
    /// `state.status`: `creating` (run) or `running` (exec).
    pub status: String,
    /// `metadata` (`listenerMetadata` of the profile).
    pub metadata: String,
    /// `state.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// Inode of the user namespace of `init_pid` when the listener arrived, if it could be read.
    pub user_ns: Option<u64>,
}

impl Container {
    /// Build from a runtime message, reading the init's user namespace.
    pub fn from_state(state: &ContainerProcessState) -> Container {
        Self::from_state_or_peer(state, 0)
    }

    /// [`Container::from_state`], using `peer_pid` (the sender's pid as the agent sees it,
    /// from `SO_PEERCRED`; 0 if unknown) for a pid the message gives as 0. A sender inside a
    /// PID namespace cannot name its host pid, so it sends 0.
    pub fn from_state_or_peer(state: &ContainerProcessState, peer_pid: u32) -> Container {
        let process_pid = match u32::try_from(state.pid) {
            Ok(p) if p > 0 => p,
            _ => peer_pid,
        };
        let init_pid = match u32::try_from(state.state.pid) {
            Ok(p) if p > 0 => p,
            _ => process_pid,
        };
        let user_ns = if init_pid > 0 {
            caller::user_ns_of(init_pid).ok()
        } else {
            None
        };
        Container {
            id: state.state.id.clone(),
            init_pid,
            process_pid,
            status: state.state.status.clone(),
            metadata: state.metadata.clone(),
            annotations: state.state.annotations.clone(),
            user_ns,
        }
    }

    /// The ring key the container asked for with the [`KEY_ANNOTATION`] annotation. A resolver
    /// decides whether to honour it; only root can reach the agent's socket.
    pub fn key_override(&self) -> Option<&str> {
        self.annotations.get(KEY_ANNOTATION).map(String::as_str)
    }
}

/// The task behind one notification, for the permission decision.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// Thread id in the agent's PID namespace.
    pub tid: u32,
    /// The container the listener belongs to.
    pub container: &'a Container,
    /// The caller's credentials, read from `/proc/<tid>` and confirmed with `ID_VALID`.
    pub creds: Creds,
    /// The user namespace in which the caller's CAP_SYSLOG counts: the owner of the ring's
    /// namespace for a ring chosen per call ([`TaskRing::user_ns`]), else the user namespace of
    /// the container's init ([`Container::user_ns`]).
    pub user_ns: Option<u64>,
    /// [`TaskRing::privileged`] of the call's ring (`None` for a listener's fixed ring).
    pub privileged: Option<bool>,
}

impl Caller<'_> {
    /// CAP_SYSLOG in the container's own user namespace: the caller's effective set holds it
    /// and the caller is in [`Caller::user_ns`] (see [`caller`]).
    pub fn has_cap_syslog_in_container(&self) -> bool {
        self.creds.has_cap_syslog() && self.user_ns == Some(self.creds.user_ns)
    }

    /// The kernel's rule (B1) applied to the container: privileged with CAP_SYSLOG in the
    /// container's user namespace; `restrict` is `dmesg_restrict` (false: `--restrict none`,
    /// READ_ALL and SIZE_BUFFER open to everyone).
    pub fn kernel_policy(&self, restrict: bool) -> Policy {
        Policy {
            privileged: self.has_cap_syslog_in_container(),
            restrict,
        }
    }
}

/// The ring one call is answered from, chosen from the calling task ([`RingResolver::task_ring`]).
#[derive(Clone)]
pub struct TaskRing {
    /// The ring.
    pub ring: Arc<Ring>,
    /// The user namespace owning the ring's namespace, in which CAP_SYSLOG counts.
    pub user_ns: Option<u64>,
    /// The access decision of `--syslog-access` for the caller and this ring
    /// ([`crate::frontends::policy::privileged`]), when the resolver made it.
    pub privileged: Option<bool>,
}

/// How the agent finds rings and decides permissions: implemented by the daemon's registry.
pub trait RingResolver: Send + Sync {
    /// Whether a new listener's calls all go to one ring (`Some`, the default: [`ring_for`])
    /// or each call picks its ring from the calling task (`None`: [`RingResolver::task_ring`]).
    /// Called once per listener, on the agent thread. An error drops the listener.
    ///
    /// [`ring_for`]: RingResolver::ring_for
    fn listener_ring(&self, container: &Container) -> Result<Option<Arc<Ring>>, ResolveError> {
        self.ring_for(container).map(Some)
    }

    /// The ring for one call of task `tid` (the notification's `pid`) on a listener whose
    /// [`RingResolver::listener_ring`] was `None`. `Err(errno)` refuses the call with that
    /// errno. The agent confirms with `ID_VALID` afterwards that `tid` was the caller.
    fn task_ring(&self, container: &Container, tid: u32) -> Result<TaskRing, i32> {
        let _ = (container, tid);
        Err(libc::ENOSYS)
    }

    /// The ring a new listener's calls are answered from. Called once per listener, on the
    /// agent thread, when the runtime hands the listener over (`init_pid` then still exists:
    /// the runtime waits for the hand-over). Typically the ring of a namespace of
    /// `container.init_pid`, or the one named by [`Container::key_override`].
    ///
    /// An error drops the listener: that container's `syslog(2)` then fails with ENOSYS.
    fn ring_for(&self, container: &Container) -> Result<Arc<Ring>, ResolveError>;

    /// The permission policy for one call. The default is the kernel's rule with
    /// `dmesg_restrict = 1` ([`Caller::kernel_policy`]).
    fn policy_for(&self, caller: &Caller<'_>) -> Policy {
        caller.kernel_policy(true)
    }
}
