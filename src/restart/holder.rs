//! `kmsgfs holder`: keeps the fds a restarted daemon needs (module docs of [`super`]).
//!
//! One thread, one `poll(2)` loop over the listening socket, at most [`MAX_CONNECTIONS`]
//! connections, and every kept fd (polled for no event: only `POLLHUP`/`POLLERR` come back,
//! and such an fd is dropped). Requests come only from root peers in the holder's own pid and
//! user namespaces, so the JSON is trusted to be well-meant, but it is still parsed without a
//! panic and bounded ([`super::MAX_MESSAGE`], [`HolderArgs::max_entries`]).

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use thiserror::Error;

use super::{Reply, Request, MAX_MESSAGE};
use crate::sys::{peer, scm};

/// Connections served at once (the running daemon and its successor, and a tool or two).
pub const MAX_CONNECTIONS: usize = 16;

/// Options of `kmsgfs holder`.
#[derive(Debug, Clone, clap::Args)]
pub struct HolderArgs {
    /// The socket to listen on (`kmsgfs serve --holder-socket`); a stale socket file there is
    /// replaced.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// Most entries kept; a put beyond it is refused.
    #[arg(long, value_name = "N", default_value_t = 65536)]
    pub max_entries: usize,
}

/// Why the holder could not run.
#[derive(Debug, Error)]
pub enum HolderError {
    /// A socket call failed.
    #[error("kmsgfs holder: `{call}` failed: {source}")]
    Io {
        /// The call.
        call: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Reading our own namespaces failed.
    #[error("kmsgfs holder: {0}")]
    Sys(#[from] crate::sys::SysError),
}

fn io(call: impl Into<String>) -> impl FnOnce(std::io::Error) -> HolderError {
    let call = call.into();
    move |source| HolderError::Io { call, source }
}

struct Entry {
    meta: serde_json::Value,
    fd: Option<OwnedFd>,
}

/// The holder's state; [`Holder::serve`] runs it.
pub struct Holder {
    listener: OwnedFd,
    path: PathBuf,
    conns: Vec<OwnedFd>,
    entries: BTreeMap<String, Entry>,
    max_entries: usize,
    own: (peer::NsId, peer::NsId, u32),
}

impl Holder {
    /// Listen on `path` (a stale socket there is removed first).
    pub fn bind(path: &Path, max_entries: usize) -> Result<Holder, HolderError> {
        if std::fs::symlink_metadata(path).is_ok() {
            std::fs::remove_file(path).map_err(io(format!("unlink({})", path.display())))?;
        }
        let listener =
            scm::seqpacket_listen(path).map_err(io(format!("bind({})", path.display())))?;
        let own = (
            peer::ns_of_path("/proc/self/ns/pid")?,
            peer::ns_of_path("/proc/self/ns/user")?,
            crate::sys::getuid(),
        );
        let nofile = crate::sys::raise_nofile_limit();
        log::debug!("kmsgfs holder: fd limit {nofile}");
        Ok(Holder {
            listener,
            path: path.to_path_buf(),
            conns: Vec::new(),
            entries: BTreeMap::new(),
            max_entries,
            own,
        })
    }

    /// Serve until `stop` is set (checked at least every 200 ms).
    pub fn serve(&mut self, stop: &AtomicBool) -> Result<(), HolderError> {
        log::info!("kmsgfs holder listening on {}", self.path.display());
        while !stop.load(Ordering::Relaxed) {
            self.step(200)?;
        }
        Ok(())
    }

    /// One poll round.
    fn step(&mut self, timeout_ms: i32) -> Result<(), HolderError> {
        let names: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.fd.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(1 + self.conns.len() + names.len());
        let pfd = |fd: i32, events: i16| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        fds.push(pfd(self.listener.as_raw_fd(), libc::POLLIN));
        fds.extend(self.conns.iter().map(|c| pfd(c.as_raw_fd(), libc::POLLIN)));
        fds.extend(names.iter().map(|n| {
            let fd = self.entries[n].fd.as_ref().map_or(-1, |f| f.as_raw_fd());
            pfd(fd, 0)
        }));
        if crate::sys::fd::poll(&mut fds, timeout_ms).map_err(io("poll"))? == 0 {
            return Ok(());
        }
        // Dead kept fds first: a listener without tasks, an aborted FUSE connection.
        let dead = libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
        for (i, name) in names.iter().enumerate() {
            if fds[1 + self.conns.len() + i].revents & dead != 0 {
                log::info!("kmsgfs holder: {name} is dead (hang-up); dropped");
                self.entries.remove(name);
            }
        }
        // Connections, newest last; iterate backwards so removal keeps indices.
        for i in (0..self.conns.len()).rev() {
            let rev = fds[1 + i].revents;
            if rev == 0 {
                continue;
            }
            if !self.serve_one(i) {
                self.conns.remove(i);
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            self.accept();
        }
        Ok(())
    }

    fn accept(&mut self) {
        let conn = match scm::accept(self.listener.as_fd()) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("kmsgfs holder: accept: {e}");
                // EMFILE and the like: do not spin on a listener we cannot accept from.
                std::thread::sleep(std::time::Duration::from_millis(100));
                return;
            }
        };
        let allowed = match peer::peer_namespaces(conn.as_fd()) {
            Ok(p) => {
                p.pid_ns == self.own.0
                    && p.user_ns == self.own.1
                    && (p.uid == 0 || p.uid == self.own.2)
            }
            Err(e) => {
                log::debug!("kmsgfs holder: peer of a connection: {e}");
                false
            }
        };
        if !allowed || self.conns.len() >= MAX_CONNECTIONS {
            log::warn!(
                "kmsgfs holder: refused a connection ({})",
                if allowed {
                    "too many connections"
                } else {
                    "peer outside the holder's namespaces or not root"
                }
            );
            return;
        }
        self.conns.push(conn);
    }

    /// Handle one message on connection `i`; false when it is closed.
    fn serve_one(&mut self, i: usize) -> bool {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let (n, mut fds) = match scm::recv_fds(self.conns[i].as_fd(), &mut buf) {
            Ok(r) => r,
            Err(e) => {
                log::debug!("kmsgfs holder: recv: {e}");
                return false;
            }
        };
        if n == 0 && fds.is_empty() {
            return false;
        }
        let reply = match serde_json::from_slice::<Request>(&buf[..n]) {
            Err(e) => Reply::Error {
                message: format!("bad request: {e}"),
            },
            Ok(Request::Put { name, meta }) => {
                if fds.len() > 1 {
                    Reply::Error {
                        message: format!("{} fds attached, at most 1", fds.len()),
                    }
                } else if !self.entries.contains_key(&name)
                    && self.entries.len() >= self.max_entries
                {
                    Reply::Error {
                        message: format!("holder full ({} entries)", self.max_entries),
                    }
                } else {
                    self.entries.insert(
                        name,
                        Entry {
                            meta,
                            fd: fds.pop(),
                        },
                    );
                    Reply::Ok
                }
            }
            Ok(Request::Drop { name }) => {
                self.entries.remove(&name);
                Reply::Ok
            }
            Ok(Request::Take) => return self.send_all(i),
            Ok(Request::Meta { name }) => Reply::Meta {
                meta: self.entries.get(&name).map(|e| e.meta.clone()),
            },
        };
        send(&self.conns[i], &reply, None).is_ok()
    }

    fn send_all(&self, i: usize) -> bool {
        let conn = &self.conns[i];
        for (name, e) in &self.entries {
            let r = Reply::Entry {
                name: name.clone(),
                meta: e.meta.clone(),
                fd: e.fd.is_some(),
            };
            if send(conn, &r, e.fd.as_ref()).is_err() {
                return false;
            }
        }
        let end = Reply::End {
            entries: self.entries.len(),
        };
        send(conn, &end, None).is_ok()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn send(conn: &OwnedFd, reply: &Reply, fd: Option<&OwnedFd>) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    match fd {
        Some(fd) => scm::send_fd(conn.as_fd(), &bytes, fd.as_fd()),
        None => scm::send_msg(conn.as_fd(), &bytes),
    }
}

/// `kmsgfs holder`: serve until SIGTERM or SIGINT.
pub fn main(args: &HolderArgs) -> Result<(), HolderError> {
    crate::sys::signal::block_termination()?;
    let mut h = Holder::bind(&args.socket, args.max_entries)?;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || h.serve(&stop))
    };
    let sig = crate::sys::signal::wait_termination()?;
    log::info!("kmsgfs holder: signal {sig}: exiting (the fds it kept are closed)");
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap_or(Ok(()))
}
