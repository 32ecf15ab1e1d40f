//! Real OCI runtimes (runc, crun) handing their listeners to the agent through the profile's
//! `listenerPath` (seccomp-agent.md §6, §7). Root only; needs Debian `runc`, `crun` and
//! `busybox-static`.
//!
//! Each test builds a bundle in a temporary directory: a rootfs holding only the static busybox,
//! and the runtime's own `spec` output changed where needed: no terminal, the command, CAP_SYSLOG
//! (the default capability set has none, so `dmesg` would get EPERM as with a real kernel), the
//! kmsgfs seccomp profile ([`seccomp_profile`]) pointing at the test agent, `/proc/kmsg` masked,
//! and an `io.kmsgfs.key` annotation choosing the container's test ring.
//!
//! crun 1.8 refuses the host's hybrid cgroup layout ("cgroups in hybrid mode not supported");
//! it runs in a private mount namespace where a tmpfs hides `/sys/fs/cgroup/unified`, so it sees
//! pure cgroup v1. The host's mounts are not changed.

use std::fs;
use std::path::Path;
use std::process::Stdio;

use crate::support::seccomp::oci::{Bundle, Runtime};
use crate::support::seccomp::*;
use kmsgfs::frontends::seccomp::profile::LISTENER_METADATA;
use kmsgfs::frontends::seccomp::KEY_ANNOTATION;
use serde_json::json;

/// The busybox applets the tests' containers run.
const APPLETS: &[&str] = &["sh", "dmesg", "sleep", "cat"];

/// Write config.json for `args`, with the kmsgfs profile on `socket` and ring `key`.
fn configure(b: &Bundle, args: &[&str], socket: &Path, key: &str, cap_syslog: bool) {
    let mut c = b.kmsgfs_spec(args, socket, cap_syslog);
    c["annotations"] = json!({ KEY_ANNOTATION: key, "io.example.owner": "kmsgfs-test" });
    b.write_config(&c);
}

fn ready(rt: Runtime) -> bool {
    require_root() && require_tool("busybox") && require_tool(rt.bin())
}

const SCRIPT: &str =
    "busybox dmesg; echo ===; busybox dmesg -c; echo ===; busybox dmesg; echo done";

/// Two containers with their own rings: each `busybox dmesg` sees only its ring, `dmesg -c`
/// clears only its ring, and the host log is neither shown nor cleared.
fn two_containers_see_only_their_rings(rt: Runtime) {
    let host = HostTag::write(&format!("host-{}", rt.bin()));
    let (ta, tb) = (unique_tag("ring-a"), unique_tag("ring-b"));
    let h = Harness::new(&[]);
    let ring_a = ring_with(&[format!("{ta} one"), format!("{ta} two")]);
    let ring_b = ring_with(&[format!("{tb} one")]);
    h.resolver.add("ring-a", ring_a.clone());
    h.resolver.add("ring-b", ring_b.clone());

    let mut b = Bundle::new(rt, APPLETS);
    configure(&b, &["sh", "-c", SCRIPT], &h.socket(), "ring-a", true);
    let id_a = format!("kmsgfs-a-{}", std::process::id());
    let o = b.run(&id_a, TIMEOUT);
    let out = ok(&o, &format!("{} run (container A)", rt.bin()));
    let parts: Vec<&str> = out.split("===\n").collect();
    assert_eq!(parts.len(), 3, "{out:?} / {}", stderr(&o));
    for p in &parts[..2] {
        assert!(
            p.contains(&format!("{ta} one")) && p.contains(&format!("{ta} two")),
            "{out:?}"
        );
    }
    assert_eq!(
        parts[2], "done\n",
        "dmesg after dmesg -c printed records: {out:?}"
    );
    assert!(!out.contains(&tb), "container A saw ring B: {out:?}");
    assert!(
        !out.contains(&host.tag),
        "container A saw the HOST log: {out:?}"
    );
    assert_eq!(ring_a.clear_seq(), ring_a.next_seq());
    assert_eq!(ring_b.clear_seq(), 0, "dmesg -c in A cleared ring B");

    configure(&b, &["busybox", "dmesg"], &h.socket(), "ring-b", true);
    let id_b = format!("kmsgfs-b-{}", std::process::id());
    let out = ok(
        &b.run(&id_b, TIMEOUT),
        &format!("{} run (container B)", rt.bin()),
    );
    assert!(out.contains(&format!("{tb} one")), "{out:?}");
    assert!(!out.contains(&ta) && !out.contains(&host.tag), "{out:?}");

    let seen = h.resolver.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one listener per container: {seen:?}");
    assert_eq!(seen[0].id, id_a);
    assert_eq!(seen[0].status, "creating");
    assert_eq!(seen[0].metadata, LISTENER_METADATA);
    assert_eq!(seen[0].annotations["io.example.owner"], "kmsgfs-test");
    host.assert_host_not_cleared();
}

