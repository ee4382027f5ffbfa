//! The packet parser, shared by the XDP program and the host.
//!
//! It reads through [`Frame`], which the kernel implements with a bounds check
//! against `data_end` the verifier can follow, and the host implements for
//! byte slices. Every offset it computes is bounded (IHL, TCP data offset and
//! IPv6 extension lengths are small fields, and loops have fixed bounds), so
//! the verifier can prove each access in range.

use crate::{
    SourceKey,
    frame::{Frame, Header},
};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_IGMP: u8 = 2;
pub const IPPROTO_ICMPV6: u8 = 58;
/// Not a protocol on the wire: the tracker's name for "some IP protocol it
/// has no transport parser for" (255 is reserved by IANA). Such a packet's
/// `dport` holds its protocol number, so an IP protocol scan (nmap `-sO`)
/// fans out over protocol numbers the way a port scan fans out over ports.
pub const IPPROTO_ANY: u8 = 255;
/// SCTP chunk types that open an association (see `classify::is_probe`).
pub const SCTP_INIT: u8 = 1;
pub const SCTP_COOKIE_ECHO: u8 = 10;

/// VLAN tags skipped (802.1Q, and 802.1ad QinQ outer + inner).
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers skipped before giving up on finding TCP/UDP.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

/// The transport header fields the tracker needs. A plain struct, every
/// field always set: an enum whose variants leave bytes undefined lets the
/// compiler copy uninitialised registers, which the verifier rejects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transport {
    /// `IPPROTO_TCP`, `IPPROTO_UDP`, `IPPROTO_SCTP`, or `IPPROTO_ANY` for
    /// any other protocol (its number is then in `dport`).
    pub proto: u8,
    /// TCP flags; the first chunk's type for SCTP; 0 otherwise.
    pub flags: u8,
    /// TCP header length in bytes (data offset × 4); 0 otherwise.
    pub header_len: u8,
    /// 1 when this is a first fragment that ends inside its transport
    /// header: only the ports were read (flags and chunk type are 0).
    pub cut: u8,
    pub sport: u16,
    pub dport: u16,
}

impl Transport {
    pub const fn tcp(sport: u16, dport: u16, flags: u8, header_len: u8) -> Self {
        Self {
            proto: IPPROTO_TCP,
            flags,
            header_len,
            cut: 0,
            sport,
            dport,
        }
    }

    pub const fn udp(sport: u16, dport: u16) -> Self {
        Self {
            proto: IPPROTO_UDP,
            flags: 0,
            header_len: 0,
            cut: 0,
            sport,
            dport,
        }
    }

    /// SCTP, with the type of its first chunk.
    pub const fn sctp(sport: u16, dport: u16, chunk: u8) -> Self {
        Self {
            proto: IPPROTO_SCTP,
            flags: chunk,
            header_len: 0,
            cut: 0,
            sport,
            dport,
        }
    }

    /// A first fragment cut inside the `proto` header: ports only.
    pub const fn cut(proto: u8, sport: u16, dport: u16) -> Self {
        Self {
            proto,
            flags: 0,
            header_len: 0,
            cut: 1,
            sport,
            dport,
        }
    }

    /// A packet of IP protocol `number`, which has no parser here.
    pub const fn protocol(number: u8) -> Self {
        Self {
            proto: IPPROTO_ANY,
            flags: 0,
            header_len: 0,
            cut: 0,
            sport: 0,
            dport: number as u16,
        }
    }

    pub const fn is_tcp(&self) -> bool {
        self.proto == IPPROTO_TCP
    }
}

/// A parsed TCP, UDP or SCTP packet, or one of another IP protocol.
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
    /// IP that asks about no port or protocol: ICMP, IGMP, a protocol other
    /// than TCP/UDP/SCTP sent to a multicast or broadcast address, or more
    /// extension headers than we skip. Its source still counts for allow
    /// and block rules.
    Untracked(SourceKey),
    /// A fragment other than the first: no transport header. Counted for
    /// its source, and subject to its rules.
    Fragment(SourceKey),
    /// TCP, UDP, SCTP, or another protocol sent to this host's own address.
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

