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
//!
//! The cuts are reproduced byte for byte because clients see them: a `/dev/kmsg` record may lose
//! its final `\n` or end in a partial escape (A2.9, see `Capped`), and a syslog record keeps only
//! the whole lines that fit (B3.7). [`syslog_len`] is the kernel's estimate, which ignores the
//! cut (B5.3, B6.1). With a caller, the syslog prefix is `[time][  T123] ` with no space between
//! the two fields, as B3.1's formula and `info_print_prefix` have it (B3.5's unobserved example
//! shows a space).

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

impl<'a> RecordRef<'a> {
    /// A record of only a time, a priority and text, the rest empty: what a write to a kmsg
    /// file appends (the ring assigns `seq`).
    pub fn plain(ts_usec: u64, prio: u16, text: &'a [u8]) -> Self {
        RecordRef {
            seq: 0,
            ts_usec,
            prio,
            cont: false,
            caller: None,
            text,
            subsystem: b"",
            device: b"",
        }
    }

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

impl std::fmt::Display for Caller {
    /// `T<tid>` or `C<cpu>`, the id part of `caller=` (A2.5) and of the `[%6s]` syslog field
    /// (B3.5).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Thread(tid) => write!(f, "T{tid}"),
            Caller::Cpu(cpu) => write!(f, "C{cpu}"),
        }
    }
}

