//! The [`super::wire::Filesystem`] implementation: layout, open-time resolution, and the kmsg file
//! operations (kmsg-semantics A3-A8 through the constraints of E).
//!
//! Layout under the mount point:
//!
//! | path | inode | what |
//! |---|---|---|
//! | `kmsg` | 2 | the opener's ring, resolved at `open()` ([`crate::frontends::policy::resolve`]) |
//! | `stats` | 3 | JSON counters, a snapshot taken at `open()` |
//! | `metrics` | 6 | the same counters in Prometheus text format ([`crate::frontends::metrics`]) |
//! | `ns/` | 4 | one directory per ring the caller may see |
//! | `ns/<inode>/kmsg` | `NS_FILE + inode` | the ring of namespace `<inode>` |
//! | `proc-kmsg` | 5 | `/proc/kmsg` of the opener's ring (kmsg-semantics C), resolved like `kmsg` |
//!
//! `proc-kmsg` is the destructive stream on the ring's syslog cursor, shared with the
//! `syslog(2)` agent ([`crate::frontends::proc_kmsg`]). Only root of the namespace owning the
//! ring (or host root) may open it, read-only (C2; mode 0400).
//!
//! Handlers never block. What a request does to a ring (cursors, parked READs, poll, writes)
//! is the ring's front ([`super::front`], unit-tested without a kernel); this file resolves
//! which ring and which file a request is about and maps the fronts' results to replies.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::wire::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, IoctlFlags, KernelConfig, LockOwner, Notifier, OpenAccMode, OpenFlags,
    PollEvents, PollFlags, PollNotifier, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyPoll, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};
use parking_lot::{Mutex, RwLock};

use super::front::{ProcFront, ReadArgs, RingFront, WriteOutcome};
pub use super::front::{DEFAULT_WRITE_LEVEL, MAX_OPEN_PER_RING, SUPPRESSED_PRIO};
use super::interrupt::Interrupts;
use super::open_table::{FileKind, OpenEntry, OpenTable};
use crate::frontends::policy::{self, HostIdentity, Opener, Restrict, Target};
use crate::frontends::proc_kmsg;
use crate::frontends::stats::{
    DeliveryReport, InterruptReport, NamedRingReport, RestartReport, StatsReport,
};
use crate::ratelimit::{self, DevkmsgMode};
use crate::ring::registry::{NsKey, Registry, RingReport, RingSlot};
use crate::sources::host::HostStats;
use crate::sys;

/// Root directory.
pub const INO_ROOT: u64 = 1;
/// `kmsg`.
pub const INO_KMSG: u64 = 2;
/// `stats`.
pub const INO_STATS: u64 = 3;
/// `ns/`.
pub const INO_NS: u64 = 4;
/// `proc-kmsg`.
pub const INO_PROC_KMSG: u64 = 5;
/// `metrics`.
pub const INO_METRICS: u64 = 6;
/// `ns/<inode>/` is `NS_DIR + inode` (nsfs inodes are 32-bit).
pub const NS_DIR: u64 = 1 << 40;
/// `ns/<inode>/kmsg` is `NS_FILE + inode`.
pub const NS_FILE: u64 = 2 << 40;
const NS_MASK: u64 = (1 << 40) - 1;

const TTL: Duration = Duration::ZERO;

/// Budget of the warning for openers refused a new ring: 10 per minute.
static REFUSED_LOG_BUDGET: ratelimit::LogBudget =
    ratelimit::LogBudget::new(Duration::from_secs(60), 10);

/// Daemon-wide settings of the filesystem.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// `--devkmsg`.
    pub devkmsg: DevkmsgMode,
    /// `--restrict`.
    pub restrict: Restrict,
    /// `--syslog-access`: who counts as privileged for a ring ([`policy::privileged`]).
    pub syslog_access: policy::SyslogAccess,
    /// Pin event-loop thread `fuse-i` to the i-th allowed CPU.
    pub pin_threads: bool,
    /// Number of event-loop threads.
    pub threads: usize,
    /// The host source path (for the stats file).
    pub source: std::path::PathBuf,
}

/// Handles of `stats` and `metrics` have this bit set; [`OpenTable`] handles never do.
const STATS_FH: u64 = 1 << 63;

thread_local! {
    static PINNED: Cell<bool> = const { Cell::new(false) };
}

enum Open {
    Kmsg(Arc<RingFront>),
    Stats(Arc<Vec<u8>>),
    ProcKmsg(Arc<ProcFront>),
}

