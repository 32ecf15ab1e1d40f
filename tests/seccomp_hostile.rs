//! Hostile callers of the `syslog(2)` agent (docs/security.md T3, T4, T6): a buffer that faults into a
//! never-answering FUSE file, a caller that remaps its buffer while the reply is being written,
//! kernel-space buffer addresses, foreign peers and floods on the agent socket, and `crun exec`
//! / `runc exec` whose listener names a host process. Root only; needs `cc`, `python3`, and
//! for some tests `unshare`, `busybox`, `runc`, `crun`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::seccomp::hostile::{compile_c, line_channel, StallFuse};
use crate::support::seccomp::oci::{Bundle, Runtime};
use crate::support::seccomp::*;
use kmsgfs::frontends::proc_kmsg::cursor_lock;
use kmsgfs::frontends::seccomp::{AgentHooks, AgentOptions, ContainerProcessState};
use kmsgfs::syslog::action;

/// The attacker and the victim in one program.
///
/// * `attacker FILE direct`: `syslog(READ_ALL)` into a `MAP_PRIVATE` mapping of FILE.
/// * `attacker FILE remap`: `syslog(READ_ALL)` into anonymous memory; a second thread maps FILE
///   over that buffer (`MAP_FIXED`) when a byte arrives on stdin and prints `REMAPPED`.
/// * `victim - victim`: `SIZE_BUFFER`, then `READ_ALL` into heap memory, printing both.
///
/// Each prints `READY` before its call and `RESULT <ret> <errno>` after.
const PROG: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#define LEN 8192
static char *buf;
static int fd = -1;
static void *remapper(void *arg) {
    char c;
    (void)arg;
    if (read(0, &c, 1) != 1) return NULL;
    void *p = mmap(buf, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, 0);
    printf("REMAPPED %d\n", p == buf);
    fflush(stdout);
    return NULL;
}
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    if (!strcmp(argv[2], "victim")) {
        long size = syscall(SYS_syslog, 10, 0, 0);
        char *b = malloc(1 << 16);
        long r = syscall(SYS_syslog, 3, b, 1 << 16);
        printf("SIZE %ld\nRESULT %ld %d\n", size, r, r < 0 ? errno : 0);
        if (r > 0) fwrite(b, 1, r, stdout);
        return 0;
    }
    fd = open(argv[1], O_RDONLY);
    if (fd < 0) { perror("open"); return 3; }
    if (!strcmp(argv[2], "direct")) {
        buf = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    } else {
        pthread_t t;
        buf = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        pthread_create(&t, NULL, remapper, NULL);
    }
    if (buf == MAP_FAILED) { perror("mmap"); return 4; }
    printf("READY\n");
    fflush(stdout);
    long r = syscall(SYS_syslog, 3, buf, LEN);
    printf("RESULT %ld %d\n", r, r < 0 ? errno : 0);
    fflush(stdout);
    return 0;
}
"#;

fn ready(tools: &[&str]) -> bool {
    require_root() && tools.iter().all(|t| require_tool(t))
}

/// A filtered attacker whose stdout arrives line by line; SIGKILLed on drop.
struct Attacker {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Attacker {
    fn spawn(h: &Harness, prog: &Path, file: &Path, mode: &str) -> Attacker {
        let mut cmd = Command::new(prog);
        cmd.arg(file).arg(mode);
        let (mut child, listener) = spawn_filtered_io(cmd, true);
        send_listener(&h.socket(), child.id(), listener.as_fd(), BTreeMap::new())
            .expect("hand the attacker's listener to the agent");
        let lines = line_channel(child.stdout.take().unwrap());
        let stdin = child.stdin.take();
        Attacker {
            child,
            stdin,
            lines,
        }
    }

