//! Shared memory that outlives the daemon: a sealed memfd mapped `MAP_SHARED` as an array of
//! `AtomicU64` words (the ring's storage, docs/architecture.md "Restart").
//!
//! A ring whose words live in a memfd survives its process: a holder keeps a copy of the fd,
//! and a restarted daemon maps the same pages ([`SharedWords::from_fd`]) and finds every
//! record, sequence number and cursor where the dead one left them. The size is sealed
//! (`F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL`) right after it is set, so no holder of the fd
//! can truncate the mapping under a reader (which would turn its loads into SIGBUS).
//!
//! The words are only ever accessed atomically, by every process that maps them, so sharing
//! them is as sound as sharing an `AtomicU64` between threads.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::AtomicU64;

use super::{Result, SysError};

/// A mapping of `len` words of a memfd.
pub struct SharedWords {
    fd: OwnedFd,
    ptr: *mut AtomicU64,
    len: usize,
}

// SAFETY: the mapping is plain memory accessed only through `&AtomicU64` (atomic operations);
// the raw pointer is owned by this value and unmapped once, in `Drop`.
unsafe impl Send for SharedWords {}
// SAFETY: as for `Send`: shared access goes through atomics only.
unsafe impl Sync for SharedWords {}

impl std::fmt::Debug for SharedWords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWords")
            .field("fd", &self.fd.as_raw_fd())
            .field("words", &self.len)
            .finish()
    }
}

impl SharedWords {
    /// A new zeroed memfd of `words` words named `name` (shown in `/proc/<pid>/fd`), sealed at
    /// that size, and mapped.
    pub fn create(name: &str, words: usize) -> Result<SharedWords> {
        let bytes = words
            .checked_mul(8)
            .filter(|&b| b > 0 && b <= isize::MAX as usize)
            .ok_or_else(|| {
                SysError::new(
                    format!("memfd_create({name})"),
                    std::io::Error::from_raw_os_error(libc::EINVAL),
                )
            })?;
        let cname = CString::new(name).map_err(|_| {
            SysError::new(
                format!("memfd_create({name})"),
                std::io::Error::from_raw_os_error(libc::EINVAL),
            )
        })?;
        // SAFETY: `cname` is a valid NUL-terminated string; the flags are valid.
        let raw = unsafe {
            libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if raw < 0 {
            return Err(SysError::last(format!("memfd_create({name})")));
        }
        // SAFETY: `raw` is a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain syscall on an fd we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), bytes as libc::off_t) } < 0 {
            return Err(SysError::last(format!("ftruncate(memfd {name}, {bytes})")));
        }
        let seals = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
        // SAFETY: plain fcntl on an fd we own.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(SysError::last(format!("fcntl(memfd {name}, F_ADD_SEALS)")));
        }
        Self::map(fd, words)
    }

    /// Map an existing memfd made by [`SharedWords::create`] (by this or a previous daemon).
    /// Refused unless its size is sealed and a whole number of words.
    pub fn from_fd(fd: OwnedFd) -> Result<SharedWords> {
        // SAFETY: plain fcntl on an fd we own.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 {
            return Err(SysError::last("fcntl(memfd, F_GET_SEALS)"));
        }
        let need = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK;
        if seals & need != need {
            return Err(SysError::new(
                "fcntl(memfd, F_GET_SEALS): size not sealed",
                std::io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        // SAFETY: `st` is a valid out-pointer for fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above, on an fd we own.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
            return Err(SysError::last("fstat(memfd)"));
        }
        let bytes = st.st_size as usize;
        if bytes == 0 || bytes % 8 != 0 {
            return Err(SysError::new(
                format!("fstat(memfd): size {bytes} is not a whole number of words"),
                std::io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        Self::map(fd, bytes / 8)
    }

    fn map(fd: OwnedFd, words: usize) -> Result<SharedWords> {
        // SAFETY: a fresh shared mapping of `words * 8` bytes of an fd we own; the kernel picks
        // the address. The result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                words * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(SysError::last(format!("mmap(memfd, {} bytes)", words * 8)));
        }
        Ok(SharedWords {
            fd,
            ptr: ptr.cast(),
            len: words,
        })
    }

    /// The words.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: `ptr` is a page-aligned mapping of `len * 8` bytes that stays mapped until
        // `self` is dropped, so it outlives the returned borrow; `AtomicU64` has the size and
        // alignment of `u64`, and every access to the memory, from any process, is atomic.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The memfd, to hand to a holder process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`, once; no borrow of `words()` can
        // outlive `self`.
        unsafe { libc::munmap(self.ptr.cast(), self.len * 8) };
    }
}

/// A table in a memfd: `header` words starting with `magic`, `version` and the slot count,
/// then that many slots of `slot_words` words. Maps `fd` and returns it with the slot count if
/// the layout is that one (an adopter's check before trusting a predecessor's memfd).
pub fn adopt_table(
    fd: OwnedFd,
    magic: u64,
    version: u64,
    header: usize,
    slot_words: usize,
) -> Option<(SharedWords, usize)> {
    use std::sync::atomic::Ordering::Relaxed;
    let m = SharedWords::from_fd(fd).ok()?;
    let w = m.words();
    if w.len() < header.max(3) || w[0].load(Relaxed) != magic || w[1].load(Relaxed) != version {
        return None;
    }
    let slots = usize::try_from(w[2].load(Relaxed)).ok()?;
    (slots.checked_mul(slot_words)?.checked_add(header)? == w.len()).then_some((m, slots))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn a_second_mapping_of_the_fd_sees_the_same_words() {
        let a = SharedWords::create("kmsgfs-test", 1024).unwrap();
        a.words()[7].store(42, Relaxed);
        let dup = a.fd().try_clone_to_owned().unwrap();
        let b = SharedWords::from_fd(dup).unwrap();
        assert_eq!(b.words().len(), 1024);
        assert_eq!(b.words()[7].load(Relaxed), 42);
        b.words()[8].store(7, Relaxed);
        drop(b);
        assert_eq!(a.words()[8].load(Relaxed), 7);
    }

    #[test]
    fn the_size_is_sealed() {
        let a = SharedWords::create("kmsgfs-test", 16).unwrap();
        // SAFETY: plain syscall on a valid fd.
        let r = unsafe { libc::ftruncate(a.fd().as_raw_fd(), 8) };
        assert_eq!(r, -1, "shrinking a sealed memfd must fail");
        // An unsealed memfd is refused.
        let name = CString::new("plain").unwrap();
        // SAFETY: valid name, valid flags.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: `raw` is ours.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain syscall on our fd.
        assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), 64) }, 0);
        assert!(SharedWords::from_fd(fd).is_err());
    }
}
