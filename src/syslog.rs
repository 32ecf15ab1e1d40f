//! `syslog(2)` actions 0–10 as pure logic over one [`Ring`] (kmsg-semantics B1–B6).
//!
//! A call is answered in two steps so that a frontend can deliver the result before anything
//! changes: [`compute`] returns the return value, the bytes for the caller's buffer and an
//! [`Effect`]; the frontend copies the bytes out, replies, and only then calls [`apply`].

use crate::ring::Ring;

/// `SYSLOG_ACTION_*` numbers (`include/linux/syslog.h`).
pub mod action {
    /// Close the log. No-op.
    pub const CLOSE: i32 = 0;
    /// Open the log. No-op.
    pub const OPEN: i32 = 1;
    /// Destructive read from the syslog cursor.
    pub const READ: i32 = 2;
    /// Non-destructive read of the newest records since the clear point.
    pub const READ_ALL: i32 = 3;
    /// READ_ALL, then move the clear point.
    pub const READ_CLEAR: i32 = 4;
    /// Move the clear point to the end.
    pub const CLEAR: i32 = 5;
    /// Console output off.
    pub const CONSOLE_OFF: i32 = 6;
    /// Console output back on.
    pub const CONSOLE_ON: i32 = 7;
    /// Set the console level.
    pub const CONSOLE_LEVEL: i32 = 8;
    /// Bytes a READ would return.
    pub const SIZE_UNREAD: i32 = 9;
    /// Size of the log buffer.
    pub const SIZE_BUFFER: i32 = 10;
}

/// Who is calling, as far as permissions go (B1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The caller counts as holding CAP_SYSLOG for this ring.
    pub privileged: bool,
    /// `dmesg_restrict`: when set every action needs privilege; otherwise READ_ALL and
    /// SIZE_BUFFER are open to everyone.
    pub restrict: bool,
}

/// One `syslog(type, buf, len)` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// `type`.
    pub action: i32,
    /// `buf == NULL`.
    pub buf_is_null: bool,
    /// `len`.
    pub len: i32,
}

/// A state change to make after the result was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing changes.
    None,
    /// Set the clear point to `seq` (CLEAR, READ_CLEAR).
    SetClear {
        /// New `clear_seq`.
        seq: u64,
    },
    /// Advance the syslog cursor (READ) from `from` to `to`, each `(seq, partial, time)`.
    Consume {
        /// Cursor the result was computed from.
        from: (u64, usize, bool),
        /// Cursor after the bytes returned.
        to: (u64, usize, bool),
    },
    /// Set the virtual console level and the saved level (CONSOLE_OFF/ON/LEVEL).
    Console {
        /// New `console_loglevel`.
        level: u8,
        /// New saved level.
        saved: Option<u8>,
    },
}

/// The answer to one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Return `ret` to the caller after copying `data` into its buffer, then [`apply`] `effect`.
    Done {
        /// The syscall's return value.
        ret: i32,
        /// Bytes for the caller's buffer (`ret` of them for the reading actions).
        data: Vec<u8>,
        /// What to change once delivered.
        effect: Effect,
    },
    /// READ with nothing unread: block until a record arrives (or a signal: EINTR).
    WouldBlock,
    /// Fail with this errno.
    Error(i32),
}

/// Compute the result of `call` on `ring`. `time` is the current `printk.time` setting.
pub fn compute(ring: &Ring, policy: Policy, call: Call, time: bool) -> Outcome {
    let _ = (ring, policy, call, time);
    todo!("syslog::compute")
}

/// Apply `effect` to `ring`. Returns false (and changes nothing) for a [`Effect::Consume`]
/// whose `from` cursor is no longer current, because another reader consumed first.
pub fn apply(ring: &Ring, effect: Effect) -> bool {
    let _ = (ring, effect);
    todo!("syslog::apply")
}
