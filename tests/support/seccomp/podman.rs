//! Real Podman with runc or crun for the runtime tests: its own storage and run directories in
//! a temporary directory (the host's Podman state is never touched), `cgroupfs` and file
//! events (no systemd), containers from a busybox rootfs directory (`--rootfs`, no image
//! registry), and every container removed on drop, with any mount left under the directory
//! detached.
//!
//! Host quirks, each needed on the test machine:
//! * crun 1.8 refuses the hybrid cgroup layout; every Podman call that may start crun runs in a
//!   private mount namespace where a tmpfs hides `/sys/fs/cgroup/unified` (as for
//!   [`super::oci::Bundle`]).
//! * The daemon-side root lacks CAP_SYS_RESOURCE, so the runtimes cannot raise rlimits; Podman's
//!   default `nofile`/`nproc` limits are above the hard limits here and fail with EPERM. The
//!   containers get limits below them (`--ulimit`).

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::oci::Runtime;
use super::{wait_output, TempDir};

/// Limits every container gets (see the module docs).
const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=4096:4096",
];

/// A Podman instance with private state, running containers with `rt`.
pub struct Podman {
    pub rt: Runtime,
    pub dir: TempDir,
    /// Podman's run directory: its own short path, as Podman refuses one longer than 50 bytes.
    run: PathBuf,
    /// Containers to remove on drop.
    pub names: Vec<String>,
}

impl Podman {
    /// Private state and a busybox rootfs with `applets`.
    pub fn new(rt: Runtime, applets: &[&str]) -> Podman {
        let dir = TempDir::new(&format!("podman-{}", rt.bin()));
        super::busybox_rootfs(&dir.path().join("rootfs"), applets);
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let run = PathBuf::from(format!("/tmp/kmsgfs-pm-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&run);
        fs::create_dir_all(&run).unwrap();
        Podman {
            rt,
            dir,
            run,
            names: Vec::new(),
        }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// `podman` with the private state and the runtime (crun behind the cgroup2 cover).
    pub fn cmd(&self) -> Command {
        let args = [
            "--root".into(),
            self.dir.path().join("storage").into_os_string(),
            "--runroot".into(),
            self.run.clone().into_os_string(),
            "--tmpdir".into(),
            self.dir.path().join("tmp").into_os_string(),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
            "--events-backend".into(),
            "file".into(),
            "--runtime".into(),
            self.rt.bin().into(),
        ];
        match self.rt {
            Runtime::Runc => {
                let mut c = Command::new("podman");
                c.args(args);
                c
            }
            Runtime::Crun => {
                let mut c = Command::new("unshare");
                c.args(["-m", "--propagation", "private", "sh", "-c"])
                    .arg(
                        "mount -t tmpfs -o size=1k none /sys/fs/cgroup/unified && \
                         exec podman \"$@\"",
                    )
                    .arg("podman")
                    .args(args);
                c
            }
        }
    }

    /// `podman run -d --name NAME` of `args` (after the image options) on the rootfs, with the
    /// limits of the module docs; panics with Podman's output if it fails.
    pub fn run_detached(&mut self, name: &str, options: &[&str], command: &[&str]) {
        self.names.push(name.to_owned());
        let mut c = self.cmd();
        c.args(["run", "-d", "--name", name, "--network", "none"])
            .args(ULIMITS)
            .args(options)
            .arg("--rootfs")
            .arg(self.rootfs())
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let o = wait_output(c.spawn().expect("start podman"), Duration::from_secs(120));
        assert!(
            o.status.success(),
            "podman --runtime {} run -d {name}: {}",
            self.rt.bin(),
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// `podman exec NAME COMMAND...`, waited for up to `timeout`.
    pub fn exec(&self, name: &str, command: &[&str], timeout: Duration) -> Output {
        let mut c = self.cmd();
        c.args(["exec", name])
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        wait_output(c.spawn().expect("start podman exec"), timeout)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = self
                .cmd()
                .args(["rm", "-f", "-t", "0", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // conmon starts `podman container cleanup` when a container exits, asynchronously;
        // it mounts the storage again. Wait for every process that names this instance's
        // state (at most 10 s), then detach what is mounted under it.
        let marker = self.dir.path().display().to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline && processes_naming(&marker) {
            std::thread::sleep(Duration::from_millis(50));
        }
        super::detach_under(self.dir.path());
        super::detach_under(&self.run);
        // Podman's helpers may still be leaving files there for a moment.
        for _ in 0..20 {
            if fs::remove_dir_all(&self.run).is_ok() || !self.run.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether some process other than this one has `marker` in its command line.
fn processes_naming(marker: &str) -> bool {
    let me = std::process::id().to_string();
    let Ok(dir) = fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(Result::ok)
        .filter(|e| e.file_name() != me.as_str())
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
        .any(|c| String::from_utf8_lossy(&c).contains(marker))
}
