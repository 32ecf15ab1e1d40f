//! `kmsgfs oci-hook`: an OCI `createContainer` hook that puts the kmsgfs files into a
//! container.
//!
//! The runtime (runc, crun, Podman, CRI-O) runs the hook in the runtime's namespaces with the
//! container's state on stdin (`{"pid": …, "bundle": …, …}`), after the container's mount
//! namespace and root filesystem are set up and before `pivot_root`. The hook:
//!
//! 1. reads the state and the bundle's `config.json` for `root.path` (relative paths are
//!    relative to the bundle);
//! 2. forks a child (a multi-threaded process cannot `setns` into a mount namespace) that
//!    enters the container's mount namespace through `/proc/<pid>/ns/mnt`. runc instead runs
//!    the hook from the container's init, already inside the container's mount and pid
//!    namespaces (with the host's `/proc` still mounted and `pid` counted inside); the hook
//!    recognises that (its pid is not `/proc/self`) and stays where it is;
//! 3. there, opens the root filesystem and walks `dev/kmsg` and `proc/kmsg` component by
//!    component with `O_NOFOLLOW`, so a symlink planted in the image cannot redirect the mount
//!    outside the container (a missing `dev/kmsg` is created as an empty file to mount on);
//! 4. bind-mounts `DIR/kmsg` over `dev/kmsg`, and `DIR/proc-kmsg` over `proc/kmsg` when the
//!    daemon serves that file (the seccomp agent's `/proc/kmsg`, kmsg-semantics C), through the
//!    `/proc/self/fd/N` of the opened target.
//!
//! `DIR` is resolved inside the container's mount namespace: it is a copy of the runtime's, so
//! the daemon's mount must exist before the container is created (the kernel refuses to bind a
//! mount of another namespace). The opener's ring is chosen when the container opens the file,
//! so nothing about the container needs to be known here.
//!
//! A `maskedPaths` entry for `/proc/kmsg` is applied after this hook and would cover the bind;
//! neither runc's example spec nor Podman's defaults have one (Podman's containers see their
//! ring there: `tests/podman_hook.rs`).

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::sys::process::{self, Fork};
use crate::sys::SysError;

/// Options of `kmsgfs oci-hook`.
#[derive(Debug, Clone, clap::Args)]
pub struct OciHookArgs {
    /// Directory where `kmsgfs serve` is mounted (as seen by the runtime).
    #[arg(long, value_name = "DIR", default_value = crate::frontends::DEFAULT_MOUNT)]
    pub mount: PathBuf,

    /// The daemon's syslog(2) agent socket that `linux.seccomp.listenerPath` must name when
    /// the container is granted CAP_SYSLOG; default: DIR with `.seccomp.sock` appended.
    #[arg(long, value_name = "PATH")]
    pub seccomp_socket: Option<PathBuf>,

    /// Bind kmsg even into a container that holds CAP_SYSLOG while its syslog(2) is not sent
    /// to the kmsgfs agent. Such a container can read (and clear) the HOST kernel log through
    /// syslog(2), and util-linux dmesg does so by itself whenever /dev/kmsg has nothing to
    /// read; only a warning is printed.
    #[arg(long)]
    pub allow_unrouted_syslog: bool,
}

/// Errors of the hook.
#[derive(Debug, Error)]
pub enum HookError {
    /// The state on stdin or the bundle's config did not parse.
    #[error("invalid OCI {what}: {detail}")]
    Input {
        /// "state" or "config.json".
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// A system call failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// The hook forks to enter the container's mount namespace, which needs one thread.
    #[error("kmsgfs oci-hook must run single-threaded to fork (it has {0} threads)")]
    NotSingleThreaded(usize),
    /// The child that entered the container failed.
    #[error("in the container's mount namespace: {0}")]
    Child(String),
    /// The container holds CAP_SYSLOG but its syslog(2) is not routed to the agent.
    #[error(
        "refusing to bind kmsg into container {id}: it is granted CAP_SYSLOG ({sets}) but its \
         syslog(2) is not routed to the kmsgfs agent: {reason}. util-linux dmesg falls back to \
         syslog(2) whenever /dev/kmsg has nothing to read, so the container would print (and \
         could clear) the HOST kernel log. Add the seccomp rule {{\"names\": [\"syslog\"], \
         \"action\": \"SCMP_ACT_NOTIFY\"}} with linux.seccomp.listenerPath {socket} \
         (`kmsgfs seccomp-profile`), drop CAP_SYSLOG, or pass --allow-unrouted-syslog to the hook"
    )]
    UnroutedSyslog {
        /// The container id.
        id: String,
        /// The capability sets holding CAP_SYSLOG, comma-separated.
        sets: String,
        /// Why the config does not route syslog(2).
        reason: Unrouted,
        /// The agent socket listenerPath must name.
        socket: String,
    },
}

