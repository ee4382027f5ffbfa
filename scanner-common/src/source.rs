//! What the kernel tracks per source (and per prefix): the key, the
//! statistics, and the distinct-port marks.

use crate::{class, reason};

/// How many distinct ports are remembered by number, for reports.
pub const SAMPLE_PORTS: usize = 16;
/// How many distinct open ports hit are remembered by number.
pub const SAMPLE_OPEN_PORTS: usize = 4;

/// Trials (first probes of a port) each source may contribute to its
/// prefix. A distributed scan is many sources with a few probes each; capping
/// the contribution keeps one loud scanner, already reported on its own, from
/// making its neighbours' prefix look like one.
pub const PREFIX_TRIALS_PER_SOURCE: u32 = 2;

/// A source address, or a prefix (host bits zero). IPv4 is stored IPv4-mapped
/// (`::ffff:a.b.c.d`) so both families share one key type and one map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    pub addr: [u8; 16],
}

impl SourceKey {
    pub const fn from_v4(octets: [u8; 4]) -> Self {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12] = octets[0];
        addr[13] = octets[1];
        addr[14] = octets[2];
        addr[15] = octets[3];
        Self { addr }
    }

    pub const fn from_v6(addr: [u8; 16]) -> Self {
        Self { addr }
    }

    /// The address as two native-endian words (for hashing).
    #[inline(always)]
    pub fn words(&self) -> (u64, u64) {
        let a = &self.addr;
        (
            u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
            u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
        )
    }

    /// Equality in two word compares: `==` on the byte array may become a
    /// `bcmp` call, which the BPF target does not have.
    #[inline(always)]
    pub fn same(&self, other: &Self) -> bool {
        self.words() == other.words()
    }

    /// [`Self::prefix`] as [`Self::words`]: the prefix of `v4_len` or
    /// `v6_len` bits, as two native-endian words, from one read of the
    /// address (the kernel's per-probe form: no byte-by-byte rebuild).
    #[inline(always)]
    pub fn prefix_words(&self, v4_len: u8, v6_len: u8) -> (u64, u64) {
        let (hi, lo) = self.words();
        let mapped = lo.to_ne_bytes();
        let v4 = hi == 0 && mapped[..4] == [0, 0, 0xff, 0xff];
        let keep = if v4 {
            96 + u32::from(v4_len.min(32))
        } else {
            u32::from(v6_len.min(128))
        };
        // Masks of the leading bits, in the words' byte order.
        let mask = |bits: u32| -> u64 {
            let m = if bits == 0 {
                0
            } else if bits >= 64 {
                u64::MAX
            } else {
                u64::MAX << (64 - bits)
            };
            m.to_be()
        };
        (hi & mask(keep.min(64)), lo & mask(keep.saturating_sub(64)))
    }

    /// The key whose [`Self::words`] are `words`.
    pub fn from_words(words: (u64, u64)) -> Self {
        let (hi, lo) = (words.0.to_ne_bytes(), words.1.to_ne_bytes());
        let mut addr = [0u8; 16];
        addr[..8].copy_from_slice(&hi);
        addr[8..].copy_from_slice(&lo);
        Self { addr }
    }

    /// Whether this key is IPv4-mapped.
    #[inline(always)]
    pub fn is_v4(&self) -> bool {
        let a = &self.addr;
        a[0] == 0
            && a[1] == 0
            && a[2] == 0
            && a[3] == 0
            && a[4] == 0
            && a[5] == 0
            && a[6] == 0
            && a[7] == 0
            && a[8] == 0
            && a[9] == 0
            && a[10] == 0xff
            && a[11] == 0xff
    }

    /// The IPv4 address when this key is IPv4-mapped.
    pub fn as_v4(&self) -> Option<[u8; 4]> {
        let a = &self.addr;
        self.is_v4().then(|| [a[12], a[13], a[14], a[15]])
    }

    /// The key with all but the first `v4_len` (IPv4) or `v6_len` (IPv6)
    /// address bits cleared. Word arithmetic, no per-byte loop: it runs in
    /// the kernel for every probe.
    #[inline(always)]
    pub fn prefix(&self, v4_len: u8, v6_len: u8) -> Self {
        let a = self.addr;
        let hi = u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
        let lo = u64::from_be_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
        // IPv4 bits start after the 96-bit mapping prefix.
        let keep = if self.is_v4() {
            96 + u32::from(v4_len.min(32))
        } else {
            u32::from(v6_len.min(128))
        };
        let mask = |bits: u32| -> u64 {
            if bits == 0 {
                0
            } else if bits >= 64 {
                u64::MAX
            } else {
                u64::MAX << (64 - bits)
            }
        };
        let hi = hi & mask(keep.min(64));
        let lo = lo & mask(keep.saturating_sub(64));
        let (h, l) = (hi.to_be_bytes(), lo.to_be_bytes());
        let mut addr = [0u8; 16];
        addr[..8].copy_from_slice(&h);
        addr[8..].copy_from_slice(&l);
        Self { addr }
    }
}

