//! Delivering FUSE_INTERRUPT to parked reads without patching fuser (kmsg-semantics E5,
//! fuse-notes §9-§10).
//!
//! # The problem
//!
//! fuser 0.18 answers every FUSE_INTERRUPT itself with ENOSYS. If the interrupted request is
//! still pending in the kernel when that answer arrives, the kernel sets `fc->no_interrupt` for
//! the whole connection (`fs/fuse/dev.c`, `fuse_dev_do_write`), and from then on every blocked
//! reader sleeps TASK_KILLABLE: state D, counted in the load average, deaf to SIGINT, and a
//! SIGKILLed reader hangs until the next record.
//!
//! # The way around it
//!
//! fuser logs every request with `debug!("{} thread={}", request, …)` (target
//! `fuser::request`) on the dispatching thread *before* it answers; an interrupt shows up as
//! `… INTERRUPT unique RequestId(N) thread=…`. [`install_logger`] installs a global
//! [`log::Log`] that wraps env_logger, always enables that target at Debug, and for an
//! INTERRUPT line calls the registered [`Interrupts`] table, which removes the parked READ with
//! unique `N` and answers it EINTR right there. The READ is therefore finished before fuser
//! writes its ENOSYS; the kernel's `request_find` for the interrupt reply fails (ENOENT) and
//! `no_interrupt` is never set. Readers keep sleeping interruptibly (state S); a signal ends a
//! blocked read with EINTR within milliseconds, and SIGKILL ends the reader.
//!
//! With several event-loop threads an INTERRUPT can be read before the READ it refers to has
//! been parked by another thread (the kernel queues the interrupt once the READ was *sent*).
//! The hook then waits on a condition variable, at most [`PARK_WAIT`], for the READ to be
//! parked, unless the READ is known to have been answered already (a small lock-free list of
//! recently answered uniques). If the wait times out, the id is remembered for
//! [`UNMATCHED_TTL`] and checked when a READ is parked, so that READ is answered EINTR at once
//! instead of sleeping. Even then `no_interrupt` cannot be set by the race: with several
//! threads every thread reads its own clone of the `/dev/fuse` fd, and the kernel looks up the
//! request an interrupt reply refers to only among the requests read through the same fd, so
//! fuser's ENOSYS for an INTERRUPT handled by another thread than its READ gets ENOENT.
//!
//! Only `EINTR` can be answered: ERESTARTSYS is rejected by the kernel, so SA_RESTART handlers
//! see EINTR (E5, fuse-notes §11).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

/// Longest time the hook waits for an interrupted READ to be parked by another thread.
pub const PARK_WAIT: Duration = Duration::from_millis(20);
/// How long an interrupt that matched no parked READ is remembered.
pub const UNMATCHED_TTL: Duration = Duration::from_secs(5);
/// The log target of fuser's per-request debug line.
pub const REQUEST_TARGET: &str = "fuser::request";
const MARKER: &str = "INTERRUPT unique RequestId(";
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

    /// The hook: FUSE_INTERRUPT for request `unique` arrived.
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

static HOOK: RwLock<Option<Arc<Interrupts>>> = RwLock::new(None);

/// Route FUSE_INTERRUPT log lines to `table` (replacing any previous table).
pub fn register(table: Arc<Interrupts>) {
    *HOOK.write() = Some(table);
}

/// Stop routing FUSE_INTERRUPT log lines.
pub fn unregister() {
    *HOOK.write() = None;
}

/// Extract `N` from a fuser request line containing `INTERRUPT unique RequestId(N)`.
pub fn parse_interrupt(line: &str) -> Option<u64> {
    let start = line.find(MARKER)? + MARKER.len();
    let rest = &line[start..];
    let end = rest.find(')')?;
    rest[..end].parse().ok()
}

/// Budget of fuser's own warning and error lines: 20 per 10 s.
static FUSER_LOG_BUDGET: crate::ratelimit::LogBudget =
    crate::ratelimit::LogBudget::new(Duration::from_secs(10), 20);

thread_local! {
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(256));
}

/// The global logger: env_logger plus the interrupt hook.
struct HookLogger {
    inner: env_logger::Logger,
}

impl log::Log for HookLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target() == REQUEST_TARGET || self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.target() == REQUEST_TARGET {
            if let Some(table) = HOOK.read().as_ref() {
                let hit = LINE.with(|l| {
                    let mut l = l.borrow_mut();
                    l.clear();
                    let _ = l.write_fmt(*record.args());
                    parse_interrupt(&l)
                });
                if let Some(unique) = hit {
                    table.interrupt(unique);
                }
            }
        }
        // fuser logs the kernel's ENOENT for a reply to a request that is already finished
        // (our INTERRUPT answers, replies to readers that died) as an error. After an
        // interrupt that is the expected outcome, so it is demoted to debug.
        if record.target() == "fuser::reply" && record.level() == log::Level::Error {
            let enoent = LINE.with(|l| {
                let mut l = l.borrow_mut();
                l.clear();
                let _ = l.write_fmt(*record.args());
                l.contains("(os error 2)")
            });
            if enoent {
                let demoted = log::Record::builder()
                    .args(*record.args())
                    .level(log::Level::Debug)
                    .target(record.target())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build();
                self.inner.log(&demoted);
                return;
            }
        }
        // Warnings and errors of fuser are caused by requests, that is by clients (an ioctl, a
        // reply to a reader that died): a hostile container could flood the log with them.
        if record.target().starts_with("fuser") && record.level() <= log::Level::Warn {
            match FUSER_LOG_BUDGET.admit(Instant::now()) {
                None => return,
                Some(0) => {}
                Some(n) => self.inner.log(
                    &log::Record::builder()
                        .args(format_args!("{n} fuser log lines suppressed (log budget)"))
                        .level(log::Level::Warn)
                        .target("kmsgfs::fuse")
                        .build(),
                ),
            }
        }
        // env_logger applies its own filter.
        self.inner.log(record);
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Install the global logger: env_logger configured from `RUST_LOG` (default `info`), plus the
/// FUSE_INTERRUPT hook. The maximum level is raised to at least Debug so fuser's request lines
/// reach the hook. Returns an error if a logger was already installed.
pub fn install_logger() -> Result<(), log::SetLoggerError> {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max = inner.filter().max(log::LevelFilter::Debug);
    log::set_boxed_logger(Box::new(HookLogger { inner }))?;
    log::set_max_level(max);
    if !hook_can_see_requests() {
        log::error!(
            "the log crate is built with a static maximum level below Debug (a max_level_* \
             feature); fuser's request lines are compiled out, so FUSE_INTERRUPT cannot be \
             delivered and blocked readers will sleep in state D after the first signal"
        );
    }
    Ok(())
}

/// Whether fuser's `debug!` request lines can reach the hook at all: a `max_level_*` or
/// `release_max_level_*` feature of the log crate anywhere in the build would compile them out.
pub fn hook_can_see_requests() -> bool {
    log::STATIC_MAX_LEVEL >= log::LevelFilter::Debug
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_lines_are_compiled_in() {
        assert!(hook_can_see_requests());
    }

    #[test]
    fn parses_fuser_interrupt_line() {
        let l = "FUSE( 42) ino 0x0000000000000000 INTERRUPT unique RequestId(40) thread=fuser-0";
        assert_eq!(parse_interrupt(l), Some(40));
        assert_eq!(
            parse_interrupt("FUSE(  2) ino 0x1 READ fh FileHandle(1)"),
            None
        );
    }

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
