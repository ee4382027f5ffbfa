//! The first-probe stage (see `scanner_common::first`): a source's first
//! probe waits in its FIRST_PROBES slot; a probe of another port while it
//! is still there admits the source, and the first probe is handed back to
//! be replayed into the new entry. The slot then stays the source's, marked
//! returning, until another source takes it.

use scanner_common::{Config, FirstProbe, SourceKey, first, first::slot_of};

use crate::{maps::FIRST_PROBES, track::Packet, verdict};

/// What became of a probe from a source without an entry.
pub enum Admission {
    /// Remembered (or already remembered): `new_port` when this probe is
    /// the first of its port in the source's life; `new_source` when it is
    /// the first probe of a source not seen before (not one admitted once,
    /// whose entry has been forgotten since).
    Held { new_port: bool, new_source: bool },
    /// The source is allowlisted: nothing is kept.
    Allowlisted,
    /// Admitted: create the entry, replay this first probe, then count the
    /// current one.
    Admit(Packet),
}

#[inline(always)]
pub fn admit(source: &SourceKey, pkt: &Packet, cfg: &Config, idle_ns: u64) -> Admission {
    let index = slot_of(source, cfg.hash_seed, cfg.first_probe_slots);
    // No slot (never: the loader writes the map's real size into CONFIG):
    // fail open, nothing is kept.
    let Some(slot) = FIRST_PROBES.get_ptr_mut(index) else {
        return Admission::Held {
            new_port: false,
            new_source: false,
        };
    };
    let mut new_source = true;
    // SAFETY: slot points at a live FIRST_PROBES value.
    unsafe {
        if (*slot).holds(source, pkt.now, idle_ns) {
            if (*slot).ifindex & first::RETURNING != 0 {
                // Admitted once, its entry forgotten since: this probe is
                // its first again, below, but it is no new source.
                new_source = false;
            } else if (*slot).port == pkt.port && (*slot).proto == pkt.proto {
                return Admission::Held {
                    new_port: false,
                    new_source: false,
                };
            } else {
                return admitted(slot, source, cfg);
            }
        }
        (*slot).source = *source;
        (*slot).seen_ns = pkt.now;
        (*slot).port = pkt.port;
        (*slot).proto = pkt.proto;
        (*slot).traits = (pkt.class as u8 & first::CLASS_MASK)
            | if pkt.open { first::OPEN } else { 0 }
            | if pkt.stealth { first::STEALTH } else { 0 }
            | if pkt.stack_syn { first::STACK_SYN } else { 0 }
            | if pkt.open_step != 0 { first::CREDIT } else { 0 };
        (*slot).ifindex = pkt.ifindex & !first::RETURNING;
    }
    Admission::Held {
        new_port: true,
        new_source,
    }
}

/// The second port of the source `slot` holds: admitted, unless it is
/// allowlisted. Its first probe is handed back, and the slot kept for it,
/// marked returning.
///
/// # Safety
/// `slot` points at a live FIRST_PROBES value.
#[inline(always)]
unsafe fn admitted(slot: *mut FirstProbe, source: &SourceKey, cfg: &Config) -> Admission {
    // SAFETY: the caller holds a live map value.
    unsafe {
        if verdict::allowlisted(source) {
            return Admission::Allowlisted;
        }
        let traits = (*slot).traits;
        let first = Packet {
            now: (*slot).seen_ns,
            ifindex: (*slot).ifindex & !first::RETURNING,
            class: usize::from(traits & first::CLASS_MASK),
            open: traits & first::OPEN != 0,
            stealth: traits & first::STEALTH != 0,
            stack_syn: traits & first::STACK_SYN != 0,
            port: (*slot).port,
            proto: (*slot).proto,
            open_step: if traits & first::CREDIT != 0 {
                cfg.step_open
            } else {
                0
            },
        };
        (*slot).ifindex |= first::RETURNING;
        Admission::Admit(first)
    }
}
