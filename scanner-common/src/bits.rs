//! Regions of the PORT_BITS bitmap, 1,024 u64 words (65,536 bits) each:
//! the host's open ports per protocol and address family (a listener on
//! 0.0.0.0 answers IPv4 only, one on `::` with IPV6_V6ONLY IPv6 only), and
//! the ports never counted, per protocol.

pub const TCP_OPEN: u32 = 0;
pub const UDP_OPEN: u32 = 1;
pub const TCP_IGNORED: u32 = 2;
pub const UDP_IGNORED: u32 = 3;
pub const SCTP_OPEN: u32 = 4;
pub const SCTP_IGNORED: u32 = 5;
pub const TCP_OPEN6: u32 = 6;
pub const UDP_OPEN6: u32 = 7;
pub const SCTP_OPEN6: u32 = 8;
/// Regions in the bitmap.
pub const REGIONS: u32 = 9;
/// A region past the bitmap, for protocols without ports: every lookup in
/// it misses (no port open, none ignored) without a branch.
pub const NONE: u32 = 64;

/// The (open, ignored) regions of `proto`'s ports, for a packet of IPv6
/// (`v6`) or IPv4.
#[inline(always)]
pub const fn regions(proto: u8, v6: bool) -> (u32, u32) {
    let (open4, open6, ignored) = match proto {
        crate::IPPROTO_TCP => (TCP_OPEN, TCP_OPEN6, TCP_IGNORED),
        crate::IPPROTO_UDP => (UDP_OPEN, UDP_OPEN6, UDP_IGNORED),
        crate::IPPROTO_SCTP => (SCTP_OPEN, SCTP_OPEN6, SCTP_IGNORED),
        _ => (NONE, NONE, NONE),
    };
    (if v6 { open6 } else { open4 }, ignored)
}

/// Word index and bit mask of `port` in bitmap `region`.
#[inline(always)]
pub const fn port_bit(region: u32, port: u16) -> (u32, u64) {
    (region * 1024 + (port as u32 >> 6), 1u64 << (port & 63))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PORT_BITS' size (`names::PORT_BITS_WORDS`, which is made of this).
    const PORT_BITS_WORDS: u32 = REGIONS * 1024;

    #[test]
    fn port_bits_cover_every_port_once() {
        assert_eq!(port_bit(TCP_OPEN, 0), (0, 1));
        assert_eq!(port_bit(TCP_OPEN, 65), (1, 2));
        assert_eq!(port_bit(UDP_OPEN, 65535), (2047, 1 << 63));
        assert_eq!(port_bit(UDP_IGNORED, 0).0, 3072);
        assert!(port_bit(SCTP_IGNORED, 65535).0 < PORT_BITS_WORDS);
        assert!(port_bit(regions(crate::IPPROTO_ANY, false).0, 0).0 >= PORT_BITS_WORDS);
        assert!(port_bit(regions(crate::IPPROTO_ANY, true).0, 0).0 >= PORT_BITS_WORDS);
        assert_eq!(regions(crate::IPPROTO_TCP, true), (TCP_OPEN6, TCP_IGNORED));
        assert_eq!(regions(crate::IPPROTO_UDP, false), (UDP_OPEN, UDP_IGNORED));
        assert!(port_bit(SCTP_OPEN6, 65535).0 < PORT_BITS_WORDS);
        assert_eq!(
            regions(crate::IPPROTO_SCTP, true),
            (SCTP_OPEN6, SCTP_IGNORED)
        );
        let mut regions_used = [
            TCP_OPEN,
            UDP_OPEN,
            TCP_IGNORED,
            UDP_IGNORED,
            SCTP_OPEN,
            SCTP_IGNORED,
            TCP_OPEN6,
            UDP_OPEN6,
            SCTP_OPEN6,
        ];
        regions_used.sort_unstable();
        assert_eq!(
            regions_used,
            core::array::from_fn::<u32, 9, _>(|i| i as u32)
        );
    }
}
