//! Which IPv6 listening sockets take IPv6 only (IPV6_V6ONLY, nginx's
//! default `ipv6only=on`): /proc/net shows `::` for both kinds, so it is
//! asked of sock_diag, which reports the flag per socket. A listener on
//! `::` without it answers IPv4 too; with it, an IPv4 probe of its port
//! finds it closed.

use std::{collections::BTreeSet, io};

use crate::audit::sock_diag::{self, TCP_LISTEN_STATE};

const ALL_STATES: u32 = u32::MAX;

/// The inodes of this namespace's IPv6 TCP listeners and UDP sockets that
/// take IPv6 only.
pub(crate) fn v6only_inodes() -> io::Result<BTreeSet<u64>> {
    let mut out = BTreeSet::new();
    for (proto, states) in [
        (libc::IPPROTO_TCP, TCP_LISTEN_STATE),
        (libc::IPPROTO_UDP, ALL_STATES),
    ] {
        for msg in sock_diag::dump(libc::AF_INET6, proto, states)? {
            if let Some(inode) = v6only(&msg) {
                out.insert(inode);
            }
        }
    }
    Ok(out)
}

/// The inode of the socket an inet_diag_msg describes, if it takes IPv6
/// only.
fn v6only(msg: &[u8]) -> Option<u64> {
    let inode = sock_diag::inode(msg)?;
    sock_diag::v6only(msg).then_some(inode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::sock_diag::{DIAG_MSG, INET_DIAG_SKV6ONLY, INODE_AT};

    fn diag_msg(inode: u32, v6only: u8) -> Vec<u8> {
        let mut m = vec![0u8; DIAG_MSG];
        m[0] = libc::AF_INET6 as u8;
        m[INODE_AT..INODE_AT + 4].copy_from_slice(&inode.to_ne_bytes());
        m.extend_from_slice(&5u16.to_ne_bytes());
        m.extend_from_slice(&INET_DIAG_SKV6ONLY.to_ne_bytes());
        m.extend_from_slice(&[v6only, 0, 0, 0]);
        m
    }

    #[test]
    fn the_flag_is_read_per_socket() {
        assert_eq!(v6only(&diag_msg(4242, 1)), Some(4242));
        assert_eq!(v6only(&diag_msg(4242, 0)), None);
        assert_eq!(v6only(&[0; 10]), None, "a short message is no answer");
    }

    fn inode(fd: &impl std::os::fd::AsRawFd) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map(|m| m.ino())
            .unwrap_or(0)
    }

    #[test]
    fn a_v6only_listener_is_told_from_a_dual_stack_one() {
        use std::os::fd::FromRawFd as _;
        let dual = std::net::TcpListener::bind("[::]:0").unwrap();
        // SAFETY: plain socket calls on a descriptor owned by `only`.
        let only = unsafe {
            let fd = libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0);
            let only = std::net::TcpListener::from_raw_fd(fd);
            let one: libc::c_int = 1;
            let set = libc::setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                (&raw const one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            assert_eq!(set, 0);
            let mut addr: libc::sockaddr_in6 = std::mem::zeroed();
            addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            let bound = libc::bind(
                fd,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            );
            assert_eq!(bound, 0);
            assert_eq!(libc::listen(fd, 1), 0);
            only
        };
        let found = v6only_inodes().unwrap();
        assert!(found.contains(&inode(&only)), "{found:?}");
        assert!(!found.contains(&inode(&dual)));
    }
}
