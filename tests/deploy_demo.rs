//! `kmsgfs demo` end to end (root): each container sees its own line only, the host's real log
//! and host ring get neither, host root sees both rings under DIR/ns, and after `dmesg -c` in A
//! only A is empty. The `dmesg -c` step needs the syslog(2) seccomp agent wired into
//! `kmsgfs serve` and `kmsgfs run`; without it the demo reports the check as failed (it never
//! runs an unfiltered `dmesg -c`, which would clear the host log).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::require_root;

/// A --mount where no daemon runs, so the demo starts (and stops) its own.
fn no_daemon_dir() -> String {
    format!("/nonexistent/kmsgfs-test-nodaemon-{}", std::process::id())
}

/// The rows of the side-by-side table whose header row starts with `first_header`.
fn table(out: &str, first_header: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut lines = out.lines().skip_while(|l| !l.starts_with(first_header));
    if lines.next().is_none() || lines.next().is_none() {
        return rows;
    }
    for l in lines {
        if !l.contains('│') && !l.trim().is_empty() && !l.starts_with(' ') {
            break;
        }
        if l.starts_with("    ok:") || l.starts_with("    UNEXPECTED") || l.trim().is_empty() {
            break;
        }
        rows.push(l.split('│').map(|c| c.trim().to_string()).collect());
    }
    rows
}

fn column(rows: &[Vec<String>], i: usize) -> Vec<String> {
    rows.iter()
        .filter_map(|r| r.get(i).cloned())
        .filter(|c| !c.is_empty())
        .collect()
}

fn any(col: &[String], needle: &str) -> bool {
    col.iter().any(|c| c.contains(needle))
}

fn leftover_mounts(tag: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(tag))
        .map(str::to_string)
        .collect()
}

#[test]
fn demo_shows_separate_logs_and_dmesg_c_clears_one_container() {
    if !require_root() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_kmsgfs"))
        .args(["demo", "--mount", &no_daemon_dir(), "--column", "60"])
        .stdin(Stdio::null())
        .output()
        .expect("run kmsgfs demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ctx = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    let pid_tag = stdout
        .split("kmsgfs-demo-")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .map(|p| format!("kmsgfs-demo-{p}"))
        .unwrap_or_else(|| panic!("no demo tag in output\n{ctx}"));
    let (la, lb) = (
        format!("{pid_tag}: hello from A"),
        format!("{pid_tag}: hello from B"),
    );

    let first = table(&stdout, "A: dmesg ");
    let (a, b, host) = (column(&first, 0), column(&first, 1), column(&first, 2));
    assert!(any(&a, &la) && !any(&a, &lb), "A's column\n{ctx}");
    assert!(any(&b, &lb) && !any(&b, &la), "B's column\n{ctx}");
    assert!(!any(&host, &la) && !any(&host, &lb), "host real log\n{ctx}");

    let view = table(&stdout, "host ring: DIR/kmsg");
    let (host_ring, every) = (column(&view, 0), column(&view, 1));
    assert!(
        !any(&host_ring, &la) && !any(&host_ring, &lb),
        "host ring\n{ctx}"
    );
    assert!(any(&every, &la) && any(&every, &lb), "DIR/ns view\n{ctx}");

    let after = table(&stdout, "A: dmesg -c");
    assert!(
        !after.is_empty(),
        "the `dmesg -c` step did not run: it needs the syslog(2) seccomp agent in `kmsgfs serve` \
         and its filter in `kmsgfs run` (branch wire-seccomp)\n{ctx}"
    );
    let (cleared, a2, b2) = (column(&after, 0), column(&after, 1), column(&after, 2));
    assert!(any(&cleared, &la), "dmesg -c printed A's line\n{ctx}");
    assert!(!any(&a2, &la), "A is empty after dmesg -c\n{ctx}");
    assert!(any(&b2, &lb) && !any(&b2, &la), "B untouched\n{ctx}");

    assert!(
        out.status.success(),
        "demo exit status {}\n{ctx}",
        out.status
    );
    assert!(leftover_mounts(&pid_tag).is_empty(), "mounts left behind");
}

#[test]
fn demo_cleans_up_on_sigint() {
    if !require_root() {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_kmsgfs"))
        .args(["demo", "--mount", &no_daemon_dir()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kmsgfs demo");
    let pid = child.id() as libc::pid_t;
    let tag = format!("kmsgfs-demo-{pid}");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Interrupt once both containers run.
    let mut seen = Vec::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        seen.push(l.clone());
        if l.contains("veth pair") {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("veth pair")),
        "demo ended early: {seen:?}"
    );
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "demo did not exit after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "interrupted demo must fail");
    assert!(
        err.contains("interrupted"),
        "stderr: {err}\nstdout: {rest:?}"
    );
    assert!(
        leftover_mounts(&tag).is_empty(),
        "mounts left: {:?}",
        leftover_mounts(&tag)
    );
    let tmp = std::env::temp_dir().join(&tag);
    assert!(!tmp.exists(), "{} left behind", tmp.display());
    // No `kmsgfs run` or `kmsgfs serve` of the demo survives: their parent was the demo.
    let orphans: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("cmdline")).ok())
        .filter(|c| c.contains(&tag))
        .collect();
    assert!(orphans.is_empty(), "processes left: {orphans:?}");
}
