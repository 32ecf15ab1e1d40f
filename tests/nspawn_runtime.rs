//! systemd-nspawn with the recipe of `docs/deploy/nspawn/README.md`: `--bind=DIR/kmsg:/dev/kmsg
//! --private-network`, default capabilities. Two containers side by side each see only their
//! own records in `cat /dev/kmsg`; nspawn has no seccomp-notify hook, so `syslog(2)` reaches
//! the kernel and, without CAP_SYSLOG (nspawn's default), gets EPERM: busybox `dmesg` fails and
//! never prints the host log. Root only; installs nothing (CI installs systemd-container).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support;
use crate::support::seccomp::{unique_tag, wait_output, TempDir};

fn rootfs(dir: &Path) -> std::path::PathBuf {
    let r = dir.join("rootfs");
    support::seccomp::busybox_rootfs(&r, &["sh", "dmesg", "cat", "sleep", "kill", "echo"]);
    std::fs::create_dir_all(r.join("usr/lib")).unwrap();
    // nspawn wants an os-release to accept the directory as an OS tree.
    std::fs::write(r.join("etc/os-release"), "ID=kmsgfs-test\n").unwrap();
    r
}

/// The recipe: `systemd-nspawn --private-network --bind=KMSG:/dev/kmsg -D ROOT sh -c SCRIPT`.
fn nspawn(root: &Path, kmsg: &Path, script: &str) -> Command {
    let mut c = Command::new("systemd-nspawn");
    // No machined, no scope of its own: this machine's tests run without systemd as PID 1.
    c.args([
        "--keep-unit",
        "--register=no",
        "--quiet",
        "--private-network",
        "-D",
    ])
    .arg(root)
    .arg(format!("--bind={}:/dev/kmsg", kmsg.display()))
    .args(["/bin/sh", "-c", script]);
    c
}

#[test]
fn nspawn_containers_see_only_their_own_dev_kmsg_and_syslog_is_eperm() {
    if !(support::require_root()
        && support::require_tool("busybox")
        && support::require_tool("systemd-nspawn"))
    {
        return;
    }
    let d = support::Daemon::start_args(&["--devkmsg", "on"]);
    d.feed(6, "kmsgfs-host-ring-record-not-for-containers");
    let mut tags: Vec<String> = Vec::new();
    for n in 0..2 {
        let dir = TempDir::new(&format!("nspawn-{n}"));
        let root = rootfs(dir.path());
        let t = unique_tag(&format!("nspawn-{n}"));
        let child = nspawn(
            &root,
            &d.kmsg(),
            &format!(
                "echo '<6>{t}' > /dev/kmsg; cat /dev/kmsg & sleep 0.5; kill $!; \
                 /usr/bin/dmesg; echo urc=$?; echo ===; dmesg; echo rc=$?; \
                 /usr/bin/dmesg -S; echo src=$?; /usr/bin/dmesg -C; echo Crc=$?"
            ),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn systemd-nspawn");
        let o = wait_output(child, Duration::from_secs(60));
        // nspawn may relay through a pty, which turns "\n" into "\r\n".
        let out = String::from_utf8_lossy(&o.stdout).replace("\r\n", "\n");
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let (file, sys) = out
            .split_once("===\n")
            .unwrap_or_else(|| panic!("{out}\n{err}"));
        // `cat /dev/kmsg` and util-linux `dmesg` (which reads the file) show the record.
        assert_eq!(
            file.matches(&t).count(),
            2,
            "cat /dev/kmsg, /usr/bin/dmesg: {out}\n{err}"
        );
        assert!(file.contains("urc=0"), "/usr/bin/dmesg: {out}\n{err}");
        for old in &tags {
            assert!(
                !out.contains(old.as_str()),
                "another container's record: {out}"
            );
        }
        assert!(!out.contains("kmsgfs-host-ring"), "the host ring: {out}");
        assert!(
            // nspawn passes the container's stderr through its own stdout.
            !sys.contains(&t)
                && ["rc=1", "src=1", "Crc=1"]
                    .iter()
                    .all(|r| sys.lines().any(|l| l == *r))
                && format!("{sys}{err}").contains("Operation not permitted"),
            "busybox dmesg, dmesg -S, dmesg -C (syslog(2), no CAP_SYSLOG) must fail with EPERM: \
             {out}\n{err}"
        );
        tags.push(t);
    }
}

/// Ends an nspawn container whose script waits for the file `.0`.
struct Stop(std::path::PathBuf, Option<std::process::Child>);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, b"");
        if let Some(c) = self.1.take() {
            let _ = wait_output(c, Duration::from_secs(30));
        }
    }
}

