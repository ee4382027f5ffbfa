//! Which traffic class a packet belongs to, and whether it is a probe.

use crate::{
    Config, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, SCTP_COOKIE_ECHO, SCTP_INIT, class,
    parse::Transport,
};

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;
/// The six classic flags; ECE and CWR (ECN) are ignored for classification.
const TCP_CLASSIC: u8 = 0x3f;

/// SYN with FIN or RST, or FIN with RST: no TCP stack sends these together.
#[inline(always)]
pub fn is_invalid_tcp(flags: u8) -> bool {
    (flags & TCP_SYN != 0 && flags & (TCP_FIN | TCP_RST) != 0)
        || flags & (TCP_FIN | TCP_RST) == TCP_FIN | TCP_RST
}

/// The `CLASS_*` index of a TCP packet with these flags.
#[inline(always)]
pub fn tcp_class(flags: u8) -> usize {
    match flags & TCP_CLASSIC {
        f if is_invalid_tcp(f) => class::INVALID_FLAGS,
        f if f & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN => class::SYN,
        0 => class::NULL,
        TCP_FIN => class::FIN,
        f if f == TCP_FIN | TCP_PSH | TCP_URG => class::XMAS,
        TCP_ACK => class::ACK,
        f if f == TCP_FIN | TCP_ACK => class::MAIMON,
        _ => class::OTHER_TCP,
    }
}

/// FIN without ACK, NULL, Xmas, impossible flag sets, a transport header
/// split across fragments, an SCTP COOKIE ECHO with no association: no real
/// stack sends these to a closed port, so one is strong evidence of a scan
/// on its own.
#[inline(always)]
pub fn is_stealth(class: usize) -> bool {
    matches!(
        class,
        class::FIN
            | class::NULL
            | class::XMAS
            | class::FRAGMENTED
            | class::SCTP_COOKIE
            | class::INVALID_FLAGS
    )
}

/// Raw-packet scanners (nmap -sS, masscan, hping3) send bare SYNs with at
/// most an MSS option (20-24 byte headers); operating systems' connect()
/// adds window scaling, SACK and timestamps (32-44 bytes). This tells a
/// connect() scan from a SYN scan.
pub const STACK_SYN_MIN_HEADER: u8 = 28;

/// Whether this TCP packet is a SYN from an operating system's stack.
#[inline(always)]
pub fn is_stack_syn(t: &Transport) -> bool {
    t.is_tcp()
        && t.cut == 0
        && tcp_class(t.flags) == class::SYN
        && t.header_len >= STACK_SYN_MIN_HEADER
}

/// The `CLASS_*` index of a transport header.
#[inline(always)]
pub fn class_of(t: &Transport) -> usize {
    if t.cut != 0 {
        return class::FRAGMENTED;
    }
    match t.proto {
        IPPROTO_TCP => tcp_class(t.flags),
        IPPROTO_UDP => class::UDP,
        IPPROTO_SCTP if t.flags == SCTP_COOKIE_ECHO => class::SCTP_COOKIE,
        IPPROTO_SCTP => class::SCTP_INIT,
        _ => class::PROTOCOL,
    }
}

/// Whether `port` is in the host's ephemeral range, where replies to the
/// host's own outbound connections arrive.
#[inline(always)]
pub fn is_ephemeral(port: u16, cfg: &Config) -> bool {
    port >= cfg.ephemeral_lo && port <= cfg.ephemeral_hi
}

/// A TCP packet with ACK (and no SYN) to a port that is open: traffic of a
/// connection the host accepted, not a question about the port. An ACK
/// probe that hits an open port would only have counted as evidence
/// against scanning, so nothing is lost by not counting it, and the busiest
/// traffic of a server skips the fan-out bookkeeping.
#[inline(always)]
pub fn is_accepted_traffic(t: &Transport, open: bool) -> bool {
    open && is_segment(t)
}

/// A TCP segment with ACK and no SYN: what a connection carries once it is
/// open. To an open port it is accepted traffic ([`is_accepted_traffic`]).
#[inline(always)]
pub fn is_segment(t: &Transport) -> bool {
    t.is_tcp() && t.flags & TCP_ACK != 0 && t.flags & TCP_SYN == 0
}

/// Whether a first probe of an open port is evidence of a benign client
/// (the Threshold Random Walk's "success"). TRW counts a connection that
/// completes; a probe only predicts it. An operating system's SYN (full
/// option set) or a UDP request will be followed by the exchange it asks
/// for. A bare raw-packet SYN is what SYN scanners (nmap -sS, masscan,
/// zmap) send to every port and reset after the SYN-ACK, so it predicts
/// nothing benign: counting it would let the open ports a scan happens to
/// hit first buy it more closed ports before it is decided.
///
/// An SCTP INIT is a request like UDP's (SCTP has no connect()-style
/// option set to tell a client by). Nothing else earns it: FIN, NULL, Xmas,
/// fragments and other odd probes of an open port come from no client (an
/// ACK or FIN|ACK there is an accepted connection's traffic and no probe at
/// all).
#[inline(always)]
pub fn earns_benign_credit(class: usize, stack_syn: bool) -> bool {
    class == class::UDP || class == class::SCTP_INIT || (class == class::SYN && stack_syn)
}

/// Whether a packet counts toward a source's fan-out: it asks about a port
/// rather than answers something the host sent.
///
/// - TCP without ACK or RST (SYN, FIN, NULL, Xmas, ...) opens or probes a
///   connection; no reply looks like that, so every port counts.
/// - RST is an answer (or a scanner tearing down a half-open probe).
/// - TCP with ACK and UDP are probes only when aimed at a non-ephemeral
///   port: on ephemeral ports they are replies to the host's own clients.
/// - Flags no stack sends together, and a header cut by fragmentation,
///   always count.
/// - SCTP counts when it opens an association (INIT, COOKIE ECHO); other
///   chunks belong to one.
/// - Another IP protocol sent to this host's own address counts (the
///   parser leaves out ICMP, IGMP and multicast).
#[inline(always)]
pub fn is_probe(t: &Transport, cfg: &Config) -> bool {
    if t.cut != 0 {
        return true;
    }
    match t.proto {
        IPPROTO_TCP => {
            if is_invalid_tcp(t.flags) {
                true
            } else if t.flags & TCP_RST != 0 {
                false
            } else if t.flags & TCP_ACK == 0 {
                true
            } else {
                !is_ephemeral(t.dport, cfg)
            }
        }
        IPPROTO_UDP => !is_ephemeral(t.dport, cfg),
        IPPROTO_SCTP => t.flags == SCTP_INIT || t.flags == SCTP_COOKIE_ECHO,
        _ => true,
    }
}
