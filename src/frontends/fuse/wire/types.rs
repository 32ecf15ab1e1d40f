//! The value types a [`super::Filesystem`] sees, named and shaped like fuser 0.18's so that
//! `src/frontends/fuse/fs.rs` switches transports by changing its `use` line: ids
//! ([`INodeNo`], [`FileHandle`], …), flag sets ([`OpenFlags`], [`PollEvents`], …), [`Errno`],
//! [`FileAttr`] and the INIT-time [`KernelConfig`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::abi;

/// An inode number (`nodeid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct INodeNo(pub u64);
/// A file handle chosen by the filesystem at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileHandle(pub u64);
/// A POSIX lock owner id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LockOwner(pub u64);
/// An inode generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Generation(pub u64);
/// A request id (`unique`), exactly as the kernel sent it (including
/// [`abi::FUSE_UNIQUE_RESEND`] on a resent request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

impl std::fmt::Display for FileHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A positive errno value sent as the negative `error` of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(i32);

macro_rules! errnos {
    ($($n:ident),*) => {
        impl Errno {
            $(#[doc = concat!("`", stringify!($n), "`")] pub const $n: Errno = Errno(libc::$n);)*
        }
    };
}
errnos!(
    EPERM,
    ENOENT,
    EINTR,
    EIO,
    EBADF,
    EAGAIN,
    ENOMEM,
    EACCES,
    EEXIST,
    ENOTDIR,
    EISDIR,
    EINVAL,
    ENOSPC,
    EMFILE,
    ENFILE,
    ESPIPE,
    EPIPE,
    ERANGE,
    ENOSYS,
    ENOTTY,
    EOPNOTSUPP,
    EPROTO,
    ENODATA,
    EROFS,
    EFBIG,
    ENAMETOOLONG,
    EOVERFLOW
);

impl Errno {
    /// An errno from a raw value; values outside 1..1000 (which the kernel would reject as
    /// a reply error) become EIO.
    pub fn from_i32(e: i32) -> Errno {
        if (1..1000).contains(&e) {
            Errno(e)
        } else {
            Errno::EIO
        }
    }

    /// The positive errno value.
    pub fn code(self) -> i32 {
        self.0
    }
}

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Errno {
        Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

/// A set of bit flags with the operations fs.rs uses on fuser's `bitflags` types.
macro_rules! flag_set {
    ($(#[$m:meta])* $name:ident: $t:ty { $($(#[$fm:meta])* $f:ident = $v:expr;)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub $t);
        impl $name {
            $($(#[$fm])* pub const $f: $name = $name($v);)*
            /// No flag.
            pub const fn empty() -> Self { $name(0) }
            /// The raw bits.
            pub const fn bits(self) -> $t { self.0 }
            /// The known flags of `bits`.
            pub const fn from_bits_truncate(bits: $t) -> Self { $name(bits & (0 $(| $v)*)) }
            /// All of `bits`, known or not.
            pub const fn from_bits_retain(bits: $t) -> Self { $name(bits) }
            /// Whether every flag of `other` is set.
            pub const fn contains(self, other: Self) -> bool { self.0 & other.0 == other.0 }
            /// Whether no flag is set.
            pub const fn is_empty(self) -> bool { self.0 == 0 }
            /// Both sets.
            pub const fn union(self, other: Self) -> Self { $name(self.0 | other.0) }
        }
        impl std::ops::BitOr for $name {
            type Output = Self;
            fn bitor(self, o: Self) -> Self { $name(self.0 | o.0) }
        }
        impl std::ops::BitOrAssign for $name {
            fn bitor_assign(&mut self, o: Self) { self.0 |= o.0 }
        }
        impl std::ops::BitAnd for $name {
            type Output = Self;
            fn bitand(self, o: Self) -> Self { $name(self.0 & o.0) }
        }
        impl std::ops::Not for $name {
            type Output = Self;
            fn not(self) -> Self { $name(!self.0) }
        }
    };
}

flag_set!(
    /// `fuse_open_out.open_flags`.
    FopenFlags: u32 {
        FOPEN_DIRECT_IO = abi::FOPEN_DIRECT_IO;
        FOPEN_KEEP_CACHE = abi::FOPEN_KEEP_CACHE;
        FOPEN_NONSEEKABLE = abi::FOPEN_NONSEEKABLE;
        FOPEN_CACHE_DIR = abi::FOPEN_CACHE_DIR;
        FOPEN_STREAM = abi::FOPEN_STREAM;
        FOPEN_NOFLUSH = abi::FOPEN_NOFLUSH;
        FOPEN_PARALLEL_DIRECT_WRITES = abi::FOPEN_PARALLEL_DIRECT_WRITES;
    }
);
flag_set!(
    /// poll(2) event bits (`fuse_poll_in.events`, `fuse_poll_out.revents`).
    PollEvents: u32 {
        POLLIN = libc::POLLIN as u32;
        POLLPRI = libc::POLLPRI as u32;
        POLLOUT = libc::POLLOUT as u32;
        POLLERR = libc::POLLERR as u32;
        POLLHUP = libc::POLLHUP as u32;
        POLLNVAL = libc::POLLNVAL as u32;
        POLLRDNORM = libc::POLLRDNORM as u32;
        POLLRDBAND = libc::POLLRDBAND as u32;
        POLLWRNORM = libc::POLLWRNORM as u32;
        POLLWRBAND = libc::POLLWRBAND as u32;
        POLLRDHUP = libc::POLLRDHUP as u32;
    }
);
flag_set!(
    /// `fuse_poll_in.flags`.
    PollFlags: u32 {
        /// The kernel wants a FUSE_NOTIFY_POLL for this `kh` when readiness changes.
        FUSE_POLL_SCHEDULE_NOTIFY = abi::FUSE_POLL_SCHEDULE_NOTIFY;
    }
);
flag_set!(
    /// `fuse_ioctl_in.flags`.
    IoctlFlags: u32 {
        FUSE_IOCTL_COMPAT = abi::FUSE_IOCTL_COMPAT;
        FUSE_IOCTL_UNRESTRICTED = abi::FUSE_IOCTL_UNRESTRICTED;
        FUSE_IOCTL_RETRY = abi::FUSE_IOCTL_RETRY;
        FUSE_IOCTL_32BIT = abi::FUSE_IOCTL_32BIT;
        FUSE_IOCTL_DIR = abi::FUSE_IOCTL_DIR;
        FUSE_IOCTL_COMPAT_X32 = abi::FUSE_IOCTL_COMPAT_X32;
    }
);
flag_set!(
    /// `fuse_write_in.write_flags`.
    WriteFlags: u32 {
        FUSE_WRITE_CACHE = abi::FUSE_WRITE_CACHE;
        FUSE_WRITE_LOCKOWNER = abi::FUSE_WRITE_LOCKOWNER;
        FUSE_WRITE_KILL_SUIDGID = abi::FUSE_WRITE_KILL_SUIDGID;
    }
);
flag_set!(
    /// access(2) mask bits (`fuse_access_in.mask`).
    AccessFlags: i32 {
        F_OK = libc::F_OK;
        R_OK = libc::R_OK;
        W_OK = libc::W_OK;
        X_OK = libc::X_OK;
    }
);
flag_set!(
    /// INIT capability bits, `flags | flags2 << 32`.
    InitFlags: u64 {
        FUSE_ASYNC_READ = abi::FUSE_ASYNC_READ;
        FUSE_POSIX_LOCKS = abi::FUSE_POSIX_LOCKS;
        FUSE_ATOMIC_O_TRUNC = abi::FUSE_ATOMIC_O_TRUNC;
        FUSE_EXPORT_SUPPORT = abi::FUSE_EXPORT_SUPPORT;
        FUSE_BIG_WRITES = abi::FUSE_BIG_WRITES;
        FUSE_DONT_MASK = abi::FUSE_DONT_MASK;
        FUSE_FLOCK_LOCKS = abi::FUSE_FLOCK_LOCKS;
        FUSE_HAS_IOCTL_DIR = abi::FUSE_HAS_IOCTL_DIR;
        FUSE_AUTO_INVAL_DATA = abi::FUSE_AUTO_INVAL_DATA;
        FUSE_DO_READDIRPLUS = abi::FUSE_DO_READDIRPLUS;
        FUSE_ASYNC_DIO = abi::FUSE_ASYNC_DIO;
        FUSE_WRITEBACK_CACHE = abi::FUSE_WRITEBACK_CACHE;
        FUSE_NO_OPEN_SUPPORT = abi::FUSE_NO_OPEN_SUPPORT;
        FUSE_PARALLEL_DIROPS = abi::FUSE_PARALLEL_DIROPS;
        FUSE_MAX_PAGES = abi::FUSE_MAX_PAGES;
        FUSE_NO_OPENDIR_SUPPORT = abi::FUSE_NO_OPENDIR_SUPPORT;
        FUSE_INIT_EXT = abi::FUSE_INIT_EXT;
        FUSE_DIRECT_IO_ALLOW_MMAP = abi::FUSE_DIRECT_IO_ALLOW_MMAP;
        FUSE_HAS_RESEND = abi::FUSE_HAS_RESEND;
    }
);

/// The open(2) flags of a request (`fuse_open_in.flags`, `fuse_read_in.flags`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OpenFlags(pub i32);

/// The access mode part of [`OpenFlags`] (variant names as in fuser).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum OpenAccMode {
    /// `O_RDONLY`.
    O_RDONLY,
    /// `O_WRONLY`.
    O_WRONLY,
    /// `O_RDWR`.
    O_RDWR,
}

impl OpenFlags {
    /// The access mode (`flags & O_ACCMODE`; the invalid value 3 counts as read-write).
    pub fn acc_mode(self) -> OpenAccMode {
        match self.0 & libc::O_ACCMODE {
            libc::O_RDONLY => OpenAccMode::O_RDONLY,
            libc::O_WRONLY => OpenAccMode::O_WRONLY,
            _ => OpenAccMode::O_RDWR,
        }
    }
}

/// A time for SETATTR: a value, or "now" (`FATTR_ATIME_NOW`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeOrNow {
    /// A point in time.
    SpecificTime(SystemTime),
    /// The current time.
    Now,
}

/// BSD file flags of SETATTR (macOS only; always `None` on Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BsdFileFlags(pub u32);

/// The type of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// Named pipe.
    NamedPipe,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// Directory.
    Directory,
    /// Regular file.
    RegularFile,
    /// Symbolic link.
    Symlink,
    /// Socket.
    Socket,
}

impl FileType {
    /// The `S_IFMT` bits of the type.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::NamedPipe => libc::S_IFIFO,
            FileType::CharDevice => libc::S_IFCHR,
            FileType::BlockDevice => libc::S_IFBLK,
            FileType::Directory => libc::S_IFDIR,
            FileType::RegularFile => libc::S_IFREG,
            FileType::Symlink => libc::S_IFLNK,
            FileType::Socket => libc::S_IFSOCK,
        }
    }

    /// The `DT_*` value of a dirent (`S_IFMT >> 12`).
    pub fn dirent_type(self) -> u32 {
        self.mode_bits() >> 12
    }
}

