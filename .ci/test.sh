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
echo "== integration suites (release), in two lanes"
# One binary holds every suite (tests/main.rs); a suite's tests run in parallel. Suites run in
# two lanes side by side. The runtime lane holds the suites that start container-runtime
# daemons (each with its own state directories) and change no host-wide setting; the core lane
# holds every other suite, among them all that switch a host-wide setting for a while
# (`nf_log_all_netns`: bpf_netfilter, bpf_status, clients_real, serve_attribution), so two
# never race to restore one. `fuse_request_timeout` changes `fs.fuse.*`, which every FUSE
# mount made meanwhile inherits, so it runs alone after both lanes, before the leftover-mount
# suite. A new suite joins the core lane unless it is listed here.
runtime_lane="lxc_runtime docker_runtime deploy_oci_hook podman_hook containerd_runtime
    nspawn_runtime serve_runtimes restart_clients fuse_hostile deploy_demo deploy_files
    deploy_metrics"
alone="fuse_request_timeout zz_no_leftover_mounts"
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
in_list() { case " $(echo $2) " in *" $1 "*) return 0 ;; esac; return 1; }
core_lane=
for suite in $suites; do
    in_list "$suite" "$runtime_lane $alone" || core_lane="$core_lane $suite"
done
for suite in $runtime_lane $alone; do
    in_list "$suite" "$suites" || { echo "suite $suite named in .ci/test.sh is not in tests/main.rs" >&2; exit 1; }
done
# Run the suites of one lane one after another; print how many tests each had (for the count
# below) and the names of the suites that failed.
run_lane() {
    local suite n
    for suite in "$@"; do
        n=$("$bin" --list "$suite::" | grep -c ': test$' || true)
        echo "-- $suite ($n tests)"
        "$bin" "$suite::" || echo "-- FAILED: $suite"
    done
}
lane_dir=$(mktemp -d)
# shellcheck disable=SC2086 # the lanes are word lists
run_lane $runtime_lane >"$lane_dir/runtime" 2>&1 &
runtime_pid=$!
trap 'kill "$side" "$runtime_pid" 2>/dev/null || true' EXIT
# shellcheck disable=SC2086
run_lane $core_lane >"$lane_dir/core" 2>&1 || true
wait "$runtime_pid" || true
# shellcheck disable=SC2086
run_lane $alone >"$lane_dir/alone" 2>&1 || true
counted=0
failed=
for lane in core runtime alone; do
    echo "==== lane $lane"
    cat "$lane_dir/$lane"
    for n in $(sed -n 's/^-- [a-z0-9_]* (\([0-9]*\) tests)$/\1/p' "$lane_dir/$lane"); do
        counted=$((counted + n))
    done
    failed="$failed $(sed -n 's/^-- FAILED: //p' "$lane_dir/$lane" | tr '\n' ' ')"
done
rm -rf "$lane_dir"
failed=$(echo $failed)
# Every test belongs to exactly one suite and every suite to one lane: none is left out.
[ "$counted" -eq "$listed" ] || { echo "suites ran $counted of $listed tests" >&2; exit 1; }
[ -z "$failed" ] || { echo "failed suites: $failed" >&2; exit 1; }
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
