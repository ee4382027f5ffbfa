//! The first-probe table: where a source's first probe waits for its second.
//!
//! Most sources a server sees probe one port (a client of one service) or are
//! spoofed (a SYN flood from random addresses). Giving each a hash-map entry
//! costs an LRU insert per packet and ~240 bytes per source. Instead a
//! source's first probe is written into a slot of a fixed array (FIRST_PROBES),
//! picked by a keyed hash of the address; the source earns a per-source entry
//! (SOURCES) only when a second probe of another port arrives while the slot
//! still holds its first one. The first probe is then replayed into the new
//! entry, so the source's counts and decision are the same as if it had been
//! tracked from its first packet. A flood of one-packet sources costs one
//! array write each and never touches SOURCES; a flood that overwrites a
//! scanner's slot delays its admission by one probe per overwrite. Sources
//! that probe two ports are admitted, so a spoofed flood of those competes
//! with real scanners for SOURCES (LRU: an active scanner is the most
//! recently seen). An address that probes a single port is never admitted;
//! its prefix still sees it (see [`crate::gather`]).
//!
//! An admitted source keeps its slot, marked [`RETURNING`]: if its entry is
//! forgotten (evicted, or reset when its block is lifted) its next probe is
//! not a new source's, and it is not counted for its prefix again.
//!
//! The slot is read before SOURCES, so that a never-seen source (most of a
//! flood) costs no hash-map lookup: SOURCES is looked up only when the slot
//! says the source may have an entry there ([`FirstProbe::may_be_admitted`]),
//! that is when the slot is its own, returning, or when another source took
//! it from an admitted one ([`DISPLACED`]). A source admitted but not found
//! that way (a torn slot, a mark cleared by the daemon's sweep just after
//! its admission) is not lost: its probe is held as a first probe, and the
//! probe that would admit it finds its entry and counts both into it.
//!
//! Slots are written with plain stores by any CPU: a torn slot (two sources
//! writing it at once) at worst replays a wrong port once, or misses one
//! admission.

use crate::{SourceKey, class};

/// `FirstProbe::traits`: the first probe hit an open port.
pub const OPEN: u8 = 0x10;
/// `FirstProbe::traits`: it was a stealth probe (`classify::is_stealth`).
pub const STEALTH: u8 = 0x20;
/// `FirstProbe::traits`: it was a SYN from an operating system's stack.
pub const STACK_SYN: u8 = 0x40;
/// `FirstProbe::traits`: it earns benign credit if its port is open
/// (`classify::earns_benign_credit`).
pub const CREDIT: u8 = 0x80;
/// `FirstProbe::traits`: the low bits hold the probe's `class::*`.
pub const CLASS_MASK: u8 = 0x0f;

const _: () = assert!(class::COUNT <= CLASS_MASK as usize + 1);

/// `FirstProbe::ifindex`'s top bit (interface indexes are positive `int`s,
/// so it is never theirs): the slot's source has been admitted.
pub const RETURNING: u32 = 1 << 31;

/// `FirstProbe::ifindex`'s next bit: a source took this slot from an
/// admitted one, whose entry may still be live in SOURCES, so a source that
/// does not own the slot is looked up there all the same. It stays through
/// later owners; the daemon clears it where no admitted source hashes any
/// more (see `scanner::kernel::first`).
pub const DISPLACED: u32 = 1 << 30;

/// `FirstProbe::ifindex`'s bits that are marks, not the interface.
pub const MARKS: u32 = RETURNING | DISPLACED;

/// One slot of FIRST_PROBES: a source's first probe, not yet followed by a
/// second one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FirstProbe {
    /// The probing source.
    pub source: SourceKey,
    /// The probe's time on the probe clock (`crate::clock`); 0 marks a
    /// free slot.
    pub seen_ns: u64,
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// `class::*` in the low bits, and `OPEN`, `STEALTH`, `STACK_SYN`, `CREDIT`.
    pub traits: u8,
    /// Interface index the probe came in on, and the [`MARKS`].
    pub ifindex: u32,
}

impl FirstProbe {
    /// Whether the slot holds a probe of `source` seen less than `idle_ns`
    /// before `now_ns`.
    #[inline(always)]
    pub fn holds(&self, source: &SourceKey, now_ns: u64, idle_ns: u64) -> bool {
        self.seen_ns != 0
            && now_ns.saturating_sub(self.seen_ns) < idle_ns
            && self.source.same(source)
    }

    /// Whether `source` may have an entry in SOURCES: the slot is its own
    /// and it was admitted, or an admitted source was displaced from it.
    /// Otherwise it has none (one admitted since its slot was last read
    /// aside: see the module's docs), and SOURCES is not looked up.
    #[inline(always)]
    pub fn may_be_admitted(&self, source: &SourceKey) -> bool {
        self.ifindex & DISPLACED != 0 || (self.ifindex & RETURNING != 0 && self.source.same(source))
    }

    /// The marks a slot keeps when `source` takes it: [`DISPLACED`] when
    /// it was already, or when it held another source that was admitted.
    #[inline(always)]
    pub fn marks_kept_for(&self, source: &SourceKey) -> u32 {
        let displaced = self.ifindex & DISPLACED != 0
            || (self.ifindex & RETURNING != 0 && !self.source.same(source));
        if displaced { DISPLACED } else { 0 }
    }

