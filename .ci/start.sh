#!/usr/bin/env bash
# Build kmsgfs, start the daemon with its default configuration on /run/kmsgfs, show a short
# demo (two throwaway containers made with `kmsgfs run`, each seeing only its own kernel log),
# then keep serving until Ctrl-C. `--demo-only` stops the daemon after the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/deps.sh
kmsgfs_install_deps
[ "$(id -u)" -eq 0 ] || { echo "kmsgfs serve needs root (FUSE mount with allow_other)" >&2; exit 1; }

cargo build --release --quiet
bin="$PWD/target/release/kmsgfs"
mnt=/run/kmsgfs
mkdir -p "$mnt"
log="$(mktemp)"
RUST_LOG="${RUST_LOG:-info}" "$bin" serve --mount "$mnt" 2>"$log" &
daemon=$!
stop() { kill -INT "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; rm -f "$log"; }
trap stop EXIT
for _ in $(seq 100); do grep -q ready "$log" && break; kill -0 "$daemon" || { cat "$log"; exit 1; }; sleep 0.1; done
grep -q ready "$log" || { cat "$log"; echo "daemon did not become ready" >&2; exit 1; }
echo "== kmsgfs serve is ready on $mnt (log: RUST_LOG=$RUST_LOG)"

tag="demo-$$"
echo "== container A writes a line to its /dev/kmsg and runs dmesg"
"$bin" run --mount "$mnt" -- sh -c "echo '$tag: hello from A' > /dev/kmsg; dmesg"
echo "== container B writes its own line; it cannot see A's"
"$bin" run --mount "$mnt" -- sh -c "echo '$tag: hello from B' > /dev/kmsg; dmesg"
echo "== the host's real log holds neither line:"
dmesg | grep -c "$tag" || true
echo "== stats"
cat "$mnt/stats"; echo

if [ "${1:-}" = "--demo-only" ]; then exit 0; fi
echo "== serving on $mnt; bind $mnt/kmsg over /dev/kmsg in a container. Ctrl-C stops."
wait "$daemon"
