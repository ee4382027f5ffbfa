//! Traffic generators, bounded in count and time, run between the lab's
//! namespaces only.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    process::Output,
    time::Duration,
};

use anyhow::{Context as _, bail};
use socket2::{Domain, Socket, Type};

use crate::netns::{Netns, run};

/// Upper bound on any one scan, on top of nmap's own timing.
pub const SCAN_TIMEOUT_SECS: u32 = 180;

/// Runs nmap inside `ns` with reverse DNS off (it stalls in namespaces),
/// bounded by `timeout`.
pub fn nmap(ns: &Netns, args: &[&str]) -> anyhow::Result<Output> {
    let mut cmd = ns.command("timeout");
    cmd.arg(SCAN_TIMEOUT_SECS.to_string())
        .args(["nmap", "-n", "-Pn"])
        .args(args);
    run(&mut cmd)
}

/// A TCP listener bound inside `ns` (the socket stays in that namespace).
pub fn listen(ns: &Netns, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    ns.enter(|| TcpListener::bind(addr))?
        .with_context(|| format!("listening on {addr}"))
}

/// Answers `connections` HTTP/1.0 requests, one per connection, then returns.
pub fn serve_http(listener: &TcpListener, connections: usize) -> anyhow::Result<()> {
    for _ in 0..connections {
        let (mut conn, _) = listener.accept().context("accepting")?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")?;
    }
    Ok(())
}

/// One HTTP/1.0 GET from `from` to `to`, with a fresh connection; returns the
/// response. Must run inside the client's namespace (see `Netns::enter`).
pub fn http_get(from: SocketAddr, to: SocketAddr) -> anyhow::Result<String> {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
    socket
        .bind(&from.into())
        .with_context(|| format!("binding {from}"))?;
    socket
        .connect_timeout(&to.into(), Duration::from_secs(10))
        .with_context(|| format!("connecting to {to}"))?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: server\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    if !response.starts_with("HTTP/1.0 200") {
        bail!("unexpected response: {response:?}");
    }
    Ok(response)
}