/// Where an IP packet's source address lies in its frame: read by
/// [`source`] only for the packets that need it (most of a server's
/// traffic asks about no port and, while nothing is blocked, needs none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceAt {
    offset: usize,
    v6: bool,
}

impl SourceAt {
    #[inline(always)]
    pub fn is_v6(&self) -> bool {
        self.v6
    }
}

/// [`Parsed`] with the source address left in the frame (see [`source`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    NotIp,
    Untracked(SourceAt),
    Fragment(SourceAt),
    Transport(SourceAt, Transport),
}

#[inline(always)]
fn read<const N: usize, F: Frame + ?Sized>(f: &F, off: usize) -> Result<Header<'_, N>> {
    f.header::<N>(off).ok_or(ParseError::Truncated)
}

// Each header's fixed part is checked once, then its fields read in place
// (see `crate::frame`): separate checks per field let the compiler merge
// them in ways the verifier cannot follow.

/// The ethertype after Ethernet and up to two VLAN tags, and where the
/// network header starts.
#[inline(always)]
fn link<F: Frame + ?Sized>(f: &F) -> Result<(u16, usize)> {
    let mut ethertype = read::<ETH_HLEN, F>(f, 0)?.be16::<12>();
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        ethertype = read::<4, F>(f, off)?.be16::<2>();
        off += 4;
    }
    Ok((ethertype, off))
}

/// Parses Ethernet (with up to two VLAN tags), IPv4 or IPv6, then TCP or UDP:
/// [`shape`], then the source address. The host's parse (tests and
/// fuzzing); the XDP programs match the shape in place and read the source
/// where they need it: a `Parsed` built in them and then
/// matched copies the unset bytes of its smaller variants, which the
/// verifier rejects.
#[inline(always)]
pub fn parse<F: Frame + ?Sized>(f: &F) -> Result<Parsed> {
    Ok(match shape(f)? {
        Shape::NotIp => Parsed::NotIp,
        Shape::Untracked(at) => Parsed::Untracked(source(f, at)?),
        Shape::Fragment(at) => Parsed::Fragment(source(f, at)?),
        Shape::Transport(at, transport) => Parsed::Transport(Headers {
            source: source(f, at)?,
            transport,
        }),
    })
}

/// [`parse`], but for the source address, which stays in the frame: the
/// XDP program reads it only when the packet needs it.
///
/// Most of a server's traffic is one frame: untagged IPv4 with no options,
/// not fragmented, carrying TCP. That frame is read with one bounds check
/// over its first [`PLAIN_TCP4`] bytes (the TCP header's own check lies
/// inside it, and the compiler drops it), and one more for TCP options;
/// any other takes the general [`walk`], which reaches the same shape on
/// the plain frame too (a property test holds the two to that).
#[inline(always)]
pub fn shape<F: Frame + ?Sized>(f: &F) -> Result<Shape> {
    if let Some(frame) = f.header::<PLAIN_TCP4>(0)
        && frame.be16::<12>() == ETH_P_IPV4
        && frame.u8::<{ ETH_HLEN }>() == PLAIN_VERSION_IHL
        && frame.be16::<{ ETH_HLEN + 6 }>() & (IP_MF | IP_OFFSET) == 0
        && frame.u8::<{ ETH_HLEN + 9 }>() == IPPROTO_TCP
    {
        let source = SourceAt {
            offset: ETH_HLEN + 12,
            v6: false,
        };
        return Ok(Shape::Transport(source, tcp(f, ETH_HLEN + 20)?));
    }
    walk(f)
}

/// Ethernet, IPv4 without options and TCP without options: the bytes the
/// plain frame's one bounds check covers (see [`shape`]).
pub const PLAIN_TCP4: usize = ETH_HLEN + 20 + 20;
/// Version 4, a 20-byte header: an IPv4 header without options.
const PLAIN_VERSION_IHL: u8 = 0x45;
/// IPv4's more-fragments flag: a first fragment, when the offset is 0.
const IP_MF: u16 = 0x2000;
/// IPv4's fragment offset: not 0 in every fragment but the first.
const IP_OFFSET: u16 = 0x1fff;

