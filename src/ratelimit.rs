//! The per-open-file write ratelimit of `/dev/kmsg` (kmsg-semantics A7).
//!
//! The kernel gives every open file description its own `ratelimit_state` with
//! `DEFAULT_RATELIMIT_INTERVAL` = 5 s, `DEFAULT_RATELIMIT_BURST` = 10 and the flag
//! `RATELIMIT_MSG_ON_RELEASE` (A7.5): the window opens at the first write, the 11th and later
//! writes in a window are dropped (the write still returns its length), a write after the
//! window has passed opens a new one, and the number of dropped writes accumulates over all
//! windows until the file is released, when one record
//! `printk: <comm>: <N> output lines suppressed due to ratelimiting` (prio 4) reports it
//! (A7.6). This module is the pure state machine; the caller supplies the time.

use std::time::{Duration, Instant};

/// `DEFAULT_RATELIMIT_INTERVAL`: 5 s.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// `DEFAULT_RATELIMIT_BURST`: 10.
pub const BURST: u32 = 10;

/// The `printk_devkmsg` mode (A7.1), fixed per daemon by `--devkmsg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevkmsgMode {
    /// No limit (A7.3).
    On,
    /// Opening fails with EPERM (A1.1, A7.4).
    Off,
    /// Per-open-file limit (A7.5), the default.
    Ratelimit,
}

/// One open file's ratelimit state (`struct ratelimit_state` with `RATELIMIT_MSG_ON_RELEASE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    interval: Duration,
    burst: u32,
    begin: Option<Instant>,
    printed: u32,
    missed: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::new(INTERVAL, BURST)
    }
}

impl RateLimit {
    /// A limiter allowing `burst` events per `interval`.
    pub fn new(interval: Duration, burst: u32) -> Self {
        RateLimit {
            interval,
            burst,
            begin: None,
            printed: 0,
            missed: 0,
        }
    }

    /// Account one write at `now`; `true` when it may be logged, `false` when it is dropped.
    pub fn allow(&mut self, now: Instant) -> bool {
        let begin = *self.begin.get_or_insert(now);
        // time_is_before_jiffies(begin + interval): the window has passed.
        if now.saturating_duration_since(begin) > self.interval {
            self.begin = Some(now);
            self.printed = 0;
        }
        if self.burst > self.printed {
            self.printed += 1;
            true
        } else {
            self.missed += 1;
            false
        }
    }

    /// Writes dropped since the file was opened (reported on release).
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

/// The text of the release report for `missed` dropped writes by `comm` (A7.6).
pub fn suppressed_message(comm: &str, missed: u64) -> String {
    format!("printk: {comm}: {missed} output lines suppressed due to ratelimiting")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a7_5_fifteen_writes_drop_five() {
        let t0 = Instant::now();
        let mut rl = RateLimit::default();
        let ok = (0..15).filter(|_| rl.allow(t0)).count();
        assert_eq!(ok, 10);
        assert_eq!(rl.missed(), 5);
    }

    #[test]
    fn a7_6_new_window_after_interval_missed_accumulates() {
        let t0 = Instant::now();
        let mut rl = RateLimit::default();
        let first = (0..12).filter(|_| rl.allow(t0)).count();
        let t1 = t0 + Duration::from_millis(5200);
        let second = (0..3).filter(|_| rl.allow(t1)).count();
        assert_eq!((first, second), (10, 3));
        assert_eq!(rl.missed(), 2);
        assert_eq!(
            suppressed_message("bash", 2),
            "printk: bash: 2 output lines suppressed due to ratelimiting"
        );
    }

    #[test]
    fn window_boundary_is_exclusive() {
        let t0 = Instant::now();
        let mut rl = RateLimit::default();
        for _ in 0..10 {
            assert!(rl.allow(t0));
        }
        // Exactly 5 s later the window has not passed yet (time_is_before_jiffies is strict).
        assert!(!rl.allow(t0 + INTERVAL));
        assert!(rl.allow(t0 + INTERVAL + Duration::from_millis(1)));
    }

    proptest! {
        #[test]
        fn never_more_than_burst_per_window(gaps in proptest::collection::vec(0u64..3000, 1..200)) {
            let t0 = Instant::now();
            let mut rl = RateLimit::default();
            let mut now = t0;
            let mut window_start = None::<Instant>;
            let mut in_window = 0u32;
            let mut allowed = 0u64;
            for g in &gaps {
                now += Duration::from_millis(*g);
                let ok = rl.allow(now);
                let ws = *window_start.get_or_insert(now);
                if now.duration_since(ws) > INTERVAL {
                    window_start = Some(now);
                    in_window = 0;
                }
                if ok {
                    in_window += 1;
                    allowed += 1;
                }
                prop_assert!(in_window <= BURST);
            }
            prop_assert_eq!(allowed + rl.missed(), gaps.len() as u64);
        }
    }
}

/// A budget for log lines that a client can cause (a hostile container must not be able to
/// flood the daemon's log): at most `burst` lines per `interval`; the lines over budget are
/// counted and reported once when the next window opens.
#[derive(Debug)]
pub struct LogBudget {
    interval: Duration,
    burst: u32,
    state: parking_lot::Mutex<(Option<Instant>, u32, u64)>,
}

impl LogBudget {
    /// A budget of `burst` lines per `interval`.
    pub const fn new(interval: Duration, burst: u32) -> Self {
        LogBudget {
            interval,
            burst,
            state: parking_lot::Mutex::new((None, 0, 0)),
        }
    }

    /// Account one line at `now`. `Some(n)` when it may be logged, `n` being the number of
    /// lines suppressed since the last line that was let through (to be reported with it);
    /// `None` when it is over budget and must be dropped.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut g = self.state.lock();
        let (begin, printed, missed) = &mut *g;
        if begin.is_none_or(|b| now.saturating_duration_since(b) >= self.interval) {
            *begin = Some(now);
            *printed = 0;
        }
        if *printed < self.burst {
            *printed += 1;
            Some(std::mem::take(missed))
        } else {
            *missed += 1;
            None
        }
    }
}

#[cfg(test)]
mod log_budget_tests {
    use super::*;

    #[test]
    fn lines_over_budget_are_dropped_and_reported_with_the_next_window() {
        let b = LogBudget::new(Duration::from_secs(1), 3);
        let t = Instant::now();
        assert_eq!(b.admit(t), Some(0));
        assert_eq!(b.admit(t), Some(0));
        assert_eq!(b.admit(t), Some(0));
        for _ in 0..1000 {
            assert_eq!(b.admit(t + Duration::from_millis(500)), None);
        }
        assert_eq!(b.admit(t + Duration::from_secs(1)), Some(1000));
        assert_eq!(b.admit(t + Duration::from_secs(1)), Some(0));
    }
}
