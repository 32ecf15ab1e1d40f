//! Frontends: the views through which clients reach the rings.
//!
//! * [`fuse`]: a FUSE filesystem serving each namespace's ring as a `/dev/kmsg`-compatible file
//!   (kmsg-semantics A and E).
//! * [`seccomp`]: the `syslog(2)` agent that answers the calls of containers from their rings
//!   through seccomp user notification.
//! * [`proc_kmsg`]: the `/proc/kmsg` semantics (kmsg-semantics C) on a ring, for a file the FUSE
//!   layer can serve.
//! * [`policy`]: who gets which ring and what they may do with it, one rule for all three
//!   (the FUSE open, a `proc-kmsg` read, a `syslog(2)` call).
//! * [`stats`]: the typed statistics behind `DIR/stats` (JSON) and [`metrics`], their
//!   Prometheus view (`DIR/metrics`).
//!
//! The command-line tools that put these files into containers are in `crate::cli`.

pub mod fuse;
pub mod metrics;
pub mod policy;
pub mod proc_kmsg;
pub mod seccomp;
pub mod stats;

/// Where `kmsgfs serve` is mounted unless `--mount` says otherwise.
pub const DEFAULT_MOUNT: &str = "/run/kmsgfs";
