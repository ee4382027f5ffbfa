//! The prefix-gathering step (see `scanner_common::gather`): a new
//! source's first probe is also counted for its prefix in a PREFIX_SLOTS
//! slot; a slot whose walk would cross the threshold with enough sources is
//! merged into its PREFIXES entry, where the probe is then counted as any
//! prefix trial is (and the distributed-scan rule decides).

use scanner_common::{
    Config, DEFAULT_WINDOW_NS, PrefixSlot, SourceKey,
    first::slot_of_words,
    gather::{self, sketch_bit},
    scope,
};

use crate::{
    account::{self, Packet},
    maps::{PREFIX_SLOTS, PREFIXES},
    verdict,
};

/// Counts a new source's first probe (`pkt`) for the prefix of `source`
/// in its slot; true when it is to be counted into PREFIXES instead (it
/// would decide the prefix, or the prefix is admitted), which
/// [`admitted_probe`] does in the second program.
#[inline(always)]
pub(crate) fn first_probe(source: &SourceKey, pkt: &Packet, cfg: &Config, idle_ns: u64) -> bool {
    // The prefix as words, read once: this runs for every new source.
    let prefix = source.prefix_words(cfg.prefix_v4, cfg.prefix_v6);
    let Some(slot) = slot(prefix, cfg) else {
        return false;
    };
    // SAFETY: slot points at a live PREFIX_SLOTS value, valid while the
    // program runs.
    unsafe {
        if !(*slot).holds(prefix, pkt.now, idle_ns) {
            if (*slot).gathering(pkt.now, window_ns(cfg)) {
                return false;
            }
            take(slot, prefix, pkt.now);
        }
        (*slot).last_ns = pkt.now;
        match (*slot).state {
            gather::ADMITTED => true,
            gather::GATHERING if crosses(slot, pkt, cfg) => true,
            gather::GATHERING => {
                count(slot, pkt, cfg);
                false
            }
            _ => false,
        }
    }
}

/// Counts a first probe [`first_probe`] handed on into the prefix's
/// PREFIXES entry: admitting the prefix when the slot crosses the
/// threshold now, then as any prefix trial, where the distributed-scan rule
/// decides. The slot is read again: another CPU may have moved it on.
#[inline(always)]
pub(crate) fn admitted_probe(source: &SourceKey, pkt: &Packet, cfg: &Config, idle_ns: u64) {
    let words = source.prefix_words(cfg.prefix_v4, cfg.prefix_v6);
    let Some(slot) = slot(words, cfg) else {
        return;
    };
    let prefix = SourceKey::from_words(words);
    // SAFETY: slot points at a live PREFIX_SLOTS value; entry at a live
    // PREFIXES value.
    unsafe {
        if !(*slot).holds(words, pkt.now, idle_ns) {
            return;
        }
        let entry = match (*slot).state {
            gather::ADMITTED => match account::live(&PREFIXES, &prefix, pkt.now, idle_ns) {
                Some(p) => p,
                // The entry is gone: evicted (a live slot outlives an idle
                // entry only by the probes the slot alone saw). It was
                // decided and reported; it is not decided again.
                None => {
                    (*slot).state = gather::SPENT;
                    return;
                }
            },
            gather::GATHERING if crosses(slot, pkt, cfg) => match admit(slot, &prefix, pkt, cfg) {
                Some(p) => p,
                None => return,
            },
            gather::GATHERING => {
                count(slot, pkt, cfg);
                return;
            }
            _ => return,
        };
        // The member mark keeps this source from counting again when it is
        // admitted later and its first probe is replayed into the prefix.
        if account::new_member(source, (*entry).first_seen_ns) {
            (*entry).sources = (*entry).sources.wrapping_add(1);
        }
        account::account(entry, &prefix, scope::PREFIX, pkt, cfg);
    }
}

/// The slot of the prefix whose words are `prefix`.
#[inline(always)]
fn slot(prefix: (u64, u64), cfg: &Config) -> Option<*mut PrefixSlot> {
    let index = slot_of_words(prefix, cfg.hash_seed ^ gather::SEED_MIX, cfg.prefix_slots);
    PREFIX_SLOTS.get_ptr_mut(index)
}

#[inline(always)]
fn window_ns(cfg: &Config) -> u64 {
    if cfg.window_ns == 0 {
        DEFAULT_WINDOW_NS
    } else {
        cfg.window_ns
    }
}

