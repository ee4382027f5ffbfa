//! Regions of the PORT_BITS bitmap, 1,024 u64 words (65,536 bits) each:
//! the host's open ports and the ports never counted, per protocol.

pub const TCP_OPEN: u32 = 0;
pub const UDP_OPEN: u32 = 1;
pub const TCP_IGNORED: u32 = 2;
pub const UDP_IGNORED: u32 = 3;
pub const SCTP_OPEN: u32 = 4;
pub const SCTP_IGNORED: u32 = 5;
/// Regions in the bitmap.
pub const REGIONS: u32 = 6;
/// A region past the bitmap, for protocols without ports: every lookup in
/// it misses (no port open, none ignored) without a branch.
pub const NONE: u32 = 64;

/// The (open, ignored) regions of `proto`'s ports.
#[inline(always)]
pub const fn regions(proto: u8) -> (u32, u32) {
    match proto {
        crate::IPPROTO_TCP => (TCP_OPEN, TCP_IGNORED),
        crate::IPPROTO_UDP => (UDP_OPEN, UDP_IGNORED),
        crate::IPPROTO_SCTP => (SCTP_OPEN, SCTP_IGNORED),
        _ => (NONE, NONE),
    }
}

/// Word index and bit mask of `port` in bitmap `region`.
#[inline(always)]
pub const fn port_bit(region: u32, port: u16) -> (u32, u64) {
    (region * 1024 + (port as u32 >> 6), 1u64 << (port & 63))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::PORT_BITS_WORDS;

    #[test]
    fn port_bits_cover_every_port_once() {
        assert_eq!(port_bit(TCP_OPEN, 0), (0, 1));
        assert_eq!(port_bit(TCP_OPEN, 65), (1, 2));
        assert_eq!(port_bit(UDP_OPEN, 65535), (2047, 1 << 63));
        assert_eq!(port_bit(UDP_IGNORED, 0).0, 3072);
        assert!(port_bit(SCTP_IGNORED, 65535).0 < PORT_BITS_WORDS);
        assert!(port_bit(regions(crate::IPPROTO_ANY).0, 0).0 >= PORT_BITS_WORDS);
    }
}
