//! The kernel log record and its three wire formats.
//!
//! * [`parse_kmsg`] reads one record as the host `/dev/kmsg` returns it (kmsg-semantics A2).
//! * [`format_kmsg`] writes a record the way `devkmsg_read` does on Linux 6.18 (A2), with the
//!   sequence number of the ring it is read from.
//! * [`format_syslog`] writes the `syslog(2)` / `/proc/kmsg` text (B3).
//! * [`parse_user_write`] turns one `write()` to `/dev/kmsg` into a record exactly as
//!   `devkmsg_write` does (A6.5, A6.6).
//!
//! Where Linux 6.1 and 6.18 differ (spec section F) this module follows 6.18: writes up to
//! 1024 bytes, text up to 1023 bytes, formatted records cut at 2048 bytes.

use thiserror::Error;

/// Largest accepted `write()` to `/dev/kmsg` (`PRINTKRB_RECORD_MAX` on 6.18, A6.1).
pub const WRITE_MAX: usize = 1024;
/// Largest stored record text (6.18, A6.6).
pub const TEXT_MAX: usize = 1023;
/// Size of the buffer a record is formatted into for `/dev/kmsg` and `syslog(2)`
/// (`PRINTK_MESSAGE_MAX` on 6.18, A2.9 and B3.7).
pub const MESSAGE_MAX: usize = 2048;
/// Longest dictionary value for `SUBSYSTEM` (`dev_printk_info`, 0.3).
pub const SUBSYSTEM_MAX: usize = 15;
/// Longest dictionary value for `DEVICE` (`dev_printk_info`, 0.3).
pub const DEVICE_MAX: usize = 47;
/// `LOG_USER`: the facility the kernel forces on facility 0 writes from userspace (A6.5).
pub const LOG_USER: u8 = 1;
/// `LOG_KERN`.
pub const LOG_KERN: u8 = 0;

/// Who stored a record, as `CONFIG_PRINTK_CALLER` prints it (A2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A task, by thread id: `caller=T<tid>`.
    Thread(u32),
    /// Interrupt or other non-task context, by CPU: `caller=C<cpu>`.
    Cpu(u32),
}

/// A borrowed view of one record. The ring hands these out without copying twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Sequence number in the ring the record was read from.
    pub seq: u64,
    /// Timestamp in microseconds on the kernel's boot-based clock.
    pub ts_usec: u64,
    /// `(facility << 3) | level`; 0..=2047 (A2.1).
    pub prio: u16,
    /// `LOG_CONT`: printed as flag `c` (A2.4).
    pub cont: bool,
    /// `CONFIG_PRINTK_CALLER` information, when the host printed it.
    pub caller: Option<Caller>,
    /// Raw text: no escaping, no trailing newline, may hold embedded `\n`.
    pub text: &'a [u8],
    /// Raw `SUBSYSTEM` dictionary value; empty when absent.
    pub subsystem: &'a [u8],
    /// Raw `DEVICE` dictionary value; empty when absent.
    pub device: &'a [u8],
}

impl RecordRef<'_> {
    /// The facility, `prio >> 3`.
    pub fn facility(&self) -> u8 {
        // prio is at most 2047, so the facility fits in a u8.
        (self.prio >> 3) as u8
    }

    /// The level, `prio & 7`.
    pub fn level(&self) -> u8 {
        (self.prio & 7) as u8
    }

    /// An owned copy.
    pub fn to_owned(&self) -> Record {
        Record {
            seq: self.seq,
            ts_usec: self.ts_usec,
            prio: self.prio,
            cont: self.cont,
            caller: self.caller,
            text: self.text.to_vec(),
            subsystem: self.subsystem.to_vec(),
            device: self.device.to_vec(),
        }
    }
}