/// What this daemon took over at start-up besides rings (for the stats file).
#[derive(Debug, Default, Clone, Copy)]
pub struct AdoptionCounts {
    /// `/dev/fuse` fds.
    pub fuse_fds: u64,
    /// Open files.
    pub open_files: u64,
    /// Open files lost.
    pub lost_open_files: u64,
    /// seccomp listeners.
    pub listeners: u64,
}

/// What [`Shared::adopt_open_files`] took over.
#[derive(Debug, Default)]
pub struct AdoptedFiles {
    /// Open files served again.
    pub files: usize,
    /// Open files whose ring did not survive (freed).
    pub lost: usize,
    /// Poll handles to wake.
    pub pollers: Vec<u64>,
}

/// State shared by the filesystem, the daemon and the append listeners.
pub struct Shared {
    cfg: FsConfig,
    host: HostIdentity,
    registry: Arc<Registry>,
    host_stats: Arc<HostStats>,
    interrupts: Arc<Interrupts>,
    shutting_down: AtomicBool,
    fronts: Mutex<HashMap<NsKey, Arc<RingFront>>>,
    proc_fronts: Mutex<HashMap<NsKey, Arc<ProcFront>>>,
    opens: RwLock<HashMap<u64, Open>>,
    /// Every open `kmsg` and `proc-kmsg` file; its handles are the ones the kernel holds.
    table: Arc<OpenTable>,
    next_stats_fh: AtomicU64,
    cpus: Vec<usize>,
    started: SystemTime,
    notifier: std::sync::OnceLock<Notifier>,
    adoption: Mutex<AdoptionCounts>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("cfg", &self.cfg).finish()
    }
}

impl Shared {
    /// New filesystem state, its open files recorded in `table`.
    pub fn new(
        cfg: FsConfig,
        host: HostIdentity,
        registry: Arc<Registry>,
        host_stats: Arc<HostStats>,
        interrupts: Arc<Interrupts>,
        table: OpenTable,
    ) -> Arc<Self> {
        Arc::new(Shared {
            cfg,
            host,
            registry,
            host_stats,
            interrupts,
            shutting_down: AtomicBool::new(false),
            fronts: Mutex::new(HashMap::new()),
            proc_fronts: Mutex::new(HashMap::new()),
            opens: RwLock::new(HashMap::new()),
            table: Arc::new(table),
            next_stats_fh: AtomicU64::new(1),
            cpus: sys::cpu::allowed_cpus(),
            started: SystemTime::now(),
            notifier: std::sync::OnceLock::new(),
            adoption: Mutex::new(AdoptionCounts::default()),
        })
    }

    /// The session's notifier (set once the session runs).
    pub fn set_notifier(&self, n: Notifier) {
        let _ = self.notifier.set(n);
    }

    /// The interrupt table.
    pub fn interrupts(&self) -> &Arc<Interrupts> {
        &self.interrupts
    }

