//! `kmsgfs run` on its own, with a plain directory as `--mount`: the "kmsgfs files" are regular
//! files named `kmsg` and `proc-kmsg`, and runs use `--no-seccomp`, so these tests need no
//! daemon (tests/serve_syslog.rs runs against the real one). They check the launcher's contract: what
//! `/dev/kmsg` and `/proc/kmsg` are inside, which namespaces are new, the exit status, signal
//! forwarding and clean-up. They run the real binary as root.

use crate::support;
use crate::support::require_root;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Generous bound for anything that should take milliseconds.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A temporary `--mount` directory holding regular files `kmsg` and `proc-kmsg`; removed on
/// drop.
struct FakeMount {
    dir: PathBuf,
    content: String,
    proc_content: String,
}

impl FakeMount {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let tag = support::unique_tag("run");
        let dir = std::env::temp_dir().join(format!(
            "kmsgfs-run-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let content = format!("6,1,1,-;{tag} fake record\n");
        std::fs::write(dir.join("kmsg"), &content).unwrap();
        let proc_content = format!("<6>[    1.000000] {tag} fake proc record\n");
        std::fs::write(dir.join("proc-kmsg"), &proc_content).unwrap();
        FakeMount {
            dir,
            content,
            proc_content,
        }
    }
}

impl Drop for FakeMount {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn kmsgfs_run(mount: &Path, unshare: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kmsgfs"));
    cmd.arg("run").arg("--mount").arg(mount);
    if let Some(list) = unshare {
        cmd.arg("--unshare").arg(list);
    }
    cmd.arg("--no-seccomp").arg("--");
    cmd
}

/// Runs `script` with `sh -c` under `kmsgfs run` and returns its output (bounded by TIMEOUT).
fn run_sh(mount: &Path, unshare: Option<&str>, script: &str) -> Output {
    let child = kmsgfs_run(mount, unshare)
        .args(["sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kmsgfs run");
    let out = wait_output(child);
    eprintln!(
        "--- {script}\nstatus {:?}\nstdout {}\nstderr {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `wait_with_output` with a timeout: kills the child and panics if it takes longer.
fn wait_output(child: Child) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out.expect("wait for kmsgfs run"),
        Err(_) => {
            // SAFETY: kill takes no pointers; the pid is our unreaped child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("kmsgfs run (pid {pid}) did not finish within {TIMEOUT:?}");
        }
    }
}

fn wait_status(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("child {} did not exit within {TIMEOUT:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn own_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// `kind=link` lines printed inside for the given namespace kinds.
fn ns_script(kinds: &[&str]) -> String {
    kinds
        .iter()
        .map(|k| format!("echo {k}=$(readlink /proc/self/ns/{k});"))
        .collect()
}

fn parse_ns(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn run_binds_mount_kmsg_over_dev_kmsg() {
    if !require_root() {
        return;
    }
    let m = FakeMount::new();
    let out = run_sh(&m.dir, None, "cat /dev/kmsg");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), m.content);
    // The host's /dev/kmsg is untouched: still the character device 1:11.
    let meta = std::fs::metadata("/dev/kmsg").unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(meta.file_type().is_char_device());
    assert_eq!(meta.rdev(), libc::makedev(1, 11));
}

#[test]
fn run_binds_dir_proc_kmsg_read_only_over_proc_kmsg() {
    if !require_root() {
        return;
    }
    let m = FakeMount::new();
    // Read /proc/kmsg only after checking that it is the regular test file (the real one is
    // empty per stat and would consume the host's syslog cursor).
    let script = "\
        size=$(stat -c %s /proc/kmsg); echo size=$size; \
        [ \"$size\" != 0 ] || exit 99; \
        cat /proc/kmsg; \
        echo mount=$(awk '$5 == \"/proc/kmsg\" { print $6 }' /proc/self/mountinfo | cut -d, -f1)";
    for unshare in [None, Some("net"), Some("user,pid")] {
        let out = run_sh(&m.dir, unshare, script);
        assert_eq!(out.status.code(), Some(0), "{unshare:?}: {}", stderr(&out));
        assert_eq!(
            stdout(&out),
            format!(
                "size={}\n{}mount=ro\n",
                m.proc_content.len(),
                m.proc_content
            ),
            "{unshare:?}"
        );
    }
}

#[test]
fn run_fails_clearly_when_the_seccomp_socket_is_missing() {
    if !require_root() {
        return;
    }
    let m = FakeMount::new();
    let child = Command::new(env!("CARGO_BIN_EXE_kmsgfs"))
        .arg("run")
        .arg("--mount")
        .arg(&m.dir)
        .args(["--", "sh", "-c", "echo must-not-run"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let sock = format!("{}.seccomp.sock", m.dir.display());
    assert!(
        stderr(&out).contains(&format!("{sock} does not exist"))
            && stderr(&out).contains("--no-seccomp"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn run_creates_new_net_uts_ipc_pid_mnt_namespaces_by_default() {
    if !require_root() {
        return;
    }
    let m = FakeMount::new();
    let kinds = ["net", "uts", "ipc", "pid", "mnt", "user"];
    let out = run_sh(&m.dir, None, &ns_script(&kinds));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let inside = parse_ns(&stdout(&out));
    assert_eq!(inside.len(), kinds.len());
    for (kind, link) in inside {
        if kind == "user" {
            assert_eq!(link, own_ns(&kind), "user namespace is not new by default");
        } else {
            assert_ne!(link, own_ns(&kind), "{kind} namespace should be new");
        }
    }
}

#[test]
fn run_unshare_net_only_keeps_the_other_namespaces() {
    if !require_root() {
        return;
    }
    let m = FakeMount::new();
    let kinds = ["net", "uts", "ipc", "pid", "mnt", "user"];
    let out = run_sh(&m.dir, Some("net"), &ns_script(&kinds));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (kind, link) in parse_ns(&stdout(&out)) {
        let new = kind == "net" || kind == "mnt";
        assert_eq!(link != own_ns(&kind), new, "{kind}");
    }
}

#[test]
fn run_cmd_is_pid_2_under_init_with_a_fresh_proc() {
    if !require_root() {
        return;
    }
    let m = FakeMount::new();
    let script = "echo pid=$$; echo init=$(tr '\\0' ' ' </proc/1/cmdline | cut -d' ' -f2); \
                  echo procs=$(ls /proc | grep -c '^[0-9]*$')";
    let out = run_sh(&m.dir, None, script);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "pid=2");
    assert_eq!(lines[1], "init=run", "pid 1 is `kmsgfs run`'s init");
    // Only init, sh and the pipeline's processes: the host's processes are not visible.
    let procs: usize = lines[2].trim_start_matches("procs=").parse().unwrap();
    assert!(procs <= 6, "fresh /proc shows {procs} processes");
}

#[test]
fn run_unshare_user_maps_container_root_to_caller() {
    if !require_root() {
        return;
    }
    let m = FakeMount::new();
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let script = "echo uid_map=$(awk '{print $1, $2, $3}' /proc/self/uid_map); \
                  echo gid_map=$(awk '{print $1, $2, $3}' /proc/self/gid_map); \
                  echo setgroups=$(cat /proc/self/setgroups); echo id=$(id -u):$(id -g); \
                  echo user=$(readlink /proc/self/ns/user); cat /dev/kmsg";
    let out = run_sh(&m.dir, Some("user,net,pid"), script);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap(), format!("uid_map=0 {uid} 1"));
    assert_eq!(lines.next().unwrap(), format!("gid_map=0 {gid} 1"));
    assert_eq!(lines.next().unwrap(), "setgroups=deny");
    assert_eq!(lines.next().unwrap(), "id=0:0");
    assert_ne!(
        lines.next().unwrap(),
        format!("user={}", own_ns("user")),
        "user namespace should be new"
    );
    assert_eq!(lines.collect::<Vec<_>>().join("\n") + "\n", m.content);
}

#[test]
fn run_propagates_exit_status() {
    if !require_root() {
        return;
    }
    let m = FakeMount::new();
    for code in [0, 1, 42, 125, 255] {
        let out = run_sh(&m.dir, None, &format!("exit {code}"));
        assert_eq!(out.status.code(), Some(code));
    }
}

#[test]
fn run_reports_death_by_signal_as_128_plus_signal() {
    if !require_root() {
        return;
    }
    let m = FakeMount::new();
    for (sig, name) in [
        (libc::SIGINT, "INT"),
        (libc::SIGTERM, "TERM"),
        (libc::SIGKILL, "KILL"),
        (libc::SIGHUP, "HUP"),
    ] {
        // `; true` keeps dash from treating kill as the last command and exec-optimising.
        let out = run_sh(&m.dir, None, &format!("kill -{name} $$; sleep 5; true"));
        assert_eq!(out.status.code(), Some(128 + sig), "SIG{name}");
    }
}

/// A running `kmsgfs run`, killed and reaped on drop so that a failing test leaves nothing
/// behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `script` under `kmsgfs run` and waits until it prints `ready`.
fn spawn_ready(mount: &Path, script: &str) -> (Running, BufReader<std::process::ChildStdout>) {
    let mut child = kmsgfs_run(mount, None)
        .args(["sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let child = Running(child);
    assert_eq!(line, "ready\n");
    (child, out)
}

#[test]
fn run_forwards_sigint_sigterm_sighup_to_cmd() {
    if !require_root() {
        return;
    }
    let m = FakeMount::new();
    for (sig, name) in [
        (libc::SIGINT, "INT"),
        (libc::SIGTERM, "TERM"),
        (libc::SIGHUP, "HUP"),
    ] {
        let script = format!(
            "trap 'echo got-{name}; exit 7' {name}; echo ready; while :; do sleep 0.05; done"
        );
        let (mut child, mut out) = spawn_ready(&m.dir, &script);
        let start = Instant::now();
        // SAFETY: kill takes no pointers; the pid is our unreaped child.
        assert_eq!(unsafe { libc::kill(child.0.id() as i32, sig) }, 0);
        let status = wait_status(&mut child.0);
        eprintln!("SIG{name}: handled and exited after {:?}", start.elapsed());
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        assert_eq!(rest, format!("got-{name}\n"));
        assert_eq!(status.code(), Some(7), "SIG{name}");
    }
    // Without a handler, the signal's default action ends CMD (it is not pid 1, so it is not
    // immune), and `run` reports 128 + signal.
    let (mut child, _out) = spawn_ready(&m.dir, "echo ready; exec sleep 1000");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(wait_status(&mut child.0).code(), Some(128 + libc::SIGTERM));
}

#[test]
fn run_killed_with_sigkill_takes_the_namespace_down() {
    if !require_root() {
        return;
    }
    let m = FakeMount::new();
    let (mut child, _out) = spawn_ready(&m.dir, "sleep 1000 & echo ready; wait");
    let inside = support::descendants(child.0.id());
    assert!(inside.len() >= 3, "init, sh and sleep: {inside:?}");
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let start = Instant::now();
    for pid in inside {
        while Path::new(&format!("/proc/{pid}")).exists() {
            // A zombie whose parent is gone is reaped at once; a live process is a leak.
            assert!(
                start.elapsed() < TIMEOUT,
                "pid {pid} survived `kmsgfs run` being killed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    eprintln!("namespace gone {:?} after SIGKILL", start.elapsed());
}

#[test]
fn run_init_reaps_orphans() {
    if !require_root() {
        return;
    }
    let m = FakeMount::new();
    // The subshell exits at once, orphaning its `sleep`: it must be re-parented to init (sh's
    // parent), and reaped there when it exits, leaving no zombie.
    let script = "orphan=$( (sleep 0.3 >/dev/null & echo $!) ); sleep 0.1; \
                  echo parent_is_init=$([ \"$(cut -d' ' -f4 /proc/$orphan/stat)\" = $PPID ] && echo yes); \
                  sleep 1; echo gone=$([ -e /proc/$orphan ] && echo no || echo yes)";
    for unshare in [None, Some("net")] {
        let out = run_sh(&m.dir, unshare, script);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "parent_is_init=yes\ngone=yes\n",
            "--unshare {unshare:?}"
        );
    }
}

#[test]
fn run_fails_clearly_when_dir_has_no_kmsg() {
    if !require_root() {
        return;
    }
    let dir =
        std::env::temp_dir().join(format!("kmsgfs-run-nothing-{}", support::unique_tag("run")));
    let out = run_sh(&dir, None, "echo must-not-run");
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains(&format!("is kmsgfs serve running on {}?", dir.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn run_reports_a_missing_command_with_127() {
    if !require_root() {
        return;
    }
    let m = FakeMount::new();
    let out = wait_output(
        kmsgfs_run(&m.dir, None)
            .arg("/nonexistent/kmsgfs-no-such-command")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("cannot execute `/nonexistent/kmsgfs-no-such-command`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn run_rejects_an_unknown_namespace() {
    let m = FakeMount::new();
    let out = run_sh(&m.dir, Some("net,bogus"), "true");
    assert_eq!(out.status.code(), Some(2), "clap's usage error status");
    assert!(
        stderr(&out).contains("unknown namespace `bogus`"),
        "{}",
        stderr(&out)
    );
}