/// File attributes, as in fuser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileAttr {
    /// Inode number.
    pub ino: INodeNo,
    /// Size in bytes.
    pub size: u64,
    /// Size in 512-byte blocks.
    pub blocks: u64,
    /// Last access.
    pub atime: SystemTime,
    /// Last modification.
    pub mtime: SystemTime,
    /// Last change.
    pub ctime: SystemTime,
    /// Creation (macOS only; not sent).
    pub crtime: SystemTime,
    /// File type.
    pub kind: FileType,
    /// Permission bits.
    pub perm: u16,
    /// Hard links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number.
    pub rdev: u32,
    /// Preferred block size.
    pub blksize: u32,
    /// Flags (macOS only; sent as `fuse_attr.flags`).
    pub flags: u32,
}

/// Seconds and nanoseconds since the epoch; times before it are sent as negative seconds
/// wrapped into `u64`, as the kernel reads them (`s64` in `fuse_attr`).
pub(crate) fn time_to_wire(t: SystemTime) -> (u64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs(), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let (mut s, mut ns) = (-(d.as_secs() as i64), d.subsec_nanos());
            if ns > 0 {
                s -= 1;
                ns = 1_000_000_000 - ns;
            }
            (s as u64, ns)
        }
    }
}

/// The inverse of [`time_to_wire`].
pub(crate) fn time_from_wire(secs: u64, nsec: u32) -> SystemTime {
    let s = secs as i64;
    let ns = Duration::from_nanos(u64::from(nsec.min(999_999_999)));
    if s >= 0 {
        UNIX_EPOCH + Duration::from_secs(s as u64) + ns
    } else {
        UNIX_EPOCH - Duration::from_secs(s.unsigned_abs()) + ns
    }
}

