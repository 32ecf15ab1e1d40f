//! Encoding and sending replies and notifications.
//!
//! A reply is a [`abi::fuse_out_header`] (`len`, negative errno or 0, the request's `unique`
//! verbatim) followed by the payload, written with **one** `writev(2)`: the device takes each
//! write as exactly one message and rejects a `len` that disagrees with the bytes written.
//! A notification is the same with `unique` 0 and the notification code in `error`.
//!
//! Reply objects ([`ReplyData`], [`ReplyEntry`], …) have fuser's names and methods. Each is
//! `Send + 'static` and holds the [`Channel`] its request was read from: the kernel matches a
//! reply only against requests read through the same fd (`fs/fuse/dev.c`,
//! `fuse_dev_do_write` searches `fud->pq`), so a reply must travel back on that fd even when a
//! parked READ is answered from another thread much later. A reply dropped without an answer
//! sends EIO, as fuser's do, so no caller hangs on a forgotten request. After a session was
//! stopped for a hand-over the channel is *muted*: replies, including the EIO of a drop, are
//! not sent, and the requests stay with the kernel for the successor's FUSE_NOTIFY_RESEND.

use std::ffi::OsStr;
use std::io::IoSlice;
use std::mem::size_of;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::abi::{self, as_bytes};
use super::types::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, PollEvents,
};
use crate::sys::{fuse_dev, SysError};

/// One fd of a FUSE connection (the original or a clone), shared by the worker that reads
/// requests from it and by every reply to those requests.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
    muted: Arc<AtomicBool>,
}

impl Channel {
    /// A channel over `fd`; replies are dropped silently once `muted` is set.
    pub fn new(fd: OwnedFd, muted: Arc<AtomicBool>) -> Self {
        Channel { fd, muted }
    }

    /// The fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether replies are suppressed (the session was stopped for a hand-over).
    pub fn is_muted(&self) -> bool {
        self.muted.load(Ordering::Acquire)
    }

    /// Answer request `unique` with `-errno` (no payload), muted or not: for requests a
    /// predecessor read ([`super::session`], "drain"). ENOENT: not on this fd's processing list.
    pub(crate) fn send_error(&self, unique: u64, errno: Errno) -> Result<(), SysError> {
        self.send(unique, -errno.code(), &[])
    }

    /// Write one message: header plus `parts`.
    fn send(&self, unique: u64, error: i32, parts: &[&[u8]]) -> Result<(), SysError> {
        let payload: usize = parts.iter().map(|p| p.len()).sum();
        let h = out_header(unique, error, payload);
        let mut iov = Vec::with_capacity(parts.len() + 1);
        iov.push(IoSlice::new(as_bytes(&h)));
        iov.extend(
            parts
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| IoSlice::new(p)),
        );
        fuse_dev::writev(self.fd(), &iov).map(|_| ())
    }
}

/// The header of a message with `payload` bytes after it.
pub fn out_header(unique: u64, error: i32, payload: usize) -> abi::fuse_out_header {
    abi::fuse_out_header {
        len: (size_of::<abi::fuse_out_header>() + payload) as u32,
        error,
        unique,
    }
}

/// The pending answer to one request; the typed replies wrap it.
#[derive(Debug)]
struct ReplyRaw {
    unique: u64,
    ch: Option<Arc<Channel>>,
}

impl ReplyRaw {
    fn new(unique: u64, ch: Arc<Channel>) -> Self {
        ReplyRaw {
            unique,
            ch: Some(ch),
        }
    }

    fn send(mut self, error: i32, parts: &[&[u8]]) {
        if let Some(ch) = self.ch.take() {
            if ch.is_muted() {
                return;
            }
            if let Err(e) = ch.send(self.unique, error, parts) {
                // ENOENT: the request was interrupted or aborted meanwhile. Either way the
                // caller is gone; nothing to do, and a client must not fill the log.
                log::debug!("reply to request {:#x}: {e}", self.unique);
            }
        }
    }

    fn ok(self, parts: &[&[u8]]) {
        self.send(0, parts)
    }

    fn error(self, e: Errno) {
        self.send(-e.code(), &[])
    }
}

