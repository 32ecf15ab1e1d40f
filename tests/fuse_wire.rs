//! kmsgfs's own FUSE transport (`frontends::fuse::wire`) against the real kernel: a tiny
//! filesystem mounted in a temp dir, `cat` and `stat` through it, the adoption of a live
//! connection by a second session (with a READ in flight that the first one never answered),
//! and FUSE_INTERRUPT delivery to parked reads without `fc->no_interrupt` ever being set.
//!
//! Needs root and /dev/fuse; fails with a message otherwise, unless `KMSGFS_ALLOW_SKIP=1`.
//! Mounts are detached by an RAII guard even when an assertion fails.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use crate::support;
use kmsgfs::frontends::fuse::wire::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOptions, OpenFlags, ReplyAttr, ReplyData, ReplyEntry, ReplyOpen, Request, Session,
    SessionOptions,
};
use parking_lot::Mutex;

const INO_DATA: u64 = 2;
const INO_PARK: u64 = 3;
const DATA: &[u8] = b"fixed bytes from kmsgfs wire\n";
const ADOPTED: &[u8] = b"answered by the successor\n";
const WAIT: Duration = Duration::from_secs(10);

/// A temp mount point, detached (MNT_DETACH) and removed on drop, also after a failure.
struct MountGuard(PathBuf);