impl FileAttr {
    pub(crate) fn to_wire(self) -> abi::fuse_attr {
        let (atime, atimensec) = time_to_wire(self.atime);
        let (mtime, mtimensec) = time_to_wire(self.mtime);
        let (ctime, ctimensec) = time_to_wire(self.ctime);
        abi::fuse_attr {
            ino: self.ino.0,
            size: self.size,
            blocks: self.blocks,
            atime,
            mtime,
            ctime,
            atimensec,
            mtimensec,
            ctimensec,
            mode: self.kind.mode_bits() | u32::from(self.perm),
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: self.rdev,
            blksize: self.blksize,
            flags: self.flags,
        }
    }
}

/// What the filesystem may change at INIT: capabilities to request and size limits.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    pub(crate) kernel: InitFlags,
    pub(crate) requested: InitFlags,
    pub(crate) max_write: u32,
    pub(crate) max_readahead: u32,
    pub(crate) kernel_max_readahead: u32,
    pub(crate) time_gran: u32,
}

impl KernelConfig {
    /// The kernel's offer, with fuser 0.18's default request: ASYNC_READ and BIG_WRITES, plus
    /// MAX_PAGES if offered. We add INIT_EXT (flags2 is valid) and HAS_RESEND (7.40, so a
    /// successor knows the kernel can resend) where offered.
    pub(crate) fn new(kernel: InitFlags, kernel_max_readahead: u32, max_write: u32) -> Self {
        let mut requested = InitFlags::FUSE_ASYNC_READ | InitFlags::FUSE_BIG_WRITES;
        for f in [
            InitFlags::FUSE_MAX_PAGES,
            InitFlags::FUSE_INIT_EXT,
            InitFlags::FUSE_HAS_RESEND,
        ] {
            if kernel.contains(f) {
                requested |= f;
            }
        }
        KernelConfig {
            kernel,
            requested,
            max_write,
            max_readahead: kernel_max_readahead,
            kernel_max_readahead,
            time_gran: 1,
        }
    }

    /// Request `caps`; if the kernel lacks some, request nothing and return those.
    pub fn add_capabilities(&mut self, caps: InitFlags) -> Result<(), InitFlags> {
        if !self.kernel.contains(caps) {
            return Err(caps & !self.kernel);
        }
        self.requested |= caps;
        Ok(())
    }

    /// Stop requesting `caps`.
    pub fn remove_capabilities(&mut self, caps: InitFlags) {
        self.requested = self.requested & !caps;
    }

    /// What the kernel offers.
    pub fn capabilities(&self) -> InitFlags {
        self.kernel
    }

    /// Set the largest WRITE payload (at least 4096); returns the previous value.
    pub fn set_max_write(&mut self, v: u32) -> Result<u32, u32> {
        if v < 4096 {
            return Err(4096);
        }
        Ok(std::mem::replace(&mut self.max_write, v))
    }

    /// Set readahead, at most what the kernel offered; returns the previous value.
    pub fn set_max_readahead(&mut self, v: u32) -> Result<u32, u32> {
        if v > self.kernel_max_readahead {
            return Err(self.kernel_max_readahead);
        }
        Ok(std::mem::replace(&mut self.max_readahead, v))
    }
}
