//! Parsing one request, as read from `/dev/fuse`, into a typed [`Request`].
//!
//! The device delivers exactly one request per `read(2)`: a [`abi::fuse_in_header`] whose
//! `len` equals the bytes read, followed by the opcode's argument struct and, for some
//! opcodes, a NUL-terminated name or a data payload. Anything that does not add up is a
//! [`ParseError`]; nothing here panics or indexes out of bounds on hostile or truncated
//! input. Opcodes kmsgfs does not implement parse to [`Operation::Unknown`] and are answered
//! ENOSYS by the session without a log line (a client could otherwise flood the log).

use std::ffi::OsStr;
use std::mem::size_of;
use std::os::unix::ffi::OsStrExt;

use thiserror::Error;

use super::abi::{self, read_pod, Pod};
use super::types::RequestId;

/// A request that cannot be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer bytes than a `fuse_in_header`.
    #[error("request of {0} bytes is shorter than its 40-byte header")]
    ShortHeader(usize),
    /// The header's `len` disagrees with the bytes read.
    #[error("header says {header} bytes, {read} were read")]
    LengthMismatch {
        /// `fuse_in_header.len`.
        header: u32,
        /// Bytes actually read.
        read: usize,
    },
    /// The argument struct of the opcode does not fit.
    #[error("opcode {opcode}: argument needs {need} bytes, {have} present")]
    ShortArgument {
        /// The opcode.
        opcode: u32,
        /// Bytes needed.
        need: usize,
        /// Bytes present after the header.
        have: usize,
    },
    /// A name is not NUL-terminated within the request.
    #[error("opcode {0}: name is not NUL-terminated")]
    UnterminatedName(u32),
    /// A payload size field exceeds the bytes present.
    #[error("opcode {opcode}: payload of {size} bytes, {have} present")]
    ShortPayload {
        /// The opcode.
        opcode: u32,
        /// The size the argument claims.
        size: usize,
        /// Bytes present.
        have: usize,
    },
}

/// One parsed request: the header fields and the operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    unique: u64,
    opcode: u32,
    nodeid: u64,
    uid: u32,
    gid: u32,
    pid: u32,
    /// The operation and its arguments.
    pub operation: Operation<'a>,
}

impl Request<'_> {
    /// The request id, exactly as sent (the reply must carry the same value).
    pub fn unique(&self) -> RequestId {
        RequestId(self.unique)
    }
    /// The opcode.
    pub fn opcode(&self) -> u32 {
        self.opcode
    }
    /// The node the request is about.
    pub fn nodeid(&self) -> u64 {
        self.nodeid
    }
    /// fsuid of the caller, in the connection's user namespace.
    pub fn uid(&self) -> u32 {
        self.uid
    }
    /// fsgid of the caller.
    pub fn gid(&self) -> u32 {
        self.gid
    }
    /// pid of the caller, in the connection's pid namespace (0 if not visible there).
    pub fn pid(&self) -> u32 {
        self.pid
    }
    /// Whether the kernel sent this request again after FUSE_NOTIFY_RESEND.
    pub fn is_resend(&self) -> bool {
        self.unique & abi::FUSE_UNIQUE_RESEND != 0
    }
}

