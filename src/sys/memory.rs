//! The allocator's side of ring memory: rings come and go with containers, and their memory
//! must go back to the kernel when they do (docs/security.md T7).
//!
//! glibc serves an allocation from `mmap` only above `M_MMAP_THRESHOLD`, and by default raises
//! that threshold to the size of every mmapped chunk that is freed (up to 32 MiB). After the
//! first ring is reclaimed, every later ring's words therefore come from the heap, and a heap
//! freed in the middle is never returned: the daemon's RSS after namespace churn stayed at its
//! peak. Fixing the threshold turns the dynamic adjustment off, so every ring is its own
//! mapping, returned by `munmap` when the ring is dropped; `malloc_trim` after a reclaim hands
//! back the free heap top and free pages of small allocations (cursors, maps).

/// Allocations of at least this size are mapped on their own (every ring's data and
/// descriptor arrays are larger).
pub const MMAP_THRESHOLD: i32 = 64 * 1024;

/// Fix glibc's mmap threshold at [`MMAP_THRESHOLD`]. Returns false where the C library does not
/// have the option (not glibc): memory is then returned as that allocator does.
pub fn map_large_allocations_separately() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only changes allocator parameters; it has no memory preconditions.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

/// Give free allocator memory back to the kernel (after rings were reclaimed).
pub fn return_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator; no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The resident set size of this process in bytes, from `/proc/self/statm`.
pub fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
