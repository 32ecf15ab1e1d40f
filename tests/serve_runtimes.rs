//! Real OCI runtimes against the real `kmsgfs serve`: the bundle's seccomp profile points
//! `listenerPath` at the daemon's agent socket (`DIR.seccomp.sock`) and a bind mount puts the
//! daemon's `DIR/kmsg` at `/dev/kmsg`. No `io.kmsgfs.key` annotation: the daemon resolves the
//! ring from the container init's namespaces, exactly like the FUSE open, so `syslog(2)` and
//! `/dev/kmsg` meet in one ring per container (docs/deploy.md).
//!
//! The rootfs holds only the static busybox, so the clients are busybox `dmesg` and
//! `dmesg -c` (syslog(2) READ_ALL / READ_CLEAR) and `cat /dev/kmsg`; util-linux is not in it.
//! `/proc/kmsg` is masked: runc refuses bind mounts onto `/proc` paths outside its allow-list.
//! Root only; needs `runc`, `crun` and `busybox`.

use std::path::Path;

use crate::support;
use crate::support::seccomp::oci::{Bundle, Runtime};
use crate::support::seccomp::{stderr, stdout, unique_tag};
use serde_json::json;

/// Write config.json running `sh -c <script>` with CAP_SYSLOG, the kmsgfs profile on
/// `socket`, and the daemon's `kmsg_dir/kmsg` bind-mounted at `/dev/kmsg`.
fn configure(b: &Bundle, script: &str, kmsg_dir: &Path, socket: &Path) {
    configure_caps(b, script, kmsg_dir, socket, true);
}

/// [`configure`], with CAP_SYSLOG only if `cap_syslog` (else the runtime's default set).
fn configure_caps(b: &Bundle, script: &str, kmsg_dir: &Path, socket: &Path, cap_syslog: bool) {
    let mut c = b.kmsgfs_spec(&["sh", "-c", script], socket, cap_syslog);
    c["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/dev/kmsg",
        "type": "bind",
        "source": kmsg_dir.join("kmsg"),
        "options": ["bind"]
    }));
    b.write_config(&c);
}

fn containers_see_only_their_rings(rt: Runtime) {
    if !(support::require_root()
        && support::require_tool("busybox")
        && support::require_tool(rt.bin()))
    {
        return;
    }
    let d = support::Daemon::start_args(&["--devkmsg", "on"]);
    d.feed(6, "kmsgfs-host-ring-record-not-for-containers");
    let socket = kmsgfs::frontends::seccomp::default_socket_for(d.dir());
    let mut b = Bundle::new(rt, &["sh", "dmesg", "cat", "echo"]);
    let mut tags = Vec::new();
    for n in 0..2 {
        let t = unique_tag(&format!("{}-{n}", rt.bin()));
        let script = format!(
            "echo '<6>{t}' > /dev/kmsg; dmesg; echo ===; dmesg -c; echo ===; dmesg; echo done"
        );
        configure(&b, &script, d.dir(), &socket);
        let out = b.run(
            &format!("kmsgfs-serve-{}-{n}", std::process::id()),
            support::TIMEOUT * 3,
        );
        let text = stdout(&out);
        assert!(
            out.status.success(),
            "{}: {}\n{text}",
            rt.bin(),
            stderr(&out)
        );
        let parts: Vec<&str> = text.split("===\n").collect();
        assert_eq!(parts.len(), 3, "{text}");
        assert_eq!(parts[0].matches(&t).count(), 1, "dmesg: {text}");
        assert_eq!(parts[1].matches(&t).count(), 1, "dmesg -c: {text}");
        assert_eq!(parts[2].matches(&t).count(), 0, "dmesg after -c: {text}");
        assert!(parts[2].ends_with("done\n"), "{text}");
        assert!(
            !text.contains("kmsgfs-host-ring"),
            "host ring shown: {text}"
        );
        for old in &tags {
            assert!(!text.contains(old), "another container's record: {text}");
        }
        tags.push(t);
    }
}

#[test]
fn runc_syslog_and_dev_kmsg_share_the_container_ring() {
    containers_see_only_their_rings(Runtime::Runc);
}

#[test]
fn crun_syslog_and_dev_kmsg_share_the_container_ring() {
    containers_see_only_their_rings(Runtime::Crun);
}

