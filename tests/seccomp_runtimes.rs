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

mod seccomp_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kmsgfs::frontends::seccomp::profile::LISTENER_METADATA;
use kmsgfs::frontends::seccomp::{seccomp_profile, KEY_ANNOTATION};
use seccomp_support::*;
use serde_json::{json, Value};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Runtime {
    Runc,
    Crun,
}

impl Runtime {
    fn bin(self) -> &'static str {
        match self {
            Runtime::Runc => "runc",
            Runtime::Crun => "crun",
        }
    }
}

/// A bundle and a runtime state directory; deletes its containers on drop.
struct Bundle {
    rt: Runtime,
    dir: TempDir,
    ids: Vec<String>,
}

impl Bundle {
    fn new(rt: Runtime) -> Bundle {
        let dir = TempDir::new(rt.bin());
        let rootfs = dir.path().join("bundle/rootfs");
        fs::create_dir_all(rootfs.join("bin")).unwrap();
        let busybox = which("busybox").expect("busybox");
        fs::copy(&busybox, rootfs.join("bin/busybox")).expect("copy busybox into the rootfs");
        for applet in ["sh", "dmesg", "sleep", "cat"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        fs::create_dir_all(dir.path().join("state")).unwrap();
        Bundle {
            rt,
            dir,
            ids: Vec::new(),
        }
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    /// The runtime's own default config (`runc spec` / `crun spec`).
    fn default_spec(&self) -> Value {
        let _ = fs::remove_file(self.bundle().join("config.json"));
        let o = Command::new(self.rt.bin())
            .arg("spec")
            .current_dir(self.bundle())
            .output()
            .expect("run `spec`");
        assert!(o.status.success(), "{} spec: {}", self.rt.bin(), stderr(&o));
        let path = self.bundle().join("config.json");
        let v = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        fs::remove_file(path).unwrap();
        v
    }

    /// Write config.json for `args`, with the kmsgfs profile on `socket` and ring `key`.
    fn configure(&self, args: &[&str], socket: &Path, key: &str, cap_syslog: bool) {
        let mut c = self.default_spec();
        c["process"]["terminal"] = json!(false);
        c["process"]["args"] = json!(args);
        if cap_syslog {
            for set in ["bounding", "effective", "permitted"] {
                c["process"]["capabilities"][set]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("CAP_SYSLOG"));
            }
        }
        c["linux"]["seccomp"] = seccomp_profile(socket);
        c["linux"]["maskedPaths"]
            .as_array_mut()
            .unwrap()
            .push(json!("/proc/kmsg"));
        c["annotations"] = json!({ KEY_ANNOTATION: key, "io.example.owner": "kmsgfs-test" });
        fs::write(
            self.bundle().join("config.json"),
            serde_json::to_vec_pretty(&c).unwrap(),
        )
        .unwrap();
    }

    fn base_cmd(&self) -> Command {
        let state = self.dir.path().join("state");
        match self.rt {
            Runtime::Runc => {
                let mut c = Command::new("runc");
                c.arg("--root").arg(state);
                c
            }
            Runtime::Crun => {
                // Hide the cgroup2 mount from crun in a private mount namespace.
                let mut c = Command::new("unshare");
                c.args(["-m", "--propagation", "private", "sh", "-c"])
                    .arg(
                        "mount -t tmpfs -o size=1k none /sys/fs/cgroup/unified && \
                         exec crun --root \"$0\" \"$@\"",
                    )
                    .arg(state);
                c
            }
        }
    }

    /// Run container `id` in the foreground and collect its output.
    fn run(&mut self, id: &str) -> Output {
        self.ids.push(id.to_owned());
        let mut c = self.base_cmd();
        c.args(["run", "--bundle"])
            .arg(self.bundle())
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = c.spawn().expect("start the runtime");
        let out = wait_output(child, TIMEOUT);
        self.delete(id);
        out
    }

    fn delete(&self, id: &str) {
        let mut c = self.base_cmd();
        let _ = c
            .args(["delete", "-f", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        for id in &self.ids {
            self.delete(id);
        }
    }
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

    let mut b = Bundle::new(rt);
    b.configure(&["sh", "-c", SCRIPT], &h.socket(), "ring-a", true);
    let id_a = format!("kmsgfs-a-{}", std::process::id());
    let o = b.run(&id_a);
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

    b.configure(&["busybox", "dmesg"], &h.socket(), "ring-b", true);
    let id_b = format!("kmsgfs-b-{}", std::process::id());
    let out = ok(&b.run(&id_b), &format!("{} run (container B)", rt.bin()));
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
    let mut b = Bundle::new(rt);
    b.configure(&["busybox", "dmesg"], &h.socket(), "r", false);
    let o = b.run(&format!("kmsgfs-nocap-{}", std::process::id()));
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
    let mut b = Bundle::new(Runtime::Runc);
    b.configure(&["busybox", "sleep", "60"], &h.socket(), "r", true);
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