    fn expect_line(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(_) => panic!("the attacker printed no {prefix:?} line within {timeout:?}"),
            }
        }
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

use kmsgfs::frontends::seccomp::send_listener;

/// Whether the ring's cursor lock can be taken within 1 s. An agent stuck in a write would hold
/// it for the whole attack (several seconds); one `try_lock` at a single instant could instead
/// meet an answer that is just finishing on a loaded machine.
fn cursor_lock_is_free_within_a_second(ring: &Arc<kmsgfs::ring::Ring>) -> bool {
    let lock = cursor_lock(ring);
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        if lock.try_lock().is_some() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Run the victim under its own listener; it must be answered within 1 s with the ring.
fn victim_answered_within_a_second(h: &Harness, prog: &Path, tag: &str) {
    let t0 = Instant::now();
    let child = h.spawn(&[prog.to_str().unwrap(), "-", "victim"], BTreeMap::new());
    let o = wait_output(child, Duration::from_secs(1));
    let took = t0.elapsed();
    let out = ok(&o, "the victim");
    assert!(took < Duration::from_secs(1), "victim took {took:?}: {out}");
    assert!(
        out.contains("SIZE 65536"),
        "SIZE_BUFFER of the victim: {out}"
    );
    assert!(out.contains(tag), "READ_ALL of the victim: {out}");
}

/// Attack 1: the attacker's buffer is a private mapping of a FUSE file whose daemon never
/// answers. The agent must refuse (EFAULT) without touching it, answer another container's
/// syslog(2) within 1 s, and never hold the ring's cursor lock meanwhile.
#[test]
fn a1_buffer_in_a_stalled_fuse_mapping_gets_efault_and_stalls_nobody() {
    if !ready(&["cc", "python3"]) {
        return;
    }
    let tag = unique_tag("ring");
    let h = Harness::new(&[format!("{tag} one")]);
    let dir = TempDir::new("hostile-c");
    let prog = compile_c(dir.path(), "hostile", PROG);
    let mut fuse = StallFuse::start();
    let attacker = Attacker::spawn(&h, &prog, &fuse.file(), "direct");
    attacker.expect_line("READY", TIMEOUT);
    h.wait_stats("the attacker's call", |s| s.received >= 1);
    // Give a stalling agent time to get stuck in the write.
    std::thread::sleep(Duration::from_millis(300));

    victim_answered_within_a_second(&h, &prog, &tag);
    assert!(
        cursor_lock_is_free_within_a_second(&h.ring),
        "the ring's cursor lock is held (the FUSE /proc/kmsg reader would block)"
    );
    let r = attacker.expect_line("RESULT", Duration::from_secs(5));
    assert_eq!(r, format!("RESULT -1 {}", libc::EFAULT), "attacker");
    assert!(
        !fuse.wait_parked_read(Duration::from_millis(100)),
        "the agent faulted into the FUSE file"
    );
    assert!(h.agent.stats().faults >= 1);
    drop(attacker);
}

/// Attack 1, time-of-check to time-of-use: the attacker's buffer is anonymous when checked
/// and a FUSE mapping when written (remapped from another thread while the writer waits in
/// the `writing` hook). The write then hangs in the FUSE daemon, but only on a writer thread:
/// other calls on the same ring are answered within 1 s and the cursor lock is free; when the
/// FUSE daemon dies the attacker gets EFAULT.
#[test]
fn a1_remap_between_check_and_write_stalls_only_a_writer_thread() {
    if !ready(&["cc", "python3"]) {
        return;
    }
    struct Gate {
        attacker: Mutex<Option<u32>>,
        reached: Mutex<Option<mpsc::Sender<()>>>,
        go: Mutex<Option<mpsc::Receiver<()>>>,
    }
    impl AgentHooks for Gate {
        fn writing(&self, tid: u32, _action: i32) {
            // The attacker calls as soon as it runs, possibly before the test has named its
            // pid here: wait for the name (no other caller exists before the victim, which
            // starts after it is set), so the gate cannot miss the attacker's write.
            let deadline = Instant::now() + TIMEOUT;
            let attacker = loop {
                if let Some(pid) = *self.attacker.lock().unwrap() {
                    break pid;
                }
                if Instant::now() >= deadline {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            if attacker != tid {
                return;
            }
            if let Some(tx) = self.reached.lock().unwrap().take() {
                let _ = tx.send(());
            }
            if let Some(rx) = self.go.lock().unwrap().take() {
                let _ = rx.recv_timeout(TIMEOUT);
            }
        }
    }
    let (reached_tx, reached_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    let gate = Arc::new(Gate {
        attacker: Mutex::new(None),
        reached: Mutex::new(Some(reached_tx)),
        go: Mutex::new(Some(go_rx)),
    });
    let tag = unique_tag("ring");
    let h = Harness::with(
        ring_with(&[format!("{tag} one")]),
        true,
        AgentOptions {
            hooks: Some(gate.clone()),
            ..AgentOptions::default()
        },
    );
    let dir = TempDir::new("hostile-c");
    let prog = compile_c(dir.path(), "hostile", PROG);
    let mut fuse = StallFuse::start();
    let mut attacker = Attacker::spawn(&h, &prog, &fuse.file(), "remap");
    *gate.attacker.lock().unwrap() = Some(attacker.child.id());
    attacker.expect_line("READY", TIMEOUT);
    reached_rx
        .recv_timeout(TIMEOUT)
        .expect("the writer reached the hook");
    // Now, after the check: map the FUSE file over the buffer.
    attacker.stdin.as_mut().unwrap().write_all(b"x").unwrap();
    assert_eq!(attacker.expect_line("REMAPPED", TIMEOUT), "REMAPPED 1");
    go_tx.send(()).unwrap();
    assert!(
        fuse.wait_parked_read(TIMEOUT),
        "the write did not reach the FUSE file"
    );

    victim_answered_within_a_second(&h, &prog, &tag);
    victim_answered_within_a_second(&h, &prog, &tag);
    assert!(
        cursor_lock_is_free_within_a_second(&h.ring),
        "the cursor lock is held across the stalled write"
    );
    // The FUSE daemon dies: the stuck write fails and the attacker gets EFAULT.
    fuse.kill();
    let r = attacker.expect_line("RESULT", TIMEOUT);
    assert_eq!(r, format!("RESULT -1 {}", libc::EFAULT), "attacker");
}

/// Attack 4: a buffer in kernel space (or running past the top of user space) is EFAULT, as
/// the kernel's `access_ok` makes it, even when there is nothing to copy; a user address
/// that is merely unmapped is not touched when there is nothing to copy.
#[test]
fn a4_kernel_space_buffer_is_efault_even_with_nothing_to_copy() {
    if !ready(&[]) {
        return;
    }
    let efault = -i64::from(libc::EFAULT);
    // The kernel itself (no filter; READ_ALL only reads the host log, it never clears it).
    assert_eq!(
        raw_syslog(action::READ_ALL, 0xffff_8000_0000_0000, 16),
        efault
    );
    let h = Harness::new(&[]); // an empty ring: nothing to copy
    let r = in_filtered_fork(&h, || {
        [
            raw_syslog(action::READ_ALL, 0xffff_8000_0000_0000, 16),
            raw_syslog(action::READ_CLEAR, 0x0000_8000_0000_0000, 16),
            raw_syslog(action::READ_ALL, 0x0000_7fff_ffff_f000 - 8, 16),
            raw_syslog(action::READ_ALL, 0x1000, 16),
        ]
    });
    assert_eq!(r, [efault, efault, efault, 0], "{r:?}");
}

/// Write `state` with one pipe fd from a process in new pid and user namespaces
/// (`unshare --user --map-root-user --pid --fork`): uid 0 there is uid 0 to SO_PEERCRED. A
/// refused connection may be closed before the message is sent (EPIPE): that is fine.
fn send_from_new_namespaces(socket: &Path, state: &ContainerProcessState) -> std::process::Output {
    let msg = serde_json::to_string(state).unwrap();
    let py = "import os, socket, sys\n\
              s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n\
              s.connect(sys.argv[1])\n\
              r, w = os.pipe()\n\
              try:\n    socket.send_fds(s, [sys.argv[2].encode()], [r])\n    s.recv(1)\n\
              except OSError:\n    pass\n\
              print('SENT', os.getpid())\n";
    Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--pid",
            "--fork",
            "python3",
            "-c",
            py,
        ])
        .arg(socket)
        .arg(msg)
        .output()
        .expect("run unshare")
}

/// Attack 2: container root (uid 0 in its own pid and user namespaces) connecting to the agent
/// socket is refused: the peer must share the agent's pid and user namespaces.
#[test]
fn a2_peer_in_new_pid_and_user_namespaces_is_refused() {
    if !ready(&["unshare", "python3"]) {
        return;
    }
    let h = Harness::new(&[]);
    let state = ContainerProcessState::for_process(1, "hostile", BTreeMap::new());
    let o = send_from_new_namespaces(&h.socket(), &state);
    assert!(stdout(&o).contains("SENT 1"), "{}", stderr(&o));
    h.wait_stats("the connection to be judged", |s| {
        s.rejected >= 1 || s.listeners_accepted >= 1
    });
    let s = h.agent.stats();
    assert_eq!(
        s.listeners_accepted, 0,
        "a container's listener was accepted"
    );
    assert!(s.rejected >= 1);
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let f = |n| {
        support::proc_stat_field(pid, n)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    f(14) + f(15)
}

/// Open `n` idle connections to `socket` (nonblocking connects, retried while the backlog is
/// full) and keep them.
fn flood(socket: &Path, n: usize) -> Vec<OwnedFd> {
    let mut flood: Vec<OwnedFd> = Vec::new();
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as u16;
    for (i, b) in socket.as_os_str().as_encoded_bytes().iter().enumerate() {
        addr.sun_path[i] = *b as libc::c_char;
    }
    let deadline = Instant::now() + TIMEOUT;
    while flood.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} connections",
            flood.len()
        );
        // SAFETY: socket has no memory preconditions.
        let s = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        assert!(s >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: a new fd owned by nobody else.
        let s = unsafe { OwnedFd::from_raw_fd(s) };
        // SAFETY: `addr` is a valid sockaddr_un of the length passed.
        let rc = unsafe {
            libc::connect(
                s.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as u32,
            )
        };
        if rc == 0 {
            flood.push(s);
        } else {
            // EAGAIN: the backlog is full; let the agent accept.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    flood
}

fn set_nofile(pid: u32, n: u64) {
    let limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: prlimit on a pid with a valid new limit and no old-limit pointer.
    let rc = unsafe {
        libc::prlimit(
            pid as i32,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit({pid}, NOFILE, {n})");
}

/// Flood the daemon with `n` connections; its fd count stays within `max_fds`, it uses little
/// CPU and logs little while the flood idles, and a runtime handing over a listener then (the
/// flood still connected) is served.
fn flood_round(d: &support::Daemon, n: usize, max_fds: usize) {
    let pid = d.pid().unwrap();
    let socket = kmsgfs::frontends::seccomp::default_socket_for(d.dir());
    let log_before = d.log_text().len();
    let held = flood(&socket, n);
    std::thread::sleep(Duration::from_millis(500));
    let ticks_before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let ticks = cpu_ticks(pid) - ticks_before;
    let fds = fd_count(pid);
    let logged = d.log_text().len() - log_before;
    assert!(
        fds <= max_fds,
        "daemon holds {fds} fds (at most {max_fds} expected)"
    );
    assert!(
        ticks < 40,
        "daemon used {ticks} CPU ticks in 2 s of an idle flood"
    );
    assert!(
        logged < 64 * 1024,
        "daemon logged {logged} bytes during the flood"
    );

    let mut cmd = Command::new("unshare");
    cmd.args(["-n", "busybox", "dmesg"]);
    let (child, listener) = spawn_filtered(cmd);
    send_listener(&socket, child.id(), listener.as_fd(), BTreeMap::new())
        .expect("hand over a listener after the flood");
    drop(listener);
    let o = wait_output(child, TIMEOUT);
    let out = ok(&o, "busybox dmesg after the flood");
    assert!(!out.contains("kmsgfs-host-ring"), "host ring shown: {out}");
    drop(held);
}

/// Attack 2: 5 000 idle connections to a real daemon whose fd limit is 512 (the bound on
/// unfinished connections applies), then 1 000 more with the limit just above what the daemon
/// holds (accept fails with EMFILE: no spinning, no log flood). Each time a runtime handing
/// over a listener afterwards is served.
#[test]
fn a2_connection_flood_keeps_the_daemon_bounded_and_serving() {
    if !(ready(&["busybox", "unshare"])) {
        return;
    }
    let d = support::Daemon::start_args(&["--devkmsg", "on"]);
    d.feed(6, "kmsgfs-host-ring-record-not-for-containers");
    let pid = d.pid().unwrap();
    let mut mine = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on our own process with valid structs.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut mine);
        mine.rlim_cur = mine.rlim_max.min(12_000);
        libc::setrlimit(libc::RLIMIT_NOFILE, &mine);
    }
    set_nofile(pid, 512);
    let base = fd_count(pid);
    let cap = kmsgfs::frontends::seccomp::agent::MAX_PENDING_CONNS;
    flood_round(&d, 5000, base + cap + 16);
    // Below the connection bound: EMFILE.
    let base = fd_count(pid);
    set_nofile(pid, base as u64 + 8);
    flood_round(&d, 1000, base + 8);
}

/// Runs `exec_dmesg` (an exec'd `dmesg` in a running container) until its output shows the
/// container's record `tag` (or TIMEOUT), then asserts it shows that record once and nothing
/// of the host ring.
fn exec_dmesg_shows_only(tag: &str, exec_dmesg: impl Fn() -> String) {
    let deadline = Instant::now() + TIMEOUT;
    let out = loop {
        let out = exec_dmesg();
        if out.contains(tag) || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(out.matches(tag).count(), 1, "exec'd dmesg: {out}");
    assert!(
        !out.contains("kmsgfs-host-ring"),
        "the exec'd process got the HOST ring: {out}"
    );
}

/// Attack 3: `crun exec` (1.8 names the `crun exec` process, in the host's namespaces, as
/// `state.pid`) and `runc exec` into a running container of the real daemon: the exec'd
/// `dmesg` prints exactly the container's record and nothing of the host ring.
fn exec_sees_the_container_ring(rt: Runtime) {
    if !ready(&["busybox", rt.bin()]) {
        return;
    }
    let d = support::Daemon::start_args(&["--devkmsg", "on"]);
    d.feed(6, "kmsgfs-host-ring-record-not-for-containers");
    let socket = kmsgfs::frontends::seccomp::default_socket_for(d.dir());
    let t = unique_tag(&format!("exec-{}", rt.bin()));
    let mut b = Bundle::new(rt, &["sh", "dmesg", "sleep", "echo"]);
    let script = format!("echo '<6>{t}' > /dev/kmsg; exec sleep 60");
    let mut c = b.kmsgfs_spec(&["sh", "-c", &script], &socket, true);
    c["mounts"].as_array_mut().unwrap().push(serde_json::json!({
        "destination": "/dev/kmsg",
        "type": "bind",
        "source": d.dir().join("kmsg"),
        "options": ["bind"]
    }));
    b.write_config(&c);
    let id = format!("kmsgfs-hostile-exec-{}-{}", rt.bin(), std::process::id());
    b.ids.push(id.clone());
    let log = b.dir.path().join("run.log");
    let st = b
        .base_cmd()
        .args(["run", "-d", "--bundle"])
        .arg(b.bundle())
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .expect("run -d");
    assert!(st.success(), "{} run -d: {}", rt.bin(), read_or_empty(&log));
    // The container wrote its record.
    exec_dmesg_shows_only(&t, || {
        let exec = b
            .base_cmd()
            .args(["exec", &id, "dmesg"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        ok(
            &wait_output(exec, TIMEOUT),
            &format!("{} exec dmesg", rt.bin()),
        )
    });
    b.delete(&id);
}

#[test]
fn a3_crun_exec_gets_the_container_ring_not_the_host_ring() {
    exec_sees_the_container_ring(Runtime::Crun);
}

#[test]
fn a3_runc_exec_gets_the_container_ring_not_the_host_ring() {
    exec_sees_the_container_ring(Runtime::Runc);
}

/// Attack 3 through Podman: `podman exec` (conmon runs the runtime's `exec`) into a running
/// container of the real daemon, with the kmsgfs profile (`--security-opt seccomp=`, which
/// carries `listenerPath`) and CAP_SYSLOG: the exec'd `dmesg` prints exactly the container's
/// record, nothing of the host ring, and its `dmesg -c` clears the container's ring only.
fn podman_exec_sees_the_container_ring(rt: Runtime) {
    if !ready(&["busybox", "podman", rt.bin()]) {
        return;
    }
    let d = support::Daemon::start_args(&["--devkmsg", "on"]);
    d.feed(6, "kmsgfs-host-ring-record-not-for-containers");
    let socket = kmsgfs::frontends::seccomp::default_socket_for(d.dir());
    let mut p = support::seccomp::podman::Podman::new(rt, &["sh", "dmesg", "sleep", "wc"]);
    let profile = p.dir.path().join("seccomp.json");
    std::fs::write(
        &profile,
        serde_json::to_vec(&kmsgfs::frontends::seccomp::seccomp_profile(&socket)).unwrap(),
    )
    .unwrap();
    let t = unique_tag(&format!("podman-exec-{}", rt.bin()));
    let name = format!("kmsgfs-hostile-podman-{}-{}", rt.bin(), std::process::id());
    let seccomp = format!("seccomp={}", profile.display());
    let mount = format!(
        "type=bind,src={},dst=/dev/kmsg",
        d.dir().join("kmsg").display()
    );
    let script = format!("echo '<6>{t}' > /dev/kmsg; exec sleep 120");
    p.run_detached(
        &name,
        &[
            "--cap-add",
            "SYSLOG",
            "--security-opt",
            &seccomp,
            "--mount",
            &mount,
        ],
        &["sh", "-c", &script],
    );
    exec_dmesg_shows_only(&t, || {
        let o = p.exec(&name, &["dmesg"], TIMEOUT);
        ok(&o, &format!("podman --runtime {} exec dmesg", rt.bin()))
    });
    // syslog(2) in the exec'd process clears the container's ring, not the host's.
    let o = p.exec(
        &name,
        &["sh", "-c", "dmesg -c >/dev/null && dmesg | wc -l"],
        TIMEOUT,
    );
    let cleared = ok(&o, "podman exec dmesg -c");
    assert_eq!(cleared.trim(), "0", "after dmesg -c in the container");
    let fd = support::open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).expect("open kmsg");
    let host = support::drain(fd);
    support::close_raw(fd);
    assert!(
        host.iter()
            .any(|r| support::text_of(r) == "kmsgfs-host-ring-record-not-for-containers"),
        "the host ring lost its record: {host:?}"
    );
}

#[test]
fn a3_podman_runc_exec_gets_the_container_ring_not_the_host_ring() {
    podman_exec_sees_the_container_ring(Runtime::Runc);
}

#[test]
fn a3_podman_crun_exec_gets_the_container_ring_not_the_host_ring() {
    podman_exec_sees_the_container_ring(Runtime::Crun);
}

/// Attack 3: a task in the host's namespaces calling through a listener is refused with EPERM
/// by the daemon's resolver, never answered from the host ring.
#[test]
fn a3_host_task_on_a_listener_gets_eperm() {
    if !ready(&["busybox"]) {
        return;
    }
    let d = support::Daemon::start_args(&["--devkmsg", "on"]);
    d.feed(6, "kmsgfs-host-ring-record-not-for-containers");
    let socket = kmsgfs::frontends::seccomp::default_socket_for(d.dir());
    let (child, listener) = spawn_filtered(Command::new("busybox").tap_args(&["dmesg"]));
    send_listener(&socket, child.id(), listener.as_fd(), BTreeMap::new()).unwrap();
    drop(listener);
    let o = wait_output(child, TIMEOUT);
    assert!(!o.status.success(), "host task answered: {}", stdout(&o));
    assert!(
        stderr(&o).contains("klogctl: Operation not permitted"),
        "{}",
        stderr(&o)
    );
    assert!(!stdout(&o).contains("kmsgfs-host-ring"));
}

trait TapArgs {
    fn tap_args(self, args: &[&str]) -> Command;
}

impl TapArgs for Command {
    fn tap_args(mut self, args: &[&str]) -> Command {
        self.args(args);
        self
    }
}
