//! Frontends: the views through which a container sees its ring.
//!
//! * [`seccomp`]: the `syslog(2)` agent that answers the calls of containers from their rings
//!   through seccomp user notification.
//! * [`proc_kmsg`]: the `/proc/kmsg` semantics (kmsg-semantics C) on a ring, for a file the FUSE
//!   layer can serve.

pub mod proc_kmsg;
pub mod seccomp;
