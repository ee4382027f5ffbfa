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

/// An nmap SYN scan of the lab server's `ports` from `source` (an address
/// on the attacker's side; None: its main one), grepable output on stdout.
/// A fixed fast rate: nmap otherwise slows down a lot once probes go
/// unanswered.
pub fn syn_scan(lab: &crate::Lab, source: Option<&str>, ports: &str) -> anyhow::Result<Output> {
    let mut args = vec![
        "-sS",
        "--min-rate",
        "5000",
        "--max-retries",
        "0",
        "-p",
        ports,
        "-oG",
        "-",
    ];
    if let Some(src) = source {
        args.extend(["-S", src, "-e", crate::Lab::ATTACKER_IF]);
    }
    args.push(crate::Lab::SERVER_V4);
    nmap(&lab.attacker, &args)
}

/// A TCP listener bound inside `ns` (the socket stays in that namespace).
pub fn listen(ns: &Netns, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    ns.enter(|| TcpListener::bind(addr))?
        .with_context(|| format!("listening on {addr}"))
}

/// Answers `connections` HTTP/1.0 requests, one per connection, each on its
/// own thread (so concurrent clients are served concurrently), then returns.
pub fn serve_http(listener: &TcpListener, connections: usize) -> anyhow::Result<()> {
    std::thread::scope(|s| {
        let mut handlers = Vec::with_capacity(connections);
        for _ in 0..connections {
            let (conn, _) = listener.accept().context("accepting")?;
            handlers.push(s.spawn(move || answer(conn)));
        }
        handlers
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("handler panicked"))?)
    })
}

fn answer(mut conn: TcpStream) -> anyhow::Result<()> {
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
    Ok(())
}

/// A TCP connection from `from` to `to`, closed at once: a health check, or
/// (to a closed port) a refused connection. Returns whether it connected.
/// Must run inside the client's namespace.
pub fn tcp_check(from: SocketAddr, to: SocketAddr) -> anyhow::Result<bool> {
    match connect(from, to, Duration::from_secs(10)) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(false),
        Err(e) => Err(anyhow::Error::from(e).context(format!("connecting to {to}"))),
    }
}

/// Whether `from` gets any answer from `to` within `wait`: connected or
/// refused, as opposed to a SYN dropped on the way (a block). Must run
/// inside the client's namespace.
pub fn answers_within(from: SocketAddr, to: SocketAddr, wait: Duration) -> anyhow::Result<bool> {
    match connect(from, to, wait) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(false),
        Err(e) => Err(anyhow::Error::from(e).context(format!("connecting to {to}"))),
    }
}

fn connect(from: SocketAddr, to: SocketAddr, wait: Duration) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
    socket.bind(&from.into())?;
    socket.connect_timeout(&to.into(), wait)?;
    Ok(socket.into())
}

/// A TCP session from `from` to `to` opened inside `ns` (reads time out
/// after 10 s), and the server's end of it, accepted from `listener`.
pub fn session(
    ns: &Netns,
    from: SocketAddr,
    to: SocketAddr,
    listener: &TcpListener,
) -> anyhow::Result<(TcpStream, TcpStream)> {
    let client = ns
        .enter(|| connect(from, to, Duration::from_secs(10)))?
        .with_context(|| format!("connecting {from} to {to}"))?;
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    client.set_nodelay(true)?;
    let (server, _) = listener.accept().context("accepting the session")?;
    server.set_read_timeout(Some(Duration::from_secs(10)))?;
    server.set_nodelay(true)?;
    Ok((client, server))
}

