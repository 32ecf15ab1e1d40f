//! `/proc/self/mountinfo` and lazy unmounting.
//!
//! kmsgfs mounts are recognised by their source `kmsgfs` (fuser's `FSName`); the filesystem type
//! is always plain `fuse` (fuse-notes §3). A daemon killed by SIGKILL leaves its mount behind
//! with an aborted connection (ENOTCONN); [`detach`] removes it so a new daemon can mount on the
//! same directory (fuse-notes §5).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{Result, SysError};

/// One line of `/proc/self/mountinfo` (proc(5)), the fields kmsgfs uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Field 1: mount id.
    pub id: u32,
    /// Field 4: root of the mount within its filesystem (e.g. `net:[4026531833]` for nsfs).
    pub root: String,
    /// Field 5: mount point, unescaped.
    pub mount_point: PathBuf,
    /// Filesystem type after the separator.
    pub fstype: String,
    /// Mount source after the separator.
    pub source: String,
}

/// Undo mountinfo's octal escapes (`\040` for space, `\011`, `\012`, `\134`).
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            out.push((v & 0xff) as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Parse mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            if sep < 6 || f.len() < sep + 3 {
                return None;
            }
            Some(MountEntry {
                id: f[0].parse().ok()?,
                root: String::from_utf8_lossy(&unescape(f[3])).into_owned(),
                mount_point: PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(f[4]))),
                fstype: f[sep + 1].to_owned(),
                source: String::from_utf8_lossy(&unescape(f[sep + 2])).into_owned(),
            })
        })
        .collect()
}

/// The current mount table of our mount namespace.
pub fn mountinfo() -> Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| SysError::new("read(/proc/self/mountinfo)", e))?;
    Ok(parse_mountinfo(&text))
}

/// Whether `e` is a kmsgfs FUSE mount.
pub fn is_kmsgfs(e: &MountEntry) -> bool {
    e.source == "kmsgfs" && (e.fstype == "fuse" || e.fstype.starts_with("fuse."))
}

/// `dir` made absolute without touching `dir` itself (a dead FUSE mount point cannot be
/// stat'ed: ENOTCONN); only its parent is canonicalised.
pub fn absolute_mount_point(dir: &Path) -> Result<PathBuf> {
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| SysError::new("getcwd()", e))?
            .join(dir)
    };
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => {
            let p = parent
                .canonicalize()
                .map_err(|e| SysError::new(format!("realpath({})", parent.display()), e))?;
            Ok(p.join(name))
        }
        _ => Ok(abs),
    }
}

/// `umount2(dir, MNT_DETACH)`.
pub fn detach(dir: &Path) -> Result<()> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| SysError::new(format!("umount2({})", dir.display()), e.into()))?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        return Err(SysError::last(format!(
            "umount2({}, MNT_DETACH)",
            dir.display()
        )));
    }
    Ok(())
}

/// Detach every kmsgfs mount stacked on `dir` (left by a crashed daemon); returns how many
/// were removed.
pub fn recover_stale(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    // Mounts may be stacked; each detach removes the top one.
    for _ in 0..64 {
        let table = mountinfo()?;
        if !table.iter().any(|e| e.mount_point == dir && is_kmsgfs(e)) {
            break;
        }
        detach(dir)?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
97 22 0:52 / /tmp/with\\040space rw,nosuid,nodev,relatime - fuse kmsgfs rw,user_id=0,group_id=0,allow_other
98 22 0:4 net:[4026532001] /run/netns/a rw shared:5 - nsfs nsfs rw
bogus line
";

    #[test]
    fn parses_fields_and_escapes() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].mount_point, PathBuf::from("/tmp/with space"));
        assert!(is_kmsgfs(&m[1]));
        assert!(!is_kmsgfs(&m[0]));
        assert_eq!(m[2].fstype, "nsfs");
        assert_eq!(m[2].root, "net:[4026532001]");
    }

    #[test]
    fn unescape_leaves_plain_backslashes() {
        assert_eq!(unescape("a\\b"), b"a\\b");
        assert_eq!(unescape("\\134x"), b"\\x");
        assert_eq!(unescape("\\04"), b"\\04");
    }
}
