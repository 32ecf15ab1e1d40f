//! kmsgfs: a kernel log per container.
//!
//! Data flows one way, a folder per stage: **sources** (the host `/dev/kmsg`, BPF events naming
//! the namespaces behind each printk) → **attribution** (which namespace owns a record) →
//! **rings** (one per namespace, with the kernel's semantics) → **frontends** (a FUSE
//! `/dev/kmsg`, `/proc/kmsg`, the `syslog(2)` agent, stats and metrics), with the **CLI** on
//! top. docs/architecture.md maps every folder to its stage.
//!
//! * [`sources`]: the host kernel log reader, the BPF program's loader and its events.
//! * [`attribution`]: joins records with events ([`attribution::router`]) and appends them to
//!   their owners' rings ([`attribution::deliver`]).
//! * [`ring`]: the per-namespace ring; [`ring::registry`]: rings by namespace, their limits
//!   and reclamation.
//! * [`frontends`]: the FUSE filesystem, `/proc/kmsg`, the `syslog(2)` seccomp agent, the
//!   access policy they share, metrics.
//! * [`cli`]: `kmsgfs serve` (tying the stages together), `run`, `oci-hook`, `demo`.
//! * [`restart`]: the holder that keeps rings, files and listeners across a restart.
//! * Shared by every stage: [`record`] (the record and its wire formats), [`syslog`]
//!   (`syslog(2)` actions as pure logic over a ring), [`ratelimit`], and [`sys`], the one
//!   syscall seam.

pub mod attribution;
pub mod cli;
pub mod frontends;
pub mod ratelimit;
pub mod record;
pub mod restart;
pub mod ring;
pub mod sources;
pub mod sys;
pub mod syslog;
