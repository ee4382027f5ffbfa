//! What the soak sends: benign clients on a thread of their own, real
//! scans of every family (nmap and masscan, each from an address of its
//! own), spoofed floods in bursts, and the probes that check a block.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use scanner_common::IPPROTO_TCP;
use scanner_tests::{
    Netns,
    crowdsec::FleetLab,
    packets::{SYN, eth, ipv4, tcp},
    soak::CLIENT_V4,
    traffic,
};

use crate::lab::{HTTP_PORT, SESSION_PORT, SoakLab, UDP_PORT};

/// Server A's IPv6 address on the fleet lab.
pub(crate) const A_V6: &str = "2001:db8::2";

/// One scan family: how the soak runs it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Family {
    pub(crate) name: &'static str,
    /// nmap's scan flags; empty: masscan.
    pub(crate) nmap: &'static [&'static str],
    pub ipv6: bool,
}

/// Every family, in the order the soak cycles through them.
pub(crate) const FAMILIES: [Family; 14] = [
    nmap("nmap -sS", &["-sS"]),
    nmap("nmap -sT", &["-sT"]),
    nmap("nmap -sF", &["-sF"]),
    nmap("nmap -sN", &["-sN"]),
    nmap("nmap -sX", &["-sX"]),
    nmap("nmap -sM", &["-sM"]),
    nmap("nmap -sA", &["-sA"]),
    nmap("nmap -sW", &["-sW"]),
    nmap("nmap -sU", &["-sU"]),
    nmap("nmap -sY", &["-sY"]),
    nmap("nmap -sO", &["-sO"]),
    nmap("nmap -sS -f", &["-sS", "-f"]),
    Family {
        name: "nmap -6 -sS",
        nmap: &["-6", "-sS"],
        ipv6: true,
    },
    Family {
        name: "masscan",
        nmap: &[],
        ipv6: false,
    },
];

const fn nmap(name: &'static str, flags: &'static [&'static str]) -> Family {
    Family {
        name,
        nmap: flags,
        ipv6: false,
    }
}

/// The address scan number `n` (from 0) comes from: a /24 or /48 of its
/// own, so that no two scans share a prefix.
pub(crate) fn scan_source(n: usize, ipv6: bool) -> String {
    let net = 1 + n % 250;
    let host = 7 + n / 250;
    if ipv6 {
        format!("2001:db8:{net:x}::{host:x}")
    } else {
        format!("198.18.{net}.{host}")
    }
}

/// `address` as a host route's CIDR (/32 or /128).
pub(crate) fn host_cidr(address: &str) -> String {
    if address.contains(':') {
        format!("{address}/128")
    } else {
        format!("{address}/32")
    }
}

/// Runs `family` from `source` (an address of the attacker's) against
/// server A's ports 1-200, bounded in time and rate.
pub(crate) fn scan(lab: &SoakLab, family: Family, source: &str) -> anyhow::Result<()> {
    if family.nmap.is_empty() {
        return masscan(lab, source);
    }
    let target = if family.ipv6 { A_V6 } else { FleetLab::A_V4 };
    let mut args: Vec<&str> = family.nmap.to_vec();
    args.extend([
        "--max-retries",
        "0",
        "--min-rate",
        "2000",
        "-p",
        "1-200",
        "-S",
        source,
        "-e",
        FleetLab::ATTACKER_IF,
        target,
    ]);
    traffic::nmap(&lab.net.attacker, &args).map(drop)
}

fn masscan(lab: &SoakLab, source: &str) -> anyhow::Result<()> {
    let link = lab.net.a.ip(&["-j", "link", "show", FleetLab::SERVER_IF])?;
    let json: serde_json::Value = serde_json::from_slice(&link.stdout)?;
    let mac = json[0]["address"]
        .as_str()
        .context("server A's MAC address")?
        .to_owned();
    traffic::tool(
        &lab.net.attacker,
        30,
        "masscan",
        &[
            FleetLab::A_V4,
            "-p",
            "1-200",
            "--rate",
            "2000",
            "--router-mac",
            &mac,
            "-e",
            FleetLab::ATTACKER_IF,
            "--adapter-ip",
            source,
            "--wait",
            "1",
        ],
        &[124],
    )
    .map(drop)
}

/// One burst of `frames` (at most 65,536) spoofed SYNs, each from another
/// address of 198.19.0.0/16 (a different order every `seed`) to a random
/// port above 1023: a flood of one packet per source, which the stack drops
/// (the frames' MAC is nobody's); how many were sent. Each /24 of it sends
/// many closed ports from many addresses: a distributed scan of its own.
pub(crate) fn flood(lab: &SoakLab, seed: u64, frames: usize) -> anyhow::Result<usize> {
    let mut x = seed;
    let burst = (0..frames.min(1 << 16) as u32).map(move |i| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        // An odd multiplier: a bijection of the 65,536 host numbers.
        let host = i
            .wrapping_mul(40_503)
            .wrapping_add((seed as u32).wrapping_mul(12_345))
            & 0xffff;
        let src = [198, 19, (host >> 8) as u8, host as u8];
        let port = 1024 + ((x >> 48) as u16 % 60_000);
        eth(
            0x0800,
            &[],
            &ipv4(src, IPPROTO_TCP, 5, 0, &tcp(port, SYN, 5)),
        )
    });
    traffic::send_frames(
        &lab.net.attacker,
        FleetLab::ATTACKER_IF,
        burst,
        Duration::from_secs(20),
    )
}

