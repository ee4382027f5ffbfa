//! The host's listening sockets, read from sock_diag and /proc/net: the
//! ports it exposes.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use scanner_common::{IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

/// A socket waiting for traffic: TCP in LISTEN, a bound unconnected UDP
/// socket, or an SCTP endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Listener {
    pub proto: u8,
    pub addr: IpAddr,
    pub port: u16,
    /// The socket's inode (0 if unknown), to find the owning process.
    pub inode: u64,
    /// An IPv6 socket that takes IPv6 only (IPV6_V6ONLY).
    pub v6only: bool,
}

impl Listener {
    /// The address families it answers: (IPv4, IPv6). A socket on `::`
    /// answers both unless it takes IPv6 only; one on an IPv4-mapped
    /// address answers IPv4.
    pub(crate) fn families(&self) -> (bool, bool) {
        match self.addr {
            IpAddr::V4(_) => (true, false),
            IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => (true, false),
            IpAddr::V6(a) if a.is_unspecified() => (!self.v6only, true),
            IpAddr::V6(_) => (false, true),
        }
    }

    /// Reachable from the network: not bound to a loopback address.
    pub(crate) fn is_exposed(&self) -> bool {
        match self.addr {
            IpAddr::V4(a) => !a.is_loopback(),
            IpAddr::V6(a) => {
                !a.is_loopback() && a.to_ipv4_mapped().is_none_or(|v4| !v4.is_loopback())
            }
        }
    }
}

pub(crate) const TCP_LISTEN: u8 = 0x0a;
const UDP_UNCONNECTED: u8 = 0x07;

/// Every listener in this network namespace (TCP from sock_diag, UDP
/// from /proc/net/{udp,udp6}, SCTP from /proc/net/sctp/eps).
/// A file that cannot be read (e.g. IPv6 disabled) contributes nothing.
pub(crate) fn listeners() -> Vec<Listener> {
    // TCP through sock_diag, which reads the listeners alone (see
    // `sock_diag`); /proc/net/tcp where it cannot be asked.
    let mut out = match super::sock_diag::tcp_listeners() {
        Ok(tcp) => tcp
            .into_iter()
            .map(|l| Listener {
                proto: IPPROTO_TCP,
                addr: l.addr,
                port: l.port,
                inode: l.inode,
                v6only: l.v6only,
            })
            .collect(),
        Err(e) => {
            tracing::debug!("sock_diag: {e}; TCP listeners read from /proc/net");
            read_proc_net(&TCP_FILES, IPPROTO_TCP, TCP_LISTEN)
        }
    };
    out.extend(read_proc_net(
        &["/proc/net/udp", "/proc/net/udp6"],
        IPPROTO_UDP,
        UDP_UNCONNECTED,
    ));
    // Present only while the sctp module is loaded.
    if let Ok(text) = std::fs::read_to_string("/proc/net/sctp/eps") {
        out.extend(parse_sctp_eps(&text));
    }
    mark_v6only(&mut out);
    out.sort();
    out.dedup();
    out
}

/// Marks the IPv6 sockets that take IPv6 only. When sock_diag cannot be
/// asked, the system default (net.ipv6.bindv6only) stands for them all.
fn mark_v6only(listeners: &mut [Listener]) {
    match super::v6only::v6only_inodes() {
        Ok(only) => {
            for l in listeners.iter_mut().filter(|l| l.proto != IPPROTO_SCTP) {
                l.v6only = l.addr.is_ipv6() && only.contains(&l.inode);
            }
        }
        Err(e) => {
            let default = std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only")
                .is_ok_and(|v| v.trim() == "1");
            tracing::debug!("sock_diag: {e}; IPv6 listeners taken as bindv6only={default}");
            for l in listeners.iter_mut().filter(|l| l.proto != IPPROTO_SCTP) {
                l.v6only = l.addr.is_ipv6() && default;
            }
        }
    }
}

/// /proc/net's TCP tables.
const TCP_FILES: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];

/// The sockets in `state` that the /proc/net `files` list (a file that
/// cannot be read lists none).
fn read_proc_net(files: &[&str], proto: u8, state: u8) -> Vec<Listener> {
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| parse_proc_net(&text, proto, state))
        .collect()
}

