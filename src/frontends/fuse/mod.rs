//! The FUSE frontend: each namespace's ring as a `/dev/kmsg`-compatible file.
//!
//! * [`fs`]: the filesystem (layout, open-time ring resolution, read/write/poll/lseek).
//! * [`cursor`]: the per-open-file position over FUSE's kernel-owned `f_pos` (A3, A4, E1).
//! * [`policy`]: which ring an opener gets and what it may do (E6, docs/security.md).
//! * [`interrupt`]: FUSE_INTERRUPT delivery through fuser's request log line (E5).
//! * [`wire`]: kmsgfs's own FUSE transport (adoption of a live connection after a restart).
//!
//! [`mount`] mounts with fuser's pure-Rust `mount(2)` path (no fusermount), `allow_other`
//! (`SessionACL::All`) and the source name `kmsgfs`, by which stale mounts are recognised.
//! docs/semantics.md lists every remaining difference from the character device.

pub mod cursor;
pub mod fs;
pub mod interrupt;
pub mod open_table;
pub mod policy;
pub mod wire;

use std::path::Path;
use std::sync::Arc;

use fuser::{MountOption, SessionACL};

pub use fs::{FsConfig, KmsgFs, Shared};

/// Mount `shared` at `mountpoint` with `threads` event-loop threads and start serving in the
/// background.
pub fn mount(
    shared: Arc<Shared>,
    mountpoint: &Path,
    threads: usize,
) -> std::io::Result<fuser::BackgroundSession> {
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        MountOption::FSName("kmsgfs".into()),
        MountOption::NoSuid,
        MountOption::NoDev,
    ];
    cfg.acl = SessionACL::All;
    cfg.n_threads = Some(threads.max(1));
    cfg.clone_fd = threads > 1;
    fuser::Session::new(KmsgFs(shared), mountpoint, &cfg)?.spawn()
}
