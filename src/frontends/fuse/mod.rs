//! The FUSE frontend: each namespace's ring as a `/dev/kmsg`-compatible file.
//!
//! * [`fs`]: the filesystem (layout, open-time ring resolution, read/write/poll/lseek).
//! * [`front`]: the per-ring state machines of `kmsg` and `proc-kmsg` (cursors, parked READs,
//!   poll, writes), generic over where a READ's answer goes so they are unit-tested.
//! * [`cursor`]: the per-open-file position over FUSE's kernel-owned `f_pos` (A3, A4, E1).
//! * `crate::frontends::policy`: which ring an opener gets and what it may do (E6, docs/security.md).
//! * [`interrupt`]: FUSE_INTERRUPT delivery to parked READs (E5).
//! * [`open_table`]: the open files, in memory a restarted daemon adopts.
//! * [`wire`]: kmsgfs's own FUSE transport (adoption of a live connection after a restart).
//!
//! [`mount`] mounts with `mount(2)` directly (no fusermount), `allow_other`, nosuid, nodev
//! and the source name `kmsgfs`, by which stale mounts are recognised; [`adopt`] serves a
//! connection a previous daemon left. docs/semantics.md lists every remaining difference from
//! the character device.

pub mod cursor;
pub mod front;
pub mod fs;
pub mod interrupt;
pub mod open_table;
pub mod wire;

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

pub use fs::{AdoptedFiles, AdoptionCounts, FsConfig, KmsgFs, Shared};

/// Prefix of the event-loop threads' names (`fuse-<i>`, used by `--pin-threads`).
pub const THREAD_NAME: &str = "fuse";

fn session_options(threads: usize) -> wire::SessionOptions {
    wire::SessionOptions {
        threads: threads.max(1),
        thread_name: THREAD_NAME.into(),
        ..wire::SessionOptions::default()
    }
}

/// Mount `shared` at `mountpoint` with `threads` event-loop threads (each reading its own
/// clone of the `/dev/fuse` fd) and start serving in the background.
pub fn mount(
    shared: Arc<Shared>,
    mountpoint: &Path,
    threads: usize,
) -> Result<wire::Session, wire::SessionError> {
    let s = wire::Session::mount(
        KmsgFs(Arc::clone(&shared)),
        mountpoint,
        &wire::MountOptions::default(),
        &session_options(threads),
    )?;
    shared.set_notifier(s.notifier());
    Ok(s)
}

/// Serve the live connection a previous daemon left (`fds`: its original fd and clones, as
/// the holder kept them), mounted at `mountpoint`, and have the kernel resend what the
/// predecessor read but did not answer.
pub fn adopt(
    shared: Arc<Shared>,
    fds: Vec<OwnedFd>,
    params: wire::InitParams,
    mountpoint: &Path,
    threads: usize,
) -> Result<wire::Session, wire::SessionError> {
    let mut s = wire::Session::adopt_all(
        KmsgFs(Arc::clone(&shared)),
        fds,
        params,
        &session_options(threads),
    )?;
    s.set_mountpoint(mountpoint);
    shared.set_notifier(s.notifier());
    Ok(s)
}
