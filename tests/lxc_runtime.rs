//! LXC 5.0 with the shipped recipe (`docs/deploy/lxc/kmsgfs.conf`, its paths pointed at this
//! test's daemon): two privileged containers side by side, started with `lxc-start -F`. Each
//! sees only its own records in `/dev/kmsg`; an `lxc-attach`ed process gets the same ring;
//! `syslog(2)` (busybox `dmesg`, `dmesg -c`) gets EPERM and never the host log, and the host's
//! `/proc/kmsg` is closed (docs/deploy/lxc/README.md says why). Root only; needs `lxc-start`
//! and `busybox`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{require_root, require_tool, Daemon};

/// One container: its rootfs, config and `lxc-start` process; stopped and its files removed on
/// drop.
struct Lxc {
    name: String,
    lxcpath: PathBuf,
    start: Option<Child>,
}

impl Lxc {
    fn rootfs(&self) -> PathBuf {
        self.lxcpath.join(&self.name).join("rootfs")
    }

    fn create(d: &Daemon, lxcpath: &Path, name: &str, script: &str) -> Lxc {
        let dir = lxcpath.join(name);
        let rootfs = dir.join("rootfs");
        for sub in ["bin", "dev", "proc", "sys", "tmp", "out"] {
            fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        fs::copy(which("busybox"), rootfs.join("bin/busybox")).unwrap();
        for a in ["sh", "cat", "echo", "dmesg", "sleep", "kill", "touch"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
        }
        fs::write(rootfs.join("run.sh"), script).unwrap();
        let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/deploy/lxc");
        let include = fs::read_to_string(recipe.join("kmsgfs.conf"))
            .unwrap()
            .replace("/run/kmsgfs/", &format!("{}/", d.dir().display()))
            .replace(
                "/usr/share/doc/kmsgfs/lxc/",
                &format!("{}/", recipe.display()),
            );
        let config = format!(
            "lxc.uts.name = {name}\n\
             lxc.rootfs.path = dir:{}\n\
             lxc.init.cmd = /bin/sh /run.sh\n\
             lxc.mount.auto = proc:mixed sys:ro\n\
             lxc.autodev = 1\n\
             lxc.console.path = none\n\
             lxc.log.level = WARN\n\
             {include}",
            rootfs.display()
        );
        fs::write(dir.join("config"), config).unwrap();
        let start = Command::new("lxc-start")
            .args(["-F", "-n", name, "-P"])
            .arg(lxcpath)
            .arg("-f")
            .arg(dir.join("config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lxc-start");
        Lxc {
            name: name.to_owned(),
            lxcpath: lxcpath.to_owned(),
            start: Some(start),
        }
    }

    /// Wait for `/out/<file>` in the container's rootfs.
    fn wait_out(&mut self, file: &str) -> String {
        let path = self.rootfs().join("out").join(file);
        let deadline = Instant::now() + common::TIMEOUT;
        while !path.exists() {
            if let Some(st) = self.start.as_mut().unwrap().try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                let _ = self
                    .start
                    .as_mut()
                    .unwrap()
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err);
                panic!(
                    "container {} exited ({st}) before /out/{file}: {err}",
                    self.name
                );
            }
            assert!(
                Instant::now() < deadline,
                "container {}: no /out/{file}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(100));
        fs::read_to_string(self.rootfs().join("out/log")).unwrap_or_default()
    }

    fn attach(&self, script: &str) -> String {
        let o = Command::new("lxc-attach")
            .args(["-n", &self.name, "-P"])
            .arg(&self.lxcpath)
            .args(["--clear-env", "--", "/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("run lxc-attach");
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }
}

impl Drop for Lxc {
    fn drop(&mut self) {
        let _ = fs::write(self.rootfs().join("stop"), b"");
        if let Some(mut c) = self.start.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("lxc-stop")
                .args(["-k", "-n", &self.name, "-P"])
                .arg(&self.lxcpath)
                .stderr(Stdio::null())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn which(tool: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(tool))
                .find(|p| p.exists())
        })
        .unwrap_or_else(|| panic!("{tool} not found"))
}

#[test]
fn lxc_containers_see_only_their_own_log_and_never_the_hosts() {
    if !(require_root() && require_tool("lxc-start") && require_tool("busybox")) {
        return;
    }
    let d = Daemon::start_args(&["--devkmsg", "on"]);
    d.feed(6, "kmsgfs-host-ring-record-not-for-containers");
    let lxcpath = std::env::temp_dir().join(format!("kmsgfs-lxc-{}", std::process::id()));
    let _ = fs::remove_dir_all(&lxcpath);
    fs::create_dir_all(&lxcpath).unwrap();
    let tag = |n: usize| format!("kmsgfs-lxc-{}-{n}", std::process::id());
    let mut cts = Vec::new();
    for n in 0..2 {
        let t = tag(n);
        let script = format!(
            "exec > /out/log 2>&1\n\
             echo '<6>{t}' > /dev/kmsg\n\
             cat /dev/kmsg & sleep 0.5; kill $!\n\
             echo ===\n\
             dmesg; echo rc=$?\n\
             dmesg -c; echo rc=$?\n\
             cat /proc/kmsg; echo rc=$?\n\
             touch /out/done\n\
             while [ ! -e /stop ]; do sleep 0.1; done\n"
        );
        cts.push(Lxc::create(
            &d,
            &lxcpath,
            &format!("kmsgfs-t{n}-{}", std::process::id()),
            &script,
        ));
    }
    for (n, c) in cts.iter_mut().enumerate() {
        let log = c.wait_out("done");
        let (file, syslog) = log.split_once("===\n").unwrap_or_else(|| panic!("{log}"));
        assert_eq!(file.matches(&tag(n)).count(), 1, "own record once: {log}");
        assert!(
            !file.contains(&tag(1 - n)),
            "the other container's record: {log}"
        );
        assert!(!log.contains("kmsgfs-host-ring"), "host ring shown: {log}");
        assert_eq!(
            syslog.matches("rc=1").count(),
            3,
            "syslog(2) and /proc/kmsg refused: {log}"
        );
        assert!(syslog.contains("Operation not permitted"), "{log}");
        // An attached process opens the same ring.
        let att = c.attach("cat /dev/kmsg & sleep 0.5; kill $!");
        eprintln!("--- {}:\n{log}--- lxc-attach:\n{att}", c.name);
        assert_eq!(att.matches(&tag(n)).count(), 1, "lxc-attach: {att}");
        assert!(!att.contains(&tag(1 - n)), "lxc-attach: {att}");
    }
    drop(cts);
    drop(d);
    let _ = fs::remove_dir_all(&lxcpath);
}
