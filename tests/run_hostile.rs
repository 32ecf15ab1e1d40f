//! Hostile container root inside `kmsgfs run` (root; real daemon, real `kmsgfs run`, util-linux
//! `umount`/`mount`/`mknod` from the host, which the container shares).
//!
//! Container root tries every way we know to get past the kmsgfs binds to the host's kernel log:
//! unmount (plain and lazy) `/dev/kmsg` and `/proc/kmsg`, move the `/dev/kmsg` mount away, bind
//! `/dev` non-recursively (which would show the device the bind covers), and `mknod` a 1:11
//! node; after each attempt it writes a record carrying the test's unique tag. The test then
//! reads the **host** `/dev/kmsg` non-destructively from the offset taken before the run
//! (`lseek(SEEK_END)`, then non-blocking reads until EAGAIN) and asserts the tag is not there,
//! while the container's ring (read through the daemon's `ns/<inode>/kmsg`) has it.
//!
//! With `--unshare user` the binds are locked (`MNT_LOCKED`: made in a mount namespace of the
//! host user namespace, then copied into the container's user namespace) and mknod of a device
//! is refused by the kernel; without it, CMD runs without CAP_SYS_ADMIN, CAP_MKNOD and the
//! other capabilities in `kmsgfs::cli::run::DROPPED_WITHOUT_USERNS`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support;
use crate::support::{close_raw, drain, lseek_raw, open_raw, require_root, require_tool, Daemon};

/// Bound for the container to reach its `written` line.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The attempts, each a name and a shell command. `$S` is a scratch directory of the test,
/// `$T` the tag, `$A` the daemon's agent socket. After each one the script writes
/// `<6>$T after-NAME` to `/dev/kmsg`.
const ATTACKS: [(&str, &str); 9] = [
    ("umount-dev-kmsg", "umount /dev/kmsg"),
    ("umount-lazy-dev-kmsg", "umount -l /dev/kmsg"),
    ("umount-proc-kmsg", "umount /proc/kmsg"),
    ("umount-lazy-proc-kmsg", "umount -l /proc/kmsg"),
    ("move-dev-kmsg", "mount --move /dev/kmsg $S/moved"),
    (
        "bind-dev-without-children",
        "mount --bind /dev $S/dev && echo \"<6>$T via-bound-dev\" > $S/dev/kmsg",
    ),
    (
        "mknod-1-11",
        "mknod $S/node c 1 11 && echo \"<6>$T via-mknod\" > $S/node",
    ),
    // The agent socket is covered in the container (docs/security.md T4): neither removing
    // the cover nor connecting may work. Connecting succeeds at the socket level even when the
    // agent then closes a foreign peer, so any reachable socket fails the test.
    ("umount-agent-socket", "umount \"$A\""),
    (
        "connect-agent-socket",
        "python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' \"$A\"",
    ),
];

/// The attacker: prints its network namespace, runs every attack and reports
/// `attack NAME: failed|succeeded`, writes a final record, prints `written` and waits for
/// stdin to close (so that the test can read its ring while the namespace lives).
fn script() -> String {
    let mut s = String::from(
        "echo net=$(readlink /proc/self/ns/net)\necho pid=$(readlink /proc/self/ns/pid)\n",
    );
    for (name, cmd) in ATTACKS {
        s.push_str(&format!(
            "if ( {cmd} ) 2>/dev/null; then echo 'attack {name}: succeeded'; \
             else echo 'attack {name}: failed'; fi\n\
             echo \"<6>$T after-{name}\" > /dev/kmsg 2>/dev/null\n"
        ));
    }
    s.push_str(
        "echo \"<6>$T final\" > /dev/kmsg\n\
         echo own-read=$(dd if=/dev/kmsg iflag=nonblock bs=8192 status=none | grep -c \"$T final\")\n\
         echo written\nread x\n",
    );
    s
}

/// A running `kmsgfs run`, killed and reaped on drop (a failing test leaves nothing behind).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A scratch directory with the attack targets; removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(tag);
        std::fs::create_dir_all(dir.join("dev")).unwrap();
        std::fs::write(dir.join("moved"), "").unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Nothing can be mounted here from the container (its mounts die with its namespace),
        // but a lazy detach is harmless if the test itself failed half-way.
        support::detach(&self.0.join("dev"));
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The host `/dev/kmsg`, opened non-blocking and positioned after its newest record.
struct HostLog(i32);

impl HostLog {
    fn open() -> HostLog {
        let fd = open_raw(Path::new("/dev/kmsg"), libc::O_RDONLY | libc::O_NONBLOCK)
            .unwrap_or_else(|e| panic!("open host /dev/kmsg: errno {e}"));
        lseek_raw(fd, 0, libc::SEEK_END).expect("lseek(host /dev/kmsg, SEEK_END)");
        HostLog(fd)
    }

    /// Host records logged since `open` that contain `tag` (other tests write there too).
    fn records_with(&self, tag: &str) -> Vec<String> {
        drain(self.0)
            .into_iter()
            .filter(|r| r.contains(tag))
            .collect()
    }
}

