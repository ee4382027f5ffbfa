//! The kernel's socket lists through sock_diag (NETLINK_SOCK_DIAG): TCP
//! listeners, established connections and the IPv6-only flag.
//!
//! Why not /proc/net/tcp: to print a namespace's few listeners it walks
//! every bucket of the host's established-connection hash table, which is
//! sized by memory (5 ms a file on the machine `cargo xtask bench` runs
//! on, and the daemon reads the listeners every two seconds, the ring
//! buffer waiting meanwhile). A sock_diag dump asked for listeners only
//! reads the listening hash table and skips that walk. Established
//! connections are in that table, so asking for them walks it all the
//! same, but in the kernel without printing a line per socket of the
//! host, and the connections with one peer are picked there (a filter of
//! inet_diag bytecode): what a detection asks, before its report.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::netlink;

/// A TCP listener as sock_diag tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpListener {
    pub addr: IpAddr,
    pub port: u16,
    pub inode: u64,
    /// An IPv6 socket that takes IPv6 only.
    pub v6only: bool,
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// inet_diag's request for TCP sockets, both families at once.
const TCPDIAG_GETSOCK: u16 = 18;
pub(super) const INET_DIAG_SKV6ONLY: u16 = 11;
/// struct inet_diag_msg, before its attributes.
pub(super) const DIAG_MSG: usize = 72;
/// Where struct inet_diag_msg has the source port (network order) and
/// address (16 bytes, of which IPv4 uses 4).
const SPORT_AT: usize = 4;
const SRC_AT: usize = 8;
/// Where struct inet_diag_msg has the socket's inode.
pub(super) const INODE_AT: usize = 68;
/// Where struct inet_diag_msg has the destination (remote) address.
const DST_AT: usize = 24;
/// `1 << TCP_LISTEN`.
pub(super) const TCP_LISTEN_STATE: u32 = 1 << 10;
/// `1 << TCP_ESTABLISHED`.
const TCP_ESTABLISHED_STATE: u32 = 1 << 1;
/// The request's attribute carrying a filter (INET_DIAG_REQ_BYTECODE).
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// The filter's test of the remote address (INET_DIAG_BC_D_COND).
const INET_DIAG_BC_D_COND: u8 = 8;

/// The struct inet_diag_msg of every socket of `family` and `proto` in one
/// of `states` (a bitmask of `1 << state`), in this network namespace.
pub(super) fn dump(family: i32, proto: i32, states: u32) -> io::Result<Vec<Vec<u8>>> {
    dump_filtered(Ask::Family(family, proto), states, &[])
}

/// Which sockets a dump asks for.
#[derive(Debug, Clone, Copy)]
enum Ask {
    /// sock_diag's request: one family and protocol (a walk of the tables
    /// for each family).
    Family(i32, i32),
    /// inet_diag's first request (TCPDIAG_GETSOCK, kept by Linux for
    /// compatibility): TCP sockets of both families in one walk.
    TcpBothFamilies,
}

/// [`dump`] of the sockets `ask` names, in one of `states`, that the
/// inet_diag `bytecode` accepts (none: all).
fn dump_filtered(ask: Ask, states: u32, bytecode: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    let fd = netlink::socket(libc::NETLINK_SOCK_DIAG)?;
    let mut req = Vec::with_capacity(60 + 4 + bytecode.len());
    let kind = match ask {
        Ask::Family(family, proto) => {
            // struct inet_diag_req_v2: family, protocol, no extensions,
            // pad, the states wanted, and an all-zero socket id (every
            // socket).
            req.extend_from_slice(&[family as u8, proto as u8, 0, 0]);
            req.extend_from_slice(&states.to_ne_bytes());
            req.extend_from_slice(&[0; 48]);
            SOCK_DIAG_BY_FAMILY
        }
        Ask::TcpBothFamilies => {
            // struct inet_diag_req: a family (a dump ignores it), no
            // address lengths nor extensions, an all-zero socket id, the
            // states wanted, no dbs.
            req.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
            req.extend_from_slice(&[0; 48]);
            req.extend_from_slice(&states.to_ne_bytes());
            req.extend_from_slice(&0u32.to_ne_bytes());
            TCPDIAG_GETSOCK
        }
    };
    if !bytecode.is_empty() {
        let len = u16::try_from(4 + bytecode.len()).map_err(io::Error::other)?;
        req.extend_from_slice(&len.to_ne_bytes());
        req.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        req.extend_from_slice(bytecode);
    }
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    netlink::send(&fd, &netlink::message(kind, flags, &req))?;
    // Each answer comes in a message of the request's type.
    Ok(netlink::dump(&fd)?
        .into_iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, msg)| msg)
        .collect())
}

