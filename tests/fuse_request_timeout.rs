//! `fs.fuse.*_request_timeout` (Linux 6.14+) would abort kmsgfs's whole FUSE connection when a
//! parked blocking read outlives it; the daemon refuses to start instead, naming the setting
//! (docs/deploy.md "Restarts"). A restart that adopts the connection is not refused: the
//! kernel fixes a connection's timeout at INIT, so a connection made before the sysctl was set
//! never times out. Root only; the sysctls are set for these tests alone (their own test
//! binary, one test at a time, so no other daemon mounts meanwhile) and restored even on
//! failure.

use std::path::Path;
use std::process::Command;

use std::time::{Duration, Instant};

use crate::support;
use crate::support::{is_kmsgfs_mounted, require_root, text_of, Daemon, Holder, Options};

/// The tests of this binary change host-wide sysctls: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sets a sysctl file and restores its old value on drop.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Option<Sysctl> {
        let old = std::fs::read_to_string(path).ok()?;
        std::fs::write(path, value).unwrap_or_else(|e| panic!("write {path}: {e}"));
        Some(Sysctl { path, old })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, self.old.trim());
    }
}

#[test]
fn a_fuse_request_timeout_is_refused_at_start_with_the_setting_named() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root() {
        return;
    }
    for name in ["default_request_timeout", "max_request_timeout"] {
        let path: &'static str = match name {
            "default_request_timeout" => "/proc/sys/fs/fuse/default_request_timeout",
            _ => "/proc/sys/fs/fuse/max_request_timeout",
        };
        if !support::require_path(Path::new(path), "Linux 6.14+") {
            return;
        }
        let _guard = Sysctl::set(path, "30").expect("read the sysctl");
        let dir =
            std::env::temp_dir().join(format!("kmsgfs-timeout-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_kmsgfs"))
            .args(["serve", "--source", "/dev/null", "--no-seccomp", "--mount"])
            .arg(&dir)
            .output()
            .expect("run kmsgfs serve");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{name}=30: the daemon started");
        assert!(err.contains(&format!("fs.fuse.{name} is 30")), "{err}");
        assert!(!is_kmsgfs_mounted(&dir), "nothing may be mounted");
        let _ = std::fs::remove_dir(&dir);
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/fs/fuse/max_request_timeout")
            .unwrap()
            .trim(),
        "0",
        "the sysctl is restored"
    );
}

const MAX_TIMEOUT: &str = "/proc/sys/fs/fuse/max_request_timeout";

/// A READ parked since before the restart outlives a 1 s `max_request_timeout` set before the
/// restart: the adopted connection has no timeout, the new daemon starts, and the READ is
/// answered when a record arrives.
#[test]
fn a_restart_with_the_timeout_set_adopts_the_connection_and_its_parked_read_survives() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root() {
        return;
    }
    if !support::require_path(Path::new(MAX_TIMEOUT), "Linux 6.14+") {
        return;
    }
    let scratch =
        std::env::temp_dir().join(format!("kmsgfs-timeout-restart-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let holder = Holder::start(&scratch);
    let sock = holder.socket.display().to_string();
    let args = ["--holder-socket", sock.as_str(), "--no-seccomp"];
    let mut d = Daemon::start_with(Options::args(&args));
    // A reader in its own process: a FUSE file of the test process itself would be flushed
    // (FUSE_FLUSH) when the next daemon's exec closes the fork's copy, which only that
    // daemon could answer.
    let mut reader = std::process::Command::new("dd")
        .arg(format!("if={}", d.kmsg().display()))
        .args(["bs=8192", "count=1", "status=none"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn dd");
    support::wait_blocked_in_fuse(reader.id());

    let guard = Sysctl::set(MAX_TIMEOUT, "1").expect("read the sysctl");
    d.kill9();
    d.restart(Options::args(&args));
    assert!(
        d.log_text()
            .contains("adopting a connection made without a request timeout"),
        "{}",
        d.log_text()
    );
    // Three times the timeout: an aborted connection would have ended the READ with an error.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        reader.try_wait().unwrap().is_none(),
        "the parked READ ended during the timeout"
    );
    assert!(is_kmsgfs_mounted(d.dir()), "the connection was aborted");
    d.feed(6, "after the timeout");
    let deadline = Instant::now() + Duration::from_secs(10);
    while reader.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the parked READ was not answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = reader.wait_with_output().unwrap();
    assert!(out.status.success(), "dd: {:?}", out.status);
    assert_eq!(
        text_of(String::from_utf8_lossy(&out.stdout).trim_end()),
        "after the timeout"
    );
    drop(guard);
    assert_eq!(
        std::fs::read_to_string(MAX_TIMEOUT).unwrap().trim(),
        "0",
        "the sysctl is restored"
    );
    drop(d);
    drop(holder);
    let _ = std::fs::remove_dir_all(&scratch);
}
