//! kmsgfs: a kernel log per container.
//!
//! Data flows one way: **sources** (the host `/dev/kmsg`, BPF attribution events) →
//! **router** (which namespace owns a record) → **rings** (one per namespace, with the kernel's
//! semantics) → **frontends** (a FUSE `/dev/kmsg`, the `syslog(2)` agent).
//!
//! * [`record`]: the record and its wire formats.
//! * [`sources`]: the host kernel log reader and BPF attribution.
//! * [`router`]: joins records with attribution events and picks their rings.
//! * [`ring`]: the per-namespace ring; [`registry`]: rings by namespace.
//! * [`syslog`]: `syslog(2)` actions as pure logic over a ring.
//! * [`frontends`]: the FUSE filesystem, the `syslog(2)` seccomp agent, `/proc/kmsg`.
//! * [`daemon`]: `kmsgfs serve`, tying the stages together; [`sys`]: the syscall seam.
//! * [`demo`]: `kmsgfs demo`; [`metrics`]: the Prometheus view of the stats.

pub mod daemon;
pub mod demo;
pub mod frontends;
pub mod metrics;
pub mod ratelimit;
pub mod record;
pub mod registry;
pub mod restart;
pub mod ring;
pub mod router;
pub mod sdnotify;
pub mod sources;
pub mod sys;
pub mod syslog;
