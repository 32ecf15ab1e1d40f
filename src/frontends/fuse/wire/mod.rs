//! kmsgfs's own FUSE transport: the `/dev/fuse` protocol, spoken directly.
//!
//! # Why not fuser
//!
//! kmsgfs must survive a restart of its daemon (a crash or a planned upgrade) without
//! breaking the containers whose `/dev/kmsg` is a bind mount of the FUSE file. A FUSE
//! connection lives as long as any copy of its `/dev/fuse` fd, so a holder process keeps the
//! fds and hands them to the restarted daemon, which must then *adopt* the live connection.
//! fuser 0.18 cannot:
//!
//! * `Session::from_fd` always runs the INIT handshake, but the kernel sends INIT once per
//!   connection: an adopted connection never sees another (cberner/fuser#753).
//! * It has no FUSE_NOTIFY_RESEND (protocol 7.40), so the requests the dead daemon had read
//!   but not answered (parked blocking reads of `dmesg -w`) would hang forever.
//! * Its session unmounts on drop, which ends the connection the successor needs.
//! * It answers FUSE_INTERRUPT itself with ENOSYS, which makes the kernel set
//!   `fc->no_interrupt` and put every later blocked reader into uninterruptible sleep
//!   (cberner/fuser#378); kmsgfs had to catch interrupts from fuser's debug log
//!   (`super::interrupt`).
//!
//! This module is small because kmsgfs needs little of FUSE: one directory tree of a few
//! files, no page cache, no locks, no splice.
//!
//! # Parts
//!
//! * [`abi`]: the kernel ABI structs and constants (`include/uapi/linux/fuse.h`, 7.40).
//! * [`request`]: one read buffer → a typed [`Request`] with an [`Operation`].
//! * [`reply`]: reply objects with fuser's names, the [`Notifier`] (poll wake-up, resend).
//! * [`filesystem`]: the [`Filesystem`] trait (fuser's signatures plus `interrupt`) and
//!   [`filesystem::dispatch`].
//! * [`session`]: [`mount`], INIT negotiation ([`InitParams`]), [`Session::adopt`], worker
//!   threads, stop and hand-over.
//! * [`types`]: ids, flag sets, [`Errno`], [`FileAttr`], [`KernelConfig`].
//!
//! The syscalls are in [`crate::sys::fuse_dev`].

pub mod abi;
pub mod filesystem;
pub mod reply;
pub mod request;
pub mod session;
pub mod types;

pub use filesystem::Filesystem;
pub use reply::{
    Channel, Notifier, PollNotifier, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyIoctl, ReplyLseek, ReplyOpen, ReplyPoll, ReplyStatfs, ReplyWrite, ReplyXattr,
};
pub use request::{Operation, ParseError, Request};
pub use session::{
    mount, negotiate, unmount, InitParams, MountOptions, Negotiated, Session, SessionError,
    SessionOptions,
};
pub use types::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, PollEvents,
    PollFlags, RequestId, TimeOrNow, WriteFlags,
};
