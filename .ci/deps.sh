#!/usr/bin/env bash
# Shared by .ci/test.sh and .ci/start.sh: install the Debian packages kmsgfs and its tests use,
# only those whose command is missing. Sourced, not executed.

kmsgfs_need() { # kmsgfs_need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || KMSGFS_MISSING+=("$2")
}

kmsgfs_install_deps() {
    KMSGFS_MISSING=()
    kmsgfs_need dmesg util-linux
    kmsgfs_need unshare util-linux
    kmsgfs_need setpriv util-linux
    kmsgfs_need ip iproute2
    kmsgfs_need timeout coreutils
    kmsgfs_need taskset util-linux
    kmsgfs_need busybox busybox-static
    kmsgfs_need cc gcc
    # BPF attribution: build (clang, libelf, zlib via pkg-config) and its netfilter/OOM tests.
    kmsgfs_need clang clang
    kmsgfs_need pkg-config pkg-config
    [ -e /usr/include/libelf.h ] || KMSGFS_MISSING+=(libelf-dev)
    [ -e /usr/include/zlib.h ] || KMSGFS_MISSING+=(zlib1g-dev)
    kmsgfs_need iptables iptables
    kmsgfs_need nft nftables
    kmsgfs_need ping iputils-ping
    # syslog(2) agent tests: real runc and crun containers.
    kmsgfs_need runc runc
    kmsgfs_need crun crun
    kmsgfs_need podman podman
    kmsgfs_need systemd-nspawn systemd-container
    kmsgfs_need dockerd docker.io
    kmsgfs_need containerd containerd
    kmsgfs_need nsenter util-linux
    kmsgfs_need strace strace
    kmsgfs_need lxc-start lxc
    # Restart tests: standalone journald and journalctl, python3 for a raw holder client.
    kmsgfs_need journalctl systemd
    [ -x /lib/systemd/systemd-journald ] || KMSGFS_MISSING+=(systemd)
    kmsgfs_need python3 python3
    # The real clients (tests/clients_real.rs): rsyslog, the kubelet's parser (Go), less.
    kmsgfs_need rsyslogd rsyslog
    kmsgfs_need go golang-go
    [ -d /usr/share/gocode/src/github.com/euank/go-kmsg-parser ] || KMSGFS_MISSING+=(golang-github-euank-go-kmsg-parser-dev)
    kmsgfs_need less less
    kmsgfs_need dd coreutils
    if ((${#KMSGFS_MISSING[@]})); then
        echo "kmsgfs: installing missing packages: ${KMSGFS_MISSING[*]}"
        if [ "$(id -u)" -ne 0 ]; then
            echo "kmsgfs: need root to apt-get install ${KMSGFS_MISSING[*]}" >&2
            return 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${KMSGFS_MISSING[@]}"
    fi
    command -v cargo >/dev/null 2>&1 || { echo "kmsgfs: cargo (Rust toolchain) is required" >&2; return 1; }
    [ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
    [ -e /dev/fuse ] || { echo "kmsgfs: /dev/fuse is missing (load the fuse module)" >&2; return 1; }
}
