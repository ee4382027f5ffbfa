//! What happens to the frame: allow and block rules (LPM trie lookups),
//! then XDP_PASS or XDP_DROP.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_CURRENT_NETNS, BPF_TCP_LISTEN, xdp_action},
    helpers::{bpf_sk_lookup_tcp, bpf_sk_release},
    maps::lpm_trie::Key,
    programs::XdpContext,
};
use scanner_common::{
    CachedBlock, IPPROTO_TCP, PolicyEntry, SourceKey, Transport, action, block_cache_slot,
    block_reason, counter, destination,
};

use crate::{
    counters,
    frame::XdpFrame,
    maps::{ALLOWLIST, BLOCK_CACHE, BLOCKLIST, BLOCKS_EMPTY, CONFIG, PROTECTED, RULES_GENERATION},
};

/// TCP's SYN flag: a segment that opens a connection belongs to none.
const TCP_SYN: u8 = 0x02;

pub(crate) enum Rule {
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
/// one array read here and no trie lookup at all. A blocked source's
/// packets are answered from BLOCK_CACHE, with no trie lookup and no clock,
/// until the daemon changes the rules or the slot's budget is spent.
#[inline(always)]
pub(crate) fn rule(source: &SourceKey) -> Rule {
    if nothing_blocked() {
        return Rule::None;
    }
    rule_of(source)
}

/// Whether no block is in force (BLOCKS_EMPTY, which the daemon keeps and
/// a scan's block clears): then no packet needs its source for a rule.
#[inline(always)]
pub(crate) fn nothing_blocked() -> bool {
    BLOCKS_EMPTY.get(0).is_some_and(|empty| *empty != 0)
}

/// [`rule`] when something is blocked.
#[inline(always)]
pub(crate) fn rule_of(source: &SourceKey) -> Rule {
    // Read before the trie: a rule the daemon changes after this read
    // bumps the generation after its change, so a slot filled from the
    // old rule is stale by then.
    let generation = RULES_GENERATION.get(0).map_or(0, |g| *g);
    let words = source.words();
    let slot = BLOCK_CACHE.get_ptr_mut(block_cache_slot(words));
    if let Some(slot) = slot {
        // SAFETY: this CPU's copy of the slot. Should two runs ever
        // interleave on one CPU (threaded NAPI under PREEMPT_RT), the
        // budget saturates rather than wraps.
        unsafe {
            if (*slot).holds(words, generation) {
                (*slot).budget = (*slot).budget.saturating_sub(1);
                return Rule::Block;
            }
        }
    }
    let rule = lookup(source);
    if let (Rule::Block, Some(slot)) = (&rule, slot) {
        // SAFETY: as above.
        unsafe { *slot = CachedBlock::new(words, generation) };
    }
    rule
}

/// [`rule`] from the tries themselves.
#[inline(always)]
fn lookup(source: &SourceKey) -> Rule {
    let key = Key::new(128, *source);
    match BLOCKLIST.get(&key) {
        // Read at each refill of a slot, not per packet: a block lasts up
        // to a tick past its expiry here (the coarse clock costs less),
        // and a slot's budget past that (see `scanner_common::policy`).
        Some(e) if e.blocks(crate::coarse_now()) => {
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

/// Whether a blocked source's packet belongs to a TCP connection this host
/// has open with it: a block spares live flows (`Config::spare_flows`).
/// Asked of the kernel's own socket table (`bpf_sk_lookup_tcp`), so a
/// connection counts from its handshake to its close, with nothing for the
/// daemon to keep current. Only a blocked source's TCP segments other than
/// SYNs pay the lookup: a blocked scanner's SYNs, and every packet of a
/// source nobody blocked, cost nothing more.
#[inline(always)]
pub(crate) fn live_flow(ctx: &XdpContext, source: &SourceKey, t: &Transport) -> bool {
    if t.proto != IPPROTO_TCP || t.flags & TCP_SYN != 0 {
        return false;
    }
    if !CONFIG.get(0).is_some_and(|c| c.spare_flows != 0) {
        return false;
    }
    let Some(dst) = destination(&XdpFrame(ctx)) else {
        return false;
    };
    // struct bpf_sock_tuple, as words in network order: the IPv4 form is
    // three of them (addresses, then the two ports), the IPv6 form nine.
    let word = |a: &[u8; 16], i: usize| {
        u32::from_ne_bytes([a[i * 4], a[i * 4 + 1], a[i * 4 + 2], a[i * 4 + 3]])
    };
    let (sport, dport) = (t.sport.to_be_bytes(), t.dport.to_be_bytes());
    let ports = u32::from_ne_bytes([sport[0], sport[1], dport[0], dport[1]]);
    let (src, dst) = (&source.addr, &dst.addr);
    let mut tuple = [0u32; 9];
    let size = if source.is_v4() {
        tuple[0] = word(src, 3);
        tuple[1] = word(dst, 3);
        tuple[2] = ports;
        12
    } else {
        for i in 0..4 {
            tuple[i] = word(src, i);
            tuple[4 + i] = word(dst, i);
        }
        tuple[8] = ports;
        36
    };
    // SAFETY: the helper reads `size` bytes of the tuple, all initialised;
    // a socket it returns is released before returning.
    unsafe {
        let sk = bpf_sk_lookup_tcp(
            ctx.as_ptr(),
            tuple.as_mut_ptr().cast(),
            size,
            BPF_F_CURRENT_NETNS as u64,
            0,
        );
        if sk.is_null() {
            return false;
        }
        // A listener is what a new connection would reach: not a flow.
        let live = (*sk).state != BPF_TCP_LISTEN;
        bpf_sk_release(sk.cast());
        live
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
pub(crate) fn allowlisted(source: &SourceKey) -> bool {
    ALLOWLIST.get(&Key::new(128, *source)).is_some()
}

/// Blocks `source` from now on, for `ttl_ns` (0: until removed); returns
/// whether it is blocked. A full map refuses the block and counts it:
/// nothing is evicted to make room.
#[inline(always)]
pub(crate) fn block(source: &SourceKey, now: u64, ttl_ns: u64, ifindex: u32) -> bool {
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
pub(crate) fn pass() -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
pub(crate) fn drop(ifindex: u32) -> u32 {
    counters::bump(ifindex, counter::DROPPED);
    xdp_action::XDP_DROP
}
