//! Parts for the hostile-caller tests (`tests/seccomp_hostile.rs`): a FUSE mount whose daemon
//! answers just enough to open and map one file and then never answers a READ ([`StallFuse`]),
//! and C programs compiled with `cc` ([`compile_c`]).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{TempDir, TIMEOUT};

/// A tiny FUSE daemon in Python, speaking the raw `/dev/fuse` protocol: one file `f` of 8192
/// bytes; INIT, LOOKUP, GETATTR, OPEN, FLUSH and RELEASE are answered, every READ is left
/// unanswered for good (it prints `READ-PARKED`).
const STALL_FUSE_PY: &str = r#"
import ctypes, errno, os, struct, sys
target = sys.argv[1]
fd = os.open("/dev/fuse", os.O_RDWR)
libc = ctypes.CDLL(None, use_errno=True)
opts = ("fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other" % fd).encode()
if libc.mount(b"kmsgfs-stall", target.encode(), b"fuse", 6, opts) != 0:
    print("MOUNT-FAILED", os.strerror(ctypes.get_errno()), flush=True)
    sys.exit(1)
print("MOUNTED", flush=True)
def attr(ino, mode, size):
    return struct.pack("<QQQQQQIIIIIIIIII", ino, size, (size + 511) // 512, 0, 0, 0,
                       0, 0, 0, mode, 1, 0, 0, 0, 4096, 0)
def reply(unique, err, body=b""):
    os.write(fd, struct.pack("<IiQ", 16 + len(body), -err, unique) + body)
parked = []
while True:
    try:
        req = os.read(fd, 1 << 20)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.EINTR):
            continue
        break
    ln, op, unique, nodeid = struct.unpack_from("<IIQQ", req)
    if op == 26:    # INIT
        reply(unique, 0, struct.pack("<IIIIHHIIHHII", 7, 31, 0, 0, 16, 12, 4096, 1, 32, 0, 0, 0)
              + b"\0" * 24)
    elif op == 1:   # LOOKUP
        name = req[40:].split(b"\0")[0]
        if name == b"f":
            reply(unique, 0, struct.pack("<QQQQII", 2, 0, 1, 1, 0, 0) + attr(2, 0o100644, 8192))
        else:
            reply(unique, errno.ENOENT)
    elif op == 3:   # GETATTR
        a = attr(1, 0o40755, 0) if nodeid == 1 else attr(2, 0o100644, 8192)
        reply(unique, 0, struct.pack("<QII", 1, 0, 0) + a)
    elif op == 14:  # OPEN
        reply(unique, 0, struct.pack("<QII", 1, 0, 0))
    elif op == 15:  # READ: never answered
        parked.append(unique)
        print("READ-PARKED", flush=True)
    elif op in (25, 18):  # FLUSH, RELEASE
        reply(unique, 0)
    elif op in (2, 42, 36, 38):  # FORGET, BATCH_FORGET, INTERRUPT, DESTROY: no reply
        pass
    else:
        reply(unique, errno.ENOSYS)
"#;

/// A FUSE mount (in the test's temp dir) whose READs are never answered. Dropping it kills the
/// daemon (which aborts the connection: parked requests fail) and detaches the mount.
pub struct StallFuse {
    child: Option<Child>,
    mount: PathBuf,
    lines: mpsc::Receiver<String>,
    _dir: TempDir,
}

impl StallFuse {
    /// Mount it and wait until it serves.
    pub fn start() -> StallFuse {
        let dir = TempDir::new("stallfuse");
        let mount = dir.path().join("mnt");
        std::fs::create_dir_all(&mount).unwrap();
        let script = dir.path().join("stall.py");
        std::fs::write(&script, STALL_FUSE_PY).unwrap();
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(&mount)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3");
        let lines = line_channel(child.stdout.take().unwrap());
        let mut s = StallFuse {
            child: Some(child),
            mount,
            lines,
            _dir: dir,
        };
        let first = s.next_line(TIMEOUT);
        assert_eq!(
            first.as_deref(),
            Some("MOUNTED"),
            "the stalling FUSE daemon"
        );
        s
    }

    /// The file whose pages never arrive.
    pub fn file(&self) -> PathBuf {
        self.mount.join("f")
    }

    /// The daemon's next output line.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Wait until a READ is parked in the daemon.
    pub fn wait_parked_read(&mut self, timeout: Duration) -> bool {
        while let Some(l) = self.next_line(timeout) {
            if l == "READ-PARKED" {
                return true;
            }
        }
        false
    }

    /// Kill the daemon: the connection aborts and every parked request fails.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for StallFuse {
    fn drop(&mut self) {
        self.kill();
        let c = super::cstr(self.mount.as_os_str().as_encoded_bytes());
        // SAFETY: a valid NUL-terminated path; failure (not mounted) is harmless.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Lines of `r` as they arrive.
pub fn line_channel(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Compile `source` with `cc -O1 -pthread` into `dir/name`.
pub fn compile_c(dir: &Path, name: &str, source: &str) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    let exe = dir.join(name);
    std::fs::write(&src, source).unwrap();
    let o = Command::new("cc")
        .args(["-O1", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("run cc");
    assert!(
        o.status.success(),
        "cc {name}.c: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    exe
}
