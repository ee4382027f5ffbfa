//! Hand-built frames, and a table of parser cases checked twice: against the
//! parser on the host and against the XDP program in the kernel
//! (BPF_PROG_TEST_RUN), so both agree on every case.

use scanner_common::{
    IPPROTO_ANY, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, SCTP_COOKIE_ECHO, SCTP_INIT, SourceKey,
    class,
};

pub const SYN: u8 = 0x02;
pub const FIN: u8 = 0x01;
pub const ACK: u8 = 0x10;
pub const XMAS: u8 = 0x29;
pub const RST: u8 = 0x04;

const SERVER_V4: [u8; 4] = [198, 18, 0, 2];
const SERVER_V6: [u8; 16] = v6(2);

/// 2001:db8::N
pub const fn v6(n: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0x20;
    a[1] = 0x01;
    a[2] = 0x0d;
    a[3] = 0xb8;
    a[15] = n;
    a
}

/// 198.18.0.N
pub const fn v4(n: u8) -> [u8; 4] {
    [198, 18, 0, n]
}

/// Ethernet header with optional VLAN tags (each a TPID), then `payload`.
pub fn eth(ethertype: u16, tags: &[u16], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    for (i, tpid) in tags.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + i as u16).to_be_bytes()); // VLAN id
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// IPv4 header of `ihl` 32-bit words (options zero-filled), then `payload`.
pub fn ipv4(src: [u8; 4], proto: u8, ihl: u8, fragment: u16, payload: &[u8]) -> Vec<u8> {
    let len = usize::from(ihl.max(5)) * 4;
    let mut h = vec![0u8; len];
    h[0] = 0x40 | (ihl & 0x0f);
    h[2..4].copy_from_slice(&((len + payload.len()) as u16).to_be_bytes());
    h[6..8].copy_from_slice(&fragment.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&SERVER_V4);
    // A valid header checksum: a bridge with br_netfilter on (Debian's
    // default once it is loaded) drops frames whose IPv4 header fails it,
    // before any other port sees them.
    let sum = header_checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// The Internet checksum (RFC 1071) of an IPv4 header whose checksum field
/// is zero.
fn header_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// IPv6 header, then extension headers `ext` (already chained), then `payload`.
pub fn ipv6(src: [u8; 16], next: u8, ext: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&((ext.len() + payload.len()) as u16).to_be_bytes());
    h[6] = next;
    h[7] = 64;
    h[8..24].copy_from_slice(&src);
    h[24..40].copy_from_slice(&SERVER_V6);
    h.extend_from_slice(ext);
    h.extend_from_slice(payload);
    h
}

