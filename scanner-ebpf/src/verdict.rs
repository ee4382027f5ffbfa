//! What happens to the frame: allow and block rules (LPM trie lookups),
//! then XDP_PASS or XDP_DROP.

use aya_ebpf::{bindings::xdp_action, maps::lpm_trie::Key};
use scanner_common::{PolicyEntry, SourceKey, action, block_reason, counter};

use crate::{
    counters,
    maps::{ALLOWLIST, BLOCKLIST, BLOCKS_EMPTY, PROTECTED},
};

pub enum Rule {
    Allow,
    Block,
    None,
}

/// The rule for `source`: a live block, unless the allowlist overrides it,
/// or the source is a protected gateway or resolver and the block is not
/// one forced on it (`scanner block --force`): a CIDR block, a CrowdSec
/// ban or a manual block never cuts this host off from them.
///
/// The allowlist and protection matter only where something would happen
/// to the source: here, when a block matches, and where tracking admits or
/// decides it. So while nothing is blocked (the usual case) a packet costs
/// one array read here and no trie lookup at all.
#[inline(always)]
pub fn rule(source: &SourceKey) -> Rule {
    if BLOCKS_EMPTY.get(0).is_some_and(|empty| *empty != 0) {
        return Rule::None;
    }
    let key = Key::new(128, *source);
    match BLOCKLIST.get(&key) {
        Some(e) if e.blocks(crate::now()) => {
            if ALLOWLIST.get(&key).is_some() {
                Rule::Allow
            } else if spares_protected(e) && PROTECTED.get_ptr(source).is_some() {
                Rule::None
            } else {
                Rule::Block
            }
        }
        _ => Rule::None,
    }
}

/// Whether a block may cover a protected address it must spare: a CIDR or
/// a ban from outside. A scan's block is never made on a protected address
/// (the decision checks PROTECTED, and the daemon lifts a scan block whose
/// address becomes protected later), and a forced one means it: neither
/// costs the lookup, so a blocked scanner's flood stays cheap.
#[inline(always)]
fn spares_protected(e: &PolicyEntry) -> bool {
    e.reason != block_reason::SCAN && e.reason != block_reason::FORCED
}

/// Whether an allow rule covers `source`: it is never tracked nor blocked.
#[inline(always)]
pub fn allowlisted(source: &SourceKey) -> bool {
    ALLOWLIST.get(&Key::new(128, *source)).is_some()
}

/// Blocks `source` from now on, for `ttl_ns` (0: until removed); returns
/// whether it is blocked. A full map refuses the block and counts it:
/// nothing is evicted to make room.
#[inline(always)]
pub fn block(source: &SourceKey, now: u64, ttl_ns: u64, ifindex: u32) -> bool {
    let key = Key::new(128, *source);
    let entry = PolicyEntry {
        action: action::BLOCK,
        reason: block_reason::SCAN,
        created_ns: now,
        expires_ns: if ttl_ns == 0 { 0 } else { now + ttl_ns },
    };
    if BLOCKLIST.insert(&key, &entry, 0).is_err() {
        counters::bump(ifindex, counter::BLOCKS_REFUSED);
        return false;
    }
    if let Some(empty) = BLOCKS_EMPTY.get_ptr_mut(0) {
        // SAFETY: the map's only slot; a plain store of 0 is all we need.
        unsafe { *empty = 0 };
    }
    true
}

/// XDP_PASS. Passed packets are not counted: the daemon derives them
/// (seen - dropped), which saves a counter update on every packet.
#[inline(always)]
pub fn pass() -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
pub fn drop(ifindex: u32) -> u32 {
    counters::bump(ifindex, counter::DROPPED);
    xdp_action::XDP_DROP
}