impl Caller {
    /// The tag letter and the number.
    fn parts(self) -> (u8, u32) {
        match self {
            Caller::Thread(tid) => (b'T', tid),
            Caller::Cpu(cpu) => (b'C', cpu),
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `/dev/kmsg` prints `c` as `\xNN` (A2.6).
#[inline]
fn needs_escape(c: u8) -> bool {
    !(0x20..0x7f).contains(&c) || c == b'\\'
}

/// The decimal digits of `v`, written at the end of `scratch`.
fn dec(v: u64, scratch: &mut [u8; 20]) -> &[u8] {
    let mut i = scratch.len();
    let mut v = v;
    loop {
        i -= 1;
        // v % 10 < 10, so the cast is lossless.
        scratch[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &scratch[i..]
}

/// Append `v` in decimal, right-aligned in `width` columns filled with `pad` (`%*lu`).
fn push_dec(out: &mut impl Extend<u8>, v: u64, width: usize, pad: u8) {
    let mut scratch = [0u8; 20];
    let digits = dec(v, &mut scratch);
    out.extend(std::iter::repeat_n(pad, width.saturating_sub(digits.len())));
    out.extend(digits.iter().copied());
}

/// The kernel's bounded writers into a `PRINTK_MESSAGE_MAX` buffer, over the tail of a `Vec`.
///
/// Linux 6.18 formats a `/dev/kmsg` record into `outbuf[2048]` with two primitives
/// (`msg_add_ext_text` in `printk.c`):
///
/// * `append_char(&p, e, c)` stores `c` if **any** room is left, so it may fill the very last
///   byte;
/// * `scnprintf(p, e - p, "\\x%02x", c)` stores at most `e - p - 1` bytes, because it keeps one
///   byte for its NUL, and returns the number stored.
///
/// So plain bytes fill the buffer to exactly 2048 bytes, after which nothing (not even the
/// final `\n`) is added — A2.9's first example. An escape that meets the end stores only the part
/// that fits before the last byte (`\x`, say) and leaves exactly one byte. The next `append_char`
/// fills it: the closing `\n` when the escape was the last text byte (A2.9's second example,
/// `…\x01\x\n`), otherwise the next plain text byte (`…\x09\B`, no `\n`). Later escapes store
/// nothing (room 1 leaves 0 for text), later `append_char`s find no room.
struct Capped<'a> {
    out: &'a mut Vec<u8>,
    room: usize,
}

impl Capped<'_> {
    /// `append_char`.
    fn char(&mut self, c: u8) {
        if self.room > 0 {
            self.out.push(c);
            self.room -= 1;
        }
    }

    /// `append_char` for each byte of `s`.
    fn chars(&mut self, s: &[u8]) {
        let n = s.len().min(self.room);
        self.out.extend_from_slice(&s[..n]);
        self.room -= n;
    }

    /// `scnprintf` of an already formatted `s`.
    fn scn(&mut self, s: &[u8]) {
        let n = s.len().min(self.room.saturating_sub(1));
        self.out.extend_from_slice(&s[..n]);
        self.room -= n;
    }

    /// The escaping loop of `msg_add_ext_text`, without its end character.
    fn escaped(&mut self, text: &[u8]) {
        let mut rest = text;
        while !rest.is_empty() && self.room > 0 {
            let run = rest
                .iter()
                .position(|&c| needs_escape(c))
                .unwrap_or(rest.len());
            self.chars(&rest[..run]);
            let Some(&c) = rest.get(run) else { break };
            self.scn(&[
                b'\\',
                b'x',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 0xf)],
            ]);
            rest = &rest[run + 1..];
        }
    }

    /// `msg_add_ext_text(text, endc)`.
    fn ext_text(&mut self, text: &[u8], endc: u8) {
        self.escaped(text);
        self.char(endc);
    }
}

/// Append `bytes` to `out` with the `/dev/kmsg` escaping of A2.6: every byte below 0x20, from
/// 0x7f up, and `\` becomes `\xNN` with lowercase hex digits. No length limit.
pub fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    Capped {
        out,
        room: usize::MAX,
    }
    .escaped(bytes);
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Undo [`escape_into`] for one text or dictionary segment that starts at `base` in the input.
///
/// Both hex cases are accepted; a `\` not followed by `x` and two hex digits is an error, except
/// at the cut of a record that Linux 6.18 truncated at [`MESSAGE_MAX`] (A2.9, `cut` set): there an
/// escape may have been stored only in part and followed by at most one more byte (see
/// [`Capped`]), so a `\` within the last four bytes of the segment ends it and is dropped with
/// what follows. The byte it stood for is lost either way. (A 3-byte partial escape followed by a
/// plain hex digit, `\x0B`, is indistinguishable from a whole escape and is read as one.)
fn unescape(seg: &[u8], base: usize, cut: bool) -> Result<Vec<u8>, ParseError> {
    let mut out = Vec::with_capacity(seg.len());
    let mut i = 0;
    while i < seg.len() {
        let Some(off) = seg[i..].iter().position(|&c| c == b'\\') else {
            out.extend_from_slice(&seg[i..]);
            break;
        };
        out.extend_from_slice(&seg[i..i + off]);
        i += off;
        let tail = &seg[i..];
        if let [_, b'x', hi, lo, ..] = tail {
            if let (Some(hi), Some(lo)) = (hex_val(*hi), hex_val(*lo)) {
                out.push((hi << 4) | lo);
                i += 4;
                continue;
            }
        }
        if cut && tail.len() <= 4 {
            break;
        }
        return Err(ParseError::BadEscape { at: base + i });
    }
    Ok(out)
}

/// A strict unsigned decimal header field: digits only, no sign, no overflow.
fn parse_field<T: std::str::FromStr>(
    field: Option<&[u8]>,
    name: &'static str,
) -> Result<T, ParseError> {
    field
        .filter(|b| !b.is_empty() && b.iter().all(u8::is_ascii_digit))
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .ok_or(ParseError::BadField { field: name })
}

/// `T<n>` or `C<n>`; anything else is an unknown field and ignored.
fn parse_caller(v: &[u8]) -> Option<Caller> {
    let (&tag, num) = v.split_first()?;
    let id = parse_field::<u32>(Some(num), "caller").ok()?;
    match tag {
        b'T' => Some(Caller::Thread(id)),
        b'C' => Some(Caller::Cpu(id)),
        _ => None,
    }
}

/// Parse one record read from the host `/dev/kmsg` (A2), including dictionary lines.
///
/// Unknown comma-separated header fields are skipped (A2.5); `caller=T…`/`caller=C…` is
/// decoded. Text and dictionary values are unescaped. The closing `\n` of the text and of each
/// dictionary line may be missing, as in a record Linux 6.18 cut at [`MESSAGE_MAX`] (A2.9); what
/// is there is kept. Dictionary lines with keys other than `SUBSYSTEM` and `DEVICE`, or without a
/// leading space or `=`, are ignored.
pub fn parse_kmsg(input: &[u8]) -> Result<Record, ParseError> {
    let semi = input
        .iter()
        .position(|&c| c == b';')
        .ok_or(ParseError::NoSemicolon)?;
    let mut fields = input[..semi].split(|&c| c == b',');
    let prio: u16 = parse_field(fields.next(), "prio")?;
    if prio > 2047 {
        return Err(ParseError::BadField { field: "prio" });
    }
    let seq = parse_field(fields.next(), "seq")?;
    let ts_usec = parse_field(fields.next(), "ts_usec")?;
    let cont = match fields.next() {
        Some(b"-") => false,
        Some(b"c") => true,
        _ => return Err(ParseError::BadField { field: "flag" }),
    };
    let mut caller = None;
    for field in fields {
        if let Some(c) = field.strip_prefix(b"caller=").and_then(parse_caller) {
            caller = Some(c);
        }
    }

    // A record cut at MESSAGE_MAX (A2.9) may end in a partial escape; only its last segment can.
    let truncated = input.len() >= MESSAGE_MAX;
    let body_end = input.len() - usize::from(input.ends_with(b"\n"));
    let is_cut = |seg_at: usize, seg: &[u8]| truncated && seg_at + seg.len() == body_end;

    let mut at = semi + 1;
    let mut lines = input[at..].split(|&c| c == b'\n');
    // split() always yields at least one (possibly empty) item.
    let text_seg = lines.next().unwrap_or_default();
    let text = unescape(text_seg, at, is_cut(at, text_seg))?;
    at += text_seg.len() + 1;

    let mut rec = Record {
        seq,
        ts_usec,
        prio,
        cont,
        caller,
        text,
        subsystem: Vec::new(),
        device: Vec::new(),
    };
    for line in lines {
        let line_at = at;
        at += line.len() + 1;
        let Some(kv) = line.strip_prefix(b" ") else {
            continue;
        };
        let Some(eq) = kv.iter().position(|&c| c == b'=') else {
            continue;
        };
        let value_at = line_at + 1 + eq + 1;
        let (key, value) = (&kv[..eq], &kv[eq + 1..]);
        let cut = is_cut(value_at, value);
        match key {
            b"SUBSYSTEM" => rec.subsystem = unescape(value, value_at, cut)?,
            b"DEVICE" => rec.device = unescape(value, value_at, cut)?,
            _ => log::trace!(
                "kmsg record {seq}: ignoring dictionary key {:?}",
                String::from_utf8_lossy(key)
            ),
        }
    }
    Ok(rec)
}

/// Append `rec` formatted as one `/dev/kmsg` read result (A2) to `out`, cut at
/// [`MESSAGE_MAX`] bytes like Linux 6.18 (A2.9).
///
/// The cut follows `info_print_ext_header` + `msg_print_ext_body` writing into a 2048-byte
/// buffer: plain bytes may fill it completely (then the final `\n` is lost), while an escape
/// that reaches the end is stored only up to the second-to-last byte, leaving room for exactly
/// one more plain byte: the closing `\n` or the next plain text byte.
pub fn format_kmsg(rec: &RecordRef<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    // The header is at most 68 bytes, so `scnprintf` never cuts it.
    push_dec(out, u64::from(rec.prio), 0, b' ');
    out.push(b',');
    push_dec(out, rec.seq, 0, b' ');
    out.push(b',');
    push_dec(out, rec.ts_usec, 0, b' ');
    out.push(b',');
    out.push(if rec.cont { b'c' } else { b'-' });
    if let Some(caller) = rec.caller {
        let (tag, id) = caller.parts();
        out.extend_from_slice(b",caller=");
        out.push(tag);
        push_dec(out, u64::from(id), 0, b' ');
    }
    out.push(b';');
    let room = MESSAGE_MAX.saturating_sub(out.len() - start);
    let mut w = Capped { out, room };
    w.ext_text(rec.text, b'\n');
    for (key, value) in [
        (&b"SUBSYSTEM"[..], rec.subsystem),
        (&b"DEVICE"[..], rec.device),
    ] {
        // msg_add_dict_text: " " + key + "=" + value + "\n", each piece bounded on its own.
        if !value.is_empty() {
            w.char(b' ');
            w.ext_text(key, b'=');
            w.ext_text(value, b'\n');
        }
    }
}

/// Longest syslog prefix: `<2047>` + `[` u64 seconds `.uuuuuu]` + `[C2147483647]` + space.
const PREFIX_CAP: usize = 64;

/// The per-line prefix of the syslog format (`info_print_prefix`, B3.1).
struct Prefix {
    buf: [u8; PREFIX_CAP],
    len: usize,
}

impl Extend<u8> for Prefix {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        for c in iter {
            self.buf[self.len] = c;
            self.len += 1;
        }
    }
}

