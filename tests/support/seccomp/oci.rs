//! Real OCI runtimes (runc, crun) for the runtime tests (`tests/seccomp_runtimes.rs`,
//! `tests/serve_runtimes.rs`): a [`Bundle`] in a temporary directory whose rootfs holds only
//! the static busybox, a spec from the runtime's own `spec` with the kmsgfs seccomp profile
//! ([`Bundle::kmsgfs_spec`]), and foreground runs whose containers are deleted on drop.
//!
//! crun 1.8 refuses the host's hybrid cgroup layout ("cgroups in hybrid mode not supported");
//! it runs in a private mount namespace where a tmpfs hides `/sys/fs/cgroup/unified`, so it sees
//! pure cgroup v1. The host's mounts are not changed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kmsgfs::frontends::seccomp::seccomp_profile;
use serde_json::{json, Value};

use super::{stderr, wait_output, which, TempDir};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Runtime {
    Runc,
    Crun,
}

impl Runtime {
    pub fn bin(self) -> &'static str {
        match self {
            Runtime::Runc => "runc",
            Runtime::Crun => "crun",
        }
    }
}

/// A bundle and a runtime state directory; deletes its containers on drop.
pub struct Bundle {
    pub rt: Runtime,
    pub dir: TempDir,
    /// Containers to delete on drop.
    pub ids: Vec<String>,
}

impl Bundle {
    /// A bundle whose rootfs holds `/bin/busybox`, a symlink to it for each of `applets` and
    /// util-linux `/usr/bin/dmesg`.
    pub fn new(rt: Runtime, applets: &[&str]) -> Bundle {
        let dir = TempDir::new(rt.bin());
        let rootfs = dir.path().join("bundle/rootfs");
        fs::create_dir_all(rootfs.join("bin")).unwrap();
        let busybox = which("busybox").expect("busybox");
        fs::copy(&busybox, rootfs.join("bin/busybox")).expect("copy busybox into the rootfs");
        for applet in applets {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        super::add_util_linux_dmesg(&rootfs);
        fs::create_dir_all(dir.path().join("state")).unwrap();
        Bundle {
            rt,
            dir,
            ids: Vec::new(),
        }
    }

    pub fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    /// The runtime's own default config (`runc spec` / `crun spec`).
    pub fn default_spec(&self) -> Value {
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

    /// The default config changed for the tests: no terminal, `args`, CAP_SYSLOG added to the
    /// bounding, effective and permitted sets (when `cap_syslog`; the default set has none),
    /// the kmsgfs seccomp profile on `socket`, and `/proc/kmsg` masked.
    pub fn kmsgfs_spec(&self, args: &[&str], socket: &Path, cap_syslog: bool) -> Value {
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
        c
    }

    /// Write `config` as the bundle's `config.json`.
    pub fn write_config(&self, config: &Value) {
        fs::write(
            self.bundle().join("config.json"),
            serde_json::to_vec_pretty(config).unwrap(),
        )
        .unwrap();
    }

    /// The runtime command with its state directory (crun in its private mount namespace).
    pub fn base_cmd(&self) -> Command {
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

    /// Run container `id` in the foreground, collect its output (waiting up to `timeout`) and
    /// delete it.
    pub fn run(&mut self, id: &str, timeout: Duration) -> Output {
        self.ids.push(id.to_owned());
        let mut c = self.base_cmd();
        c.args(["run", "--bundle"])
            .arg(self.bundle())
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = c.spawn().expect("start the runtime");
        let out = wait_output(child, timeout);
        self.delete(id);
        out
    }

    pub fn delete(&self, id: &str) {
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
