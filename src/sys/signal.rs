//! Synchronous handling of SIGINT and SIGTERM.
//!
//! [`block_termination`] blocks both signals in the calling thread; threads spawned afterwards
//! inherit the mask, so the signals stay pending until [`wait_termination`] takes one. Call it
//! first in `main`, before any thread exists.

use super::{Result, SysError};

fn term_set() -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is valid storage; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid, writable storage for a sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
    }
    set
}

/// Block SIGINT and SIGTERM in the calling thread (and every thread it spawns later).
pub fn block_termination() -> Result<()> {
    let set = term_set();
    // SAFETY: `set` is an initialised sigset_t; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(SysError::new(
            "pthread_sigmask(SIG_BLOCK, SIGINT|SIGTERM)",
            std::io::Error::from_raw_os_error(rc),
        ));
    }
    Ok(())
}

/// Wait until SIGINT or SIGTERM arrives (they must be blocked); returns the signal number.
pub fn wait_termination() -> Result<i32> {
    let set = term_set();
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is initialised and `sig` is valid, writable storage.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        match rc {
            0 => return Ok(sig),
            libc::EINTR => continue,
            e => {
                return Err(SysError::new(
                    "sigwait(SIGINT|SIGTERM)",
                    std::io::Error::from_raw_os_error(e),
                ))
            }
        }
    }
}

/// Send `sig` to our own process (used to end [`wait_termination`] from another thread).
pub fn raise_self(sig: i32) {
    // SAFETY: kill on our own pid has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), sig);
    }
}

/// `sigaction(sig)` with `handler`, no flags and an empty mask. The handler must be
/// async-signal-safe (storing to an atomic is); it resets to the default across `exec`, so
/// programs started later are unaffected.
pub fn set_handler(sig: i32, handler: extern "C" fn(libc::c_int)) -> Result<()> {
    // SAFETY: an all-zero sigaction is a valid value to fill in; sigemptyset initialises the
    // mask; `sa` outlives the call and the old action is not asked for.
    let rc = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(SysError::last(format!("sigaction({sig})")));
    }
    Ok(())
}
