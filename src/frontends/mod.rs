//! Frontends: the views through which clients reach the rings.
//!
//! * [`fuse`]: a FUSE filesystem serving each namespace's ring as a `/dev/kmsg`-compatible file
//!   (kmsg-semantics A and E).
//! * [`seccomp`]: the `syslog(2)` agent that answers the calls of containers from their rings
//!   through seccomp user notification.
//! * [`proc_kmsg`]: the `/proc/kmsg` semantics (kmsg-semantics C) on a ring, for a file the FUSE
//!   layer can serve.
//! * [`oci_hook`]: `kmsgfs oci-hook`, the OCI createContainer hook that binds the files in.
//! * [`run`]: `kmsgfs run`, a minimal launcher of commands in fresh namespaces with their own
//!   kernel log.

pub mod fuse;
pub mod oci_hook;
pub mod proc_kmsg;
pub mod run;
pub mod seccomp;
