//! LXC's seccomp notify proxy protocol (`lxc.seccomp.notify.proxy`): the wire format.
//!
//! LXC does not hand a container's seccomp listener to anyone. Its monitor (`lxc-start`, one
//! per container) receives each notification itself and, when the container's config names a
//! proxy, sends it to the proxy and waits for the answer, which it then gives the kernel with
//! `SECCOMP_IOCTL_NOTIF_SEND` (docs/spec/lxc-seccomp-proxy.md, from the LXC 5.0.2 sources):
//!
//! * one `SOCK_SEQPACKET` connection per monitor, opened at container start and kept;
//! * one record per notification: a 32-byte header (`__reserved` u64 = 0, `monitor_pid` i32,
//!   `init_pid` i32, the kernel's `seccomp_notif_sizes` 3 × u16, 2 bytes padding, `cookie_len`
//!   u64), the `seccomp_notif` (80 bytes), a `seccomp_notif_resp` (24 bytes, only `id` set) and
//!   `cookie_len` bytes of `lxc.seccomp.notify.cookie`, with three fds: `/proc/<tid>` (a
//!   directory), `/proc/<tid>/mem` and the notify fd the call came from;
//! * the answer is one record of exactly header + notif + resp (136 bytes, no cookie, no fds):
//!   LXC reads it into the same buffers with `MSG_TRUNC` and uses only the resp's `val`,
//!   `error` (a negative errno) and `flags`;
//! * LXC waits for it synchronously, in the monitor's only thread, for at most 30 s
//!   (`SO_RCVTIMEO`); after that it answers ENOSYS itself and the next record it reads is taken
//!   as the answer to its next call, so an answer must never come late ([`REPLY_BY`]).
//!
//! The agent ([`super::agent`]) serves the protocol with the same answer path as an OCI
//! listener; this module only parses and builds the records.

use std::time::Duration;

use thiserror::Error;

use super::notify::Notification;

/// Bytes of LXC's `struct seccomp_notify_proxy_msg`.
pub const HEADER_LEN: usize = 32;
/// `sizeof(struct seccomp_notif)`.
pub const NOTIF_LEN: usize = 80;
/// `sizeof(struct seccomp_notif_resp)`.
pub const RESP_LEN: usize = 24;
/// `sizeof(struct seccomp_data)`.
pub const DATA_LEN: usize = 64;
/// The answer: header, notif and resp, never the cookie (LXC's size check).
pub const REPLY_LEN: usize = HEADER_LEN + NOTIF_LEN + RESP_LEN;
/// The longest cookie accepted (LXC sends the config string as it is).
pub const MAX_COOKIE: usize = 4096;
/// The longest record accepted; a receive buffer one byte larger tells a longer one.
pub const MAX_RECORD: usize = REPLY_LEN + MAX_COOKIE;
/// Fds on every record: `/proc/<tid>`, `/proc/<tid>/mem`, the notify fd.
pub const FDS: usize = 3;
/// Index of the notify fd among [`FDS`].
pub const NOTIFY_FD: usize = 2;

/// LXC gives up on an answer after 30 s (`SO_RCVTIMEO`); an answer that cannot go before this
/// closes the connection instead, so that LXC never takes it for the answer to a later call.
pub const REPLY_BY: Duration = Duration::from_secs(25);
/// A blocking READ with nothing to read is answered EINTR after this long (the caller restarts
/// it; busybox klogd does). The monitor cannot serve `lxc-attach`, `lxc-stop`, `lxc-info` or
/// the container's next call while it waits for the answer, and one `lxc-attach` takes about
/// ten of its commands: with 2 s here an attach to a container running klogd took 14 to 26 s.
/// At 100 ms it takes about a second, for ten restarted calls a second (each a few µs of CPU).
pub const READ_WAIT: Duration = Duration::from_millis(100);

/// Why a record is not a notification LXC sent.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordError {
    /// Shorter than header + notif + resp.
    #[error("record of {0} bytes, shorter than the {REPLY_LEN} of header, notif and resp")]
    Short(usize),
    /// Longer than [`MAX_RECORD`].
    #[error("record longer than {MAX_RECORD} bytes")]
    Long,
    /// `__reserved` is not 0.
    #[error("reserved header field is {0:#x}, not 0")]
    Reserved(u64),
    /// The sender's struct sizes are not this kernel's.
    #[error("struct sizes (notif {0}, resp {1}, data {2}) are not the kernel's (80, 24, 64)")]
    Sizes(u16, u16, u16),
    /// `cookie_len` does not match the record's length.
    #[error("cookie_len {cookie_len} does not match a record of {len} bytes")]
    CookieLen {
        /// The header's `cookie_len`.
        cookie_len: u64,
        /// The record's length.
        len: usize,
    },
    /// Not exactly [`FDS`] fds came with the record.
    #[error("{0} fds with the record, not {FDS}")]
    Fds(usize),
}

