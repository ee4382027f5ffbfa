//! Which probe goes where: a source's entry, its first-probe slot, its
//! prefix's slot or entry; the accounting itself is [`crate::account`]'s.
//!
//! Only probes are counted, and only admitted sources (see [`crate::first`])
//! have an entry: a source's first probe waits in FIRST_PROBES and is
//! replayed into the entry when its second probe admits it.
//!
//! Each probe's first arrival at a (source, port) pair is one trial of a
//! sequential hypothesis test (Threshold Random Walk, Jung et al., IEEE S&P
//! 2004): an open port is evidence of a benign client, a closed one of a
//! scanner. Integer log-likelihood steps come from the daemon (CONFIG). The
//! distinct-port fan-out within a window is a second signal. Crossing either
//! threshold decides the entry once and tells the daemon through EVENTS.
//!
//! Counters a source's packets can bump from several CPUs at once (RSS spreads
//! one source's flows over queues) use atomic adds where a decision or a
//! shared total depends on them (distinct ports, fan-out, score, open ports,
//! prefix sources, PORT_HITS). Counts that only describe (probes, packets by
//! class, per-pair probes) are plain increments: a rare lost increment costs
//! no decision, and a locked add on every probe costs every probe. Timestamps
//! and resets are plain stores, where the last writer winning is harmless. Another CPU may
//! have stored a timestamp later than this packet's `now`: elapsed times
//! saturate at zero, so that never reads as a long idle gap.

use scanner_common::{
    Config, Headers, PREFIX_TRIALS_PER_SOURCE, SourceKey, SourceStats, Transport, bits, class_of,
    counter, earns_benign_credit, is_probe, is_segment, is_stack_syn, is_stealth, port_bit,
    port_hits_index, scope, step,
};

use crate::{
    account::{Packet, account, add, block_source, entry, live, new_member, start},
    counters,
    first::{self, Admission},
    gather,
    maps::{ADMISSIONS, CONFIG, PORT_BITS, PORT_HITS, PREFIXES, SOURCES},
    variant,
};

/// What tracking made of a packet.
#[derive(PartialEq, Eq)]
pub(crate) enum Tracked {
    /// Counted (or nothing to count: not a probe).
    Counted,
    /// From an allowlisted source: passed, never counted.
    Allowlisted,
    /// The source was just admitted: its entry is to be made and its first
    /// probe counted into it, by the `scanner_replay` program.
    Replay,
    /// The source was admitted and its first probe counted: this probe is
    /// still to be counted, by the `scanner_admit` program.
    Admitted,
    /// This probe decided the source a scanner and blocked it: drop it.
    Blocked,
    /// A new source's first probe, for a prefix it decides or that is
    /// admitted: to be counted into PREFIXES by the `scanner_gather`
    /// program.
    Gather,
    /// Counted into the source's entry, as one of its first trials, which
    /// it owes its prefix: to be counted into PREFIXES by the
    /// `scanner_prefix` program. `blocked`: the source was decided and
    /// blocked by this probe (or by one on another CPU just now).
    Prefix { blocked: bool },
}

/// The daemon's settings, read in place (the BPF stack is only 512 bytes).
#[inline(always)]
fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

#[inline(always)]
fn port_flag(region: u32, port: u16) -> bool {
    let (index, mask) = port_bit(region, port);
    PORT_BITS.get(index).is_some_and(|w| *w & mask != 0)
}

/// A probe, with the settings it was classified by: what tracking takes.
pub(crate) struct Probe {
    pkt: Packet,
    cfg: &'static Config,
}

/// The probe a packet with transport header `t` is (`v6`: an IPv6
/// packet); None for one that asks about no port (a reply, an accepted
/// connection's traffic) or about an ignored one, which carries no
/// evidence. Nothing of the source is needed for this: the XDP program
/// reads the source address only for a probe.
///
/// An accepted connection's segments, the busiest traffic of a server, are
/// told first, by one bitmap read: no settings, no probe test.
#[inline(always)]
pub(crate) fn classify(t: &Transport, v6: bool, ifindex: u32) -> Option<Probe> {
    // `is_accepted_traffic`, the bitmap read only for a segment.
    if is_segment(t) && port_flag(bits::regions(t.proto, v6).0, t.dport) {
        return None;
    }
    let cfg = config()?;
    let pkt = probe(t, v6, ifindex, cfg)?;
    Some(Probe { pkt, cfg })
}