/// A TCP header of `words` 32-bit words.
pub fn tcp(dport: u16, flags: u8, words: u8) -> Vec<u8> {
    let mut h = vec![0u8; usize::from(words.max(5)) * 4];
    h[0..2].copy_from_slice(&40000u16.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = words << 4;
    h[13] = flags;
    h[14..16].copy_from_slice(&64240u16.to_be_bytes());
    h
}

/// An SCTP common header and one chunk of type `chunk` (4-byte chunk header).
pub fn sctp(dport: u16, chunk: u8) -> Vec<u8> {
    let mut h = vec![0u8; 16];
    h[0..2].copy_from_slice(&40000u16.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = chunk;
    h[14..16].copy_from_slice(&4u16.to_be_bytes());
    h
}

/// The first fragment of a TCP probe cut after `bytes` bytes of its header
/// (nmap `-f` cuts at 8, `-ff` at 16), padded to Ethernet's 60-byte minimum
/// as a real NIC delivers it: the padding must not be read as header.
pub fn ipv4_tiny_fragment(src: u8, dport: u16, flags: u8, bytes: usize) -> Vec<u8> {
    let tcp = tcp(dport, flags, 5);
    let mut f = eth(
        0x0800,
        &[],
        &ipv4(v4(src), IPPROTO_TCP, 5, 0x2000, &tcp[..bytes]),
    );
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// The same over IPv6: a fragment header (offset 0, more fragments), then
/// `bytes` bytes of the TCP header.
pub fn ipv6_tiny_fragment(src: u8, dport: u16, flags: u8, bytes: usize) -> Vec<u8> {
    let tcp = tcp(dport, flags, 5);
    let first = [IPPROTO_TCP, 0, 0x00, 0x01, 0, 0, 0, 9];
    eth(0x86dd, &[], &ipv6(v6(src), 44, &first, &tcp[..bytes]))
}

/// The rest of a fragmented packet (offset 8 bytes, no more fragments).
pub fn ipv4_later_fragment(src: u8) -> Vec<u8> {
    eth(
        0x0800,
        &[],
        &ipv4(v4(src), IPPROTO_TCP, 5, 0x0001, &[0u8; 12]),
    )
}

pub fn udp(dport: u16) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0..2].copy_from_slice(&40000u16.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&8u16.to_be_bytes());
    h
}

pub fn ipv4_tcp(src: u8, dport: u16, flags: u8) -> Vec<u8> {
    eth(
        0x0800,
        &[],
        &ipv4(v4(src), IPPROTO_TCP, 5, 0, &tcp(dport, flags, 5)),
    )
}

/// A SYN as an operating system's connect() sends it: a 40-byte header
/// (MSS, SACK, timestamps, window scale), unlike a raw-packet scanner's
/// bare SYN.
pub fn ipv4_stack_syn(src: u8, dport: u16) -> Vec<u8> {
    stack_syn_v4(v4(src), dport)
}

/// [`ipv4_stack_syn`] over IPv6, from 2001:db8::`src`.
pub fn ipv6_stack_syn(src: u8, dport: u16) -> Vec<u8> {
    stack_syn_v6(v6(src), dport)
}

/// [`ipv4_stack_syn`] from any IPv4 address.
pub fn stack_syn_v4(src: [u8; 4], dport: u16) -> Vec<u8> {
    eth(
        0x0800,
        &[],
        &ipv4(src, IPPROTO_TCP, 5, 0, &tcp(dport, SYN, 10)),
    )
}

/// [`ipv4_stack_syn`] from any IPv6 address.
pub fn stack_syn_v6(src: [u8; 16], dport: u16) -> Vec<u8> {
    eth(
        0x86dd,
        &[],
        &ipv6(src, IPPROTO_TCP, &[], &tcp(dport, SYN, 10)),
    )
}

pub fn ipv6_tcp(src: u8, dport: u16, flags: u8) -> Vec<u8> {
    ipv6_tcp_from(v6(src), dport, flags)
}

/// [`ipv6_tcp`] from any address.
pub fn ipv6_tcp_from(src: [u8; 16], dport: u16, flags: u8) -> Vec<u8> {
    eth(
        0x86dd,
        &[],
        &ipv6(src, IPPROTO_TCP, &[], &tcp(dport, flags, 5)),
    )
}

/// What the parser (and the XDP program's map updates) must make of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Tracked under `source` with `CLASS_*` `class`; `probe`: counts toward fan-out.
    Tracked {
        source: SourceKey,
        class: usize,
        proto: u8,
        dport: u16,
        probe: bool,
    },
    NotIp,
    Untracked,
    /// A fragment other than the first.
    Fragment,
    ParseFailure,
}

pub struct Case {
    pub name: &'static str,
    pub frame: Vec<u8>,
    pub expect: Expect,
}

fn tracked4(src: u8, class: usize, proto: u8, dport: u16, probe: bool) -> Expect {
    Expect::Tracked {
        source: SourceKey::from_v4(v4(src)),
        class,
        proto,
        dport,
        probe,
    }
}

fn probe4(src: u8, class: usize, proto: u8, dport: u16) -> Expect {
    tracked4(src, class, proto, dport, true)
}

fn tracked_v6(src: u8, class: usize, proto: u8, dport: u16) -> Expect {
    Expect::Tracked {
        source: SourceKey::from_v6(v6(src)),
        class,
        proto,
        dport,
        probe: true,
    }
}

fn tracked6(src: u8, class: usize, dport: u16) -> Expect {
    Expect::Tracked {
        source: SourceKey::from_v6(v6(src)),
        class,
        proto: IPPROTO_TCP,
        dport,
        probe: true,
    }
}

