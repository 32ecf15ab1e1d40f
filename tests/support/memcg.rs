#![allow(dead_code)]
//! A memory cgroup for a test (v1 hierarchy or v2 with the memory controller), removed on
//! drop.

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A memory cgroup created for the test, removed on drop (after its processes are gone).
pub struct MemCg {
    /// Its directory.
    pub dir: PathBuf,
}

impl MemCg {
    /// A new cgroup `name` limited to `limit` bytes (no swap), or why none can be made.
    pub fn create(name: &str, limit: usize) -> Result<Self, String> {
        let v1 = Path::new("/sys/fs/cgroup/memory");
        if v1.join("memory.limit_in_bytes").exists() {
            let dir = v1.join(name);
            fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            let cg = MemCg { dir };
            cg.write("memory.limit_in_bytes", &limit.to_string())?;
            if cg.dir.join("memory.memsw.limit_in_bytes").exists() {
                cg.write("memory.memsw.limit_in_bytes", &limit.to_string())?;
            }
            return Ok(cg);
        }
        for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            let r = Path::new(root);
            let ctl = fs::read_to_string(r.join("cgroup.subtree_control")).unwrap_or_default();
            if ctl.split_whitespace().any(|c| c == "memory") {
                let dir = r.join(name);
                fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
                let cg = MemCg { dir };
                cg.write("memory.max", &limit.to_string())?;
                if cg.dir.join("memory.swap.max").exists() {
                    cg.write("memory.swap.max", "0")?;
                }
                return Ok(cg);
            }
        }
        Err(
            "a memory cgroup controller (v1 memory hierarchy, or v2 with memory enabled in the \
             root's cgroup.subtree_control)"
                .into(),
        )
    }

    /// Write `v` to the control file `file`.
    pub fn write(&self, file: &str, v: &str) -> Result<(), String> {
        fs::write(self.dir.join(file), v)
            .map_err(|e| format!("write {v} to {}/{file}: {e}", self.dir.display()))
    }

    /// The path of `cgroup.procs`.
    pub fn procs(&self) -> CString {
        CString::new(self.dir.join("cgroup.procs").to_str().unwrap()).unwrap()
    }
}

impl Drop for MemCg {
    fn drop(&mut self) {
        for _ in 0..100 {
            if fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}