/// This namespace's TCP listeners, both families.
pub(crate) fn tcp_listeners() -> io::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        let msgs = dump(family, libc::IPPROTO_TCP, TCP_LISTEN_STATE)?;
        out.extend(msgs.iter().filter_map(|m| listener(m)));
    }
    Ok(out)
}

/// The remote address of each of this namespace's established TCP
/// connections (both families; IPv4-mapped ones as IPv4), once per
/// connection; with `peer` only, when it is given (picked by the kernel).
/// One walk of the connection table for both families where Linux takes
/// inet_diag's request, one per family where it does not.
pub(crate) fn established(peer: Option<IpAddr>) -> io::Result<Vec<IpAddr>> {
    established_by(Walks::Once, peer).or_else(|_| established_by(Walks::PerFamily, peer))
}

/// How many walks of the connection table [`established_by`] asks for.
#[derive(Debug, Clone, Copy)]
enum Walks {
    /// One, for both families ([`Ask::TcpBothFamilies`]).
    Once,
    /// One per family (sock_diag's own request).
    PerFamily,
}

/// [`established`], asked in `walks`.
fn established_by(walks: Walks, peer: Option<IpAddr>) -> io::Result<Vec<IpAddr>> {
    let bytecode = peer.map(remote_is).unwrap_or_default();
    let v4 = Ask::Family(libc::AF_INET, libc::IPPROTO_TCP);
    let v6 = Ask::Family(libc::AF_INET6, libc::IPPROTO_TCP);
    let asks: &[Ask] = match walks {
        Walks::Once => &[Ask::TcpBothFamilies],
        // An IPv6 peer has no connection among the IPv4 sockets.
        Walks::PerFamily if peer.is_some_and(|p| p.to_canonical().is_ipv6()) => &[v6],
        Walks::PerFamily => &[v4, v6],
    };
    let mut out = Vec::new();
    for ask in asks {
        let msgs = dump_filtered(*ask, TCP_ESTABLISHED_STATE, &bytecode)?;
        out.extend(msgs.iter().filter_map(|m| remote(m)));
    }
    Ok(out)
}

/// An inet_diag filter that accepts the sockets whose remote address is
/// `peer` (an IPv4 one matches the IPv4-mapped address of an IPv6 socket
/// too): one struct inet_diag_bc_op, its struct inet_diag_hostcond (any
/// port) and the address. The op jumps to the end when the test holds,
/// past it (a reject) when not.
fn remote_is(peer: IpAddr) -> Vec<u8> {
    let (family, bits, addr) = match peer.to_canonical() {
        IpAddr::V4(a) => (libc::AF_INET, 32, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6, 128, a.octets().to_vec()),
    };
    let len = 4 + 8 + addr.len() as u16;
    let mut bc = Vec::with_capacity(usize::from(len));
    bc.extend_from_slice(&[INET_DIAG_BC_D_COND, len as u8]);
    bc.extend_from_slice(&(len + 4).to_ne_bytes());
    bc.extend_from_slice(&[family as u8, bits, 0, 0]);
    bc.extend_from_slice(&(-1i32).to_ne_bytes());
    bc.extend_from_slice(&addr);
    bc
}

/// The remote address an inet_diag_msg gives (IPv4-mapped as IPv4).
fn remote(msg: &[u8]) -> Option<IpAddr> {
    address_at(msg, DST_AT).map(|ip| ip.to_canonical())
}

/// The listener an inet_diag_msg describes.
fn listener(msg: &[u8]) -> Option<TcpListener> {
    let port = u16::from_be_bytes(msg.get(SPORT_AT..SPORT_AT + 2)?.try_into().ok()?);
    Some(TcpListener {
        addr: address_at(msg, SRC_AT)?,
        port,
        inode: inode(msg)?,
        v6only: v6only(msg),
    })
}

