//! Real OCI runtimes against the real `kmsgfs serve`: the bundle's seccomp profile points
//! `listenerPath` at the daemon's agent socket (`DIR.seccomp.sock`) and a bind mount puts the
//! daemon's `DIR/kmsg` at `/dev/kmsg`. No `io.kmsgfs.key` annotation: the daemon resolves the
//! ring from the container init's namespaces, exactly like the FUSE open, so `syslog(2)` and
//! `/dev/kmsg` meet in one ring per container (docs/deploy.md).
//!
//! The rootfs holds only the static busybox, so the clients are busybox `dmesg` and
//! `dmesg -c` (syslog(2) READ_ALL / READ_CLEAR) and `cat /dev/kmsg`; util-linux is not in it.
//! `/proc/kmsg` is masked: runc refuses bind mounts onto `/proc` paths outside its allow-list.
//! Root only; needs `runc`, `crun` and `busybox`.

mod common;
mod seccomp_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kmsgfs::frontends::seccomp::seccomp_profile;
use seccomp_support::{stderr, stdout, unique_tag, wait_output, which, TempDir};
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
        for applet in ["sh", "dmesg", "cat", "echo"] {
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

    fn configure(&self, script: &str, kmsg_dir: &Path, socket: &Path) {
        let _ = fs::remove_file(self.bundle().join("config.json"));
        let o = Command::new(self.rt.bin())
            .arg("spec")
            .current_dir(self.bundle())
            .output()
            .expect("run `spec`");
        assert!(o.status.success(), "{} spec: {}", self.rt.bin(), stderr(&o));
        let path = self.bundle().join("config.json");
        let mut c: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        c["process"]["terminal"] = json!(false);
        c["process"]["args"] = json!(["sh", "-c", script]);
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push(json!("CAP_SYSLOG"));
        }
        c["linux"]["seccomp"] = seccomp_profile(socket);
        c["linux"]["maskedPaths"]
            .as_array_mut()
            .unwrap()
            .push(json!("/proc/kmsg"));
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/dev/kmsg",
            "type": "bind",
            "source": kmsg_dir.join("kmsg"),
            "options": ["bind"]
        }));
        fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
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
                // crun 1.8 refuses the hybrid cgroup layout; hide cgroup2 in a private mount
                // namespace (as tests/seccomp_runtimes.rs does).
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
        let out = wait_output(child, common::TIMEOUT * 3);
        self.delete(id);
        out
    }

    fn delete(&self, id: &str) {
        let _ = self
            .base_cmd()
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

fn containers_see_only_their_rings(rt: Runtime) {
    if !(common::require_root()
        && common::require_tool("busybox")
        && common::require_tool(rt.bin()))
    {
        return;
    }
    let d = common::Daemon::start_args(&["--devkmsg", "on"]);
    d.feed(6, "kmsgfs-host-ring-record-not-for-containers");
    let socket = kmsgfs::frontends::seccomp::default_socket_for(d.dir());
    let mut b = Bundle::new(rt);
    let mut tags = Vec::new();
    for n in 0..2 {
        let t = unique_tag(&format!("{}-{n}", rt.bin()));
        let script = format!(
            "echo '<6>{t}' > /dev/kmsg; dmesg; echo ===; dmesg -c; echo ===; dmesg; echo done"
        );
        b.configure(&script, d.dir(), &socket);
        let out = b.run(&format!("kmsgfs-serve-{}-{n}", std::process::id()));
        let text = stdout(&out);
        assert!(
            out.status.success(),
            "{}: {}\n{text}",
            rt.bin(),
            stderr(&out)
        );
        let parts: Vec<&str> = text.split("===\n").collect();
        assert_eq!(parts.len(), 3, "{text}");
        assert_eq!(parts[0].matches(&t).count(), 1, "dmesg: {text}");
        assert_eq!(parts[1].matches(&t).count(), 1, "dmesg -c: {text}");
        assert_eq!(parts[2].matches(&t).count(), 0, "dmesg after -c: {text}");
        assert!(parts[2].ends_with("done\n"), "{text}");
        assert!(
            !text.contains("kmsgfs-host-ring"),
            "host ring shown: {text}"
        );
        for old in &tags {
            assert!(!text.contains(old), "another container's record: {text}");
        }
        tags.push(t);
    }
}

#[test]
fn runc_syslog_and_dev_kmsg_share_the_container_ring() {
    containers_see_only_their_rings(Runtime::Runc);
}

#[test]
fn crun_syslog_and_dev_kmsg_share_the_container_ring() {
    containers_see_only_their_rings(Runtime::Crun);
}
