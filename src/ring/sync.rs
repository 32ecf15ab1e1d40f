//! The synchronisation primitives the ring is built from, behind one seam so that the loom
//! model (`cargo test --release --lib --features loom loom`) can replace every atomic, fence,
//! lock and condition variable the publish/read/wake protocol uses.
//!
//! Only the crate's own unit-test build switches to loom (`cfg(all(feature = "loom", test))`):
//! the library as linked into the binary, integration tests and benches keeps the real
//! primitives even with the feature on. A feature rather than loom's usual `--cfg loom`:
//! `RUSTFLAGS` would rebuild every dependency (libbpf's C sources included) for the model,
//! two of the nine minutes of a CI run, while a feature of this crate (no crate depends on
//! kmsgfs, so nothing else can turn it on) rebuilds only this crate.
//!
//! The API is the intersection of `parking_lot` and loom: guards by value, no poisoning.

#[cfg(all(feature = "loom", test))]
pub(crate) use loom::sync::atomic::{fence, AtomicU64};
#[cfg(not(all(feature = "loom", test)))]
pub(crate) use std::sync::atomic::{fence, AtomicU64};

use std::time::Instant;

#[cfg(all(feature = "loom", test))]
mod imp {
    pub(crate) type Mutex<T> = loom::sync::Mutex<T>;
    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;
    pub(crate) type Condvar = loom::sync::Condvar;
    pub(crate) type RwLock<T> = loom::sync::RwLock<T>;
    pub(crate) type RwLockReadGuard<'a, T> = loom::sync::RwLockReadGuard<'a, T>;
    pub(crate) type RwLockWriteGuard<'a, T> = loom::sync::RwLockWriteGuard<'a, T>;
}

#[cfg(not(all(feature = "loom", test)))]
mod imp {
    pub(crate) type Mutex<T> = parking_lot::Mutex<T>;
    pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;
    pub(crate) type Condvar = parking_lot::Condvar;
    pub(crate) type RwLock<T> = parking_lot::RwLock<T>;
    pub(crate) type RwLockReadGuard<'a, T> = parking_lot::RwLockReadGuard<'a, T>;
    pub(crate) type RwLockWriteGuard<'a, T> = parking_lot::RwLockWriteGuard<'a, T>;
}

/// A mutex without poisoning.
pub(crate) struct Mutex<T>(imp::Mutex<T>);

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(imp::Mutex::new(value))
    }

    #[cfg(not(all(feature = "loom", test)))]
    pub(crate) fn lock(&self) -> imp::MutexGuard<'_, T> {
        self.0.lock()
    }

    #[cfg(all(feature = "loom", test))]
    pub(crate) fn lock(&self) -> imp::MutexGuard<'_, T> {
        self.0.lock().expect("loom mutex poisoned")
    }
}

/// A condition variable for [`Mutex`].
pub(crate) struct Condvar(imp::Condvar);

impl Condvar {
    pub(crate) fn new() -> Self {
        Condvar(imp::Condvar::new())
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }

    /// Wait for a notification or until `deadline` (forever when `None`); returns the guard
    /// and whether the deadline passed. Spurious wake-ups are possible.
    #[cfg(not(all(feature = "loom", test)))]
    pub(crate) fn wait_until<'a, T>(
        &self,
        mut guard: imp::MutexGuard<'a, T>,
        deadline: Option<Instant>,
    ) -> (imp::MutexGuard<'a, T>, bool) {
        let timed_out = match deadline {
            Some(d) => self.0.wait_until(&mut guard, d).timed_out(),
            None => {
                self.0.wait(&mut guard);
                false
            }
        };
        (guard, timed_out)
    }

    /// Loom has no time: the wait lasts until a notification, so a lost wake-up shows up as
    /// a deadlock in the model.
    #[cfg(all(feature = "loom", test))]
    pub(crate) fn wait_until<'a, T>(
        &self,
        guard: imp::MutexGuard<'a, T>,
        _deadline: Option<Instant>,
    ) -> (imp::MutexGuard<'a, T>, bool) {
        (self.0.wait(guard).expect("loom mutex poisoned"), false)
    }
}

/// A reader-writer lock without poisoning.
pub(crate) struct RwLock<T>(imp::RwLock<T>);

impl<T> RwLock<T> {
    pub(crate) fn new(value: T) -> Self {
        RwLock(imp::RwLock::new(value))
    }

    #[cfg(not(all(feature = "loom", test)))]
    pub(crate) fn read(&self) -> imp::RwLockReadGuard<'_, T> {
        self.0.read()
    }

    #[cfg(not(all(feature = "loom", test)))]
    pub(crate) fn write(&self) -> imp::RwLockWriteGuard<'_, T> {
        self.0.write()
    }

    #[cfg(all(feature = "loom", test))]
    pub(crate) fn read(&self) -> imp::RwLockReadGuard<'_, T> {
        self.0.read().expect("loom rwlock poisoned")
    }

    #[cfg(all(feature = "loom", test))]
    pub(crate) fn write(&self) -> imp::RwLockWriteGuard<'_, T> {
        self.0.write().expect("loom rwlock poisoned")
    }
}

/// Keeps its value on its own cache line(s), so that a line the writer stores to on every
/// append does not also hold data that is only read, or written by someone else. 128 bytes
/// covers the adjacent-line prefetcher of x86-64 and the 128-byte lines of some arm64 cores.
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// `n` atomics, all 0, from zeroed memory: a large ring's words cost nothing until they are
/// first written (the allocator hands out fresh, lazily zeroed pages), so creating a ring for a
/// new namespace does not stall the thread that delivers its first record.
#[cfg(not(all(feature = "loom", test)))]
pub(crate) fn zeroed_atomics(n: usize) -> Box<[AtomicU64]> {
    if n == 0 {
        return Box::new([]);
    }
    let layout = std::alloc::Layout::array::<AtomicU64>(n).expect("ring size fits in memory");
    // SAFETY: the layout has a non-zero size (n > 0).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<AtomicU64>();
    if ptr.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `ptr` is a live allocation of exactly `Layout::array::<AtomicU64>(n)`, as a boxed
    // slice of `n` AtomicU64 expects, and an all-zero AtomicU64 is a valid value (0); the box
    // takes ownership and frees it with the same layout.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, n)) }
}

/// Loom's atomics are not plain memory: build them one by one.
#[cfg(all(feature = "loom", test))]
pub(crate) fn zeroed_atomics(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}
