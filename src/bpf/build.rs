//! Builds the BPF programs in `src/bpf/` with clang and generates their libbpf-rs skeletons
//! (`$OUT_DIR/kmsgfs.skel.rs`, `$OUT_DIR/probe.skel.rs`). CO-RE comes from the hand-written
//! header `src/bpf/kmsgfs_core.h`; no generated vmlinux.h is needed. Requires `clang`; the libbpf
//! headers are supplied by libbpf-cargo.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SOURCES: &[(&str, &str)] = &[
    ("src/bpf/kmsgfs.bpf.c", "kmsgfs.skel.rs"),
    ("src/bpf/probe.bpf.c", "probe.skel.rs"),
];
const HEADERS: &[&str] = &["src/bpf/kmsgfs_core.h", "src/bpf/kmsgfs_event.h"];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    // <linux/bpf.h> includes <asm/types.h>, which Debian keeps in the multiarch directory.
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    for (src, skel) in SOURCES {
        SkeletonBuilder::new()
            .source(src)
            .clang_args(["-Isrc/bpf", multiarch.as_str(), "-Wall", "-Werror"])
            .build_and_generate(out_dir.join(skel))
            .unwrap_or_else(|e| {
                panic!("building the BPF program {src} failed (is clang installed?): {e:#}")
            });
        println!("cargo:rerun-if-changed={src}");
    }
    for h in HEADERS {
        println!("cargo:rerun-if-changed={h}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
