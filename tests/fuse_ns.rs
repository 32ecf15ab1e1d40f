//! Ring selection by namespace, the `ns/` directory, the access policy and the stats file
//! (kmsg-semantics E6, A1.2, A1.3; docs/security.md). Openers in other namespaces are started
//! with util-linux `unshare`, `nsenter` and `setpriv`.

use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn tools() -> bool {
    require_root() && require_tool("unshare") && require_tool("nsenter") && require_tool("setpriv")
}

fn host_texts(d: &Daemon) -> Vec<String> {
    let fd = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    let r = drain(fd);
    close_raw(fd);
    r.iter().map(|x| text_of(x).to_owned()).collect()
}

/// A process parked in a new network namespace, killed on drop.
struct NetnsHolder(Child);

impl NetnsHolder {
    fn new() -> Self {
        let c = Command::new("unshare")
            .args(["-n", "sleep", "600"])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn unshare -n sleep");
        let h = NetnsHolder(c);
        let deadline = Instant::now() + TIMEOUT;
        // Wait until the child has exec'ed sleep inside its namespace.
        while std::fs::read_to_string(format!("/proc/{}/comm", h.pid())).unwrap_or_default()
            != "sleep\n"
        {
            assert!(Instant::now() < deadline, "unshare -n sleep did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        h
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn net_inode(&self) -> u64 {
        std::fs::metadata(format!("/proc/{}/ns/net", self.pid()))
            .unwrap()
            .ino()
    }
}

impl Drop for NetnsHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn self_ns(kind: &str) -> u64 {
    std::fs::metadata(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .ino()
}

#[test]
fn e6_unshare_net_opener_gets_its_own_ring() {
    if !tools() {
        return;
    }
    let d = Daemon::start();
    d.feed(6, "host only");
    d.wait_host_records(1);
    let out = sh(&format!(
        "unshare -n sh -c 'echo \"<6>in netns\" > {k}; {dump}'",
        k = d.kmsg().display(),
        dump = dump_cmd(&d.kmsg())
    ));
    assert_eq!(texts(&out.out), vec!["in netns"]);
    assert_eq!(host_texts(&d), vec!["host only"]);
}

#[test]
fn e6_host_network_container_with_own_pid_ns_does_not_get_host_ring() {
    if !tools() {
        return;
    }
    let d = Daemon::start();
    d.feed(6, "host secret");
    d.wait_host_records(1);
    // Same network namespace as the host (the key), own pid namespace: the pid ns ring.
    let out = sh(&format!(
        "unshare -p -f sh -c 'echo \"<6>in pidns\" > {k}; {dump}'",
        k = d.kmsg().display(),
        dump = dump_cmd(&d.kmsg())
    ));
    assert_eq!(texts(&out.out), vec!["in pidns"], "{}", out.err);
    assert_eq!(host_texts(&d), vec!["host secret"]);
    let stats = d.stats();
    let kinds: Vec<&str> = stats["rings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"pid"), "{stats}");
}

#[test]
fn e6_mount_namespace_only_opener_gets_the_mount_ns_ring() {
    if !tools() {
        return;
    }
    let d = Daemon::start();
    d.feed(6, "host secret");
    d.wait_host_records(1);
    let out = sh(&format!(
        "unshare -m sh -c 'echo \"<6>in mntns\" > {k}; {dump}'",
        k = d.kmsg().display(),
        dump = dump_cmd(&d.kmsg())
    ));
    assert_eq!(texts(&out.out), vec!["in mntns"], "{}", out.err);
    assert_eq!(host_texts(&d), vec!["host secret"]);
}

#[test]
fn e6_ns_directory_visibility() {
    if !tools() {
        return;
    }
    let d = Daemon::start();
    let member = NetnsHolder::new();
    let ino = member.net_inode();
    let host_ino = self_ns("net");
    // Create the ring from inside the namespace.
    let out = sh(&format!(
        "nsenter -t {} -n sh -c 'echo \"<6>member wrote\" > {}'",
        member.pid(),
        d.kmsg().display()
    ));
    assert_eq!(out.code, 0, "{}", out.err);

    // Host root sees every ring.
    let mut names: Vec<String> = std::fs::read_dir(d.ns_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want = vec![host_ino.to_string(), ino.to_string()];
    want.sort();
    assert_eq!(names, want);
    let out = sh(&dump_cmd(&d.ns_dir().join(ino.to_string()).join("kmsg")));
    assert_eq!(texts(&out.out), vec!["member wrote"]);

    // A member sees only its own namespace's ring, and can read it.
    let out = sh(&format!(
        "nsenter -t {} -n ls {}",
        member.pid(),
        d.ns_dir().display()
    ));
    assert_eq!(
        out.out.split_whitespace().collect::<Vec<_>>(),
        vec![ino.to_string()]
    );
    let out = sh(&format!(
        "nsenter -t {} -n {}",
        member.pid(),
        dump_cmd(&d.ns_dir().join(ino.to_string()).join("kmsg"))
    ));
    assert_eq!(texts(&out.out), vec!["member wrote"]);

    // A non-member (another network namespace) sees nothing: ENOENT.
    let out = sh(&format!(
        "unshare -n sh -c 'ls {ns}; ls {ns}/{ino}; cat {ns}/{host_ino}/kmsg'",
        ns = d.ns_dir().display()
    ));
    assert_eq!(out.out, "");
    assert_eq!(
        out.err.matches("No such file or directory").count(),
        2,
        "{}",
        out.err
    );

    // A member that is not root of the namespace: visible, but EACCES on open (restrict root).
    let out = sh(&format!(
        "nsenter -t {} -n setpriv --reuid=65534 --regid=65534 --clear-groups \
         sh -c 'ls {ns}; cat {ns}/{ino}/kmsg'",
        member.pid(),
        ns = d.ns_dir().display()
    ));
    assert_eq!(out.out.trim(), ino.to_string());
    assert!(out.err.contains("Permission denied"), "{}", out.err);
}

#[test]
fn e6_a1_3_unprivileged_host_user_is_refused_like_dmesg_restrict() {
    if !tools() {
        return;
    }
    let d = Daemon::start();
    d.feed(6, "host record");
    d.wait_host_records(1);
    let nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups";
    // Read: EPERM, like the device with dmesg_restrict=1 (A1.3).
    let out = sh(&format!("{nobody} {}", dump_cmd(&d.kmsg())));
    assert!(out.err.contains("Operation not permitted"), "{}", out.err);
    assert_eq!(out.out, "");
    // Write: EACCES from the DAC-like rule on a 0644 root file (A1.2).
    let out = sh(&format!("{nobody} sh -c 'echo x > {}'", d.kmsg().display()));
    assert!(out.err.contains("Permission denied"), "{}", out.err);
    // The stats file is for host root only.
    let out = sh(&format!("{nobody} cat {}", d.stats_path().display()));
    assert!(out.err.contains("Permission denied"), "{}", out.err);
}

#[test]
fn e6_restrict_none_lets_any_member_read_but_not_write() {
    if !tools() {
        return;
    }
    let d = Daemon::start_args(&["--restrict", "none"]);
    d.feed(6, "visible to all");
    d.wait_host_records(1);
    let nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups";
    let out = sh(&format!("{nobody} {}", dump_cmd(&d.kmsg())));
    assert_eq!(texts(&out.out), vec!["visible to all"]);
    let out = sh(&format!("{nobody} sh -c 'echo x > {}'", d.kmsg().display()));
    assert!(out.err.contains("Permission denied"), "{}", out.err);
}

#[test]
fn e6_root_of_an_owning_user_namespace_may_read_and_write() {
    if !tools() {
        return;
    }
    let d = Daemon::start();
    // unshare -U -r -n: the new network namespace is owned by the new user namespace, in which
    // the caller is root.
    let out = sh(&format!(
        "unshare -U -r -n sh -c 'echo \"<6>userns root\" > {k} && {dump}'",
        k = d.kmsg().display(),
        dump = dump_cmd(&d.kmsg())
    ));
    assert_eq!(texts(&out.out), vec!["userns root"], "{}", out.err);
    // Root of a user namespace that does not own the network namespace gets nothing.
    let out = sh(&format!(
        "unshare -n unshare -U -r sh -c '{dump}; echo x > {k}'",
        k = d.kmsg().display(),
        dump = dump_cmd(&d.kmsg())
    ));
    assert!(out.err.contains("Operation not permitted"), "{}", out.err);
    assert!(out.err.contains("Permission denied"), "{}", out.err);
}

#[test]
fn stats_json_reports_rings_and_host_counters() {
    if !tools() {
        return;
    }
    let d = Daemon::start();
    d.feed_many(3, "counted");
    d.wait_host_records(3);
    let r1 = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    let r2 = open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    let w = open_raw(&d.kmsg(), libc::O_WRONLY).unwrap();
    let out = sh(&format!(
        "unshare -n sh -c 'echo \"<6>c\" > {}'",
        d.kmsg().display()
    ));
    assert_eq!(out.code, 0);
    let s = d.stats();
    assert_eq!(s["host"]["records_read"], 3, "{s}");
    assert_eq!(s["host"]["records_lost"], 0);
    assert_eq!(s["key"], "net");
    let rings = s["rings"].as_array().unwrap();
    assert!(rings.len() >= 2);
    let host = &rings[0];
    assert_eq!(host["host"], true);
    assert_eq!(host["kind"], "net");
    assert_eq!(host["inode"], self_ns("net"));
    assert_eq!(host["records"], 3);
    assert!(host["bytes"].as_u64().unwrap() > 0);
    assert_eq!(host["overruns"], 0);
    assert_eq!(host["open_readers"], 2);
    assert_eq!(host["writes_dropped_ratelimit"], 0);
    let c = rings.iter().find(|r| r["host"] == false).unwrap();
    assert_eq!(c["records"], 1);
    assert_eq!(c["writes"], 1);
    close_raw(r1);
    close_raw(r2);
    close_raw(w);
}

#[test]
fn rings_are_reclaimed_when_the_namespace_is_gone_and_nothing_holds_them() {
    if !tools() {
        return;
    }
    let d = Daemon::start_args(&["--reclaim-interval", "1"]);
    let member = NetnsHolder::new();
    let ino = member.net_inode();
    let out = sh(&format!(
        "nsenter -t {} -n sh -c 'echo \"<6>short lived\" > {}'",
        member.pid(),
        d.kmsg().display()
    ));
    assert_eq!(out.code, 0, "{}", out.err);
    let has_ring = |d: &Daemon| {
        d.stats()["rings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["inode"] == ino)
    };
    assert!(has_ring(&d));
    // Host root holds the ring open; the namespace goes away.
    let held = open_raw(
        &d.ns_dir().join(ino.to_string()).join("kmsg"),
        libc::O_RDONLY | libc::O_NONBLOCK,
    )
    .unwrap();
    drop(member);
    std::thread::sleep(Duration::from_secs(3));
    assert!(has_ring(&d), "an open file keeps the ring");
    let r = String::from_utf8(read_raw(held, 8192).unwrap()).unwrap();
    assert_eq!(text_of(&r), "short lived");
    close_raw(held);
    let deadline = Instant::now() + TIMEOUT;
    while has_ring(&d) {
        assert!(Instant::now() < deadline, "ring was not reclaimed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(d.log_text().contains("reclaimed ring"));
}

#[test]
fn e6_a_new_namespace_reusing_an_inode_never_sees_the_dead_namespace_ring() {
    if !tools() {
        return;
    }
    // nsfs inode numbers are reused as soon as a namespace is freed; the ring of the dead
    // namespace (not yet reclaimed) must not be handed to the new one. Mount namespaces are
    // freed synchronously when their last process exits, so reuse is quick to provoke.
    let d = Daemon::start_args(&["--reclaim-interval", "3600"]);
    let mut reused = false;
    for attempt in 0..20 {
        let first = sh(&format!(
            "unshare -m sh -c 'stat -L -c %i /proc/self/ns/mnt; echo \"<6>old {attempt}\" > {}'",
            d.kmsg().display()
        ));
        std::thread::sleep(Duration::from_millis(50));
        let second = sh(&format!(
            "unshare -m sh -c 'stat -L -c %i /proc/self/ns/mnt; {}'",
            dump_cmd(&d.kmsg())
        ));
        assert!(
            !second.out.contains("old "),
            "a new namespace read a dead namespace's ring: {}",
            second.out
        );
        if second.out.lines().next() == first.out.lines().next() {
            reused = true;
            break;
        }
    }
    assert!(
        reused,
        "could not provoke nsfs inode reuse in 20 attempts (busy machine?)"
    );
    assert!(d.log_text().contains("reused by a new namespace"));
}
