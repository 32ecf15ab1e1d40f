//! Delivering FUSE_INTERRUPT to parked reads (kmsg-semantics E5, fuse-notes §9-§10).
//!
//! A blocking read of an empty ring is parked: its reply is kept until a record arrives. A
//! signal to the reader makes the kernel queue FUSE_INTERRUPT naming the READ's unique; the
//! transport hands it to [`Interrupts::interrupt`] (the `interrupt` method of
//! [`super::wire::Filesystem`]), which removes the parked READ and answers it EINTR. The
//! INTERRUPT itself gets no reply: an error reply (fuser 0.18 answered ENOSYS) would make the
//! kernel set `fc->no_interrupt` for the whole connection (`fs/fuse/dev.c`,
//! `fuse_dev_do_write`), and from then on every blocked reader sleeps TASK_KILLABLE: state D,
//! counted in the load average, deaf to SIGINT.
//!
//! With several event-loop threads an INTERRUPT can be read (through another clone of the
//! `/dev/fuse` fd) before the READ it refers to has been parked by the thread that read it
//! (the kernel queues the interrupt once the READ was *sent*). The hook then waits on a
//! condition variable, at most [`PARK_WAIT`], for the READ to be parked, unless the READ is
//! known to have been answered already (a small lock-free list of recently answered uniques).
//! If the wait times out, the id is remembered for [`UNMATCHED_TTL`] and checked when a READ
//! is parked, so that READ is answered EINTR at once instead of sleeping.
//!
//! Only `EINTR` can be answered: ERESTARTSYS is rejected by the kernel, so SA_RESTART handlers
//! see EINTR (E5, fuse-notes §11).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Longest time the hook waits for an interrupted READ to be parked by another thread.
pub const PARK_WAIT: Duration = Duration::from_millis(20);
/// How long an interrupt that matched no parked READ is remembered.
pub const UNMATCHED_TTL: Duration = Duration::from_secs(5);
const RECENT: usize = 256;

/// Something holding parked READs that can answer one with EINTR.
pub trait Cancel: Send + Sync {
    /// Remove the parked READ `unique`, if still parked, and answer it EINTR.
    fn cancel(&self, unique: u64);
}

#[derive(Default)]
struct State {
    parked: HashMap<u64, Arc<dyn Cancel>>,
    unmatched: HashMap<u64, Instant>,
}

/// The table of parked READs by request unique, consulted by the interrupt hook.
pub struct Interrupts {
    state: Mutex<State>,
    parked_cv: Condvar,
    multi_threaded: bool,
    recent: Box<[AtomicU64]>,
    recent_next: AtomicUsize,
    /// Interrupts answered EINTR (stats).
    pub delivered: AtomicU64,
    /// Interrupts that matched no parked READ.
    pub unmatched: AtomicU64,
}

impl std::fmt::Debug for Interrupts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interrupts")
            .field("parked", &self.state.lock().parked.len())
            .finish()
    }
}

impl Interrupts {
    /// A table; `multi_threaded` enables the wait for READs parked by another thread.
    pub fn new(multi_threaded: bool) -> Self {
        Interrupts {
            state: Mutex::new(State::default()),
            parked_cv: Condvar::new(),
            multi_threaded,
            recent: (0..RECENT).map(|_| AtomicU64::new(0)).collect(),
            recent_next: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
        }
    }

    /// Record that READ `unique` is parked in `owner`. Returns `false` when an interrupt for it
    /// already arrived: the caller must answer it EINTR instead of parking.
    pub fn park(&self, unique: u64, owner: Arc<dyn Cancel>) -> bool {
        let mut st = self.state.lock();
        if st.unmatched.remove(&unique).is_some() {
            self.delivered.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        st.parked.insert(unique, owner);
        drop(st);
        self.parked_cv.notify_all();
        true
    }

    /// Forget READ `unique` (answered by someone else).
    pub fn unpark(&self, unique: u64) {
        self.state.lock().parked.remove(&unique);
        self.answered(unique);
    }

    /// Note that request `unique` was answered without being parked.
    pub fn answered(&self, unique: u64) {
        let i = self.recent_next.fetch_add(1, Ordering::Relaxed) % RECENT;
        self.recent[i].store(unique, Ordering::Relaxed);
    }

    fn recently_answered(&self, unique: u64) -> bool {
        self.recent
            .iter()
            .any(|u| u.load(Ordering::Relaxed) == unique)
    }

    /// FUSE_INTERRUPT for request `unique` arrived.
    pub fn interrupt(&self, unique: u64) {
        let deadline = Instant::now() + PARK_WAIT;
        let mut st = self.state.lock();
        loop {
            if let Some(owner) = st.parked.remove(&unique) {
                drop(st);
                owner.cancel(unique);
                self.delivered.fetch_add(1, Ordering::Relaxed);
                log::debug!("FUSE_INTERRUPT for READ {unique}: answered EINTR");
                return;
            }
            if !self.multi_threaded || self.recently_answered(unique) {
                break;
            }
            if self.parked_cv.wait_until(&mut st, deadline).timed_out() {
                break;
            }
        }
        let now = Instant::now();
        st.unmatched
            .retain(|_, t| now.duration_since(*t) < UNMATCHED_TTL);
        if !self.recently_answered(unique) {
            st.unmatched.insert(unique, now);
        }
        self.unmatched.fetch_add(1, Ordering::Relaxed);
        log::debug!("FUSE_INTERRUPT for request {unique}: not parked");
    }

    /// Remove and return every parked READ (shutdown).
    pub fn take_all(&self) -> Vec<(u64, Arc<dyn Cancel>)> {
        self.state.lock().parked.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rec(Mutex<Vec<u64>>);
    impl Cancel for Rec {
        fn cancel(&self, unique: u64) {
            self.0.lock().push(unique);
        }
    }

    #[test]
    fn parked_read_is_cancelled() {
        let t = Interrupts::new(false);
        let r = Arc::new(Rec(Mutex::new(vec![])));
        assert!(t.park(7, r.clone()));
        t.interrupt(7);
        assert_eq!(*r.0.lock(), vec![7]);
        // A second interrupt for the same id finds nothing.
        t.interrupt(7);
        assert_eq!(*r.0.lock(), vec![7]);
    }

    #[test]
    fn interrupt_before_park_is_remembered() {
        let t = Interrupts::new(true);
        let start = Instant::now();
        t.interrupt(9);
        assert!(start.elapsed() >= PARK_WAIT);
        let r = Arc::new(Rec(Mutex::new(vec![])));
        assert!(
            !t.park(9, r.clone()),
            "park must report the earlier interrupt"
        );
        assert!(t.park(10, r));
    }

    #[test]
    fn waits_for_a_read_parked_by_another_thread() {
        let t = Arc::new(Interrupts::new(true));
        let r = Arc::new(Rec(Mutex::new(vec![])));
        let t2 = Arc::clone(&t);
        let r2 = Arc::clone(&r);
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(2));
            assert!(t2.park(11, r2));
        });
        t.interrupt(11);
        h.join().unwrap();
        assert_eq!(*r.0.lock(), vec![11]);
    }

    #[test]
    fn answered_reads_do_not_wait() {
        let t = Interrupts::new(true);
        t.answered(12);
        t.interrupt(12);
        // Not remembered as unmatched: a later park of the same id would not be cancelled.
        let r = Arc::new(Rec(Mutex::new(vec![])));
        assert!(t.park(12, r));
    }
}
