//! `sd_notify(READY=1)`: tell systemd (`Type=notify`) that `kmsgfs serve` is serving.
//!
//! One datagram with the text `READY=1` to the unix socket named by `$NOTIFY_SOCKET`; a name
//! starting with `@` is in the abstract namespace. Without the variable nothing happens.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Send `state` (for example `"READY=1"`) to `$NOTIFY_SOCKET`, if set. Failures are logged:
/// a missing notification makes systemd time out the start, which is its own diagnostic.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let addr = if let Some(name) = bytes.strip_prefix(b"@") {
        <SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name)
    } else {
        SocketAddr::from_pathname(std::path::Path::new(&path))
    };
    let sent = addr.and_then(|addr| {
        let sock = UnixDatagram::unbound()?;
        sock.send_to_addr(state.as_bytes(), &addr)
    });
    match sent {
        Ok(_) => log::debug!("sd_notify({state}) sent to {}", path.to_string_lossy()),
        Err(e) => log::warn!("`sendto({}, {state})` failed: {e}", path.to_string_lossy()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_datagram_reaches_the_socket() {
        let dir = std::env::temp_dir().join(format!("kmsgfs-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("notify.sock");
        let rx = UnixDatagram::bind(&p).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &p);
        notify("READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
