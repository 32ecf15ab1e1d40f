#!/usr/bin/env bash
# Build kmsgfs, start the daemon with its default configuration on /run/kmsgfs, run
# `kmsgfs demo` against it (two throwaway containers made with `kmsgfs run`, each seeing only its
# own kernel log), then keep serving until Ctrl-C. `--demo-only` stops the daemon after the demo
# and exits with the demo's status.
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
export RUST_LOG="${RUST_LOG:-info}"
# The holder keeps the rings and seccomp listeners across a restart of the daemon
# (docs/deploy.md "Restarts"): kill -9 the daemon and start it again, containers keep their logs.
holder_sock=/run/kmsgfs.holder.sock
"$bin" holder --socket "$holder_sock" 2>>"$log" &
holder=$!
for _ in $(seq 100); do [ -S "$holder_sock" ] && break; sleep 0.1; done
"$bin" serve --mount "$mnt" --holder-socket "$holder_sock" 2>>"$log" &
daemon=$!
stop() {
    kill -INT "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true
    kill -TERM "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true
    rm -f "$log"
}
trap stop EXIT
for _ in $(seq 100); do grep -q ready "$log" && break; kill -0 "$daemon" || { cat "$log"; exit 1; }; sleep 0.1; done
grep -q ready "$log" || { cat "$log"; echo "daemon did not become ready" >&2; exit 1; }
echo "== kmsgfs serve is ready on $mnt (log: RUST_LOG=$RUST_LOG)"

# Two throwaway containers, side by side with the host; `kmsgfs demo` explains each step,
# cleans up after itself and fails if what it shows is not what kmsgfs promises.
demo_rc=0
"$bin" demo --mount "$mnt" || demo_rc=$?
echo "== metrics"
cat "$mnt/metrics"

if [ "${1:-}" = "--demo-only" ]; then exit "$demo_rc"; fi
echo "== serving on $mnt; bind $mnt/kmsg over /dev/kmsg in a container. Ctrl-C stops."
echo "== daemon log follows"
tail -n +1 -f "$log" &
wait "$daemon"