/// The operations kmsgfs handles, with their parsed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation<'a> {
    /// FUSE_INIT; fields after `flags` are zero from kernels older than 7.36.
    Init(abi::fuse_init_in),
    /// FUSE_DESTROY: the connection is being shut down (unmount).
    Destroy,
    /// FUSE_LOOKUP of `name` in the directory `nodeid`.
    Lookup {
        /// The entry name.
        name: &'a OsStr,
    },
    /// FUSE_FORGET (no reply).
    Forget(abi::fuse_forget_in),
    /// FUSE_BATCH_FORGET (no reply).
    BatchForget(Vec<abi::fuse_forget_one>),
    /// FUSE_GETATTR.
    GetAttr(abi::fuse_getattr_in),
    /// FUSE_SETATTR.
    SetAttr(abi::fuse_setattr_in),
    /// FUSE_OPEN.
    Open(abi::fuse_open_in),
    /// FUSE_OPENDIR.
    OpenDir(abi::fuse_open_in),
    /// FUSE_READ.
    Read(abi::fuse_read_in),
    /// FUSE_WRITE with its data.
    Write {
        /// The argument.
        arg: abi::fuse_write_in,
        /// `arg.size` bytes of data.
        data: &'a [u8],
    },
    /// FUSE_FLUSH.
    Flush(abi::fuse_flush_in),
    /// FUSE_RELEASE.
    Release(abi::fuse_release_in),
    /// FUSE_RELEASEDIR.
    ReleaseDir(abi::fuse_release_in),
    /// FUSE_READDIR.
    ReadDir(abi::fuse_read_in),
    /// FUSE_STATFS.
    StatFs,
    /// FUSE_GETXATTR.
    GetXattr {
        /// The argument.
        arg: abi::fuse_getxattr_in,
        /// The attribute name.
        name: &'a OsStr,
    },
    /// FUSE_LISTXATTR.
    ListXattr(abi::fuse_getxattr_in),
    /// FUSE_ACCESS.
    Access(abi::fuse_access_in),
    /// FUSE_INTERRUPT of the request with unique `arg.unique` (answered with no reply).
    Interrupt(abi::fuse_interrupt_in),
    /// FUSE_POLL.
    Poll(abi::fuse_poll_in),
    /// FUSE_LSEEK.
    Lseek(abi::fuse_lseek_in),
    /// FUSE_IOCTL with its input data.
    Ioctl {
        /// The argument.
        arg: abi::fuse_ioctl_in,
        /// `arg.in_size` bytes.
        data: &'a [u8],
    },
    /// Any other opcode: answered ENOSYS (or [`super::Filesystem::unsupported`]).
    Unknown(u32),
}

fn arg<T: Pod>(opcode: u32, b: &[u8]) -> Result<T, ParseError> {
    read_pod::<T>(b).ok_or(ParseError::ShortArgument {
        opcode,
        need: size_of::<T>(),
        have: b.len(),
    })
}

fn name(opcode: u32, b: &[u8]) -> Result<&OsStr, ParseError> {
    let end = b
        .iter()
        .position(|&c| c == 0)
        .ok_or(ParseError::UnterminatedName(opcode))?;
    Ok(OsStr::from_bytes(&b[..end]))
}

fn payload(opcode: u32, b: &[u8], size: u32) -> Result<&[u8], ParseError> {
    let size = size as usize;
    b.get(..size).ok_or(ParseError::ShortPayload {
        opcode,
        size,
        have: b.len(),
    })
}