/// What the XDP program knows about one source (or one prefix). Counters
/// cover the entry's life: from its first packet, or since it was last idle
/// for longer than `Config::idle_ns`. `window_*` fields restart every
/// `Config::window_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the first packet of this life.
    pub first_seen_ns: u64,
    /// Of the latest packet.
    pub last_seen_ns: u64,
    /// Start of the current fan-out window.
    pub window_start_ns: u64,
    /// Of the latest probe (see [`crate::classify::is_probe`]).
    pub last_probe_ns: u64,
    /// When the kernel decided this entry is scanning; 0 while undecided.
    pub decided_ns: u64,
    /// TCP/UDP packets, by `CLASS_*`.
    pub classes: [u32; class::COUNT],
    /// Probe packets.
    pub probes: u32,
    /// Distinct (protocol, destination port) pairs probed.
    pub ports: u32,
    /// Distinct pairs probed in the current window (the fan-out).
    pub window_ports: u32,
    /// Distinct pairs probed that were open on this host.
    pub open_ports: u32,
    /// SYNs carrying a full operating-system option set (connect() scans,
    /// real clients), as opposed to the bare SYNs of raw-packet scanners.
    pub stack_syns: u32,
    /// Threshold Random Walk log-likelihood ratio, in 1/1024 nats.
    pub score: i32,
    /// `REASON_*` of the decision.
    pub reason: u32,
    /// `ports` when the decision was made.
    pub decided_ports: u32,
    /// Prefix entries: distinct sources that sent probes counted here.
    pub sources: u32,
    /// Source entries: trials this source has contributed to its prefix
    /// (at most [`PREFIX_TRIALS_PER_SOURCE`]).
    pub prefix_trials: u32,
    /// Interface index the latest packet arrived on.
    pub ifindex: u32,
    /// 1 when the kernel blocked the source at its decision (its deciding
    /// probe is dropped too), else 0.
    pub blocked: u32,
    /// Fragments other than the first (no transport header) seen from an
    /// admitted source: fragmented probes' tails, or a fragment flood.
    pub fragments: u32,
    /// The last (protocol, port) pair probed and its repeats not yet in
    /// the pair's count (see [`crate::pair`]); sources only.
    pub last_pair: u32,
    /// The first `SAMPLE_PORTS` distinct ports, in arrival order.
    pub sample_ports: [u16; SAMPLE_PORTS],
    /// The first `SAMPLE_OPEN_PORTS` distinct open ports probed.
    pub open_sample: [u16; SAMPLE_OPEN_PORTS],
}

