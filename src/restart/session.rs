//! The FUSE connection and its open files across a restart.
//!
//! The holder keeps every `/dev/fuse` fd of the connection (`fuse:<i>`, the original first:
//! each clone has its own processing queue, and closing the last copy of one aborts the
//! requests read through it, `wire::session` "Channels and the hand-over rule") with the
//! negotiated [`InitParams`] as the JSON of `fuse:0`, and the open-file table
//! ([`crate::frontends::fuse::open_table`]) as `open-files`. A daemon that finds them serves
//! the same connection (no mount, no INIT) with the same handles; one that does not mounts
//! afresh and puts them there.

use std::os::fd::{AsFd, OwnedFd};

use serde::{Deserialize, Serialize};

use super::client::{ClientError, HolderClient, Taken};
use crate::frontends::fuse::wire::InitParams;

/// Name of the open-file table's entry.
pub const OPEN_FILES: &str = "open-files";
/// Prefix of the connection's fds' entries.
pub const FUSE_PREFIX: &str = "fuse:";

/// The JSON of a `fuse:<i>` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FuseMeta {
    /// Position among the connection's fds (0: the original).
    index: usize,
    /// What INIT negotiated.
    params: InitParams,
}

/// A connection a previous daemon left, taken from the holder's entries.
#[derive(Debug)]
pub struct KeptConnection {
    /// Its fds, the original first.
    pub fds: Vec<OwnedFd>,
    /// What INIT negotiated.
    pub params: InitParams,
}

/// Remove the connection's entries from `taken` and return them, if complete: indices 0..n
/// without a gap, every one with an fd, all with the same parameters. `Err` says why an
/// incomplete set cannot be served (the caller drops it and mounts afresh).
pub fn take_connection(taken: &mut Vec<Taken>) -> Result<Option<KeptConnection>, String> {
    let (mine, rest): (Vec<Taken>, Vec<Taken>) = std::mem::take(taken)
        .into_iter()
        .partition(|t| t.name.starts_with(FUSE_PREFIX));
    *taken = rest;
    if mine.is_empty() {
        return Ok(None);
    }
    let mut parts = Vec::with_capacity(mine.len());
    for t in mine {
        let meta: FuseMeta =
            serde_json::from_value(t.meta).map_err(|e| format!("{}: bad JSON: {e}", t.name))?;
        let fd = t.fd.ok_or_else(|| format!("{}: no fd", t.name))?;
        parts.push((meta, fd));
    }
    parts.sort_by_key(|(m, _)| m.index);
    let params = parts[0].0.params;
    for (i, (m, _)) in parts.iter().enumerate() {
        if m.index != i {
            return Err(format!("fd {i} of the connection is missing"));
        }
        if m.params != params {
            return Err(format!("fd {i} has other FUSE parameters than fd 0"));
        }
    }
    Ok(Some(KeptConnection {
        fds: parts.into_iter().map(|(_, fd)| fd).collect(),
        params,
    }))
}

/// Remove the open-file table's entry from `taken` and return its memfd.
pub fn take_open_files(taken: &mut Vec<Taken>) -> Option<OwnedFd> {
    let i = taken.iter().position(|t| t.name == OPEN_FILES)?;
    taken.swap_remove(i).fd
}

/// Give the holder every fd of a new connection (`fds`, from `Session::dup_fds`) and its
/// parameters.
pub fn keep_connection(
    client: &HolderClient,
    fds: &[OwnedFd],
    params: InitParams,
) -> Result<(), ClientError> {
    for (index, fd) in fds.iter().enumerate() {
        let meta = serde_json::to_value(FuseMeta { index, params }).map_err(|e| {
            ClientError::Protocol {
                path: client.path().to_path_buf(),
                message: e.to_string(),
            }
        })?;
        client.put(&format!("{FUSE_PREFIX}{index}"), meta, Some(fd.as_fd()))?;
    }
    Ok(())
}

/// Forget the connection and the open files (the daemon unmounted: a successor mounts
/// afresh). `fds` is how many `fuse:<i>` entries there are.
pub fn forget_connection(client: &HolderClient, fds: usize) -> Result<(), ClientError> {
    for i in 0..fds {
        client.remove(&format!("{FUSE_PREFIX}{i}"))?;
    }
    client.remove(OPEN_FILES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> InitParams {
        InitParams {
            major: 7,
            minor: 40,
            flags: 1,
            max_write: 4096,
            max_readahead: 0,
            max_pages: 1,
            time_gran: 1,
        }
    }

    fn entry(name: &str, index: usize, p: InitParams, fd: bool) -> Taken {
        Taken {
            name: name.into(),
            meta: serde_json::to_value(FuseMeta { index, params: p }).unwrap(),
            fd: fd.then(|| std::fs::File::open("/dev/null").unwrap().into()),
        }
    }

    #[test]
    fn a_complete_connection_is_taken_in_order_and_the_rest_left() {
        let mut taken = vec![
            entry("fuse:1", 1, params(), true),
            Taken {
                name: "listener:3".into(),
                meta: serde_json::Value::Null,
                fd: None,
            },
            entry("fuse:0", 0, params(), true),
        ];
        let c = take_connection(&mut taken).unwrap().unwrap();
        assert_eq!(c.fds.len(), 2);
        assert_eq!(c.params, params());
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].name, "listener:3");
        assert!(take_connection(&mut taken).unwrap().is_none());
    }

    #[test]
    fn an_incomplete_connection_is_refused_with_the_reason() {
        let mut gap = vec![
            entry("fuse:0", 0, params(), true),
            entry("fuse:2", 2, params(), true),
        ];
        assert!(take_connection(&mut gap).unwrap_err().contains("fd 1"));
        let mut nofd = vec![entry("fuse:0", 0, params(), false)];
        assert!(take_connection(&mut nofd).unwrap_err().contains("no fd"));
        let mut other = params();
        other.max_write = 8192;
        let mut mixed = vec![
            entry("fuse:0", 0, params(), true),
            entry("fuse:1", 1, other, true),
        ];
        assert!(take_connection(&mut mixed)
            .unwrap_err()
            .contains("other FUSE parameters"));
        assert!(gap.is_empty() && nofd.is_empty() && mixed.is_empty());
    }
}
