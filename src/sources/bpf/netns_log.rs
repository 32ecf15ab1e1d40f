//! `net.netfilter.nf_log_all_netns`: whether netfilter LOG rules outside the host's network
//! namespace print anything at all.
//!
//! With the default 0, `nf_log_ip_packet` and friends return early for every network namespace
//! but the initial one, so iptables `-j LOG` and nft `log` inside containers produce no record
//! for kmsgfs to route (docs/attribution.md, "Netfilter"). The sysctl is host-global and can
//! only be changed from the initial network namespace. kmsgfs warns when it is 0 and, with
//! `--enable-netns-log`, sets it to 1 for its lifetime through [`NfLogAllNetnsGuard`], which
//! restores the previous value when dropped.

use std::fs;
use std::io;
use std::path::Path;

/// The sysctl file.
pub const NF_LOG_ALL_NETNS: &str = "/proc/sys/net/netfilter/nf_log_all_netns";

/// Reading or writing the sysctl failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsLogError {
    /// `read` failed.
    #[error("`read({path})` failed: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// `write` failed.
    #[error("`write({path}, {value})` failed: {source}")]
    Write {
        /// The file.
        path: String,
        /// What was written.
        value: String,
        /// The error.
        source: io::Error,
    },
    /// The file holds something other than a number.
    #[error("{path} holds {content:?}, not 0 or 1")]
    Malformed {
        /// The file.
        path: String,
        /// Its content.
        content: String,
    },
}

fn read_at(path: &Path) -> Result<Option<bool>, NetnsLogError> {
    match fs::read_to_string(path) {
        Ok(s) => match s.trim() {
            "0" => Ok(Some(false)),
            "1" => Ok(Some(true)),
            other => Err(NetnsLogError::Malformed {
                path: path.display().to_string(),
                content: other.to_string(),
            }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(NetnsLogError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn write_at(path: &Path, on: bool) -> Result<(), NetnsLogError> {
    let value = if on { "1" } else { "0" };
    fs::write(path, value).map_err(|source| NetnsLogError::Write {
        path: path.display().to_string(),
        value: value.to_string(),
        source,
    })
}

/// The current value; `None` when the kernel has no such sysctl (netfilter logging absent).
pub fn nf_log_all_netns() -> Result<Option<bool>, NetnsLogError> {
    read_at(Path::new(NF_LOG_ALL_NETNS))
}

/// Log one warning if container LOG rules are silenced; returns the value read.
pub fn warn_if_disabled() -> Option<bool> {
    match nf_log_all_netns() {
        Ok(Some(false)) => {
            log::warn!(
                "kmsgfs attribution: net.netfilter.nf_log_all_netns is 0, so iptables/nft LOG \
                 rules inside containers print nothing; set it to 1 (or run with \
                 --enable-netns-log) to route them to their containers"
            );
            Some(false)
        }
        Ok(v) => v,
        Err(e) => {
            log::warn!("kmsgfs attribution: cannot check nf_log_all_netns: {e}");
            None
        }
    }
}

/// Sets `nf_log_all_netns` to 1 while alive and restores the previous value on drop.
#[derive(Debug)]
pub struct NfLogAllNetnsGuard {
    path: std::path::PathBuf,
    previous: bool,
}

impl NfLogAllNetnsGuard {
    /// Set the host sysctl to 1, remembering the old value.
    pub fn enable() -> Result<Self, NetnsLogError> {
        Self::enable_at(Path::new(NF_LOG_ALL_NETNS))
    }

    fn enable_at(path: &Path) -> Result<Self, NetnsLogError> {
        let previous = read_at(path)?.ok_or_else(|| NetnsLogError::Read {
            path: path.display().to_string(),
            source: io::Error::from(io::ErrorKind::NotFound),
        })?;
        if !previous {
            write_at(path, true)?;
            log::info!("kmsgfs attribution: set net.netfilter.nf_log_all_netns=1 (was 0)");
        }
        Ok(NfLogAllNetnsGuard {
            path: path.to_path_buf(),
            previous,
        })
    }

    /// The value before the guard was taken.
    pub fn previous(&self) -> bool {
        self.previous
    }
}

impl Drop for NfLogAllNetnsGuard {
    fn drop(&mut self) {
        if !self.previous {
            match write_at(&self.path, false) {
                Ok(()) => log::info!("kmsgfs attribution: restored nf_log_all_netns=0"),
                Err(e) => log::error!("kmsgfs attribution: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_sets_and_restores_on_a_scratch_file() {
        let dir = std::env::temp_dir().join(format!("kmsgfs-nflog-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("nf_log_all_netns");
        fs::write(&f, "0\n").unwrap();
        {
            let g = NfLogAllNetnsGuard::enable_at(&f).unwrap();
            assert!(!g.previous());
            assert_eq!(read_at(&f).unwrap(), Some(true));
        }
        assert_eq!(read_at(&f).unwrap(), Some(false));
        fs::write(&f, "1").unwrap();
        drop(NfLogAllNetnsGuard::enable_at(&f).unwrap());
        assert_eq!(
            read_at(&f).unwrap(),
            Some(true),
            "a value that was 1 stays 1"
        );
        fs::write(&f, "x").unwrap();
        assert!(matches!(read_at(&f), Err(NetnsLogError::Malformed { .. })));
        assert_eq!(read_at(&dir.join("absent")).unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
