//! BPF attribution source (placeholder while building).
#[allow(clippy::all, missing_docs, unused)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/kmsgfs.skel.rs"));
}
#[allow(clippy::all, missing_docs, unused)]
mod probe_skel {
    include!(concat!(env!("OUT_DIR"), "/probe.skel.rs"));
}
