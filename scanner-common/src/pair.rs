//! An admitted source's last (protocol, port) pair, kept in its entry
//! (`SourceStats::last_pair`): a probe of the same pair again, in the same
//! life and window, is counted in the entry without looking the pair up in
//! PORTS (a hash lookup, the larger part of a known source's probe). A
//! client reconnecting to one service, a retransmitted SYN, a scanner
//! re-probing the port it just probed: each costs one hash lookup (the
//! entry's) instead of two.
//!
//! The word holds the pair, [`VALID`] while the pair was counted in the
//! entry's current window, and the repeats not yet added to the pair's
//! `PortSeen::probes` ([`pending`]). Those are added when another pair
//! comes (one lookup of the old pair, only when it has any), and the daemon
//! adds them when it reads the pair ([`pending_for`]), so a pair's count is
//! the same as if every probe had looked it up, but for evictions (repeats
//! held for a pair PORTS evicted are lost) and races. A new window clears
//! [`VALID`] (the pair is new to it); a new life starts from a blank entry.
//! Repeats do not refresh the pair's place in PORTS' LRU order; every
//! 128th, and the first of each window, looks it up again.
//!
//! Written with plain stores, like the entry's other timestamps and
//! resets: only when one source's probes of one pair reach two CPUs at
//! once can held repeats be lost or added twice, and, at a window's start,
//! the pair miss its count in that window's fan-out (one port, the next
//! window counts it). Locked updates on every repeat would cost every
//! repeat.

/// The pair was counted in the entry's current window.
pub const VALID: u32 = 1 << 31;
const PENDING_SHIFT: u32 = 24;
/// Repeats held at most before the next one looks the pair up again.
pub const PENDING_MAX: u32 = 0x7f;
const PAIR_MASK: u32 = 0x00ff_ffff;

/// The word for a probe of (`proto`, `port`) just counted: valid, nothing
/// pending.
#[inline(always)]
pub fn tag(proto: u8, port: u16) -> u32 {
    VALID | u32::from(proto) << 16 | u32::from(port)
}

/// Whether a probe with word `tag` repeats the pair `last` holds, in the
/// same window, with room to hold one more repeat.
#[inline(always)]
pub fn repeats(last: u32, tag: u32) -> bool {
    last & (VALID | PAIR_MASK) == tag && pending(last) < PENDING_MAX
}

/// `last` with one more repeat held.
#[inline(always)]
pub fn repeated(last: u32) -> u32 {
    last.wrapping_add(1 << PENDING_SHIFT)
}

/// Repeats held in `last`, not yet in the pair's count.
#[inline(always)]
pub fn pending(last: u32) -> u32 {
    (last >> PENDING_SHIFT) & PENDING_MAX
}

/// The pair `last` holds: (protocol, port).
#[inline(always)]
pub fn pair(last: u32) -> (u8, u16) {
    ((last >> 16) as u8, last as u16)
}

/// Repeats of (`proto`, `port`) that `last` holds for the pair's count.
#[inline(always)]
pub fn pending_for(last: u32, proto: u8, port: u16) -> u32 {
    if pair(last) == (proto, port) {
        pending(last)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_held_up_to_the_cap_then_looked_up() {
        let t = tag(6, 443);
        let mut last = t;
        for n in 1..=PENDING_MAX {
            assert!(repeats(last, t), "repeat {n}");
            last = repeated(last);
            assert_eq!(pending(last), n);
            assert_eq!(pending_for(last, 6, 443), n);
        }
        assert!(!repeats(last, t), "full: the next one looks the pair up");
        assert_eq!(pair(last), (6, 443));
        assert_eq!(pending_for(last, 17, 443), 0, "another protocol");
    }

    #[test]
    fn another_pair_or_a_new_window_is_no_repeat() {
        let last = repeated(tag(6, 22));
        assert!(!repeats(last, tag(6, 23)));
        assert!(!repeats(last, tag(17, 22)));
        assert!(!repeats(last & !VALID, tag(6, 22)), "a new window");
        assert!(!repeats(0, tag(0, 0)), "a blank entry holds nothing");
        assert_eq!(pending(last & !VALID), 1, "still to be added");
    }
}
