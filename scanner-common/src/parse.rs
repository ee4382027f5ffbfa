//! The packet parser, shared by the XDP program and the host.
//!
//! It reads through [`Frame`], which the kernel implements with a bounds check
//! against `data_end` the verifier can follow, and the host implements for
//! byte slices. Every offset it computes is bounded (IHL, TCP data offset and
//! IPv6 extension lengths are small fields, and loops have fixed bounds), so
//! the verifier can prove each access in range.

use crate::SourceKey;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// VLAN tags skipped (802.1Q, and 802.1ad QinQ outer + inner).
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers skipped before giving up on finding TCP/UDP.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

/// Bounds-checked reads from a frame.
pub trait Frame {
    /// The `N` bytes at `offset`, or `None` unless all of them are inside the frame.
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;
}

impl Frame for [u8] {
    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        let slice = self.get(offset..end)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Some(out)
    }
}

/// The transport header fields the tracker needs. A plain struct, every
/// field always set: an enum whose variants leave bytes undefined lets the
/// compiler copy uninitialised registers, which the verifier rejects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transport {
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    /// TCP flags; 0 for UDP.
    pub flags: u8,
    /// TCP header length in bytes (data offset × 4); 0 for UDP.
    pub header_len: u8,
    pub sport: u16,
    pub dport: u16,
}

impl Transport {
    pub const fn tcp(sport: u16, dport: u16, flags: u8, header_len: u8) -> Self {
        Self {
            proto: IPPROTO_TCP,
            flags,
            header_len,
            sport,
            dport,
        }
    }

    pub const fn udp(sport: u16, dport: u16) -> Self {
        Self {
            proto: IPPROTO_UDP,
            flags: 0,
            header_len: 0,
            sport,
            dport,
        }
    }

    pub const fn is_tcp(&self) -> bool {
        self.proto == IPPROTO_TCP
    }
}

/// A parsed TCP or UDP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headers {
    pub source: SourceKey,
    pub transport: Transport,
}

/// What a well-formed frame turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not IP (ARP, LLDP, more VLAN tags than we skip, ...).
    NotIp,
    /// IP without a TCP/UDP header we can read: a non-first fragment, ICMP,
    /// ESP, or more extension headers than we skip. Its source still counts
    /// for allow and block rules.
    Untracked(SourceKey),
    /// TCP or UDP.
    Transport(Headers),
}

/// Why a frame could not be parsed. Such frames pass untouched (fail open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// A header runs past the end of the frame.
    Truncated,
    /// A header field is impossible (wrong IP version, IHL < 5, TCP data offset < 5).
    Malformed,
}

type Result<T> = core::result::Result<T, ParseError>;

#[inline(always)]
fn read<const N: usize, F: Frame + ?Sized>(f: &F, off: usize) -> Result<[u8; N]> {
    f.bytes::<N>(off).ok_or(ParseError::Truncated)
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

// Each header's fixed part is read with one bounds check and its fields taken
// from the copy: separate checks per field let the compiler merge them in ways
// the verifier cannot follow.

/// Parses Ethernet (with up to two VLAN tags), IPv4 or IPv6, then TCP or UDP.
#[inline(always)]
pub fn parse<F: Frame + ?Sized>(f: &F) -> Result<Parsed> {
    let eth = read::<ETH_HLEN, F>(f, 0)?;
    let mut ethertype = be16(&eth, 12);
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let tag = read::<4, F>(f, off)?;
        ethertype = be16(&tag, 2);
        off += 4;
    }
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(f, off),
        ETH_P_IPV6 => parse_ipv6(f, off),
        _ => Ok(Parsed::NotIp),
    }
}

#[inline(always)]
fn parse_ipv4<F: Frame + ?Sized>(f: &F, off: usize) -> Result<Parsed> {
    let ip = read::<20, F>(f, off)?;
    if ip[0] >> 4 != 4 {
        return Err(ParseError::Malformed);
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(ParseError::Malformed);
    }
    // The options, if any, must be in the frame too.
    read::<1, F>(f, off + ihl - 1)?;
    let source = SourceKey::from_v4([ip[12], ip[13], ip[14], ip[15]]);
    if be16(&ip, 6) & 0x1fff != 0 {
        // Only the first fragment carries the transport header.
        return Ok(Parsed::Untracked(source));
    }
    parse_transport(f, off + ihl, ip[9], source)
}

#[inline(always)]
fn parse_ipv6<F: Frame + ?Sized>(f: &F, off: usize) -> Result<Parsed> {
    let ip = read::<24, F>(f, off)?;
    if ip[0] >> 4 != 6 {
        return Err(ParseError::Malformed);
    }
    let mut next = ip[6];
    let mut src = [0u8; 16];
    src.copy_from_slice(&ip[8..24]);
    let mut off = off + 40;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-octet units.
            0 | 43 | 60 => {
                let ext = read::<2, F>(f, off)?;
                next = ext[0];
                off += (usize::from(ext[1]) + 1) * 8;
            }
            // Authentication header: length in 4-octet units, minus 2.
            51 => {
                let ext = read::<2, F>(f, off)?;
                next = ext[0];
                off += (usize::from(ext[1]) + 2) * 4;
            }
            // Fragment header: only the first fragment has the transport header.
            44 => {
                let ext = read::<4, F>(f, off)?;
                if be16(&ext, 2) & 0xfff8 != 0 {
                    return Ok(Parsed::Untracked(SourceKey::from_v6(src)));
                }
                next = ext[0];
                off += 8;
            }
            _ => break,
        }
    }
    parse_transport(f, off, next, SourceKey::from_v6(src))
}

#[inline(always)]
fn parse_transport<F: Frame + ?Sized>(
    f: &F,
    off: usize,
    proto: u8,
    source: SourceKey,
) -> Result<Parsed> {
    let transport = match proto {
        IPPROTO_TCP => {
            let tcp = read::<20, F>(f, off)?;
            let data_offset = usize::from(tcp[12] >> 4) * 4;
            if data_offset < 20 {
                return Err(ParseError::Malformed);
            }
            read::<1, F>(f, off + data_offset - 1)?;
            Transport::tcp(be16(&tcp, 0), be16(&tcp, 2), tcp[13], data_offset as u8)
        }
        IPPROTO_UDP => {
            let udp = read::<8, F>(f, off)?;
            Transport::udp(be16(&udp, 0), be16(&udp, 2))
        }
        // ICMP, ESP, an extension header past our bound, ...
        _ => return Ok(Parsed::Untracked(source)),
    };
    Ok(Parsed::Transport(Headers { source, transport }))
}