impl Drop for HostLog {
    fn drop(&mut self) {
        close_raw(self.0);
    }
}

/// Reads `child`'s stdout lines until `written` (or EOF / TIMEOUT).
fn lines_until_written(child: &mut Child) -> Vec<String> {
    let out = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let done = line == "written";
            if tx.send(line).is_err() || done {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(TIMEOUT) {
        let done = line == "written";
        lines.push(line);
        if done {
            break;
        }
    }
    lines
}

/// The daemon's syslog(2) agent socket (`DIR.seccomp.sock`), which must exist for the
/// socket attacks to mean anything.
fn agent_socket(d: &Daemon) -> PathBuf {
    let mut p = d.dir().as_os_str().to_owned();
    p.push(".seccomp.sock");
    let p = PathBuf::from(p);
    assert!(
        std::fs::symlink_metadata(&p).is_ok(),
        "the daemon has no agent socket at {}",
        p.display()
    );
    p
}

fn attack_container(unshare: Option<&str>) {
    let d = Daemon::start_args(&["--devkmsg", "on"]);
    let tag = support::unique_tag(&format!(
        "hostile-{}",
        unshare.unwrap_or("default").replace(',', "-")
    ));
    let scratch = Scratch::new(&tag);
    let host = HostLog::open();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kmsgfs"));
    cmd.arg("run").arg("--mount").arg(d.dir());
    if let Some(list) = unshare {
        cmd.arg("--unshare").arg(list);
    }
    let child = cmd
        .arg("--")
        .args(["sh", "-c", &script()])
        .env("T", &tag)
        .env("S", &scratch.0)
        .env("A", agent_socket(&d))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kmsgfs run");
    let mut running = Running(child);
    let lines = lines_until_written(&mut running.0);
    let ctx = format!(
        "--unshare {unshare:?}, container printed:\n{}",
        lines.join("\n")
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("written"),
        "the attacker did not finish\n{ctx}"
    );

    // The container's ring, through the daemon's file, while the namespace is alive.
    // The daemon keys rings on the network namespace, or on the pid namespace for a container
    // that shares the host's (docs/security.md §3).
    let inode = |kind: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{kind}={kind}:[")))
            .and_then(|l| l.strip_suffix(']'))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {kind}= line\n{ctx}"))
    };
    let own_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let net = inode("net");
    let ns = if own_net.to_string_lossy() == format!("net:[{net}]") {
        inode("pid")
    } else {
        net
    };
    let ring_path = d.ns_dir().join(&ns).join("kmsg");
    let fd = open_raw(&ring_path, libc::O_RDONLY | libc::O_NONBLOCK)
        .unwrap_or_else(|e| panic!("open {}: errno {e}\n{ctx}", ring_path.display()));
    let ring = drain(fd);
    close_raw(fd);
    let host_hits = host.records_with(&tag);

    // Let the container end and collect its stderr for the messages.
    let mut stdin: Option<ChildStdin> = running.0.stdin.take();
    if let Some(s) = stdin.as_mut() {
        let _ = s.write_all(b"\n");
    }
    drop(stdin);
    let _ = running.0.wait();
    let mut err = String::new();
    if let Some(mut e) = running.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    let ctx = format!("{ctx}\nstderr:\n{err}");

    assert!(
        host_hits.is_empty(),
        "container records reached the HOST kernel log: {host_hits:?}\n{ctx}"
    );
    for (name, _) in ATTACKS {
        assert!(
            lines.contains(&format!("attack {name}: failed")),
            "attack {name} was not refused\n{ctx}"
        );
    }
    assert!(
        lines.contains(&"own-read=1".to_string()),
        "container root could not read its own record from its /dev/kmsg\n{ctx}"
    );
    let final_line = format!("{tag} final");
    assert!(
        ring.iter().any(|r| support::text_of(r) == final_line),
        "the container's ring lacks its record `{final_line}`: {ring:?}\n{ctx}"
    );
}

#[test]
fn user_namespaced_root_cannot_get_past_the_kmsg_binds_to_the_host_log() {
    if !(require_root()
        && require_tool("umount")
        && require_tool("mknod")
        && require_tool("python3"))
    {
        return;
    }
    attack_container(Some("user,net,pid"));
}

#[test]
fn user_namespace_without_pid_namespace_is_locked_too() {
    if !(require_root()
        && require_tool("umount")
        && require_tool("mknod")
        && require_tool("python3"))
    {
        return;
    }
    attack_container(Some("user,net"));
}

#[test]
fn user_namespace_with_a_pid_ring_is_locked_and_keeps_its_own_ring() {
    if !(require_root()
        && require_tool("umount")
        && require_tool("mknod")
        && require_tool("python3"))
    {
        return;
    }
    // Shares the host's network namespace: the ring is the pid namespace's, which must be
    // owned by the container's user namespace for container root to read it.
    attack_container(Some("user,pid"));
}

#[test]
fn root_of_the_default_namespaces_cannot_get_past_the_kmsg_binds_to_the_host_log() {
    if !(require_root()
        && require_tool("umount")
        && require_tool("mknod")
        && require_tool("python3"))
    {
        return;
    }
    attack_container(None);
}
