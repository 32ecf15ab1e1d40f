//! Sources of kernel log data: the host `/dev/kmsg` and BPF attribution events.

pub mod bpf;
