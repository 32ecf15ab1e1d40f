//! The integration suites: one test binary, one module per suite (`tests/<suite>.rs`), the
//! shared harness in `tests/support/`. `.ci/test.sh` runs the suites one after another (each
//! suite's tests in parallel, as when every suite was its own binary); run one with
//! `cargo test --release --test integration -- <suite>::`.

mod support;

mod bpf_events;
mod bpf_identical;
mod bpf_netfilter;
mod bpf_oom;
mod bpf_overhead;
mod bpf_status;
mod clients_real;
mod containerd_runtime;
mod deploy_demo;
mod deploy_files;
mod deploy_metrics;
mod deploy_oci_hook;
mod docker_runtime;
mod e2e_clients;
mod fuse_daemon;
mod fuse_hostile;
mod fuse_ns;
mod fuse_read;
mod fuse_request_timeout;
mod fuse_signals;
mod fuse_wire;
mod fuse_write;
mod lxc_runtime;
mod nspawn_runtime;
mod podman_hook;
mod restart_clients;
mod restart_rings;
mod ring_stress;
mod run_hostile;
mod run_launcher;
mod seccomp_concurrency;
mod seccomp_dmesg;
mod seccomp_hostile;
mod seccomp_latency;
mod seccomp_lxc_proxy;
mod seccomp_runtimes;
mod seccomp_safety;
mod seccomp_socket;
mod serve_attribution;
mod serve_runtimes;
mod serve_syslog;
mod zz_no_leftover_mounts;
