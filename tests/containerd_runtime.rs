//! containerd 1.6 with `ctr` (the recipe of `docs/deploy/containerd/README.md`): a private
//! containerd of this test (its own root, state and socket; the host's containerd is not
//! touched), containers from a busybox rootfs directory (`ctr run --rootfs`, no image
//! registry) in their own network namespaces (ctr's default), default capabilities, the
//! daemon's `kmsg` bound over `/dev/kmsg` and the kmsgfs seccomp profile (`--seccomp-profile`,
//! whose `listenerPath` containerd passes through). Two containers side by side each see only
//! their own records in `cat /dev/kmsg` and busybox `dmesg`, and `dmesg -c` clears only their
//! own ring. Root only.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::seccomp::{unique_tag, wait_output, TempDir};

/// A private containerd, stopped on drop.
struct Containerd {
    child: Child,
    sock: PathBuf,
    dir: TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = TempDir::new("containerd");
        let sock = dir.path().join("c.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\n[grpc]\n  address = \"{}\"\n",
                dir.path().join("root").display(),
                dir.path().join("state").display(),
                sock.display()
            ),
        )
        .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("containerd.log")).unwrap())
            .spawn()
            .expect("spawn containerd");
        let c = Containerd { child, sock, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.ctr(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "containerd did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn ctr(&self, args: &[&str]) -> Output {
        let child = Command::new("ctr")
            .arg("-a")
            .arg(&self.sock)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ctr");
        wait_output(child, Duration::from_secs(120))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let tasks = self.ctr(&["task", "ls", "-q"]);
        for id in String::from_utf8_lossy(&tasks.stdout).split_whitespace() {
            let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        }
        let cs = self.ctr(&["containers", "ls", "-q"]);
        for id in String::from_utf8_lossy(&cs.stdout).split_whitespace() {
            let _ = self.ctr(&["task", "delete", "-f", id]);
            let _ = self.ctr(&["containers", "delete", id]);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        support::seccomp::detach_under(self.dir.path());
    }
}

/// The recipe: a busybox rootfs, the kmsgfs seccomp profile and the `--mount` of the kmsg file.
struct Recipe {
    rootfs: PathBuf,
    profile: PathBuf,
    mount: String,
}

impl Recipe {
    /// `ctr run MODE` (`--rm` or `-d`) of `sh -c script` as container `id`.
    fn run(&self, c: &Containerd, mode: &str, id: &str, script: &str) -> Output {
        c.ctr(&[
            "run",
            mode,
            "--env",
            "PATH=/bin",
            "--mount",
            &self.mount,
            "--seccomp",
            "--seccomp-profile",
            self.profile.to_str().unwrap(),
            "--rootfs",
            self.rootfs.to_str().unwrap(),
            id,
            "/bin/sh",
            "-c",
            script,
        ])
    }
}

fn prepare(d: &support::Daemon, c: &Containerd) -> Recipe {
    let rootfs = c.dir.path().join("rootfs");
    support::seccomp::busybox_rootfs(
        &rootfs,
        &["sh", "dmesg", "cat", "sleep", "kill", "echo", "wc"],
    );
    let profile = c.dir.path().join("seccomp.json");
    std::fs::write(
        &profile,
        kmsgfs::frontends::seccomp::seccomp_profile(
            &kmsgfs::frontends::seccomp::default_socket_for(d.dir()),
        )
        .to_string(),
    )
    .unwrap();
    let mount = format!(
        "type=bind,src={},dst=/dev/kmsg,options=rbind:rw",
        d.kmsg().display()
    );
    Recipe {
        rootfs,
        profile,
        mount,
    }
}

#[test]
fn ctr_containers_see_and_clear_only_their_own_rings() {
    if !(support::require_root()
        && support::require_tool("busybox")
        && support::require_tool("containerd")
        && support::require_tool("ctr"))
    {
        return;
    }
    let d = support::Daemon::start_args(&["--devkmsg", "on"]);
    d.feed(6, "kmsgfs-host-ring-record-not-for-containers");
    let c = Containerd::start();
    let recipe = prepare(&d, &c);
    let mut tags: Vec<String> = Vec::new();
    for n in 0..2 {
        let t = unique_tag(&format!("ctr-{n}"));
        let id = format!("kmsgfs-ctr-{}-{n}", std::process::id());
        let script = format!(
            "echo '<6>{t}' > /dev/kmsg; cat /dev/kmsg & sleep 0.5; kill $!; echo ===; \
             dmesg; echo ===; /usr/bin/dmesg; echo ===; /usr/bin/dmesg -S; echo ===; \
             dmesg -c >/dev/null; echo crc=$?; dmesg | wc -l; echo '<6>again' > /dev/kmsg; \
             /usr/bin/dmesg -C; echo Crc=$?; /usr/bin/dmesg | wc -l"
        );
        let o = recipe.run(&c, "--rm", &id, &script);
        let out = String::from_utf8_lossy(&o.stdout).replace("\r\n", "\n");
        let err = String::from_utf8_lossy(&o.stderr);
        let parts: Vec<&str> = out.split("===\n").collect();
        assert_eq!(parts.len(), 5, "{out}\n{err}");
        for (i, what) in [
            "cat /dev/kmsg",
            "busybox dmesg",
            "/usr/bin/dmesg",
            "dmesg -S",
        ]
        .iter()
        .enumerate()
        {
            assert_eq!(parts[i].matches(&t).count(), 1, "{what}: {out}\n{err}");
        }
        assert_eq!(
            parts[4], "crc=0\n0\nCrc=0\n0\n",
            "dmesg -c, dmesg -C: {out}\n{err}"
        );
        assert!(!out.contains("kmsgfs-host-ring"), "the host ring: {out}");
        for old in &tags {
            assert!(
                !out.contains(old.as_str()),
                "another container's record: {out}"
            );
        }
        tags.push(t);
    }
    let fd = support::open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    let host = support::drain(fd);
    support::close_raw(fd);
    assert!(host
        .iter()
        .any(|r| support::text_of(r) == "kmsgfs-host-ring-record-not-for-containers"));
}

#[test]
fn ctr_task_exec_gets_the_containers_ring_across_kill_9_and_proc_kmsg_is_never_the_hosts() {
    if !(support::require_root()
        && support::require_tool("busybox")
        && support::require_tool("containerd")
        && support::require_tool("ctr"))
    {
        return;
    }
    let host = support::seccomp::HostTag::write("ctr-host-log");
    let scratch = TempDir::new("ctr-holder");
    let holder = support::Holder::start(scratch.path());
    let sock = holder.socket.display().to_string();
    let args = ["--devkmsg", "on", "--holder-socket", sock.as_str()];
    let mut d = support::Daemon::start_with(support::Options::args(&args));
    let c = Containerd::start();
    let recipe = prepare(&d, &c);
    // Two containers side by side, each waiting for its stop file.
    let mut ids = Vec::new();
    for n in 0..2 {
        let t = unique_tag(&format!("ctr-exec-{n}"));
        let id = format!("kmsgfs-ctr-exec-{}-{n}", std::process::id());
        let script =
            format!("echo '<6>{t}' > /dev/kmsg; while [ ! -e /tmp/stop-{n} ]; do sleep 0.1; done");
        let o = recipe.run(&c, "-d", &id, &script);
        assert!(
            o.status.success(),
            "ctr run -d: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        ids.push((id, t));
    }
    // Once both wrote their record: `kill -9` of the daemon, a new one on the same holder.
    d.wait_container_rings(2);
    d.kill9();
    d.restart(support::Options::args(&args));
    for (n, (id, t)) in ids.iter().enumerate() {
        let other = &ids[1 - n].1;
        let deadline = Instant::now() + support::TIMEOUT;
        let out = loop {
            let o = c.ctr(&[
                "task",
                "exec",
                "--exec-id",
                &format!("e{n}"),
                id,
                "/bin/sh",
                "-c",
                "cat /dev/kmsg & sleep 0.5; kill $!; echo ===; dmesg; echo ===; \
                 cat /proc/kmsg & P=$!; sleep 0.5; kill $P 2>/dev/null; wait $P; echo rc=$?",
            ]);
            let out = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
            .replace("\r\n", "\n");
            // The container writes its record first; an exec may come before that.
            if out.contains(t.as_str()) || Instant::now() > deadline {
                break out;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let parts: Vec<&str> = out.split("===\n").collect();
        assert_eq!(parts.len(), 3, "{out}");
        assert_eq!(
            parts[0].matches(t.as_str()).count(),
            1,
            "exec: cat /dev/kmsg: {out}"
        );
        assert_eq!(
            parts[1].matches(t.as_str()).count(),
            1,
            "exec: busybox dmesg: {out}"
        );
        assert!(
            !out.contains(other.as_str()),
            "the other container's record: {out}"
        );
        assert!(!out.contains(&host.tag), "the host's log: {out}");
        assert!(
            parts[2].contains("Operation not permitted") && parts[2].contains("rc=1"),
            "/proc/kmsg without CAP_SYSLOG: {out}"
        );
        std::fs::write(recipe.rootfs.join(format!("tmp/stop-{n}")), b"").unwrap();
    }
    host.assert_host_not_cleared();
    drop(c);
    drop(d);
    drop(holder);
}