/// One access rule (issue "every container runtime", item 1): a container with the runtime's
/// **default** capabilities (no CAP_SYSLOG) may read and clear its own ring through
/// `syslog(2)`, like through `/dev/kmsg`, under the default `--syslog-access container`; under
/// `--syslog-access kernel` the same calls get EPERM, as the kernel's rule says, and the
/// host log is never shown.
fn default_capabilities(rt: Runtime) {
    if !(support::require_root()
        && support::require_tool("busybox")
        && support::require_tool(rt.bin()))
    {
        return;
    }
    for mode in ["container", "kernel"] {
        let d = support::Daemon::start_args(&["--devkmsg", "on", "--syslog-access", mode]);
        d.feed(6, "kmsgfs-host-ring-record-not-for-containers");
        let socket = kmsgfs::frontends::seccomp::default_socket_for(d.dir());
        let mut b = Bundle::new(rt, &["sh", "dmesg", "cat", "echo", "wc"]);
        let t = unique_tag(&format!("{}-defcaps-{mode}", rt.bin()));
        // util-linux dmesg reads /dev/kmsg, `-S` uses syslog(2) like busybox; `-c` and `-C`
        // both clear the ring.
        let script = format!(
            "echo '<6>{t}' > /dev/kmsg; /usr/bin/dmesg; echo rc=$?; echo ===; \
             /usr/bin/dmesg -S; echo rc=$?; echo ===; dmesg; echo rc=$?; echo ===; \
             dmesg -c >/dev/null; echo rc=$?; /usr/bin/dmesg -C; echo rc=$?; echo ===; \
             dmesg | wc -l; /usr/bin/dmesg | wc -l; cat /dev/kmsg & sleep 0.3; kill $!; echo done"
        );
        configure_caps(&b, &script, d.dir(), &socket, false);
        let out = b.run(
            &format!("kmsgfs-defcaps-{}-{mode}", std::process::id()),
            support::TIMEOUT * 3,
        );
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            !text.contains("kmsgfs-host-ring"),
            "host ring shown: {text}"
        );
        let so = stdout(&out);
        let parts: Vec<&str> = so.split("===\n").collect();
        assert_eq!(parts.len(), 5, "{mode}: {text}");
        if mode == "container" {
            for (i, what) in [(0, "/usr/bin/dmesg"), (1, "dmesg -S"), (2, "busybox dmesg")] {
                assert_eq!(parts[i].matches(&t).count(), 1, "{what}: {text}");
                assert!(parts[i].contains("rc=0"), "{what}: {text}");
            }
            assert_eq!(parts[3], "rc=0\nrc=0\n", "dmesg -c, dmesg -C: {text}");
            assert!(
                parts[4].starts_with("0\n0\n"),
                "nothing left after dmesg -c and -C: {text}"
            );
        } else {
            // Under the kernel's rule (dmesg_restrict) reading the file needs CAP_SYSLOG too.
            for (i, what) in [(0, "/usr/bin/dmesg"), (1, "dmesg -S"), (2, "busybox dmesg")] {
                assert!(
                    parts[i].contains("rc=1") && !parts[i].contains(&t),
                    "{what}: {text}"
                );
            }
            assert!(
                text.contains("Operation not permitted"),
                "EPERM expected: {text}"
            );
            assert_eq!(
                parts[3], "rc=1\nrc=1\n",
                "dmesg -c and -C must fail: {text}"
            );
        }
    }
}

#[test]
fn runc_default_capabilities_read_and_clear_their_own_ring() {
    default_capabilities(Runtime::Runc);
}

#[test]
fn crun_default_capabilities_read_and_clear_their_own_ring() {
    default_capabilities(Runtime::Crun);
}

/// A running container's `/dev/kmsg` and `syslog(2)` across `kill -9` of the daemon (issue
/// "restart and upgrade", deploy.md table, "daemon restart"): the holder keeps the FUSE
/// connection the runtime bound at `/dev/kmsg`, the open files, the ring and the listener, so
/// the container, untouched, reads its records before and after, once each, through the file
/// and through busybox `dmesg`, and `dmesg -c` clears its ring.
fn survives_kill_9(rt: Runtime) {
    if !(support::require_root()
        && support::require_tool("busybox")
        && support::require_tool(rt.bin()))
    {
        return;
    }
    let scratch = support::seccomp::TempDir::new("runtime-restart");
    let holder = support::Holder::start(scratch.path());
    let sock = holder.socket.display().to_string();
    let args = ["--devkmsg", "on", "--holder-socket", sock.as_str()];
    let mut d = support::Daemon::start_with(support::Options::args(&args));
    let socket = kmsgfs::frontends::seccomp::default_socket_for(d.dir());
    let mut b = Bundle::new(rt, &["sh", "dmesg", "cat", "echo", "sleep", "wc"]);
    let t = unique_tag(&format!("{}-restart", rt.bin()));
    let script = format!(
        "echo '<6>{t} before' > /dev/kmsg; while [ ! -e /go ]; do sleep 0.05; done; \
         echo '<6>{t} after' > /dev/kmsg; dmesg; echo ===; cat /dev/kmsg & sleep 0.5; kill $!; \
         echo ===; dmesg -c > /dev/null; echo rc=$?; dmesg | wc -l; echo done"
    );
    configure_caps(&b, &script, d.dir(), &socket, false);
    let go = b.bundle().join("rootfs/go");
    let id = format!("kmsgfs-restart-{}-{}", rt.bin(), std::process::id());
    let runner = std::thread::spawn(move || {
        let out = b.run(&id, support::TIMEOUT * 3);
        (out, b)
    });
    // The container is up once its ring holds its first record.
    d.wait_container_rings(1);
    d.kill9();
    d.restart(support::Options::args(&args));
    std::fs::write(&go, b"").unwrap();
    let (out, b) = runner.join().unwrap();
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{}: {}\n{text}",
        rt.bin(),
        stderr(&out)
    );
    let parts: Vec<&str> = text.split("===\n").collect();
    assert_eq!(parts.len(), 3, "{text}");
    for (i, what) in ["busybox dmesg", "cat /dev/kmsg"].iter().enumerate() {
        for w in ["before", "after"] {
            assert_eq!(
                parts[i].matches(&format!("{t} {w}")).count(),
                1,
                "{what}, `{w}` once: {text}"
            );
        }
    }
    assert!(parts[2].starts_with("rc=0\n0\ndone"), "dmesg -c: {text}");
    drop(b);
    drop(d);
    drop(holder);
}

#[test]
fn runc_container_keeps_its_log_across_kill_9_of_the_daemon() {
    survives_kill_9(Runtime::Runc);
}

#[test]
fn crun_container_keeps_its_log_across_kill_9_of_the_daemon() {
    survives_kill_9(Runtime::Crun);
}
