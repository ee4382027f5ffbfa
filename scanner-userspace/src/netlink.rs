//! Netlink, the little the daemon needs: a request sent on a fresh socket,
//! the answer's messages, and their attributes. Used for rtnetlink (which
//! XDP program an interface runs) and sock_diag (which IPv6 listeners take
//! IPv6 only).

use std::{io, os::fd::OwnedFd};

use crate::sys;

pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
/// Netlink attribute types carry flags in their top bits.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// Most bytes one dump is read for: a bound on a host with a huge table.
const MOST_BYTES: usize = 64 << 20;

/// A netlink socket of `protocol` (NETLINK_ROUTE, NETLINK_SOCK_DIAG).
pub(crate) fn socket(protocol: i32) -> io::Result<OwnedFd> {
    sys::netlink_socket(protocol)
}

/// A message: struct nlmsghdr (length, type, `flags`, sequence 1, port 0)
/// around `payload`.
pub(crate) fn message(kind: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
    let len = 16 + payload.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m
}

/// Sends `request` on `fd`.
pub(crate) fn send(fd: &OwnedFd, request: &[u8]) -> io::Result<()> {
    sys::send(fd, request)
}

/// One datagram of the answer.
pub(crate) fn recv(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    sys::recv(fd, 64 * 1024)
}

/// Every message of a dump (up to NLMSG_DONE): (type, payload).
pub(crate) fn dump(fd: &OwnedFd) -> io::Result<Vec<(u16, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut read = 0;
    loop {
        let datagram = recv(fd)?;
        if datagram.is_empty() {
            return Ok(out);
        }
        read += datagram.len();
        for (kind, payload) in messages(&datagram) {
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let errno = payload
                        .get(0..4)
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, i32::from_ne_bytes);
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                _ => out.push((kind, payload.to_vec())),
            }
        }
        if read > MOST_BYTES {
            return Err(io::Error::other("netlink dump too large"));
        }
    }
}

/// The messages in a datagram: (type, payload after the 16-byte header).
pub(crate) fn messages(mut bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::try_from(u32::from_ne_bytes(bytes.get(0..4)?.try_into().ok()?)).ok()?;
        let kind = u16::from_ne_bytes(bytes.get(4..6)?.try_into().ok()?);
        let payload = bytes.get(16..len)?;
        bytes = bytes.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some((kind, payload))
    })
}

/// Netlink attributes (struct rtattr: length, type, payload; 4-aligned).
pub(crate) fn attributes(mut bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes(bytes.get(0..2)?.try_into().ok()?));
        let kind = u16::from_ne_bytes(bytes.get(2..4)?.try_into().ok()?) & NLA_TYPE_MASK;
        let payload = bytes.get(4..len)?;
        bytes = bytes.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some((kind, payload))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_attributes_are_walked_by_their_lengths() {
        // Two attributes, the first with a payload that needs padding.
        let attrs = [5u16.to_ne_bytes(), 11u16.to_ne_bytes()]
            .concat()
            .into_iter()
            .chain([1, 0, 0, 0])
            .chain([8u16.to_ne_bytes(), 4u16.to_ne_bytes()].concat())
            .chain(7u32.to_ne_bytes())
            .collect::<Vec<u8>>();
        let found: Vec<(u16, Vec<u8>)> = attributes(&attrs).map(|(t, v)| (t, v.to_vec())).collect();
        assert_eq!(found, [(11, vec![1]), (4, 7u32.to_ne_bytes().to_vec())]);
        let two = [message(20, 0, &[1, 2, 3, 4]), message(NLMSG_DONE, 0, &[])].concat();
        let kinds: Vec<u16> = messages(&two).map(|(k, _)| k).collect();
        assert_eq!(kinds, [20, NLMSG_DONE]);
    }
}
