//! `kmsgfs oci-hook` with a real runc container (root; Debian `runc` and `busybox-static`):
//! the hook binds the daemon's `kmsg` over the container's `/dev/kmsg`, and a read inside sees
//! the container's own records, not another container's and not the host's.

use std::path::Path;
use std::process::Output;

use crate::support;
use crate::support::seccomp::oci::{self, Runtime};
use crate::support::{require_root, require_tool, Daemon};
use serde_json::{json, Value};

/// The harness's runc bundle with a createContainer hook running `kmsgfs oci-hook`.
struct Bundle(oci::Bundle);

impl Bundle {
    fn new() -> Bundle {
        Bundle(oci::Bundle::new(
            Runtime::Runc,
            &["sh", "dd", "timeout", "echo", "dmesg"],
        ))
    }

    fn configure(&self, script: &str, mount: &Path) {
        self.configure_with(script, mount, &[], |_| {});
    }

    /// [`Bundle::configure`] with extra hook arguments and a last edit of config.json.
    fn configure_with(
        &self,
        script: &str,
        mount: &Path,
        hook_args: &[&str],
        edit: impl FnOnce(&mut Value),
    ) {
        let mut c = self.0.default_spec();
        c["process"]["terminal"] = json!(false);
        c["process"]["args"] = json!(["sh", "-c", script]);
        let mut args = vec![
            json!("kmsgfs"),
            json!("oci-hook"),
            json!("--mount"),
            json!(mount),
        ];
        args.extend(hook_args.iter().map(|a| json!(a)));
        c["hooks"] = json!({
            "createContainer": [{
                "path": env!("CARGO_BIN_EXE_kmsgfs"),
                "args": args,
                "env": ["RUST_LOG=debug"]
            }]
        });
        edit(&mut c);
        self.0.write_config(&c);
    }

