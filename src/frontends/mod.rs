//! Frontends: how clients reach the rings.
//!
//! * [`fuse`]: a FUSE filesystem serving each namespace's ring as a `/dev/kmsg`-compatible file
//!   (kmsg-semantics A and E).

pub mod fuse;