impl MountGuard {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("kmsgfs-wire-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        MountGuard(p)
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let needle = format!(" {} ", self.0.display());
        for _ in table.lines().filter(|l| l.contains(&needle)) {
            let _ = kmsgfs::sys::mount::detach(&self.0);
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Root with two files: `data` (fixed bytes) and `park` (a READ that waits: until
/// interrupted, or answered by whoever serves the connection next).
struct Tiny {
    /// `park` READs answered by this instance: with ADOPTED at once (the successor), or
    /// parked (the first session).
    answers_park: bool,
    parked: Arc<Mutex<Vec<(u64, ReplyData)>>>,
    /// Interrupts that arrived before their READ was parked (another worker's race).
    early: Mutex<HashSet<u64>>,
    interrupts: Arc<AtomicUsize>,
    resent_reads: Arc<AtomicUsize>,
}

impl Tiny {
    fn new(answers_park: bool) -> Self {
        Tiny {
            answers_park,
            parked: Arc::default(),
            early: Mutex::default(),
            interrupts: Arc::default(),
            resent_reads: Arc::default(),
        }
    }

    fn attr(ino: u64) -> FileAttr {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (kind, perm, size) = match ino {
            1 => (FileType::Directory, 0o555, 0),
            INO_DATA => (FileType::RegularFile, 0o444, DATA.len() as u64),
            _ => (FileType::RegularFile, 0o444, 0),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm,
            nlink: if ino == 1 { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl Filesystem for Tiny {
    fn interrupt(&self, unique: u64) {
        self.interrupts.fetch_add(1, Ordering::SeqCst);
        let mut parked = self.parked.lock();
        match parked.iter().position(|(u, _)| *u == unique) {
            Some(i) => parked.swap_remove(i).1.error(Errno::EINTR),
            None => {
                self.early.lock().insert(unique);
            }
        }
    }

    fn lookup(&self, _req: &Request<'_>, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match (parent.0, name.to_str()) {
            (1, Some("data")) => reply.entry(&Duration::ZERO, &Tiny::attr(INO_DATA), Generation(0)),
            (1, Some("park")) => reply.entry(&Duration::ZERO, &Tiny::attr(INO_PARK), Generation(0)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request<'_>, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&Duration::ZERO, &Tiny::attr(ino.0));
    }

    fn open(&self, _req: &Request<'_>, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(ino.0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        req: &Request<'_>,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if req.is_resend() {
            self.resent_reads.fetch_add(1, Ordering::SeqCst);
        }
        let content = match fh.0 {
            INO_DATA => DATA,
            INO_PARK if self.answers_park => ADOPTED,
            INO_PARK => {
                let u = req.unique().0;
                if self.early.lock().remove(&u) {
                    return reply.error(Errno::EINTR);
                }
                return self.parked.lock().push((u, reply));
            }
            _ => return reply.error(Errno::EBADF),
        };
        let start = (offset as usize).min(content.len());
        let end = (start + size as usize).min(content.len());
        reply.data(&content[start..end]);
    }
}

fn options(threads: usize) -> SessionOptions {
    SessionOptions {
        threads,
        ..SessionOptions::default()
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The scheduler state letter of thread `tid` of this process (`S` sleeping, `D`
/// uninterruptible).
fn thread_state(tid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.chars().next().unwrap()
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// A thread that opens `path` and does one read(2); reports its tid and pthread id, then the
/// result (bytes or the io error kind).
struct Reader {
    tid: i32,
    pthread: libc::pthread_t,
    done: mpsc::Receiver<Result<Vec<u8>, std::io::ErrorKind>>,
}

fn start_reader(path: PathBuf) -> Reader {
    let (ids_tx, ids_rx) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        ids_tx.send((gettid(), me)).unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; 4096];
        let r = f
            .read(&mut buf)
            .map(|n| buf[..n].to_vec())
            .map_err(|e| e.kind());
        let _ = done_tx.send(r);
    });
    let (tid, pthread) = ids_rx.recv_timeout(WAIT).unwrap();
    Reader { tid, pthread, done }
}

extern "C" fn on_usr1(_: libc::c_int) {}

/// SIGUSR1 with a no-op handler and without SA_RESTART: a read interrupted by it returns
/// EINTR.
fn install_usr1() {
    // SAFETY: a zeroed sigaction is valid storage; the handler is an async-signal-safe no-op;
    // sa_mask is initialised by sigemptyset.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as *const () as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
}

#[test]
fn mount_cat_stat_and_adopt_a_live_connection() {
    if !(support::require_root()
        && support::require_path(Path::new("/dev/fuse"), "the FUSE device"))
    {
        return;
    }
    let guard = MountGuard::new("adopt");
    let mnt = guard.0.clone();

    // Session A: fresh mount, INIT, two workers (the original fd and one clone).
    let a_fs = Tiny::new(false);
    let a_parked = a_fs.parked.clone();
    let mut a = Session::mount(a_fs, &mnt, &MountOptions::default(), &options(2)).unwrap();
    let params = a.init_params();
    assert_eq!(params.major, 7);
    assert!(params.minor >= 40, "Linux 6.18 speaks 7.40+: {params:?}");
    assert!(params.can_resend(), "{params:?}");

    let out = std::process::Command::new("cat")
        .arg(mnt.join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, DATA);
    let md = std::fs::metadata(mnt.join("data")).unwrap();
    assert!(md.is_file());
    assert_eq!(md.len(), DATA.len() as u64);
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o777,
        0o444
    );
    assert!(std::fs::metadata(&mnt).unwrap().is_dir());
    assert_eq!(
        std::fs::metadata(mnt.join("nope")).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );

    // A READ that A parks and never answers.
    let reader = start_reader(mnt.join("park"));
    wait_until("the READ to be parked by A", || a_parked.lock().len() == 1);
    assert_eq!(thread_state(reader.tid), 'S');

    // A stops without answering and without unmounting; the "holder" keeps every fd.
    let fds = a.dup_fds().unwrap();
    assert_eq!(fds.len(), 2);
    a.leave_mounted();
    a.hand_over();
    a_parked.lock().clear(); // A's replies die with it: muted, no EIO
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        reader.done.try_recv().is_err(),
        "the reader must still wait after A is gone"
    );
    assert_eq!(thread_state(reader.tid), 'S', "not D while nobody serves");

    // B adopts the same connection with A's parameters: no INIT; RESEND re-queues the READ.
    let b_fs = Tiny::new(true);
    let b_resent = b_fs.resent_reads.clone();
    let mut b = Session::adopt_all(b_fs, fds, params, &options(2)).unwrap();
    b.set_mountpoint(&mnt);
    let got = reader.done.recv_timeout(WAIT).expect("reader finished");
    assert_eq!(got.unwrap(), ADOPTED);
    assert_eq!(
        b_resent.load(Ordering::SeqCst),
        1,
        "the READ came back resent"
    );

    // B serves new requests too.
    assert_eq!(std::fs::read(mnt.join("data")).unwrap(), DATA);

    b.unmount().unwrap();
    b.stop();
    drop(b);
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !table.contains(&format!(" {} ", mnt.display())),
        "unmounted"
    );
    drop(guard);
}

#[test]
fn signal_interrupts_a_parked_read_and_interrupts_stay_enabled() {
    if !(support::require_root()
        && support::require_path(Path::new("/dev/fuse"), "the FUSE device"))
    {
        return;
    }
    install_usr1();
    let guard = MountGuard::new("intr");
    let mnt = guard.0.clone();
    let fs = Tiny::new(false);
    let parked = fs.parked.clone();
    let interrupts = fs.interrupts.clone();
    let s = Session::mount(fs, &mnt, &MountOptions::default(), &options(2)).unwrap();

    // Twice: if the first INTERRUPT had been answered ENOSYS, the kernel would have set
    // no_interrupt and the second reader would sleep in D, deaf to the signal.
    for round in 1..=2 {
        let r = start_reader(mnt.join("park"));
        wait_until("the READ to be parked", || parked.lock().len() == 1);
        assert_eq!(
            thread_state(r.tid),
            'S',
            "round {round}: interruptible sleep"
        );
        // SAFETY: the reader thread is alive (it has not reported a result yet).
        assert_eq!(unsafe { libc::pthread_kill(r.pthread, libc::SIGUSR1) }, 0);
        let got = r.done.recv_timeout(WAIT).expect("reader returned");
        assert_eq!(
            got,
            Err(std::io::ErrorKind::Interrupted),
            "round {round}: EINTR"
        );
        assert_eq!(interrupts.load(Ordering::SeqCst), round, "hook called");
        assert!(parked.lock().is_empty());
    }
    drop(s); // unmounts
    drop(guard);
}