/// Why a container config does not route syslog(2) to the kmsgfs agent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Unrouted {
    /// No `linux.seccomp` at all.
    #[error("config.json has no linux.seccomp")]
    NoSeccomp,
    /// No rule names `syslog` and the default action is not SCMP_ACT_NOTIFY.
    #[error("no linux.seccomp.syscalls rule for `syslog` with action SCMP_ACT_NOTIFY")]
    NoNotifyRule,
    /// A rule for `syslog` has another action.
    #[error("the linux.seccomp.syscalls rule for `syslog` has action {0}, not SCMP_ACT_NOTIFY")]
    OtherAction(String),
    /// The notify rule only applies to some arguments.
    #[error(
        "the SCMP_ACT_NOTIFY rule for `syslog` has argument conditions, so some calls bypass it"
    )]
    Conditional,
    /// No `listenerPath`.
    #[error("linux.seccomp has no listenerPath")]
    NoListener,
    /// `listenerPath` names another socket.
    #[error("linux.seccomp.listenerPath is {found}, not the kmsgfs agent socket")]
    WrongListener {
        /// The configured path.
        found: String,
    },
}

/// The outcome of [`check_syslog_routing`] for a config that may get kmsg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogRouting {
    /// No capability set holds CAP_SYSLOG (syslog(2) can only reach the kernel's unprivileged
    /// actions, which `kernel.dmesg_restrict=1` refuses).
    NoCapSyslog,
    /// CAP_SYSLOG, and syslog(2) is sent to the agent.
    Routed,
    /// CAP_SYSLOG without routing, accepted by `--allow-unrouted-syslog`; the warning to log.
    AllowedUnrouted(String),
}

#[derive(Debug, Default, Deserialize)]
struct PolicyConfig {
    #[serde(default)]
    process: Option<PolicyProcess>,
    #[serde(default)]
    linux: Option<PolicyLinux>,
}

#[derive(Debug, Default, Deserialize)]
struct PolicyProcess {
    #[serde(default)]
    capabilities: Option<Capabilities>,
}

