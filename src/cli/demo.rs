//! `kmsgfs demo`: two throwaway containers, each with its own kernel log, side by side with the
//! host's.
//!
//! Steps (each printed as one line before it runs):
//!
//! 1. Use the daemon on `--mount` (default `/run/kmsgfs`) when one answers there (its `stats`
//!    file parses); otherwise start `kmsgfs serve` (this executable) on a temporary directory
//!    and stop it at the end.
//! 2. Start containers A and B with `kmsgfs run -- sh`: each gets its own mount, network, UTS,
//!    IPC and PID namespaces and the kmsgfs file over `/dev/kmsg`. The demo drives each shell
//!    through its stdin, so every command runs as a descendant of the container's shell (and
//!    under whatever seccomp filter `kmsgfs run` installed), never through `nsenter` from the
//!    host.
//! 3. Join the two network namespaces with a veth pair created inside A's namespace, with its
//!    peer moved straight into B's: the host's network is never touched.
//! 4. Each container writes a tagged line to its `/dev/kmsg` (kmsg-semantics A6).
//! 5. Optional, only when `iptables` exists and the daemon reports BPF attribution active:
//!    enable `net.netfilter.nf_log_all_netns` (restored at the end), add a `LOG` rule in B and
//!    ping B from A, producing a real kernel record that belongs to B.
//! 6. Show side by side what the real util-linux `dmesg` prints in A, in B, and on the host
//!    (the host's real log, filtered to the demo's tag), then the host root's view of every
//!    ring through `DIR/ns/<inode>/kmsg`.
//! 7. Run `dmesg -c` in A and show B untouched. `dmesg -c` clears through `syslog(2)`, which
//!    only the seccomp agent answers per container; the demo first proves that `syslog(2)` in
//!    A is answered from A's ring (a non-destructive `dmesg -S` shows A's line) and skips the
//!    step otherwise, because an unfiltered `dmesg -c` would clear the **host** log.
//!
//! Cleanup is RAII: dropping a [`Container`] ends its shell and `kmsgfs run`, dropping the
//! temporary daemon stops it with SIGINT and removes its directory, and the sysctl guard
//! restores the old value. SIGINT and SIGTERM only set a flag (the handler does nothing else)
//! that every wait checks, so Ctrl-C unwinds through the same drops.
//!
//! The demo checks what it shows and exits non-zero when a container saw another's line, the
//! host's real log received a container's `/dev/kmsg` line, or `dmesg -c` touched the other
//! container.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use thiserror::Error;

/// Options of `kmsgfs demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Directory of a running `kmsgfs serve`. When no daemon answers there, the demo starts
    /// one on a temporary directory and stops it afterwards.
    #[arg(long, value_name = "DIR", default_value = crate::frontends::DEFAULT_MOUNT)]
    pub mount: PathBuf,
    /// Width of each column of the side-by-side view.
    #[arg(long, value_name = "CHARS", default_value_t = 46)]
    pub column: usize,
}

/// Errors of `kmsgfs demo`.
#[derive(Debug, Error)]
pub enum DemoError {
    /// A process could not be started.
    #[error("`{what}` failed to start: {source}")]
    Spawn {
        /// The command.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A file operation failed.
    #[error("`{what}` failed: {source}")]
    Io {
        /// The operation.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The demo was interrupted by SIGINT or SIGTERM.
    #[error("interrupted; cleaned up")]
    Interrupted,
    /// Something did not happen in time or ended early.
    #[error("{0}")]
    Failed(String),
    /// What the demo showed is not what kmsgfs promises.
    #[error("{0} check(s) failed (see UNEXPECTED lines above)")]
    Checks(usize),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_handlers() -> Result<(), DemoError> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        crate::sys::signal::set_handler(sig, on_signal).map_err(|e| DemoError::Io {
            what: e.call,
            source: e.source,
        })?;
    }
    Ok(())
}

fn check_stop() -> Result<(), DemoError> {
    if STOP.load(Ordering::SeqCst) {
        Err(DemoError::Interrupted)
    } else {
        Ok(())
    }
}

/// Sleep in small steps, honouring SIGINT.
fn nap(d: Duration) -> Result<(), DemoError> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_stop()?;
        std::thread::sleep(Duration::from_millis(20));
    }
    check_stop()
}

