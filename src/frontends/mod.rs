//! Frontends: how clients reach the rings.
//!
//! * [`fuse`]: a FUSE filesystem serving each namespace's ring as a `/dev/kmsg`-compatible file
//!   (kmsg-semantics A and E).
//! * [`run`]: the `kmsgfs run` launcher, which starts a command in new namespaces with the
//!   kmsgfs file bound over `/dev/kmsg` (used by the demo and the end-to-end tests).

pub mod fuse;
pub mod run;