    /// Stop parking reads and answer every parked READ with EINTR.
    pub fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let (fronts, procs) = self.all_fronts();
        for f in fronts {
            f.interrupt_all();
        }
        for f in procs {
            f.interrupt_all();
        }
        // READs parked on fronts no longer in the map (a ring replaced after inode reuse).
        for (unique, owner) in self.interrupts.take_all() {
            owner.cancel(unique);
        }
    }

    /// Take over the open files a previous daemon left in the table (`open`, from
    /// [`OpenTable::adopt`]), before the adopted connection is served: each handle gets its
    /// ring (by keeper serial), its access, its cursor and a hold on the ring, as at its
    /// open. Handles whose ring is gone are freed (their READs get EBADF). Returns the poll
    /// handles to wake once the session runs ([`Shared::wake_pollers`]).
    pub fn adopt_open_files(&self, open: &[(u64, OpenEntry)]) -> AdoptedFiles {
        let mut out = AdoptedFiles::default();
        for &(fh, e) in open {
            let Some(slot) = self.registry.by_serial(e.ring_serial) else {
                self.table.remove(fh);
                out.lost += 1;
                continue;
            };
            self.registry.hold(&slot);
            match e.kind {
                FileKind::Kmsg => {
                    let front = self.front_for(&slot);
                    front.adopt(fh, &e);
                    self.opens.write().insert(fh, Open::Kmsg(front));
                }
                FileKind::ProcKmsg => {
                    let front = self.proc_front_for(&slot);
                    front.adopt();
                    self.opens.write().insert(fh, Open::ProcKmsg(front));
                }
            }
            out.files += 1;
            out.pollers.extend(e.poll_kh);
        }
        out
    }

    /// Every front, `kmsg` and `proc-kmsg` (copies of the maps' values, so no map lock is held
    /// while they are used).
    fn all_fronts(&self) -> (Vec<Arc<RingFront>>, Vec<Arc<ProcFront>>) {
        let fronts = self.fronts.lock().values().cloned().collect();
        let procs = self.proc_fronts.lock().values().cloned().collect();
        (fronts, procs)
    }

    /// Parked READs (of `kmsg` and `proc-kmsg` files) not answered yet.
    pub fn parked_reads(&self) -> usize {
        let (fronts, procs) = self.all_fronts();
        let k: usize = fronts.iter().map(|f| f.parked()).sum();
        let p: usize = procs.iter().map(|f| f.parked()).sum();
        k + p
    }

    /// The drain of a hand-over without resend (`wire::Session::drain_over`): answer the
    /// parked READs as records arrive, until none is left or `limit` passed. Records are now
    /// appended by the successor, in the same shared rings, so no append listener fires here;
    /// the rings are looked at every 10 ms instead. Returns how many were still parked.
    pub fn drain_parked(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let (fronts, procs) = self.all_fronts();
            for f in fronts {
                f.on_append();
            }
            for f in procs {
                f.on_append();
            }
            let left = self.parked_reads();
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Make the kernel poll every adopted file again that was polled before: its waiters
    /// (epoll in journald, the kubelet) re-poll, which registers them with this daemon.
    pub fn wake_pollers(&self, pollers: &[u64]) {
        let Some(n) = self.notifier.get() else { return };
        for &kh in pollers {
            if let Err(e) = n.poll_wakeup(kh) {
                log::debug!("waking adopted poll handle {kh}: {e}");
            }
        }
    }

    /// Record what the daemon took over at start-up (the stats file's `restart` object).
    pub fn set_adoption(&self, counts: AdoptionCounts) {
        *self.adoption.lock() = counts;
    }

    /// Drop the FUSE state of reclaimed rings.
    pub fn forget_rings(&self, keys: &[NsKey]) {
        let mut fronts = self.fronts.lock();
        let mut procs = self.proc_fronts.lock();
        for k in keys {
            fronts.remove(k);
            procs.remove(k);
        }
    }

    /// The stats file content.
    pub fn stats_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(&self.stats_report()).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Everything the stats and metrics files show, typed.
    pub fn stats_report(&self) -> StatsReport {
        StatsReport {
            version: env!("CARGO_PKG_VERSION"),
            key: self.host.key.name(),
            devkmsg: match self.cfg.devkmsg {
                DevkmsgMode::On => "on",
                DevkmsgMode::Off => "off",
                DevkmsgMode::Ratelimit => "ratelimit",
            },
            restrict: match self.cfg.restrict {
                Restrict::Root => "root",
                Restrict::None => "none",
            },
            threads: self.cfg.threads,
            host: self.host_stats.report(&self.cfg.source),
            rings: self
                .registry
                .list()
                .iter()
                .map(|s| s.stats())
                .chain(self.registry.retired().iter().map(|s| RingReport {
                    retired: true,
                    ..s.stats()
                }))
                .collect(),
            named_rings: self
                .registry
                .named_rings()
                .into_iter()
                .map(|(name, r)| {
                    let s = r.stats();
                    NamedRingReport {
                        name,
                        records: s.records,
                        bytes: s.bytes,
                        appended: s.appended,
                        overruns: s.overwritten,
                    }
                })
                .collect(),
            open_files: self.opens.read().len(),
            interrupts: InterruptReport {
                delivered: self.interrupts.delivered.load(Ordering::Relaxed),
                unmatched: self.interrupts.unmatched.load(Ordering::Relaxed),
            },
            delivery: DeliveryReport {
                stale: self.registry.stale_delivered(),
                refused_max_rings: self.registry.delivery_refused(),
            },
            restart: self.registry.restart_counts().map(
                |(restarts, adopted_rings, refused_rings, unkept_rings)| {
                    let a = *self.adoption.lock();
                    RestartReport {
                        restarts,
                        adopted_rings,
                        refused_rings,
                        unkept_rings,
                        adopted_fuse_fds: a.fuse_fds,
                        adopted_open_files: a.open_files,
                        lost_open_files: a.lost_open_files,
                        adopted_listeners: a.listeners,
                    }
                },
            ),
            attribution: self.host_stats.attribution(),
        }
    }

    /// The metrics file content: [`Self::stats_report`] rendered by [`crate::frontends::metrics::render`].
    pub fn metrics_text(&self) -> Vec<u8> {
        crate::frontends::metrics::render(&self.stats_report()).into_bytes()
    }

    fn front_for(&self, slot: &Arc<RingSlot>) -> Arc<RingFront> {
        let mut fronts = self.fronts.lock();
        if let Some(f) = fronts.get(&slot.key) {
            if Arc::ptr_eq(f.slot(), slot) {
                return Arc::clone(f);
            }
        }
        let f = RingFront::attach(slot, &self.interrupts, &self.table);
        fronts.insert(slot.key, Arc::clone(&f));
        f
    }

    fn proc_front_for(&self, slot: &Arc<RingSlot>) -> Arc<ProcFront> {
        let mut fronts = self.proc_fronts.lock();
        if let Some(f) = fronts.get(&slot.key) {
            if Arc::ptr_eq(f.slot(), slot) {
                return Arc::clone(f);
            }
        }
        let f = ProcFront::attach(slot, &self.interrupts, &self.table);
        fronts.insert(slot.key, Arc::clone(&f));
        f
    }

    /// The ring the opener's `kmsg` (and `proc-kmsg`) leads to, with one more holder.
    /// The opener's ring, with one more holder. ENOSPC when it does not exist and may not be
    /// created ([`crate::ring::registry::RingLimits`]).
    fn resolve_slot(&self, op: &Opener, proc_: &sys::proc::Proc) -> Result<Arc<RingSlot>, Errno> {
        match policy::resolve(&self.host, op) {
            Target::Host => {
                let s = Arc::clone(self.registry.host());
                self.registry.hold(&s);
                Ok(s)
            }
            Target::Ns(key) => {
                let owner = proc_.ns_owner_userns(key.kind).ok();
                self.registry
                    .acquire_for_uid(key, owner, op.ns_id(key.kind), op.uid)
                    .map_err(|e| {
                        if REFUSED_LOG_BUDGET.admit(Instant::now()).is_some() {
                            log::warn!("no new ring for pid {} ({key}): {e}", op.pid);
                        }
                        Errno::ENOSPC
                    })
            }
        }
    }

    /// `open()` of `proc-kmsg` (C2): read-only, and only for root of the namespace owning the
    /// ring (the FUSE header carries no capabilities; uid 0 in the owning user namespace
    /// stands for CAP_SYSLOG there) or host root.
    fn open_proc_kmsg(&self, req: &Request, flags: OpenFlags) -> Result<u64, Errno> {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return Err(Errno::EACCES);
        }
        let (op, proc_) = self.opener(req).ok_or(Errno::EACCES)?;
        // Mode 0400 root: DAC refuses everyone else before the syslog check (C1).
        if op.uid_in_ns != Some(0) {
            return Err(Errno::EACCES);
        }
        let slot = self.resolve_slot(&op, &proc_)?;
        let privileged = policy::privileged(&self.host, self.cfg.syslog_access, &op, &slot);
        let policy = crate::syslog::Policy {
            privileged,
            restrict: true,
        };
        if let Err(e) = proc_kmsg::open(&slot.ring, policy) {
            self.registry.release(&slot);
            log::debug!(
                "open of proc-kmsg of ring {} by pid {} uid {} denied",
                slot.key,
                op.pid,
                op.uid
            );
            return Err(Errno::from_i32(e));
        }
        let front = self.proc_front_for(&slot);
        let fh = front.open().inspect_err(|_| self.registry.release(&slot))?;
        self.opens.write().insert(fh, Open::ProcKmsg(front));
        log::debug!(
            "pid {} uid {} opened proc-kmsg of ring {} as fh {fh}",
            op.pid,
            op.uid,
            slot.key
        );
        Ok(fh)
    }

    fn attr(&self, ino: u64, size: u64) -> FileAttr {
        let (kind, perm, nlink) = match ino {
            INO_ROOT | INO_NS => (FileType::Directory, 0o555, 2),
            INO_STATS | INO_METRICS => (FileType::RegularFile, 0o444, 1),
            INO_PROC_KMSG => (FileType::RegularFile, 0o400, 1),
            i if i & !NS_MASK == NS_DIR => (FileType::Directory, 0o555, 2),
            _ => (FileType::RegularFile, 0o644, 1),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn opener(&self, req: &Request) -> Option<(Opener, sys::proc::Proc)> {
        match Opener::inspect(req.pid(), req.uid()) {
            Ok(o) => Some(o),
            Err(e) => {
                log::debug!("cannot inspect caller pid {}: {e}", req.pid());
                None
            }
        }
    }

    /// The ring of `ns/<inode>` if `req`'s caller may see it.
    fn visible_ns(&self, req: &Request, inode: u64) -> Option<Arc<RingSlot>> {
        let slot = self.registry.by_inode(inode)?;
        let (op, _) = self.opener(req)?;
        policy::access(
            &self.host,
            self.cfg.restrict,
            self.cfg.syslog_access,
            &op,
            &slot,
        )
        .visible
        .then_some(slot)
    }

    fn visible_rings(&self, req: &Request) -> Vec<Arc<RingSlot>> {
        let Some((op, _)) = self.opener(req) else {
            return Vec::new();
        };
        self.registry
            .list()
            .into_iter()
            .filter(|s| {
                policy::access(
                    &self.host,
                    self.cfg.restrict,
                    self.cfg.syslog_access,
                    &op,
                    s,
                )
                .visible
            })
            .collect()
    }

    fn maybe_pin(&self) {
        if !self.cfg.pin_threads || PINNED.with(Cell::get) {
            return;
        }
        PINNED.with(|p| p.set(true));
        let cur = std::thread::current();
        let Some(i) = cur
            .name()
            .and_then(|n| n.strip_prefix(super::THREAD_NAME)?.strip_prefix('-'))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return;
        };
        let cpu = self.cpus[i % self.cpus.len()];
        match sys::cpu::pin_current_thread(cpu) {
            Ok(()) => log::info!(
                "event-loop thread {}-{i} pinned to CPU {cpu}",
                super::THREAD_NAME
            ),
            Err(e) => log::warn!("{e}"),
        }
    }

    fn open_kmsg(&self, req: &Request, ino: u64, flags: OpenFlags) -> Result<u64, Errno> {
        // printk_devkmsg=off wins over everything (A1.1).
        if self.cfg.devkmsg == DevkmsgMode::Off {
            return Err(Errno::EPERM);
        }
        let acc = flags.acc_mode();
        let want_read = acc != OpenAccMode::O_WRONLY;
        let want_write = acc != OpenAccMode::O_RDONLY;
        let (op, proc_) = self.opener(req).ok_or(Errno::EACCES)?;
        let slot = if ino == INO_KMSG {
            self.resolve_slot(&op, &proc_)?
        } else {
            let s = self.registry.by_inode(ino & NS_MASK).ok_or(Errno::ENOENT)?;
            self.registry.hold(&s);
            s
        };
        let acc = policy::access(
            &self.host,
            self.cfg.restrict,
            self.cfg.syslog_access,
            &op,
            &slot,
        );
        let denied = if ino == INO_KMSG {
            // Like the device: the read check is a syslog permission (EPERM, A1.3), the write
            // check is DAC on a 0644 root file (EACCES, A1.2).
            if want_read && !acc.read {
                Some(Errno::EPERM)
            } else if want_write && !acc.write {
                Some(Errno::EACCES)
            } else {
                None
            }
        } else if !acc.visible || (want_read && !acc.read) || (want_write && !acc.write) {
            Some(Errno::EACCES)
        } else {
            None
        };
        if let Some(e) = denied {
            self.registry.release(&slot);
            log::debug!(
                "open of ring {} by pid {} uid {} denied: {e:?}",
                slot.key,
                op.pid,
                op.uid
            );
            return Err(e);
        }
        let front = self.front_for(&slot);
        let fh = front
            .open(want_read, want_write)
            .inspect_err(|_| self.registry.release(&slot))?;
        self.opens.write().insert(fh, Open::Kmsg(front));
        log::debug!(
            "pid {} uid {} opened ring {} as fh {fh}",
            op.pid,
            op.uid,
            slot.key
        );
        Ok(fh)
    }

    fn kmsg_front(&self, fh: u64) -> Option<Arc<RingFront>> {
        match self.opens.read().get(&fh) {
            Some(Open::Kmsg(f)) => Some(Arc::clone(f)),
            _ => None,
        }
    }

    fn write_kmsg(
        &self,
        req: &Request,
        front: &RingFront,
        fh: u64,
        data: &[u8],
    ) -> Result<(), Errno> {
        if front.write(fh, data, self.cfg.devkmsg)? == WriteOutcome::Suppressed {
            // The kernel names the releasing task; FUSE_RELEASE carries no reliable pid, so
            // remember the comm of the writer whose output was suppressed (E8).
            let comm = sys::proc::Proc::open(req.pid())
                .and_then(|p| p.comm())
                .unwrap_or_else(|_| "?".into());
            front.note_suppressed_writer(fh, comm);
        }
        Ok(())
    }

    fn release_kmsg(&self, front: &RingFront, fh: u64) {
        if front.close(fh) {
            self.registry.release(front.slot());
        }
    }
}