/// One round trip over a session: the client writes a byte, the server
/// echoes it.
pub fn exchange(client: &mut TcpStream, server: &mut TcpStream, round: u8) -> anyhow::Result<()> {
    client.write_all(&[round])?;
    let mut byte = [0u8];
    server.read_exact(&mut byte)?;
    server.write_all(&byte)?;
    client.read_exact(&mut byte)?;
    anyhow::ensure!(byte == [round], "echoed {byte:?}");
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

/// Runs `program args` inside `ns` under `timeout`; exit codes in `ok` count
/// as success (124: stopped by the timeout, for tools that never exit).
pub fn tool(
    ns: &Netns,
    secs: u32,
    program: &str,
    args: &[&str],
    ok: &[i32],
) -> anyhow::Result<Output> {
    let out = ns
        .command("timeout")
        .arg(secs.to_string())
        .arg(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    match out.status.code() {
        Some(c) if c == 0 || ok.contains(&c) => Ok(out),
        _ => bail!(
            "{program} {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// masscan from the attacker to the server's `ports` (e.g. "1-1000") at
/// 2,000 packets per second. It needs the server's MAC as its "router", and
/// never exits by itself.
pub fn masscan(lab: &crate::Lab, ports: &str) -> anyhow::Result<Output> {
    masscan_at(lab, ports, 2000)
}

/// [`masscan`] at `rate` packets per second.
pub fn masscan_at(lab: &crate::Lab, ports: &str, rate: u32) -> anyhow::Result<Output> {
    let link = lab
        .server
        .ip(&["-j", "link", "show", crate::Lab::SERVER_IF])?;
    let json: serde_json::Value = serde_json::from_slice(&link.stdout)?;
    let mac = json[0]["address"]
        .as_str()
        .context("no MAC address for the server's veth")?
        .to_owned();
    let rate = rate.to_string();
    tool(
        &lab.attacker,
        30,
        "masscan",
        &[
            crate::Lab::SERVER_V4,
            "-p",
            ports,
            "--rate",
            &rate,
            "--router-mac",
            &mac,
            "-e",
            crate::Lab::ATTACKER_IF,
            "--adapter-ip",
            crate::Lab::ATTACKER_V4,
            "--wait",
            "1",
        ],
        &[124],
    )
}

/// Ports an nmap scan saw answered (open or closed), from its grepable
/// output (`-oG -`): listed ports plus an ignored state of "closed".
/// Filtered ports are the ones a block hid.
pub fn answered_ports(grepable: &str) -> usize {
    let mut answered = 0;
    for line in grepable.lines() {
        if let Some((_, ports)) = line.split_once("Ports: ") {
            let ports = ports.split('\t').next().unwrap_or("");
            answered += ports
                .split(", ")
                .filter(|p| {
                    let state = p.split('/').nth(1).unwrap_or("");
                    state == "open" || state == "closed"
                })
                .count();
        }
        if let Some((_, ignored)) = line.split_once("Ignored State: ") {
            let (state, count) = ignored.split_once(" (").unwrap_or(("", ""));
            if state == "closed" {
                answered += count.trim_end_matches(')').parse::<usize>().unwrap_or(0);
            }
        }
    }
    answered
}

/// Sends raw Ethernet `frames` out of `ifname` inside `ns` (an AF_PACKET
/// socket), at most until `deadline` passes; returns how many were sent.
/// For spoofed sources: the frames carry a MAC address nobody owns, so the
/// receiving stack drops them after the XDP program has seen them, and
/// nothing answers the spoofed addresses.
pub fn send_frames(
    ns: &Netns,
    ifname: &str,
    frames: impl Iterator<Item = Vec<u8>> + Send,
    deadline: Duration,
) -> anyhow::Result<usize> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    ns.enter(|| -> anyhow::Result<usize> {
        let index = crate::netns::ifindex(ifname)?;
        // SAFETY: plain socket creation; the fd is owned below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
        }
        // SAFETY: a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an all-zero sockaddr_ll is valid; the fields set follow.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        let start = std::time::Instant::now();
        let mut sent = 0;
        for frame in frames {
            if start.elapsed() > deadline {
                break;
            }
            loop {
                // SAFETY: valid buffer and address for the duration of the call.
                let n = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&raw const addr).cast(),
                        size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                if n >= 0 {
                    break;
                }
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::ENOBUFS) {
                    return Err(err).context("sending a frame");
                }
                std::thread::yield_now();
            }
            sent += 1;
        }
        Ok(sent)
    })?
}

/// Addresses spread over 198.18.0.0/15 (the benchmark range the lab uses),
/// from a fixed seed: the same sequence every run.
pub fn spoofed_sources(seed: u64) -> impl Iterator<Item = [u8; 4]> {
    let mut x = seed;
    std::iter::from_fn(move || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let v = ((x >> 33) % (1 << 17)) as u32;
        Some([198, 18 + (v >> 16) as u8, (v >> 8) as u8, v as u8])
    })
}