/// Parses /proc/net/{tcp,udp}[6] text, keeping sockets in `state`.
pub(crate) fn parse_proc_net(text: &str, proto: u8, state: u8) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let st = u8::from_str_radix(fields.nth(1)?, 16).ok()?;
            if st != state {
                return None;
            }
            let (addr, port) = local.split_once(':')?;
            // tx:rx queue, tr:when, retransmits, uid, timeout, then the inode.
            let inode = fields.nth(5).and_then(|i| i.parse().ok()).unwrap_or(0);
            Some(Listener {
                proto,
                addr: parse_hex_addr(addr)?,
                port: u16::from_str_radix(port, 16).ok()?,
                inode,
                v6only: false,
            })
        })
        .collect()
}

/// Parses /proc/net/sctp/eps: one line per SCTP endpoint (listening or
/// not, SCTP has no LISTEN state of its own there), with its decimal local
/// port, inode, and its local addresses in text. An endpoint bound to
/// several addresses is reachable from the network if any is not loopback.
pub(crate) fn parse_sctp_eps(text: &str) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields.get(5)?.parse().ok()?;
            let inode = fields.get(7).and_then(|i| i.parse().ok()).unwrap_or(0);
            let addrs: Vec<IpAddr> = fields
                .iter()
                .skip(8)
                .filter_map(|a| a.parse().ok())
                .collect();
            let addr = addrs
                .iter()
                .find(|a| !a.is_loopback())
                .or(addrs.first())
                .copied()
                .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
            Some(Listener {
                proto: IPPROTO_SCTP,
                addr,
                port,
                inode,
                v6only: false,
            })
        })
        .collect()
}

pub(crate) const TCP_ESTABLISHED: u8 = 0x01;

/// The remote addresses of this namespace's established TCP connections
/// (IPv4-mapped ones as IPv4).
pub(crate) fn established_peers() -> BTreeSet<IpAddr> {
    match super::sock_diag::established(None) {
        Ok(peers) => peers.into_iter().collect(),
        Err(e) => {
            tracing::debug!("sock_diag: {e}; established peers read from /proc/net");
            established_remotes().collect()
        }
    }
}

/// The remote address of each established TCP connection in /proc/net,
/// once per connection.
fn established_remotes() -> impl Iterator<Item = IpAddr> {
    TCP_FILES
        .into_iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| parse_peers(&text, TCP_ESTABLISHED))
}

/// How many established TCP connections this namespace has with `peer`.
/// Asked at a detection, before its report: sock_diag picks them in the
/// kernel (see `sock_diag`), /proc/net only where it cannot be asked.
pub(crate) fn established_with(peer: IpAddr) -> usize {
    let peer = peer.to_canonical();
    match super::sock_diag::established(Some(peer)) {
        Ok(found) => found.len(),
        Err(e) => {
            tracing::debug!("sock_diag: {e}; connections with {peer} read from /proc/net");
            established_remotes().filter(|ip| *ip == peer).count()
        }
    }
}

/// The remote addresses of the sockets in `state`.
pub(crate) fn parse_peers(text: &str, state: u8) -> Vec<IpAddr> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let remote = fields.nth(2)?;
            let st = u8::from_str_radix(fields.next()?, 16).ok()?;
            if st != state {
                return None;
            }
            Some(parse_hex_addr(remote.split_once(':')?.0)?.to_canonical())
        })
        .collect()
}

