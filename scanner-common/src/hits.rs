//! Probes per destination port (PORT_HITS), for the open-ports audit.

/// Probes to one destination port, from all sources.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortHits {
    /// Probes (packets that count as probes) to the port.
    pub probes: u64,
    /// Sources whose first probe of the port in their tracked life this was:
    /// distinct scanners, as long as the kernel remembers them.
    pub sources: u64,
}

/// The PORT_HITS index of a destination port (of a protocol number, for
/// `IPPROTO_ANY`).
#[inline(always)]
pub const fn port_hits_index(proto: u8, port: u16) -> u32 {
    match proto {
        crate::IPPROTO_UDP => 65_536 + port as u32,
        crate::IPPROTO_SCTP => 2 * 65_536 + port as u32,
        crate::IPPROTO_ANY => 3 * 65_536 + (port & 0xff) as u32,
        _ => port as u32,
    }
}

/// The (protocol, port) of a PORT_HITS index: the inverse of [`port_hits_index`].
#[inline(always)]
pub const fn port_of_hits_index(index: u32) -> (u8, u16) {
    match index >> 16 {
        0 => (crate::IPPROTO_TCP, index as u16),
        1 => (crate::IPPROTO_UDP, index as u16),
        2 => (crate::IPPROTO_SCTP, index as u16),
        _ => (crate::IPPROTO_ANY, (index & 0xff) as u16),
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, no implicit padding (size asserted below): any
// bit pattern is valid.
unsafe impl aya::Pod for PortHits {}

const _: () = assert!(core::mem::size_of::<PortHits>() == 16);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::PORT_HITS_ENTRIES;

    #[test]
    fn port_hits_indexes_turn_back_into_ports() {
        for proto in [crate::IPPROTO_TCP, crate::IPPROTO_UDP, crate::IPPROTO_SCTP] {
            for port in [0, 1, 22, 65_535] {
                let index = port_hits_index(proto, port);
                assert!(index < PORT_HITS_ENTRIES);
                assert_eq!(port_of_hits_index(index), (proto, port));
            }
        }
        for number in [0, 47, 255] {
            let index = port_hits_index(crate::IPPROTO_ANY, number);
            assert!(index < PORT_HITS_ENTRIES);
            assert_eq!(port_of_hits_index(index), (crate::IPPROTO_ANY, number));
        }
    }
}
