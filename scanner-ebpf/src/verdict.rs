//! What happens to the frame: allow and block rules (LPM trie lookups),
//! then XDP_PASS or XDP_DROP.

use aya_ebpf::{bindings::xdp_action, maps::lpm_trie::Key};
use scanner_common::{PolicyEntry, SourceKey, action, block_reason, counter};

use crate::{
    counters,
    maps::{ALLOWLIST, BLOCKLIST, BLOCKS_EMPTY},
};

pub enum Rule {
    Allow,
    Block,
    None,
}

/// The rule for `source`: the allowlist wins over any block; an expired
/// block is no rule.
#[inline(always)]
pub fn rule(source: &SourceKey, now: u64) -> Rule {
    let key = Key::new(128, *source);
    if ALLOWLIST.get(&key).is_some() {
        return Rule::Allow;
    }
    // Most of the time nothing is blocked: skip the second trie lookup.
    if BLOCKS_EMPTY.get(0).is_some_and(|empty| *empty != 0) {
        return Rule::None;
    }
    match BLOCKLIST.get(&key) {
        Some(e) if e.blocks(now) => Rule::Block,
        _ => Rule::None,
    }
}

/// Blocks `source` from now on, for `ttl_ns` (0: until removed). A full map
/// refuses the block and counts it: nothing is evicted to make room.
#[inline(always)]
pub fn block(source: &SourceKey, now: u64, ttl_ns: u64, ifindex: u32) {
    let key = Key::new(128, *source);
    let entry = PolicyEntry {
        action: action::BLOCK,
        reason: block_reason::SCAN,
        created_ns: now,
        expires_ns: if ttl_ns == 0 { 0 } else { now + ttl_ns },
    };
    if BLOCKLIST.insert(&key, &entry, 0).is_err() {
        counters::bump(ifindex, counter::BLOCKS_REFUSED);
        return;
    }
    if let Some(empty) = BLOCKS_EMPTY.get_ptr_mut(0) {
        // SAFETY: the map's only slot; a plain store of 0 is all we need.
        unsafe { *empty = 0 };
    }
}

#[inline(always)]
pub fn pass(ifindex: u32) -> u32 {
    counters::bump(ifindex, counter::PASSED);
    xdp_action::XDP_PASS
}

#[inline(always)]
pub fn drop(ifindex: u32) -> u32 {
    counters::bump(ifindex, counter::DROPPED);
    xdp_action::XDP_DROP
}
