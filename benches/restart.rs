//! What a client sees of a daemon restart (docs/benchmarks.md, "Restart and upgrade"). Root
//! only.
//!
//! A real `kmsgfs holder` and `kmsgfs serve` (the real `/dev/kmsg` source, BPF attribution, the
//! agent: the default configuration) on a scratch mount. A client process reads the kmsg file
//! non-blocking every millisecond and reports every read that took longer than 200 µs, with
//! its start on CLOCK_MONOTONIC, which this process shares.
//!
//! * `kill -9`, then a new daemon started at once: the time from the kill to the end of the
//!   first read answered after it (the daemon's start-up and adoption included).
//! * Planned upgrade, a new daemon (another copy of the binary) started on the same holder
//!   while the old one runs: the longest read stall of each upgrade.
//!
//! Environment: `KMSGFS_BENCH_KILLS` (default 10), `KMSGFS_BENCH_UPGRADES` (default 20).
//! Helper mode used internally: `--client PATH`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is valid writable storage.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() >= 3 && args[1] == "--client" {
        client(Path::new(&args[2]));
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a full run there would only add minutes to every test run.
    if !args.iter().any(|a| a == "--bench") {
        eprintln!(
            "restart bench: run it with `cargo bench --bench restart`; skipped under cargo test"
        );
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("restart bench needs root (FUSE mount, BPF); skipping");
        return;
    }
    run();
}

/// Read non-blocking every millisecond; print `start_ns duration_ns` of slow reads.
fn client(path: &Path) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .expect("open kmsg");
    let mut buf = vec![0u8; 8192];
    let out = std::io::stdout();
    loop {
        let t0 = now_ns();
        // SAFETY: `buf` has 8192 writable bytes; the fd is open.
        let r = unsafe { libc::read(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let e = std::io::Error::last_os_error().raw_os_error();
        let dt = now_ns() - t0;
        if r < 0 && !matches!(e, Some(libc::EAGAIN) | Some(libc::EPIPE)) {
            let _ = writeln!(out.lock(), "error {t0} {e:?}");
        }
        if dt > 200_000 {
            let _ = writeln!(out.lock(), "stall {t0} {dt}");
        }
        if r <= 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A daemon and a receiver of its `ready` lines.
fn serve(bin: &Path, mount: &Path, holder: &Path) -> (Proc, Receiver<()>) {
    let mut c = Command::new(bin)
        .args(["serve", "--mount"])
        .arg(mount)
        .arg("--holder-socket")
        .arg(holder)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kmsgfs serve");
    let err = c.stderr.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains(" ready: ") {
                let _ = tx.send(());
            }
        }
    });
    (Proc(c), rx)
}

fn ready(rx: &Receiver<()>) {
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the daemon did not become ready");
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn run() {
    let kills: usize = std::env::var("KMSGFS_BENCH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let upgrades: usize = std::env::var("KMSGFS_BENCH_UPGRADES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_kmsgfs"));
    let dir = std::env::temp_dir().join(format!("kmsgfs-bench-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("mnt")).unwrap();
    let next = dir.join("kmsgfs-next");
    std::fs::copy(&bin, &next).unwrap();
    let sock = dir.join("holder.sock");
    let holder = Proc(
        Command::new(&bin)
            .args(["holder", "--socket"])
            .arg(&sock)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn holder"),
    );
    while !sock.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mount = dir.join("mnt");
    let (mut daemon, rx) = serve(&bin, &mount, &sock);
    ready(&rx);

    let mut c = Command::new(std::env::current_exe().unwrap())
        .arg("--client")
        .arg(mount.join("kmsg"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let stalls: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let out = c.stdout.take().unwrap();
        let (stalls, errors) = (Arc::clone(&stalls), Arc::clone(&errors));
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let f: Vec<&str> = line.split(' ').collect();
                match f.as_slice() {
                    ["stall", t, d] => stalls
                        .lock()
                        .unwrap()
                        .push((t.parse().unwrap(), d.parse().unwrap())),
                    _ => errors.lock().unwrap().push(line),
                }
            }
        });
    }
    let client = Proc(c);
    std::thread::sleep(Duration::from_millis(500));

    // kill -9 → the end of the first read answered after it.
    let mut to_first = Vec::new();
    let mut rx = rx;
    for _ in 0..kills {
        let t_kill = now_ns();
        drop(daemon);
        let (d, r) = serve(&bin, &mount, &sock);
        ready(&r);
        std::thread::sleep(Duration::from_millis(300));
        let s = stalls.lock().unwrap();
        // The read in flight at the kill (or the first after it) is the one that waited.
        let first_end = s
            .iter()
            .filter(|(t, d)| t + d > t_kill)
            .map(|(t, d)| t + d)
            .min();
        if let Some(end) = first_end {
            to_first.push((end - t_kill) as f64 / 1e6);
        }
        drop(s);
        daemon = d;
        rx = r;
    }
    let _ = rx;

    // Planned upgrades: the longest stall during each.
    let mut pauses = Vec::new();
    for i in 0..upgrades {
        let b = if i % 2 == 0 { &next } else { &bin };
        let t0 = now_ns();
        let (d, r) = serve(b, &mount, &sock);
        ready(&r);
        let _ = daemon.0.wait();
        drop(daemon);
        std::thread::sleep(Duration::from_millis(200));
        let t1 = now_ns();
        let worst = stalls
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, d)| t + d > t0 && *t < t1)
            .map(|(_, d)| *d)
            .max()
            .unwrap_or(0);
        pauses.push(worst as f64 / 1e6);
        daemon = d;
    }

    let errs = errors.lock().unwrap().clone();
    println!("restart bench: {kills} kill -9 restarts, {upgrades} upgrades");
    if !to_first.is_empty() {
        let n = to_first.len();
        println!(
            "kill -9 → first answered read: p50 {:.1} ms, max {:.1} ms (n={n})",
            percentile(&mut to_first.clone(), 0.5),
            percentile(&mut to_first, 1.0)
        );
    }
    println!(
        "upgrade pause seen by a client: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={})",
        percentile(&mut pauses.clone(), 0.5),
        percentile(&mut pauses.clone(), 0.99),
        percentile(&mut pauses.clone(), 1.0),
        pauses.len()
    );
    println!("failed reads in the client: {}", errs.len());
    for e in errs.iter().take(5) {
        println!("  {e}");
    }
    drop(client);
    drop(daemon);
    drop(holder);
    let _ = Command::new("umount").arg("-l").arg(&mount).status();
    let _ = std::fs::remove_dir_all(&dir);
}