/// Parse the request in `buf` (exactly the bytes one `read(2)` returned).
pub fn parse(buf: &[u8]) -> Result<Request<'_>, ParseError> {
    let h: abi::fuse_in_header = read_pod(buf).ok_or(ParseError::ShortHeader(buf.len()))?;
    if h.len as usize != buf.len() {
        return Err(ParseError::LengthMismatch {
            header: h.len,
            read: buf.len(),
        });
    }
    let b = &buf[size_of::<abi::fuse_in_header>()..];
    let op = h.opcode;
    let operation = match op {
        abi::FUSE_INIT => {
            // Before 7.36 the kernel sends only major, minor, max_readahead and flags.
            const OLD: usize = 16;
            if b.len() < OLD {
                return Err(ParseError::ShortArgument {
                    opcode: op,
                    need: OLD,
                    have: b.len(),
                });
            }
            let mut full = [0u8; size_of::<abi::fuse_init_in>()];
            let n = b.len().min(full.len());
            full[..n].copy_from_slice(&b[..n]);
            Operation::Init(arg(op, &full)?)
        }
        abi::FUSE_DESTROY => Operation::Destroy,
        abi::FUSE_LOOKUP => Operation::Lookup { name: name(op, b)? },
        abi::FUSE_FORGET => Operation::Forget(arg(op, b)?),
        abi::FUSE_BATCH_FORGET => {
            let a: abi::fuse_batch_forget_in = arg(op, b)?;
            let rest = &b[size_of::<abi::fuse_batch_forget_in>()..];
            let one = size_of::<abi::fuse_forget_one>();
            let count = a.count as usize;
            if rest.len() / one < count {
                return Err(ParseError::ShortPayload {
                    opcode: op,
                    size: count.saturating_mul(one),
                    have: rest.len(),
                });
            }
            Operation::BatchForget(
                rest.chunks_exact(one)
                    .take(count)
                    .filter_map(read_pod)
                    .collect(),
            )
        }
        abi::FUSE_GETATTR => Operation::GetAttr(arg(op, b)?),
        abi::FUSE_SETATTR => Operation::SetAttr(arg(op, b)?),
        abi::FUSE_OPEN => Operation::Open(arg(op, b)?),
        abi::FUSE_OPENDIR => Operation::OpenDir(arg(op, b)?),
        abi::FUSE_READ => Operation::Read(arg(op, b)?),
        abi::FUSE_WRITE => {
            let a: abi::fuse_write_in = arg(op, b)?;
            let data = payload(op, &b[size_of::<abi::fuse_write_in>()..], a.size)?;
            Operation::Write { arg: a, data }
        }
        abi::FUSE_FLUSH => Operation::Flush(arg(op, b)?),
        abi::FUSE_RELEASE => Operation::Release(arg(op, b)?),
        abi::FUSE_RELEASEDIR => Operation::ReleaseDir(arg(op, b)?),
        abi::FUSE_READDIR => Operation::ReadDir(arg(op, b)?),
        abi::FUSE_STATFS => Operation::StatFs,
        abi::FUSE_GETXATTR => {
            let a: abi::fuse_getxattr_in = arg(op, b)?;
            let n = name(op, &b[size_of::<abi::fuse_getxattr_in>()..])?;
            Operation::GetXattr { arg: a, name: n }
        }
        abi::FUSE_LISTXATTR => Operation::ListXattr(arg(op, b)?),
        abi::FUSE_ACCESS => Operation::Access(arg(op, b)?),
        abi::FUSE_INTERRUPT => Operation::Interrupt(arg(op, b)?),
        abi::FUSE_POLL => Operation::Poll(arg(op, b)?),
        abi::FUSE_LSEEK => Operation::Lseek(arg(op, b)?),
        abi::FUSE_IOCTL => {
            let a: abi::fuse_ioctl_in = arg(op, b)?;
            let data = payload(op, &b[size_of::<abi::fuse_ioctl_in>()..], a.in_size)?;
            Operation::Ioctl { arg: a, data }
        }
        other => Operation::Unknown(other),
    };
    Ok(Request {
        unique: h.unique,
        opcode: op,
        nodeid: h.nodeid,
        uid: h.uid,
        gid: h.gid,
        pid: h.pid,
        operation,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frontends::fuse::wire::abi::as_bytes;

    /// A request buffer: header for `opcode`/`unique`/`nodeid` plus `parts`.
    pub(crate) fn build(opcode: u32, unique: u64, nodeid: u64, parts: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = parts.concat();
        let h = abi::fuse_in_header {
            len: (40 + body.len()) as u32,
            opcode,
            unique,
            nodeid,
            uid: 1000,
            gid: 1001,
            pid: 4242,
            total_extlen: 0,
            padding: 0,
        };
        let mut v = as_bytes(&h).to_vec();
        v.extend_from_slice(&body);
        v
    }

    fn op(buf: &[u8]) -> Operation<'_> {
        parse(buf).expect("parses").operation
    }

    #[test]
    fn header_fields() {
        let b = build(abi::FUSE_STATFS, 0x10, 7, &[]);
        let r = parse(&b).unwrap();
        assert_eq!(
            (
                r.unique().0,
                r.opcode(),
                r.nodeid(),
                r.uid(),
                r.gid(),
                r.pid()
            ),
            (0x10, abi::FUSE_STATFS, 7, 1000, 1001, 4242)
        );
        assert!(!r.is_resend());
        let b = build(abi::FUSE_STATFS, 0x10 | abi::FUSE_UNIQUE_RESEND, 7, &[]);
        let r = parse(&b).unwrap();
        assert!(r.is_resend());
        assert_eq!(
            r.unique().0,
            0x10 | abi::FUSE_UNIQUE_RESEND,
            "kept verbatim"
        );
    }

    #[test]
    fn every_supported_opcode() {
        let init = abi::fuse_init_in {
            major: 7,
            minor: 44,
            max_readahead: 131072,
            flags: 0x4000_0001,
            flags2: 0x80,
            unused: [0; 11],
        };
        assert_eq!(
            op(&build(abi::FUSE_INIT, 2, 0, &[as_bytes(&init)])),
            Operation::Init(init)
        );
        // A pre-7.36 INIT of 16 bytes is zero-extended.
        let short = &as_bytes(&init)[..16];
        match op(&build(abi::FUSE_INIT, 2, 0, &[short])) {
            Operation::Init(i) => assert_eq!((i.minor, i.flags2), (44, 0)),
            o => panic!("{o:?}"),
        }
        assert_eq!(op(&build(abi::FUSE_DESTROY, 2, 0, &[])), Operation::Destroy);
        assert_eq!(
            op(&build(abi::FUSE_LOOKUP, 2, 1, &[b"kmsg\0"])),
            Operation::Lookup {
                name: OsStr::new("kmsg")
            }
        );
        let f = abi::fuse_forget_in { nlookup: 3 };
        assert_eq!(
            op(&build(abi::FUSE_FORGET, 2, 5, &[as_bytes(&f)])),
            Operation::Forget(f)
        );
        let bf = abi::fuse_batch_forget_in { count: 2, dummy: 0 };
        let o1 = abi::fuse_forget_one {
            nodeid: 5,
            nlookup: 1,
        };
        let o2 = abi::fuse_forget_one {
            nodeid: 6,
            nlookup: 2,
        };
        assert_eq!(
            op(&build(
                abi::FUSE_BATCH_FORGET,
                2,
                0,
                &[as_bytes(&bf), as_bytes(&o1), as_bytes(&o2)]
            )),
            Operation::BatchForget(vec![o1, o2])
        );
        let g = abi::fuse_getattr_in {
            getattr_flags: abi::FUSE_GETATTR_FH,
            dummy: 0,
            fh: 9,
        };
        assert_eq!(
            op(&build(abi::FUSE_GETATTR, 2, 2, &[as_bytes(&g)])),
            Operation::GetAttr(g)
        );
        let s = abi::fuse_setattr_in {
            valid: abi::FATTR_SIZE,
            size: 0,
            ..Default::default()
        };
        assert_eq!(
            op(&build(abi::FUSE_SETATTR, 2, 2, &[as_bytes(&s)])),
            Operation::SetAttr(s)
        );
        let o = abi::fuse_open_in {
            flags: libc::O_RDWR as u32,
            open_flags: 0,
        };
        assert_eq!(
            op(&build(abi::FUSE_OPEN, 2, 2, &[as_bytes(&o)])),
            Operation::Open(o)
        );
        assert_eq!(
            op(&build(abi::FUSE_OPENDIR, 2, 1, &[as_bytes(&o)])),
            Operation::OpenDir(o)
        );
        let r = abi::fuse_read_in {
            fh: 1,
            offset: 2,
            size: 4096,
            read_flags: abi::FUSE_READ_LOCKOWNER,
            lock_owner: 77,
            flags: 0,
            padding: 0,
        };
        assert_eq!(
            op(&build(abi::FUSE_READ, 2, 2, &[as_bytes(&r)])),
            Operation::Read(r)
        );
        assert_eq!(
            op(&build(abi::FUSE_READDIR, 2, 1, &[as_bytes(&r)])),
            Operation::ReadDir(r)
        );
        let w = abi::fuse_write_in {
            fh: 1,
            size: 5,
            ..Default::default()
        };
        assert_eq!(
            op(&build(abi::FUSE_WRITE, 2, 2, &[as_bytes(&w), b"hello"])),
            Operation::Write {
                arg: w,
                data: b"hello"
            }
        );
        let fl = abi::fuse_flush_in {
            fh: 1,
            lock_owner: 8,
            ..Default::default()
        };
        assert_eq!(
            op(&build(abi::FUSE_FLUSH, 2, 2, &[as_bytes(&fl)])),
            Operation::Flush(fl)
        );
        let rl = abi::fuse_release_in {
            fh: 1,
            flags: 2,
            release_flags: 1,
            lock_owner: 3,
        };
        assert_eq!(
            op(&build(abi::FUSE_RELEASE, 2, 2, &[as_bytes(&rl)])),
            Operation::Release(rl)
        );
        assert_eq!(
            op(&build(abi::FUSE_RELEASEDIR, 2, 1, &[as_bytes(&rl)])),
            Operation::ReleaseDir(rl)
        );
        assert_eq!(op(&build(abi::FUSE_STATFS, 2, 1, &[])), Operation::StatFs);
        let gx = abi::fuse_getxattr_in {
            size: 64,
            padding: 0,
        };
        assert_eq!(
            op(&build(
                abi::FUSE_GETXATTR,
                2,
                2,
                &[as_bytes(&gx), b"user.x\0"]
            )),
            Operation::GetXattr {
                arg: gx,
                name: OsStr::new("user.x")
            }
        );
        assert_eq!(
            op(&build(abi::FUSE_LISTXATTR, 2, 2, &[as_bytes(&gx)])),
            Operation::ListXattr(gx)
        );
        let a = abi::fuse_access_in {
            mask: 4,
            padding: 0,
        };
        assert_eq!(
            op(&build(abi::FUSE_ACCESS, 2, 2, &[as_bytes(&a)])),
            Operation::Access(a)
        );
        let i = abi::fuse_interrupt_in { unique: 40 };
        assert_eq!(
            op(&build(abi::FUSE_INTERRUPT, 41, 0, &[as_bytes(&i)])),
            Operation::Interrupt(i)
        );
        let p = abi::fuse_poll_in {
            fh: 1,
            kh: 99,
            flags: 1,
            events: 1,
        };
        assert_eq!(
            op(&build(abi::FUSE_POLL, 2, 2, &[as_bytes(&p)])),
            Operation::Poll(p)
        );
        let l = abi::fuse_lseek_in {
            fh: 1,
            offset: 0,
            whence: 3,
            padding: 0,
        };
        assert_eq!(
            op(&build(abi::FUSE_LSEEK, 2, 2, &[as_bytes(&l)])),
            Operation::Lseek(l)
        );
        let io = abi::fuse_ioctl_in {
            fh: 1,
            cmd: 0x5401,
            in_size: 2,
            ..Default::default()
        };
        assert_eq!(
            op(&build(abi::FUSE_IOCTL, 2, 2, &[as_bytes(&io), b"ab"])),
            Operation::Ioctl {
                arg: io,
                data: b"ab"
            }
        );
        assert_eq!(
            op(&build(abi::FUSE_MKNOD, 2, 1, &[b"junk"])),
            Operation::Unknown(abi::FUSE_MKNOD)
        );
        assert_eq!(op(&build(9999, 2, 1, &[])), Operation::Unknown(9999));
    }

    #[test]
    fn short_and_garbage_input_is_an_error() {
        assert_eq!(parse(&[]), Err(ParseError::ShortHeader(0)));
        assert_eq!(parse(&[0u8; 39]), Err(ParseError::ShortHeader(39)));
        let mut b = build(abi::FUSE_STATFS, 2, 1, &[]);
        b.push(0);
        assert_eq!(
            parse(&b),
            Err(ParseError::LengthMismatch {
                header: 40,
                read: 41
            })
        );
        assert!(matches!(
            parse(&build(abi::FUSE_READ, 2, 1, &[&[0u8; 39]])),
            Err(ParseError::ShortArgument {
                opcode: abi::FUSE_READ,
                need: 40,
                have: 39
            })
        ));
        assert_eq!(
            parse(&build(abi::FUSE_LOOKUP, 2, 1, &[b"no-nul"])),
            Err(ParseError::UnterminatedName(abi::FUSE_LOOKUP))
        );
        let w = abi::fuse_write_in {
            size: 6,
            ..Default::default()
        };
        assert!(matches!(
            parse(&build(abi::FUSE_WRITE, 2, 1, &[as_bytes(&w), b"hello"])),
            Err(ParseError::ShortPayload {
                size: 6,
                have: 5,
                ..
            })
        ));
        let bf = abi::fuse_batch_forget_in {
            count: u32::MAX,
            dummy: 0,
        };
        assert!(matches!(
            parse(&build(abi::FUSE_BATCH_FORGET, 2, 0, &[as_bytes(&bf)])),
            Err(ParseError::ShortPayload { .. })
        ));
        assert!(parse(&build(abi::FUSE_INIT, 2, 0, &[&[0u8; 8]])).is_err());
        // Pseudo-random garbage of every length never panics.
        let mut x: u32 = 0x1234_5678;
        for len in 0..600usize {
            let mut g: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = parse(&g);
            if len >= 40 {
                g[..4].copy_from_slice(&(len as u32).to_ne_bytes());
                for opc in [1u32, 15, 16, 22, 39, 42, 26] {
                    g[4..8].copy_from_slice(&opc.to_ne_bytes());
                    let _ = parse(&g);
                }
            }
        }
    }
}
