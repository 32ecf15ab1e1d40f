//! The [`Filesystem`] trait and the dispatch of one parsed request to it.
//!
//! The trait has fuser 0.18's method names and signatures for the operations kmsgfs serves,
//! so `impl fuser::Filesystem for KmsgFs` becomes `impl wire::Filesystem for KmsgFs` with
//! small edits. Differences: `destroy` takes `&self` (the filesystem is shared by the worker
//! threads as soon as INIT is done); [`Filesystem::interrupt`] receives FUSE_INTERRUPT (never
//! answered, see [`dispatch`]); [`Filesystem::unsupported`] chooses the errno for every opcode
//! the trait has no method for, replacing fuser's logging stubs (mknod, mkdir, create, …).
//! Defaults answer ENOSYS without a log line: a client must not be able to flood the log.

use std::ffi::OsStr;
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use super::abi;
use super::reply::{
    Channel, Notifier, PollNotifier, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyIoctl, ReplyLseek, ReplyOpen, ReplyPoll, ReplyStatfs, ReplyWrite, ReplyXattr,
};
use super::request::{Operation, Request};
use super::types::{
    time_from_wire, AccessFlags, BsdFileFlags, Errno, FileHandle, FopenFlags, INodeNo, IoctlFlags,
    KernelConfig, LockOwner, OpenFlags, PollEvents, PollFlags, TimeOrNow, WriteFlags,
};

