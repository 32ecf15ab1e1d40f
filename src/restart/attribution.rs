//! The BPF attribution state across a restart: the holder keeps the event ring buffer
//! ([`KEPT_EVENTS`]) and every program link (`bpf-link:<program>`) of the running daemon's
//! BPF source. While a link fd is open its program stays attached, so printks made while no
//! daemon runs are still tagged, into a ring buffer that still exists; the next daemon reads
//! it after attaching its own programs ([`crate::sources::bpf::BpfSource::start_after`]) and
//! then replaces the holder's entries with its own, which detaches the old programs.

use std::os::fd::{AsFd, OwnedFd};

use super::client::{HolderClient, Taken};
use crate::sources::bpf::{KeptBpf, KEPT_EVENTS, KEPT_LINK_PREFIX};

/// Remove the BPF entries from `taken` and return them.
pub fn take_bpf(taken: &mut Vec<Taken>) -> KeptBpf {
    let mut kept = KeptBpf::default();
    let mut rest = Vec::with_capacity(taken.len());
    for t in std::mem::take(taken) {
        if t.name == KEPT_EVENTS {
            kept.events = t.fd;
        } else if let Some(prog) = t.name.strip_prefix(KEPT_LINK_PREFIX) {
            if let Some(fd) = t.fd {
                kept.links.push((prog.to_string(), fd));
            }
        } else {
            rest.push(t);
        }
    }
    *taken = rest;
    kept
}

/// Give the holder this daemon's BPF fds (`new`, from `BpfSource::kept_fds`), replacing the
/// predecessor's entries, and drop the predecessor's links of programs not attached now
/// (`old_links`: their program names). Failures are logged: the daemon runs on, and a restart
/// then loses the tags of records printed while no daemon runs.
pub fn keep_bpf(client: &HolderClient, new: &[(String, OwnedFd)], old_links: &[String]) {
    for (name, fd) in new {
        if let Err(e) = client.put(name, serde_json::Value::Null, Some(fd.as_fd())) {
            log::warn!("holder: {name} is not kept ({e}); a restart loses attribution of records printed while no daemon runs");
        }
    }
    for prog in old_links {
        let name = format!("{KEPT_LINK_PREFIX}{prog}");
        if !new.iter().any(|(n, _)| *n == name) {
            if let Err(e) = client.remove(&name) {
                log::warn!("holder: dropping {name}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, fd: bool) -> Taken {
        Taken {
            name: name.into(),
            meta: serde_json::Value::Null,
            fd: fd.then(|| std::fs::File::open("/dev/null").unwrap().into()),
        }
    }

    #[test]
    fn bpf_entries_are_taken_and_the_rest_left() {
        let mut taken = vec![
            t("bpf-link:kmsgfs_console", true),
            t("listener:1", true),
            t("bpf-events", true),
            t("bpf-link:kmsgfs_rx", false),
        ];
        let kept = take_bpf(&mut taken);
        assert!(kept.events.is_some());
        assert_eq!(kept.links.len(), 1, "a link without an fd is no link");
        assert_eq!(kept.links[0].0, "kmsgfs_console");
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].name, "listener:1");
    }
}
