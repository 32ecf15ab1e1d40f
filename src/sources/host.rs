//! Ingestion of the host kernel log into the host ring.
//!
//! A dedicated thread reads the source from its oldest record and appends every record to the
//! host ring (the ring numbers records itself; the host's seq is only used to detect loss).
//!
//! * **Character device** (`/dev/kmsg`): one record per `read(2)` of 8 KiB, blocking, as the
//!   kernel delivers them (A3.7). When the host ring wraps faster than we read, `read` fails with
//!   EPIPE and the next record's seq jumps (A3.3, A9.2): the jump is counted in
//!   [`HostStats::records_lost`] and logged, so the gap is visible in the stats file and the
//!   daemon log.
//! * **FIFO or regular file** (tests, replays): records are read line-wise; a line starting with
//!   a space continues the previous record (its dictionary, A2.8). A record is complete when the
//!   next header line starts, or when a read ends at a line boundary and no more input is
//!   immediately available. A seq jump is counted as lost records exactly as for the device.
//!   At EOF a FIFO is reopened (waiting for the next writer); a regular file ends ingestion.
//!
//! **Attribution** (docs/attribution.md §5). With a [`Routing`], every parsed record is also
//! handed to a [`Attribution`] (BPF source + router), and what the router decides is delivered
//! to the owners' namespace rings ([`Delivery`]). The host ring is fed directly, without
//! waiting for the router. For the device, the thread polls the (non-blocking) kmsg fd together
//! with the BPF ring buffer's epoll fd, waking at the router's next deadline at the latest.
//! Sources that are not a character device have no relation to real printk events (their seqs
//! are not the kernel's), so the router runs in no-BPF mode for them, and the log says so.
//! The attribution statistics are published into [`HostStats`] for the stats file.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use thiserror::Error;

use crate::attribution::deliver::Delivery;
use crate::attribution::pipeline::{Attribution, AttributionStats};
use crate::attribution::router::RouterConfig;
use crate::record;
use crate::ring::Ring;
use crate::sources::bpf::BpfConfig;
use crate::sys::eventfd::EventFd;
use crate::sys::fd;

/// How often the attribution statistics are republished for the stats file.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// Longest poll(2) sleep of the device reader when attributing.
const MAX_SLEEP: Duration = Duration::from_millis(200);
/// Records read from the device before routing and delivering a batch.
const BATCH: usize = 512;

/// Errors of the host source.
#[derive(Debug, Error)]
pub enum SourceError {
    /// The source could not be opened or inspected.
    #[error("`{call}({path})` failed: {source}")]
    Io {
        /// The failing call.
        call: &'static str,
        /// The source path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Global ingestion counters (stats file, `host` object).
#[derive(Debug, Default)]
pub struct HostStats {
    /// Host records appended to the host ring.
    pub records_read: AtomicU64,
    /// Host records lost before we could read them (EPIPE / seq gaps).
    pub records_lost: AtomicU64,
    /// EPIPE results from the source.
    pub overruns: AtomicU64,
    /// Records that did not parse and were skipped.
    pub parse_errors: AtomicU64,
    /// Records skipped because the adopted host ring already held them (after a restart).
    pub records_resumed: AtomicU64,
    /// The latest attribution statistics (stats file, `attribution` object).
    attribution: Mutex<Option<AttributionStats>>,
}

/// A snapshot of [`HostStats`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HostReport {
    /// The source path.
    pub source: String,
    /// Host records read.
    pub records_read: u64,
    /// Host records lost.
    pub records_lost: u64,
    /// EPIPE results.
    pub overruns: u64,
    /// Unparsable records.
    pub parse_errors: u64,
    /// Records an adopted host ring already held.
    pub records_resumed: u64,
}

impl HostStats {
    /// A snapshot, labelled with `source`.
    pub fn report(&self, source: &Path) -> HostReport {
        HostReport {
            source: source.display().to_string(),
            records_read: self.records_read.load(Ordering::Relaxed),
            records_lost: self.records_lost.load(Ordering::Relaxed),
            overruns: self.overruns.load(Ordering::Relaxed),
            parse_errors: self.parse_errors.load(Ordering::Relaxed),
            records_resumed: self.records_resumed.load(Ordering::Relaxed),
        }
    }

