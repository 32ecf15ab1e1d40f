//! LXC 5.0 with the shipped recipe (`docs/deploy/lxc/kmsgfs.conf`, its paths pointed at this
//! test's daemon): two privileged containers side by side, started with `lxc-start -F` and
//! LXC's default capabilities less the recipe's CAP_SYSLOG. `syslog(2)` reaches kmsgfs through
//! LXC's notify proxy protocol (`lxc.seccomp.notify.proxy`). Each container sees only its own
//! records in `cat /dev/kmsg`, util-linux `dmesg`, `dmesg -S`, busybox `dmesg` and
//! `/proc/kmsg`; `dmesg -c` and `dmesg -C` clear only its own ring and never the host's; an
//! `lxc-attach`ed process gets the same ring; a blocked busybox `klogd` gets records written
//! later and keeps them across a planned restart (SIGTERM) of the daemon, and `syslog(2)`
//! works again after `kill -9` of the daemon. Root only; needs `lxc-start` and `busybox`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::seccomp::HostTag;
use crate::support::{require_root, require_tool, Daemon};

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
        for sub in ["bin", "dev", "proc", "sys", "tmp", "out", "usr", "var/log"] {
            fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        fs::copy(which("busybox"), rootfs.join("bin/busybox")).unwrap();
        for a in [
            "sh", "cat", "echo", "dmesg", "sleep", "kill", "touch", "klogd", "syslogd", "wc",
            "grep",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
        }
        // util-linux `dmesg` and its libraries: the host's /usr, read-only (merged /usr).
        for l in ["lib", "lib64"] {
            std::os::unix::fs::symlink(format!("usr/{l}"), rootfs.join(l)).unwrap();
        }
        fs::write(rootfs.join("run.sh"), script).unwrap();
        let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/deploy/lxc");
        let lxc_socket = kmsgfs::frontends::seccomp::lxc_socket_for(d.dir());
        let include = fs::read_to_string(recipe.join("kmsgfs.conf"))
            .unwrap()
            .replace("/run/kmsgfs.lxc.sock", &lxc_socket.display().to_string())
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
             lxc.mount.entry = /usr usr none bind,ro 0 0\n\
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

    /// Wait until `/out/<file>` in the container's rootfs exists; `/out/log`.
    fn wait_out(&mut self, file: &str) -> String {
        let path = self.rootfs().join("out").join(file);
        let deadline = Instant::now() + support::TIMEOUT;
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
        let t0 = Instant::now();
        let o = Command::new("lxc-attach")
            .args(["-n", &self.name, "-P"])
            .arg(&self.lxcpath)
            .args(["--clear-env", "--", "/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("run lxc-attach");
        eprintln!("lxc-attach {script:?}: {:?}", t0.elapsed());
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

/// The sections `=name` of a container's log, by name.
fn sections(log: &str) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    for part in format!("\n{log}").split("\n=").skip(1) {
        let (name, body) = part.split_once('\n').unwrap_or((part, ""));
        out.insert(name.to_owned(), body.to_owned());
    }
    out
}

/// Wait until the container's `/out/messages` (busybox syslogd, fed by klogd) holds `needle`.
fn wait_klogd(c: &Lxc, needle: &str) {
    let path = c.rootfs().join("out/messages");
    let deadline = Instant::now() + support::TIMEOUT;
    loop {
        let text = fs::read_to_string(&path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: klogd did not log {needle:?}; messages:\n{text}\nklogd: {}",
            c.name,
            fs::read_to_string(c.rootfs().join("out/klogd.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn lxc_containers_get_their_own_log_through_the_files_and_syslog() {
    if !(require_root()
        && require_tool("lxc-start")
        && require_tool("busybox")
        && require_tool("dmesg"))
    {
        return;
    }
    let host = HostTag::write("lxc-host-log");
    let scratch = support::seccomp::TempDir::new("lxc-holder");
    let holder = support::Holder::start(scratch.path());
    let sock = holder.socket.display().to_string();
    let args = ["--devkmsg", "on", "--holder-socket", sock.as_str()];
    let opts = || support::Options::args(&args);
    let mut d = Daemon::start_with(opts());
    d.feed(6, "kmsgfs-host-ring-record-not-for-containers");
    let lxcpath = scratch.path().join("lxc");
    fs::create_dir_all(&lxcpath).unwrap();
    let tag = |n: usize| format!("kmsgfs-lxc-{}-{n}", std::process::id());
    let mut cts = Vec::new();
    for n in 0..2 {
        let t = tag(n);
        let script = format!(
            "exec > /out/log 2>&1\n\
             echo '<6>{t}' > /dev/kmsg\n\
             echo =file; cat /dev/kmsg & sleep 0.5; kill $!\n\
             echo =util; /usr/bin/dmesg; echo rc=$?\n\
             echo =utilS; /usr/bin/dmesg -S; echo rc=$?\n\
             echo =busybox; dmesg; echo rc=$?\n\
             echo =proc; cat /proc/kmsg & sleep 0.5; kill $!\n\
             echo =end\n\
             syslogd -n -O /out/messages & sleep 0.3\n\
             klogd -n 2> /out/klogd.err &\n\
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
    let own_only = |n: usize, what: &str, text: &str| {
        assert!(text.contains(&tag(n)), "{what}: own record missing: {text}");
        assert!(
            !text.contains(&tag(1 - n)),
            "{what}: the other's record: {text}"
        );
        assert!(
            !text.contains("kmsgfs-host-ring"),
            "{what}: host ring: {text}"
        );
        assert!(!text.contains(&host.tag), "{what}: the host's log: {text}");
    };
    for (n, c) in cts.iter_mut().enumerate() {
        let log = c.wait_out("done");
        eprintln!("--- {}:\n{log}", c.name);
        let s = sections(&log);
        assert_eq!(
            s["file"].matches(&tag(n)).count(),
            1,
            "cat /dev/kmsg: {log}"
        );
        for what in ["file", "util", "utilS", "busybox", "proc"] {
            own_only(n, what, &s[what]);
        }
        for what in ["util", "utilS", "busybox"] {
            assert!(s[what].contains("rc=0"), "{what}: {log}");
        }
        // An attached process gets the same ring, through the file and syslog(2).
        let att = c.attach("cat /dev/kmsg & sleep 0.5; kill $!; dmesg");
        assert_eq!(att.matches(&tag(n)).count(), 2, "lxc-attach: {att}");
        own_only(n, "lxc-attach", &att);
    }
    // klogd blocks in syslog(2) READ; LXC's monitor gets EINTR for it every 2 s and klogd
    // restarts the call. A record written after a few of those reaches it.
    std::thread::sleep(Duration::from_secs(5));
    for (n, c) in cts.iter().enumerate() {
        c.attach(&format!("echo '<6>{} late' > /dev/kmsg", tag(n)));
        wait_klogd(c, &format!("{} late", tag(n)));
    }
    // A planned restart: the parked READs are answered EINTR and go to the next daemon.
    d.upgrade(Path::new(env!("CARGO_BIN_EXE_kmsgfs")), opts());
    for (n, c) in cts.iter().enumerate() {
        c.attach(&format!("echo '<6>{} upgraded' > /dev/kmsg", tag(n)));
        wait_klogd(c, &format!("{} upgraded", tag(n)));
        let err = fs::read_to_string(c.rootfs().join("out/klogd.err")).unwrap_or_default();
        assert!(err.trim().is_empty(), "klogd complained: {err}");
    }
    // A crash: the monitors reconnect to the socket the holder kept.
    d.kill9();
    d.restart(opts());
    for (n, c) in cts.iter().enumerate() {
        let out = c.attach(&format!("echo '<6>{} crashed' > /dev/kmsg; dmesg", tag(n)));
        assert!(
            out.contains(&format!("{} crashed", tag(n))),
            "after kill -9: {out}"
        );
        own_only(n, "after kill -9", &out);
    }
    // busybox `dmesg -c` clears only its own ring; util-linux `dmesg -C` the same.
    let out =
        cts[0].attach("dmesg -c > /dev/null; echo rc=$?; dmesg | wc -l; /usr/bin/dmesg | wc -l");
    assert_eq!(out, "rc=0\n0\n0\n", "dmesg -c: {out}");
    let out = cts[1].attach("dmesg | grep -c kmsgfs-lxc");
    assert_ne!(
        out.trim(),
        "0",
        "dmesg -c in the first container cleared the second: {out}"
    );
    let out = cts[1].attach("/usr/bin/dmesg -C; echo rc=$?; dmesg | wc -l; /usr/bin/dmesg | wc -l");
    assert_eq!(out, "rc=0\n0\n0\n", "dmesg -C: {out}");
    host.assert_host_not_cleared();
    drop(cts);
    drop(d);
    drop(holder);
}
