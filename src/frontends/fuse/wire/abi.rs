//! The kernel's FUSE ABI, `include/uapi/linux/fuse.h`, protocol 7.40: the structs and constants
//! kmsgfs's transport uses, nothing more.
//!
//! Every struct is `#[repr(C)]` with the kernel's field order and a compile-time size check.
//! The unit test [`tests::matches_system_header`] compares sizes and field offsets with the
//! system header (Debian 12 ships protocol 7.38); the items new in 7.39/7.40 are checked
//! against the kernel source and cited where they are defined. All integers are native-endian
//! (the protocol is host-endian).
//!
//! Structs are plain old data: [`Pod`] lets [`as_bytes`] view one as bytes and [`read_pod`]
//! copy one out of an unaligned buffer.

#![allow(missing_docs)]

use std::mem::size_of;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Major version of the protocol. A kernel with another major is refused.
pub const FUSE_KERNEL_VERSION: u32 = 7;
/// The minor version this transport implements (7.40: FUSE_NOTIFY_RESEND, FUSE_HAS_RESEND).
pub const FUSE_KERNEL_MINOR_VERSION: u32 = 40;
/// Oldest kernel minor accepted: 7.23 is the first with the full-size `fuse_init_out` and
/// `time_gran`; every Linux kmsgfs supports is far newer.
pub const FUSE_MIN_MINOR: u32 = 23;
/// The nodeid of the root directory.
pub const FUSE_ROOT_ID: u64 = 1;
/// The kernel refuses a read buffer smaller than this (`fs/fuse/dev.c`, `fuse_dev_do_read`).
pub const FUSE_MIN_READ_BUFFER: usize = 8192;

/// Bit 0 of `unique`: set on FUSE_INTERRUPT requests (their unique is the target's | 1) and
/// on replies to them (`fs/fuse/dev.c`: `FUSE_INT_REQ_BIT`, `fuse_dev_do_write`).
pub const FUSE_INT_REQ_BIT: u64 = 1 << 0;
/// Bit 63 of `unique`: set by the kernel on every request it queues again after
/// FUSE_NOTIFY_RESEND (7.40; `fs/fuse/dev.c`, `fuse_resend`: `req->in.h.unique |=
/// FUSE_UNIQUE_RESEND`). The bit stays part of the request's id: the reply must carry the
/// unique exactly as read, bit included (`fuse_request_find` compares `req->in.h.unique` with
/// the reply's unique minus only FUSE_INT_REQ_BIT).
pub const FUSE_UNIQUE_RESEND: u64 = 1 << 63;

// Opcodes (`enum fuse_opcode`).
pub const FUSE_LOOKUP: u32 = 1;
pub const FUSE_FORGET: u32 = 2; // no reply
pub const FUSE_GETATTR: u32 = 3;
pub const FUSE_SETATTR: u32 = 4;
pub const FUSE_READLINK: u32 = 5;
pub const FUSE_SYMLINK: u32 = 6;
pub const FUSE_MKNOD: u32 = 8;
pub const FUSE_MKDIR: u32 = 9;
pub const FUSE_UNLINK: u32 = 10;
pub const FUSE_RMDIR: u32 = 11;
pub const FUSE_RENAME: u32 = 12;
pub const FUSE_LINK: u32 = 13;
pub const FUSE_OPEN: u32 = 14;
pub const FUSE_READ: u32 = 15;
pub const FUSE_WRITE: u32 = 16;
pub const FUSE_STATFS: u32 = 17;
pub const FUSE_RELEASE: u32 = 18;
pub const FUSE_FSYNC: u32 = 20;
pub const FUSE_SETXATTR: u32 = 21;
pub const FUSE_GETXATTR: u32 = 22;
pub const FUSE_LISTXATTR: u32 = 23;
pub const FUSE_REMOVEXATTR: u32 = 24;
pub const FUSE_FLUSH: u32 = 25;
pub const FUSE_INIT: u32 = 26;
pub const FUSE_OPENDIR: u32 = 27;
pub const FUSE_READDIR: u32 = 28;
pub const FUSE_RELEASEDIR: u32 = 29;
pub const FUSE_FSYNCDIR: u32 = 30;
pub const FUSE_GETLK: u32 = 31;
pub const FUSE_SETLK: u32 = 32;
pub const FUSE_SETLKW: u32 = 33;
pub const FUSE_ACCESS: u32 = 34;
pub const FUSE_CREATE: u32 = 35;
pub const FUSE_INTERRUPT: u32 = 36; // no reply, unless EAGAIN
pub const FUSE_BMAP: u32 = 37;
pub const FUSE_DESTROY: u32 = 38;
pub const FUSE_IOCTL: u32 = 39;
pub const FUSE_POLL: u32 = 40;
pub const FUSE_NOTIFY_REPLY: u32 = 41;
pub const FUSE_BATCH_FORGET: u32 = 42; // no reply
pub const FUSE_FALLOCATE: u32 = 43;
pub const FUSE_READDIRPLUS: u32 = 44;
pub const FUSE_RENAME2: u32 = 45;
pub const FUSE_LSEEK: u32 = 46;
pub const FUSE_COPY_FILE_RANGE: u32 = 47;
pub const FUSE_SETUPMAPPING: u32 = 48;
pub const FUSE_REMOVEMAPPING: u32 = 49;
pub const FUSE_SYNCFS: u32 = 50;
pub const FUSE_TMPFILE: u32 = 51;
pub const FUSE_STATX: u32 = 52;