/// [`shape`] of any frame, by walking its headers one by one: what
/// `shape` does for every frame but the plain one, public so that tests
/// can hold the two to the same result.
/// (The link layer is walked here in line, not through [`link`]: returning
/// the offset through a `Result` costs the verifier more states on every
/// path of the program.)
#[inline(always)]
pub fn walk<F: Frame + ?Sized>(f: &F) -> Result<Shape> {
    let mut ethertype = read::<ETH_HLEN, F>(f, 0)?.be16::<12>();
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        ethertype = read::<4, F>(f, off)?.be16::<2>();
        off += 4;
    }
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(f, off),
        ETH_P_IPV6 => parse_ipv6(f, off),
        _ => Ok(Shape::NotIp),
    }
}

/// The source address [`shape`] found at `at` (IPv4 mapped).
#[inline(always)]
pub fn source<F: Frame + ?Sized>(f: &F, at: SourceAt) -> Result<SourceKey> {
    Ok(if at.v6 {
        SourceKey::from_v6(read::<16, F>(f, at.offset)?.bytes16::<0>())
    } else {
        SourceKey::from_v4(read::<4, F>(f, at.offset)?.bytes4::<0>())
    })
}

/// The destination address of an IP frame, keyed as a source is (IPv4
/// mapped). The parse keeps only the source: this is read again only for
/// the packets that need it (a blocked source's TCP segments, to find the
/// connection they belong to).
#[inline(always)]
pub fn destination<F: Frame + ?Sized>(f: &F) -> Option<SourceKey> {
    let (ethertype, off) = link(f).ok()?;
    match ethertype {
        ETH_P_IPV4 => {
            let ip = read::<20, F>(f, off).ok()?;
            Some(SourceKey::from_v4(ip.bytes4::<16>()))
        }
        ETH_P_IPV6 => {
            let ip = read::<40, F>(f, off).ok()?;
            Some(SourceKey::from_v6(ip.bytes16::<24>()))
        }
        _ => None,
    }
}

#[inline(always)]
fn parse_ipv4<F: Frame + ?Sized>(f: &F, off: usize) -> Result<Shape> {
    let ip = read::<20, F>(f, off)?;
    let version_ihl = ip.u8::<0>();
    if version_ihl >> 4 != 4 {
        return Err(ParseError::Malformed);
    }
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if ihl < 20 {
        return Err(ParseError::Malformed);
    }
    // The options, if any, must be in the frame too.
    read::<1, F>(f, off + ihl - 1)?;
    let source = SourceAt {
        offset: off + 12,
        v6: false,
    };
    let fragment = ip.be16::<6>();
    if fragment & IP_OFFSET != 0 {
        // Only the first fragment carries the transport header.
        return Ok(Shape::Fragment(source));
    }
    // A first fragment (more-fragments set) carries the transport bytes up
    // to its IP length; Ethernet padding past it must not be read as header.
    let room = if fragment & IP_MF != 0 {
        usize::from(ip.be16::<2>()).saturating_sub(ihl)
    } else {
        UNFRAGMENTED
    };
    // Multicast (224/4) and the broadcast address.
    let unicast = ip.u8::<16>() < 224;
    parse_transport(f, off + ihl, ip.u8::<9>(), source, room, unicast)
}

/// `room` of a packet that is not a first fragment: the header is whole.
const UNFRAGMENTED: usize = usize::MAX;

