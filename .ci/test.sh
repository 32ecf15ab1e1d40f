#!/usr/bin/env bash
# Run every kmsgfs check: formatting, lints, unit/property/integration tests (real FUSE mounts,
# real dmesg; needs root), the loom model of the ring protocol (lints and loom beside the
# integration suites), and a final check that no kmsgfs mount was left behind.
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
echo "== cargo test (release): unit and property tests, the criterion benches as smoke tests"
# The other benches are measurement programs that do nothing under `cargo test`; clippy (below)
# compiles them.
cargo test --release --lib --bins --bench ring --bench router
echo "== integration suites (release), one suite after another"
# One binary holds every suite (tests/main.rs); a suite's tests run in parallel as before, but
# two suites never run at once: they start daemons, runtimes and namespaces that were never
# meant to share the machine with another suite's.
cargo test --release --test integration --no-run
bin=$(cargo test --release --test integration --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\/integration-[^"]*\)".*/\1/p')
[ -x "$bin" ] || { echo "integration test binary not found" >&2; exit 1; }
# clippy and the loom model are CPU work that needs no root and touches nothing the suites use
# (their artifacts have other hashes than the integration binary, which is built by now); they
# run beside the suites, which mostly wait on runtimes and timers, at the lowest priority so
# they take only what the suites leave idle (docs/benchmarks.md "CI wall time").
side_log=$(mktemp)
(
    echo "== cargo clippy"
    nice -n 19 cargo clippy --all-targets --release -- -D warnings
    echo "== loom model of the ring (--features loom)"
    nice -n 19 cargo test --release --lib --features loom loom
) >"$side_log" 2>&1 &
side=$!
trap 'kill "$side" 2>/dev/null || true' EXIT
suites=$(sed -n 's/^mod \([a-z0-9_]*\);$/\1/p' tests/main.rs | grep -vx support)
listed=$("$bin" --list | grep -c ': test$')
counted=0
failed=
for suite in $suites; do
    n=$("$bin" --list "$suite::" | grep -c ': test$' || true)
    counted=$((counted + n))
    echo "-- $suite ($n tests)"
    "$bin" "$suite::" || failed="$failed $suite"
done
# Every test belongs to exactly one suite: none is left out by the loop.
[ "$counted" -eq "$listed" ] || { echo "suites ran $counted of $listed tests" >&2; exit 1; }
[ -z "$failed" ] || { echo "failed suites:$failed" >&2; exit 1; }
side_rc=0
wait "$side" || side_rc=$?
trap - EXIT
cat "$side_log"
rm -f "$side_log"
[ "$side_rc" -eq 0 ] || { echo "clippy or the loom model failed" >&2; exit 1; }
echo "== leftover mounts"
tmp="${TMPDIR:-/tmp}"
if awk -v t="$tmp/" '/ - fuse kmsgfs / && index($5, t) == 1 { print; found = 1 } END { exit !found }' /proc/self/mountinfo; then
    echo "a kmsgfs test mount was left behind" >&2
    exit 1
fi
echo "kmsgfs: all checks passed"