const TIMEOUT: Duration = Duration::from_secs(60);

/// Stop a child politely (signal), then for sure (SIGKILL), and reap it.
fn stop_child(child: &mut Child, sig: libc::c_int) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // Our own unreaped child: its pid cannot have been reused.
        let _ = crate::sys::process::kill(pid, sig);
    }
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A `kmsgfs serve` the demo started; stopped and its directory removed on drop.
struct OwnDaemon {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

impl Drop for OwnDaemon {
    fn drop(&mut self) {
        stop_child(&mut self.child, libc::SIGINT);
        let _ = fs::remove_dir(&self.dir);
        let _ = fs::remove_file(&self.log);
    }
}

fn daemon_answers(dir: &Path) -> Option<serde_json::Value> {
    let text = fs::read(dir.join("stats")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    v.get("rings").is_some().then_some(v)
}

fn start_daemon(exe: &Path) -> Result<OwnDaemon, DemoError> {
    let dir = std::env::temp_dir().join(format!("kmsgfs-demo-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(io(format!("mkdir({})", dir.display())))?;
    let log = std::env::temp_dir().join(format!("kmsgfs-demo-{}.log", std::process::id()));
    let logf = fs::File::create(&log).map_err(io(format!("create({})", log.display())))?;
    let child = Command::new(exe)
        .arg("serve")
        .arg("--mount")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(logf)
        .spawn()
        .map_err(|source| DemoError::Spawn {
            what: format!("{} serve", exe.display()),
            source,
        })?;
    let mut d = OwnDaemon { child, dir, log };
    let end = Instant::now() + TIMEOUT;
    while daemon_answers(&d.dir).is_none() {
        if let Ok(Some(st)) = d.child.try_wait() {
            let log = fs::read_to_string(&d.log).unwrap_or_default();
            return Err(DemoError::Failed(format!(
                "kmsgfs serve exited ({st}) before it was ready:\n{log}"
            )));
        }
        if Instant::now() > end {
            return Err(DemoError::Failed(
                "kmsgfs serve did not become ready".into(),
            ));
        }
        nap(Duration::from_millis(50))?;
    }
    Ok(d)
}

/// One `kmsgfs run -- sh` driven through its stdin.
struct Container {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

const DONE: &str = "@@kmsgfs-demo-done";

impl Container {
    fn start(exe: &Path, mount: &Path, name: &'static str) -> Result<Container, DemoError> {
        let mut child = Command::new(exe)
            .arg("run")
            .arg("--mount")
            .arg(mount)
            .args(["--", "sh"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| DemoError::Spawn {
                what: format!("{} run -- sh", exe.display()),
                source,
            })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        let mut c = Container {
            name,
            child,
            stdin,
            lines: rx,
        };
        // The shell answers once the namespaces and the /dev/kmsg bind exist.
        c.sh("true")?;
        Ok(c)
    }

    /// Host pid of `kmsgfs run`, which itself moved into the container's network namespace.
    fn ns_pid(&self) -> u32 {
        self.child.id()
    }

    /// Run `cmd` in the container's shell; its stdout and stderr, and its exit status.
    fn sh_status(&mut self, cmd: &str) -> Result<(Vec<String>, i32), DemoError> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| DemoError::Failed("container shell closed".into()))?;
        writeln!(stdin, "{{ {cmd}\n}} </dev/null 2>&1; echo \"{DONE} $?\"")
            .map_err(io(format!("write to container {} shell", self.name)))?;
        stdin
            .flush()
            .map_err(io(format!("write to container {} shell", self.name)))?;
        let end = Instant::now() + TIMEOUT;
        let mut out = Vec::new();
        loop {
            check_stop()?;
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    if let Some(rc) = l.strip_prefix(DONE) {
                        return Ok((out, rc.trim().parse().unwrap_or(-1)));
                    }
                    out.push(l);
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() < end => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(DemoError::Failed(format!(
                        "container {}: `{cmd}` did not finish",
                        self.name
                    )))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(DemoError::Failed(format!(
                        "container {}: its shell ended during `{cmd}` (see kmsgfs run's message)",
                        self.name
                    )))
                }
            }
        }
    }

    fn sh(&mut self, cmd: &str) -> Result<Vec<String>, DemoError> {
        let (out, rc) = self.sh_status(cmd)?;
        if rc != 0 {
            return Err(DemoError::Failed(format!(
                "container {}: `{cmd}` exited with {rc}: {}",
                self.name,
                out.join(" / ")
            )));
        }
        Ok(out)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // EOF ends the shell; kmsgfs run then exits with it and the namespaces go.
        drop(self.stdin.take());
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop_child(&mut self.child, libc::SIGTERM);
    }
}

/// Sets a sysctl and restores the old value on drop.
struct Sysctl {
    path: PathBuf,
    old: String,
}

impl Sysctl {
    fn set(path: &str, value: &str) -> Result<Sysctl, DemoError> {
        let old = fs::read_to_string(path).map_err(io(format!("read({path})")))?;
        fs::write(path, value).map_err(io(format!("write({path})")))?;
        Ok(Sysctl {
            path: path.into(),
            old: old.trim().to_string(),
        })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = fs::write(&self.path, &self.old) {
            log::warn!("cannot restore {}: {e}", self.path.display());
        }
    }
}

/// Whether the stats document says BPF attribution is running.
pub fn bpf_active(stats: &serde_json::Value) -> bool {
    stats["attribution"]["source"]["bpf"] == serde_json::Value::Bool(true)
}

/// Lay out columns side by side, each `width` characters wide, separated by ` │ `.
pub fn side_by_side(headers: &[&str], columns: &[Vec<String>], width: usize) -> String {
    let fit = |s: &str| -> String {
        let n = s.chars().count();
        if n <= width {
            format!("{s}{}", " ".repeat(width - n))
        } else {
            let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
            t.push('…');
            t
        }
    };
    let mut out = String::new();
    let row = |cells: Vec<String>| cells.join(" │ ").trim_end().to_string() + "\n";
    out += &row(headers.iter().map(|h| fit(h)).collect());
    out += &row(headers.iter().map(|_| "─".repeat(width)).collect());
    let rows = columns.iter().map(Vec::len).max().unwrap_or(0).max(1);
    for i in 0..rows {
        out += &row(columns
            .iter()
            .map(|c| match (c.get(i), i) {
                (Some(s), _) => fit(s),
                (None, 0) => fit("(empty)"),
                (None, _) => fit(""),
            })
            .collect());
    }
    out
}

fn step(text: &str) {
    println!("\n==> {text}");
}

struct Checks {
    failed: usize,
}

impl Checks {
    fn expect(&mut self, ok: bool, what: &str) {
        if ok {
            println!("    ok: {what}");
        } else {
            println!("    UNEXPECTED: {what}");
            self.failed += 1;
        }
    }
}

fn host_dmesg_tagged(tag: &str) -> Result<Vec<String>, DemoError> {
    // util-linux dmesg reads /dev/kmsg without consuming anything.
    let out = Command::new("dmesg")
        .output()
        .map_err(|source| DemoError::Spawn {
            what: "dmesg".into(),
            source,
        })?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(tag))
        .map(str::to_string)
        .collect())
}

