//! Docker (Debian's docker.io 20.10) with the recipe of `docs/deploy/docker/README.md`: a
//! private `dockerd` of this test (`--iptables=false --bridge=none`, its own data and exec
//! roots and socket: the host's network, firewall and Docker state are not touched),
//! containers with `--network none` and Docker's **default** capabilities and seccomp profile,
//! `-v DIR/kmsg:/dev/kmsg`. Two containers side by side each see only their own records in
//! `cat /dev/kmsg`; `syslog(2)` and `/proc/kmsg` get EPERM (never the host log); a profile
//! with `listenerPath` is refused by Docker 20.10 with exit 125, as documented; `docker exec`
//! gets the container's ring, and `/dev/kmsg` survives `kill -9` of the daemon. Root only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::seccomp::{unique_tag, wait_output, TempDir};

/// The tests of this binary one at a time: two private dockerds side by side disturb each
/// other's containers.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A private dockerd, stopped (with its containers) on drop.
struct Dockerd {
    child: Child,
    sock: PathBuf,
    root: PathBuf,
    _dir: TempDir,
}

impl Dockerd {
    fn start() -> Dockerd {
        let dir = TempDir::new("dockerd");
        // dockerd's exec root holds a unix socket path: keep it short.
        let root = PathBuf::from(format!("/tmp/kmsgfs-dk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let sock = root.join("docker.sock");
        let child = Command::new("dockerd")
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--ip-forward=false",
                "--ip-masq=false",
                "--exec-opt",
                "native.cgroupdriver=cgroupfs",
            ])
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("dockerd.log")).unwrap())
            .spawn()
            .expect("spawn dockerd");
        let d = Dockerd {
            child,
            sock,
            root,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d.docker(&["info"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not come up: {}",
                std::fs::read_to_string(d._dir.path().join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    fn docker(&self, args: &[&str]) -> Output {
        let child = Command::new("docker")
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn docker");
        wait_output(child, Duration::from_secs(120))
    }

    /// `docker import` of a busybox rootfs as image `name`.
    fn import(&self, name: &str, rootfs: &Path) {
        let tar = self._dir.path().join("rootfs.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        let o = self.docker(&["import", tar.to_str().unwrap(), name]);
        assert!(o.status.success(), "docker import: {o:?}");
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        // SAFETY: plain kill(2) of our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = wait_output_child(&mut self.child, Duration::from_secs(20));
        support::seccomp::detach_under(&self.root);
        support::seccomp::detach_under(self._dir.path());
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn wait_output_child(child: &mut Child, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

fn rootfs(dir: &Path) -> PathBuf {
    let r = dir.join("rootfs");
    support::seccomp::busybox_rootfs(&r, &["sh", "dmesg", "cat", "sleep", "kill", "echo"]);
    r
}

#[test]
fn docker_containers_see_only_their_own_dev_kmsg_and_syslog_is_eperm() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !(support::require_root()
        && support::require_tool("busybox")
        && support::require_tool("dockerd")
        && support::require_tool("docker"))
    {
        return;
    }
    let d = support::Daemon::start_args(&["--devkmsg", "on"]);
    d.feed(6, "kmsgfs-host-ring-record-not-for-containers");
    let dk = Dockerd::start();
    let scratch = TempDir::new("docker-rootfs");
    dk.import("kmsgfs-test-busybox", &rootfs(scratch.path()));
    let bind = format!("{}:/dev/kmsg", d.kmsg().display());
    let mut tags: Vec<String> = Vec::new();
    for n in 0..2 {
        let t = unique_tag(&format!("docker-{n}"));
        let script = format!(
            "echo '<6>{t}' > /dev/kmsg; cat /dev/kmsg & sleep 0.5; kill $!; \
             /usr/bin/dmesg; echo urc=$?; echo ===; \
             dmesg; echo rc=$?; /usr/bin/dmesg -S; echo src=$?; /usr/bin/dmesg -C; echo Crc=$?; \
             cat /proc/kmsg; echo prc=$?"
        );
        let o = dk.docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &bind,
            "kmsgfs-test-busybox",
            "sh",
            "-c",
            &script,
        ]);
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let (file, rest) = out.split_once("===\n").unwrap_or_else(|| panic!("{out}"));
        // `cat /dev/kmsg` and util-linux `dmesg` (which reads the file) show the record.
        assert_eq!(
            file.matches(&t).count(),
            2,
            "cat /dev/kmsg, /usr/bin/dmesg: {out}"
        );
        assert!(file.contains("urc=0"), "/usr/bin/dmesg: {out}");
        for old in &tags {
            assert!(
                !out.contains(old.as_str()),
                "another container's record: {out}"
            );
        }
        assert!(!out.contains("kmsgfs-host-ring"), "the host ring: {out}");
        assert!(
            !rest.contains(&t)
                && ["rc=1", "src=1", "Crc=1", "prc=1"]
                    .iter()
                    .all(|r| rest.lines().any(|l| l == *r))
                && rest.contains("Operation not permitted"),
            "syslog(2) and /proc/kmsg without CAP_SYSLOG: EPERM: {out}"
        );
        tags.push(t);
    }
    // Docker 20.10 has no listenerPath in its profile type: the documented refusal.
    let profile = scratch.path().join("seccomp.json");
    std::fs::write(
        &profile,
        kmsgfs::frontends::seccomp::seccomp_profile(
            &kmsgfs::frontends::seccomp::default_socket_for(d.dir()),
        )
        .to_string(),
    )
    .unwrap();
    let o = dk.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--security-opt",
        &format!("seccomp={}", profile.display()),
        "kmsgfs-test-busybox",
        "true",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    let version = String::from_utf8_lossy(
        &dk.docker(&["version", "--format", "{{.Server.Version}}"])
            .stdout,
    )
    .trim()
    .to_owned();
    if version.starts_with("20.") {
        assert_eq!(o.status.code(), Some(125), "{err}");
        assert!(err.contains("listenerPath is not set"), "{err}");
    }
}

/// `docker exec` opens the container's ring, and a running container keeps its `/dev/kmsg`
/// (the same FUSE connection and open file) across `kill -9` of the daemon with the holder.
#[test]
fn docker_exec_gets_the_containers_ring_and_dev_kmsg_survives_kill_9() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !(support::require_root()
        && support::require_tool("busybox")
        && support::require_tool("dockerd")
        && support::require_tool("docker"))
    {
        return;
    }
    let scratch = TempDir::new("docker-restart");
    let holder = support::Holder::start(scratch.path());
    let sock = holder.socket.display().to_string();
    let args = ["--devkmsg", "on", "--holder-socket", sock.as_str()];
    let mut d = support::Daemon::start_with(support::Options::args(&args));
    let dk = Dockerd::start();
    dk.import("kmsgfs-test-busybox", &rootfs(scratch.path()));
    let bind = format!("{}:/dev/kmsg", d.kmsg().display());
    let t = unique_tag("docker-exec");
    // The container holds /dev/kmsg open in a reader for its whole life.
    let o = dk.docker(&[
        "run",
        "-d",
        "--network",
        "none",
        "-v",
        &bind,
        "kmsgfs-test-busybox",
        "sh",
        "-c",
        &format!("echo '<6>{t} init' > /dev/kmsg; exec cat /dev/kmsg > /tmp/log"),
    ]);
    assert!(o.status.success(), "docker run -d: {o:?}");
    let id = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let exec = |script: &str| {
        let o = dk.docker(&["exec", &id, "sh", "-c", script]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let dump = "cat /dev/kmsg & sleep 0.5; kill $!";
    let before = exec(dump);
    assert_eq!(
        before.matches(&format!("{t} init")).count(),
        1,
        "docker exec: {before}"
    );
    d.kill9();
    d.restart(support::Options::args(&args));
    let after = exec(&format!(
        "echo '<6>{t} after' > /dev/kmsg; {dump}; echo ===; cat /tmp/log"
    ));
    let (fresh, held) = after
        .split_once("===\n")
        .unwrap_or_else(|| panic!("{after}"));
    for w in ["init", "after"] {
        assert_eq!(
            fresh.matches(&format!("{t} {w}")).count(),
            1,
            "new open: {after}"
        );
        assert_eq!(
            held.matches(&format!("{t} {w}")).count(),
            1,
            "the reader open since before the restart: {after}"
        );
    }
    drop(dk);
    drop(d);
    drop(holder);
}
