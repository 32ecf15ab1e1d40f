//! kmsgfs: a kernel log per container.
//!
//! Data flows one way: **sources** (the host `/dev/kmsg`, BPF attribution events) →
//! **router** (which namespace owns a record) → **rings** (one per namespace, with the kernel's
//! semantics) → **frontends** (a FUSE `/dev/kmsg`, the `syslog(2)` agent).
//!
//! * [`record`]: the record and its wire formats.
//! * [`ring`]: the per-namespace ring.
//! * [`syslog`]: `syslog(2)` actions as pure logic over a ring.

pub mod record;
pub mod ring;
pub mod syslog;

pub mod daemon;
pub mod frontends;
pub mod ratelimit;
pub mod registry;
pub mod sources;
pub mod sys;
