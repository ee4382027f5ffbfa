//! Allow and block rules (ALLOWLIST and BLOCKLIST entries).

/// [`PolicyEntry::action`].
pub mod action {
    pub const ALLOW: u32 = 1;
    pub const BLOCK: u32 = 2;
}

/// [`PolicyEntry::reason`] of a block.
pub mod block_reason {
    /// The kernel blocked a source at its deciding probe (or the daemon did,
    /// on its detection).
    pub const SCAN: u32 = 1;
    /// `scanner block`.
    pub const MANUAL: u32 = 2;
    /// A ban decision pulled from a CrowdSec Local API.
    pub const CROWDSEC: u32 = 3;
    /// `scanner block --force`: may cover a protected gateway or resolver,
    /// and is left as it is when the protected addresses change.
    pub const FORCED: u32 = 4;
}

/// An allow or block rule. The key's prefix length gives its scope: /128 for one
/// address (IPv4 as /128 of the IPv4-mapped form), shorter for a CIDR.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyEntry {
    /// `action::ALLOW` or `action::BLOCK`.
    pub action: u32,
    /// `BLOCK_REASON_*` for blocks.
    pub reason: u32,
    /// CLOCK_MONOTONIC time the rule was made.
    pub created_ns: u64,
    /// CLOCK_MONOTONIC time a block stops applying; 0 means never.
    pub expires_ns: u64,
}

impl PolicyEntry {
    /// Whether this rule drops traffic at `now_ns`.
    #[inline(always)]
    pub fn blocks(&self, now_ns: u64) -> bool {
        self.action == action::BLOCK && (self.expires_ns == 0 || now_ns < self.expires_ns)
    }
}

/// Prefix length of a CIDR in the rule tries' key space (IPv4 sits under the
/// 96-bit IPv4-mapped prefix).
pub const fn policy_prefix_len(is_v4: bool, len: u8) -> u32 {
    if is_v4 { 96 + len as u32 } else { len as u32 }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, no implicit padding (size asserted below).
unsafe impl aya::Pod for PolicyEntry {}

const _: () = assert!(core::mem::size_of::<PolicyEntry>() == 24);

/// Slots of BLOCK_CACHE per CPU (a power of two: the slot is a byte).
pub const BLOCK_CACHE_SLOTS: u32 = 256;
/// Packets a cached block drops before the rule is looked up again, its
/// expiry with it. While the daemon runs, it lifts an expired block at its
/// next sweep (within a poll), which empties the cache; with no daemon (a
/// crash, before systemd starts it again), a block outlives its expiry by
/// at most this many of the source's packets per CPU.
pub const BLOCK_CACHE_BUDGET: u32 = 32;

/// A slot of BLOCK_CACHE, a per-CPU array in front of BLOCKLIST: the last
/// source whose packet a block rule dropped on this CPU, so a blocked
/// scanner's flood costs an array read and no trie lookup or clock. The
/// slot is good while the rules have not changed since it was filled
/// (`generation` is RULES_GENERATION then) and `budget` is not spent.
///
/// The kernel reads the generation before the trie and the daemon bumps it
/// after its change, so a packet judged after the bump never uses a slot
/// filled from the old rule. What the budget still bounds: a packet being
/// judged on another CPU during the change may fill its slot from the old
/// rule at the new generation; so may a CPU that reorders the two reads
/// (x86 does not); and during a restart, the program of the daemon before
/// keeps its own (unbumped) cache until the new one is swapped in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachedBlock {
    /// The source, as [`crate::SourceKey::words`].
    pub words: [u64; 2],
    /// RULES_GENERATION when the slot was filled.
    pub generation: u32,
    /// Packets the slot may still drop (0: empty).
    pub budget: u32,
}

impl CachedBlock {
    /// A slot for `words`, filled at `generation`.
    #[inline(always)]
    pub fn new(words: (u64, u64), generation: u32) -> Self {
        Self {
            words: [words.0, words.1],
            generation,
            budget: BLOCK_CACHE_BUDGET,
        }
    }

    /// Whether the slot says `words` is blocked while the rules are at
    /// `generation`.
    #[inline(always)]
    pub fn holds(&self, words: (u64, u64), generation: u32) -> bool {
        self.budget != 0
            && self.generation == generation
            && self.words[0] == words.0
            && self.words[1] == words.1
    }
}

/// The BLOCK_CACHE slot of a source: the XOR of its address's bytes, so
/// the addresses of a /24 (or any set that differs in one byte) never
/// share a slot. Sources that collide only cost the trie lookup.
#[inline(always)]
pub fn block_cache_slot(words: (u64, u64)) -> u32 {
    let x = words.0 ^ words.1;
    let x = (x ^ (x >> 32)) as u32;
    let x = x ^ (x >> 16);
    (x ^ (x >> 8)) & (BLOCK_CACHE_SLOTS - 1)
}

const _: () = assert!(BLOCK_CACHE_SLOTS == 256);

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, no implicit padding (size asserted below).
unsafe impl aya::Pod for CachedBlock {}

const _: () = assert!(core::mem::size_of::<CachedBlock>() == 24);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SourceKey;

    /// How many slots `keys` fill.
    fn slots_filled(keys: impl Iterator<Item = SourceKey>) -> usize {
        let mut filled = [false; BLOCK_CACHE_SLOTS as usize];
        for k in keys {
            filled[block_cache_slot(k.words()) as usize] = true;
        }
        filled.iter().filter(|f| **f).count()
    }

    #[test]
    fn every_address_of_a_slash_24_has_a_slot_of_its_own() {
        let v4 = (0..=255u8).map(|d| SourceKey::from_v4([198, 18, 7, d]));
        assert_eq!(slots_filled(v4), 256);
        let v6 = (0..=255u8).map(|d| {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            a[15] = d;
            SourceKey::from_v6(a)
        });
        assert_eq!(slots_filled(v6), 256);
    }

    #[test]
    fn a_slot_holds_its_source_until_the_rules_change_or_its_budget_is_spent() {
        let a = SourceKey::from_v4([198, 18, 0, 7]).words();
        let b = SourceKey::from_v4([198, 18, 0, 8]).words();
        let mut slot = CachedBlock::new(a, 5);
        assert!(slot.holds(a, 5));
        assert!(!slot.holds(b, 5), "another source");
        assert!(!slot.holds(a, 6), "the rules changed");
        slot.budget = 0;
        assert!(!slot.holds(a, 5), "the budget is spent");
        assert!(!CachedBlock::default().holds((0, 0), 0), "an empty slot");
    }
}
