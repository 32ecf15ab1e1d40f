//! Record sources feeding the rings.
//!
//! * [`host`]: the host kernel log (`/dev/kmsg`, or a FIFO/file standing in for it in tests),
//!   read into the host ring.

pub mod host;