// Notification codes (`enum fuse_notify_code`), sent as `error` of a unique-0 message.
pub const FUSE_NOTIFY_POLL: i32 = 1;
pub const FUSE_NOTIFY_INVAL_INODE: i32 = 2;
pub const FUSE_NOTIFY_INVAL_ENTRY: i32 = 3;
pub const FUSE_NOTIFY_STORE: i32 = 4;
pub const FUSE_NOTIFY_RETRIEVE: i32 = 5;
pub const FUSE_NOTIFY_DELETE: i32 = 6;
/// 7.40: queue again every request that was read but not answered, on every fd of the
/// connection (`fs/fuse/dev.c`, `fuse_notify_resend` → `fuse_resend`). No payload.
pub const FUSE_NOTIFY_RESEND: i32 = 7;

// INIT flags (`fuse_init_in.flags`, `fuse_init_out.flags`; bits 32-63 go in `flags2`).
pub const FUSE_ASYNC_READ: u64 = 1 << 0;
pub const FUSE_POSIX_LOCKS: u64 = 1 << 1;
pub const FUSE_FILE_OPS: u64 = 1 << 2;
pub const FUSE_ATOMIC_O_TRUNC: u64 = 1 << 3;
pub const FUSE_EXPORT_SUPPORT: u64 = 1 << 4;
pub const FUSE_BIG_WRITES: u64 = 1 << 5;
pub const FUSE_DONT_MASK: u64 = 1 << 6;
pub const FUSE_SPLICE_WRITE: u64 = 1 << 7;
pub const FUSE_SPLICE_MOVE: u64 = 1 << 8;
pub const FUSE_SPLICE_READ: u64 = 1 << 9;
pub const FUSE_FLOCK_LOCKS: u64 = 1 << 10;
pub const FUSE_HAS_IOCTL_DIR: u64 = 1 << 11;
pub const FUSE_AUTO_INVAL_DATA: u64 = 1 << 12;
pub const FUSE_DO_READDIRPLUS: u64 = 1 << 13;
pub const FUSE_READDIRPLUS_AUTO: u64 = 1 << 14;
pub const FUSE_ASYNC_DIO: u64 = 1 << 15;
pub const FUSE_WRITEBACK_CACHE: u64 = 1 << 16;
pub const FUSE_NO_OPEN_SUPPORT: u64 = 1 << 17;
pub const FUSE_PARALLEL_DIROPS: u64 = 1 << 18;
pub const FUSE_HANDLE_KILLPRIV: u64 = 1 << 19;
pub const FUSE_POSIX_ACL: u64 = 1 << 20;
pub const FUSE_ABORT_ERROR: u64 = 1 << 21;
pub const FUSE_MAX_PAGES: u64 = 1 << 22;
pub const FUSE_CACHE_SYMLINKS: u64 = 1 << 23;
pub const FUSE_NO_OPENDIR_SUPPORT: u64 = 1 << 24;
pub const FUSE_EXPLICIT_INVAL_DATA: u64 = 1 << 25;
pub const FUSE_MAP_ALIGNMENT: u64 = 1 << 26;
pub const FUSE_SUBMOUNTS: u64 = 1 << 27;
pub const FUSE_HANDLE_KILLPRIV_V2: u64 = 1 << 28;
pub const FUSE_SETXATTR_EXT: u64 = 1 << 29;
/// `flags2` is valid (7.36).
pub const FUSE_INIT_EXT: u64 = 1 << 30;
pub const FUSE_INIT_RESERVED: u64 = 1 << 31;
pub const FUSE_SECURITY_CTX: u64 = 1 << 32;
pub const FUSE_HAS_INODE_DAX: u64 = 1 << 33;
pub const FUSE_CREATE_SUPP_GROUP: u64 = 1 << 34;
pub const FUSE_HAS_EXPIRE_ONLY: u64 = 1 << 35;
/// 7.39.
pub const FUSE_DIRECT_IO_ALLOW_MMAP: u64 = 1 << 36;
/// 7.40.
pub const FUSE_PASSTHROUGH: u64 = 1 << 37;
/// 7.40.
pub const FUSE_NO_EXPORT_SUPPORT: u64 = 1 << 38;
/// 7.40: the kernel can resend pending requests (FUSE_NOTIFY_RESEND) and marks them with
/// [`FUSE_UNIQUE_RESEND`]. Informational: offered by the kernel, echoed by us.
pub const FUSE_HAS_RESEND: u64 = 1 << 39;