/// One notification LXC forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `monitor_pid`: the `lxc-start` process that sent it.
    pub monitor_pid: u32,
    /// `init_pid`: the container's init, in the monitor's PID namespace.
    pub init_pid: u32,
    /// The `seccomp_notif`.
    pub notification: Notification,
    /// `lxc.seccomp.notify.cookie` (empty if none is set).
    pub cookie: Vec<u8>,
    /// Header and notif as received, echoed in the answer.
    echo: [u8; HEADER_LEN + NOTIF_LEN],
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parse one record (`fds`: how many fds came with it).
pub fn parse(record: &[u8], fds: usize) -> Result<Request, RecordError> {
    if record.len() > MAX_RECORD {
        return Err(RecordError::Long);
    }
    if record.len() < REPLY_LEN {
        return Err(RecordError::Short(record.len()));
    }
    let reserved = u64_at(record, 0);
    if reserved != 0 {
        return Err(RecordError::Reserved(reserved));
    }
    let sizes = (u16_at(record, 16), u16_at(record, 18), u16_at(record, 20));
    if sizes != (NOTIF_LEN as u16, RESP_LEN as u16, DATA_LEN as u16) {
        return Err(RecordError::Sizes(sizes.0, sizes.1, sizes.2));
    }
    let cookie_len = u64_at(record, 24);
    if cookie_len != (record.len() - REPLY_LEN) as u64 {
        return Err(RecordError::CookieLen {
            cookie_len,
            len: record.len(),
        });
    }
    if fds != FDS {
        return Err(RecordError::Fds(fds));
    }
    let n = &record[HEADER_LEN..HEADER_LEN + NOTIF_LEN];
    let mut args = [0u64; 6];
    for (i, a) in args.iter_mut().enumerate() {
        *a = u64_at(n, 32 + 8 * i);
    }
    let notification = Notification {
        id: u64_at(n, 0),
        tid: u32_at(n, 8),
        nr: u32_at(n, 16) as i32,
        arch: u32_at(n, 20),
        args,
    };
    let mut echo = [0u8; HEADER_LEN + NOTIF_LEN];
    echo.copy_from_slice(&record[..HEADER_LEN + NOTIF_LEN]);
    Ok(Request {
        monitor_pid: u32_at(record, 8),
        init_pid: u32_at(record, 12),
        notification,
        cookie: record[REPLY_LEN..].to_vec(),
        echo,
    })
}

impl Request {
    /// The answer record: header and notif echoed, resp `{id, val, -errno, flags 0}`. Never
    /// `SECCOMP_USER_NOTIF_FLAG_CONTINUE`: that would run the host's `syslog` for the caller.
    pub fn answer(&self, val: i64, errno: i32) -> [u8; REPLY_LEN] {
        let mut out = [0u8; REPLY_LEN];
        out[..HEADER_LEN + NOTIF_LEN].copy_from_slice(&self.echo);
        let resp = &mut out[HEADER_LEN + NOTIF_LEN..];
        resp[0..8].copy_from_slice(&self.notification.id.to_ne_bytes());
        resp[8..16].copy_from_slice(&val.to_ne_bytes());
        let error: i32 = if errno == 0 { 0 } else { -errno };
        resp[16..20].copy_from_slice(&error.to_ne_bytes());
        resp[20..24].copy_from_slice(&0u32.to_ne_bytes());
        out
    }
}

/// A record as LXC builds it (for tests and the test client).
pub fn encode(monitor_pid: u32, init_pid: u32, n: &Notification, cookie: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; REPLY_LEN];
    out[8..12].copy_from_slice(&monitor_pid.to_ne_bytes());
    out[12..16].copy_from_slice(&init_pid.to_ne_bytes());
    out[16..18].copy_from_slice(&(NOTIF_LEN as u16).to_ne_bytes());
    out[18..20].copy_from_slice(&(RESP_LEN as u16).to_ne_bytes());
    out[20..22].copy_from_slice(&(DATA_LEN as u16).to_ne_bytes());
    out[24..32].copy_from_slice(&(cookie.len() as u64).to_ne_bytes());
    let h = HEADER_LEN;
    out[h..h + 8].copy_from_slice(&n.id.to_ne_bytes());
    out[h + 8..h + 12].copy_from_slice(&n.tid.to_ne_bytes());
    out[h + 16..h + 20].copy_from_slice(&(n.nr as u32).to_ne_bytes());
    out[h + 20..h + 24].copy_from_slice(&n.arch.to_ne_bytes());
    for (i, a) in n.args.iter().enumerate() {
        let at = h + 32 + 8 * i;
        out[at..at + 8].copy_from_slice(&a.to_ne_bytes());
    }
    // LXC sets only the id of the resp it sends.
    let r = HEADER_LEN + NOTIF_LEN;
    out[r..r + 8].copy_from_slice(&n.id.to_ne_bytes());
    out.extend_from_slice(cookie);
    out
}

