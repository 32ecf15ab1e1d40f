//! Follow latency: how long after a record is written to the host's `/dev/kmsg` a reader blocked
//! in `read()` has it, on the device and through kmsgfs (docs/benchmarks.md, "Follow latency").
//! Root only; run with `cargo bench --bench follow`.
//!
//! This is what every following client (journald, rsyslog `imkmsg`, go-kmsg-parser, `dmesg -w`)
//! waits for, since each blocks in `read()` on its kmsg file. The device side follows
//! `/dev/kmsg` itself; the kmsgfs side runs `kmsgfs serve` on the real host log (BPF on, as
//! deployed, and with `--no-bpf`) and follows the host ring through the FUSE file. Each sample
//! writes one tagged record (`<6>kmsgfs-follow-PID-I`) and takes the time from just before the
//! `write()` to the return of the reader's `read()` carrying it; samples are 5 ms apart so that
//! every one finds the reader blocked.
//!
//! Environment: `KMSGFS_BENCH_SAMPLES=N` (default 300).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`: do nothing there.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "follow bench: run it with `cargo bench --bench follow`; skipped under cargo test"
        );
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("follow bench needs root (mount, the host /dev/kmsg); skipping");
        return;
    }
    let samples: usize = std::env::var("KMSGFS_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    println!("follow latency, {samples} samples each, µs: p50 / p90 / p99 / max");
    report("device /dev/kmsg", &follow(Path::new("/dev/kmsg"), samples));
    for (name, args) in [
        ("kmsgfs, BPF on", &[][..]),
        ("kmsgfs, --no-bpf", &["--no-bpf"][..]),
    ] {
        let d = Serve::start(args);
        report(name, &follow(&d.dir.join("mnt/kmsg"), samples));
    }
}

fn report(name: &str, lat: &[f64]) {
    let mut v = lat.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{name:<20} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
        q(0.5),
        q(0.9),
        q(0.99),
        v[v.len() - 1]
    );
}

/// Write `samples` tagged records to the host's `/dev/kmsg` while a thread follows `path`;
/// the latency of each, in µs.
fn follow(path: &Path, samples: usize) -> Vec<f64> {
    let tag = format!("kmsgfs-follow-{}-{}", std::process::id(), rand_word());
    let mut reader = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    reader.seek(SeekFrom::End(0)).expect("SEEK_END");
    let (tx, rx) = mpsc::channel::<(usize, Instant)>();
    let t = tag.clone();
    let follower = thread::spawn(move || {
        let mut buf = vec![0u8; 8192];
        let mut seen = 0;
        while seen < samples {
            match reader.read(&mut buf) {
                Ok(n) => {
                    let now = Instant::now();
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    if let Some(i) = rec
                        .split_once(';')
                        .and_then(|(_, text)| text.strip_prefix(&format!("{t}-")))
                        .and_then(|r| r.trim_end().parse::<usize>().ok())
                    {
                        seen += 1;
                        let _ = tx.send((i, now));
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) => panic!("read: {e}"),
            }
        }
    });
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples {
        thread::sleep(Duration::from_millis(5));
        // With no newline the kernel keeps the record open for a continuation: readers would
        // see it only with the next record.
        let line = format!("<6>{tag}-{i}\n");
        // One open per record: the kernel rate-limits each open writer to 10 records in 5 s.
        let mut w = OpenOptions::new()
            .write(true)
            .open("/dev/kmsg")
            .expect("open /dev/kmsg for writing");
        let t0 = Instant::now();
        w.write_all(line.as_bytes()).expect("write /dev/kmsg");
        let (j, t1) = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| {
                panic!("record {i} never reached the reader of {}", path.display())
            });
        assert_eq!(j, i, "records out of order");
        lat.push(t1.duration_since(t0).as_secs_f64() * 1e6);
    }
    follower.join().expect("follower");
    lat
}

fn rand_word() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 & 0xffff_ffff
}

/// `kmsgfs serve` on the host's real log, in a temporary directory; stopped and removed on drop.
struct Serve {
    daemon: Child,
    dir: PathBuf,
}

impl Serve {
    fn start(args: &[&str]) -> Serve {
        let dir = std::env::temp_dir().join(format!("kmsgfs-bench-follow-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("mnt")).expect("mkdir");
        let daemon = Command::new(env!("CARGO_BIN_EXE_kmsgfs"))
            .arg("serve")
            .arg("--mount")
            .arg(dir.join("mnt"))
            .args(args)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn kmsgfs serve");
        let serve = Serve { daemon, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !serve.dir.join("mnt/stats").exists() {
            assert!(Instant::now() < deadline, "kmsgfs serve did not mount");
            thread::sleep(Duration::from_millis(20));
        }
        // The host reader starts at the oldest record; let it catch up before measuring.
        thread::sleep(Duration::from_millis(500));
        serve
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: the daemon is our child; SIGTERM makes it unmount and exit.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let _ = self.daemon.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
