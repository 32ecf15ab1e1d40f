//! Podman with the shipped OCI hook (`docs/deploy/hooks.d/kmsgfs.json`) and the real daemon:
//! two containers side by side with Podman's **default** capabilities (no CAP_SYSLOG), the
//! hook binding the daemon's `kmsg` over each one's `/dev/kmsg` at createContainer, and the
//! kmsgfs seccomp profile routing `syslog(2)` to the agent. Each sees only its own records in
//! `cat /dev/kmsg`, busybox `dmesg` and `/proc/kmsg` (the hook binds `proc-kmsg`), `dmesg -c`
//! clears only its own ring, the host ring is never shown; everything reached by `podman exec`,
//! the first container's also after `kill -9` of the daemon (with the holder). Run with runc and with crun (Podman's default). The hook file is the shipped
//! one with only its paths pointed at this build and this daemon (`--hooks-dir` of a private
//! directory: the host's hook directories are not touched). Root only.

use std::time::Duration;

use crate::support;
use crate::support::seccomp::oci::Runtime;
use crate::support::seccomp::podman::Podman;
use crate::support::seccomp::{ok, unique_tag};

fn two_containers_through_the_shipped_hook(rt: Runtime) {
    if !(support::require_root()
        && support::require_tool("busybox")
        && support::require_tool("podman")
        && support::require_tool(rt.bin()))
    {
        return;
    }
    let scratch = support::seccomp::TempDir::new("podman-holder");
    let holder = support::Holder::start(scratch.path());
    let sock = holder.socket.display().to_string();
    let args = ["--devkmsg", "on", "--holder-socket", sock.as_str()];
    let mut d = support::Daemon::start_with(support::Options::args(&args));
    d.feed(6, "kmsgfs-host-ring-record-not-for-containers");
    let socket = kmsgfs::frontends::seccomp::default_socket_for(d.dir());
    let mut p = Podman::new(rt, &["sh", "dmesg", "cat", "sleep", "kill", "wc"]);
    // The shipped hook, pointed at this build and this daemon.
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/deploy/hooks.d/kmsgfs.json"),
    )
    .unwrap();
    let mut hook: serde_json::Value = serde_json::from_str(&shipped).unwrap();
    hook["hook"]["path"] = env!("CARGO_BIN_EXE_kmsgfs").into();
    hook["hook"]["args"] = serde_json::json!([
        "kmsgfs",
        "oci-hook",
        "--mount",
        d.dir().display().to_string()
    ]);
    let hooks = p.dir.path().join("hooks.d");
    std::fs::create_dir_all(&hooks).unwrap();
    std::fs::write(hooks.join("kmsgfs.json"), hook.to_string()).unwrap();
    let profile = p.dir.path().join("seccomp.json");
    std::fs::write(
        &profile,
        kmsgfs::frontends::seccomp::seccomp_profile(&socket).to_string(),
    )
    .unwrap();
    let hooks_dir = hooks.display().to_string();
    let seccomp = format!("seccomp={}", profile.display());
    let mut tags = Vec::new();
    for n in 0..2 {
        let t = unique_tag(&format!("podman-hook-{}-{n}", rt.bin()));
        let name = format!("kmsgfs-podman-hook-{}-{}-{n}", rt.bin(), std::process::id());
        p.run_detached(
            &name,
            &[
                "--hooks-dir",
                &hooks_dir,
                "--annotation",
                "io.kmsgfs.enable=true",
                "--security-opt",
                &seccomp,
            ],
            &[
                "sh",
                "-c",
                &format!("echo '<6>{t}' > /dev/kmsg; exec sleep 120"),
            ],
        );
        let timeout = Duration::from_secs(60);
        if n == 0 {
            // The first container across `kill -9` of the daemon (a new one on the holder).
            d.wait_container_rings(1);
            d.kill9();
            d.restart(support::Options::args(&args));
        }
        let file = ok(
            &p.exec(
                &name,
                &["sh", "-c", "cat /dev/kmsg & sleep 0.5; kill $!"],
                timeout,
            ),
            "podman exec cat /dev/kmsg",
        );
        let sys = ok(&p.exec(&name, &["dmesg"], timeout), "podman exec dmesg");
        let util = ok(
            &p.exec(&name, &["/usr/bin/dmesg"], timeout),
            "podman exec /usr/bin/dmesg",
        );
        let util_s = ok(
            &p.exec(&name, &["/usr/bin/dmesg", "-S"], timeout),
            "podman exec /usr/bin/dmesg -S",
        );
        for (what, out) in [
            ("cat /dev/kmsg", &file),
            ("busybox dmesg", &sys),
            ("/usr/bin/dmesg", &util),
            ("/usr/bin/dmesg -S", &util_s),
        ] {
            assert_eq!(out.matches(&t).count(), 1, "{what}: {out}");
            assert!(
                !out.contains("kmsgfs-host-ring"),
                "{what} shows the host ring: {out}"
            );
            for old in &tags {
                assert!(
                    !out.contains(old),
                    "{what} shows another container's record: {out}"
                );
            }
        }
        // The hook binds `proc-kmsg` over `/proc/kmsg`, which Podman does not mask.
        let proc_kmsg = ok(
            &p.exec(
                &name,
                &[
                    "sh",
                    "-c",
                    "cat /proc/kmsg & P=$!; sleep 0.5; kill $P; wait $P; echo rc=$?",
                ],
                timeout,
            ),
            "podman exec cat /proc/kmsg",
        );
        // It blocks after the record like the kernel's file, so `kill` ends it (143).
        assert!(proc_kmsg.contains("rc=143"), "cat /proc/kmsg: {proc_kmsg}");
        assert_eq!(proc_kmsg.matches(&t).count(), 1, "/proc/kmsg: {proc_kmsg}");
        assert!(
            !proc_kmsg.contains("kmsgfs-host-ring"),
            "/proc/kmsg: {proc_kmsg}"
        );
        for old in &tags {
            assert!(
                !proc_kmsg.contains(old),
                "/proc/kmsg, another's: {proc_kmsg}"
            );
        }
        let cleared = ok(
            &p.exec(
                &name,
                &["sh", "-c", "dmesg -c >/dev/null && dmesg | wc -l"],
                timeout,
            ),
            "podman exec dmesg -c",
        );
        assert_eq!(cleared.trim(), "0", "dmesg -c clears the container's ring");
        // util-linux `dmesg -C` clears it too (a record written after `-c` first).
        let cleared = ok(
            &p.exec(
                &name,
                &[
                    "sh",
                    "-c",
                    "echo '<6>again' > /dev/kmsg && /usr/bin/dmesg -C && /usr/bin/dmesg | wc -l",
                ],
                timeout,
            ),
            "podman exec /usr/bin/dmesg -C",
        );
        assert_eq!(cleared.trim(), "0", "dmesg -C clears the container's ring");
        tags.push(t);
    }
    // The first container's ring was cleared by its own dmesg -c only; the host ring still
    // has its record.
    let fd = support::open_raw(&d.kmsg(), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    let host = support::drain(fd);
    support::close_raw(fd);
    assert!(host
        .iter()
        .any(|r| support::text_of(r) == "kmsgfs-host-ring-record-not-for-containers"));
    drop(p);
    drop(d);
    drop(holder);
}

#[test]
fn podman_runc_default_capabilities_with_the_shipped_hook() {
    two_containers_through_the_shipped_hook(Runtime::Runc);
}

#[test]
fn podman_crun_default_capabilities_with_the_shipped_hook() {
    two_containers_through_the_shipped_hook(Runtime::Crun);
}