impl Prefix {
    fn new(rec: &RecordRef<'_>, time: bool) -> Prefix {
        let mut p = Prefix {
            buf: [0; PREFIX_CAP],
            len: 0,
        };
        // "<%u>"
        p.extend([b'<']);
        push_dec(&mut p, u64::from(rec.prio), 0, b' ');
        p.extend([b'>']);
        if time {
            // "[%5lu.%06lu]"
            p.extend([b'[']);
            push_dec(&mut p, rec.ts_usec / 1_000_000, 5, b' ');
            p.extend([b'.']);
            push_dec(&mut p, rec.ts_usec % 1_000_000, 6, b'0');
            p.extend([b']']);
        }
        if let Some(caller) = rec.caller {
            // "[%6s]" of "T%u" / "C%u"
            let (tag, id) = caller.parts();
            let mut scratch = [0u8; 20];
            let digits = dec(u64::from(id), &mut scratch);
            p.extend([b'[']);
            p.extend(std::iter::repeat_n(
                b' ',
                5usize.saturating_sub(digits.len()),
            ));
            p.extend([tag]);
            p.extend(digits.iter().copied());
            p.extend([b']']);
        }
        if time || rec.caller.is_some() {
            p.extend([b' ']);
        }
        p
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Append `rec` in the `syslog(2)` text format (B3) to `out`: a `<prio>[sssss.uuuuuu] ` prefix
/// on every line when `time` is set, `<prio>` alone otherwise; raw bytes; no dictionary; lines
/// that do not fit in [`MESSAGE_MAX`] dropped whole (B3.7). Returns the bytes appended.
///
/// The fit rule is `record_print_text`'s: a line is kept while the output so far, plus its
/// prefix, the line, its `\n` and a NUL terminator, fits in 2048 bytes. Output is therefore at
/// most 2047 bytes and always ends at a line boundary.
pub fn format_syslog(rec: &RecordRef<'_>, time: bool, out: &mut Vec<u8>) -> usize {
    let prefix = Prefix::new(rec, time);
    let prefix = prefix.as_bytes();
    let mut len = 0;
    for line in rec.text.split(|&c| c == b'\n') {
        let line_len = prefix.len() + line.len() + 1;
        if len + line_len + 1 > MESSAGE_MAX {
            break;
        }
        out.extend_from_slice(prefix);
        out.extend_from_slice(line);
        out.push(b'\n');
        len += line_len;
    }
    len
}

/// The size the kernel *estimates* for `rec` in the syslog format, ignoring the B3.7
/// truncation: `prefix_len * lines + text_len + 1` (B5.3, B6.1).
///
/// `lines` is one more than the number of `\n` in the text (`count_lines`), so for a record that
/// is not cut this equals what [`format_syslog`] appends.
pub fn syslog_len(rec: &RecordRef<'_>, time: bool) -> usize {
    let lines = rec.text.iter().filter(|&&c| c == b'\n').count() + 1;
    Prefix::new(rec, time).len * lines + rec.text.len() + 1
}

/// Parse one `write()` to `/dev/kmsg` as the kernel does (A6.5, A6.6). `default_level` is
/// `default_message_loglevel` (4 by default).
///
/// * `<N>` with `N` parsed by `simple_strtoul(…, 10)` (digits only; overflow wraps) and stored
///   in a 32-bit `unsigned int`: level `N & 7`, facility `(N >> 3) & 0xff`, facility 0 becomes
///   [`LOG_USER`]. Without a `>` right after the digits the whole write is text.
/// * The text is printed with `"%s"`, so it stops at the first NUL; it is cut to
///   [`TEXT_MAX`] bytes (`reserve_size` clamp); then one trailing `\n` is removed
///   (`printk_sprint`). Cutting happens first, so `A…A\n` of 1024 bytes keeps 1023 `A`s.
pub fn parse_user_write(buf: &[u8], default_level: u8) -> Result<UserWrite<'_>, WriteError> {
    if buf.len() > WRITE_MAX {
        return Err(WriteError::TooLong { len: buf.len() });
    }
    let mut facility = u32::from(LOG_USER);
    let mut level = u32::from(default_level & 7);
    let mut text = buf;
    if let Some(rest) = buf.strip_prefix(b"<") {
        let ndigits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        if rest.get(ndigits) == Some(&b'>') {
            let n = rest[..ndigits].iter().fold(0u64, |acc, &d| {
                acc.wrapping_mul(10).wrapping_add(u64::from(d - b'0'))
            });
            // `unsigned int u = simple_strtoul(...)`: keep the low 32 bits.
            let u = n as u32;
            level = u & 7;
            let f = (u >> 3) & 0xff;
            if f != 0 {
                facility = f;
            }
            text = &rest[ndigits + 1..];
        }
    }
    if let Some(nul) = text.iter().position(|&c| c == 0) {
        text = &text[..nul];
    }
    text = &text[..text.len().min(TEXT_MAX)];
    if let Some(t) = text.strip_suffix(b"\n") {
        text = t;
    }
    // facility <= 0xff and level <= 7, so prio <= 2047.
    let prio = ((facility << 3) | level) as u16;
    Ok(UserWrite { prio, text })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(prio: u16, seq: u64, ts_usec: u64, text: &[u8]) -> Record {
        Record {
            seq,
            ts_usec,
            prio,
            text: text.to_vec(),
            ..Record::default()
        }
    }

    fn kmsg(r: &Record) -> Vec<u8> {
        let mut out = Vec::new();
        format_kmsg(&r.as_ref(), &mut out);
        out
    }

    fn syslog(r: &Record, time: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let n = format_syslog(&r.as_ref(), time, &mut out);
        assert_eq!(n, out.len(), "format_syslog return value");
        out
    }

    fn show(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    // ---- A2: /dev/kmsg format ----

    #[test]
    fn a2_1_to_4_header_fields() {
        let r = rec(2047, 18_446_744_073_709_551_615, 383_473_166, b"x");
        assert_eq!(kmsg(&r), b"2047,18446744073709551615,383473166,-;x\n");
        let r = Record {
            cont: true,
            ..rec(6, 0, 0, b"frag")
        };
        assert_eq!(kmsg(&r), b"6,0,0,c;frag\n");
    }

    #[test]
    fn a2_5_caller_field() {
        let r = Record {
            caller: Some(Caller::Thread(123)),
            ..rec(14, 5, 7, b"t")
        };
        assert_eq!(kmsg(&r), b"14,5,7,-,caller=T123;t\n");
        let r = Record {
            caller: Some(Caller::Cpu(1)),
            ..rec(4, 5, 7, b"c")
        };
        assert_eq!(kmsg(&r), b"4,5,7,-,caller=C1;c\n");
        assert_eq!(Caller::Thread(9).to_string(), "T9");
        assert_eq!(Caller::Cpu(0).to_string(), "C0");
    }

    #[test]
    fn a2_5_parse_caller_and_unknown_fields() {
        let r = parse_kmsg(b"14,5,7,-,caller=T123;t\n").unwrap();
        assert_eq!(r.caller, Some(Caller::Thread(123)));
        let r = parse_kmsg(b"14,5,7,c,caller=C1,future=1;t\n").unwrap();
        assert_eq!(r.caller, Some(Caller::Cpu(1)));
        assert!(r.cont);
        let r = parse_kmsg(b"14,5,7,-,whatever,x=y,caller=Q9;t\n").unwrap();
        assert_eq!(r.caller, None);
        assert_eq!(r.text, b"t");
    }

    #[test]
    fn a2_6_escape_tab_backslash_utf8_del() {
        let r = rec(12, 1, 2, b"tab\there \\ back \xc3\xa9 \x7f del");
        assert_eq!(
            show(&kmsg(&r)),
            "12,1,2,-;tab\\x09here \\x5c back \\xc3\\xa9 \\x7f del\n"
        );
    }

    #[test]
    fn a2_6_escape_embedded_newline() {
        let r = rec(12, 1, 2, b"line1\nline2");
        assert_eq!(show(&kmsg(&r)), "12,1,2,-;line1\\x0aline2\n");
    }

    #[test]
    fn a2_6_escape_cr() {
        let r = rec(12, 1, 2, b"a\rb");
        assert_eq!(show(&kmsg(&r)), "12,1,2,-;a\\x0db\n");
    }

    #[test]
    fn a2_6_escape_soh_digit() {
        let r = rec(12, 1, 2, b"\x013");
        assert_eq!(show(&kmsg(&r)), "12,1,2,-;\\x013\n");
    }

    #[test]
    fn a2_6_escape_into_every_byte() {
        for c in 0..=255u8 {
            let mut out = Vec::new();
            escape_into(&[c], &mut out);
            if matches!(c, 0..=0x1f | 0x7f..=0xff | b'\\') {
                assert_eq!(out, format!("\\x{c:02x}").into_bytes(), "byte {c:#04x}");
            } else {
                assert_eq!(out, [c], "byte {c:#04x}");
            }
        }
    }

    #[test]
    fn a2_6_unescape_accepts_both_cases() {
        let r = parse_kmsg(b"12,1,2,-;\\xC3\\xa9\\x5C\\x5c\n").unwrap();
        assert_eq!(r.text, b"\xc3\xa9\\\\");
    }

    #[test]
    fn a2_7_empty_text() {
        assert_eq!(kmsg(&rec(12, 359, 10, b"")), b"12,359,10,-;\n");
        let r = parse_kmsg(b"12,359,10,-;\n").unwrap();
        assert_eq!(r, rec(12, 359, 10, b""));
    }

    #[test]
    fn a2_8_dictionary_example() {
        let wire: &[u8] = b"6,187,372412,-;acpi PNP0A08:00: _OSC: OS supports [ExtendedConfig ASPM ClockPM Segments MSI HPX-Type3]\n SUBSYSTEM=acpi\n DEVICE=+acpi:PNP0A08:00\n";
        let r = parse_kmsg(wire).unwrap();
        assert_eq!(r.prio, 6);
        assert_eq!(r.seq, 187);
        assert_eq!(r.ts_usec, 372_412);
        assert_eq!(r.subsystem, b"acpi");
        assert_eq!(r.device, b"+acpi:PNP0A08:00");
        assert_eq!(kmsg(&r), wire);
    }

    #[test]
    fn a2_8_dictionary_only_non_empty_in_order() {
        let mut r = rec(6, 1, 1, b"t");
        r.device = b"n2".to_vec();
        assert_eq!(kmsg(&r), b"6,1,1,-;t\n DEVICE=n2\n");
        r.device.clear();
        r.subsystem = b"net".to_vec();
        assert_eq!(kmsg(&r), b"6,1,1,-;t\n SUBSYSTEM=net\n");
        r.device = b"c1:3".to_vec();
        assert_eq!(kmsg(&r), b"6,1,1,-;t\n SUBSYSTEM=net\n DEVICE=c1:3\n");
    }

    #[test]
    fn a2_8_dictionary_values_escaped() {
        let mut r = rec(6, 1, 1, b"t");
        r.subsystem = b"a\\b".to_vec();
        r.device = b"x\ny".to_vec();
        let wire = kmsg(&r);
        assert_eq!(
            show(&wire),
            "6,1,1,-;t\n SUBSYSTEM=a\\x5cb\n DEVICE=x\\x0ay\n"
        );
        assert_eq!(parse_kmsg(&wire).unwrap(), r);
    }

    #[test]
    fn a2_8_parse_ignores_other_keys_and_malformed_lines() {
        let r = parse_kmsg(b"6,1,1,-;t\n FOO=bar\nnospace=1\n noequals\n DEVICE=b8:0\n").unwrap();
        assert_eq!(r.subsystem, b"");
        assert_eq!(r.device, b"b8:0");
    }

    #[test]
    fn a2_9_plain_bytes_fill_2048_without_newline() {
        let mut text = vec![1u8; 400];
        text.extend(std::iter::repeat_n(b'a', 600));
        let out = kmsg(&rec(12, 359, 383_473_166, &text));
        assert_eq!(out.len(), MESSAGE_MAX);
        assert_eq!(out.last(), Some(&b'a'), "must not end in \\n");
        // Whatever fits is there, byte for byte.
        let mut full = b"12,359,383473166,-;".to_vec();
        escape_into(&text, &mut full);
        assert_eq!(out[..], full[..MESSAGE_MAX]);
        // And the cut record still parses, keeping what is there.
        let back = parse_kmsg(&out).unwrap();
        assert_eq!(back.text, text[..back.text.len()]);
    }

    #[test]
    fn a2_9_escape_cut_leaves_partial_escape_and_newline() {
        // Header "12,10,1000,-;" is 13 bytes, so 2035 bytes remain: 508 whole escapes
        // (2032 bytes), then 3 bytes of room, of which scnprintf stores "\x" and the final
        // append_char the "\n".
        let out = kmsg(&rec(12, 10, 1000, &[1u8; 1000]));
        assert_eq!(out.len(), MESSAGE_MAX);
        assert!(
            out.ends_with(b"\\x01\\x\n"),
            "tail {:?}",
            show(&out[2030..])
        );
        let back = parse_kmsg(&out).unwrap();
        assert_eq!(back.text, vec![1u8; 508], "partial escape dropped");
    }

    #[test]
    fn a2_9_partial_escape_then_plain_byte() {
        // 508 whole escapes leave 3 bytes: the 509th stores "\x", then 'B' fills the last byte.
        let mut text = vec![1u8; 509];
        text.push(b'B');
        let out = kmsg(&rec(12, 10, 1000, &text));
        assert_eq!(out.len(), MESSAGE_MAX);
        assert!(out.ends_with(b"\\x01\\xB"), "tail {:?}", show(&out[2030..]));
        let back = parse_kmsg(&out).unwrap();
        assert_eq!(back.text, vec![1u8; 508]);
        // Two bytes of room: "\" then the plain byte; four: "\x0" then the plain byte.
        // (A plain hex digit there would read back as a whole escape: "\x0B" is ambiguous.)
        for (lead, tail, kept) in [(1, &b"\\x01\\Z"[..], 508), (3, b"\\x01\\x0Z", 507)] {
            let mut text = vec![b'a'; lead];
            text.extend([1u8; 509]);
            text.push(b'Z');
            let out = kmsg(&rec(12, 10, 1000, &text));
            assert_eq!(out.len(), MESSAGE_MAX);
            assert!(out.ends_with(tail), "tail {:?}", show(&out[2030..]));
            assert_eq!(parse_kmsg(&out).unwrap().text.len(), lead + kept);
        }
    }

    #[test]
    fn a2_9_every_header_alignment() {
        // Whatever the header length, 1000 escapes give 2048 bytes ending in a partial
        // escape (or, for one alignment, a whole one) and "\n".
        for seq in [1u64, 10, 100, 1000, 10_000] {
            let out = kmsg(&rec(12, seq, 1000, &[1u8; 1000]));
            assert_eq!(out.len(), MESSAGE_MAX, "seq {seq}");
            assert_eq!(out.last(), Some(&b'\n'), "seq {seq}");
            assert!(parse_kmsg(&out).is_ok(), "seq {seq}");
        }
    }

    #[test]
    fn a2_9_dictionary_after_full_text_is_dropped() {
        let mut r = rec(12, 1, 1, &[b'a'; 1023]);
        r.text.extend([1u8; 300].iter());
        r.subsystem = b"acpi".to_vec();
        let out = kmsg(&r);
        assert_eq!(out.len(), MESSAGE_MAX);
        assert!(!out.windows(10).any(|w| w == b"SUBSYSTEM="));
    }

    #[test]
    fn a2_parse_missing_trailing_newline_is_accepted() {
        let r = parse_kmsg(b"12,1,2,-;abc").unwrap();
        assert_eq!(r.text, b"abc");
        let r = parse_kmsg(b"12,1,2,-;abc\n SUBSYSTEM=pc").unwrap();
        assert_eq!(r.subsystem, b"pc");
    }

    #[test]
    fn a2_parse_errors() {
        assert_eq!(parse_kmsg(b"12,1,2,-"), Err(ParseError::NoSemicolon));
        assert_eq!(parse_kmsg(b""), Err(ParseError::NoSemicolon));
        let bad = |field| Err(ParseError::BadField { field });
        assert_eq!(parse_kmsg(b";x"), bad("prio"));
        assert_eq!(parse_kmsg(b"2048,1,2,-;x"), bad("prio"));
        assert_eq!(parse_kmsg(b"-1,1,2,-;x"), bad("prio"));
        assert_eq!(parse_kmsg(b"12,,2,-;x"), bad("seq"));
        assert_eq!(parse_kmsg(b"12,18446744073709551616,2,-;x"), bad("seq"));
        assert_eq!(parse_kmsg(b"12,1,+2,-;x"), bad("ts_usec"));
        assert_eq!(parse_kmsg(b"12,1,2;x"), bad("flag"));
        assert_eq!(parse_kmsg(b"12,1,2,x;x"), bad("flag"));
        assert_eq!(
            parse_kmsg(b"12,1,2,-;ab\\q"),
            Err(ParseError::BadEscape { at: 11 })
        );
        assert_eq!(
            parse_kmsg(b"12,1,2,-;\\xg0z"),
            Err(ParseError::BadEscape { at: 9 })
        );
        assert_eq!(
            parse_kmsg(b"12,1,2,-;t\n DEVICE=\\x1"),
            Err(ParseError::BadEscape { at: 19 }),
            "partial escapes are accepted only in a record cut at 2048 bytes"
        );
        assert_eq!(
            parse_kmsg(b"12,1,2,-;t\n DEVICE=a\\zz\n"),
            Err(ParseError::BadEscape { at: 20 })
        );
    }

    // ---- A6: writes ----

    #[test]
    fn a6_1_write_limit() {
        let ok = vec![b'A'; WRITE_MAX];
        assert!(parse_user_write(&ok, 4).is_ok());
        let long = vec![b'A'; WRITE_MAX + 1];
        assert_eq!(
            parse_user_write(&long, 4),
            Err(WriteError::TooLong { len: 1025 })
        );
    }

    #[test]
    fn a6_5_prefix_table() {
        let rows: &[(&[u8], u16, &[u8])] = &[
            (b"plain message", 12, b"plain message"),
            (b"<3>x", 11, b"x"),
            (b"<14>x", 14, b"x"),
            (b"<165>x", 165, b"x"),
            (b"<0>x", 8, b"x"),
            (b"<8>x", 8, b"x"),
            (b"<>x", 8, b"x"),
            (b"<03>x", 11, b"x"),
            (b"<abc>x", 12, b"<abc>x"),
            (b"< 3>x", 12, b"< 3>x"),
            (b"<+3>x", 12, b"<+3>x"),
            (b"<-1>x", 12, b"<-1>x"),
            (b"<0x1f>x", 12, b"<0x1f>x"),
            (b"<3 x", 12, b"<3 x"),
            (b"<4294967295>x", 2047, b"x"),
            (b"<2047>x", 2047, b"x"),
            (b"<2048>x", 8, b"x"),
            (b"<4294967296>x", 8, b"x"),
            (b"<3><4>x", 11, b"<4>x"),
            (b"\x013x", 12, b"\x013x"),
        ];
        for &(written, prio, text) in rows {
            let w = parse_user_write(written, 4).unwrap();
            assert_eq!(
                (w.prio, w.text),
                (prio, text),
                "A6.5 row {:?}",
                show(written)
            );
        }
    }

    #[test]
    fn a6_5_edge_prefixes() {
        // Unterminated prefix at the end of the write (the kernel sees its own NUL there).
        assert_eq!(parse_user_write(b"<3", 4).unwrap().text, b"<3");
        assert_eq!(parse_user_write(b"<", 4).unwrap().text, b"<");
        // A valid prefix and nothing else.
        let w = parse_user_write(b"<3>", 4).unwrap();
        assert_eq!((w.prio, w.text), (11, &b""[..]));
        // Very long numbers wrap like the kernel's unsigned arithmetic.
        let w = parse_user_write(b"<18446744073709551617>x", 4).unwrap();
        assert_eq!(w.prio, 9, "2^64 + 1 wraps to 1");
        // default_message_loglevel is used without a prefix.
        assert_eq!(parse_user_write(b"x", 6).unwrap().prio, 14);
        assert_eq!(parse_user_write(b"x", 7).unwrap().prio, 15);
    }

    #[test]
    fn a6_6_stops_at_nul() {
        let w = parse_user_write(b"abc\0def\n", 4).unwrap();
        assert_eq!(w.text, b"abc");
        let w = parse_user_write(b"<3>\0abc", 4).unwrap();
        assert_eq!((w.prio, w.text), (11, &b""[..]));
    }

    #[test]
    fn a6_6_one_trailing_newline_removed() {
        assert_eq!(parse_user_write(b"trail\n\n", 4).unwrap().text, b"trail\n");
        assert_eq!(parse_user_write(b"trail\n", 4).unwrap().text, b"trail");
        assert_eq!(parse_user_write(b"\n", 4).unwrap().text, b"");
    }

    #[test]
    fn a6_6_embedded_newline_kept() {
        let w = parse_user_write(b"<6>mlA\nmlB\n", 4).unwrap();
        assert_eq!((w.prio, w.text), (14, &b"mlA\nmlB"[..]));
    }

    #[test]
    fn a6_6_text_cut_to_1023_before_newline_strip() {
        let mut buf = vec![b'A'; 1023];
        buf.push(b'\n');
        let w = parse_user_write(&buf, 4).unwrap();
        assert_eq!(w.text, &buf[..1023], "1023 A's, newline cut away");
        let w = parse_user_write(&buf[1..], 4).unwrap();
        assert_eq!(
            w.text,
            &buf[1..1023],
            "1022 A's + \\n fits: newline stripped"
        );
        // A prefix does not count against the text limit.
        let mut buf = b"<6>".to_vec();
        buf.extend([b'B'; 1021]);
        let w = parse_user_write(&buf, 4).unwrap();
        assert_eq!(w.text.len(), 1021);
    }

    #[test]
    fn a6_7_empty_write_is_an_empty_record() {
        let w = parse_user_write(b"", 4).unwrap();
        assert_eq!((w.prio, w.text), (12, &b""[..]));
    }

    // ---- B3: syslog format ----

    #[test]
    fn b3_1_b3_2_prefix_per_line() {
        let r = rec(5, 0, 0, b"Linux version 6.18.44");
        assert_eq!(
            show(&syslog(&r, true)),
            "<5>[    0.000000] Linux version 6.18.44\n"
        );
        let r = rec(14, 0, 417_977_797, b"mlA\nmlB");
        assert_eq!(
            show(&syslog(&r, true)),
            "<14>[  417.977797] mlA\n<14>[  417.977797] mlB\n"
        );
    }

    #[test]
    fn b3_1_empty_and_trailing_empty_lines_get_prefixes() {
        assert_eq!(syslog(&rec(12, 0, 1, b""), false), b"<12>\n");
        assert_eq!(
            syslog(&rec(12, 0, 1, b"trail\n"), false),
            b"<12>trail\n<12>\n"
        );
    }

    #[test]
    fn b3_3_seconds_width_and_microseconds() {
        let r = rec(6, 0, 100_000_000_001, b"x");
        assert_eq!(show(&syslog(&r, true)), "<6>[100000.000001] x\n");
        let r = rec(6, 0, 99_999_999_999, b"x");
        assert_eq!(show(&syslog(&r, true)), "<6>[99999.999999] x\n");
        let r = rec(6, 0, 1_000_050, b"x");
        assert_eq!(show(&syslog(&r, true)), "<6>[    1.000050] x\n");
    }

    #[test]
    fn b3_4_time_off() {
        let r = rec(13, 0, 417_977_797, b"time-off-test");
        assert_eq!(syslog(&r, false), b"<13>time-off-test\n");
    }

    #[test]
    fn b3_5_caller() {
        let r = Record {
            caller: Some(Caller::Thread(123)),
            ..rec(6, 0, 1_234_567, b"text")
        };
        // B3.1 / info_print_prefix: no space between the time and caller fields (B3.5's
        // unobserved example shows one; the formula and the source do not).
        assert_eq!(show(&syslog(&r, true)), "<6>[    1.234567][  T123] text\n");
        assert_eq!(show(&syslog(&r, false)), "<6>[  T123] text\n");
        let r = Record {
            caller: Some(Caller::Cpu(1_234_567)),
            ..rec(6, 0, 0, b"t")
        };
        assert_eq!(show(&syslog(&r, false)), "<6>[C1234567] t\n");
    }

    #[test]
    fn b3_6_raw_bytes_no_dictionary() {
        let mut r = rec(12, 0, 0, b"tab\t\x01 \\ \xc3\xa9");
        r.subsystem = b"acpi".to_vec();
        r.device = b"+acpi:X".to_vec();
        assert_eq!(syslog(&r, false), b"<12>tab\t\x01 \\ \xc3\xa9\n");
    }

    /// 101 lines: "head" then "01".."99", "100". With the 19-byte prefix of prio 14 and
    /// `[  417.977797] `, 92 lines take 92 * 20 + 4 + 91 * 2 = 2026 bytes; line 93 ("92",
    /// 22 bytes) would make 2048, which leaves no room for the terminator: dropped.
    #[test]
    fn b3_7_drops_trailing_lines_whole() {
        let mut text = b"head".to_vec();
        for i in 1..=100 {
            text.extend(format!("\n{i:02}").bytes());
        }
        let r = rec(14, 0, 417_977_797, &text);
        let out = syslog(&r, true);
        assert_eq!(out.len(), 2026);
        let lines: Vec<&[u8]> = out.split_inclusive(|&c| c == b'\n').collect();
        assert_eq!(lines.len(), 92);
        assert!(lines.iter().all(|l| l.starts_with(b"<14>[  417.977797] ")));
        assert_eq!(lines[91], b"<14>[  417.977797] 91\n");
        assert!(syslog_len(&r.as_ref(), true) > out.len());
    }

    #[test]
    fn b3_7_limit_is_2047_bytes() {
        // One line that makes exactly 2047 bytes fits, one byte more does not.
        let prefix = 4; // "<12>"
        let mut text = vec![b'a'; 100];
        text.push(b'\n');
        text.extend(vec![b'b'; MESSAGE_MAX - 1 - (prefix + 101) - prefix - 1]);
        let out = syslog(&rec(12, 0, 0, &text), false);
        assert_eq!(out.len(), 2047);
        text.push(b'c');
        let out = syslog(&rec(12, 0, 0, &text), false);
        assert_eq!(out.len(), prefix + 101, "second line dropped whole");
    }

    #[test]
    fn b3_7_single_line_always_fits() {
        for len in [1020, TEXT_MAX] {
            let r = Record {
                caller: Some(Caller::Cpu(2_147_483_647)),
                ..rec(2047, 0, u64::MAX, &vec![b'z'; len])
            };
            let out = syslog(&r, true);
            assert!(out.ends_with(b"z\n"), "{len}-byte line complete");
            assert_eq!(out.len(), syslog_len(&r.as_ref(), true));
        }
    }

    // ---- B5.3 / B6.1: size estimate ----

    #[test]
    fn b6_1_syslog_len_equals_formatted_length() {
        let cases: &[&[u8]] = &[b"", b"x", b"mlA\nmlB", b"a\n\n\nb\n", b"\n"];
        for &text in cases {
            for time in [false, true] {
                for caller in [None, Some(Caller::Thread(42))] {
                    let r = Record {
                        caller,
                        ..rec(14, 3, 417_977_797, text)
                    };
                    assert_eq!(
                        syslog_len(&r.as_ref(), time),
                        syslog(&r, time).len(),
                        "text {:?} time {time} caller {caller:?}",
                        show(text)
                    );
                }
            }
        }
        // prefix 19 * 2 lines + 7 text bytes + 1
        assert_eq!(
            syslog_len(&rec(14, 0, 417_977_797, b"mlA\nmlB").as_ref(), true),
            46
        );
    }

    #[test]
    fn b5_3_syslog_len_ignores_truncation() {
        let text = vec![b'\n'; 1000];
        let r = rec(12, 0, 1, &text);
        // 1001 lines of "<12>[    0.000001] " (19 bytes) + 1000 newlines + 1.
        assert_eq!(syslog_len(&r.as_ref(), true), 1001 * 19 + 1000 + 1);
        let out = syslog(&r, true);
        assert_eq!(out.len(), 102 * 20);
    }

    // ---- properties ----

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            (0u16..=2047, any::<u64>(), any::<u64>(), any::<bool>()),
            prop::option::of(prop_oneof![
                any::<u32>().prop_map(Caller::Thread),
                any::<u32>().prop_map(Caller::Cpu),
            ]),
            prop::collection::vec(any::<u8>(), 0..400),
            prop::collection::vec(any::<u8>(), 0..=SUBSYSTEM_MAX),
            prop::collection::vec(any::<u8>(), 0..=DEVICE_MAX),
        )
            .prop_map(
                |((prio, seq, ts_usec, cont), caller, text, subsystem, device)| Record {
                    seq,
                    ts_usec,
                    prio,
                    cont,
                    caller,
                    text,
                    subsystem,
                    device,
                },
            )
    }