impl SourceStats {
    pub const fn new(now_ns: u64, ifindex: u32) -> Self {
        Self {
            first_seen_ns: now_ns,
            last_seen_ns: now_ns,
            window_start_ns: now_ns,
            last_probe_ns: 0,
            decided_ns: 0,
            classes: [0; class::COUNT],
            probes: 0,
            ports: 0,
            window_ports: 0,
            open_ports: 0,
            stack_syns: 0,
            score: 0,
            reason: reason::NONE,
            decided_ports: 0,
            sources: 0,
            prefix_trials: 0,
            ifindex,
            blocked: 0,
            fragments: 0,
            last_pair: 0,
            sample_ports: [0; SAMPLE_PORTS],
            open_sample: [0; SAMPLE_OPEN_PORTS],
        }
    }
}

/// Key of the fan-out map: one entry per (scope, address, protocol, port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    /// A source address, or a prefix when `scope` is `scope::PREFIX`.
    pub source: SourceKey,
    pub port: u16,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP; `IPPROTO_ANY` when
    /// `port` is itself a protocol number).
    pub proto: u8,
    /// `scope::SOURCE`, `scope::PREFIX` or `scope::MEMBER`.
    pub scope: u8,
}

/// Value of the fan-out map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortSeen {
    /// The owner's `first_seen_ns` when this pair was first probed: another
    /// value means the pair belongs to an earlier life and is new again.
    pub life_ns: u64,
    /// The owner's `window_start_ns` when this pair was last counted in a window.
    pub window_start_ns: u64,
    /// Probes to this pair in this life, but for the source's repeats its
    /// entry still holds (`SourceStats::last_pair`, see [`crate::pair`]),
    /// which the daemon's reads add.
    pub probes: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, and have no implicit padding
    // (checked by the size assertions below), so any bit pattern is valid.
    unsafe impl aya::Pod for super::SourceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SourceStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PortKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PortSeen {}
}

// Layouts are shared with the kernel byte for byte: no implicit padding.
const _: () = assert!(core::mem::size_of::<SourceKey>() == 16);
const _: () = assert!(
    core::mem::size_of::<SourceStats>()
        == 5 * 8 + 4 * class::COUNT + 14 * 4 + 2 * (SAMPLE_PORTS + SAMPLE_OPEN_PORTS)
);
const _: () = assert!(core::mem::size_of::<SourceStats>().is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<PortKey>() == 20);
const _: () = assert!(core::mem::size_of::<PortSeen>() == 24);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_words_are_the_prefix() {
        let mut v6 = [0u8; 16];
        v6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        v6[6..].copy_from_slice(&[9, 0x42, 1, 2, 3, 4, 5, 6, 7, 8]);
        for k in [
            SourceKey::from_v4([198, 18, 7, 201]),
            SourceKey::from_v4([255, 255, 255, 255]),
            SourceKey::from_v6(v6),
            SourceKey::from_v6([0xff; 16]),
        ] {
            for (a, b) in [(24, 64), (20, 48), (32, 128), (0, 0), (8, 72), (31, 127)] {
                assert_eq!(
                    k.prefix_words(a, b),
                    k.prefix(a, b).words(),
                    "{k:?} /{a} /{b}"
                );
                assert_eq!(SourceKey::from_words(k.prefix_words(a, b)), k.prefix(a, b));
            }
        }
    }

    #[test]
    fn prefixes_mask_host_bits() {
        let k = SourceKey::from_v4([198, 18, 7, 201]);
        assert_eq!(k.prefix(24, 64), SourceKey::from_v4([198, 18, 7, 0]));
        assert_eq!(k.prefix(20, 64), SourceKey::from_v4([198, 18, 0, 0]));
        assert_eq!(k.prefix(32, 64), k);
        assert_eq!(k.prefix(0, 64), SourceKey::from_v4([0, 0, 0, 0]));
        let mut v6 = [0u8; 16];
        v6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        v6[7] = 0x42;
        v6[8..].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let p = SourceKey::from_v6(v6).prefix(24, 64);
        assert_eq!(&p.addr[..8], &v6[..8]);
        assert_eq!(&p.addr[8..], &[0u8; 8]);
        let p = SourceKey::from_v6(v6).prefix(24, 60);
        assert_eq!(p.addr[7], 0x40);
        assert!(!p.is_v4() && k.is_v4());
    }
}
