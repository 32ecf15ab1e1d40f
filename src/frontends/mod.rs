//! Frontends: how processes in a container reach their ring.
//!
//! * [`run`]: the `kmsgfs run` launcher, which starts a command in new namespaces with the
//!   kmsgfs file bound over `/dev/kmsg` (used by the demo and the end-to-end tests).

pub mod run;
