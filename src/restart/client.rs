//! The daemon's side of the holder protocol ([`super`]): one connection, one request at a
//! time, each answered before the next is sent.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::{Reply, Request, MAX_MESSAGE};
use crate::sys::scm;

/// A failed exchange with the holder.
#[derive(Debug, Error)]
pub enum ClientError {
    /// A socket call failed.
    #[error("holder {path}: `{call}` failed: {source}")]
    Io {
        /// The holder's socket.
        path: PathBuf,
        /// The call.
        call: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The holder answered something unexpected or refused.
    #[error("holder {path}: {message}")]
    Protocol {
        /// The holder's socket.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// One entry given back by [`HolderClient::take`].
#[derive(Debug)]
pub struct Taken {
    /// Its name.
    pub name: String,
    /// Its JSON.
    pub meta: serde_json::Value,
    /// Its fd, if it was kept with one.
    pub fd: Option<OwnedFd>,
}

/// A connection to `kmsgfs holder`.
#[derive(Debug)]
pub struct HolderClient {
    sock: OwnedFd,
    path: PathBuf,
}

impl HolderClient {
    /// Connect to the holder on `path`.
    pub fn connect(path: &Path) -> Result<HolderClient, ClientError> {
        let sock = scm::seqpacket_connect(path).map_err(|source| ClientError::Io {
            path: path.to_path_buf(),
            call: "connect",
            source,
        })?;
        Ok(HolderClient {
            sock,
            path: path.to_path_buf(),
        })
    }

    /// The holder's socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keep `fd` (if any) and `meta` under `name` in the holder, replacing that entry.
    pub fn put(
        &self,
        name: &str,
        meta: serde_json::Value,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), ClientError> {
        self.send(
            &Request::Put {
                name: name.to_owned(),
                meta,
            },
            fd,
        )?;
        self.expect_ok()
    }

    /// Forget `name` in the holder.
    pub fn remove(&self, name: &str) -> Result<(), ClientError> {
        self.send(
            &Request::Drop {
                name: name.to_owned(),
            },
            None,
        )?;
        self.expect_ok()
    }

    /// The JSON of entry `name` (`None`: no such entry). A holder older than this request
    /// answers with an error.
    pub fn meta(&self, name: &str) -> Result<Option<serde_json::Value>, ClientError> {
        self.send(
            &Request::Meta {
                name: name.to_owned(),
            },
            None,
        )?;
        match self.recv()?.0 {
            Reply::Meta { meta } => Ok(meta),
            Reply::Error { message } => Err(self.protocol(message)),
            other => Err(self.protocol(format!("unexpected reply to meta: {other:?}"))),
        }
    }

    /// Every entry the holder keeps, with copies of its fds (the holder keeps its own).
    pub fn take(&self) -> Result<Vec<Taken>, ClientError> {
        self.send(&Request::Take, None)?;
        let mut out = Vec::new();
        loop {
            let (reply, mut fds) = self.recv()?;
            match reply {
                Reply::Entry { name, meta, fd } => {
                    let fd = if fd { fds.pop() } else { None };
                    out.push(Taken { name, meta, fd });
                }
                Reply::End { entries } if entries == out.len() => return Ok(out),
                other => {
                    return Err(self.protocol(format!(
                        "unexpected reply to take after {} entries: {other:?}",
                        out.len()
                    )))
                }
            }
        }
    }

    fn send(&self, req: &Request, fd: Option<BorrowedFd<'_>>) -> Result<(), ClientError> {
        let bytes = serde_json::to_vec(req).map_err(|e| self.protocol(e.to_string()))?;
        if bytes.len() > MAX_MESSAGE {
            return Err(self.protocol(format!("request of {} bytes is too large", bytes.len())));
        }
        match fd {
            Some(fd) => scm::send_fd(self.sock.as_fd(), &bytes, fd),
            None => scm::send_msg(self.sock.as_fd(), &bytes),
        }
        .map_err(|source| ClientError::Io {
            path: self.path.clone(),
            call: "sendmsg",
            source,
        })
    }

    fn recv(&self) -> Result<(Reply, Vec<OwnedFd>), ClientError> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let (n, fds) =
            scm::recv_fds(self.sock.as_fd(), &mut buf).map_err(|source| ClientError::Io {
                path: self.path.clone(),
                call: "recvmsg",
                source,
            })?;
        if n == 0 {
            return Err(self.protocol("the holder closed the connection".into()));
        }
        let reply = serde_json::from_slice(&buf[..n])
            .map_err(|e| self.protocol(format!("bad reply: {e}")))?;
        Ok((reply, fds))
    }

    fn expect_ok(&self) -> Result<(), ClientError> {
        match self.recv()?.0 {
            Reply::Ok => Ok(()),
            Reply::Error { message } => Err(self.protocol(message)),
            other => Err(self.protocol(format!("unexpected reply {other:?}"))),
        }
    }

    fn protocol(&self, message: String) -> ClientError {
        ClientError::Protocol {
            path: self.path.clone(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restart::holder::Holder;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A holder on a socket in a fresh temp dir, served by a thread until drop.
    struct Running {
        path: PathBuf,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Running {
        fn start(max_entries: usize) -> Running {
            let dir = std::env::temp_dir().join(format!(
                "kmsgfs-holder-test-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("h.sock");
            let mut h = Holder::bind(&path, max_entries).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let s = Arc::clone(&stop);
            let thread = std::thread::spawn(move || h.serve(&s).unwrap());
            Running {
                path,
                stop,
                thread: Some(thread),
            }
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
            let _ = std::fs::remove_dir_all(self.path.parent().unwrap());
        }
    }

    #[test]
    fn a_successor_takes_the_same_open_files_the_dead_daemon_put() {
        let h = Running::start(100);
        let shm = crate::sys::shm::SharedWords::create("kmsgfs-holder-test", 512).unwrap();
        shm.words()[3].store(1234, Ordering::Relaxed);
        {
            let first = HolderClient::connect(&h.path).unwrap();
            first
                .put("ring:net:1:2", serde_json::json!({"k": 1}), Some(shm.fd()))
                .unwrap();
            first
                .put("fuse-params", serde_json::json!({"minor": 40}), None)
                .unwrap();
            first.put("gone", serde_json::json!(null), None).unwrap();
            first.remove("gone").unwrap();
        } // the first daemon's connection ends (it died)
        let next = HolderClient::connect(&h.path).unwrap();
        let mut taken = next.take().unwrap();
        taken.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            taken.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["fuse-params", "ring:net:1:2"]
        );
        assert_eq!(taken[0].meta, serde_json::json!({"minor": 40}));
        assert!(taken[0].fd.is_none());
        let again = crate::sys::shm::SharedWords::from_fd(taken[1].fd.take().unwrap()).unwrap();
        assert_eq!(
            again.words()[3].load(Ordering::Relaxed),
            1234,
            "the same memory"
        );
        again.words()[4].store(5, Ordering::Relaxed);
        assert_eq!(shm.words()[4].load(Ordering::Relaxed), 5);
        // A second take still has everything: the holder keeps its copies.
        assert_eq!(next.take().unwrap().len(), 2);
    }

    #[test]
    fn a_dead_fd_is_dropped_and_the_holder_is_bounded() {
        let h = Running::start(2);
        let c = HolderClient::connect(&h.path).unwrap();
        let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        c.put("listener:x", serde_json::json!({}), Some(r.as_fd()))
            .unwrap();
        drop(r);
        c.put("other", serde_json::json!({}), None).unwrap();
        // Full: a third name is refused, replacing an existing one is not.
        assert!(matches!(
            c.put("third", serde_json::json!({}), None),
            Err(ClientError::Protocol { .. })
        ));
        c.put("other", serde_json::json!({"v": 2}), None).unwrap();
        // The peer of the kept socket goes away: POLLHUP, and the holder drops it.
        drop(w);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let names: Vec<String> = c.take().unwrap().into_iter().map(|t| t.name).collect();
            if names == ["other"] {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still kept: {names:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn garbage_gets_an_error_not_a_dead_holder() {
        let h = Running::start(10);
        let raw = scm::seqpacket_connect(&h.path).unwrap();
        scm::send_msg(raw.as_fd(), b"{not json").unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) = scm::recv_fds(raw.as_fd(), &mut buf).unwrap();
        let reply: Reply = serde_json::from_slice(&buf[..n]).unwrap();
        assert!(matches!(reply, Reply::Error { .. }), "{reply:?}");
        // Still serving.
        let c = HolderClient::connect(&h.path).unwrap();
        assert!(c.take().unwrap().is_empty());
    }
}