/// The probe `t` is, with what tracking needs of it; see [`classify`],
/// which has told a segment (`is_segment`) to an open port already. Only
/// probes read the port bitmaps.
#[inline(always)]
fn probe(t: &Transport, v6: bool, ifindex: u32, cfg: &Config) -> Option<Packet> {
    let port = t.dport;
    if !is_probe(t, cfg) {
        return None;
    }
    // Protocols without ports read past the bitmap: never open or ignored.
    // A port is open to the family its listener takes.
    let (open_bits, ignored_bits) = bits::regions(t.proto, v6);
    // A segment that reaches this is to a closed port (see `classify`).
    let open = !is_segment(t) && port_flag(open_bits, port);
    if port_flag(ignored_bits, port) {
        return None;
    }
    let class = class_of(t);
    let stack_syn = is_stack_syn(t);
    Some(Packet {
        now: crate::probe_now(cfg),
        ifindex,
        class,
        open,
        stealth: is_stealth(class),
        stack_syn,
        port,
        proto: t.proto,
        open_step: if earns_benign_credit(class, stack_syn) {
            cfg.step_open
        } else {
            0
        },
    })
}

/// Counts a packet (`v6`: an IPv6 one): [`classify`], then [`track`] for
/// a probe.
#[inline(always)]
pub(crate) fn track_packet(h: &Headers, v6: bool, ifindex: u32) -> Tracked {
    match classify(&h.transport, v6, ifindex) {
        Some(probe) => track(h, &probe),
        None => Tracked::Counted,
    }
}

/// Counts probe `probe` of headers `h`. A probe from an admitted source is
/// counted into its entry; any other waits in FIRST_PROBES (see
/// [`crate::first`]).
#[inline(always)]
pub(crate) fn track(h: &Headers, probe: &Probe) -> Tracked {
    let (pkt, cfg) = (&probe.pkt, probe.cfg);
    if variant::stops_after(step::CLASSIFY) {
        return Tracked::Counted;
    }
    let idle = cfg.idle_ns;
    let Some(slot) = first::slot(&h.source, cfg) else {
        return Tracked::Counted;
    };
    // The slot first: a source it does not show as admitted has no entry,
    // and a never-seen source (most of a flood) costs no SOURCES lookup.
    // SAFETY: slot points at a live FIRST_PROBES value.
    let may_be_admitted = unsafe { (*slot).may_be_admitted(&h.source) };
    if variant::stops_after(step::SLOT) {
        return Tracked::Counted;
    }
    let known = if may_be_admitted {
        live(&SOURCES, &h.source, pkt.now, idle)
    } else {
        None
    };
    let s = match known {
        Some(_) if variant::stops_after(step::ADMISSION) => return Tracked::Counted,
        Some(s) => s,
        // SAFETY: as above.
        None => match unsafe { first::admit(slot, &h.source, pkt, idle) } {
            Admission::Held { .. } if variant::stops_after(step::ADMISSION) => {
                return Tracked::Counted;
            }
            Admission::Held {
                new_port,
                new_source,
            } => {
                count_port(pkt, new_port);
                // A new source's first probe counts for its prefix too: a
                // scan may send every probe from a fresh address. Where it
                // would decide the prefix, or its prefix is admitted, the
                // second program counts it (see `gathered`).
                if new_source && gather::first_probe(&h.source, pkt, cfg, idle) {
                    return Tracked::Gather;
                }
                return Tracked::Counted;
            }
            Admission::Allowlisted => return Tracked::Allowlisted,
            // The entry and the replay of the first probe are the
            // `scanner_replay` program's (a tail call), the count of this
            // probe then `scanner_admit`'s: one copy of `record` a program,
            // as the verifier can walk.
            Admission::Admit => return Tracked::Replay,
        },
    };
    // SAFETY: s points at this source's value in SOURCES.
    let owed = unsafe { record(s, &h.source, pkt, cfg, true) };
    // SAFETY: as above.
    let blocked = unsafe { (*s).blocked != 0 };
    if owed {
        // The prefix's share is the `scanner_prefix` program's (a tail
        // call): a second copy of the accounting in this program is the
        // largest part of the verifier's walk. The source was undecided
        // before this probe, so a block now is live.
        return Tracked::Prefix { blocked };
    }
    if !blocked {
        return Tracked::Counted;
    }
    // The probe that decided and blocked the source is dropped with the
    // rest: the scanner learns nothing from the probe that gave it away.
    // (Read back from the entry rather than returned up from the decision:
    // fewer paths for the verifier.) The decision is stamped by the precise
    // clock, never behind the probe clock: a decision a tick or two older,
    // made on another CPU, reads the same, and its block is just as live.
    // SAFETY: as above.
    if unsafe { (*s).decided_ns >= pkt.now } {
        return Tracked::Blocked;
    }
    // A probe from a source this program blocked reaches tracking only once
    // that block has lapsed (the verdict drops it while it lasts): the
    // scanner carries on, so it is blocked again from this probe on, the
    // same scan (the daemon reports the new block, not a new detection).
    // SAFETY: as above.
    unsafe { reblock(s, &h.source, pkt, cfg) }
}

