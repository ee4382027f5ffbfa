//! The PORT_BITS bitmaps the XDP program consults to tell open ports from
//! closed (and ignored) ones, kept equal to the host's listeners.

use aya::maps::{Array, MapData, MapError};
use scanner_common::{bits, names::PORT_BITS_WORDS, port_bit};

use crate::audit::listeners::Listener;

/// The PORT_BITS contents for these listeners and ignored ports.
pub(crate) fn bitmap(listeners: &[Listener], ignored: &[u16]) -> Vec<u64> {
    let mut words = vec![0u64; PORT_BITS_WORDS as usize];
    let mut set = |region, port| {
        let (i, mask) = port_bit(region, port);
        // A protocol without ports has no region (`bits::NONE`).
        if let Some(w) = words.get_mut(i as usize) {
            *w |= mask;
        }
    };
    for l in listeners.iter().filter(|l| l.is_exposed()) {
        let (v4, v6) = l.families();
        if v4 {
            set(bits::regions(l.proto, false).0, l.port);
        }
        if v6 {
            set(bits::regions(l.proto, true).0, l.port);
        }
    }
    for &port in ignored {
        set(bits::TCP_IGNORED, port);
        set(bits::UDP_IGNORED, port);
        set(bits::SCTP_IGNORED, port);
    }
    words
}

/// Keeps PORT_BITS equal to the host's listeners, writing only changed words.
pub(crate) struct PortBits {
    map: Array<MapData, u64>,
    written: Vec<u64>,
}

impl PortBits {
    pub(crate) fn new(map: Array<MapData, u64>) -> Self {
        Self {
            map,
            written: vec![0; PORT_BITS_WORDS as usize],
        }
    }

    /// Writes `words`; returns how many words changed.
    pub(crate) fn update(&mut self, words: &[u64]) -> Result<usize, MapError> {
        let mut changed = 0;
        for (i, (&new, old)) in words.iter().zip(self.written.iter_mut()).enumerate() {
            if new != *old {
                self.map.set(i as u32, new, 0)?;
                *old = new;
                changed += 1;
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use scanner_common::{IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

    use super::*;

    fn listener(proto: u8, addr: Ipv4Addr, port: u16) -> Listener {
        Listener {
            proto,
            addr: IpAddr::V4(addr),
            port,
            inode: 0,
            v6only: false,
        }
    }

    fn listener6(proto: u8, addr: Ipv6Addr, port: u16, v6only: bool) -> Listener {
        Listener {
            proto,
            addr: IpAddr::V6(addr),
            port,
            inode: 0,
            v6only,
        }
    }

    #[test]
    fn a_port_is_open_to_the_families_its_listener_takes() {
        let listeners = [
            listener(IPPROTO_TCP, Ipv4Addr::UNSPECIFIED, 22),
            listener6(IPPROTO_TCP, Ipv6Addr::UNSPECIFIED, 80, false),
            listener6(IPPROTO_TCP, Ipv6Addr::UNSPECIFIED, 443, true),
            listener6(IPPROTO_UDP, "2001:db8::1".parse().unwrap(), 53, false),
            listener6(
                IPPROTO_TCP,
                "::ffff:198.18.0.2".parse().unwrap(),
                8080,
                false,
            ),
            listener6(IPPROTO_SCTP, Ipv6Addr::UNSPECIFIED, 3868, false),
        ];
        let words = bitmap(&listeners, &[]);
        let open = |proto, v6, port| {
            let (i, mask) = port_bit(bits::regions(proto, v6).0, port);
            words[i as usize] & mask != 0
        };
        let families = |proto, port| (open(proto, false, port), open(proto, true, port));
        assert_eq!(
            families(IPPROTO_TCP, 22),
            (true, false),
            "0.0.0.0: IPv4 only"
        );
        assert_eq!(families(IPPROTO_TCP, 80), (true, true), ":: answers both");
        assert_eq!(
            families(IPPROTO_TCP, 443),
            (false, true),
            ":: with IPV6_V6ONLY"
        );
        assert_eq!(families(IPPROTO_UDP, 53), (false, true));
        assert_eq!(families(IPPROTO_SCTP, 3868), (true, true));
        assert_eq!(families(IPPROTO_TCP, 8080), (true, false), "IPv4-mapped");
    }

    #[test]
    fn the_bitmap_marks_exposed_and_ignored_ports() {
        let listeners = [
            listener(IPPROTO_TCP, Ipv4Addr::UNSPECIFIED, 22),
            listener(IPPROTO_TCP, Ipv4Addr::LOCALHOST, 5432),
            listener(IPPROTO_UDP, Ipv4Addr::UNSPECIFIED, 53),
            listener(IPPROTO_SCTP, Ipv4Addr::UNSPECIFIED, 3868),
        ];
        let words = bitmap(&listeners, &[9100]);
        let bit = |region, port| {
            let (i, mask) = port_bit(region, port);
            words[i as usize] & mask != 0
        };
        assert!(bit(bits::TCP_OPEN, 22));
        assert!(
            !bit(bits::TCP_OPEN, 5432),
            "loopback-only is closed to the network"
        );
        assert!(bit(bits::UDP_OPEN, 53) && !bit(bits::TCP_OPEN, 53));
        assert!(bit(bits::SCTP_OPEN, 3868) && !bit(bits::TCP_OPEN, 3868));
        assert!(bit(bits::TCP_IGNORED, 9100) && bit(bits::UDP_IGNORED, 9100));
        assert!(bit(bits::SCTP_IGNORED, 9100));
        assert_eq!(words.iter().map(|w| w.count_ones()).sum::<u32>(), 6);
    }
}
