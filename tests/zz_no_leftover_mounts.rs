//! Run-level check, run last (`.ci/test.sh` runs the suites in the order of `tests/main.rs`,
//! where `zz_` comes after every other suite): no kmsgfs mount made by this test run remains in
//! `/proc/self/mountinfo`.

use crate::support;

#[test]
fn no_kmsgfs_mount_of_this_test_run_remains() {
    if !support::require_root() {
        return;
    }
    let left = support::leftover_mounts();
    assert!(
        left.is_empty(),
        "kmsgfs mounts left under {}:\n{}",
        support::run_root().display(),
        left.join("\n")
    );
}