// `fuse_open_out.open_flags`.
pub const FOPEN_DIRECT_IO: u32 = 1 << 0;
pub const FOPEN_KEEP_CACHE: u32 = 1 << 1;
pub const FOPEN_NONSEEKABLE: u32 = 1 << 2;
pub const FOPEN_CACHE_DIR: u32 = 1 << 3;
pub const FOPEN_STREAM: u32 = 1 << 4;
pub const FOPEN_NOFLUSH: u32 = 1 << 5;
pub const FOPEN_PARALLEL_DIRECT_WRITES: u32 = 1 << 6;
pub const FOPEN_PASSTHROUGH: u32 = 1 << 7;

// `fuse_setattr_in.valid`.
pub const FATTR_MODE: u32 = 1 << 0;
pub const FATTR_UID: u32 = 1 << 1;
pub const FATTR_GID: u32 = 1 << 2;
pub const FATTR_SIZE: u32 = 1 << 3;
pub const FATTR_ATIME: u32 = 1 << 4;
pub const FATTR_MTIME: u32 = 1 << 5;
pub const FATTR_FH: u32 = 1 << 6;
pub const FATTR_ATIME_NOW: u32 = 1 << 7;
pub const FATTR_MTIME_NOW: u32 = 1 << 8;
pub const FATTR_LOCKOWNER: u32 = 1 << 9;
pub const FATTR_CTIME: u32 = 1 << 10;
pub const FATTR_KILL_SUIDGID: u32 = 1 << 11;

/// `fuse_getattr_in.getattr_flags`: `fh` is valid.
pub const FUSE_GETATTR_FH: u32 = 1 << 0;
/// `fuse_read_in.read_flags`: `lock_owner` is valid (set for read(2), absent for page-cache
/// reads).
pub const FUSE_READ_LOCKOWNER: u32 = 1 << 1;
pub const FUSE_WRITE_CACHE: u32 = 1 << 0;
pub const FUSE_WRITE_LOCKOWNER: u32 = 1 << 1;
pub const FUSE_WRITE_KILL_SUIDGID: u32 = 1 << 2;
pub const FUSE_RELEASE_FLUSH: u32 = 1 << 0;
pub const FUSE_RELEASE_FLOCK_UNLOCK: u32 = 1 << 1;
pub const FUSE_POLL_SCHEDULE_NOTIFY: u32 = 1 << 0;
pub const FUSE_IOCTL_COMPAT: u32 = 1 << 0;
pub const FUSE_IOCTL_UNRESTRICTED: u32 = 1 << 1;
pub const FUSE_IOCTL_RETRY: u32 = 1 << 2;
pub const FUSE_IOCTL_32BIT: u32 = 1 << 3;
pub const FUSE_IOCTL_DIR: u32 = 1 << 4;
pub const FUSE_IOCTL_COMPAT_X32: u32 = 1 << 5;