/// The kernel prints addresses as 32-bit words in host byte order.
fn parse_hex_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// Open (exposed) ports by protocol, for reports.
pub(crate) fn open_ports(listeners: &[Listener]) -> BTreeSet<(u8, u16)> {
    listeners
        .iter()
        .filter(|l| l.is_exposed())
        .map(|l| (l.proto, l.port))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 020012C6:0050 010012C6:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000
   1: 00000000000000000000000001000000:0277 00000000000000000000000000000000:0000 0A 00000000:00000000
";

    #[test]
    fn listening_sockets_are_parsed_and_loopback_is_not_exposed() {
        let v4 = parse_proc_net(TCP, IPPROTO_TCP, TCP_LISTEN);
        assert_eq!(v4.len(), 2, "the established socket is not a listener");
        assert_eq!(v4[0].addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!((v4[0].port, v4[0].inode), (22, 1));
        assert_eq!(v4[1].addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(v4[0].is_exposed() && !v4[1].is_exposed());
        let v6 = parse_proc_net(TCP6, IPPROTO_TCP, TCP_LISTEN);
        assert_eq!((v6[0].port, v6[0].is_exposed()), (8080, true));
        assert_eq!(v6[1].addr, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert!(!v6[1].is_exposed());
        assert!(parse_proc_net("header\ngarbage line\n", IPPROTO_TCP, TCP_LISTEN).is_empty());
    }

    #[test]
    fn sctp_endpoints_are_listeners() {
        // As net/sctp/proc.c prints them: decimal port, inode, addresses.
        let eps = " ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS
ffff8881022c8000 ffff888103a1c000 2   10  29   3868      0 31337 198.18.0.2 2001:db8::2
ffff8881022c9000 ffff888103a1d000 2   10  30   9899      0 31338 127.0.0.1
garbage
";
        let l = parse_sctp_eps(eps);
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[0].proto, l[0].port, l[0].inode),
            (IPPROTO_SCTP, 3868, 31337)
        );
        assert!(l[0].is_exposed() && !l[1].is_exposed());
        assert_eq!(
            open_ports(&l).into_iter().collect::<Vec<_>>(),
            [(IPPROTO_SCTP, 3868)]
        );
    }

    #[test]
    fn established_peers_are_the_remote_ends() {
        // Line 2 of TCP is established with 198.18.0.1.
        assert_eq!(
            parse_peers(TCP, TCP_ESTABLISHED),
            [IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))]
        );
        assert!(parse_peers(TCP6, TCP_ESTABLISHED).is_empty());
    }

    #[test]
    fn open_ports_are_the_exposed_ones() {
        let listeners = parse_proc_net(TCP, IPPROTO_TCP, TCP_LISTEN);
        assert_eq!(
            open_ports(&listeners).into_iter().collect::<Vec<_>>(),
            [(IPPROTO_TCP, 22)]
        );
    }

    #[test]
    fn connections_with_a_peer_from_sock_diag_are_those_proc_net_lists() {
        // A loopback address of this test's own (other tests connect
        // meanwhile).
        let peer = Ipv4Addr::new(127, 83, 41, 7);
        let _open = crate::audit::sock_diag::tests::connected_to(peer, 2, 1);
        // A read of /proc/net/tcp is no snapshot: while other tests open
        // and close sockets, a line may come twice or not at all. One of a
        // few reads lists the three.
        let proc_net: Vec<usize> = (0..5)
            .map(|_| {
                established_remotes()
                    .filter(|ip| *ip == IpAddr::V4(peer))
                    .count()
            })
            .collect();
        assert!(proc_net.contains(&3), "the connecting ends: {proc_net:?}");
        assert_eq!(established_with(IpAddr::V4(peer)), 3);
        assert_eq!(
            established_with(IpAddr::V6(peer.to_ipv6_mapped())),
            3,
            "an IPv4-mapped peer is the IPv4 one"
        );
        let mut all = crate::audit::sock_diag::established(None).unwrap();
        all.retain(|ip| *ip == IpAddr::V4(peer));
        assert_eq!(all.len(), 3);
        assert!(established_peers().contains(&IpAddr::V4(peer)));
        assert_eq!(established_with("2001:db8::7".parse().unwrap()), 0);
        assert_eq!(
            established_with(IpAddr::V4(Ipv4Addr::new(127, 83, 41, 8))),
            0
        );
    }

    fn tcp_from_proc() -> Vec<Listener> {
        read_proc_net(&TCP_FILES, IPPROTO_TCP, TCP_LISTEN)
    }

    #[test]
    fn tcp_listeners_from_sock_diag_are_those_proc_net_lists() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = std::net::TcpListener::bind("[::1]:0").unwrap();
        // Other tests open and close listeners meanwhile: those there
        // before and after are listed, nothing else is.
        let before = tcp_from_proc();
        let mut from_diag: Vec<Listener> = listeners()
            .into_iter()
            .filter(|l| l.proto == IPPROTO_TCP)
            .collect();
        let after = tcp_from_proc();
        // /proc does not show the IPv6-only flag.
        from_diag.iter_mut().for_each(|l| l.v6only = false);
        for l in before.iter().filter(|l| after.contains(l)) {
            assert!(from_diag.contains(l), "{l:?} missing from {from_diag:?}");
        }
        for l in &from_diag {
            assert!(
                before.contains(l) || after.contains(l),
                "{l:?} is no listener"
            );
        }
        for bound in [&v4, &v6] {
            let port = bound.local_addr().unwrap().port();
            assert!(from_diag.iter().any(|l| l.port == port), "{port} missing");
        }
    }
}
