//! sd_notify: tells systemd (`Type=notify`) when the daemon is ready, is
//! reloading or stopping. Without NOTIFY_SOCKET (not started by systemd)
//! it does nothing.

use std::{
    io,
    os::{
        linux::net::SocketAddrExt as _,
        unix::net::{SocketAddr, UnixDatagram},
    },
};

/// Sends `state` (e.g. "READY=1") to the socket systemd named, if any.
pub(crate) fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        // An abstract socket: '@' stands for the leading NUL byte.
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(&path)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// Like [`notify`], logging a failure instead of returning it: systemd
/// not hearing from us must not stop detection.
pub(crate) fn tell(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!("sd_notify {state:?} failed: {e}");
    }
}

/// CLOCK_MONOTONIC in microseconds, for `RELOADING=1` + `MONOTONIC_USEC=`.
pub(crate) fn monotonic_usec() -> u64 {
    crate::kernel::maps::monotonic_ns() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_the_notify_socket() {
        let dir = std::env::temp_dir().join(format!("scanner-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        // SAFETY: this test is the only one touching NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        assert!(notify("READY=1\nSTATUS=attached").unwrap());
        // SAFETY: as above.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=attached");
        assert!(!notify("READY=1").unwrap(), "no socket: nothing sent");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
