//! Sources of kernel log data.
//!
//! * [`host`]: the host kernel log (`/dev/kmsg`, or a FIFO/file standing in for it in tests),
//!   read into the host ring.
//! * [`bpf`]: BPF attribution events that say which namespaces caused each printk.
//! * [`deliver`]: routed host records into the owners' namespace rings.

pub mod bpf;
pub mod events;
pub mod host;