/// nspawn has no exec command without machined; `nsenter` into the container's init is what
/// an operator uses. It enters the container's mount namespace, so it opens the same bind and
/// the same ring. It keeps the caller's capabilities, so `syslog(2)` would reach the host's
/// log: the recipe drops CAP_SYSLOG from the bounding set first (`setpriv`), and then it gets
/// EPERM like the container. The container's file and ring survive `kill -9` of the daemon
/// (with the holder) in between.
#[test]
fn nsenter_into_an_nspawn_container_gets_its_ring_across_kill_9_of_the_daemon() {
    if !(support::require_root()
        && support::require_tool("busybox")
        && support::require_tool("systemd-nspawn")
        && support::require_tool("nsenter")
        && support::require_tool("setpriv"))
    {
        return;
    }
    let host = support::seccomp::HostTag::write("nspawn-host-log");
    let dir = TempDir::new("nspawn-exec");
    let holder = support::Holder::start(dir.path());
    let sock = holder.socket.display().to_string();
    let args = ["--devkmsg", "on", "--holder-socket", sock.as_str()];
    let mut d = support::Daemon::start_with(support::Options::args(&args));
    let root = rootfs(dir.path());
    let t = unique_tag("nspawn-exec");
    let child = nspawn(
        &root,
        &d.kmsg(),
        &format!("echo '<6>{t}' > /dev/kmsg; while [ ! -e /stop ]; do sleep 0.1; done"),
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn systemd-nspawn");
    // Stopped also when an assertion fails (nspawn mounts a tmpfs on /tmp, hence `/stop`).
    let guard = Stop(root.join("stop"), Some(child));
    let child_pid = guard.1.as_ref().unwrap().id();
    // Once the container wrote its record: `kill -9` of the daemon, a new one on the holder.
    d.wait_container_rings(1);
    d.kill9();
    d.restart(support::Options::args(&args));
    let own_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let deadline = std::time::Instant::now() + support::TIMEOUT;
    let out = loop {
        // The container's init: the first descendant of nspawn in another network namespace.
        let leader = support::descendants(child_pid)
            .into_iter()
            .find(|p| std::fs::read_link(format!("/proc/{p}/ns/net")).is_ok_and(|n| n != own_net));
        if let Some(pid) = leader {
            let o = Command::new("setpriv")
                .args([
                    "--bounding-set",
                    "-syslog",
                    "--inh-caps",
                    "-syslog",
                    "nsenter",
                    "-t",
                ])
                .arg(pid.to_string())
                .args(["-m", "-n", "-p", "-u", "-i", "-r", "-w", "/bin/sh", "-c"])
                .arg("cat /dev/kmsg & sleep 0.5; kill $!; echo ===; dmesg; echo rc=$?")
                .stdin(Stdio::null())
                .output()
                .expect("run setpriv nsenter");
            let out = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            if out.contains(&t) {
                break out;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no nsenter output with the container's record"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(guard);
    let (file, sys) = out.split_once("===\n").unwrap_or_else(|| panic!("{out}"));
    assert_eq!(file.matches(&t).count(), 1, "cat /dev/kmsg: {out}");
    assert!(!out.contains(&host.tag), "the host's log: {out}");
    assert!(
        sys.contains("rc=1") && sys.contains("Operation not permitted"),
        "busybox dmesg without CAP_SYSLOG: {out}"
    );
    host.assert_host_not_cleared();
    drop(d);
    drop(holder);
}
