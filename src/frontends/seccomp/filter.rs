//! The seccomp filter that sends `syslog(2)` to the agent, for `kmsgfs run` and the tests.
//!
//! In containers the OCI runtime builds the filter from the profile
//! ([`super::profile`]); a process that kmsgfs starts itself installs this one before `exec`.
//! It notifies on `syslog` for every ABI an x86-64 kernel accepts (the native one, i386 through
//! `int 0x80`, x32) and allows everything else. Leaving out i386 would leave a hole: a 64-bit
//! process can reach the host's real `syslog` through `int 0x80` (seccomp-agent.md §14).
//!
//! [`install_filter`] is async-signal-safe: it allocates nothing, so it can run in a
//! `Command::pre_exec` closure of a multi-threaded parent.

use std::io;
use std::os::fd::OwnedFd;

use crate::sys::seccomp;

/// `AUDIT_ARCH_X86_64`: the native ABI, and x32 (whose numbers carry [`X32_SYSCALL_BIT`]).
pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// `AUDIT_ARCH_I386`: `int 0x80` from any process when `CONFIG_IA32_EMULATION` is set.
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// `__NR_syslog` on x86-64 and on i386 (the same number on both).
pub const NR_SYSLOG: u32 = 103;
/// `__X32_SYSCALL_BIT`: set in the syscall number of x32 calls.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Offsets into `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The program. Jump offsets count the instructions to skip.
static PROGRAM: [libc::sock_filter; 8] = [
    /* 0 */ insn(LD_ABS, 0, 0, OFF_ARCH),
    /* 1 */ insn(JEQ, 1, 0, AUDIT_ARCH_X86_64), // -> 3
    /* 2 */ insn(JEQ, 0, 3, AUDIT_ARCH_I386), // -> 3, else -> 6
    /* 3 */ insn(LD_ABS, 0, 0, OFF_NR),
    /* 4 */ insn(JEQ, 2, 0, NR_SYSLOG), // -> 7
    /* 5 */ insn(JEQ, 1, 0, NR_SYSLOG | X32_SYSCALL_BIT), // -> 7, else -> 6
    /* 6 */ insn(RET, 0, 0, libc::SECCOMP_RET_ALLOW),
    /* 7 */ insn(RET, 0, 0, libc::SECCOMP_RET_USER_NOTIF),
];

/// What [`PROGRAM`] returns for a `(arch, nr)` pair, by interpreting it. Used by the unit tests
/// so that the jump offsets are checked, not just written down.
#[cfg(test)]
fn evaluate(arch: u32, nr: u32) -> u32 {
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let i = &PROGRAM[pc];
        match i.code {
            LD_ABS => {
                acc = match i.k {
                    OFF_NR => nr,
                    OFF_ARCH => arch,
                    other => panic!("load from unexpected offset {other}"),
                };
                pc += 1;
            }
            JEQ => {
                pc += 1 + usize::from(if acc == i.k { i.jt } else { i.jf });
            }
            RET => return i.k,
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
}

/// Install the filter on the calling thread and return its listener (close-on-exec).
///
/// The filter is inherited by children and threads created later and survives `execve`.
/// The caller needs CAP_SYS_ADMIN in its user namespace or `PR_SET_NO_NEW_PRIVS`; this function
/// does not set no-new-privs itself, because that changes what setuid programs do (it fails with
/// EACCES instead). Only the calling thread is covered: call it in a single-threaded child
/// (`pre_exec`) before `exec`. Async-signal-safe.
pub fn install_filter() -> io::Result<OwnedFd> {
    seccomp::install_filter(&PROGRAM)
}

pub use crate::sys::seccomp::notif_sizes;

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    #[test]
    fn syslog_is_notified_on_every_x86_abi() {
        assert_eq!(evaluate(AUDIT_ARCH_X86_64, NR_SYSLOG), NOTIFY);
        assert_eq!(evaluate(AUDIT_ARCH_I386, NR_SYSLOG), NOTIFY);
        assert_eq!(
            evaluate(AUDIT_ARCH_X86_64, NR_SYSLOG | X32_SYSCALL_BIT),
            NOTIFY
        );
    }

    #[test]
    fn other_calls_are_allowed() {
        for nr in [0, 1, 59, 102, 104, 231, 435, X32_SYSCALL_BIT] {
            assert_eq!(evaluate(AUDIT_ARCH_X86_64, nr), ALLOW, "nr {nr}");
            assert_eq!(evaluate(AUDIT_ARCH_I386, nr), ALLOW, "nr {nr}");
        }
        // An architecture an x86-64 kernel never reports: allowed rather than killed.
        assert_eq!(evaluate(0xC000_00B7, NR_SYSLOG), ALLOW);
    }

    #[test]
    fn kernel_structs_are_not_larger_than_ours() {
        let (notif, resp) = notif_sizes().expect("seccomp(SECCOMP_GET_NOTIF_SIZES)");
        assert!(notif <= std::mem::size_of::<libc::seccomp_notif>());
        assert!(resp <= std::mem::size_of::<libc::seccomp_notif_resp>());
    }
}