/// `FUSE_DEV_IOC_CLONE`, `_IOR(229, 0, uint32_t)`.
// `c_ulong` is 32 bits on 32-bit targets: the cast is not a no-op everywhere.
#[allow(clippy::unnecessary_cast)]
pub const FUSE_DEV_IOC_CLONE: u64 = crate::sys::fuse_dev::FUSE_DEV_IOC_CLONE as u64;

/// Plain old data: every bit pattern is a valid value and there is no padding the compiler
/// could leave uninitialised (every struct below spells its padding out as fields). zerocopy's
/// derives check both at compile time, so the byte views need no `unsafe` here.
pub trait Pod: FromBytes + IntoBytes + Immutable + Copy + Default {}

impl<T: FromBytes + IntoBytes + Immutable + Copy + Default> Pod for T {}

/// The bytes of `v`.
pub fn as_bytes<T: Pod>(v: &T) -> &[u8] {
    v.as_bytes()
}

/// A copy of the `T` at the start of `b`, if `b` is long enough (any alignment).
pub fn read_pod<T: Pod>(b: &[u8]) -> Option<T> {
    T::read_from_prefix(b).ok().map(|(v, _)| v)
}

macro_rules! pod {
    ($($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty),* $(,)? } = $size:expr;)*) => {
        $(
            $(#[$m])*
            #[repr(C)]
            #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable)]
            pub struct $name { $($(#[$fm])* pub $f: $t),* }
            const _: () = assert!(size_of::<$name>() == $size);
        )*
    };
}

pod! {
    pub struct fuse_in_header {
        pub len: u32, pub opcode: u32, pub unique: u64, pub nodeid: u64,
        pub uid: u32, pub gid: u32, pub pid: u32, pub total_extlen: u16, pub padding: u16,
    } = 40;
    pub struct fuse_out_header { pub len: u32, pub error: i32, pub unique: u64 } = 16;
    pub struct fuse_init_in {
        pub major: u32, pub minor: u32, pub max_readahead: u32, pub flags: u32,
        pub flags2: u32, pub unused: [u32; 11],
    } = 64;
    pub struct fuse_init_out {
        pub major: u32, pub minor: u32, pub max_readahead: u32, pub flags: u32,
        pub max_background: u16, pub congestion_threshold: u16, pub max_write: u32,
        pub time_gran: u32, pub max_pages: u16, pub map_alignment: u16, pub flags2: u32,
        /// 7.40 (`unused[0]` in 7.38).
        pub max_stack_depth: u32,
        pub unused: [u32; 6],
    } = 64;
    pub struct fuse_attr {
        pub ino: u64, pub size: u64, pub blocks: u64, pub atime: u64, pub mtime: u64,
        pub ctime: u64, pub atimensec: u32, pub mtimensec: u32, pub ctimensec: u32,
        pub mode: u32, pub nlink: u32, pub uid: u32, pub gid: u32, pub rdev: u32,
        pub blksize: u32, pub flags: u32,
    } = 88;
    pub struct fuse_entry_out {
        pub nodeid: u64, pub generation: u64, pub entry_valid: u64, pub attr_valid: u64,
        pub entry_valid_nsec: u32, pub attr_valid_nsec: u32, pub attr: fuse_attr,
    } = 128;
    pub struct fuse_attr_out {
        pub attr_valid: u64, pub attr_valid_nsec: u32, pub dummy: u32, pub attr: fuse_attr,
    } = 104;
    pub struct fuse_forget_in { pub nlookup: u64 } = 8;
    pub struct fuse_forget_one { pub nodeid: u64, pub nlookup: u64 } = 16;
    pub struct fuse_batch_forget_in { pub count: u32, pub dummy: u32 } = 8;
    pub struct fuse_getattr_in { pub getattr_flags: u32, pub dummy: u32, pub fh: u64 } = 16;
    pub struct fuse_setattr_in {
        pub valid: u32, pub padding: u32, pub fh: u64, pub size: u64, pub lock_owner: u64,
        pub atime: u64, pub mtime: u64, pub ctime: u64, pub atimensec: u32,
        pub mtimensec: u32, pub ctimensec: u32, pub mode: u32, pub unused4: u32,
        pub uid: u32, pub gid: u32, pub unused5: u32,
    } = 88;
    pub struct fuse_open_in { pub flags: u32, pub open_flags: u32 } = 8;
    pub struct fuse_open_out {
        pub fh: u64, pub open_flags: u32,
        /// 7.40 (`padding` in 7.38).
        pub backing_id: i32,
    } = 16;
    pub struct fuse_read_in {
        pub fh: u64, pub offset: u64, pub size: u32, pub read_flags: u32,
        pub lock_owner: u64, pub flags: u32, pub padding: u32,
    } = 40;
    pub struct fuse_write_in {
        pub fh: u64, pub offset: u64, pub size: u32, pub write_flags: u32,
        pub lock_owner: u64, pub flags: u32, pub padding: u32,
    } = 40;
    pub struct fuse_write_out { pub size: u32, pub padding: u32 } = 8;
    pub struct fuse_release_in {
        pub fh: u64, pub flags: u32, pub release_flags: u32, pub lock_owner: u64,
    } = 24;
    pub struct fuse_flush_in {
        pub fh: u64, pub unused: u32, pub padding: u32, pub lock_owner: u64,
    } = 24;
    pub struct fuse_interrupt_in { pub unique: u64 } = 8;
    pub struct fuse_poll_in { pub fh: u64, pub kh: u64, pub flags: u32, pub events: u32 } = 24;
    pub struct fuse_poll_out { pub revents: u32, pub padding: u32 } = 8;
    pub struct fuse_notify_poll_wakeup_out { pub kh: u64 } = 8;
    pub struct fuse_lseek_in { pub fh: u64, pub offset: u64, pub whence: u32, pub padding: u32 } = 24;
    pub struct fuse_lseek_out { pub offset: u64 } = 8;
    pub struct fuse_ioctl_in {
        pub fh: u64, pub flags: u32, pub cmd: u32, pub arg: u64, pub in_size: u32,
        pub out_size: u32,
    } = 32;
    pub struct fuse_ioctl_out {
        pub result: i32, pub flags: u32, pub in_iovs: u32, pub out_iovs: u32,
    } = 16;
    /// Followed by `namelen` name bytes, padded with zeros to a multiple of 8.
    pub struct fuse_dirent { pub ino: u64, pub off: u64, pub namelen: u32, pub typ: u32 } = 24;
    pub struct fuse_access_in { pub mask: u32, pub padding: u32 } = 8;
    pub struct fuse_getxattr_in { pub size: u32, pub padding: u32 } = 8;
    pub struct fuse_getxattr_out { pub size: u32, pub padding: u32 } = 8;
    pub struct fuse_kstatfs {
        pub blocks: u64, pub bfree: u64, pub bavail: u64, pub files: u64, pub ffree: u64,
        pub bsize: u32, pub namelen: u32, pub frsize: u32, pub padding: u32,
        pub spare: [u32; 6],
    } = 80;
    pub struct fuse_statfs_out { pub st: fuse_kstatfs } = 80;
}

/// Bytes a dirent with a name of `namelen` bytes takes, padding included (`FUSE_DIRENT_SIZE`).
pub const fn dirent_size(namelen: usize) -> usize {
    (size_of::<fuse_dirent>() + namelen + 7) & !7
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;
    use std::path::Path;
    use std::process::Command;

    const HEADER: &str = "/usr/include/linux/fuse.h";

    /// Skip (pass) only when the environment says so; otherwise a missing tool is a failure.
    fn skip_or_fail(what: &str) {
        if std::env::var("KMSGFS_ALLOW_SKIP").as_deref() == Ok("1") {
            eprintln!("skipping ABI check: {what} (KMSGFS_ALLOW_SKIP=1)");
            return;
        }
        panic!("ABI check needs {what}; install it or set KMSGFS_ALLOW_SKIP=1");
    }

    /// (C struct, C field, Rust offset). Only fields that exist in protocol 7.38, the
    /// Debian 12 header; 7.40 renames (`backing_id`, `max_stack_depth`) are checked under
    /// their 7.38 names (`padding`, `unused`).
    fn fields() -> Vec<(&'static str, &'static str, usize)> {
        macro_rules! f {
            ($s:ident, $cf:literal, $rf:ident) => {
                (stringify!($s), $cf, offset_of!($s, $rf))
            };
        }
        vec![
            f!(fuse_in_header, "len", len),
            f!(fuse_in_header, "opcode", opcode),
            f!(fuse_in_header, "unique", unique),
            f!(fuse_in_header, "nodeid", nodeid),
            f!(fuse_in_header, "uid", uid),
            f!(fuse_in_header, "gid", gid),
            f!(fuse_in_header, "pid", pid),
            f!(fuse_in_header, "total_extlen", total_extlen),
            f!(fuse_out_header, "error", error),
            f!(fuse_out_header, "unique", unique),
            f!(fuse_init_in, "max_readahead", max_readahead),
            f!(fuse_init_in, "flags", flags),
            f!(fuse_init_in, "flags2", flags2),
            f!(fuse_init_out, "max_readahead", max_readahead),
            f!(fuse_init_out, "flags", flags),
            f!(fuse_init_out, "max_background", max_background),
            f!(fuse_init_out, "congestion_threshold", congestion_threshold),
            f!(fuse_init_out, "max_write", max_write),
            f!(fuse_init_out, "time_gran", time_gran),
            f!(fuse_init_out, "max_pages", max_pages),
            f!(fuse_init_out, "map_alignment", map_alignment),
            f!(fuse_init_out, "flags2", flags2),
            f!(fuse_init_out, "unused", max_stack_depth),
            f!(fuse_attr, "ctime", ctime),
            f!(fuse_attr, "atimensec", atimensec),
            f!(fuse_attr, "mode", mode),
            f!(fuse_attr, "rdev", rdev),
            f!(fuse_attr, "blksize", blksize),
            f!(fuse_attr, "flags", flags),
            f!(fuse_entry_out, "generation", generation),
            f!(fuse_entry_out, "attr_valid_nsec", attr_valid_nsec),
            f!(fuse_entry_out, "attr", attr),
            f!(fuse_attr_out, "attr_valid_nsec", attr_valid_nsec),
            f!(fuse_attr_out, "attr", attr),
            f!(fuse_getattr_in, "getattr_flags", getattr_flags),
            f!(fuse_getattr_in, "fh", fh),
            f!(fuse_setattr_in, "valid", valid),
            f!(fuse_setattr_in, "fh", fh),
            f!(fuse_setattr_in, "size", size),
            f!(fuse_setattr_in, "lock_owner", lock_owner),
            f!(fuse_setattr_in, "atime", atime),
            f!(fuse_setattr_in, "ctime", ctime),
            f!(fuse_setattr_in, "atimensec", atimensec),
            f!(fuse_setattr_in, "mode", mode),
            f!(fuse_setattr_in, "uid", uid),
            f!(fuse_setattr_in, "gid", gid),
            f!(fuse_open_in, "open_flags", open_flags),
            f!(fuse_open_out, "open_flags", open_flags),
            f!(fuse_open_out, "padding", backing_id),
            f!(fuse_read_in, "offset", offset),
            f!(fuse_read_in, "size", size),
            f!(fuse_read_in, "read_flags", read_flags),
            f!(fuse_read_in, "lock_owner", lock_owner),
            f!(fuse_read_in, "flags", flags),
            f!(fuse_write_in, "size", size),
            f!(fuse_write_in, "write_flags", write_flags),
            f!(fuse_write_in, "lock_owner", lock_owner),
            f!(fuse_write_in, "flags", flags),
            f!(fuse_write_out, "size", size),
            f!(fuse_release_in, "flags", flags),
            f!(fuse_release_in, "release_flags", release_flags),
            f!(fuse_release_in, "lock_owner", lock_owner),
            f!(fuse_flush_in, "lock_owner", lock_owner),
            f!(fuse_interrupt_in, "unique", unique),
            f!(fuse_poll_in, "kh", kh),
            f!(fuse_poll_in, "flags", flags),
            f!(fuse_poll_in, "events", events),
            f!(fuse_poll_out, "revents", revents),
            f!(fuse_notify_poll_wakeup_out, "kh", kh),
            f!(fuse_lseek_in, "offset", offset),
            f!(fuse_lseek_in, "whence", whence),
            f!(fuse_lseek_out, "offset", offset),
            f!(fuse_ioctl_in, "flags", flags),
            f!(fuse_ioctl_in, "cmd", cmd),
            f!(fuse_ioctl_in, "arg", arg),
            f!(fuse_ioctl_in, "in_size", in_size),
            f!(fuse_ioctl_in, "out_size", out_size),
            f!(fuse_ioctl_out, "flags", flags),
            f!(fuse_ioctl_out, "in_iovs", in_iovs),
            f!(fuse_ioctl_out, "out_iovs", out_iovs),
            f!(fuse_dirent, "off", off),
            f!(fuse_dirent, "namelen", namelen),
            f!(fuse_dirent, "type", typ),
            f!(fuse_access_in, "mask", mask),
            f!(fuse_getxattr_in, "size", size),
            f!(fuse_forget_one, "nlookup", nlookup),
            f!(fuse_batch_forget_in, "count", count),
            f!(fuse_kstatfs, "bsize", bsize),
            f!(fuse_kstatfs, "namelen", namelen),
            f!(fuse_kstatfs, "frsize", frsize),
            f!(fuse_kstatfs, "spare", spare),
        ]
    }

    fn sizes() -> Vec<(&'static str, usize)> {
        macro_rules! s {
            ($($t:ident),*) => { vec![$((stringify!($t), size_of::<$t>())),*] };
        }
        s!(
            fuse_in_header,
            fuse_out_header,
            fuse_init_in,
            fuse_init_out,
            fuse_attr,
            fuse_entry_out,
            fuse_attr_out,
            fuse_forget_in,
            fuse_forget_one,
            fuse_batch_forget_in,
            fuse_getattr_in,
            fuse_setattr_in,
            fuse_open_in,
            fuse_open_out,
            fuse_read_in,
            fuse_write_in,
            fuse_write_out,
            fuse_release_in,
            fuse_flush_in,
            fuse_interrupt_in,
            fuse_poll_in,
            fuse_poll_out,
            fuse_notify_poll_wakeup_out,
            fuse_lseek_in,
            fuse_lseek_out,
            fuse_ioctl_in,
            fuse_ioctl_out,
            fuse_dirent,
            fuse_access_in,
            fuse_getxattr_in,
            fuse_getxattr_out,
            fuse_kstatfs,
            fuse_statfs_out
        )
    }

    /// Constants that exist in 7.38, printed by the C program as `name value`.
    fn constants() -> Vec<(&'static str, u64)> {
        macro_rules! c {
            ($($n:ident),*) => { vec![$((stringify!($n), $n as u64)),*] };
        }
        let mut v = c!(
            FUSE_LOOKUP,
            FUSE_FORGET,
            FUSE_GETATTR,
            FUSE_SETATTR,
            FUSE_OPEN,
            FUSE_READ,
            FUSE_WRITE,
            FUSE_STATFS,
            FUSE_RELEASE,
            FUSE_FLUSH,
            FUSE_INIT,
            FUSE_OPENDIR,
            FUSE_READDIR,
            FUSE_RELEASEDIR,
            FUSE_ACCESS,
            FUSE_INTERRUPT,
            FUSE_DESTROY,
            FUSE_IOCTL,
            FUSE_POLL,
            FUSE_BATCH_FORGET,
            FUSE_LSEEK,
            FUSE_NOTIFY_POLL,
            FUSE_NOTIFY_DELETE,
            FUSE_ASYNC_READ,
            FUSE_ATOMIC_O_TRUNC,
            FUSE_BIG_WRITES,
            FUSE_MAX_PAGES,
            FUSE_INIT_EXT,
            FUSE_HAS_EXPIRE_ONLY,
            FOPEN_DIRECT_IO,
            FOPEN_NONSEEKABLE,
            FOPEN_PARALLEL_DIRECT_WRITES,
            FUSE_READ_LOCKOWNER,
            FUSE_GETATTR_FH,
            FUSE_POLL_SCHEDULE_NOTIFY,
            FUSE_RELEASE_FLUSH,
            FATTR_FH,
            FATTR_KILL_SUIDGID,
            FUSE_IOCTL_DIR,
            FUSE_MIN_READ_BUFFER
        );
        v.push(("FUSE_DEV_IOC_CLONE", FUSE_DEV_IOC_CLONE));
        v
    }

    #[test]
    fn matches_system_header() {
        if Command::new("cc").arg("--version").output().is_err() {
            return skip_or_fail("a C compiler `cc`");
        }
        if !Path::new(HEADER).exists() {
            return skip_or_fail(HEADER);
        }
        let mut c = String::from(
            "#include <stdio.h>\n#include <stddef.h>\n#include <stdint.h>\n#include <linux/ioctl.h>\n\
             #include <linux/fuse.h>\nint main(void){\n",
        );
        for (s, _) in sizes() {
            c += &format!("printf(\"sizeof {s} %zu\\n\", sizeof(struct {s}));\n");
        }
        for (s, f, _) in fields() {
            c += &format!("printf(\"offsetof {s}.{f} %zu\\n\", offsetof(struct {s}, {f}));\n");
        }
        for (n, _) in constants() {
            c += &format!("printf(\"const {n} %llu\\n\", (unsigned long long)({n}));\n");
        }
        c += "return 0;}\n";
        let dir = std::env::temp_dir().join(format!("kmsgfs-abi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("abi.c");
        let bin = dir.join("abi");
        std::fs::write(&src, c).unwrap();
        let out = Command::new("cc")
            .arg(&src)
            .arg("-o")
            .arg(&bin)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cc failed on {HEADER}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(&bin).output().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let text = String::from_utf8(out.stdout).unwrap();
        let got: std::collections::HashMap<String, u64> = text
            .lines()
            .filter_map(|l| {
                let mut it = l.rsplitn(2, ' ');
                let v = it.next()?.parse().ok()?;
                Some((it.next()?.to_owned(), v))
            })
            .collect();
        let mut bad = Vec::new();
        let mut check = |key: String, rust: u64| match got.get(&key) {
            Some(&c) if c == rust => {}
            other => bad.push(format!("{key}: C {other:?}, Rust {rust}")),
        };
        for (s, n) in sizes() {
            check(format!("sizeof {s}"), n as u64);
        }
        for (s, f, o) in fields() {
            check(format!("offsetof {s}.{f}"), o as u64);
        }
        for (n, v) in constants() {
            check(format!("const {n}"), v);
        }
        assert!(
            bad.is_empty(),
            "ABI mismatch with {HEADER}:\n{}",
            bad.join("\n")
        );
    }

    #[test]
    fn pod_round_trip_and_short_input() {
        let h = fuse_out_header {
            len: 16,
            error: -4,
            unique: 0x0102_0304_0506_0708,
        };
        let b = as_bytes(&h);
        assert_eq!(b.len(), 16);
        assert_eq!(read_pod::<fuse_out_header>(b), Some(h));
        assert_eq!(read_pod::<fuse_out_header>(&b[..15]), None);
        assert_eq!(dirent_size(0), 24);
        assert_eq!(dirent_size(1), 32);
        assert_eq!(dirent_size(8), 32);
        assert_eq!(dirent_size(9), 40);
    }
}