/// Gives the slot to `prefix`, from `now` on, all counts zero.
///
/// # Safety
/// `slot` points at a live PREFIX_SLOTS value.
#[inline(always)]
unsafe fn take(slot: *mut PrefixSlot, prefix: (u64, u64), now: u64) {
    // SAFETY: the caller holds a live map value. Field by field: no
    // 64-byte value is built on the stack.
    unsafe {
        (*slot).prefix = [prefix.0, prefix.1];
        (*slot).first_ns = now;
        (*slot).last_ns = now;
        (*slot).ports_seen = [0; 2];
        (*slot).score = 0;
        (*slot).sources = 0;
        (*slot).probes = 0;
        (*slot).ports = 0;
        (*slot).state = gather::GATHERING;
    }
}

/// Whether the probe is of a pair the sketch has not seen, and the step
/// the walk takes for it (0 when it is not new).
///
/// # Safety
/// `slot` points at a live PREFIX_SLOTS value.
#[inline(always)]
unsafe fn trial(slot: *const PrefixSlot, pkt: &Packet, cfg: &Config) -> (bool, i32) {
    let (word, bit) = sketch_bit(pkt.proto, pkt.port);
    // SAFETY: the caller holds a live map value; word is 0 or 1.
    let new = unsafe { (*slot).ports_seen[word & 1] & bit == 0 };
    (new, if new { account::step(pkt, cfg) } else { 0 })
}

/// Whether counting the probe in the slot would decide its prefix: the
/// walk at or past the threshold, from enough sources.
///
/// # Safety
/// `slot` points at a live PREFIX_SLOTS value.
#[inline(always)]
unsafe fn crosses(slot: *const PrefixSlot, pkt: &Packet, cfg: &Config) -> bool {
    // SAFETY: the caller holds a live map value.
    unsafe {
        let (_, step) = trial(slot, pkt, cfg);
        cfg.upper > 0
            && (*slot).score.saturating_add(step) >= cfg.upper
            && (*slot).sources.wrapping_add(1) >= u32::from(cfg.min_sources)
    }
}

/// Counts the probe in the slot: a new source, and a trial when its pair
/// is new to the sketch.
///
/// # Safety
/// `slot` points at a live PREFIX_SLOTS value.
#[inline(always)]
unsafe fn count(slot: *mut PrefixSlot, pkt: &Packet, cfg: &Config) {
    // SAFETY: the caller holds a live map value; the word is 0 or 1.
    unsafe {
        let (new, step) = trial(slot, pkt, cfg);
        (*slot).sources = (*slot).sources.wrapping_add(1);
        (*slot).probes = (*slot).probes.wrapping_add(1);
        if new {
            let (word, bit) = sketch_bit(pkt.proto, pkt.port);
            (*slot).ports_seen[word & 1] |= bit;
            (*slot).ports = (*slot).ports.wrapping_add(1);
            (*slot).score = (*slot).score.saturating_add(step).max(cfg.lower);
        }
    }
}

/// Merges what the slot gathered into the prefix's PREFIXES entry (made if
/// there is none); the entry, which the current probe is then counted
/// into. The slot saw every new source's first probe, the entry only the
/// trials of sources admitted since (whose first probes the slot also
/// counted): each figure is the larger of the two, so nothing counts twice.
/// An allowlisted prefix is never admitted, and not looked up again.
///
/// # Safety
/// `slot` points at a live PREFIX_SLOTS value.
#[inline(always)]
unsafe fn admit(
    slot: *mut PrefixSlot,
    prefix: &SourceKey,
    pkt: &Packet,
    cfg: &Config,
) -> Option<*mut scanner_common::SourceStats> {
    // SAFETY: the caller holds a live map value; p is a live PREFIXES value.
    unsafe {
        if verdict::allowlisted(prefix) {
            (*slot).state = gather::ALLOWED;
            return None;
        }
        let p = account::entry(&PREFIXES, prefix, cfg, pkt)?;
        (*p).sources = (*p).sources.max((*slot).sources);
        (*p).probes = (*p).probes.max((*slot).probes);
        (*p).ports = (*p).ports.max(u32::from((*slot).ports));
        (*p).score = (*p).score.max((*slot).score);
        (*slot).state = gather::ADMITTED;
        Some(p)
    }
}
