//! The OCI seccomp profile fragment that routes `syslog(2)` to the agent
//! (`kmsgfs seccomp-profile [--listener PATH]`).
//!
//! It maps `syslog` to `SCMP_ACT_NOTIFY` and nothing else, lists the three x86 architectures
//! (with only `SCMP_ARCH_X86_64`, libseccomp kills an `int 0x80` caller instead of notifying,
//! seccomp-agent.md §14), and names the agent's socket in `listenerPath`. `defaultAction` is
//! `SCMP_ACT_ALLOW`, so the fragment is a complete profile on its own; to combine it with a
//! runtime's default profile, copy its `syslog` rule, `architectures`, `listenerPath` and
//! `listenerMetadata` into that profile and delete every other rule that names `syslog`
//! (docs/deploy.md).

use std::path::Path;

use serde_json::{json, Value};

/// Where `kmsgfs serve` listens for OCI runtimes by default: next to the default mount point
/// `/run/kmsgfs` ([`default_socket_for`]); it cannot live inside the FUSE mount.
pub const DEFAULT_LISTENER_PATH: &str = "/run/kmsgfs.seccomp.sock";

/// The default LXC proxy socket for a daemon mounted on `mount`: the mount path with
/// `.lxc.sock` appended (`/run/kmsgfs` gives `/run/kmsgfs.lxc.sock`).
pub fn lxc_socket_for(mount: &Path) -> std::path::PathBuf {
    sibling(mount, ".lxc.sock")
}

/// `mount` with `suffix` appended to its last component.
fn sibling(mount: &Path, suffix: &str) -> std::path::PathBuf {
    // `components()` drops trailing slashes and `.` components.
    let mut s = mount
        .components()
        .collect::<std::path::PathBuf>()
        .into_os_string();
    s.push(suffix);
    s.into()
}

/// The default agent socket for a daemon mounted on `mount`: the mount path with
/// `.seccomp.sock` appended (`/run/kmsgfs` gives `/run/kmsgfs.seccomp.sock`), a sibling of
/// the mount point, so it is reachable while the FUSE file system covers the directory.
pub fn default_socket_for(mount: &Path) -> std::path::PathBuf {
    sibling(mount, ".seccomp.sock")
}

/// The `listenerMetadata` the profile carries; passed through to the agent unchanged.
pub const LISTENER_METADATA: &str = "kmsgfs-v1";

/// The `linux.seccomp` object for an OCI config (or a Docker/Podman/Kubernetes profile file).
pub fn seccomp_profile(listener: &Path) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "listenerPath": listener.to_string_lossy(),
        "listenerMetadata": LISTENER_METADATA,
        "syscalls": [
            { "names": ["syslog"], "action": "SCMP_ACT_NOTIFY" }
        ]
    })
}

/// [`seccomp_profile`] as pretty-printed JSON with a trailing newline, as the CLI prints it.
pub fn seccomp_profile_json(listener: &Path) -> String {
    let mut s = serde_json::to_string_pretty(&seccomp_profile(listener)).expect("JSON value");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_shape() {
        let v = seccomp_profile(Path::new("/run/x.sock"));
        assert_eq!(v["listenerPath"], "/run/x.sock");
        assert_eq!(v["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(
            v["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        let rules = v["syscalls"].as_array().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["names"], json!(["syslog"]));
        assert_eq!(rules[0]["action"], "SCMP_ACT_NOTIFY");
        // No flags: runc 1.1 rejects any, and WAIT_KILLABLE_RECV would make a blocked klogd
        // READ deaf to SIGTERM.
        assert!(v.get("flags").is_none());
    }

    #[test]
    fn default_socket_is_a_sibling_of_the_mount() {
        assert_eq!(
            default_socket_for(Path::new(crate::frontends::DEFAULT_MOUNT)),
            Path::new(DEFAULT_LISTENER_PATH)
        );
        assert_eq!(
            default_socket_for(Path::new("/tmp/x/mnt/")),
            Path::new("/tmp/x/mnt.seccomp.sock")
        );
    }

    #[test]
    fn json_text_parses_back() {
        let s = seccomp_profile_json(Path::new(DEFAULT_LISTENER_PATH));
        assert!(s.ends_with("}\n"));
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v, seccomp_profile(Path::new(DEFAULT_LISTENER_PATH)));
    }
}
