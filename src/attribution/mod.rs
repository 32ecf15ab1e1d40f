//! Attribution: which namespace's ring a host record belongs to.
//!
//! * [`router`]: joins each host record with the BPF event of the same printk (by sequence
//!   number) and names its owners by the configured key (`--key net|user|pid`).
//! * [`pipeline`]: the router fed from the BPF source, with calibration and degraded modes.
//! * [`deliver`]: appends a routed record to each owner's ring (through the ring registry).
//!
//! Records enter in `sources` (the host log, the BPF events) and leave to `ring`.

pub mod deliver;
pub mod pipeline;
pub mod router;