/// The filesystem served by the FUSE session.
#[derive(Debug)]
pub struct KmsgFs(pub Arc<Shared>);

fn is_kmsg_ino(ino: u64) -> bool {
    ino == INO_KMSG || ino & !NS_MASK == NS_FILE
}

/// A file whose bytes come from a ring: `kmsg`, `ns/<inode>/kmsg`, `proc-kmsg`.
fn is_ring_ino(ino: u64) -> bool {
    is_kmsg_ino(ino) || ino == INO_PROC_KMSG
}

/// The answer to a READ that the page cache sends for a ring file: always EINVAL, at once.
///
/// Every ring file of the mount shares one inode per path, and so one page cache, whoever
/// opened it. FOPEN_DIRECT_IO keeps read(2) off that cache, but the kernel still fills it for
/// splice and sendfile (`fuse_splice_read` is `filemap_splice_read`), for mmap(MAP_PRIVATE)
/// faults, and for readahead and fadvise(WILLNEED), up to the inode's cached size, which any
/// opener can raise (a pwrite at a large offset, SEEK_END). A page filled from one opener's ring
/// would be served to every other opener without asking the daemon (a cross-ring read), and a
/// page READ that the daemon parked (nothing new in the ring) would keep its folio locked,
/// freezing every stat and open of the file in D state (docs/security.md, T1 and T2).
///
/// The kernel tells the two kinds of READ apart for us: a read(2) on a direct-I/O file goes
/// through `fuse_direct_io`, which always sets FUSE_READ_LOCKOWNER (the caller's files
/// table); page-cache reads (`fuse_do_readfolio`, `fuse_readahead`) never do. So page-cache
/// READs are refused: no page of a ring file is ever filled, and none is ever left locked.
/// EINVAL is what sendfile and splice from the real `/dev/kmsg` give (it has no
/// `splice_read`), so busybox `cat` falls back to read(2) as it does on the device; an mmap
/// fault gets SIGBUS (the device refuses mmap with ENODEV).
fn refuse_page_cache_read() -> Errno {
    Errno::EINVAL
}