    /// Whether the slot holds a source waiting for its second probe, seen
    /// less than `idle_ns` before `now_ns` (not one admitted since).
    #[inline(always)]
    pub fn live(&self, now_ns: u64, idle_ns: u64) -> bool {
        self.seen_ns != 0
            && now_ns.saturating_sub(self.seen_ns) < idle_ns
            && self.ifindex & RETURNING == 0
    }
}

/// The FIRST_PROBES slot of `source` in a table of `slots` slots, under the
/// daemon's secret `seed` (so a flood cannot aim at a chosen source's slot).
/// A multiply-xorshift mix of the address folded to 64 bits, then a
/// multiply-shift range reduction: no division, no loop.
#[inline(always)]
pub fn slot_of(source: &SourceKey, seed: u64, slots: u32) -> u32 {
    slot_of_words(source.words(), seed, slots)
}

/// [`slot_of`] for an address already read as its words.
#[inline(always)]
pub fn slot_of_words((hi, lo): (u64, u64), seed: u64, slots: u32) -> u32 {
    let mut h = (hi ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= lo.wrapping_add(seed.rotate_left(32));
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 31;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^= h >> 29;
    (((h >> 32) * u64::from(slots)) >> 32) as u32
}

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, no implicit padding (size asserted below).
unsafe impl aya::Pod for FirstProbe {}

const _: () = assert!(core::mem::size_of::<FirstProbe>() == 32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_spread_and_stay_in_range() {
        let slots = 1000u32;
        let mut counts = [0u32; 1000];
        for i in 0..100_000u32 {
            let b = i.to_be_bytes();
            let s = slot_of(
                &SourceKey::from_v4([198, 18 + b[1] % 2, b[2], b[3]]),
                7,
                slots,
            );
            assert!(s < slots);
            counts[s as usize] += 1;
        }
        // 100 per slot on average: a fair spread keeps every slot near it.
        let (min, max) = (counts.iter().min(), counts.iter().max());
        assert!(min >= Some(&50) && max <= Some(&160), "{min:?}..{max:?}");
    }

    #[test]
    fn the_seed_moves_sources_between_slots() {
        let k = SourceKey::from_v4([198, 18, 0, 7]);
        let mut moved = [0u32; 64];
        for (seed, slot) in moved.iter_mut().enumerate() {
            *slot = slot_of(&k, seed as u64, 1 << 20);
        }
        moved.sort_unstable();
        let distinct = 1 + moved.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(distinct > 60, "{moved:?}");
    }

    #[test]
    fn a_slot_holds_one_source_until_idle() {
        let k = SourceKey::from_v4([198, 18, 0, 7]);
        let p = FirstProbe {
            source: k,
            seen_ns: 1_000,
            ..FirstProbe::default()
        };
        assert!(p.holds(&k, 1_499, 500));
        assert!(!p.holds(&k, 1_500, 500), "idle for the timeout");
        assert!(!p.holds(&SourceKey::from_v4([198, 18, 0, 8]), 1_499, 500));
        assert!(!FirstProbe::default().holds(&SourceKey::default(), 0, 500));
        assert!(p.live(1_200, 500) && !FirstProbe::default().live(0, 500));
        let admitted = FirstProbe {
            ifindex: 3 | RETURNING,
            ..p
        };
        assert!(admitted.holds(&k, 1_499, 500), "still its slot");
        assert!(!admitted.live(1_200, 500), "not waiting: admitted");
    }

    #[test]
    fn sources_are_looked_up_only_where_one_may_have_an_entry() {
        let (k, other) = (
            SourceKey::from_v4([198, 18, 0, 7]),
            SourceKey::from_v4([198, 18, 0, 8]),
        );
        let waiting = FirstProbe {
            source: k,
            seen_ns: 1_000,
            ifindex: 3,
            ..FirstProbe::default()
        };
        // A slot of a source not admitted: neither it nor another has an entry.
        assert!(!waiting.may_be_admitted(&k) && !waiting.may_be_admitted(&other));
        assert_eq!(waiting.marks_kept_for(&other), 0);
        let admitted = FirstProbe {
            ifindex: 3 | RETURNING,
            ..waiting
        };
        assert!(admitted.may_be_admitted(&k), "its own slot");
        assert!(!admitted.may_be_admitted(&other), "not displaced yet");
        // Its own slot taken back for a new life: nothing displaced.
        assert_eq!(admitted.marks_kept_for(&k), 0);
        // Another source takes it: the admitted one is displaced, and every
        // source of the slot is looked up from then on.
        assert_eq!(admitted.marks_kept_for(&other), DISPLACED);
        let taken = FirstProbe {
            source: other,
            ifindex: 3 | DISPLACED,
            ..waiting
        };
        assert!(taken.may_be_admitted(&k) && taken.may_be_admitted(&other));
        assert_eq!(taken.marks_kept_for(&k), DISPLACED, "the mark stays");
    }
}
