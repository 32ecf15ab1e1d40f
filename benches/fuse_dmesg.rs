//! `dmesg > /dev/null` and a raw read loop over kmsgfs versus the host `/dev/kmsg`, side by side
//! in one run (docs/benchmarks.md, FUSE section). Root only.
//!
//! The host records (from the clear point, as `dmesg` reads them) are copied into a kmsgfs host
//! ring through the FIFO source, so both sides serve the same N records. The daemon and every
//! reader run in one private mount namespace (held by an `unshare -m sleep` process), where
//! the FUSE file is bind-mounted over `/dev/kmsg`; the host side runs the same commands in our
//! own mount namespace. Each configuration is measured unpinned and with daemon and reader on
//! CPU 0 (`taskset -c 0`).
//!
//! Environment: `KMSGFS_BENCH_RECORDS=N` (default: as many records as the host ring holds),
//! `KMSGFS_BENCH_RUNS=R` (default 9). Helper modes used internally: `--raw-loop PATH`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() >= 3 && args[1] == "--raw-loop" {
        raw_loop(Path::new(&args[2]));
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a full run there would only add minutes to every test run.
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("fuse_dmesg bench: run it with `cargo bench --bench fuse_dmesg`; skipped under cargo test");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("fuse_dmesg bench needs root (mount, unshare, nsenter); skipping");
        return;
    }
    run();
}

/// Open non-blocking, SEEK_DATA, read one record per read until EAGAIN; print the count and
/// the time per record.
fn raw_loop(path: &Path) {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .expect("open");
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let mut buf = vec![0u8; 8192];
    let t0 = Instant::now();
    // SAFETY: fd is open.
    unsafe { libc::lseek(fd, 0, libc::SEEK_DATA) };
    let mut n = 0u64;
    loop {
        // SAFETY: buf has 8191 writable bytes.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 8191) };
        if r > 0 {
            n += 1;
            continue;
        }
        let e = std::io::Error::last_os_error().raw_os_error();
        if e == Some(libc::EPIPE) {
            continue;
        }
        break;
    }
    let ns = t0.elapsed().as_nanos();
    println!("records={n} ns={ns}");
}

/// Host records from the clear point, raw, one per read.
fn host_records() -> Vec<Vec<u8>> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .expect("open /dev/kmsg");
    use std::os::fd::AsRawFd;
    // SAFETY: fd is open.
    unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_DATA) };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(n) if n > 0 => out.push(buf[..n].to_vec()),
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            _ => break,
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn time_cmd(cmd: &[&str]) -> f64 {
    let t0 = Instant::now();
    let st = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("spawn");
    let dt = t0.elapsed().as_secs_f64();
    assert!(st.success(), "{cmd:?} failed: {st:?}");
    dt
}

fn raw_cmd(cmd: &[&str]) -> (u64, f64) {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .stderr(Stdio::inherit())
        .output()
        .expect("spawn");
    let s = String::from_utf8_lossy(&out.stdout);
    let mut n = 0;
    let mut ns = 0.0;
    for kv in s.split_whitespace() {
        if let Some(v) = kv.strip_prefix("records=") {
            n = v.parse().unwrap_or(0);
        }
        if let Some(v) = kv.strip_prefix("ns=") {
            ns = v.parse().unwrap_or(0.0);
        }
    }
    (n, ns)
}

struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Setup {
    holder: Holder,
    daemon: Child,
    dir: PathBuf,
    _fifo_w: File,
}