    /// The latest attribution statistics (`None` before ingestion started routing).
    pub fn attribution(&self) -> Option<AttributionStats> {
        self.attribution.lock().clone()
    }

    fn publish_attribution(&self, attr: &Attribution) {
        *self.attribution.lock() = Some(attr.stats());
    }
}

/// What the ingestion thread needs to attribute host records to namespaces.
#[derive(Debug)]
pub struct Routing {
    /// BPF settings (`enabled: false` for `--no-bpf`).
    pub bpf: BpfConfig,
    /// Router settings.
    pub router: RouterConfig,
    /// Where routed records go.
    pub delivery: Delivery,
    /// What a previous daemon's BPF source left with the holder.
    pub kept_bpf: crate::sources::bpf::KeptBpf,
}

/// What [`spawn`] started.
#[derive(Debug)]
pub struct Started {
    /// The ingestion thread.
    thread: std::thread::JoinHandle<()>,
    /// Wakes the reader for [`Started::hand_off`].
    stop: Arc<EventFd>,
    /// The fds a holder must keep for the BPF source to survive the daemon
    /// ([`crate::sources::bpf::BpfSource::kept_fds`]; empty without BPF).
    pub kept_bpf: Vec<(String, std::os::fd::OwnedFd)>,
}

/// Longest a hand-off waits for the records of events it already took ([`Sink::hand_off`]).
const HAND_OFF_READ_WAIT: Duration = Duration::from_millis(100);
/// Longest a hand-off waits for held records to be decided (the OOM hold is 2 s).
const HAND_OFF_ROUTE_WAIT: Duration = Duration::from_millis(2500);

impl Started {
    /// Stop ingestion for a successor (a planned upgrade) and wait for the thread: events stop
    /// being taken from the BPF ring buffer, records are read up to the newest event taken
    /// (and no further), everything read is routed, and the host ring's resume point is left
    /// where the successor continues. Every record is then ingested and attributed by exactly
    /// one of the two daemons. A FIFO or file source stops after the records it has read.
    pub fn hand_off(self) {
        self.stop.signal();
        let _ = self.thread.join();
    }
}

/// The ingestion thread's attribution state.
struct Attributing {
    attr: Attribution,
    delivery: Delivery,
    published: Instant,
}

/// Appends parsed host records to the ring and tracks host seq gaps.
/// Word of the host ring's [`Ring::meta`] holding the host seq after the newest record
/// ingested (0: none yet), so that a restarted daemon that adopted the ring resumes there.
pub const META_HOST_NEXT_SEQ: usize = 1;
/// Word of the host ring's meta set while one record is being appended: the ring seq it gets,
/// plus 1 (0: no append under way). With [`META_HOST_APPENDING_SEQ`] it tells a successor
/// whether a record being appended when the daemon died made it into the ring, so it is
/// neither lost nor appended twice ([`resume_seq`]).
pub const META_HOST_APPENDING: usize = 3;
/// Word of the host ring's meta: the host seq of the record being appended.
pub const META_HOST_APPENDING_SEQ: usize = 4;

/// The host seq a daemon that adopted `ring` resumes ingestion at (0: from the start): after
/// the newest record the ring holds, including one whose append was interrupted after it was
/// stored.
pub fn resume_seq(ring: &Ring) -> u64 {
    let m = ring.meta();
    let next = m[META_HOST_NEXT_SEQ].load(Ordering::Acquire);
    let appending = m[META_HOST_APPENDING].load(Ordering::Acquire);
    if appending != 0 && ring.next_seq() >= appending {
        next.max(m[META_HOST_APPENDING_SEQ].load(Ordering::Acquire) + 1)
    } else {
        next
    }
}

struct Sink {
    ring: Arc<Ring>,
    stats: Arc<HostStats>,
    expected: Option<u64>,
    routing: Option<Attributing>,
    /// Where ingestion resumes ([`resume_seq`], computed once at start).
    resume: u64,
    /// A record was read since the device was opened.
    started: bool,
}

impl Sink {
    fn record(&mut self, raw: &[u8]) {
        match record::parse_kmsg(raw) {
            Ok(rec) => {
                // A host ring adopted from a previous daemon already holds every record
                // before this host seq (docs/architecture.md "Restart"): skip them, and count
                // a gap from there.
                self.started = true;
                let resume = self.resume;
                if resume > 0 {
                    if rec.seq < resume {
                        self.stats.records_resumed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    self.expected.get_or_insert(resume);
                }
                if let Some(e) = self.expected {
                    if rec.seq > e {
                        let lost = rec.seq - e;
                        self.stats.records_lost.fetch_add(lost, Ordering::Relaxed);
                        log::warn!(
                            "host log: {lost} records lost before they could be read (host seq {e}..{})",
                            rec.seq
                        );
                    }
                }
                self.expected = Some(rec.seq + 1);
                // The marker first, the append, then the resume point, then the marker off: a
                // crash anywhere in between lets `resume_seq` tell whether the record is in.
                let meta = self.ring.meta();
                meta[META_HOST_APPENDING_SEQ].store(rec.seq, Ordering::Release);
                meta[META_HOST_APPENDING].store(self.ring.next_seq() + 1, Ordering::Release);
                self.ring.append(&rec.as_ref());
                meta[META_HOST_NEXT_SEQ].store(rec.seq + 1, Ordering::Release);
                meta[META_HOST_APPENDING].store(0, Ordering::Release);
                self.resume = rec.seq + 1;
                self.stats.records_read.fetch_add(1, Ordering::Relaxed);
                if let Some(a) = &mut self.routing {
                    a.attr.on_host_record(rec, Instant::now());
                }
            }
            Err(e) => {
                self.stats.parse_errors.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "host log: skipping unparsable record ({e}): {:?}",
                    String::from_utf8_lossy(&raw[..raw.len().min(200)])
                );
            }
        }
    }
}

impl Sink {
    /// The device reader's part of [`Started::hand_off`].
    fn hand_off(&mut self, path: &Path, f: &mut File, buf: &mut [u8]) {
        let limit = self.routing.as_mut().and_then(|a| a.attr.freeze());
        if let Some(last) = limit {
            let deadline = Instant::now() + HAND_OFF_READ_WAIT;
            while self.expected.is_none_or(|e| e <= last) {
                match f.read(buf) {
                    Ok(0) => break,
                    Ok(len) => match record::parse_kmsg(&buf[..len]) {
                        // Its event is still in the ring buffer: the successor reads both
                        // (the resume point stays before it).
                        Ok(rec) if rec.seq > last => break,
                        _ => self.record(&buf[..len]),
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() >= deadline {
                            log::warn!(
                                "host source {}: hand-off: the records up to host seq {last} \
                                 did not appear; the successor attributes them without events",
                                path.display()
                            );
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        let deadline = Instant::now() + HAND_OFF_ROUTE_WAIT;
        loop {
            self.route();
            let Some(a) = &self.routing else { break };
            let Some(next) = a.attr.router().next_deadline() else {
                break;
            };
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep(
                next.saturating_duration_since(now)
                    .clamp(Duration::from_millis(1), deadline - now),
            );
        }
        log::info!(
            "host source {}: handed off after host seq {}",
            path.display(),
            self.expected.map_or(0, |e| e.saturating_sub(1))
        );
    }

    /// Route what the router has decided and deliver it to the namespace rings.
    fn route(&mut self) {
        let Some(a) = &mut self.routing else { return };
        let now = Instant::now();
        for r in a.attr.poll(now) {
            a.delivery.deliver(&r);
        }
        if now.duration_since(a.published) >= PUBLISH_EVERY {
            self.stats.publish_attribution(&a.attr);
            a.published = now;
        }
    }

    /// How long the device reader may sleep in poll(2): until the router's next deadline,
    /// at most [`MAX_SLEEP`]; forever without attribution.
    fn poll_timeout_ms(&self) -> libc::c_int {
        let Some(a) = &self.routing else { return -1 };
        let now = Instant::now();
        let mut sleep = MAX_SLEEP;
        if let Some(d) = a.attr.next_deadline(now) {
            sleep = sleep.min(d.saturating_duration_since(now));
        }
        // Round up, so a deadline 0.4 ms away does not become a busy loop.
        libc::c_int::try_from(sleep.as_micros().div_ceil(1000)).unwrap_or(200)
    }
}

/// Nice value of the thread that reads the host `/dev/kmsg`. The kernel's ring holds only
/// `log_buf_len` bytes (about 1,500 records by default): in a burst of printk the reader must
/// keep up or records are overwritten before they are read and cannot be attributed. Running it
/// ahead of ordinary work (nice 0) costs nothing when the log is quiet, as the thread sleeps.
const HOST_READER_NICE: i32 = -10;

fn raise_priority() {
    if let Err(e) = crate::sys::cpu::set_current_thread_nice(HOST_READER_NICE) {
        log::warn!("host log reader keeps its normal priority: {e}");
    }
}

/// Start the ingestion thread for `path`. With `routing`, records are also attributed and
/// delivered to namespace rings; the call returns once attribution has started (BPF loaded
/// and attached, or degraded with a warning), so records logged after it are attributed.
pub fn spawn(
    path: PathBuf,
    ring: Arc<Ring>,
    stats: Arc<HostStats>,
    routing: Option<Routing>,
) -> Result<Started, SourceError> {
    let md = std::fs::metadata(&path).map_err(|source| SourceError::Io {
        call: "stat",
        path: path.clone(),
        source,
    })?;
    let ft = md.file_type();
    let device = ft.is_char_device();
    let mut sink = Sink {
        resume: resume_seq(&ring),
        ring,
        stats,
        expected: None,
        routing: None,
        started: false,
    };
    type Kept = Vec<(String, std::os::fd::OwnedFd)>;
    let (started_tx, started_rx) = crossbeam_channel::bounded::<Kept>(1);
    // The BPF source is not `Send`: it is created on the ingestion thread.
    let start_routing = move |sink: &mut Sink, path: &Path| -> Kept {
        let Some(r) = routing else {
            return Vec::new();
        };
        let attr = if device {
            Attribution::start_after(&r.bpf, r.router, Instant::now(), r.kept_bpf)
        } else {
            let reason = format!(
                "the host source {} is not a character device, so its records cannot be joined \
                 with printk events",
                path.display()
            );
            log::info!("kmsgfs attribution: router runs without BPF: {reason}");
            Attribution::without_bpf(reason, r.router)
        };
        sink.stats.publish_attribution(&attr);
        let kept = attr.source().map(|s| s.kept_fds()).unwrap_or_default();
        sink.routing = Some(Attributing {
            attr,
            delivery: r.delivery,
            published: Instant::now(),
        });
        kept
    };
    let thread = std::thread::Builder::new().name("kmsgfs-host".into());
    let stop = Arc::new(EventFd::new().map_err(|e| SourceError::Io {
        call: "eventfd for",
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?);
    let h = if device {
        let f = open(&path)?;
        set_nonblocking(&f, &path)?;
        let stop = Arc::clone(&stop);
        thread.spawn(move || {
            raise_priority();
            let kept = start_routing(&mut sink, &path);
            let _ = started_tx.send(kept);
            read_device(&path, f, sink, &stop)
        })
    } else {
        let fifo = ft.is_fifo();
        let stop = Arc::clone(&stop);
        thread.spawn(move || {
            let kept = start_routing(&mut sink, &path);
            let _ = started_tx.send(kept);
            read_lines(&path, fifo, sink, &stop)
        })
    };
    let h = h.map_err(|source| SourceError::Io {
        call: "spawn thread for",
        path: PathBuf::new(),
        source,
    })?;
    // An Err means the thread ended early; it logged why.
    let kept_bpf = started_rx.recv().unwrap_or_default();
    Ok(Started {
        thread: h,
        stop,
        kept_bpf,
    })
}

fn set_nonblocking(f: &File, path: &Path) -> Result<(), SourceError> {
    fd::set_nonblocking(f.as_fd()).map_err(|e| SourceError::Io {
        call: "fcntl(O_NONBLOCK)",
        path: path.to_path_buf(),
        source: e.source,
    })
}

fn open(path: &Path) -> Result<File, SourceError> {
    File::open(path).map_err(|source| SourceError::Io {
        call: "open",
        path: path.to_path_buf(),
        source,
    })
}

fn read_device(path: &Path, mut f: File, mut sink: Sink, stop: &EventFd) {
    log::info!(
        "host source {}: character device, one record per read",
        path.display()
    );
    let mut buf = vec![0u8; 8192];
    loop {
        let bpf_events = sink
            .routing
            .as_ref()
            .and_then(|a| a.attr.epoll_fd())
            .unwrap_or(-1);
        let polled = fd::poll_in(
            [f.as_raw_fd(), bpf_events, stop.as_fd().as_raw_fd()],
            sink.poll_timeout_ms(),
        );
        if matches!(polled, Ok([_, _, handed_off]) if handed_off != 0) {
            sink.hand_off(path, &mut f, &mut buf);
            return;
        }
        // EINTR comes back as a timeout (`fd::poll`): only a real failure ends ingestion.
        if let Err(e) = polled {
            log::error!(
                "host source {}: poll failed: {e}; stopping ingestion",
                path.display()
            );
            return;
        }
        let mut n = 0;
        while n < BATCH {
            match f.read(&mut buf) {
                Ok(0) => {
                    log::warn!(
                        "host source {}: read returned 0; stopping ingestion",
                        path.display()
                    );
                    sink.route();
                    return;
                }
                Ok(len) => {
                    sink.record(&buf[..len]);
                    n += 1;
                }
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) && !sink.started => {
                    // The oldest record went between open and the first read (the log is
                    // full and something printed): nothing was read yet, so nothing is lost
                    // that was not already gone; the gap check counts real losses.
                    log::debug!(
                        "host source {}: EPIPE before the first record",
                        path.display()
                    );
                }
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                    sink.stats.overruns.fetch_add(1, Ordering::Relaxed);
                    log::warn!(
                        "host source {}: EPIPE, the host ring overwrote unread records",
                        path.display()
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::error!(
                        "host source {}: read failed: {e}; stopping ingestion",
                        path.display()
                    );
                    return;
                }
            }
        }
        sink.route();
    }
}

/// Whether more input is available right now.
fn readable_now(f: &File) -> bool {
    fd::readable(f.as_fd(), 0)
}

/// Splits a byte stream into records: header lines plus following ` KEY=value` lines.
#[derive(Debug, Default)]
pub struct LineAssembler {
    buf: Vec<u8>,
    pending: Vec<u8>,
}

impl LineAssembler {
    /// Add bytes; complete records (all but possibly the last) go to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut dyn FnMut(&[u8])) {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(i) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let line = &self.buf[start..=start + i];
            start += i + 1;
            if line == b"\n" {
                continue;
            }
            if line[0] == b' ' && !self.pending.is_empty() {
                self.pending.extend_from_slice(line);
            } else {
                if !self.pending.is_empty() {
                    out(&self.pending);
                }
                self.pending.clear();
                self.pending.extend_from_slice(line);
            }
        }
        self.buf.drain(..start);
    }

    /// Whether all input so far ended at a line boundary.
    pub fn at_line_boundary(&self) -> bool {
        self.buf.is_empty()
    }

    /// Emit the pending record, if any.
    pub fn flush(&mut self, out: &mut dyn FnMut(&[u8])) {
        if !self.pending.is_empty() {
            out(&self.pending);
            self.pending.clear();
        }
    }
}

fn read_lines(path: &Path, fifo: bool, mut sink: Sink, stop: &EventFd) {
    log::info!(
        "host source {}: {}, read line-wise",
        path.display(),
        if fifo { "FIFO" } else { "regular file" }
    );
    let mut asm = LineAssembler::default();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let mut f = match open(path) {
            Ok(f) => f,
            Err(e) => {
                log::error!("host source: {e}; stopping ingestion");
                return;
            }
        };
        loop {
            // Wait for input or the hand-off (a FIFO read would block past it).
            let polled = fd::poll_in([f.as_raw_fd(), stop.as_fd().as_raw_fd()], -1);
            if matches!(polled, Ok([_, handed_off]) if handed_off != 0) {
                asm.flush(&mut |r| sink.record(r));
                sink.route();
                log::info!("host source {}: handed off", path.display());
                return;
            }
            match f.read(&mut chunk) {
                Ok(0) => {
                    asm.flush(&mut |r| sink.record(r));
                    sink.route();
                    break;
                }
                Ok(n) => {
                    asm.push(&chunk[..n], &mut |r| sink.record(r));
                    if asm.at_line_boundary() && !readable_now(&f) {
                        asm.flush(&mut |r| sink.record(r));
                    }
                    sink.route();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::error!("host source {}: read failed: {e}", path.display());
                    break;
                }
            }
        }
        if !fifo {
            log::info!(
                "host source {}: end of file; ingestion done",
                path.display()
            );
            return;
        }
        log::info!(
            "host source {}: all writers closed; reopening",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]]) -> Vec<String> {
        let mut asm = LineAssembler::default();
        let mut out = Vec::new();
        for c in chunks {
            asm.push(c, &mut |r| {
                out.push(String::from_utf8_lossy(r).into_owned())
            });
        }
        asm.flush(&mut |r| out.push(String::from_utf8_lossy(r).into_owned()));
        out
    }

    #[test]
    fn dictionary_lines_continue_the_record() {
        let out = collect(&[b"6,1,2,-;a\n SUBSYSTEM=acpi\n DEVICE=+acpi:x\n6,2,3,-;b\n"]);
        assert_eq!(
            out,
            vec![
                "6,1,2,-;a\n SUBSYSTEM=acpi\n DEVICE=+acpi:x\n".to_string(),
                "6,2,3,-;b\n".to_string()
            ]
        );
    }

    #[test]
    fn records_split_across_chunks() {
        let out = collect(&[b"6,1,2,-;hel", b"lo\n SUBSY", b"STEM=x\n", b"\n6,2,3,-;b\n"]);
        assert_eq!(out, vec!["6,1,2,-;hello\n SUBSYSTEM=x\n", "6,2,3,-;b\n"]);
    }

    #[test]
    fn boundary_tracking() {
        let mut asm = LineAssembler::default();
        let mut n = 0;
        asm.push(b"6,1,2,-;a", &mut |_| n += 1);
        assert!(!asm.at_line_boundary());
        asm.push(b"\n", &mut |_| n += 1);
        assert!(asm.at_line_boundary());
        assert_eq!(n, 0, "the record waits for possible dictionary lines");
        asm.flush(&mut |_| n += 1);
        assert_eq!(n, 1);
    }

    /// A successor resumes after the newest record in the host ring, whether the previous
    /// daemon died before, during or after appending it.
    #[test]
    fn resume_seq_neither_loses_nor_repeats_a_record_whose_append_was_interrupted() {
        let rec = |seq| crate::record::RecordRef {
            seq,
            ts_usec: 1,
            prio: 6,
            cont: false,
            caller: None,
            text: b"x",
            subsystem: b"",
            device: b"",
        };
        let ring = Ring::new(crate::ring::RingConfig::with_bytes(1 << 16));
        let m = ring.meta();
        assert_eq!(resume_seq(&ring), 0, "nothing ingested yet");
        ring.append(&rec(40));
        m[META_HOST_NEXT_SEQ].store(41, Ordering::Relaxed);
        assert_eq!(resume_seq(&ring), 41);
        // Died after the marker, before the append: host seq 41 is not in the ring.
        m[META_HOST_APPENDING_SEQ].store(41, Ordering::Relaxed);
        m[META_HOST_APPENDING].store(ring.next_seq() + 1, Ordering::Relaxed);
        assert_eq!(resume_seq(&ring), 41);
        // Died after the append, before the resume point moved: it is, do not append again.
        ring.append(&rec(41));
        assert_eq!(resume_seq(&ring), 42);
        // Done: the marker is off.
        m[META_HOST_NEXT_SEQ].store(42, Ordering::Relaxed);
        m[META_HOST_APPENDING].store(0, Ordering::Relaxed);
        assert_eq!(resume_seq(&ring), 42);
    }
}
