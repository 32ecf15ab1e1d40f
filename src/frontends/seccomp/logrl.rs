//! Rate limit for log lines a client can trigger: at most [`PER_SECOND`] lines per second
//! over the whole agent; the first line after a quiet window says how many were suppressed.
//!
//! (`crate::ratelimit` is the `/dev/kmsg` write limiter with the kernel's 5 s / 10 semantics
//! and release report; this one reports as soon as logging resumes.)

use std::time::{Duration, Instant};

/// Lines per one-second window.
pub const PER_SECOND: u32 = 10;

/// The limiter state.
#[derive(Debug)]
pub struct LogLimit {
    window: Instant,
    logged: u32,
    suppressed: u64,
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit {
            window: Instant::now(),
            logged: 0,
            suppressed: 0,
        }
    }
}

impl LogLimit {
    /// `Some(n)` if a line may be logged now (`n` lines were suppressed since the last logged
    /// one), `None` if this one is suppressed.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.logged = 0;
        }
        if self.logged >= PER_SECOND {
            self.suppressed += 1;
            return None;
        }
        self.logged += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// `log::log!` through a [`LogLimit`] (an expression of type `&mut LogLimit`).
macro_rules! rl_log {
    ($lim:expr, $lvl:expr, $($arg:tt)+) => {
        if log::log_enabled!($lvl) {
            if let Some(n) = $lim.allow(std::time::Instant::now()) {
                if n > 0 {
                    log::log!($lvl, "seccomp agent: {n} similar log lines suppressed");
                }
                log::log!($lvl, $($arg)+);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_per_second_then_a_count() {
        let t0 = Instant::now();
        let mut l = LogLimit {
            window: t0,
            ..LogLimit::default()
        };
        for _ in 0..PER_SECOND {
            assert_eq!(l.allow(t0), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(l.allow(t0 + Duration::from_millis(500)), None);
        }
        assert_eq!(l.allow(t0 + Duration::from_millis(1001)), Some(1000));
        assert_eq!(l.allow(t0 + Duration::from_millis(1002)), Some(0));
    }
}
