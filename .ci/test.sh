#!/usr/bin/env bash
# Run every kmsgfs check: formatting, lints, unit/property/integration tests (real FUSE mounts,
# real dmesg; needs root), the loom model of the ring protocol, and a final check that no
# kmsgfs mount was left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/deps.sh
kmsgfs_install_deps

if [ "$(id -u)" -ne 0 ] && [ "${KMSGFS_ALLOW_SKIP:-0}" != 1 ]; then
    echo "kmsgfs tests need root (FUSE mounts, namespaces); set KMSGFS_ALLOW_SKIP=1 to skip those" >&2
    exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --all-targets --release -- -D warnings
echo "== cargo test (release)"
cargo test --release --all-targets
echo "== loom model of the ring (cfg loom)"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib loom
echo "== leftover mounts"
tmp="${TMPDIR:-/tmp}"
if awk -v t="$tmp/" '/ - fuse kmsgfs / && index($5, t) == 1 { print; found = 1 } END { exit !found }' /proc/self/mountinfo; then
    echo "a kmsgfs test mount was left behind" >&2
    exit 1
fi
echo "kmsgfs: all checks passed"