/// The size reported for a file when no lseek(SEEK_END) asks: one page for a ring file.
///
/// splice and sendfile stop before asking the filesystem when the file position is at or past
/// the cached size, and return 0, which busybox `cat` takes for the end of the file. With one
/// page, a sendfile from a fresh open reaches [`refuse_page_cache_read`] and fails with EINVAL
/// as on the device, and `cat` falls back to read(2). Any larger size is harmless (page-cache
/// READs are refused whatever the size), but `stat` users that size a buffer by it (Python's
/// `read()`) should not be told more.
fn resting_size(ino: u64) -> u64 {
    if is_ring_ino(ino) {
        4096
    } else {
        0
    }
}

impl Filesystem for KmsgFs {
    fn init(&mut self, _req: &Request, _config: &mut KernelConfig) -> io::Result<()> {
        // `echo … > kmsg` opens with O_TRUNC. Atomic O_TRUNC is deliberately not asked for:
        // with it the kernel sets the one shared inode's cached size to 0 after OPEN, and every
        // other opener's sendfile/splice then sees end of file (returns 0) until the next
        // GETATTR, so busybox `cat` in another container prints nothing (security.md T1).
        // Without it O_TRUNC arrives as SETATTR, whose reply keeps the resting size.
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let s = &self.0;
        let name = name.to_string_lossy();
        let ino = match (parent.0, name.as_ref()) {
            (INO_ROOT, "kmsg") => Some(INO_KMSG),
            (INO_ROOT, "stats") => Some(INO_STATS),
            (INO_ROOT, "metrics") => Some(INO_METRICS),
            (INO_ROOT, "proc-kmsg") => Some(INO_PROC_KMSG),
            (INO_ROOT, "ns") => Some(INO_NS),
            (INO_NS, n) => n
                .parse::<u64>()
                .ok()
                .filter(|&i| i <= NS_MASK)
                .and_then(|i| s.visible_ns(req, i))
                .map(|slot| NS_DIR | slot.key.inode),
            (p, "kmsg") if p & !NS_MASK == NS_DIR => s
                .visible_ns(req, p & NS_MASK)
                .map(|slot| NS_FILE | slot.key.inode),
            _ => None,
        };
        match ino {
            Some(i) => reply.entry(&TTL, &s.attr(i, resting_size(i)), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = &self.0;
        let mut size = resting_size(ino.0);
        if let Some(FileHandle(fh)) = fh {
            match s.opens.read().get(&fh) {
                // A GETATTR carrying a kmsg handle is lseek(SEEK_END) (fuse-notes §13, §15):
                // move that handle after the newest record (A4.2).
                Some(Open::Kmsg(front)) if is_kmsg_ino(ino.0) => {
                    if let Some(end) = front.seek_end(fh) {
                        size = end;
                    }
                }
                Some(Open::Stats(b)) => size = b.len() as u64,
                _ => {}
            }
        }
        reply.attr(&TTL, &s.attr(ino.0, size));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // O_TRUNC from `>` (atomic O_TRUNC is off, see `init`): a no-op, like truncating the
        // device; the reply's size becomes the inode's cached size.
        reply.attr(&TTL, &self.0.attr(ino.0, resting_size(ino.0)));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let s = &self.0;
        s.maybe_pin();
        let ino = ino.0;
        if is_kmsg_ino(ino) {
            match s.open_kmsg(req, ino, flags) {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
                Err(e) => reply.error(e),
            }
        } else if ino == INO_PROC_KMSG {
            match s.open_proc_kmsg(req, flags) {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
                Err(e) => reply.error(e),
            }
        } else if ino == INO_STATS || ino == INO_METRICS {
            if flags.acc_mode() != OpenAccMode::O_RDONLY {
                return reply.error(Errno::EACCES);
            }
            let host_root = s
                .opener(req)
                .is_some_and(|(op, _)| policy::is_host_root(&s.host, &op));
            if !host_root {
                return reply.error(Errno::EACCES);
            }
            let fh = STATS_FH | s.next_stats_fh.fetch_add(1, Ordering::Relaxed);
            let snap = Arc::new(if ino == INO_METRICS {
                s.metrics_text()
            } else {
                s.stats_json()
            });
            s.opens.write().insert(fh, Open::Stats(snap));
            reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
        } else {
            reply.error(Errno::EISDIR);
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = &self.0;
        s.maybe_pin();
        if lock_owner.is_none() && is_ring_ino(ino.0) {
            // Not a read(2): the page cache asks for a page (splice, sendfile, mmap faults,
            // readahead, fadvise). See `refuse_page_cache_read`.
            return reply.error(refuse_page_cache_read());
        }
        let open = match s.opens.read().get(&fh.0) {
            Some(Open::Kmsg(f)) => Ok(Arc::clone(f)),
            Some(Open::Stats(b)) => Err(Some(Arc::clone(b))),
            Some(Open::ProcKmsg(f)) => {
                let f = Arc::clone(f);
                let args = ReadArgs {
                    unique: req.unique().0,
                    fh: fh.0,
                    offset,
                    size,
                    nonblock: flags.0 & libc::O_NONBLOCK != 0,
                };
                return f.read(args, reply, &s.shutting_down);
            }
            None => Err(None),
        };
        match open {
            Ok(front) => front.read(
                ReadArgs {
                    unique: req.unique().0,
                    fh: fh.0,
                    offset,
                    size,
                    nonblock: flags.0 & libc::O_NONBLOCK != 0,
                },
                reply,
                &s.shutting_down,
            ),
            Err(Some(b)) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
                let end = start.saturating_add(size as usize).min(b.len());
                reply.data(&b[start..end]);
            }
            Err(None) => reply.error(Errno::EBADF),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let s = &self.0;
        s.maybe_pin();
        let Some(front) = s.kmsg_front(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        // Offsets are ignored: every write is one record (A6.4); an accepted write always
        // returns its full length (A6.9).
        match s.write_kmsg(req, &front, fh.0, data) {
            Ok(()) => reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX)),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let s = &self.0;
        let open = s.opens.write().remove(&fh.0);
        match open {
            Some(Open::Kmsg(front)) => s.release_kmsg(&front, fh.0),
            Some(Open::ProcKmsg(front)) => {
                front.close(fh.0);
                s.registry.release(front.slot());
            }
            _ => {}
        }
        reply.ok();
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = &self.0;
        let ino = ino.0;
        let mut entries: Vec<(u64, FileType, String)> = vec![
            (ino, FileType::Directory, ".".into()),
            (INO_ROOT, FileType::Directory, "..".into()),
        ];
        match ino {
            INO_ROOT => {
                entries.push((INO_KMSG, FileType::RegularFile, "kmsg".into()));
                entries.push((INO_STATS, FileType::RegularFile, "stats".into()));
                entries.push((INO_METRICS, FileType::RegularFile, "metrics".into()));
                entries.push((INO_PROC_KMSG, FileType::RegularFile, "proc-kmsg".into()));
                entries.push((INO_NS, FileType::Directory, "ns".into()));
            }
            INO_NS => {
                for slot in s.visible_rings(req) {
                    entries.push((
                        NS_DIR | slot.key.inode,
                        FileType::Directory,
                        slot.key.inode.to_string(),
                    ));
                }
            }
            i if i & !NS_MASK == NS_DIR => {
                if s.visible_ns(req, i & NS_MASK).is_none() {
                    return reply.error(Errno::ENOENT);
                }
                entries[1].0 = INO_NS;
                entries.push((
                    NS_FILE | (i & NS_MASK),
                    FileType::RegularFile,
                    "kmsg".into(),
                ));
            }
            _ => return reply.error(Errno::ENOTDIR),
        }
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(skip) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // ENOSYS makes the kernel stop asking (no_getxattr), saving a round trip per write.
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The policy is applied at open(); access(2) reports what DAC on 0644 would say only
        // approximately, as for any allow_other FUSE file without default_permissions.
        reply.ok();
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        ph: PollNotifier,
        _events: PollEvents,
        flags: PollFlags,
        reply: ReplyPoll,
    ) {
        let s = &self.0;
        s.maybe_pin();
        let proc_front = match s.opens.read().get(&fh.0) {
            Some(Open::ProcKmsg(f)) => Some(Arc::clone(f)),
            _ => None,
        };
        if let Some(front) = proc_front {
            let arm = flags.contains(PollFlags::FUSE_POLL_SCHEDULE_NOTIFY);
            let mask = if front.poll(fh.0, arm.then_some(ph)) {
                PollEvents::POLLIN | PollEvents::POLLRDNORM
            } else {
                PollEvents::empty()
            };
            return reply.poll(mask);
        }
        let Some(front) = s.kmsg_front(fh.0) else {
            // The stats file: always readable.
            return reply.poll(PollEvents::POLLIN | PollEvents::POLLRDNORM);
        };
        let arm = flags.contains(PollFlags::FUSE_POLL_SCHEDULE_NOTIFY);
        let mask = front.poll(fh.0, arm.then_some(ph));
        reply.poll(PollEvents::from_bits_truncate(mask));
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let s = &self.0;
        let Some(front) = s.kmsg_front(fh.0) else {
            return reply.error(Errno::EINVAL);
        };
        // Any non-zero offset gives ESPIPE (A4.4); SEEK_HOLE gives EINVAL (A4.5).
        if offset != 0 {
            return reply.error(Errno::ESPIPE);
        }
        if whence != libc::SEEK_DATA {
            return reply.error(Errno::EINVAL);
        }
        let pos = match front.seek_data(fh.0) {
            Ok(pos) => pos,
            Err(e) => return reply.error(e),
        };
        reply.offset(i64::try_from(pos).unwrap_or(i64::MAX));
    }

    // Everything below is reachable by any client and answered without a log line, which a
    // container could otherwise turn into a log flood (T8).

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        // `/dev/kmsg` and `/proc/kmsg` have no ioctl: ENOTTY, so isatty() says "no" as there.
        reply.error(Errno::ENOTTY);
    }

    fn interrupt(&self, unique: u64) {
        // FUSE_INTERRUPT gets no reply: the interrupted READ, if parked, is answered EINTR.
        self.0.interrupts.interrupt(unique);
    }

    fn unsupported(&self, _req: &Request, opcode: u32) -> Errno {
        use super::wire::abi;
        match opcode {
            // Nothing can be created, removed or renamed here: EACCES, as DAC on a read-only
            // root-owned directory would say.
            abi::FUSE_MKNOD
            | abi::FUSE_MKDIR
            | abi::FUSE_CREATE
            | abi::FUSE_UNLINK
            | abi::FUSE_RMDIR
            | abi::FUSE_SYMLINK
            | abi::FUSE_RENAME
            | abi::FUSE_RENAME2
            | abi::FUSE_LINK
            | abi::FUSE_TMPFILE => Errno::EACCES,
            abi::FUSE_READLINK => Errno::EINVAL,
            // The device has no fsync: EINVAL.
            abi::FUSE_FSYNC => Errno::EINVAL,
            abi::FUSE_FALLOCATE => Errno::EOPNOTSUPP,
            // ENOSYS makes the kernel stop asking (no_setxattr, no_lock: POSIX locks stay local
            // as for the device, no_copy_file_range: the fallback is splice, which the
            // page-cache rule refuses, …).
            _ => Errno::ENOSYS,
        }
    }
}