#[inline(always)]
fn parse_ipv6<F: Frame + ?Sized>(f: &F, off: usize) -> Result<Shape> {
    let ip = read::<40, F>(f, off)?;
    if ip.u8::<0>() >> 4 != 6 {
        return Err(ParseError::Malformed);
    }
    let mut next = ip.u8::<6>();
    let source = SourceAt {
        offset: off + 8,
        v6: true,
    };
    let end = off + 40 + usize::from(ip.be16::<4>());
    let unicast = ip.u8::<24>() != 0xff;
    let mut first_fragment = false;
    let mut off = off + 40;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-octet units.
            0 | 43 | 60 => {
                let ext = read::<2, F>(f, off)?;
                next = ext.u8::<0>();
                off += (usize::from(ext.u8::<1>()) + 1) * 8;
            }
            // Authentication header: length in 4-octet units, minus 2.
            51 => {
                let ext = read::<2, F>(f, off)?;
                next = ext.u8::<0>();
                off += (usize::from(ext.u8::<1>()) + 2) * 4;
            }
            // Fragment header: only the first fragment has the transport header.
            44 => {
                let ext = read::<4, F>(f, off)?;
                let offset_flags = ext.be16::<2>();
                if offset_flags & 0xfff8 != 0 {
                    return Ok(Shape::Fragment(source));
                }
                first_fragment = offset_flags & 1 != 0;
                next = ext.u8::<0>();
                off += 8;
            }
            _ => break,
        }
    }
    let room = if first_fragment {
        end.saturating_sub(off)
    } else {
        UNFRAGMENTED
    };
    parse_transport(f, off, next, source, room, unicast)
}

/// The transport header at `off`. `room`: the bytes of it a first fragment
/// carries (`UNFRAGMENTED` otherwise); `unicast`: sent to one address, not
/// to a group.
#[inline(always)]
fn parse_transport<F: Frame + ?Sized>(
    f: &F,
    off: usize,
    proto: u8,
    source: SourceAt,
    room: usize,
    unicast: bool,
) -> Result<Shape> {
    let whole = match proto {
        IPPROTO_TCP => 20,
        IPPROTO_UDP => 8,
        // Common header and the first chunk's type.
        IPPROTO_SCTP => 13,
        _ => 0,
    };
    if room < whole {
        // A first fragment that splits its transport header: no stack
        // sends one. Its ports come first; without them it is nothing.
        if room < 4 {
            return Ok(Shape::Untracked(source));
        }
        let ports = read::<4, F>(f, off)?;
        let transport = Transport::cut(proto, ports.be16::<0>(), ports.be16::<2>());
        return Ok(Shape::Transport(source, transport));
    }
    let transport = match proto {
        IPPROTO_TCP => tcp(f, off)?,
        IPPROTO_UDP => {
            let udp = read::<8, F>(f, off)?;
            Transport::udp(udp.be16::<0>(), udp.be16::<2>())
        }
        IPPROTO_SCTP => {
            let sctp = read::<13, F>(f, off)?;
            Transport::sctp(sctp.be16::<0>(), sctp.be16::<2>(), sctp.u8::<12>())
        }
        // Ping, errors and group membership ask about no port or protocol;
        // an IPv6 extension header here is one past the bound we skip.
        IPPROTO_ICMP | IPPROTO_IGMP | IPPROTO_ICMPV6 | 0 | 43 | 44 | 51 | 60 => {
            return Ok(Shape::Untracked(source));
        }
        // Any other protocol aimed at this host's address: one probe of
        // that protocol (ESP, GRE, ... and nmap -sO's empty packets).
        _ if unicast => Transport::protocol(proto),
        _ => return Ok(Shape::Untracked(source)),
    };
    Ok(Shape::Transport(source, transport))
}

/// The TCP header at `off`, its options in the frame too.
#[inline(always)]
fn tcp<F: Frame + ?Sized>(f: &F, off: usize) -> Result<Transport> {
    let tcp = read::<20, F>(f, off)?;
    let data_offset = usize::from(tcp.u8::<12>() >> 4) * 4;
    if data_offset < 20 {
        return Err(ParseError::Malformed);
    }
    read::<1, F>(f, off + data_offset - 1)?;
    Ok(Transport::tcp(
        tcp.be16::<0>(),
        tcp.be16::<2>(),
        tcp.u8::<13>(),
        data_offset as u8,
    ))
}