/// The address of the message's family at `at` in an inet_diag_msg (its
/// source or destination: 16 bytes, of which IPv4 uses 4).
fn address_at(msg: &[u8], at: usize) -> Option<IpAddr> {
    match i32::from(*msg.first()?) {
        libc::AF_INET => {
            let a: [u8; 4] = msg.get(at..at + 4)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(a)))
        }
        libc::AF_INET6 => {
            let a: [u8; 16] = msg.get(at..at + 16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

/// The socket's inode.
pub(super) fn inode(msg: &[u8]) -> Option<u64> {
    let inode = u32::from_ne_bytes(msg.get(INODE_AT..INODE_AT + 4)?.try_into().ok()?);
    Some(u64::from(inode))
}

/// Whether the socket takes IPv6 only (the attribute comes with every
/// IPv6 socket).
pub(super) fn v6only(msg: &[u8]) -> bool {
    msg.get(DIAG_MSG..).is_some_and(|attrs| {
        netlink::attributes(attrs)
            .any(|(kind, value)| kind == INET_DIAG_SKV6ONLY && value.first() == Some(&1))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn diag_msg(family: i32, port: u16, src: &[u8], inode: u32) -> Vec<u8> {
        let mut m = vec![0u8; DIAG_MSG];
        m[0] = family as u8;
        m[1] = 10;
        m[SPORT_AT..SPORT_AT + 2].copy_from_slice(&port.to_be_bytes());
        m[SRC_AT..SRC_AT + src.len()].copy_from_slice(src);
        m[INODE_AT..INODE_AT + 4].copy_from_slice(&inode.to_ne_bytes());
        m
    }

    #[test]
    fn a_message_reads_as_its_listener() {
        let l = listener(&diag_msg(libc::AF_INET, 8080, &[198, 18, 0, 1], 77)).unwrap();
        assert_eq!(
            (l.addr, l.port, l.inode, l.v6only),
            ("198.18.0.1".parse().unwrap(), 8080, 77, false)
        );
        let mut v6 = diag_msg(libc::AF_INET6, 443, &[0; 16], 78);
        v6.extend_from_slice(&5u16.to_ne_bytes());
        v6.extend_from_slice(&INET_DIAG_SKV6ONLY.to_ne_bytes());
        v6.extend_from_slice(&[1, 0, 0, 0]);
        let l = listener(&v6).unwrap();
        assert_eq!(
            (l.addr, l.port, l.v6only),
            ("::".parse().unwrap(), 443, true)
        );
        assert_eq!(listener(&[0; 10]), None, "a short message is no answer");
        assert_eq!(remote(&[0; 10]), None);
        assert_eq!(
            remote_is("::ffff:198.18.0.1".parse().unwrap()),
            remote_is("198.18.0.1".parse().unwrap()),
            "an IPv4-mapped peer is filtered as the IPv4 one"
        );
        assert_eq!(
            listener(&diag_msg(99, 1, &[], 1)),
            None,
            "nor another family"
        );
    }

    /// Connections to a listener on the loopback address `peer`, `v4`
    /// from IPv4 sockets and `v6` from IPv6 ones (to its IPv4-mapped
    /// address), all accepted: `peer` is their connecting ends' remote
    /// address. Kept open while the result lives.
    pub(crate) fn connected_to(peer: Ipv4Addr, v4: usize, v6: usize) -> Vec<std::net::TcpStream> {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind((peer, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut open: Vec<TcpStream> = (0..v4)
            .map(|_| TcpStream::connect((peer, port)).unwrap())
            .collect();
        for _ in 0..v6 {
            let s = TcpStream::connect((peer.to_ipv6_mapped(), port)).unwrap();
            assert!(s.local_addr().unwrap().is_ipv6(), "an IPv6 socket");
            open.push(s);
        }
        for _ in 0..v4 + v6 {
            open.push(listener.accept().unwrap().0);
        }
        open
    }

    #[test]
    fn both_requests_find_the_connections_with_a_peer() {
        // A loopback address of this test's own (other tests connect
        // meanwhile).
        let peer = Ipv4Addr::new(127, 83, 41, 9);
        let _open = connected_to(peer, 1, 1);
        for ask in [Walks::Once, Walks::PerFamily] {
            let found = established_by(ask, Some(IpAddr::V4(peer))).unwrap();
            assert_eq!(found, [IpAddr::V4(peer); 2], "{ask:?}");
            let mut all = established_by(ask, None).unwrap();
            all.retain(|ip| *ip == IpAddr::V4(peer));
            assert_eq!(all.len(), 2, "{ask:?}");
            let v6 = established_by(ask, Some("2001:db8::9".parse().unwrap())).unwrap();
            assert!(v6.is_empty(), "{ask:?}");
        }
    }
}