/// A filesystem served by a [`super::Session`]. All methods but `init` take `&self` and may
/// be called from several worker threads at once; replies may be kept and answered later
/// from any thread.
#[allow(clippy::too_many_arguments, unused_variables)]
pub trait Filesystem: Send + Sync + 'static {
    /// FUSE_INIT of a fresh connection: request capabilities, adjust limits. Not called when
    /// a session adopts a live connection (the predecessor's negotiation stands).
    fn init(&mut self, req: &Request<'_>, config: &mut KernelConfig) -> io::Result<()> {
        Ok(())
    }
    /// FUSE_DESTROY: the connection is shutting down.
    fn destroy(&self) {}
    /// FUSE_INTERRUPT for the request `unique` (the value its `Request::unique()` had, bit
    /// 63 included for a resent request). Answer that request (typically EINTR) if it is still
    /// pending; the INTERRUPT itself gets no reply. It can arrive before the request it refers
    /// to was handed to the filesystem by another worker thread.
    fn interrupt(&self, unique: u64) {}
    /// The errno for an opcode the trait has no method for.
    fn unsupported(&self, req: &Request<'_>, opcode: u32) -> Errno {
        Errno::ENOSYS
    }
    /// FUSE_LOOKUP.
    fn lookup(&self, req: &Request<'_>, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::ENOSYS);
    }
    /// FUSE_FORGET (no reply).
    fn forget(&self, req: &Request<'_>, ino: INodeNo, nlookup: u64) {}
    /// FUSE_BATCH_FORGET (no reply).
    fn batch_forget(&self, req: &Request<'_>, nodes: &[abi::fuse_forget_one]) {
        for n in nodes {
            self.forget(req, INodeNo(n.nodeid), n.nlookup);
        }
    }
    /// FUSE_GETATTR.
    fn getattr(&self, req: &Request<'_>, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.error(Errno::ENOSYS);
    }
    /// FUSE_SETATTR; `crtime`, `chgtime`, `bkuptime` and `flags` are macOS-only: always `None`.
    fn setattr(
        &self,
        req: &Request<'_>,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        crtime: Option<SystemTime>,
        chgtime: Option<SystemTime>,
        bkuptime: Option<SystemTime>,
        flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::ENOSYS);
    }
    /// FUSE_OPEN.
    fn open(&self, req: &Request<'_>, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }
    /// FUSE_READ; `lock_owner` is `None` for page-cache reads (no FUSE_READ_LOCKOWNER).
    fn read(
        &self,
        req: &Request<'_>,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        reply.error(Errno::ENOSYS);
    }
    /// FUSE_WRITE.
    fn write(
        &self,
        req: &Request<'_>,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::ENOSYS);
    }
    /// FUSE_FLUSH.
    fn flush(
        &self,
        req: &Request<'_>,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }
    /// FUSE_RELEASE.
    fn release(
        &self,
        req: &Request<'_>,
        ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }
    /// FUSE_OPENDIR.
    fn opendir(&self, req: &Request<'_>, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }
    /// FUSE_READDIR.
    fn readdir(
        &self,
        req: &Request<'_>,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        reply.error(Errno::ENOSYS);
    }
    /// FUSE_RELEASEDIR.
    fn releasedir(
        &self,
        req: &Request<'_>,
        ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }
    /// FUSE_STATFS.
    fn statfs(&self, req: &Request<'_>, ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 512, 255, 0);
    }
    /// FUSE_GETXATTR.
    fn getxattr(
        &self,
        req: &Request<'_>,
        ino: INodeNo,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }
    /// FUSE_LISTXATTR.
    fn listxattr(&self, req: &Request<'_>, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }
    /// FUSE_ACCESS.
    fn access(&self, req: &Request<'_>, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }
    /// FUSE_POLL; `ph` notifies the kernel later (FUSE_NOTIFY_POLL).
    fn poll(
        &self,
        req: &Request<'_>,
        ino: INodeNo,
        fh: FileHandle,
        ph: PollNotifier,
        events: PollEvents,
        flags: PollFlags,
        reply: ReplyPoll,
    ) {
        reply.error(Errno::ENOSYS);
    }
    /// FUSE_LSEEK.
    fn lseek(
        &self,
        req: &Request<'_>,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        reply.error(Errno::ENOSYS);
    }
    /// FUSE_IOCTL.
    fn ioctl(
        &self,
        req: &Request<'_>,
        ino: INodeNo,
        fh: FileHandle,
        flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOSYS);
    }
}

/// What the worker does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next request.
    Continue,
    /// FUSE_DESTROY was answered: stop serving.
    Destroyed,
}

fn time_or_now(set: bool, now: bool, secs: u64, nsec: u32) -> Option<TimeOrNow> {
    match (set, now) {
        (false, _) => None,
        (true, true) => Some(TimeOrNow::Now),
        (true, false) => Some(TimeOrNow::SpecificTime(time_from_wire(secs, nsec))),
    }
}

/// Hand `req`, read from `ch`, to `fs`. Replies go back on `ch`.
///
/// FUSE_INTERRUPT calls [`Filesystem::interrupt`] and sends nothing. The kernel ignores any
/// reply to an interrupt except two: ENOSYS sets `fc->no_interrupt`, after which every blocked
/// caller on the connection waits uninterruptibly (D state) and signals are never forwarded
/// again, and EAGAIN queues the interrupt once more (`fs/fuse/dev.c`, `fuse_dev_do_write`,
/// the `FUSE_INT_REQ_BIT` branch; `request_wait_answer` checks `no_interrupt`). fuser 0.18
/// answers ENOSYS, which is why kmsgfs has its own transport.
///
/// FORGET and BATCH_FORGET get no reply (the kernel expects none).
pub fn dispatch<F: Filesystem>(
    fs: &F,
    ch: &Arc<Channel>,
    notifier: &Notifier,
    req: &Request<'_>,
) -> Flow {
    let u = req.unique().0;
    let ino = INodeNo(req.nodeid());
    match &req.operation {
        Operation::Interrupt(i) => fs.interrupt(i.unique),
        Operation::Forget(f) => fs.forget(req, ino, f.nlookup),
        Operation::BatchForget(nodes) => fs.batch_forget(req, nodes),
        Operation::Destroy => {
            fs.destroy();
            ReplyEmpty::new(u, ch.clone()).ok();
            return Flow::Destroyed;
        }
        Operation::Init(_) => {
            // A second INIT on an initialised connection is a protocol error.
            ReplyEmpty::new(u, ch.clone()).error(Errno::EPROTO);
        }
        Operation::Lookup { name } => fs.lookup(req, ino, name, ReplyEntry::new(u, ch.clone())),
        Operation::GetAttr(g) => {
            let fh = (g.getattr_flags & abi::FUSE_GETATTR_FH != 0).then_some(FileHandle(g.fh));
            fs.getattr(req, ino, fh, ReplyAttr::new(u, ch.clone()))
        }
        Operation::SetAttr(s) => {
            let v = s.valid;
            let has = |bit: u32| v & bit != 0;
            fs.setattr(
                req,
                ino,
                has(abi::FATTR_MODE).then_some(s.mode),
                has(abi::FATTR_UID).then_some(s.uid),
                has(abi::FATTR_GID).then_some(s.gid),
                has(abi::FATTR_SIZE).then_some(s.size),
                time_or_now(
                    has(abi::FATTR_ATIME),
                    has(abi::FATTR_ATIME_NOW),
                    s.atime,
                    s.atimensec,
                ),
                time_or_now(
                    has(abi::FATTR_MTIME),
                    has(abi::FATTR_MTIME_NOW),
                    s.mtime,
                    s.mtimensec,
                ),
                has(abi::FATTR_CTIME).then(|| time_from_wire(s.ctime, s.ctimensec)),
                has(abi::FATTR_FH).then_some(FileHandle(s.fh)),
                None,
                None,
                None,
                None,
                ReplyAttr::new(u, ch.clone()),
            )
        }
        Operation::Open(o) => fs.open(
            req,
            ino,
            OpenFlags(o.flags as i32),
            ReplyOpen::new(u, ch.clone()),
        ),
        Operation::OpenDir(o) => fs.opendir(
            req,
            ino,
            OpenFlags(o.flags as i32),
            ReplyOpen::new(u, ch.clone()),
        ),
        Operation::Read(r) => fs.read(
            req,
            ino,
            FileHandle(r.fh),
            r.offset,
            r.size,
            OpenFlags(r.flags as i32),
            (r.read_flags & abi::FUSE_READ_LOCKOWNER != 0).then_some(LockOwner(r.lock_owner)),
            ReplyData::new(u, ch.clone()),
        ),
        Operation::Write { arg: w, data } => fs.write(
            req,
            ino,
            FileHandle(w.fh),
            w.offset,
            data,
            WriteFlags(w.write_flags),
            OpenFlags(w.flags as i32),
            (w.write_flags & abi::FUSE_WRITE_LOCKOWNER != 0).then_some(LockOwner(w.lock_owner)),
            ReplyWrite::new(u, ch.clone()),
        ),
        Operation::Flush(f) => fs.flush(
            req,
            ino,
            FileHandle(f.fh),
            LockOwner(f.lock_owner),
            ReplyEmpty::new(u, ch.clone()),
        ),
        Operation::Release(r) => fs.release(
            req,
            ino,
            FileHandle(r.fh),
            OpenFlags(r.flags as i32),
            (r.release_flags & abi::FUSE_RELEASE_FLUSH != 0
                || r.release_flags & abi::FUSE_RELEASE_FLOCK_UNLOCK != 0)
                .then_some(LockOwner(r.lock_owner)),
            r.release_flags & abi::FUSE_RELEASE_FLUSH != 0,
            ReplyEmpty::new(u, ch.clone()),
        ),
        Operation::ReleaseDir(r) => fs.releasedir(
            req,
            ino,
            FileHandle(r.fh),
            OpenFlags(r.flags as i32),
            ReplyEmpty::new(u, ch.clone()),
        ),
        Operation::ReadDir(r) => fs.readdir(
            req,
            ino,
            FileHandle(r.fh),
            r.offset,
            ReplyDirectory::new(u, ch.clone(), r.size),
        ),
        Operation::StatFs => fs.statfs(req, ino, ReplyStatfs::new(u, ch.clone())),
        Operation::GetXattr { arg, name } => {
            fs.getxattr(req, ino, name, arg.size, ReplyXattr::new(u, ch.clone()))
        }
        Operation::ListXattr(a) => fs.listxattr(req, ino, a.size, ReplyXattr::new(u, ch.clone())),
        Operation::Access(a) => fs.access(
            req,
            ino,
            AccessFlags(a.mask as i32),
            ReplyEmpty::new(u, ch.clone()),
        ),
        Operation::Poll(p) => fs.poll(
            req,
            ino,
            FileHandle(p.fh),
            PollNotifier::new(p.kh, notifier.clone()),
            PollEvents(p.events),
            PollFlags(p.flags),
            ReplyPoll::new(u, ch.clone()),
        ),
        Operation::Lseek(l) => fs.lseek(
            req,
            ino,
            FileHandle(l.fh),
            l.offset as i64,
            l.whence as i32,
            ReplyLseek::new(u, ch.clone()),
        ),
        Operation::Ioctl { arg, data } => fs.ioctl(
            req,
            ino,
            FileHandle(arg.fh),
            IoctlFlags(arg.flags),
            arg.cmd,
            data,
            arg.out_size,
            ReplyIoctl::new(u, ch.clone()),
        ),
        Operation::Unknown(op) => {
            let e = fs.unsupported(req, *op);
            ReplyEmpty::new(u, ch.clone()).error(e);
        }
    }
    Flow::Continue
}
