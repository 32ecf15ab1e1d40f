//! Bounded writer threads: the only place where the agent touches a caller's memory.
//!
//! The write into the caller (`pwrite` on `/proc/<tid>/mem`) can block: the destination is
//! checked to be anonymous private memory ([`super::notify::write_to_caller`]), but the caller
//! can remap it to a file (a FUSE file whose daemon never answers) between that check and the
//! write. The agent thread therefore never writes itself: it computes the bytes under the ring's
//! cursor lock, drops the lock and hands a [`Job`] to this pool. A job runs on an idle writer
//! thread or on a new one; the agent never queues a job behind a busy thread. Bounds, enforced
//! by the agent ([`super::agent`]): [`MAX_WRITERS`] jobs in flight overall and
//! [`MAX_WRITERS_PER_LISTENER`] per listener, further jobs wait in the agent's per-listener
//! queue. A stalled write therefore delays only later calls of the same listener (the same
//! container); other containers' replies go on. A writer stuck for good stays stuck until the
//! filesystem it faulted into answers or aborts (for FUSE: its daemon dies or `umount -f`).
//!
//! Finished jobs come back through [`Completions`] and wake the agent's epoll.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::notify::{self, WriteError};

/// Write jobs in flight at once, over all listeners (and the most writer threads alive).
pub const MAX_WRITERS: usize = 32;
/// Write jobs in flight at once for one listener; more wait on the agent side.
pub const MAX_WRITERS_PER_LISTENER: usize = 2;
/// An idle writer thread exits after this long.
const IDLE_EXIT: Duration = Duration::from_secs(30);

/// One delivery into a caller's memory.
pub struct Job<T> {
    /// The listener the notification came from (kept open while the job runs).
    pub listener: Arc<OwnedFd>,
    /// Notification id.
    pub id: u64,
    /// Calling task.
    pub tid: u32,
    /// Destination address.
    pub addr: u64,
    /// The bytes.
    pub data: Vec<u8>,
    /// Run on the writer thread after the destination was checked, just before the write.
    pub checked: Option<Box<dyn FnOnce() + Send>>,
    /// Whatever the agent needs to finish the call.
    pub ctx: T,
}

/// A finished job and its result.
pub type Done<T> = (Job<T>, Result<(), WriteError>);

/// Where finished jobs go; `wake` tells the agent.
pub struct Completions<T> {
    done: Mutex<Vec<Done<T>>>,
    wake: Box<dyn Fn() + Send + Sync>,
}

impl<T> Completions<T> {
    /// An empty completion list calling `wake` after each push.
    pub fn new(wake: Box<dyn Fn() + Send + Sync>) -> Self {
        Completions {
            done: Mutex::new(Vec::new()),
            wake,
        }
    }

    /// Take every finished job.
    pub fn take(&self) -> Vec<Done<T>> {
        std::mem::take(&mut *self.done.lock())
    }

    fn push(&self, d: Done<T>) {
        self.done.lock().push(d);
        (self.wake)();
    }
}

struct State<T> {
    queue: VecDeque<Job<T>>,
    threads: usize,
    busy: usize,
    stop: bool,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    cv: Condvar,
    done: Arc<Completions<T>>,
}

/// The writer pool (module docs).
pub struct Writers<T: Send + 'static> {
    inner: Arc<Inner<T>>,
}

impl<T: Send + 'static> Writers<T> {
    /// A pool reporting into `done`.
    pub fn new(done: Arc<Completions<T>>) -> Self {
        Writers {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    threads: 0,
                    busy: 0,
                    stop: false,
                }),
                cv: Condvar::new(),
                done,
            }),
        }
    }

    /// Run `job` on an idle writer or a new one. The caller keeps the number of unfinished jobs
    /// at most [`MAX_WRITERS`], so a job never waits behind a busy (possibly stuck) writer.
    /// `Err(job)` if no thread could be started and none is idle.
    pub fn submit(&self, job: Job<T>) -> Result<(), Job<T>> {
        let mut st = self.inner.state.lock();
        st.queue.push_back(job);
        if st.queue.len() > st.threads - st.busy {
            let inner = Arc::clone(&self.inner);
            let spawned = std::thread::Builder::new()
                .name("kmsgfs-sc-write".into())
                .spawn(move || writer_loop(inner));
            match spawned {
                Ok(_) => st.threads += 1,
                Err(e) => {
                    log::error!("`spawn(kmsgfs-sc-write)` failed: {e}");
                    if st.queue.len() > st.threads - st.busy {
                        let job = st.queue.pop_back().expect("just pushed");
                        return Err(job);
                    }
                }
            }
        }
        drop(st);
        self.inner.cv.notify_one();
        Ok(())
    }
}

impl<T: Send + 'static> Drop for Writers<T> {
    fn drop(&mut self) {
        self.inner.state.lock().stop = true;
        self.inner.cv.notify_all();
    }
}

fn writer_loop<T>(inner: Arc<Inner<T>>) {
    let mut st = inner.state.lock();
    loop {
        if let Some(mut job) = st.queue.pop_front() {
            st.busy += 1;
            drop(st);
            let r = notify::write_to_caller_then(
                job.listener.as_fd(),
                job.id,
                job.tid,
                job.addr,
                &job.data,
                job.checked.take(),
            );
            st = inner.state.lock();
            st.busy -= 1;
            drop(st);
            inner.done.push((job, r));
            st = inner.state.lock();
            continue;
        }
        if st.stop || inner.cv.wait_for(&mut st, IDLE_EXIT).timed_out() && st.queue.is_empty() {
            st.threads -= 1;
            return;
        }
    }
}
