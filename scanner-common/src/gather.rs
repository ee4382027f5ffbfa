//! The prefix-gathering table: where sources that send a single probe
//! count towards their prefix (/24, /64).
//!
//! A source earns an entry of its own only when it probes a second port
//! (see [`crate::first`]), and only admitted sources feed PREFIXES. A scan
//! that sends each probe from a fresh address of one network (an IPv6
//! attacker holds 2^64 addresses of its /64) would never be seen. So each
//! new source's first probe also goes into a slot of a fixed array
//! (PREFIX_SLOTS, 64 bytes a slot, picked by a keyed hash of the prefix),
//! which gathers for its prefix: new sources, probes, and a Threshold
//! Random Walk over the distinct ports they probed (a 128-bit sketch: a
//! port whose bit is set is not a new trial). The walk takes the steps a
//! source's would. When it would cross the threshold with enough sources
//! (`Config::min_sources`), the slot's counts are merged into the prefix's
//! PREFIXES entry and the probe is counted there, where the distributed-scan
//! rule decides as for admitted sources; later new sources of the prefix
//! are counted into that entry directly.
//!
//! A flood of spoofed sources costs one more array write per new source: a
//! flood from random addresses writes slots of random prefixes, each with one
//! source and one port, and decides nothing. A slot that is gathering (two
//! sources or more, its latest probe within the fan-out window) is not taken
//! over by another prefix, so such a flood does not wipe a scan's evidence;
//! a flood inside one prefix is a scan from that network and is decided as
//! one (prefixes are reported, never blocked). What it gives up: two prefixes
//! that hash to one slot while both are gathering, the later one waits; a
//! sketch of 128 bits counts distinct ports exactly while they are few (the
//! ones a decision needs), and under-counts a wide scan until its prefix is
//! admitted (from then on PORTS counts them exactly).

use crate::SourceKey;

/// `PrefixSlot::state`: counting in the slot.
pub const GATHERING: u8 = 0;
/// `PrefixSlot::state`: merged into PREFIXES; new sources go there.
pub const ADMITTED: u8 = 1;
/// `PrefixSlot::state`: the prefix is allowlisted: nothing is counted.
pub const ALLOWED: u8 = 2;
/// `PrefixSlot::state`: admitted, and its PREFIXES entry was evicted since
/// (more prefixes at once than PREFIXES holds: a flood spoofing a wide
/// range). Nothing more is counted until the slot is idle: each prefix is
/// decided at most once a slot's life, not again at every eviction.
pub const SPENT: u8 = 3;

/// Mixed into the slot hash's seed, so a prefix's slot is not a function
/// of its sources' first-probe slots.
pub const SEED_MIX: u64 = 0x5bd1_e995_27d4_eb2f;

/// One slot of PREFIX_SLOTS.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixSlot {
    /// The prefix (host bits zero), as [`SourceKey::words`].
    pub prefix: [u64; 2],
    /// When this prefix took the slot; 0 marks a free slot.
    pub first_ns: u64,
    /// Of its latest probe.
    pub last_ns: u64,
    /// Distinct (protocol, port) pairs probed, as a 128-bit sketch.
    pub ports_seen: [u64; 2],
    /// The walk's score, in 1/1024 nats, as a source's.
    pub score: i32,
    /// New sources: first probes of sources without an entry.
    pub sources: u32,
    /// Probes counted here.
    pub probes: u32,
    /// Distinct ports by the sketch.
    pub ports: u16,
    /// `GATHERING`, `ADMITTED` or `ALLOWED`.
    pub state: u8,
    pub _pad: u8,
}

impl PrefixSlot {
    /// Whether the slot holds `prefix` (its words), seen less than
    /// `idle_ns` ago.
    #[inline(always)]
    pub fn holds(&self, prefix: (u64, u64), now_ns: u64, idle_ns: u64) -> bool {
        self.first_ns != 0
            && now_ns.saturating_sub(self.last_ns) < idle_ns
            && self.prefix[0] == prefix.0
            && self.prefix[1] == prefix.1
    }

    /// The prefix it holds.
    pub fn key(&self) -> SourceKey {
        SourceKey::from_words((self.prefix[0], self.prefix[1]))
    }

    /// Whether another prefix must leave the slot alone: it has gathered
    /// two sources or more and probed less than `window_ns` ago.
    #[inline(always)]
    pub fn gathering(&self, now_ns: u64, window_ns: u64) -> bool {
        self.first_ns != 0 && self.sources >= 2 && now_ns.saturating_sub(self.last_ns) < window_ns
    }
}

/// The sketch word and bit of a (protocol, port) pair.
#[inline(always)]
pub fn sketch_bit(proto: u8, port: u16) -> (usize, u64) {
    let h = (u32::from(port) | (u32::from(proto) << 16)).wrapping_mul(0x9E37_79B1);
    let i = h >> 25;
    ((i >> 6) as usize & 1, 1u64 << (i & 63))
}

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, no implicit padding (size asserted below).
unsafe impl aya::Pod for PrefixSlot {}

const _: () = assert!(core::mem::size_of::<PrefixSlot>() == 64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sketch_tells_a_few_ports_apart() {
        // The ports a decision needs are few: 16 distinct ones in a row
        // rarely share a bit.
        let mut collisions = 0;
        for start in (0u16..60_000).step_by(997) {
            let mut seen = [0u64; 2];
            for port in start..start + 16 {
                let (w, bit) = sketch_bit(6, port);
                if seen[w] & bit != 0 {
                    collisions += 1;
                }
                seen[w] |= bit;
            }
        }
        assert!(
            collisions <= 61 * 2,
            "{collisions} collisions in 61 runs of 16"
        );
        assert_ne!(sketch_bit(6, 53), sketch_bit(17, 53), "protocols differ");
    }

    #[test]
    fn a_slot_is_held_and_kept_while_it_gathers() {
        let p = SourceKey::from_v4([198, 18, 7, 0]).words();
        let mut s = PrefixSlot {
            prefix: [p.0, p.1],
            first_ns: 100,
            last_ns: 1_000,
            sources: 1,
            ..PrefixSlot::default()
        };
        assert!(s.holds(p, 1_499, 500));
        assert!(!s.holds(p, 1_500, 500), "idle for the timeout");
        assert!(!s.holds(SourceKey::from_v4([198, 18, 8, 0]).words(), 1_000, 500));
        assert_eq!(s.key(), SourceKey::from_v4([198, 18, 7, 0]));
        assert!(!s.gathering(1_000, 500), "one source: free to take");
        s.sources = 2;
        assert!(s.gathering(1_499, 500) && !s.gathering(1_500, 500));
        assert!(!PrefixSlot::default().gathering(0, 500));
    }
}