impl Drop for ReplyRaw {
    fn drop(&mut self) {
        if let Some(ch) = self.ch.take() {
            if !ch.is_muted() {
                log::debug!("request {:#x} dropped without reply: EIO", self.unique);
                let _ = ch.send(self.unique, -libc::EIO, &[]);
            }
        }
    }
}

fn ttl_parts(ttl: &Duration) -> (u64, u32) {
    (ttl.as_secs(), ttl.subsec_nanos())
}

macro_rules! reply_type {
    ($($(#[$m:meta])* $name:ident;)*) => {
        $(
            $(#[$m])*
            #[derive(Debug)]
            pub struct $name(ReplyRaw);
            impl $name {
                pub(crate) fn new(unique: u64, ch: Arc<Channel>) -> Self {
                    $name(ReplyRaw::new(unique, ch))
                }
                /// Answer with an error.
                pub fn error(self, e: Errno) {
                    self.0.error(e)
                }
            }
        )*
    };
}

reply_type! {
    /// Answer to LOOKUP.
    ReplyEntry;
    /// Answer to GETATTR and SETATTR.
    ReplyAttr;
    /// Answer to OPEN and OPENDIR.
    ReplyOpen;
    /// Answer to READ.
    ReplyData;
    /// Answer to WRITE.
    ReplyWrite;
    /// Answer without payload (FLUSH, RELEASE, ACCESS, …).
    ReplyEmpty;
    /// Answer to POLL.
    ReplyPoll;
    /// Answer to LSEEK.
    ReplyLseek;
    /// Answer to IOCTL.
    ReplyIoctl;
    /// Answer to GETXATTR and LISTXATTR.
    ReplyXattr;
    /// Answer to STATFS.
    ReplyStatfs;
}

impl ReplyEntry {
    /// The entry `attr`, valid for `ttl` (entry and attributes alike).
    pub fn entry(self, ttl: &Duration, attr: &FileAttr, generation: Generation) {
        let (s, ns) = ttl_parts(ttl);
        let e = abi::fuse_entry_out {
            nodeid: attr.ino.0,
            generation: generation.0,
            entry_valid: s,
            attr_valid: s,
            entry_valid_nsec: ns,
            attr_valid_nsec: ns,
            attr: attr.to_wire(),
        };
        self.0.ok(&[as_bytes(&e)])
    }
}

impl ReplyAttr {
    /// The attributes, valid for `ttl`.
    pub fn attr(self, ttl: &Duration, attr: &FileAttr) {
        let (s, ns) = ttl_parts(ttl);
        let a = abi::fuse_attr_out {
            attr_valid: s,
            attr_valid_nsec: ns,
            dummy: 0,
            attr: attr.to_wire(),
        };
        self.0.ok(&[as_bytes(&a)])
    }
}

impl ReplyOpen {
    /// Opened with handle `fh` and `flags` (e.g. FOPEN_DIRECT_IO).
    pub fn opened(self, fh: FileHandle, flags: FopenFlags) {
        let o = abi::fuse_open_out {
            fh: fh.0,
            open_flags: flags.bits(),
            backing_id: 0,
        };
        self.0.ok(&[as_bytes(&o)])
    }
}

impl ReplyData {
    /// The bytes read (at most the requested size).
    pub fn data(self, data: &[u8]) {
        self.0.ok(&[data])
    }
}

impl ReplyWrite {
    /// `size` bytes were written.
    pub fn written(self, size: u32) {
        let w = abi::fuse_write_out { size, padding: 0 };
        self.0.ok(&[as_bytes(&w)])
    }
}

impl ReplyEmpty {
    /// Success.
    pub fn ok(self) {
        self.0.ok(&[])
    }
}

impl ReplyPoll {
    /// The current readiness.
    pub fn poll(self, revents: PollEvents) {
        let p = abi::fuse_poll_out {
            revents: revents.bits(),
            padding: 0,
        };
        self.0.ok(&[as_bytes(&p)])
    }
}

impl ReplyLseek {
    /// The new offset.
    pub fn offset(self, offset: i64) {
        let l = abi::fuse_lseek_out {
            offset: offset as u64,
        };
        self.0.ok(&[as_bytes(&l)])
    }
}

impl ReplyIoctl {
    /// A restricted ioctl's result and output data.
    pub fn ioctl(self, result: i32, data: &[u8]) {
        let o = abi::fuse_ioctl_out {
            result,
            ..Default::default()
        };
        self.0.ok(&[as_bytes(&o), data])
    }
}

impl ReplyXattr {
    /// The size an attribute value (or list) needs, for a request with size 0.
    pub fn size(self, size: u32) {
        let o = abi::fuse_getxattr_out { size, padding: 0 };
        self.0.ok(&[as_bytes(&o)])
    }
    /// The value (or list).
    pub fn data(self, data: &[u8]) {
        self.0.ok(&[data])
    }
}

impl ReplyStatfs {
    /// statfs(2) numbers.
    #[allow(clippy::too_many_arguments)]
    pub fn statfs(
        self,
        blocks: u64,
        bfree: u64,
        bavail: u64,
        files: u64,
        ffree: u64,
        bsize: u32,
        namelen: u32,
        frsize: u32,
    ) {
        let s = abi::fuse_statfs_out {
            st: abi::fuse_kstatfs {
                blocks,
                bfree,
                bavail,
                files,
                ffree,
                bsize,
                namelen,
                frsize,
                padding: 0,
                spare: [0; 6],
            },
        };
        self.0.ok(&[as_bytes(&s)])
    }
}

/// Answer to READDIR: entries are added until the kernel's buffer size is reached.
#[derive(Debug)]
pub struct ReplyDirectory {
    raw: ReplyRaw,
    buf: Vec<u8>,
    limit: usize,
}

impl ReplyDirectory {
    pub(crate) fn new(unique: u64, ch: Arc<Channel>, size: u32) -> Self {
        let limit = size as usize;
        ReplyDirectory {
            raw: ReplyRaw::new(unique, ch),
            buf: Vec::with_capacity(limit.min(64 * 1024)),
            limit,
        }
    }

    /// Add an entry; `offset` is the cookie of the *next* entry (the kernel passes it back in
    /// the next READDIR). Returns `true` if the entry did not fit: the buffer is full, stop.
    pub fn add<T: AsRef<OsStr>>(
        &mut self,
        ino: INodeNo,
        offset: u64,
        kind: FileType,
        name: T,
    ) -> bool {
        let name = name.as_ref().as_bytes();
        let size = abi::dirent_size(name.len());
        if self.buf.len() + size > self.limit {
            return true;
        }
        let d = abi::fuse_dirent {
            ino: ino.0,
            off: offset,
            namelen: name.len() as u32,
            typ: kind.dirent_type(),
        };
        let start = self.buf.len();
        self.buf.extend_from_slice(as_bytes(&d));
        self.buf.extend_from_slice(name);
        self.buf.resize(start + size, 0);
        false
    }

    /// Send the entries added so far (none: end of directory).
    pub fn ok(self) {
        self.raw.ok(&[&self.buf])
    }

    /// Answer with an error.
    pub fn error(self, e: Errno) {
        self.raw.error(e)
    }
}

/// Writes notifications on a connection. Clonable, `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Notifier {
    ch: Arc<Channel>,
}

impl Notifier {
    pub(crate) fn new(ch: Arc<Channel>) -> Self {
        Notifier { ch }
    }

    /// FUSE_NOTIFY_POLL: the poll handle `kh` may have changed readiness.
    pub fn poll_wakeup(&self, kh: u64) -> Result<(), SysError> {
        let w = abi::fuse_notify_poll_wakeup_out { kh };
        self.ch.send(0, abi::FUSE_NOTIFY_POLL, &[as_bytes(&w)])
    }

    /// FUSE_NOTIFY_RESEND (7.40): the kernel queues again every request that was read on any
    /// fd of the connection and not answered; they arrive with [`abi::FUSE_UNIQUE_RESEND`]
    /// set in `unique`.
    pub fn resend(&self) -> Result<(), SysError> {
        self.ch.send(0, abi::FUSE_NOTIFY_RESEND, &[])
    }
}

/// The poll handle of one POLL request (fuser's `PollNotifier`).
#[derive(Debug, Clone)]
pub struct PollNotifier {
    kh: u64,
    notifier: Notifier,
}

impl PollNotifier {
    pub(crate) fn new(kh: u64, notifier: Notifier) -> Self {
        PollNotifier { kh, notifier }
    }

    /// The kernel's handle.
    pub fn kh(&self) -> u64 {
        self.kh
    }

    /// Tell the kernel to poll again.
    pub fn notify(&self) -> Result<(), SysError> {
        self.notifier.poll_wakeup(self.kh)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frontends::fuse::wire::abi::read_pod;

    use std::time::{SystemTime, UNIX_EPOCH};

    /// A SOCK_SEQPACKET pair: message boundaries are kept, like /dev/fuse's.
    pub(crate) fn seqpacket() -> (OwnedFd, OwnedFd) {
        crate::sys::scm::seqpacket_pair().expect("socketpair(SOCK_SEQPACKET)")
    }

    pub(crate) fn recv(fd: &OwnedFd) -> Vec<u8> {
        let mut b = vec![0u8; 1 << 16];
        let n = fuse_dev::read(fd.as_fd(), &mut b).unwrap();
        b.truncate(n);
        b
    }

    /// Whether a message is waiting (non-blocking check).
    pub(crate) fn pending(fd: &OwnedFd) -> bool {
        let fd = std::os::fd::AsRawFd::as_raw_fd(fd);
        // A closed daemon end reads as EOF (POLLIN|POLLHUP): not a message.
        matches!(crate::sys::fd::poll_in([fd], 50), Ok([r]) if r & libc::POLLIN != 0 && r & libc::POLLHUP == 0)
    }

    fn pair() -> (Arc<Channel>, OwnedFd, Arc<AtomicBool>) {
        let (a, b) = seqpacket();
        let muted = Arc::new(AtomicBool::new(false));
        (Arc::new(Channel::new(a, muted.clone())), b, muted)
    }

    fn header(m: &[u8]) -> abi::fuse_out_header {
        read_pod(m).unwrap()
    }

    fn attr() -> FileAttr {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        FileAttr {
            ino: INodeNo(2),
            size: 10,
            blocks: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: SystemTime::UNIX_EPOCH,
            kind: FileType::RegularFile,
            perm: 0o644,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    #[test]
    fn error_reply_is_a_bare_header() {
        let (ch, peer, _) = pair();
        ReplyEmpty::new(0x22, ch).error(Errno::EINTR);
        let m = recv(&peer);
        assert_eq!(m.len(), 16);
        assert_eq!(
            header(&m),
            abi::fuse_out_header {
                len: 16,
                error: -libc::EINTR,
                unique: 0x22
            }
        );
    }

    #[test]
    fn typed_replies_are_byte_exact() {
        let (ch, peer, _) = pair();
        ReplyData::new(4, ch.clone()).data(b"abc");
        let m = recv(&peer);
        assert_eq!(m.len(), 19);
        assert_eq!(
            header(&m),
            abi::fuse_out_header {
                len: 19,
                error: 0,
                unique: 4
            }
        );
        assert_eq!(&m[16..], b"abc");

        ReplyEntry::new(6, ch.clone()).entry(&Duration::new(1, 2), &attr(), Generation(3));
        let m = recv(&peer);
        assert_eq!(m.len(), 16 + 128);
        let e: abi::fuse_entry_out = read_pod(&m[16..]).unwrap();
        assert_eq!(
            (e.nodeid, e.generation, e.entry_valid, e.attr_valid_nsec),
            (2, 3, 1, 2)
        );
        assert_eq!(e.attr.mode, libc::S_IFREG | 0o644);
        assert_eq!((e.attr.mtime, e.attr.mtimensec), (1_700_000_000, 5));

        ReplyAttr::new(8, ch.clone()).attr(&Duration::ZERO, &attr());
        let m = recv(&peer);
        assert_eq!(header(&m).len, 16 + 104);

        ReplyOpen::new(10, ch.clone()).opened(FileHandle(77), FopenFlags::FOPEN_DIRECT_IO);
        let m = recv(&peer);
        assert_eq!(
            read_pod::<abi::fuse_open_out>(&m[16..]).unwrap(),
            abi::fuse_open_out {
                fh: 77,
                open_flags: abi::FOPEN_DIRECT_IO,
                backing_id: 0
            }
        );

        ReplyWrite::new(12, ch.clone()).written(5);
        let m = recv(&peer);
        assert_eq!(&m[16..], &[5, 0, 0, 0, 0, 0, 0, 0]);

        ReplyEmpty::new(14, ch.clone()).ok();
        assert_eq!(recv(&peer).len(), 16);

        ReplyPoll::new(16, ch.clone()).poll(PollEvents::POLLIN | PollEvents::POLLRDNORM);
        let m = recv(&peer);
        assert_eq!(
            read_pod::<abi::fuse_poll_out>(&m[16..]).unwrap().revents,
            (libc::POLLIN | libc::POLLRDNORM) as u32
        );

        ReplyLseek::new(18, ch.clone()).offset(1234);
        let m = recv(&peer);
        assert_eq!(
            read_pod::<abi::fuse_lseek_out>(&m[16..]).unwrap().offset,
            1234
        );

        ReplyIoctl::new(20, ch.clone()).error(Errno::ENOTTY);
        assert_eq!(header(&recv(&peer)).error, -libc::ENOTTY);

        ReplyStatfs::new(22, ch).statfs(0, 0, 0, 0, 0, 512, 255, 0);
        let m = recv(&peer);
        assert_eq!(m.len(), 16 + 80);
        assert_eq!(
            read_pod::<abi::fuse_kstatfs>(&m[16..]).unwrap().namelen,
            255
        );
    }

    #[test]
    fn directory_entries_are_padded_and_limited() {
        let (ch, peer, _) = pair();
        // Room for exactly two entries of 32 bytes ("a" and "kmsg" both pad to 32).
        let mut d = ReplyDirectory::new(30, ch, 64 + 31);
        assert!(!d.add(INodeNo(1), 1, FileType::Directory, "a"));
        assert!(!d.add(INodeNo(2), 2, FileType::RegularFile, "kmsg"));
        assert!(
            d.add(INodeNo(3), 3, FileType::RegularFile, "x"),
            "third does not fit"
        );
        d.ok();
        let m = recv(&peer);
        assert_eq!(header(&m).len as usize, 16 + 64);
        let e1: abi::fuse_dirent = read_pod(&m[16..]).unwrap();
        assert_eq!(
            (e1.ino, e1.off, e1.namelen, e1.typ),
            (1, 1, 1, libc::DT_DIR as u32)
        );
        assert_eq!(&m[16 + 24..16 + 32], b"a\0\0\0\0\0\0\0");
        let e2: abi::fuse_dirent = read_pod(&m[48..]).unwrap();
        assert_eq!(
            (e2.ino, e2.off, e2.namelen, e2.typ),
            (2, 2, 4, libc::DT_REG as u32)
        );
        assert_eq!(&m[48 + 24..48 + 32], b"kmsg\0\0\0\0");
    }

    #[test]
    fn dropped_reply_answers_eio_unless_muted() {
        let (ch, peer, muted) = pair();
        drop(ReplyData::new(40, ch.clone()));
        assert_eq!(
            header(&recv(&peer)),
            abi::fuse_out_header {
                len: 16,
                error: -libc::EIO,
                unique: 40
            }
        );
        muted.store(true, Ordering::Release);
        drop(ReplyData::new(42, ch.clone()));
        ReplyData::new(44, ch.clone()).data(b"x");
        assert!(!pending(&peer), "a muted channel sends nothing");
        drop(ch);
    }

    #[test]
    fn resend_bit_is_echoed() {
        let (ch, peer, _) = pair();
        let u = abi::FUSE_UNIQUE_RESEND | 0x50;
        ReplyData::new(u, ch).data(b"z");
        assert_eq!(header(&recv(&peer)).unique, u);
    }

    #[test]
    fn notifications_have_unique_zero() {
        let (ch, peer, _) = pair();
        let n = Notifier::new(ch);
        PollNotifier::new(0xabc, n.clone()).notify().unwrap();
        let m = recv(&peer);
        assert_eq!(
            header(&m),
            abi::fuse_out_header {
                len: 24,
                error: abi::FUSE_NOTIFY_POLL,
                unique: 0
            }
        );
        assert_eq!(
            read_pod::<abi::fuse_notify_poll_wakeup_out>(&m[16..])
                .unwrap()
                .kh,
            0xabc
        );
        n.resend().unwrap();
        assert_eq!(
            header(&recv(&peer)),
            abi::fuse_out_header {
                len: 16,
                error: abi::FUSE_NOTIFY_RESEND,
                unique: 0
            }
        );
    }
}