/// The resp of an answer record: `(id, val, error, flags)`.
pub fn decode_answer(record: &[u8]) -> Option<(u64, i64, i32, u32)> {
    if record.len() != REPLY_LEN {
        return None;
    }
    let r = &record[HEADER_LEN + NOTIF_LEN..];
    Some((
        u64_at(r, 0),
        u64_at(r, 8) as i64,
        u32_at(r, 16) as i32,
        u32_at(r, 20),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification() -> Notification {
        Notification {
            id: 0x1122_3344_5566_7788,
            tid: 4242,
            arch: super::super::filter::AUDIT_ARCH_X86_64,
            nr: 103,
            args: [3, 0x7fff_0000, 4096, 0, 0, u64::MAX],
        }
    }

    #[test]
    fn the_struct_sizes_are_the_kernels() {
        assert_eq!(NOTIF_LEN, std::mem::size_of::<libc::seccomp_notif>());
        assert_eq!(RESP_LEN, std::mem::size_of::<libc::seccomp_notif_resp>());
        assert_eq!(DATA_LEN, std::mem::size_of::<libc::seccomp_data>());
        assert_eq!(REPLY_LEN, 136);
    }

    #[test]
    fn a_record_round_trips_with_and_without_a_cookie() {
        for cookie in [&b""[..], b"kt", &[b'x'; MAX_COOKIE]] {
            let rec = encode(10, 20, &notification(), cookie);
            let r = parse(&rec, FDS).unwrap();
            assert_eq!((r.monitor_pid, r.init_pid), (10, 20));
            assert_eq!(r.notification, notification());
            assert_eq!(r.cookie, cookie);
        }
    }

    #[test]
    fn the_answer_echoes_header_and_notif_and_carries_a_negative_errno() {
        let rec = encode(10, 20, &notification(), b"cookie");
        let r = parse(&rec, FDS).unwrap();
        let a = r.answer(0, libc::EINTR);
        assert_eq!(a.len(), REPLY_LEN);
        assert_eq!(&a[..HEADER_LEN + NOTIF_LEN], &rec[..HEADER_LEN + NOTIF_LEN]);
        assert_eq!(
            decode_answer(&a),
            Some((notification().id, 0, -libc::EINTR, 0))
        );
        let a = r.answer(1234, 0);
        assert_eq!(decode_answer(&a), Some((notification().id, 1234, 0, 0)));
    }

    #[test]
    fn malformed_records_are_refused_with_the_reason() {
        let good = encode(1, 2, &notification(), b"ab");
        assert_eq!(parse(&good[..100], FDS), Err(RecordError::Short(100)));
        assert_eq!(
            parse(&vec![0u8; MAX_RECORD + 1], FDS),
            Err(RecordError::Long)
        );
        let mut bad = good.clone();
        bad[0] = 1;
        assert_eq!(
            parse(&bad, FDS),
            Err(RecordError::Reserved(u64::from_ne_bytes([
                1, 0, 0, 0, 0, 0, 0, 0
            ])))
        );
        let mut bad = good.clone();
        bad[16] = 81;
        assert!(matches!(parse(&bad, FDS), Err(RecordError::Sizes(..))));
        let mut bad = good.clone();
        bad[24] = 3;
        assert!(matches!(
            parse(&bad, FDS),
            Err(RecordError::CookieLen { cookie_len: 3, .. })
        ));
        assert_eq!(parse(&good, 2), Err(RecordError::Fds(2)));
        assert_eq!(parse(&good, 4), Err(RecordError::Fds(4)));
    }

    #[test]
    fn no_input_panics_the_parser() {
        let good = encode(1, 2, &notification(), b"cookie");
        // Every length, and every byte of a good record flipped.
        for len in 0..good.len() + 2 {
            let mut r = good.clone();
            r.resize(len, 0xff);
            let _ = parse(&r, FDS);
        }
        for i in 0..good.len() {
            let mut r = good.clone();
            r[i] ^= 0xff;
            let _ = parse(&r, FDS);
        }
    }
}