/// The `scanner_replay` program's part: the entry of a source `track` has
/// just admitted (its slot holds the first probe), with the first probe
/// counted into it, as if the entry had existed then (it went into
/// PORT_HITS when it arrived). An entry the slot did not show (see
/// `scanner_common::first`) is used as it is: the held probe was never
/// counted into it. `Admitted` when the probe that admitted the source is
/// then to be counted (`scanner_admit`, which now finds the entry).
#[inline(always)]
pub(crate) fn replay(h: &Headers) -> Tracked {
    let Some(cfg) = config() else {
        return Tracked::Counted;
    };
    let Some(slot) = first::slot(&h.source, cfg) else {
        return Tracked::Counted;
    };
    // SAFETY: slot points at a live FIRST_PROBES value.
    let Some(first) = (unsafe { first::replayed(slot, &h.source, cfg) }) else {
        return Tracked::Counted;
    };
    let now = crate::probe_now(cfg);
    let Some(s) = live(&SOURCES, &h.source, now, cfg.idle_ns).or_else(|| {
        let s = start(&SOURCES, &h.source, &first)?;
        // A new life: the daemon finds it there (see `ADMISSIONS`).
        if let Some(ring) = ADMISSIONS.get_ptr_mut(0) {
            // SAFETY: this CPU's value of a live per-CPU map; no other
            // program run writes it meanwhile.
            unsafe { (*ring).record(&h.source, now) };
        }
        Some(s)
    }) else {
        return Tracked::Counted;
    };
    // SAFETY: s is this source's live value in SOURCES. The prefix's
    // share inline: this program's walk is short, and it goes on to
    // `scanner_admit`.
    unsafe {
        if record(s, &h.source, &first, cfg, false) {
            prefix_trial(s, &h.source, &first, cfg);
        }
    }
    Tracked::Admitted
}

/// The `scanner_prefix` program's part: the probe `track` counted into its
/// source's entry, one of the source's first trials, counted into its
/// prefix's. Whether the probe is to be dropped: the source is decided and
/// blocked (it was undecided when `track` counted the probe, so the block
/// is this probe's, or another CPU's just now, and live). Read whatever
/// else happens (a port the daemon marked open meanwhile is no probe). The
/// entry was touched on this CPU a moment ago, so no LRU eviction takes it
/// in between; were it gone, the probe passes (looking the block up here
/// would quadruple the verifier's walk of this program for that).
#[inline(always)]
pub(crate) fn prefixed(h: &Headers, v6: bool, ifindex: u32) -> bool {
    let Some(s) = SOURCES.get_ptr_mut(&h.source) else {
        return false;
    };
    if let Some(p) = classify(&h.transport, v6, ifindex) {
        // SAFETY: s points at this source's value in SOURCES.
        unsafe { prefix_trial(s, &h.source, &p.pkt, p.cfg) };
    }
    // SAFETY: as above.
    unsafe { (*s).blocked != 0 && (*s).decided_ns != 0 }
}

/// The `scanner_gather` program's part: a new source's first probe that
/// `track` found decides its prefix or belongs to an admitted one, counted
/// into PREFIXES (see [`gather::admitted_probe`]). A program of its own: one
/// more copy of the prefix accounting in `scanner` is more paths than the
/// verifier walks.
#[inline(always)]
pub(crate) fn gathered(h: &Headers, v6: bool, ifindex: u32) {
    if let Some(p) = classify(&h.transport, v6, ifindex) {
        gather::admitted_probe(&h.source, &p.pkt, p.cfg, p.cfg.idle_ns);
    }
}