    fn run(&mut self, id: &str) -> Output {
        self.0.run(id, support::seccomp::TIMEOUT)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Write `line` to /dev/kmsg, then read /dev/kmsg with plain read(2)s until the read blocks
/// (ended by `timeout`, a functional bound: the records are there before the read starts).
/// Not busybox `cat`: it copies with sendfile(2), which over this FUSE file returned one
/// truncated record and then end-of-file (the real /dev/kmsg refuses sendfile, so `cat` falls
/// back to read(2) there).
fn script(line: &str) -> String {
    format!("echo '<6>{line}' > /dev/kmsg && timeout 3 dd if=/dev/kmsg bs=8192 2>/dev/null; echo status=$?")
}

#[test]
fn oci_hook_binds_the_containers_own_ring_in_runc() {
    if !(require_root() && require_tool("runc") && require_tool("busybox")) {
        return;
    }
    let d = Daemon::start();
    let tag = format!("kmsgfs-hook-{}", std::process::id());
    d.feed(6, &format!("{tag}: host record"));
    d.wait_host_records(1);
    let mut b = Bundle::new();

    b.configure(&script(&format!("{tag}: from B")), d.dir());
    let ob = b.run(&format!("{tag}-b"));
    b.configure(&script(&format!("{tag}: from A")), d.dir());
    let oa = b.run(&format!("{tag}-a"));

    for (name, o, own, other) in [
        ("A", &oa, "from A", "from B"),
        ("B", &ob, "from B", "from A"),
    ] {
        let out = text(&o.stdout);
        let ctx = format!(
            "container {name}\nstdout:\n{out}\nstderr:\n{}",
            text(&o.stderr)
        );
        assert!(out.contains("status="), "the container did not run\n{ctx}");
        assert!(
            out.contains(&format!("{tag}: {own}")),
            "own record missing\n{ctx}"
        );
        assert!(
            !out.contains(&format!("{tag}: {other}")),
            "other's record\n{ctx}"
        );
        assert!(!out.contains("host record"), "host record leaked\n{ctx}");
    }
}

#[test]
fn oci_hook_fails_loudly_without_a_daemon() {
    if !(require_root() && require_tool("runc") && require_tool("busybox")) {
        return;
    }
    let mut b = Bundle::new();
    let missing = std::env::temp_dir().join(format!("kmsgfs-no-daemon-{}", std::process::id()));
    b.configure("echo started", &missing);
    let o = b.run(&format!("kmsgfs-hook-nodaemon-{}", std::process::id()));
    assert!(
        !o.status.success(),
        "the container must not start without the kmsgfs file"
    );
    assert!(!text(&o.stdout).contains("started"));
    assert!(
        text(&o.stderr).contains("kmsgfs serve"),
        "stderr names the cause: {}",
        text(&o.stderr)
    );
}

/// Adds CAP_SYSLOG to every capability set of the config.
fn grant_cap_syslog(c: &mut Value) {
    for set in kmsgfs::cli::oci_hook::CAPABILITY_SETS {
        let caps = &mut c["process"]["capabilities"][set];
        let mut list = caps.as_array().cloned().unwrap_or_default();
        list.push(json!("CAP_SYSLOG"));
        *caps = Value::Array(list);
    }
}

/// A container holding CAP_SYSLOG whose syslog(2) does not go to the agent would read the
/// HOST log through util-linux dmesg's syslog(2) fallback: the hook refuses it, so runc does
/// not start it, and the reason reaches the runtime's stderr.
#[test]
fn oci_hook_refuses_a_cap_syslog_container_whose_syslog_is_not_routed() {
    if !(require_root() && require_tool("runc") && require_tool("busybox")) {
        return;
    }
    let d = Daemon::start();
    let tag = format!("kmsgfs-hook-unrouted-{}", std::process::id());
    let mut b = Bundle::new();
    b.configure_with("echo started", d.dir(), &[], grant_cap_syslog);
    let o = b.run(&tag);
    let ctx = format!("stdout:\n{}\nstderr:\n{}", text(&o.stdout), text(&o.stderr));
    assert!(!o.status.success(), "runc started the container\n{ctx}");
    assert!(!text(&o.stdout).contains("started"), "{ctx}");
    for needle in [
        "refusing to bind kmsg",
        "CAP_SYSLOG",
        "no linux.seccomp",
        "--allow-unrouted-syslog",
    ] {
        assert!(
            text(&o.stderr).contains(needle),
            "{needle:?} missing\n{ctx}"
        );
    }
}

/// The same container, with the operator's explicit opt-out, starts (with kmsg bound).
#[test]
fn oci_hook_allow_unrouted_syslog_lets_the_operator_opt_out() {
    if !(require_root() && require_tool("runc") && require_tool("busybox")) {
        return;
    }
    let d = Daemon::start();
    let tag = format!("kmsgfs-hook-optout-{}", std::process::id());
    let mut b = Bundle::new();
    b.configure_with(
        &script(&format!("{tag}: opted out")),
        d.dir(),
        &["--allow-unrouted-syslog"],
        grant_cap_syslog,
    );
    let o = b.run(&tag);
    let ctx = format!("stdout:\n{}\nstderr:\n{}", text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "the container did not run\n{ctx}");
    assert!(
        text(&o.stdout).contains(&format!("{tag}: opted out")),
        "kmsg was not bound\n{ctx}"
    );
}

/// CAP_SYSLOG with syslog(2) routed to the agent (the `kmsgfs seccomp-profile` rule and
/// `listenerPath`): the hook binds kmsg, and busybox `dmesg` (syslog(2) READ_ALL) prints the
/// container's ring, not the host's.
#[test]
fn oci_hook_binds_into_a_cap_syslog_container_whose_syslog_is_routed() {
    if !(require_root() && require_tool("runc") && require_tool("busybox")) {
        return;
    }
    let d = Daemon::start();
    let tag = format!("kmsgfs-hook-routed-{}", std::process::id());
    d.feed(6, &format!("{tag}: host record"));
    d.wait_host_records(1);
    let socket = kmsgfs::frontends::seccomp::default_socket_for(d.dir());
    let mut b = Bundle::new();
    b.configure_with(
        &format!("echo '<6>{tag}: routed' > /dev/kmsg && dmesg; echo status=$?"),
        d.dir(),
        &[],
        |c| {
            grant_cap_syslog(c);
            c["linux"]["seccomp"] = kmsgfs::frontends::seccomp::seccomp_profile(&socket);
        },
    );
    let o = b.run(&tag);
    let out = text(&o.stdout);
    let ctx = format!("stdout:\n{out}\nstderr:\n{}", text(&o.stderr));
    assert!(out.contains("status=0"), "the container did not run\n{ctx}");
    assert!(
        out.contains(&format!("{tag}: routed")),
        "own record missing\n{ctx}"
    );
    assert!(!out.contains("host record"), "host record leaked\n{ctx}");
}
