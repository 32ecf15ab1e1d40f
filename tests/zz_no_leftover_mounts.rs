//! Suite-level check, run last (cargo runs test targets in name order, so `zz_` comes after
//! every other target, including other helpers' tests that use tests/common): no kmsgfs mount made
//! by this `cargo test` invocation remains in `/proc/self/mountinfo`.

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
