//! The kernel's socket lists through sock_diag (NETLINK_SOCK_DIAG): TCP
//! listeners and the IPv6-only flag.
//!
//! Why not /proc/net/tcp: to print a namespace's few listeners it walks
//! every bucket of the host's established-connection hash table, which is
//! sized by memory (5 ms a file on the machine `cargo xtask bench` runs
//! on, and the daemon reads the listeners every two seconds, the ring
//! buffer waiting meanwhile). A sock_diag dump asked for listeners only
//! reads the listening hash table and skips that walk.

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
pub(super) const INET_DIAG_SKV6ONLY: u16 = 11;
/// struct inet_diag_msg, before its attributes.
pub(super) const DIAG_MSG: usize = 72;
/// Where struct inet_diag_msg has the source port (network order) and
/// address (16 bytes, of which IPv4 uses 4).
const SPORT_AT: usize = 4;
const SRC_AT: usize = 8;
/// Where struct inet_diag_msg has the socket's inode.
pub(super) const INODE_AT: usize = 68;
/// `1 << TCP_LISTEN`.
pub(super) const TCP_LISTEN_STATE: u32 = 1 << 10;

/// The struct inet_diag_msg of every socket of `family` and `proto` in one
/// of `states` (a bitmask of `1 << state`), in this network namespace.
pub(super) fn dump(family: i32, proto: i32, states: u32) -> io::Result<Vec<Vec<u8>>> {
    let fd = netlink::socket(libc::NETLINK_SOCK_DIAG)?;
    // struct inet_diag_req_v2: family, protocol, no extensions, pad, the
    // states wanted, and an all-zero socket id (every socket).
    let mut req = Vec::with_capacity(56);
    req.extend_from_slice(&[family as u8, proto as u8, 0, 0]);
    req.extend_from_slice(&states.to_ne_bytes());
    req.extend_from_slice(&[0; 48]);
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    netlink::send(&fd, &netlink::message(SOCK_DIAG_BY_FAMILY, flags, &req))?;
    Ok(netlink::dump(&fd)?
        .into_iter()
        .filter(|(kind, _)| *kind == SOCK_DIAG_BY_FAMILY)
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

/// The listener an inet_diag_msg describes.
fn listener(msg: &[u8]) -> Option<TcpListener> {
    let family = *msg.first()?;
    let port = u16::from_be_bytes(msg.get(SPORT_AT..SPORT_AT + 2)?.try_into().ok()?);
    let addr = match i32::from(family) {
        libc::AF_INET => {
            let a: [u8; 4] = msg.get(SRC_AT..SRC_AT + 4)?.try_into().ok()?;
            IpAddr::V4(Ipv4Addr::from(a))
        }
        libc::AF_INET6 => {
            let a: [u8; 16] = msg.get(SRC_AT..SRC_AT + 16)?.try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => return None,
    };
    Some(TcpListener {
        addr,
        port,
        inode: inode(msg)?,
        v6only: v6only(msg),
    })
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
mod tests {
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
        assert_eq!(
            listener(&diag_msg(99, 1, &[], 1)),
            None,
            "nor another family"
        );
    }
}
