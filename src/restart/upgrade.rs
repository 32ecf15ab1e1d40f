//! Planned upgrade: start the new binary on the same holder and it replaces the running
//! daemon (docs/deploy.md "Upgrades").
//!
//! Every daemon with a holder keeps a pidfd of itself there ([`DAEMON`]). A starting daemon
//! that finds one whose process still runs asks it to hand over (SIGTERM through the pidfd,
//! so a reused pid is never signalled), waits until it has handed over ([`mark_handed_over`]:
//! on a kernel with FUSE_NOTIFY_RESEND it exits right after; without, it stays to answer the
//! reads it holds) or exited, and only then takes the holder's state: the predecessor's last
//! act was to leave every unanswered request, cursor, parked call and unread event there. Clients see a pause, never an error: FUSE requests
//! queue in the kernel and are read (or resent) by the successor, seccomp notifications queue
//! on their listeners.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::client::{ClientError, HolderClient};
use crate::sys::pidfd;

/// Name of the running daemon's pidfd entry.
pub const DAEMON: &str = "daemon";

/// How long a predecessor may take to hand over before it is killed (its state is then taken
/// as after a crash).
pub const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`replace_running`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Predecessor {
    /// No daemon was running (a first start, or a restart after a crash).
    None,
    /// The running daemon (pid) handed over and exited.
    HandedOver(u32, Duration),
    /// It did not exit within [`HAND_OVER_TIMEOUT`] and was killed.
    Killed(u32),
}

/// If the holder names a running daemon, have it hand over and wait until it exited.
pub fn replace_running(holder: &HolderClient) -> Result<Predecessor, ClientError> {
    let entries = holder.take()?;
    let Some(me) = entries.into_iter().find(|t| t.name == DAEMON) else {
        return Ok(Predecessor::None);
    };
    let pid = me.meta.get("pid").and_then(|p| p.as_u64()).unwrap_or(0) as u32;
    let Some(fd) = me.fd else {
        return Ok(Predecessor::None);
    };
    if !pidfd::is_running(fd.as_fd()) || pid == std::process::id() {
        return Ok(Predecessor::None);
    }
    let started = Instant::now();
    log::info!("upgrade: asking the running daemon (pid {pid}) to hand over");
    if let Err(e) = pidfd::send_signal(fd.as_fd(), libc::SIGTERM) {
        // It exited in between (ESRCH): as after a crash.
        log::info!("upgrade: {e}");
        return Ok(Predecessor::None);
    }
    let deadline = started + HAND_OVER_TIMEOUT;
    while Instant::now() < deadline {
        if pidfd::wait_exit(fd.as_fd(), Duration::from_millis(2)) {
            return Ok(Predecessor::HandedOver(pid, started.elapsed()));
        }
        // A holder without the request: wait for the exit alone.
        let handed = holder.meta(DAEMON).ok().flatten().is_some_and(|m| {
            m.get("pid").and_then(|p| p.as_u64()) == Some(u64::from(pid))
                && m.get("handed_over").and_then(|h| h.as_bool()) == Some(true)
        });
        if handed {
            return Ok(Predecessor::HandedOver(pid, started.elapsed()));
        }
    }
    log::warn!(
        "upgrade: the running daemon (pid {pid}) did not hand over within {} s; killing it",
        HAND_OVER_TIMEOUT.as_secs()
    );
    let _ = pidfd::send_signal(fd.as_fd(), libc::SIGKILL);
    pidfd::wait_exit(fd.as_fd(), HAND_OVER_TIMEOUT);
    Ok(Predecessor::Killed(pid))
}

/// Tell a waiting successor that this daemon no longer reads requests or ingests records
/// (it may still answer requests it holds: the drain of a kernel without resend).
pub fn mark_handed_over(holder: &HolderClient) -> Result<(), ClientError> {
    let pid = std::process::id();
    let fd = pidfd::open(pid).map_err(|e| ClientError::Protocol {
        path: holder.path().to_path_buf(),
        message: e.to_string(),
    })?;
    holder.put(
        DAEMON,
        serde_json::json!({ "pid": pid, "handed_over": true }),
        Some(fd.as_fd()),
    )
}

/// Name this process as the running daemon in the holder (after it is ready).
pub fn register_self(holder: &HolderClient) -> Result<(), ClientError> {
    let pid = std::process::id();
    let fd = pidfd::open(pid).map_err(|e| ClientError::Protocol {
        path: holder.path().to_path_buf(),
        message: e.to_string(),
    })?;
    holder.put(DAEMON, serde_json::json!({ "pid": pid }), Some(fd.as_fd()))
}
