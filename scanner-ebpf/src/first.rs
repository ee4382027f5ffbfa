//! The first-probe stage (see `scanner_common::first`): a source's first
//! probe waits in its FIRST_PROBES slot; a probe of another port while it
//! is still there admits the source, and the first probe is handed back to
//! be replayed into the new entry. The slot then stays the source's, marked
//! returning, until another source takes it (and marks it displaced). The
//! slot is read first: SOURCES only where it says an entry may be.

use scanner_common::{Config, FirstProbe, SourceKey, first, first::slot_of};

use crate::{account::Packet, maps::FIRST_PROBES, verdict};

/// What became of a probe from a source without an entry.
pub(crate) enum Admission {
    /// Remembered (or already remembered): `new_port` when this probe is
    /// the first of its port in the source's life; `new_source` when it is
    /// the first probe of a source not seen before (not one admitted once,
    /// whose entry has been forgotten since).
    Held { new_port: bool, new_source: bool },
    /// The source is allowlisted: nothing is kept.
    Allowlisted,
    /// Admitted: create the entry and replay its first probe (see
    /// [`replayed`]), then count the current one.
    Admit,
}

/// The FIRST_PROBES slot of `source`; `None` never happens (the loader
/// writes the map's real size into CONFIG), and the probe then passes
/// uncounted.
#[inline(always)]
pub(crate) fn slot(source: &SourceKey, cfg: &Config) -> Option<*mut FirstProbe> {
    FIRST_PROBES.get_ptr_mut(slot_of(source, cfg.hash_seed, cfg.first_probe_slots))
}

/// The probe `pkt` of a source without a live entry, into its `slot`.
///
/// # Safety
/// `slot` points at a live FIRST_PROBES value (from [`slot`]).
#[inline(always)]
pub(crate) unsafe fn admit(
    slot: *mut FirstProbe,
    source: &SourceKey,
    pkt: &Packet,
    idle_ns: u64,
) -> Admission {
    let mut new_source = true;
    // SAFETY: the caller holds a live FIRST_PROBES value.
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
                return admitted(slot, source);
            }
        }
        let marks = (*slot).marks_kept_for(source);
        (*slot).source = *source;
        (*slot).seen_ns = pkt.now;
        (*slot).port = pkt.port;
        (*slot).proto = pkt.proto;
        (*slot).traits = (pkt.class as u8 & first::CLASS_MASK)
            | if pkt.open { first::OPEN } else { 0 }
            | if pkt.stealth { first::STEALTH } else { 0 }
            | if pkt.stack_syn { first::STACK_SYN } else { 0 }
            | if pkt.open_step != 0 { first::CREDIT } else { 0 };
        (*slot).ifindex = (pkt.ifindex & !first::MARKS) | marks;
    }
    Admission::Held {
        new_port: true,
        new_source,
    }
}

/// The second port of the source `slot` holds: admitted, unless it is
/// allowlisted. The slot is kept for it, marked returning, with its first
/// probe, which [`replayed`] reads back.
///
/// # Safety
/// `slot` points at a live FIRST_PROBES value.
#[inline(always)]
unsafe fn admitted(slot: *mut FirstProbe, source: &SourceKey) -> Admission {
    if verdict::allowlisted(source) {
        return Admission::Allowlisted;
    }
    // SAFETY: the caller holds a live map value.
    unsafe { (*slot).ifindex |= first::RETURNING };
    Admission::Admit
}

/// The first probe of `source`, just admitted (its slot is its own and
/// returning), as it arrived: to be counted into its new entry.
///
/// # Safety
/// `slot` points at a live FIRST_PROBES value.
#[inline(always)]
pub(crate) unsafe fn replayed(
    slot: *const FirstProbe,
    source: &SourceKey,
    cfg: &Config,
) -> Option<Packet> {
    // SAFETY: the caller holds a live map value.
    unsafe {
        if (*slot).ifindex & first::RETURNING == 0 || !(*slot).source.same(source) {
            return None;
        }
        let traits = (*slot).traits;
        Some(Packet {
            now: (*slot).seen_ns,
            ifindex: (*slot).ifindex & !first::MARKS,
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
        })
    }
}