/// One source address per case, so map effects can be told apart.
pub fn cases() -> Vec<Case> {
    let hop_by_hop = [IPPROTO_TCP, 0, 0, 0, 0, 0, 0, 0]; // next=TCP, 8 bytes
    let first_fragment_v6 = [IPPROTO_TCP, 0, 0x00, 0x01, 0, 0, 0, 1]; // offset 0, M=1
    let later_fragment_v6 = [IPPROTO_TCP, 0, 0x00, 0xb8, 0, 0, 0, 1]; // offset 23
    // Seven hop-by-hop headers: more than the parser skips.
    let long_chain: Vec<u8> = (0..7).flat_map(|_| [0u8, 0, 0, 0, 0, 0, 0, 0]).collect();
    // 9,000-byte jumbo frames: headers as usual, a large payload behind them.
    let mut jumbo_v4 = ipv4_tcp(18, 8080, SYN);
    jumbo_v4.resize(9000, 0xab);
    let mut jumbo_v6 = eth(0x86dd, &[], &ipv6(v6(6), IPPROTO_UDP, &[], &udp(161)));
    jumbo_v6.resize(9000, 0xcd);
    let mut truncated_tcp = ipv4_tcp(13, 80, SYN);
    truncated_tcp.truncate(14 + 20 + 10);
    let mut truncated_ipv6 = ipv6_tcp(14, 80, SYN);
    truncated_ipv6.truncate(14 + 30);
    vec![
        Case {
            name: "ipv4 tcp syn",
            frame: ipv4_tcp(1, 22, SYN),
            expect: tracked4(1, class::SYN, IPPROTO_TCP, 22, true),
        },
        Case {
            name: "ipv4 with options (ihl 15) and tcp fin",
            frame: eth(
                0x0800,
                &[],
                &ipv4(v4(2), IPPROTO_TCP, 15, 0, &tcp(80, FIN, 5)),
            ),
            expect: tracked4(2, class::FIN, IPPROTO_TCP, 80, true),
        },
        Case {
            name: "ipv4 udp",
            frame: eth(0x0800, &[], &ipv4(v4(3), IPPROTO_UDP, 5, 0, &udp(53))),
            expect: tracked4(3, class::UDP, IPPROTO_UDP, 53, true),
        },
        Case {
            name: "802.1Q vlan, tcp null",
            frame: eth(
                0x0800,
                &[0x8100],
                &ipv4(v4(4), IPPROTO_TCP, 5, 0, &tcp(23, 0, 5)),
            ),
            expect: tracked4(4, class::NULL, IPPROTO_TCP, 23, true),
        },
        Case {
            name: "802.1ad + 802.1Q (QinQ), tcp xmas",
            frame: eth(
                0x0800,
                &[0x88a8, 0x8100],
                &ipv4(v4(5), IPPROTO_TCP, 5, 0, &tcp(25, XMAS, 5)),
            ),
            expect: tracked4(5, class::XMAS, IPPROTO_TCP, 25, true),
        },
        Case {
            name: "ipv4 first fragment (MF, offset 0)",
            frame: eth(
                0x0800,
                &[],
                &ipv4(v4(6), IPPROTO_TCP, 5, 0x2000, &tcp(1433, SYN, 5)),
            ),
            expect: tracked4(6, class::SYN, IPPROTO_TCP, 1433, true),
        },
        Case {
            name: "ipv4 non-first fragment",
            frame: eth(
                0x0800,
                &[],
                &ipv4(v4(7), IPPROTO_TCP, 5, 0x0010, &tcp(21, SYN, 5)),
            ),
            expect: Expect::Fragment,
        },
        Case {
            name: "ack to an ephemeral port (a reply)",
            frame: ipv4_tcp(8, 40001, ACK),
            expect: tracked4(8, class::ACK, IPPROTO_TCP, 40001, false),
        },
        Case {
            name: "ack to a service port (ack scan probe)",
            frame: ipv4_tcp(9, 80, ACK),
            expect: tracked4(9, class::ACK, IPPROTO_TCP, 80, true),
        },
        Case {
            name: "ipv6 tcp syn",
            frame: ipv6_tcp(1, 443, SYN),
            expect: tracked6(1, class::SYN, 443),
        },
        Case {
            name: "ipv6 hop-by-hop then tcp syn",
            frame: eth(0x86dd, &[], &ipv6(v6(2), 0, &hop_by_hop, &tcp(22, SYN, 5))),
            expect: tracked6(2, class::SYN, 22),
        },
        Case {
            name: "ipv6 first fragment then tcp syn",
            frame: eth(
                0x86dd,
                &[],
                &ipv6(v6(3), 44, &first_fragment_v6, &tcp(80, SYN, 5)),
            ),
            expect: tracked6(3, class::SYN, 80),
        },
        Case {
            name: "ipv6 non-first fragment",
            frame: eth(
                0x86dd,
                &[],
                &ipv6(v6(4), 44, &later_fragment_v6, &tcp(80, SYN, 5)),
            ),
            expect: Expect::Fragment,
        },
        Case {
            name: "ipv6 extension chain longer than the bound",
            frame: eth(0x86dd, &[], &ipv6(v6(5), 0, &long_chain, &tcp(80, SYN, 5))),
            expect: Expect::Untracked,
        },
        Case {
            name: "ipv4 jumbo frame",
            frame: jumbo_v4,
            expect: tracked4(18, class::SYN, IPPROTO_TCP, 8080, true),
        },
        Case {
            name: "ipv6 jumbo frame",
            frame: jumbo_v6,
            expect: Expect::Tracked {
                source: SourceKey::from_v6(v6(6)),
                class: class::UDP,
                proto: IPPROTO_UDP,
                dport: 161,
                probe: true,
            },
        },
        Case {
            name: "icmp",
            frame: eth(
                0x0800,
                &[],
                &ipv4(v4(10), 1, 5, 0, &[8, 0, 0, 0, 0, 0, 0, 0]),
            ),
            expect: Expect::Untracked,
        },
        Case {
            name: "arp",
            frame: eth(0x0806, &[], &[0u8; 28]),
            expect: Expect::NotIp,
        },
        Case {
            name: "ipv4 ihl below 5",
            frame: eth(0x0800, &[], &{
                let mut h = ipv4(v4(11), IPPROTO_TCP, 5, 0, &tcp(80, SYN, 5));
                h[0] = 0x44;
                h
            }),
            expect: Expect::ParseFailure,
        },
        Case {
            name: "ipv4 ihl past the end of the frame",
            frame: eth(0x0800, &[], &{
                let mut h = ipv4(v4(12), IPPROTO_TCP, 5, 0, &[]);
                h[0] = 0x4f;
                h
            }),
            expect: Expect::ParseFailure,
        },
        Case {
            name: "tcp header cut short",
            frame: truncated_tcp,
            expect: Expect::ParseFailure,
        },
        Case {
            name: "ipv6 header cut short",
            frame: truncated_ipv6,
            expect: Expect::ParseFailure,
        },
        Case {
            name: "tcp data offset below 5",
            frame: eth(
                0x0800,
                &[],
                &ipv4(v4(15), IPPROTO_TCP, 5, 0, &{
                    let mut t = tcp(80, SYN, 5);
                    t[12] = 4 << 4;
                    t
                }),
            ),
            expect: Expect::ParseFailure,
        },
        Case {
            name: "tcp data offset past the end",
            frame: eth(
                0x0800,
                &[],
                &ipv4(v4(16), IPPROTO_TCP, 5, 0, &{
                    let mut t = tcp(80, SYN, 5);
                    t[12] = 15 << 4;
                    t
                }),
            ),
            expect: Expect::ParseFailure,
        },
        Case {
            name: "ipv4 tiny first fragment, 8 bytes of tcp (nmap -f), padded frame",
            frame: ipv4_tiny_fragment(19, 3389, SYN, 8),
            expect: probe4(19, class::FRAGMENTED, IPPROTO_TCP, 3389),
        },
        Case {
            name: "ipv4 first fragment with 16 bytes of tcp (nmap -ff)",
            frame: ipv4_tiny_fragment(20, 445, SYN, 16),
            expect: probe4(20, class::FRAGMENTED, IPPROTO_TCP, 445),
        },
        Case {
            name: "ipv4 first fragment with 2 bytes of tcp: no ports",
            frame: ipv4_tiny_fragment(21, 445, SYN, 2),
            expect: Expect::Untracked,
        },
        Case {
            name: "ipv6 tiny first fragment, 8 bytes of tcp",
            frame: ipv6_tiny_fragment(7, 5900, FIN, 8),
            expect: tracked_v6(7, class::FRAGMENTED, IPPROTO_TCP, 5900),
        },
        Case {
            name: "ipv4 later fragment of a tiny probe",
            frame: ipv4_later_fragment(22),
            expect: Expect::Fragment,
        },
        Case {
            name: "sctp init (nmap -sY)",
            frame: eth(
                0x0800,
                &[],
                &ipv4(v4(23), IPPROTO_SCTP, 5, 0, &sctp(3868, SCTP_INIT)),
            ),
            expect: probe4(23, class::SCTP_INIT, IPPROTO_SCTP, 3868),
        },
        Case {
            name: "sctp cookie echo (nmap -sZ)",
            frame: eth(
                0x0800,
                &[],
                &ipv4(v4(24), IPPROTO_SCTP, 5, 0, &sctp(2905, SCTP_COOKIE_ECHO)),
            ),
            expect: probe4(24, class::SCTP_COOKIE, IPPROTO_SCTP, 2905),
        },
        Case {
            name: "sctp data of an association: not a probe",
            frame: eth(
                0x0800,
                &[],
                &ipv4(v4(25), IPPROTO_SCTP, 5, 0, &sctp(3868, 0)),
            ),
            expect: tracked4(25, class::SCTP_INIT, IPPROTO_SCTP, 3868, false),
        },
        Case {
            name: "sctp over ipv6",
            frame: eth(
                0x86dd,
                &[],
                &ipv6(v6(8), IPPROTO_SCTP, &[], &sctp(9899, SCTP_INIT)),
            ),
            expect: tracked_v6(8, class::SCTP_INIT, IPPROTO_SCTP, 9899),
        },
        Case {
            name: "sctp first fragment cut after 8 bytes",
            frame: eth(
                0x0800,
                &[],
                &ipv4(v4(32), IPPROTO_SCTP, 5, 0x2000, &sctp(3868, SCTP_INIT)[..8]),
            ),
            expect: probe4(32, class::FRAGMENTED, IPPROTO_SCTP, 3868),
        },
        Case {
            name: "gre to this host (an ip protocol probe, nmap -sO)",
            frame: eth(0x0800, &[], &ipv4(v4(26), 47, 5, 0, &[])),
            expect: probe4(26, class::PROTOCOL, IPPROTO_ANY, 47),
        },
        Case {
            name: "ipv6 no-next-header to this host (nmap -6 -sO)",
            frame: eth(0x86dd, &[], &ipv6(v6(9), 59, &[], &[])),
            expect: tracked_v6(9, class::PROTOCOL, IPPROTO_ANY, 59),
        },
        Case {
            name: "vrrp to its multicast group: not a probe of this host",
            frame: eth(0x0800, &[], &{
                let mut h = ipv4(v4(27), 112, 5, 0, &[0u8; 8]);
                h[16..20].copy_from_slice(&[224, 0, 0, 18]);
                h
            }),
            expect: Expect::Untracked,
        },
        Case {
            name: "igmp: never a probe",
            frame: eth(
                0x0800,
                &[],
                &ipv4(v4(28), 2, 5, 0, &[0x11, 0, 0, 0, 0, 0, 0, 0]),
            ),
            expect: Expect::Untracked,
        },
        Case {
            name: "tcp syn+fin (nmap --scanflags SYNFIN)",
            frame: ipv4_tcp(29, 8443, SYN | FIN),
            expect: probe4(29, class::INVALID_FLAGS, IPPROTO_TCP, 8443),
        },
        Case {
            name: "tcp every flag (URGACKPSHRSTSYNFIN): a probe despite the RST",
            frame: ipv4_tcp(30, 40002, 0x3f),
            expect: probe4(30, class::INVALID_FLAGS, IPPROTO_TCP, 40002),
        },
        Case {
            name: "tcp rst: an answer",
            frame: ipv4_tcp(31, 80, RST),
            expect: tracked4(31, class::OTHER_TCP, IPPROTO_TCP, 80, false),
        },
        Case {
            name: "wrong ip version",
            frame: eth(0x0800, &[], &{
                let mut h = ipv4(v4(17), IPPROTO_TCP, 5, 0, &tcp(80, SYN, 5));
                h[0] = 0x65;
                h
            }),
            expect: Expect::ParseFailure,
        },
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ipv4_header_checksum_is_rfc_1071s() {
        // A header from RFC 1071's worked examples' usual illustration:
        // 192.168.0.1 -> 192.168.0.199, UDP, checksum 0xb861.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(super::header_checksum(&header), 0xb861);
        let frame = super::ipv4(super::v4(7), 6, 5, 0, &[]);
        assert_eq!(
            super::header_checksum(&frame[..20]),
            0,
            "a valid header sums to zero"
        );
    }
}
