//! The shipped deployment files parse, and agree with the code that generates or reads them:
//! docs/deploy/kubernetes (DaemonSet, pod example, Localhost seccomp profile),
//! docs/deploy/hooks.d/kmsgfs.json, docs/deploy/systemd/kmsgfs.service, and `kmsgfs man`.

use std::path::{Path, PathBuf};
use std::process::Command;

use kmsgfs::frontends::seccomp::seccomp_profile_json;

/// The agent socket the DaemonSet passes to `--seccomp-socket`, and the profile's
/// `listenerPath`.
const K8S_SOCKET: &str = "/run/kmsgfs.d/seccomp.sock";

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn read(p: &str) -> String {
    std::fs::read_to_string(repo(p)).unwrap_or_else(|e| panic!("read {p}: {e}"))
}

fn yaml(p: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&read(p)).unwrap_or_else(|e| panic!("{p} is not YAML: {e}"))
}

#[test]
fn k8s_seccomp_profile_is_the_generated_one() {
    let path = "docs/deploy/kubernetes/seccomp-kmsgfs.json";
    let want = seccomp_profile_json(Path::new(K8S_SOCKET));
    if std::env::var("KMSGFS_BLESS").as_deref() == Ok("1") {
        std::fs::write(repo(path), &want).unwrap();
    }
    let got = read(path);
    let _: serde_json::Value = serde_json::from_str(&got).expect("profile is JSON");
    assert_eq!(
        got, want,
        "{path} differs from seccomp_profile_json({K8S_SOCKET}); regenerate with KMSGFS_BLESS=1"
    );
}

/// The holder survives a rollout of the daemon (its own DaemonSet, updated only on delete),
/// runs in the host pid namespace like the daemon (it accepts only peers of its own), and
/// listens where the daemon's `--holder-socket` points; the systemd units agree the same way.
#[test]
fn the_holder_is_deployed_apart_from_the_daemon_on_the_socket_it_uses() {
    let args_of = |d: &serde_yaml::Value| -> Vec<String> {
        d["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    };
    let h = yaml("docs/deploy/kubernetes/holder-daemonset.yaml");
    let d = yaml("docs/deploy/kubernetes/daemonset.yaml");
    assert_eq!(h["kind"], "DaemonSet");
    assert_ne!(h["metadata"]["name"], d["metadata"]["name"]);
    assert_eq!(h["spec"]["updateStrategy"]["type"], "OnDelete");
    assert_eq!(h["spec"]["template"]["spec"]["hostPID"], true);
    let (ha, da) = (args_of(&h), args_of(&d));
    assert_eq!(ha[0], "holder");
    let sock = &ha[ha.iter().position(|a| a == "--socket").unwrap() + 1];
    let used = &da[da.iter().position(|a| a == "--holder-socket").unwrap() + 1];
    assert_eq!(sock, used);
    let hu = read("docs/deploy/systemd/kmsgfs-holder.service");
    let du = read("docs/deploy/systemd/kmsgfs.service");
    assert!(hu.contains("kmsgfs holder --socket /run/kmsgfs.holder.sock"));
    assert!(du.contains("--holder-socket /run/kmsgfs.holder.sock"));
    assert!(du.contains("Wants=kmsgfs-holder.service"));
}

#[test]
fn k8s_daemonset_has_what_the_daemon_needs() {
    let d = yaml("docs/deploy/kubernetes/daemonset.yaml");
    assert_eq!(d["kind"], "DaemonSet");
    let spec = &d["spec"]["template"]["spec"];
    assert_eq!(spec["hostPID"], true);
    let c = &spec["containers"][0];
    assert_eq!(c["securityContext"]["privileged"], true);
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "serve");
    let socket = args.iter().position(|a| *a == "--seccomp-socket").unwrap();
    assert_eq!(
        args[socket + 1],
        K8S_SOCKET,
        "profile listenerPath and daemon socket agree"
    );
    let mount = args.iter().position(|a| *a == "--mount").unwrap();
    let mount = args[mount + 1];

    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let by_path = |p: &str| {
        mounts
            .iter()
            .find(|m| m["mountPath"] == p)
            .unwrap_or_else(|| panic!("no volumeMount at {p}"))
    };
    for p in ["/dev/fuse", "/sys/fs/bpf", "/sys/kernel/btf"] {
        by_path(p);
    }
    let state = mounts
        .iter()
        .find(|m| m["mountPropagation"] == "Bidirectional")
        .expect("a Bidirectional host directory");
    let state_path = state["mountPath"].as_str().unwrap();
    assert!(mount.starts_with(state_path) && K8S_SOCKET.starts_with(state_path));

    // The pod example binds the file the daemon serves and uses the profile.
    let pod = yaml("docs/deploy/kubernetes/pod-example.yaml");
    let vol = &pod["spec"]["volumes"][0]["hostPath"]["path"];
    assert_eq!(vol.as_str().unwrap(), format!("{mount}/kmsg"));
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/dev/kmsg"
    );
    assert_eq!(
        pod["spec"]["securityContext"]["seccompProfile"]["type"],
        "Localhost"
    );
}

#[test]
fn hooks_d_entry_runs_oci_hook_at_create_container() {
    let v: serde_json::Value =
        serde_json::from_str(&read("docs/deploy/hooks.d/kmsgfs.json")).unwrap();
    assert_eq!(v["version"], "1.0.0");
    assert_eq!(v["stages"], serde_json::json!(["createContainer"]));
    assert_eq!(v["hook"]["args"][1], "oci-hook");
    assert!(v["when"].is_object());
}

#[test]
fn systemd_unit_is_type_notify_and_keeps_fuse_bpf_ptrace() {
    let u = read("docs/deploy/systemd/kmsgfs.service");
    assert!(u.contains("\nType=notify\n"));
    for cap in ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_BPF"] {
        assert!(u.contains(cap), "{cap}");
    }
    assert!(u.contains("DeviceAllow=/dev/fuse rw"));
    for forbidden in [
        "\nPrivateMounts=yes",
        "\nProtectProc=",
        "\nProtectKernelLogs=yes",
    ] {
        assert!(!u.contains(forbidden), "{forbidden:?} would break kmsgfs");
    }
}

#[test]
fn man_pages_cover_every_subcommand() {
    let out = std::env::temp_dir().join(format!("kmsgfs-man-{}", std::process::id()));
    let st = Command::new(env!("CARGO_BIN_EXE_kmsgfs"))
        .args(["man", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let top = std::fs::read_to_string(out.join("kmsgfs.1")).unwrap();
    assert!(
        top.starts_with(".ie") || top.contains(".TH kmsgfs"),
        "{top}"
    );
    for sub in ["serve", "run", "seccomp-profile", "demo", "oci-hook", "man"] {
        // roff escapes '-' as '\-'.
        let roff = sub.replace('-', "\\-");
        assert!(top.contains(&roff), "kmsgfs.1 lacks {sub}");
        let page = std::fs::read_to_string(out.join(format!("kmsgfs-{sub}.1")))
            .unwrap_or_else(|e| panic!("kmsgfs-{sub}.1: {e}"));
        assert!(page.contains(&format!("kmsgfs\\-{roff}")), "{page}");
    }
    std::fs::remove_dir_all(&out).unwrap();
}