/// Records of one kmsgfs file containing `tag`, read non-blockingly as `/dev/kmsg` text.
fn ring_tagged(path: &Path, tag: &str) -> Vec<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut f) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16384];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                let text = rec.split_once(';').map(|x| x.1).unwrap_or(&rec);
                let text = text.lines().next().unwrap_or("");
                if text.contains(tag) {
                    out.push(text.to_string());
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => break,
        }
    }
    out
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

/// Run `kmsgfs demo`.
pub fn run(args: &DemoArgs) -> Result<(), DemoError> {
    install_handlers()?;
    let exe = std::env::current_exe().map_err(io("current_exe()"))?;
    let tag = format!("kmsgfs-demo-{}", std::process::id());
    let line_a = format!("{tag}: hello from A");
    let line_b = format!("{tag}: hello from B");
    let mut checks = Checks { failed: 0 };

    let own_daemon;
    let mount: PathBuf = if daemon_answers(&args.mount).is_some() {
        step(&format!(
            "using the kmsgfs daemon already serving {}",
            args.mount.display()
        ));
        args.mount.clone()
    } else {
        step(&format!(
            "no daemon answers on {}; starting `kmsgfs serve` on a temporary directory",
            args.mount.display()
        ));
        own_daemon = start_daemon(&exe)?;
        println!("    serving {}", own_daemon.dir.display());
        own_daemon.dir.clone()
    };

    step(
        "starting containers A and B with `kmsgfs run` (own mount, net, uts, ipc, pid namespaces)",
    );
    let mut a = Container::start(&exe, &mount, "A")?;
    let mut b = Container::start(&exe, &mount, "B")?;

    step(
        "joining their network namespaces with a veth pair made inside A (host network untouched)",
    );
    let veth = Command::new("nsenter")
        .arg(format!("--net=/proc/{}/ns/net", a.ns_pid()))
        .args([
            "ip", "link", "add", "kdemo-a", "type", "veth", "peer", "name",
        ])
        .args(["kdemo-b", "netns", &b.ns_pid().to_string()])
        .status()
        .map_err(|source| DemoError::Spawn {
            what: "nsenter --net ip link add".into(),
            source,
        })?;
    if !veth.success() {
        return Err(DemoError::Failed(
            "`ip link add kdemo-a type veth peer name kdemo-b` failed".into(),
        ));
    }
    a.sh("ip link set lo up && ip addr add 10.213.7.1/30 dev kdemo-a && ip link set kdemo-a up")?;
    b.sh("ip link set lo up && ip addr add 10.213.7.2/30 dev kdemo-b && ip link set kdemo-b up")?;

    step("each container writes a line to its own /dev/kmsg");
    a.sh(&format!("echo '<5>{line_a}' > /dev/kmsg"))?;
    b.sh(&format!("echo '<5>{line_b}' > /dev/kmsg"))?;

    let stats = daemon_answers(&mount).unwrap_or_default();
    let iptables = which("iptables");
    let mut nf_line = None;
    if iptables && bpf_active(&stats) {
        step("B logs a ping from A with an iptables LOG rule (nf_log_all_netns on for the demo)");
        let _guard = Sysctl::set("/proc/sys/net/netfilter/nf_log_all_netns", "1")?;
        let prefix = format!("{tag}-nf-B: ");
        b.sh(&format!(
            "iptables -A INPUT -i kdemo-b -p icmp -j LOG --log-prefix '{prefix}'"
        ))?;
        let _ = a.sh_status("ping -c 1 -W 2 10.213.7.2")?;
        nap(Duration::from_millis(500))?;
        nf_line = Some(prefix);
    } else {
        step(if iptables {
            "skipping the iptables LOG step: BPF attribution is not active in this daemon"
        } else {
            "skipping the iptables LOG step: iptables is not installed"
        });
    }

    step("what the real `dmesg` shows in A, in B, and on the host (host's real log, demo lines)");
    let dm_a = a.sh("dmesg")?;
    let dm_b = b.sh("dmesg")?;
    let host = host_dmesg_tagged(&tag)?;
    print!(
        "{}",
        side_by_side(
            &["A: dmesg", "B: dmesg", &format!("host: dmesg | grep {tag}")],
            &[dm_a.clone(), dm_b.clone(), host.clone()],
            args.column
        )
    );
    checks.expect(
        has(&dm_a, &line_a) && !has(&dm_a, &line_b),
        "A sees its own line and not B's",
    );
    checks.expect(
        has(&dm_b, &line_b) && !has(&dm_b, &line_a),
        "B sees its own line and not A's",
    );
    checks.expect(
        !has(&host, &line_a) && !has(&host, &line_b),
        "the host's real log received neither /dev/kmsg line",
    );
    if let Some(p) = &nf_line {
        checks.expect(
            has(&dm_b, p) && !has(&dm_a, p),
            "B's netfilter line is in B only",
        );
    }

    step("host root's view through the daemon: the host ring (DIR/kmsg) and each ring (DIR/ns)");
    let host_ring = ring_tagged(&mount.join("kmsg"), &tag);
    let mut all_rings = Vec::new();
    if let Ok(rd) = fs::read_dir(mount.join("ns")) {
        let mut names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for n in names {
            for l in ring_tagged(&mount.join("ns").join(&n).join("kmsg"), &tag) {
                all_rings.push(format!("ns/{}: {l}", n.to_string_lossy()));
            }
        }
    }
    print!(
        "{}",
        side_by_side(
            &["host ring: DIR/kmsg", "every ring: DIR/ns/*/kmsg"],
            &[host_ring.clone(), all_rings.clone()],
            args.column + 24
        )
    );
    checks.expect(
        !has(&host_ring, &line_a) && !has(&host_ring, &line_b),
        "the host ring holds no container's /dev/kmsg line",
    );
    checks.expect(
        has(&all_rings, &line_a) && has(&all_rings, &line_b),
        "host root can read both containers' rings under DIR/ns",
    );

    step("checking that syslog(2) in A is answered from A's ring (`dmesg -S`, non-destructive)");
    let (syslog_a, _) = a.sh_status("dmesg -S")?;
    if has(&syslog_a, &line_a) {
        step("A runs `dmesg -c` (print, then clear A's ring through syslog(2)); B is untouched");
        let cleared = a.sh("dmesg -c")?;
        let dm_a2 = a.sh("dmesg")?;
        let dm_b2 = b.sh("dmesg")?;
        print!(
            "{}",
            side_by_side(
                &["A: dmesg -c", "A: dmesg (after)", "B: dmesg (after)"],
                &[cleared.clone(), dm_a2.clone(), dm_b2.clone()],
                args.column
            )
        );
        checks.expect(has(&cleared, &line_a), "`dmesg -c` printed A's line");
        checks.expect(
            !has(&dm_a2, &line_a),
            "A's ring is empty for readers after the clear",
        );
        checks.expect(has(&dm_b2, &line_b), "B still sees its line");
        checks.expect(
            host_dmesg_tagged(&tag).map(|h| h.is_empty() || nf_line.is_some())?,
            "the host log was not involved",
        );
    } else {
        step(
            "skipping `dmesg -c`: syslog(2) in A is not served by the kmsgfs seccomp agent here, \
             and an unfiltered `dmesg -c` would clear the HOST log",
        );
        checks.expect(false, "syslog(2) in A is answered from A's ring");
    }

    step("cleaning up: containers, veth pair, sysctl, temporary daemon");
    drop(a);
    drop(b);
    if checks.failed > 0 {
        return Err(DemoError::Checks(checks.failed));
    }
    println!("\nall checks passed");
    Ok(())
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_pad_truncate_and_mark_empty() {
        let s = side_by_side(
            &["a", "b"],
            &[vec!["x".into(), "yyyyyyyyy".into()], vec![]],
            8,
        );
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "a        │ b");
        assert_eq!(lines[2], "x        │ (empty)");
        assert_eq!(lines[3], "yyyyyyy… │");
    }

    #[test]
    fn bpf_activity_is_read_from_stats() {
        assert!(!bpf_active(&serde_json::json!({"rings": []})));
        assert!(bpf_active(
            &serde_json::json!({"attribution": {"source": {"bpf": true}}})
        ));
        assert!(!bpf_active(
            &serde_json::json!({"attribution": {"source": {"bpf": false}}})
        ));
    }
}
