//! What happens to the frame: allow and block rules (LPM trie lookups),
//! then XDP_PASS or XDP_DROP.

use aya_ebpf::{bindings::xdp_action, maps::lpm_trie::Key};
use scanner_common::{
    ACTION_BLOCK, BLOCK_REASON_SCAN, COUNTER_BLOCKS_REFUSED, COUNTER_DROPPED, COUNTER_PASSED,
    PolicyEntry, SourceKey,
};

use crate::{
    counters,
    maps::{ALLOWLIST, BLOCKLIST},
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
        action: ACTION_BLOCK,
        reason: BLOCK_REASON_SCAN,
        created_ns: now,
        expires_ns: if ttl_ns == 0 { 0 } else { now + ttl_ns },
    };
    if BLOCKLIST.insert(&key, &entry, 0).is_err() {
        counters::bump(ifindex, COUNTER_BLOCKS_REFUSED);
    }
}

#[inline(always)]
pub fn pass(ifindex: u32) -> u32 {
    counters::bump(ifindex, COUNTER_PASSED);
    xdp_action::XDP_PASS
}

#[inline(always)]
pub fn drop(ifindex: u32) -> u32 {
    counters::bump(ifindex, COUNTER_DROPPED);
    xdp_action::XDP_DROP
}