/// Blocks a decided source again whose block lapsed, as its decision did;
/// `Blocked` when it is. A source that is protected now, or blocking that
/// was turned off, is passed and not tried again.
///
/// # Safety
/// `s` points at a live value of SOURCES.
#[inline(always)]
unsafe fn reblock(s: *mut SourceStats, key: &SourceKey, pkt: &Packet, cfg: &Config) -> Tracked {
    if block_source(key, pkt, cfg) {
        return Tracked::Blocked;
    }
    // SAFETY: the caller holds a live map value.
    unsafe { (*s).blocked = 0 };
    Tracked::Counted
}

/// Counts a fragment other than the first: per interface, and for its
/// source when the source is admitted (one lookup; such fragments are rare
/// outside fragmented probes and floods).
#[inline(always)]
pub(crate) fn fragment(source: &SourceKey, ifindex: u32) {
    counters::bump(ifindex, counter::FRAGMENTS);
    if let Some(s) = SOURCES.get_ptr_mut(source) {
        // SAFETY: s points at this source's value in SOURCES.
        unsafe { (*s).fragments = (*s).fragments.wrapping_add(1) };
    }
}

/// Counts one probe into an admitted source's entry; whether the probe
/// owes the source's prefix a trial (see [`prefix_trial`]).
///
/// It runs once per program run: an admitted source's first probe and the
/// probe that admitted it are counted by two runs (a tail call between
/// them), since two copies in one program are more paths than the verifier
/// walks.
///
/// # Safety
/// `s` points at a live value of SOURCES.
#[inline(always)]
unsafe fn record(
    s: *mut SourceStats,
    source: &SourceKey,
    pkt: &Packet,
    cfg: &Config,
    count_hits: bool,
) -> bool {
    // SAFETY: s points at this source's value in SOURCES, valid until we return.
    let (was_decided, trial) = unsafe {
        let was_decided = (*s).decided_ns != 0;
        (was_decided, account(s, source, scope::SOURCE, pkt, cfg))
    };
    if variant::stops_after(step::TRW) {
        return false;
    }
    if count_hits {
        count_port(pkt, trial);
    }
    // Each undecided source feeds its prefix its first few trials only: a
    // decided source is reported on its own, and one loud scanner must not
    // make its neighbours look like a distributed scan.
    // SAFETY: as above.
    trial && !was_decided && unsafe { (*s).prefix_trials } < PREFIX_TRIALS_PER_SOURCE
}

/// Counts a source's probe into its prefix's entry: one of the first
/// trials (at most [`PREFIX_TRIALS_PER_SOURCE`]) of a source then
/// undecided, which [`record`] found. The count is checked again: another
/// CPU may have counted one since.
///
/// # Safety
/// `s` points at a live value of SOURCES.
#[inline(always)]
unsafe fn prefix_trial(s: *mut SourceStats, source: &SourceKey, pkt: &Packet, cfg: &Config) {
    // SAFETY: the caller holds a live map value.
    if unsafe { (*s).prefix_trials } >= PREFIX_TRIALS_PER_SOURCE {
        return;
    }
    let prefix = source.prefix(cfg.prefix_v4, cfg.prefix_v6);
    let Some(p) = entry(&PREFIXES, &prefix, cfg, pkt) else {
        return;
    };
    // SAFETY: s and p point at live map values.
    unsafe {
        if (*s).prefix_trials == 0 && new_member(source, (*p).first_seen_ns) {
            add(&raw mut (*p).sources, 1);
        }
        add(&raw mut (*s).prefix_trials, 1);
        account(p, &prefix, scope::PREFIX, pkt, cfg);
    }
}

/// Counts a probe to its destination port, and a new probing source when
/// it is the source's first probe of the port.
#[inline(always)]
fn count_port(pkt: &Packet, new_source: bool) {
    if let Some(hits) = PORT_HITS.get_ptr_mut(port_hits_index(pkt.proto, pkt.port)) {
        // SAFETY: hits points at the port's slot in PORT_HITS.
        unsafe {
            add(&raw mut (*hits).probes, 1);
            if new_source {
                add(&raw mut (*hits).sources, 1);
            }
        }
    }
}
