//! The command-line tools on top of the stages: `kmsgfs serve` ([`serve`], which wires
//! sources → attribution → rings → frontends together), `kmsgfs run` ([`run`]), `kmsgfs
//! oci-hook` ([`oci_hook`]), `kmsgfs demo` ([`demo`]), and systemd readiness ([`sdnotify`]).

pub mod demo;
pub mod oci_hook;
pub mod run;
pub mod sdnotify;
pub mod serve;