/// An owned record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// See [`RecordRef::seq`].
    pub seq: u64,
    /// See [`RecordRef::ts_usec`].
    pub ts_usec: u64,
    /// See [`RecordRef::prio`].
    pub prio: u16,
    /// See [`RecordRef::cont`].
    pub cont: bool,
    /// See [`RecordRef::caller`].
    pub caller: Option<Caller>,
    /// See [`RecordRef::text`].
    pub text: Vec<u8>,
    /// See [`RecordRef::subsystem`].
    pub subsystem: Vec<u8>,
    /// See [`RecordRef::device`].
    pub device: Vec<u8>,
}

impl Record {
    /// A borrowed view.
    pub fn as_ref(&self) -> RecordRef<'_> {
        RecordRef {
            seq: self.seq,
            ts_usec: self.ts_usec,
            prio: self.prio,
            cont: self.cont,
            caller: self.caller,
            text: &self.text,
            subsystem: &self.subsystem,
            device: &self.device,
        }
    }
}

/// Why a host `/dev/kmsg` record could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    /// The header has no `;`.
    #[error("kmsg record has no ';' after its header")]
    NoSemicolon,
    /// A header field is missing or not a number.
    #[error("kmsg record header field {field} is malformed")]
    BadField {
        /// `prio`, `seq`, `ts_usec` or `flag`.
        field: &'static str,
    },
    /// A `\x` escape is not followed by two hex digits.
    #[error("kmsg record has a malformed \\x escape at byte {at}")]
    BadEscape {
        /// Offset in the input.
        at: usize,
    },
}

/// Why a userspace write was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WriteError {
    /// More than [`WRITE_MAX`] bytes: the kernel answers EINVAL (A6.1).
    #[error("write of {len} bytes exceeds the {WRITE_MAX}-byte record limit (EINVAL)")]
    TooLong {
        /// Length of the write.
        len: usize,
    },
}

/// A userspace write, parsed as `devkmsg_write` does (A6.5, A6.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserWrite<'a> {
    /// `(facility << 3) | level`, with facility 0 replaced by `LOG_USER`.
    pub prio: u16,
    /// Text after the prefix, cut at the first NUL, one trailing `\n` removed, at most
    /// [`TEXT_MAX`] bytes.
    pub text: &'a [u8],
}

/// Parse one record read from the host `/dev/kmsg` (A2), including dictionary lines.
///
/// Unknown comma-separated header fields are skipped (A2.5); `caller=T…`/`caller=C…` is
/// decoded. Text and dictionary values are unescaped.
pub fn parse_kmsg(input: &[u8]) -> Result<Record, ParseError> {
    let _ = input;
    todo!("record::parse_kmsg")
}

/// Append `rec` formatted as one `/dev/kmsg` read result (A2) to `out`, cut at
/// [`MESSAGE_MAX`] bytes like Linux 6.18 (A2.9).
pub fn format_kmsg(rec: &RecordRef<'_>, out: &mut Vec<u8>) {
    let _ = (rec, out);
    todo!("record::format_kmsg")
}

/// Append `rec` in the `syslog(2)` text format (B3) to `out`: a `<prio>[sssss.uuuuuu] ` prefix
/// on every line when `time` is set, `<prio>` alone otherwise; raw bytes; no dictionary; lines
/// that do not fit in [`MESSAGE_MAX`] dropped whole (B3.7). Returns the bytes appended.
pub fn format_syslog(rec: &RecordRef<'_>, time: bool, out: &mut Vec<u8>) -> usize {
    let _ = (rec, time, out);
    todo!("record::format_syslog")
}

/// The size the kernel *estimates* for `rec` in the syslog format, ignoring the B3.7
/// truncation: `prefix_len * lines + text_len + 1` (B5.3, B6.1).
pub fn syslog_len(rec: &RecordRef<'_>, time: bool) -> usize {
    let _ = (rec, time);
    todo!("record::syslog_len")
}

/// Parse one `write()` to `/dev/kmsg` as the kernel does (A6.5, A6.6). `default_level` is
/// `default_message_loglevel` (4 by default).
pub fn parse_user_write(buf: &[u8], default_level: u8) -> Result<UserWrite<'_>, WriteError> {
    let _ = (buf, default_level);
    todo!("record::parse_user_write")
}