/// Without CAP_SYSLOG in the container (the runtimes' default), the agent refuses like the
/// kernel would (B1).
fn default_capabilities_get_eperm(rt: Runtime) {
    let tag = unique_tag("ring");
    let h = Harness::new(&[]);
    h.resolver.add("r", ring_with(&[format!("{tag} one")]));
    let mut b = Bundle::new(rt, APPLETS);
    configure(&b, &["busybox", "dmesg"], &h.socket(), "r", false);
    let o = b.run(&format!("kmsgfs-nocap-{}", std::process::id()), TIMEOUT);
    assert!(
        !o.status.success(),
        "busybox dmesg without CAP_SYSLOG succeeded"
    );
    assert!(
        stderr(&o).contains("klogctl: Operation not permitted"),
        "{:?}",
        stderr(&o)
    );
    assert!(!stdout(&o).contains(&tag));
}

#[test]
fn runc_containers_see_only_their_rings() {
    if ready(Runtime::Runc) {
        two_containers_see_only_their_rings(Runtime::Runc);
    }
}

#[test]
fn crun_containers_see_only_their_rings() {
    if ready(Runtime::Crun) {
        two_containers_see_only_their_rings(Runtime::Crun);
    }
}

#[test]
fn runc_default_capabilities_get_eperm() {
    if ready(Runtime::Runc) {
        default_capabilities_get_eperm(Runtime::Runc);
    }
}

#[test]
fn crun_default_capabilities_get_eperm() {
    if ready(Runtime::Crun) {
        default_capabilities_get_eperm(Runtime::Crun);
    }
}

/// `runc exec` hands over one more listener for the same container (seccomp-agent.md §7.2);
/// the exec'd process sees the container's ring.
#[test]
fn runc_exec_adds_a_listener_for_the_same_ring() {
    if !ready(Runtime::Runc) {
        return;
    }
    let tag = unique_tag("ring");
    let h = Harness::new(&[]);
    let ring = ring_with(&[format!("{tag} one")]);
    h.resolver.add("r", ring.clone());
    let mut b = Bundle::new(Runtime::Runc, APPLETS);
    configure(&b, &["busybox", "sleep", "60"], &h.socket(), "r", true);
    let id = format!("kmsgfs-exec-{}", std::process::id());
    b.ids.push(id.clone());
    // The container keeps stdout/stderr open: give it files, not pipes we would wait on.
    let log = b.dir.path().join("run.log");
    let st = b
        .base_cmd()
        .args(["run", "-d", "--bundle"])
        .arg(b.bundle())
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::create(&log).unwrap())
        .status()
        .expect("runc run -d");
    assert!(st.success(), "runc run -d: {}", read_or_empty(&log));
    h.wait_stats("the init's listener", |s| s.listeners_accepted == 1);
    let exec = b
        .base_cmd()
        .args(["exec", &id, "busybox", "dmesg"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_output(exec, TIMEOUT);
    let out = ok(
        &o,
        &format!(
            "runc exec busybox dmesg (container log {:?})",
            read_or_empty(&log)
        ),
    );
    assert!(out.contains(&format!("{tag} one")), "{out:?}");
    assert_eq!(h.agent.stats().listeners_accepted, 2);
    let seen = h.resolver.seen.lock().unwrap().clone();
    assert_eq!(seen[1].status, "running");
    assert_eq!(
        seen[1].init_pid, seen[0].init_pid,
        "exec names the same init"
    );
    assert_ne!(seen[1].process_pid, seen[1].init_pid);
    // The exec'd process is gone: its listener hangs up and is closed.
    h.wait_stats("the exec listener to close", |s| s.listeners == 1);
    b.delete(&id);
    h.wait_stats("the init listener to close", |s| s.listeners == 0);
}
