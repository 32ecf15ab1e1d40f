//! `fs.fuse.*_request_timeout` (Linux 6.14+) would abort kmsgfs's whole FUSE connection when a
//! parked blocking read outlives it; the daemon refuses to start instead, naming the setting
//! (docs/deploy.md "Restarts"). Root only; the sysctls are set for this test alone (its own
//! test binary, so no other daemon mounts meanwhile) and restored even on failure.

mod common;

use std::path::Path;
use std::process::Command;

use common::{is_kmsgfs_mounted, require_root};

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
    if !require_root() {
        return;
    }
    for name in ["default_request_timeout", "max_request_timeout"] {
        let path: &'static str = match name {
            "default_request_timeout" => "/proc/sys/fs/fuse/default_request_timeout",
            _ => "/proc/sys/fs/fuse/max_request_timeout",
        };
        if !Path::new(path).exists() && std::env::var("KMSGFS_ALLOW_SKIP").as_deref() == Ok("1") {
            eprintln!("skipped: {path} is missing (Linux before 6.14)");
            return;
        }
        assert!(
            Path::new(path).exists(),
            "{path} is missing: this test needs Linux 6.14+ (set KMSGFS_ALLOW_SKIP=1 to skip)"
        );
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