/// Whether `source` (one of the attacker's addresses) gets an answer from
/// server A's HTTP port within `wait`.
pub(crate) fn answered(lab: &SoakLab, source: &str, wait: Duration) -> anyhow::Result<bool> {
    let v6 = source.contains(':');
    let from: SocketAddr = if v6 {
        format!("[{source}]:0")
    } else {
        format!("{source}:0")
    }
    .parse()?;
    let to: SocketAddr = if v6 {
        format!("[{A_V6}]:{HTTP_PORT}")
    } else {
        format!("{}:{HTTP_PORT}", FleetLab::A_V4)
    }
    .parse()?;
    lab.net
        .attacker
        .enter(|| traffic::answers_within(from, to, wait))?
}

/// What the benign clients did: requests answered and not.
#[derive(Default)]
pub(crate) struct Benign {
    pub(crate) ok: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) last_error: std::sync::Mutex<String>,
}

/// The benign client (server B's namespace) until `stop`: an HTTP request
/// and a UDP request to server A every 250 ms, and a session to port 22
/// held open, a line echoed every 5 s (opened again if it breaks).
pub(crate) fn benign(
    ns: &Netns,
    stop: Arc<AtomicBool>,
    tally: Arc<Benign>,
) -> anyhow::Result<JoinHandle<()>> {
    let a: std::net::IpAddr = FleetLab::A_V4.parse()?;
    let client: SocketAddr = format!("{CLIENT_V4}:0").parse()?;
    ns.spawn_in(move || {
        let mut session: Option<TcpStream> = None;
        let mut last_line = Instant::now();
        let udp = UdpSocket::bind(client).ok();
        while !stop.load(Ordering::Relaxed) {
            let mut results =
                vec![traffic::http_get(client, SocketAddr::new(a, HTTP_PORT)).map(drop)];
            results.push(udp_round(udp.as_ref(), a));
            if last_line.elapsed() >= Duration::from_secs(5) {
                last_line = Instant::now();
                results.push(session_round(&mut session, a));
            }
            for r in results {
                match r {
                    Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        if let Ok(mut last) = tally.last_error.lock() {
                            *last = format!("{e:#}");
                        }
                        tally.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    })
}

fn udp_round(udp: Option<&UdpSocket>, a: std::net::IpAddr) -> anyhow::Result<()> {
    let udp = udp.context("no UDP socket")?;
    udp.set_read_timeout(Some(Duration::from_secs(2)))?;
    udp.send_to(b"query", (a, UDP_PORT))?;
    let mut buf = [0u8; 64];
    let (n, _) = udp.recv_from(&mut buf).context("UDP echo")?;
    anyhow::ensure!(&buf[..n] == b"query", "UDP echo: {:?}", &buf[..n]);
    Ok(())
}

fn session_round(session: &mut Option<TcpStream>, a: std::net::IpAddr) -> anyhow::Result<()> {
    if session.is_none() {
        let s =
            TcpStream::connect_timeout(&SocketAddr::new(a, SESSION_PORT), Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        *session = Some(s);
    }
    let result = (|| -> anyhow::Result<()> {
        let s = session.as_mut().context("no session")?;
        s.write_all(b"still here\n")?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf)?;
        anyhow::ensure!(n > 0, "the session was closed");
        Ok(())
    })();
    if result.is_err() {
        *session = None;
    }
    result.context("the held-open session")
}