/// One HTTP/1.1 exchange from inside `ns`: `request` (the whole text) to
/// `addr:port`, and the whole response, read until the server closes.
pub fn http_exchange(ns: &Netns, addr: &str, port: u16, request: &str) -> anyhow::Result<String> {
    ns.enter(|| -> anyhow::Result<String> {
        let mut s = TcpStream::connect((addr, port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(request.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })?
}

/// `GET /metrics` from a daemon's `--metrics-listen` on 127.0.0.1:`port`
/// inside `ns`, checked to be OpenMetrics text and parsed into
/// "name{labels}" -> value.
pub fn scrape_metrics(
    ns: &Netns,
    port: u16,
) -> anyhow::Result<std::collections::HashMap<String, f64>> {
    // As Prometheus asks (without it, text format 0.0.4 is served).
    let text = http_exchange(
        ns,
        "127.0.0.1",
        port,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n",
    )?;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    anyhow::ensure!(body.ends_with("# EOF\n"), "not OpenMetrics text: {body}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|line| {
            let (name, value) = line
                .rsplit_once(' ')
                .with_context(|| format!("bad sample {line:?}"))?;
            let value = value
                .parse::<f64>()
                .with_context(|| format!("bad value in {line:?}"))?;
            Ok((name.to_owned(), value))
        })
        .collect()
}

/// zmap (Debian's 2.1.1) from `ns` through `iface`, as `source`, to
/// exactly `targets` on `port`: confined by its allowlist file (and an
/// empty blocklist: its default one excludes the lab's 198.18.0.0/15),
/// at most that many targets, a 100 kbit/s cap, 10 s of sending, all under
/// a 30 s timeout. Every frame goes to `gateway_mac`. Returns the targets
/// that answered with a SYN-ACK.
pub fn zmap(
    ns: &Netns,
    iface: &str,
    source: &str,
    gateway_mac: &str,
    targets: &[String],
    port: u16,
) -> anyhow::Result<Vec<String>> {
    let dir =
        std::env::temp_dir().join(format!("scanner-zmap-{}-{}", std::process::id(), ns.name()));
    std::fs::create_dir_all(&dir)?;
    let allow = dir.join("allowlist");
    let block = dir.join("blocklist");
    std::fs::write(
        &allow,
        targets
            .iter()
            .map(|t| format!("{t}/32\n"))
            .collect::<String>(),
    )?;
    std::fs::write(&block, "")?;
    let (port, count) = (port.to_string(), targets.len().to_string());
    let (allow_s, block_s) = (
        allow.to_string_lossy().into_owned(),
        block.to_string_lossy().into_owned(),
    );
    let args = [
        "-p",
        &port,
        "-i",
        iface,
        "-S",
        source,
        "-G",
        gateway_mac,
        "-w",
        &allow_s,
        "-b",
        &block_s,
        "-n",
        &count,
        "-B",
        "100K",
        "-t",
        "10",
        "-c",
        "3",
        "-T",
        "1",
        "-q",
        "--disable-syslog",
        "-o",
        "-",
    ];
    // zmap 2.1.1 now and then aborts on an assertion in its address
    // iterator (`constraint_lookup_index`) as it starts (seen 6 ms in, a
    // bench's whole run lost to it): that run is tried again, twice at
    // most.
    let mut out = tool(ns, 30, "zmap", &args, &[]);
    for _ in 0..2 {
        match &out {
            Err(e) if format!("{e:#}").contains("constraint_lookup_index") => {
                out = tool(ns, 30, "zmap", &args, &[]);
            }
            _ => break,
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// masscan from `ns` through `iface`, as `source`, to `targets` (a range
/// such as 198.18.0.2-198.18.0.6) on `ports`, at `rate` packets a second,
/// every frame to `router_mac`, under a 20 s timeout (it waits past its
/// last probe rather than exit).
pub fn masscan_sweep(
    ns: &Netns,
    iface: &str,
    source: &str,
    router_mac: &str,
    targets: &str,
    ports: &str,
    rate: u32,
) -> anyhow::Result<Output> {
    let rate = rate.to_string();
    tool(
        ns,
        20,
        "masscan",
        &[
            targets,
            "-p",
            ports,
            "--rate",
            &rate,
            "--router-mac",
            router_mac,
            "-e",
            iface,
            "--adapter-ip",
            source,
            "--wait",
            "2",
        ],
        &[124],
    )
}

#[cfg(test)]
mod tests {
    use super::answered_ports;

    #[test]
    fn answered_ports_count_open_and_closed() {
        let out = "Host: 198.18.0.2 ()\tStatus: Up\nHost: 198.18.0.2 ()\tPorts: 1/closed/tcp//tcpmux///, 22/open/tcp//ssh///, 80/filtered/tcp//http///\tIgnored State: filtered (997)\n";
        assert_eq!(answered_ports(out), 2);
        let out = "Host: 198.18.0.2 ()\tPorts: 22/open/tcp//ssh///\tIgnored State: closed (999)\n";
        assert_eq!(answered_ports(out), 1000);
        assert_eq!(answered_ports("# Nmap done\n"), 0);
    }
}