    proptest! {
        #[test]
        fn prop_kmsg_round_trip(r in arb_record()) {
            let out = kmsg(&r);
            prop_assume!(out.len() < MESSAGE_MAX);
            prop_assert_eq!(parse_kmsg(&out), Ok(r));
        }

        #[test]
        fn prop_format_kmsg_at_most_2048(
            r in arb_record(),
            text in prop::collection::vec(any::<u8>(), 0..=TEXT_MAX),
        ) {
            let r = Record { text, ..r };
            let out = kmsg(&r);
            prop_assert!(out.len() <= MESSAGE_MAX);
            let p = parse_kmsg(&out);
            prop_assert!(p.is_ok(), "{:?} tail {:?}", p, show(&out[out.len().saturating_sub(12)..]));
        }

        #[test]
        fn prop_parse_kmsg_never_panics(input in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_kmsg(&input);
        }

        #[test]
        fn prop_parse_kmsg_header_like_never_panics(
            input in "[0-9]{0,5},[0-9]{0,4},[0-9]{0,4},[-c+]{0,2}(,caller=[TCX][0-9]{0,11})?;[ -~\\\\\n]{0,40}",
        ) {
            let _ = parse_kmsg(input.as_bytes());
        }

        #[test]
        fn prop_parse_user_write(buf in prop::collection::vec(any::<u8>(), 0..1100)) {
            match parse_user_write(&buf, 4) {
                Ok(w) => {
                    prop_assert!(buf.len() <= WRITE_MAX);
                    prop_assert!(w.text.len() <= TEXT_MAX);
                    prop_assert!(w.prio <= 2047);
                    prop_assert!(w.prio >> 3 != 0, "facility 0 is never stored");
                    prop_assert!(!w.text.contains(&0));
                }
                Err(WriteError::TooLong { len }) => prop_assert!(len > WRITE_MAX),
            }
        }

        #[test]
        fn prop_syslog_whole_lines_within_limit(
            r in arb_record(),
            text in prop::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..=TEXT_MAX),
            time in any::<bool>(),
        ) {
            let r = Record { text, ..r };
            let out = syslog(&r, time);
            prop_assert!(out.len() < MESSAGE_MAX);
            prop_assert!(out.ends_with(b"\n"));
            let est = syslog_len(&r.as_ref(), time);
            if est < MESSAGE_MAX {
                prop_assert_eq!(est, out.len());
            } else {
                prop_assert!(est >= out.len());
            }
        }
    }
}