impl Drop for Setup {
    fn drop(&mut self) {
        // SAFETY: the daemon is our child.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let _ = self.daemon.wait();
        let _ = &self.holder;
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn setup(records: &[Vec<u8>], daemon_args: &[&str], pin_daemon: bool) -> Setup {
    let dir = std::env::temp_dir().join(format!("kmsgfs-bench-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("mnt")).unwrap();
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut fifo_w = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let holder = Holder(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sleep", "100000"])
            .spawn()
            .expect("unshare"),
    );
    let hp = holder.0.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::read_to_string(format!("/proc/{hp}/comm")).unwrap_or_default() != "sleep\n" {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let ring = (records.len() * 512).max(1 << 20).to_string();
    let mnt = dir.join("mnt");
    let mut cmd = Command::new("nsenter");
    cmd.args(["-t", &hp, "-m", "--"]);
    if pin_daemon {
        cmd.args(["taskset", "-c", "0"]);
    }
    cmd.arg(env!("CARGO_BIN_EXE_kmsgfs"))
        .args(["serve", "--mount"])
        .arg(&mnt)
        .arg("--source")
        .arg(&fifo)
        .args(["--ring-size", &ring])
        .args(daemon_args)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null());
    let daemon = cmd.spawn().expect("spawn kmsgfs");
    let stats = mnt.join("stats");
    while !Command::new("nsenter")
        .args(["-t", &hp, "-m", "test", "-e"])
        .arg(&stats)
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "kmsgfs did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    for r in records {
        fifo_w.write_all(r).unwrap();
    }
    // Wait until every record is in the ring.
    loop {
        let out = Command::new("nsenter")
            .args(["-t", &hp, "-m", "cat"])
            .arg(&stats)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["host"]["records_read"].as_u64() == Some(records.len() as u64) {
            break;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(60),
            "ingestion stalled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = Command::new("nsenter")
        .args(["-t", &hp, "-m", "mount", "--bind"])
        .arg(mnt.join("kmsg"))
        .arg("/dev/kmsg")
        .status()
        .unwrap();
    assert!(st.success(), "bind mount in the private namespace");
    Setup {
        holder,
        daemon,
        dir,
        _fifo_w: fifo_w,
    }
}

fn run() {
    let mut records = host_records();
    if let Some(n) = std::env::var("KMSGFS_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let base = records.clone();
        records = (0..n)
            .map(|i| {
                // Renumber so ingestion sees no gaps.
                let r = &base[i % base.len()];
                let s = String::from_utf8_lossy(r);
                let (h, rest) = s.split_once(';').unwrap();
                let mut f: Vec<&str> = h.split(',').collect();
                let seq = i.to_string();
                f[1] = &seq;
                format!("{};{rest}", f.join(",")).into_bytes()
            })
            .collect();
    }
    let n = records.len();
    let host_n = host_records().len();
    let runs: usize = std::env::var("KMSGFS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let self_pid = std::process::id().to_string();
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_str().unwrap();
    let base = {
        let mut v = Vec::new();
        for _ in 0..runs {
            v.push(time_cmd(&["nsenter", "-t", &self_pid, "-m", "--", "dmesg", "-V"]) * 1e3);
        }
        median(v).0
    };
    println!();
    println!(
        "records per dump: host {host_n}, kmsgfs {n}; runs per cell: {runs}; CPUs: {}",
        num_cpus()
    );
    println!("start-up baseline (`nsenter … dmesg -V`): {base:.1} ms");
    println!(
        "wall ratio = kmsgfs/host dmesg time (only meaningful with equal N); net ratio = per-record \
         time after subtracting the start-up baseline"
    );
    println!();
    println!("| config | reader | host dmesg ms | kmsgfs dmesg ms | wall ratio | net ratio | host µs/rec (raw) | kmsgfs µs/rec (raw) | raw ratio |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let configs: [(&str, &[&str], bool, bool); 5] = [
        ("threads=1", &["--threads", "1"], false, false),
        ("threads=2", &["--threads", "2"], false, false),
        (
            "threads=2 --pin-threads",
            &["--threads", "2", "--pin-threads"],
            false,
            false,
        ),
        (
            "threads=1, daemon+reader on CPU 0",
            &["--threads", "1"],
            true,
            true,
        ),
        (
            "threads=2, daemon+reader on CPU 0",
            &["--threads", "2"],
            true,
            true,
        ),
    ];
    for (name, dargs, pin_daemon, pin_reader) in configs {
        let s = setup(&records, dargs, pin_daemon);
        let hp = s.holder.0.id().to_string();
        let mut pre: Vec<&str> = Vec::new();
        if pin_reader {
            pre.extend(["taskset", "-c", "0"]);
        }
        let ns_cmd = |pid: &str, tail: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = vec![
                "nsenter".into(),
                "-t".into(),
                pid.into(),
                "-m".into(),
                "--".into(),
            ];
            v.extend(pre.iter().map(|s| s.to_string()));
            v.extend(tail.iter().map(|s| s.to_string()));
            v
        };
        let fuse_dmesg = ns_cmd(&hp, &["dmesg"]);
        let host_dmesg = ns_cmd(&self_pid, &["dmesg"]);
        let fuse_raw = ns_cmd(&hp, &[exe, "--raw-loop", "/dev/kmsg"]);
        let host_raw = ns_cmd(&self_pid, &[exe, "--raw-loop", "/dev/kmsg"]);
        // Warm up both sides once.
        time_cmd(&as_refs(&fuse_dmesg));
        time_cmd(&as_refs(&host_dmesg));
        let mut hd = Vec::new();
        let mut fd = Vec::new();
        let mut hr = Vec::new();
        let mut fr = Vec::new();
        for _ in 0..runs {
            hd.push(time_cmd(&as_refs(&host_dmesg)) * 1e3);
            fd.push(time_cmd(&as_refs(&fuse_dmesg)) * 1e3);
            let (hn, hns) = raw_cmd(&as_refs(&host_raw));
            let (fnn, fns) = raw_cmd(&as_refs(&fuse_raw));
            hr.push(hns / 1e3 / hn.max(1) as f64);
            fr.push(fns / 1e3 / fnn.max(1) as f64);
        }
        let (hdm, hdl, hdh) = median(hd);
        let (fdm, fdl, fdh) = median(fd);
        let (hrm, _, _) = median(hr);
        let (frm, frl, frh) = median(fr);
        let net = ((fdm - base).max(0.001) / n as f64) / ((hdm - base).max(0.001) / host_n as f64);
        println!(
            "| {name} | {} | {hdm:.1} ({hdl:.1}–{hdh:.1}) | {fdm:.1} ({fdl:.1}–{fdh:.1}) | {:.2} | {net:.2} | {hrm:.2} | {frm:.2} ({frl:.2}–{frh:.2}) | {:.1} |",
            if pin_reader { "CPU 0" } else { "unpinned" },
            fdm / hdm,
            frm / hrm
        );
        drop(s);
    }
}

fn as_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
