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
//! runc's default `maskedPaths` contains `/proc/kmsg` and is applied after this hook, so the
//! per-container `/proc/kmsg` needs that entry removed (docs/deploy.md).

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// Options of `kmsgfs oci-hook`.
#[derive(Debug, Clone, clap::Args)]
pub struct OciHookArgs {
    /// Directory where `kmsgfs serve` is mounted (as seen by the runtime).
    #[arg(long, value_name = "DIR", default_value = super::run::DEFAULT_MOUNT)]
    pub mount: PathBuf,
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
    #[error("`{call}` failed: {source}")]
    Sys {
        /// The call with its arguments.
        call: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The child that entered the container failed.
    #[error("in the container's mount namespace: {0}")]
    Child(String),
}

fn sys(call: impl Into<String>) -> impl FnOnce(std::io::Error) -> HookError {
    let call = call.into();
    move |source| HookError::Sys { call, source }
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

/// The container's root path from the bundle's `config.json`, absolute.
pub fn rootfs(bundle: &Path) -> Result<PathBuf, HookError> {
    let p = bundle.join("config.json");
    let text = std::fs::read(&p).map_err(sys(format!("read({})", p.display())))?;
    let cfg: Config = serde_json::from_slice(&text).map_err(|e| HookError::Input {
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
    source: CString,
    /// Directory components below the root, then the file name.
    dir: &'static str,
    name: &'static str,
    optional: bool,
}

fn cstr(p: &Path) -> Result<CString, HookError> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| HookError::Input {
        what: "state",
        detail: format!("path with NUL: {}", p.display()),
    })
}

fn openat(dir: RawFd, name: &str, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a valid NUL-terminated string; the mode is used only with O_CREAT.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn is_symlink(fd: &OwnedFd) -> bool {
    // SAFETY: an all-zero stat is valid storage; fstat fills it for a valid fd.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is writable.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// In the container's mount namespace: bind each source over its target below `root`.
fn bind_all(root: &CString, binds: &[Bind]) -> Result<Vec<String>, String> {
    let mut done = Vec::new();
    // SAFETY: `root` is a valid C string.
    let rfd = unsafe {
        libc::open(
            root.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if rfd < 0 {
        return Err(format!(
            "`open({})` failed: {}",
            root.to_string_lossy(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a new descriptor we own.
    let rfd = unsafe { OwnedFd::from_raw_fd(rfd) };
    for b in binds {
        let src = b.source.to_string_lossy().into_owned();
        if std::fs::symlink_metadata(&src).is_err() {
            if b.optional {
                continue;
            }
            return Err(format!(
                "{src} does not exist in the container's mount namespace: was kmsgfs serve \
                 mounted before the container was created?"
            ));
        }
        let dir = openat(
            rfd.as_raw_fd(),
            b.dir,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        )
        .map_err(|e| format!("`openat(ROOT, {}, O_NOFOLLOW)` failed: {e}", b.dir))?;
        let target = match openat(dir.as_raw_fd(), b.name, libc::O_PATH | libc::O_NOFOLLOW) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !b.optional => openat(
                dir.as_raw_fd(),
                b.name,
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW,
            )
            .map_err(|e| format!("`openat({}, {}, O_CREAT)` failed: {e}", b.dir, b.name))?,
            Err(e) if b.optional => {
                log::debug!("no {}/{}: {e}", b.dir, b.name);
                continue;
            }
            Err(e) => return Err(format!("`openat({}, {})` failed: {e}", b.dir, b.name)),
        };
        if is_symlink(&target) {
            return Err(format!(
                "{}/{} in the container is a symlink; refusing",
                b.dir, b.name
            ));
        }
        let tpath = CString::new(format!("/proc/self/fd/{}", target.as_raw_fd()))
            .expect("no NUL in a number");
        // SAFETY: both strings are valid; a bind mount ignores fstype and data.
        let rc = unsafe {
            libc::mount(
                b.source.as_ptr(),
                tpath.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(format!(
                "`mount({src}, ROOT/{}/{}, MS_BIND)` failed: {}",
                b.dir,
                b.name,
                std::io::Error::last_os_error()
            ));
        }
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
    let root = cstr(&rootfs(&state.bundle)?)?;
    let binds = [
        Bind {
            source: cstr(&mount.join("kmsg"))?,
            dir: "dev",
            name: "kmsg",
            optional: false,
        },
        Bind {
            source: cstr(&mount.join("proc-kmsg"))?,
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
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is valid storage for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(sys("pipe2()")(std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 returned two new descriptors we own.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fork(2); the child only makes system calls and small allocations before _exit,
    // which is sound because the hook is single-threaded at this point (no locks held).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(sys("fork()")(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(rd);
        let entered = match &ns {
            None => Ok(()),
            // SAFETY: `f` is an open nsfs file of a mount namespace.
            Some((ns_path, f)) => match unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNS) } {
                0 => Ok(()),
                _ => Err(format!(
                    "`setns({ns_path}, CLONE_NEWNS)` failed: {}",
                    std::io::Error::last_os_error()
                )),
            },
        };
        let r = entered.and_then(|()| bind_all(&root, &binds));
        let (msg, code) = match r {
            Ok(done) => (done.join(" "), 0),
            Err(e) => (e, 1),
        };
        let mut f = std::fs::File::from(wr);
        let _ = std::io::Write::write_all(&mut f, msg.as_bytes());
        drop(f);
        // SAFETY: _exit ends the forked child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    drop(wr);
    let mut msg = String::new();
    let _ = std::fs::File::from(rd).read_to_string(&mut msg);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(sys(format!("waitpid({pid})"))(e));
        }
    }
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
    apply(&state, &args.mount)
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