#[derive(Debug, Default, Deserialize)]
struct Capabilities {
    #[serde(default)]
    bounding: Option<Vec<String>>,
    #[serde(default)]
    effective: Option<Vec<String>>,
    #[serde(default)]
    permitted: Option<Vec<String>>,
    #[serde(default)]
    inheritable: Option<Vec<String>>,
    #[serde(default)]
    ambient: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct PolicyLinux {
    #[serde(default)]
    seccomp: Option<Seccomp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Seccomp {
    #[serde(default)]
    default_action: String,
    #[serde(default)]
    listener_path: Option<PathBuf>,
    #[serde(default)]
    syscalls: Option<Vec<SyscallRule>>,
}

#[derive(Debug, Default, Deserialize)]
struct SyscallRule {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    action: String,
    #[serde(default)]
    args: Option<Vec<serde_json::Value>>,
}

const NOTIFY: &str = "SCMP_ACT_NOTIFY";

/// Whether a capability name from config.json means CAP_SYSLOG (runtimes accept the names
/// case-insensitively, crun also without the `CAP_` prefix).
fn is_cap_syslog(name: &str) -> bool {
    let upper = name.trim().to_ascii_uppercase();
    upper.strip_prefix("CAP_").unwrap_or(&upper) == "SYSLOG"
}

/// Why `seccomp` does not send every syslog(2) to the listener at `socket`, if it does not.
fn unrouted_reason(seccomp: Option<&Seccomp>, socket: &Path) -> Option<Unrouted> {
    let Some(seccomp) = seccomp else {
        return Some(Unrouted::NoSeccomp);
    };
    let rules: Vec<&SyscallRule> = seccomp
        .syscalls
        .iter()
        .flatten()
        .filter(|r| r.names.iter().any(|n| n.trim() == "syslog"))
        .collect();
    // Any rule with another action may win over the notify rule (or make the runtime fail):
    // fail closed.
    if let Some(other) = rules.iter().find(|r| r.action != NOTIFY) {
        return Some(Unrouted::OtherAction(other.action.clone()));
    }
    if rules.is_empty() && seccomp.default_action != NOTIFY {
        return Some(Unrouted::NoNotifyRule);
    }
    if rules
        .iter()
        .any(|r| r.args.as_ref().is_some_and(|a| !a.is_empty()))
    {
        return Some(Unrouted::Conditional);
    }
    match &seccomp.listener_path {
        None => Some(Unrouted::NoListener),
        // Component-wise: `//` and a trailing `/` do not matter.
        Some(p) if p.as_path() != socket => Some(Unrouted::WrongListener {
            found: p.display().to_string(),
        }),
        Some(_) => None,
    }
}

/// The capability sets of an OCI `process.capabilities`, each of which may grant CAP_SYSLOG.
pub const CAPABILITY_SETS: [&str; 5] = [
    "bounding",
    "effective",
    "permitted",
    "inheritable",
    "ambient",
];

/// The hook's rule for syslog(2), on the bundle's `config.json`: a container granted
/// CAP_SYSLOG in any capability set must send syslog(2) to the kmsgfs agent at `socket`
/// (a `syslog` rule with action SCMP_ACT_NOTIFY, or that default action, and `listenerPath`
/// naming `socket`), or util-linux `dmesg`, which falls back to syslog(2) whenever its first
/// `/dev/kmsg` read returns EAGAIN, prints the host's log. `allow_unrouted` turns the refusal
/// into a warning. `id` names the container in messages.
pub fn check_syslog_routing(
    config: &[u8],
    socket: &Path,
    allow_unrouted: bool,
    id: &str,
) -> Result<SyslogRouting, HookError> {
    let cfg: PolicyConfig = serde_json::from_slice(config).map_err(|e| HookError::Input {
        what: "config.json",
        detail: e.to_string(),
    })?;
    let caps = cfg.process.and_then(|p| p.capabilities).unwrap_or_default();
    let sets: Vec<&str> = [
        ("bounding", &caps.bounding),
        ("effective", &caps.effective),
        ("permitted", &caps.permitted),
        ("inheritable", &caps.inheritable),
        ("ambient", &caps.ambient),
    ]
    .into_iter()
    .filter(|(_, set)| set.iter().flatten().any(|c| is_cap_syslog(c)))
    .map(|(name, _)| name)
    .collect();
    if sets.is_empty() {
        return Ok(SyslogRouting::NoCapSyslog);
    }
    let seccomp = cfg.linux.and_then(|l| l.seccomp);
    let Some(reason) = unrouted_reason(seccomp.as_ref(), socket) else {
        return Ok(SyslogRouting::Routed);
    };
    let err = HookError::UnroutedSyslog {
        id: id.to_string(),
        sets: sets.join(", "),
        reason,
        socket: socket.display().to_string(),
    };
    if allow_unrouted {
        Ok(SyslogRouting::AllowedUnrouted(format!(
            "--allow-unrouted-syslog: {err}"
        )))
    } else {
        Err(err)
    }
}

fn sys(call: impl Into<String>) -> impl FnOnce(std::io::Error) -> HookError {
    let call = call.into();
    move |source| HookError::Sys(SysError::new(call, source))
}

/// The fields of the OCI state the hook needs.
#[derive(Debug, Clone, Deserialize)]
pub struct State {
    /// The container's init process, in the runtime's pid namespace.
    pub pid: i32,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The container id (for messages).
    #[serde(default)]
    pub id: String,
}

#[derive(Debug, Deserialize)]
struct Config {
    root: Root,
}

#[derive(Debug, Deserialize)]
struct Root {
    path: PathBuf,
}

/// Parse the state JSON.
pub fn parse_state(text: &[u8]) -> Result<State, HookError> {
    serde_json::from_slice(text).map_err(|e| HookError::Input {
        what: "state",
        detail: e.to_string(),
    })
}

/// The bundle's `config.json`.
pub fn read_config(bundle: &Path) -> Result<Vec<u8>, HookError> {
    let p = bundle.join("config.json");
    std::fs::read(&p).map_err(sys(format!("read({})", p.display())))
}

/// The container's root path from the bundle's `config.json`, absolute.
pub fn rootfs(bundle: &Path) -> Result<PathBuf, HookError> {
    rootfs_of(bundle, &read_config(bundle)?)
}

/// The container's root path from `config.json` text, absolute.
fn rootfs_of(bundle: &Path, text: &[u8]) -> Result<PathBuf, HookError> {
    let cfg: Config = serde_json::from_slice(text).map_err(|e| HookError::Input {
        what: "config.json",
        detail: e.to_string(),
    })?;
    Ok(if cfg.root.path.is_absolute() {
        cfg.root.path
    } else {
        bundle.join(cfg.root.path)
    })
}

/// One bind mount to make inside the container.
#[derive(Debug, Clone)]
struct Bind {
    source: PathBuf,
    /// Directory components below the root, then the file name.
    dir: &'static str,
    name: &'static str,
    optional: bool,
}

/// In the container's mount namespace: bind each source over its target below `root`.
fn bind_all(root: &Path, binds: &[Bind]) -> Result<Vec<String>, String> {
    let mut done = Vec::new();
    let rfd = process::open_dir_path(root).map_err(|e| e.to_string())?;
    for b in binds {
        let src = b.source.display().to_string();
        if std::fs::symlink_metadata(&b.source).is_err() {
            if b.optional {
                continue;
            }
            return Err(format!(
                "{src} does not exist in the container's mount namespace: was kmsgfs serve \
                 mounted before the container was created?"
            ));
        }
        let dir = process::openat(
            rfd.as_fd(),
            "ROOT",
            b.dir,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        )
        .map_err(|e| format!("{e} (O_NOFOLLOW)"))?;
        let target =
            match process::openat(dir.as_fd(), b.dir, b.name, libc::O_PATH | libc::O_NOFOLLOW) {
                Ok(fd) => fd,
                Err(e) if e.errno() == Some(libc::ENOENT) && !b.optional => process::openat(
                    dir.as_fd(),
                    b.dir,
                    b.name,
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW,
                )
                .map_err(|e| format!("{e} (O_CREAT)"))?,
                Err(e) if b.optional => {
                    log::debug!("no {}/{}: {e}", b.dir, b.name);
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            };
        if process::is_symlink(target.as_fd()) {
            return Err(format!(
                "{}/{} in the container is a symlink; refusing",
                b.dir, b.name
            ));
        }
        // Through the fd: the target cannot be swapped for a symlink after the check.
        let tpath = PathBuf::from(format!("/proc/self/fd/{}", target.as_raw_fd()));
        process::mount(Some(&b.source), &tpath, None, libc::MS_BIND, "MS_BIND")
            .map_err(|e| format!("{e} (ROOT/{}/{})", b.dir, b.name))?;
        done.push(format!("{}/{}", b.dir, b.name));
    }
    Ok(done)
}

/// Whether this process runs in a pid namespace other than the one `/proc` shows (its pid
/// differs from the target of `/proc/self`).
fn in_foreign_pid_ns() -> bool {
    let mine = std::process::id();
    match std::fs::read_link("/proc/self") {
        Ok(p) => p.to_str().and_then(|s| s.parse::<u32>().ok()) != Some(mine),
        Err(_) => false,
    }
}

/// Make the bind mounts in the mount namespace of `state.pid`.
pub fn apply(state: &State, mount: &Path) -> Result<(), HookError> {
    apply_config(state, mount, &read_config(&state.bundle)?)
}

/// [`apply`] with the bundle's `config.json` already read.
fn apply_config(state: &State, mount: &Path, config: &[u8]) -> Result<(), HookError> {
    let root = rootfs_of(&state.bundle, config)?;
    let binds = [
        Bind {
            source: mount.join("kmsg"),
            dir: "dev",
            name: "kmsg",
            optional: false,
        },
        Bind {
            source: mount.join("proc-kmsg"),
            dir: "proc",
            name: "kmsg",
            optional: true,
        },
    ];
    // runc runs createContainer hooks from the container's own init, already inside the
    // container's mount and pid namespaces, and reports that init's pid as seen inside (1).
    // `/proc` is still the host's then, so `/proc/<pid>` would name a host process: detect
    // the case (our pid differs from `/proc/self`) and bind in the current mount namespace.
    let ns = if in_foreign_pid_ns() {
        log::debug!("running inside the container's namespaces; no setns");
        None
    } else {
        let ns_path = format!("/proc/{}/ns/mnt", state.pid);
        let f = std::fs::File::open(&ns_path).map_err(sys(format!("open({ns_path})")))?;
        Some((ns_path, f))
    };
    let (rd, wr) = process::pipe_cloexec()?;
    let threads = process::thread_count()?;
    if threads != 1 {
        return Err(HookError::NotSingleThreaded(threads));
    }
    // SAFETY: checked just above: this process has one thread, so the child is a consistent
    // copy (no lock of another thread is held in it).
    let pid = match unsafe { process::fork() }? {
        Fork::Child => {
            drop(rd);
            let entered = match &ns {
                None => Ok(()),
                Some((ns_path, f)) => {
                    process::setns(f.as_fd(), libc::CLONE_NEWNS, ns_path).map_err(|e| e.to_string())
                }
            };
            let (msg, code) = match entered.and_then(|()| bind_all(&root, &binds)) {
                Ok(done) => (done.join(" "), 0),
                Err(e) => (e, 1),
            };
            let mut f = std::fs::File::from(wr);
            let _ = std::io::Write::write_all(&mut f, msg.as_bytes());
            drop(f);
            process::exit_now(code)
        }
        Fork::Parent(pid) => pid,
    };
    drop(wr);
    let mut msg = String::new();
    let _ = std::fs::File::from(rd).read_to_string(&mut msg);
    let status = process::waitpid_blocking(pid)?;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(HookError::Child(msg));
    }
    log::info!(
        "container {} (pid {}): bound {} from {}",
        state.id,
        state.pid,
        msg,
        mount.display()
    );
    Ok(())
}

/// `kmsgfs oci-hook`: read the state from stdin and apply.
pub fn main(args: &OciHookArgs) -> Result<(), HookError> {
    let mut text = Vec::new();
    std::io::stdin()
        .read_to_end(&mut text)
        .map_err(sys("read(stdin)"))?;
    let state = parse_state(&text)?;
    let config = read_config(&state.bundle)?;
    let socket = args
        .seccomp_socket
        .clone()
        .unwrap_or_else(|| crate::frontends::seccomp::default_socket_for(&args.mount));
    // Before anything is mounted: a refused container gets nothing, and the runtime does not
    // start it (a failing createContainer hook aborts the start).
    match check_syslog_routing(&config, &socket, args.allow_unrouted_syslog, &state.id)? {
        SyslogRouting::NoCapSyslog => {}
        SyslogRouting::Routed => log::debug!(
            "container {}: CAP_SYSLOG, syslog(2) routed to {}",
            state.id,
            socket.display()
        ),
        SyslogRouting::AllowedUnrouted(warning) => {
            log::warn!("{warning}");
            eprintln!("kmsgfs oci-hook: warning: {warning}");
        }
    }
    apply_config(&state, &args.mount, &config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_parses_runc_shape() {
        let s = parse_state(
            br#"{"ociVersion":"1.0.2","id":"c1","status":"created","pid":42,
                "bundle":"/b","annotations":{"x":"y"}}"#,
        )
        .unwrap();
        assert_eq!(s.pid, 42);
        assert_eq!(s.bundle, PathBuf::from("/b"));
        assert_eq!(s.id, "c1");
    }

    #[test]
    fn state_without_pid_is_an_error() {
        let e = parse_state(br#"{"bundle":"/b"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid OCI state"), "{e}");
    }

    const SOCK: &str = "/run/kmsgfs.seccomp.sock";

    /// A runc-like config with CAP_SYSLOG in `sets` and `seccomp` as `linux.seccomp`.
    fn config(sets: &[&str], seccomp: Option<serde_json::Value>) -> Vec<u8> {
        let mut caps = serde_json::json!({
            "bounding": ["CAP_KILL", "CAP_AUDIT_WRITE"],
            "effective": ["CAP_KILL"],
            "permitted": ["CAP_KILL"],
        });
        for set in sets {
            let list = caps[*set].as_array().cloned().unwrap_or_default();
            let mut list = list;
            list.push(serde_json::json!("CAP_SYSLOG"));
            caps[*set] = serde_json::Value::Array(list);
        }
        let mut cfg = serde_json::json!({
            "root": {"path": "rootfs"},
            "process": {"args": ["sh"], "capabilities": caps},
            "linux": {"namespaces": [{"type": "mount"}]}
        });
        if let Some(seccomp) = seccomp {
            cfg["linux"]["seccomp"] = seccomp;
        }
        serde_json::to_vec(&cfg).unwrap()
    }

    fn check(cfg: &[u8], allow: bool) -> Result<SyslogRouting, HookError> {
        check_syslog_routing(cfg, Path::new(SOCK), allow, "c1")
    }

    fn refused(cfg: &[u8]) -> Unrouted {
        match check(cfg, false) {
            Err(HookError::UnroutedSyslog { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn kmsgfs_profile() -> serde_json::Value {
        crate::frontends::seccomp::seccomp_profile(Path::new(SOCK))
    }

    #[test]
    fn no_cap_syslog_is_ok_with_or_without_seccomp() {
        assert_eq!(
            check(&config(&[], None), false).unwrap(),
            SyslogRouting::NoCapSyslog
        );
        assert_eq!(
            check(&config(&[], Some(kmsgfs_profile())), false).unwrap(),
            SyslogRouting::NoCapSyslog
        );
        // No process.capabilities at all (the runtime then grants none).
        assert_eq!(
            check(br#"{"root":{"path":"r"}}"#, false).unwrap(),
            SyslogRouting::NoCapSyslog
        );
    }

    #[test]
    fn cap_syslog_with_the_notify_rule_and_listener_is_ok() {
        for set in CAPABILITY_SETS {
            assert_eq!(
                check(&config(&[set], Some(kmsgfs_profile())), false).unwrap(),
                SyslogRouting::Routed,
                "{set}"
            );
        }
        // Spelled with `//` or a trailing slash, the listener is the same socket.
        let mut p = kmsgfs_profile();
        p["listenerPath"] = serde_json::json!("/run//kmsgfs.seccomp.sock/");
        assert_eq!(
            check(&config(&["effective"], Some(p)), false).unwrap(),
            SyslogRouting::Routed
        );
        // A notify default action with no syslog rule routes it too.
        let p = serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": SOCK});
        assert_eq!(
            check(&config(&["effective"], Some(p)), false).unwrap(),
            SyslogRouting::Routed
        );
    }

    #[test]
    fn cap_syslog_in_any_set_without_a_rule_is_refused() {
        for set in CAPABILITY_SETS {
            assert_eq!(refused(&config(&[set], None)), Unrouted::NoSeccomp, "{set}");
        }
        // Other spellings runtimes accept.
        let cfg = br#"{"process":{"capabilities":{"effective":["cap_syslog"]}}}"#;
        assert_eq!(refused(cfg), Unrouted::NoSeccomp);
        let cfg = br#"{"process":{"capabilities":{"ambient":["SYSLOG"]}}}"#;
        assert_eq!(refused(cfg), Unrouted::NoSeccomp);
        // A seccomp profile without a syslog rule (Docker's default has none that notifies).
        let p = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": SOCK,
            "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]});
        assert_eq!(
            refused(&config(&["bounding"], Some(p))),
            Unrouted::NoNotifyRule
        );
    }

    #[test]
    fn a_syslog_rule_with_another_action_is_refused() {
        for action in [
            "SCMP_ACT_ALLOW",
            "SCMP_ACT_ERRNO",
            "SCMP_ACT_LOG",
            "SCMP_ACT_TRACE",
        ] {
            let mut p = kmsgfs_profile();
            p["syscalls"][0]["action"] = serde_json::json!(action);
            assert_eq!(
                refused(&config(&["effective"], Some(p))),
                Unrouted::OtherAction(action.into())
            );
        }
        // A second, conflicting rule next to the notify one.
        let mut p = kmsgfs_profile();
        p["syscalls"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"names": ["syslog", "uname"], "action": "SCMP_ACT_ALLOW"}));
        assert_eq!(
            refused(&config(&["effective"], Some(p))),
            Unrouted::OtherAction("SCMP_ACT_ALLOW".into())
        );
        // A notify rule that only matches some arguments.
        let mut p = kmsgfs_profile();
        p["syscalls"][0]["args"] =
            serde_json::json!([{"index": 0, "value": 3, "op": "SCMP_CMP_EQ"}]);
        assert_eq!(
            refused(&config(&["effective"], Some(p))),
            Unrouted::Conditional
        );
    }

    #[test]
    fn a_wrong_or_missing_listener_path_is_refused() {
        let mut p = kmsgfs_profile();
        p["listenerPath"] = serde_json::json!("/run/other-agent.sock");
        assert_eq!(
            refused(&config(&["permitted"], Some(p))),
            Unrouted::WrongListener {
                found: "/run/other-agent.sock".into()
            }
        );
        let mut p = kmsgfs_profile();
        p.as_object_mut().unwrap().remove("listenerPath");
        assert_eq!(
            refused(&config(&["permitted"], Some(p))),
            Unrouted::NoListener
        );
    }

    #[test]
    fn the_refusal_names_the_cause_and_the_remedies() {
        let err = check(&config(&["effective", "bounding"], None), false).unwrap_err();
        let msg = err.to_string();
        for needle in [
            "container c1",
            "CAP_SYSLOG (bounding, effective)",
            "no linux.seccomp",
            "HOST kernel log",
            "SCMP_ACT_NOTIFY",
            SOCK,
            "--allow-unrouted-syslog",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing from {msg}");
        }
    }

    #[test]
    fn opting_out_turns_every_refusal_into_a_warning() {
        let mut wrong = kmsgfs_profile();
        wrong["listenerPath"] = serde_json::json!("/elsewhere.sock");
        for cfg in [
            config(&["effective"], None),
            config(&["ambient"], Some(wrong)),
        ] {
            match check(&cfg, true).unwrap() {
                SyslogRouting::AllowedUnrouted(w) => {
                    assert!(w.contains("--allow-unrouted-syslog"), "{w}");
                    assert!(w.contains("HOST kernel log"), "{w}");
                }
                other => panic!("expected a warning, got {other:?}"),
            }
        }
        // Nothing to warn about when there is nothing unrouted.
        assert_eq!(
            check(&config(&["effective"], Some(kmsgfs_profile())), true).unwrap(),
            SyslogRouting::Routed
        );
        assert_eq!(
            check(&config(&[], None), true).unwrap(),
            SyslogRouting::NoCapSyslog
        );
    }

    #[test]
    fn malformed_config_is_an_error_not_a_panic() {
        for text in [
            &b"not json"[..],
            br#"{"process":{"capabilities":{"effective":"CAP_SYSLOG"}}}"#,
        ] {
            let e = check(text, false).unwrap_err();
            assert!(e.to_string().contains("invalid OCI config.json"), "{e}");
        }
    }

    #[test]
    fn relative_root_is_below_the_bundle() {
        let dir = std::env::temp_dir().join(format!("kmsgfs-hook-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), r#"{"root":{"path":"rootfs"}}"#).unwrap();
        assert_eq!(rootfs(&dir).unwrap(), dir.join("rootfs"));
        std::fs::write(dir.join("config.json"), r#"{"root":{"path":"/abs"}}"#).unwrap();
        assert_eq!(rootfs(&dir).unwrap(), PathBuf::from("/abs"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
