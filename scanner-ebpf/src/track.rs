//! Per-source and per-prefix accounting, and the decision.
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

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    maps::LruHashMap,
};
use scanner_common::{
    Config, DEFAULT_IDLE_NS, DEFAULT_WINDOW_NS, Decision, Headers, PREFIX_TRIALS_PER_SOURCE,
    PortKey, PortSeen, SAMPLE_OPEN_PORTS, SAMPLE_PORTS, SourceKey, SourceStats, bits, class,
    class_of, counter, earns_benign_credit, is_accepted_traffic, is_probe, is_stack_syn,
    is_stealth, port_bit, port_hits_index, reason, scope,
};

use crate::{
    counters,
    first::{self, Admission},
    gather,
    maps::{BLANK, CONFIG, EVENTS, PORT_BITS, PORT_HITS, PORTS, PREFIXES, PROTECTED, SOURCES},
    verdict,
};

/// Adds without fetching: the BPF target has atomic add, not fetch-add.
///
/// # Safety
/// `dst` points into a map value that stays valid while the program runs.
#[inline(always)]
unsafe fn add<T: Copy>(dst: *mut T, v: T) {
    // SAFETY: dst points into a map value that lives while the program runs.
    unsafe { atomic_xadd::<T, T, { AtomicOrdering::Relaxed }>(dst, v) };
}

/// What one packet contributes, worked out once for the source and its prefix.
pub struct Packet {
    pub now: u64,
    pub ifindex: u32,
    pub class: usize,
    pub open: bool,
    pub stealth: bool,
    pub stack_syn: bool,
    pub port: u16,
    pub proto: u8,
    /// The score step this probe earns if its port is open: the configured
    /// benign step for an operating system's SYN or a UDP request, 0 for a
    /// bare raw-packet SYN, which is what SYN scanners send to every port
    /// (see `classify::earns_benign_credit`). Worked out once, where the
    /// packet is read, so the walk itself has no extra branch.
    pub open_step: i32,
}

/// What tracking made of a packet.
#[derive(PartialEq, Eq)]
pub enum Tracked {
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

#[inline(always)]
fn idle_ns(cfg: &Config) -> u64 {
    if cfg.idle_ns == 0 {
        DEFAULT_IDLE_NS
    } else {
        cfg.idle_ns
    }
}

/// The probe `h` is, with what tracking needs of it; None for a packet that
/// asks about no port (a reply, an accepted connection's traffic) or about
/// an ignored one. Only such packets read the port bitmaps.
#[inline(always)]
fn probe(h: &Headers, ifindex: u32, cfg: &Config) -> Option<Packet> {
    let t = &h.transport;
    let port = t.dport;
    if !is_probe(t, cfg) {
        return None;
    }
    // Protocols without ports read past the bitmap: never open or ignored.
    // A port is open to the family its listener takes.
    let (open_bits, ignored_bits) = bits::regions(t.proto, !h.source.is_v4());
    let open = port_flag(open_bits, port);
    if is_accepted_traffic(t, open) || port_flag(ignored_bits, port) {
        return None;
    }
    let class = class_of(t);
    let stack_syn = is_stack_syn(t);
    Some(Packet {
        now: crate::now(),
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

/// Counts a packet. Only probes carry evidence: anything else returns after
/// the port-bitmap reads. A probe from an admitted source is counted into
/// its entry; any other waits in FIRST_PROBES (see [`crate::first`]).
#[inline(always)]
pub fn track(h: &Headers, ifindex: u32) -> Tracked {
    let Some(cfg) = config() else {
        return Tracked::Counted;
    };
    let Some(pkt) = probe(h, ifindex, cfg) else {
        return Tracked::Counted;
    };
    let idle = idle_ns(cfg);
    let Some(slot) = first::slot(&h.source, cfg) else {
        return Tracked::Counted;
    };
    // The slot first: a source it does not show as admitted has no entry,
    // and a never-seen source (most of a flood) costs no SOURCES lookup.
    // SAFETY: slot points at a live FIRST_PROBES value.
    let known = if unsafe { (*slot).may_be_admitted(&h.source) } {
        live(&SOURCES, &h.source, pkt.now, idle)
    } else {
        None
    };
    let s = match known {
        Some(s) => s,
        // SAFETY: as above.
        None => match unsafe { first::admit(slot, &h.source, &pkt, idle) } {
            Admission::Held {
                new_port,
                new_source,
            } => {
                count_port(&pkt, new_port);
                // A new source's first probe counts for its prefix too: a
                // scan may send every probe from a fresh address. Where it
                // would decide the prefix, or its prefix is admitted, the
                // second program counts it (see `gathered`).
                if new_source && gather::first_probe(&h.source, &pkt, cfg, idle) {
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
    unsafe { record(s, &h.source, &pkt, cfg, true) };
    // SAFETY: as above.
    if unsafe { (*s).blocked == 0 } {
        return Tracked::Counted;
    }
    // The probe that decided and blocked the source is dropped with the
    // rest: the scanner learns nothing from the probe that gave it away.
    // (Read back from the entry rather than returned up from the decision:
    // fewer paths for the verifier.)
    // SAFETY: as above.
    if unsafe { (*s).decided_ns == pkt.now } {
        return Tracked::Blocked;
    }
    // A probe from a source this program blocked reaches tracking only once
    // that block has lapsed (the verdict drops it while it lasts): the
    // scanner carries on, so it is blocked again from this probe on, the
    // same scan (the daemon reports the new block, not a new detection).
    // SAFETY: as above.
    unsafe { reblock(s, &h.source, &pkt, cfg) }
}

/// The `scanner_replay` program's part: the entry of a source `track` has
/// just admitted (its slot holds the first probe), with the first probe
/// counted into it, as if the entry had existed then (it went into
/// PORT_HITS when it arrived). An entry the slot did not show (see
/// `scanner_common::first`) is used as it is: the held probe was never
/// counted into it. `Admitted` when the probe that admitted the source is
/// then to be counted (`scanner_admit`, which now finds the entry).
#[inline(always)]
pub fn replay(h: &Headers) -> Tracked {
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
    let Some(s) = live(&SOURCES, &h.source, crate::now(), idle_ns(cfg))
        .or_else(|| start(&SOURCES, &h.source, &first))
    else {
        return Tracked::Counted;
    };
    // SAFETY: s is this source's live value in SOURCES.
    unsafe { record(s, &h.source, &first, cfg, false) };
    Tracked::Admitted
}

/// The `scanner_gather` program's part: a new source's first probe that
/// `track` found decides its prefix or belongs to an admitted one, counted
/// into PREFIXES (see [`gather::admitted_probe`]). A program of its own: one
/// more copy of the prefix accounting in `scanner` is more paths than the
/// verifier walks.
#[inline(always)]
pub fn gathered(h: &Headers, ifindex: u32) {
    let Some(cfg) = config() else {
        return;
    };
    if let Some(pkt) = probe(h, ifindex, cfg) {
        gather::admitted_probe(&h.source, &pkt, cfg, idle_ns(cfg));
    }
}

/// Blocks source `key` for the configured lifetime, when blocking is on and
/// the source is not a protected gateway or resolver (its address is the
/// one a spoofed scan would borrow); whether it is blocked.
#[inline(always)]
fn block_source(key: &SourceKey, pkt: &Packet, cfg: &Config) -> bool {
    cfg.block_on_decide != 0
        && PROTECTED.get_ptr(key).is_none()
        && verdict::block(key, pkt.now, cfg.block_ttl_ns, pkt.ifindex)
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
pub fn fragment(source: &SourceKey, ifindex: u32) {
    counters::bump(ifindex, counter::FRAGMENTS);
    if let Some(s) = SOURCES.get_ptr_mut(source) {
        // SAFETY: s points at this source's value in SOURCES.
        unsafe { (*s).fragments = (*s).fragments.wrapping_add(1) };
    }
}

/// Counts one probe into an admitted source's entry and, for its first
/// trials, into its prefix's.
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
) {
    // SAFETY: s points at this source's value in SOURCES, valid until we return.
    let (was_decided, trial) = unsafe {
        let was_decided = (*s).decided_ns != 0;
        (was_decided, account(s, source, scope::SOURCE, pkt, cfg))
    };
    if count_hits {
        count_port(pkt, trial);
    }
    // Each undecided source feeds its prefix its first few trials only: a
    // decided source is reported on its own, and one loud scanner must not
    // make its neighbours look like a distributed scan.
    // SAFETY: as above.
    if !trial || was_decided || unsafe { (*s).prefix_trials } >= PREFIX_TRIALS_PER_SOURCE {
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

/// The entry for `key`, created on its first packet and started afresh
/// when it has been idle longer than the idle timeout.
#[inline(always)]
pub(crate) fn entry(
    map: &LruHashMap<SourceKey, SourceStats>,
    key: &SourceKey,
    cfg: &Config,
    pkt: &Packet,
) -> Option<*mut SourceStats> {
    live(map, key, pkt.now, idle_ns(cfg)).or_else(|| start(map, key, pkt))
}

/// The entry for `key`, unless it is missing or was last seen more than
/// `idle_ns` before `now` (an idle entry starts a new life).
#[inline(always)]
pub(crate) fn live(
    map: &LruHashMap<SourceKey, SourceStats>,
    key: &SourceKey,
    now: u64,
    idle_ns: u64,
) -> Option<*mut SourceStats> {
    let s = map.get_ptr_mut(key)?;
    // SAFETY: a live map value.
    (now.saturating_sub(unsafe { (*s).last_seen_ns }) <= idle_ns).then_some(s)
}

/// A new life for `key` in `map`, from `pkt` on.
#[inline(always)]
fn start(
    map: &LruHashMap<SourceKey, SourceStats>,
    key: &SourceKey,
    pkt: &Packet,
) -> Option<*mut SourceStats> {
    // Start from the all-zero value. The helper copies it, so no 160-byte
    // value is built on the 512-byte stack and no memset loop reaches the
    // verifier. BPF_ANY replaces an idle entry.
    let blank = BLANK.get_ptr(0)?;
    // SAFETY: BLANK's slot is never written, so it is all zeros.
    let _ = map.insert(key, unsafe { &*blank }, BPF_ANY as u64);
    let s = map.get_ptr_mut(key)?;
    // SAFETY: a live map value.
    unsafe {
        (*s).first_seen_ns = pkt.now;
        (*s).last_seen_ns = pkt.now;
        (*s).window_start_ns = pkt.now;
        (*s).ifindex = pkt.ifindex;
    }
    Some(s)
}

/// Counts the packet into `s` and decides if a threshold is crossed.
/// Returns whether it was a trial: the first probe of its port in this life.
///
/// # Safety
/// `s` points at a live value of SOURCES or PREFIXES (from `entry`).
#[inline(always)]
pub(crate) unsafe fn account(
    s: *mut SourceStats,
    key: &SourceKey,
    scope: u8,
    pkt: &Packet,
    cfg: &Config,
) -> bool {
    let window_ns = if cfg.window_ns == 0 {
        DEFAULT_WINDOW_NS
    } else {
        cfg.window_ns
    };
    // SAFETY: the caller holds a live map value.
    unsafe {
        if pkt.now.saturating_sub((*s).window_start_ns) > window_ns {
            (*s).window_start_ns = pkt.now;
            (*s).window_ports = 0;
        }
        (*s).last_seen_ns = pkt.now;
        (*s).ifindex = pkt.ifindex;
        // Branch-free where it can be: every branch here is walked by the
        // verifier for the source and again for its prefix.
        let c = pkt.class & (class::COUNT - 1);
        (*s).classes[c] = (*s).classes[c].wrapping_add(1);
        (*s).stack_syns = (*s).stack_syns.wrapping_add(u32::from(pkt.stack_syn));
        (*s).last_probe_ns = pkt.now;
        (*s).probes = (*s).probes.wrapping_add(1);
        let (first_in_life, first_in_window) = mark_port(s, key, scope, pkt);
        if first_in_window {
            add(&raw mut (*s).window_ports, 1);
        }
        if first_in_life {
            trial(s, pkt, cfg);
        }
        if (*s).decided_ns == 0 {
            decide(s, key, scope, pkt, cfg);
        }
        first_in_life
    }
}

/// One TRW trial: the first probe of a port in this life.
///
/// # Safety
/// `s` points at a live value of SOURCES or PREFIXES.
#[inline(always)]
unsafe fn trial(s: *mut SourceStats, pkt: &Packet, cfg: &Config) {
    // SAFETY: the caller holds a live map value.
    unsafe {
        let n = (*s).ports as usize;
        add(&raw mut (*s).ports, 1);
        if n < SAMPLE_PORTS {
            (*s).sample_ports[n] = pkt.port;
        }
        if pkt.open {
            let o = (*s).open_ports as usize;
            add(&raw mut (*s).open_ports, 1);
            if o < SAMPLE_OPEN_PORTS {
                (*s).open_sample[o] = pkt.port;
            }
        }
        add(&raw mut (*s).score, step(pkt, cfg));
        if (*s).score < cfg.lower {
            (*s).score = cfg.lower;
        }
    }
}

/// The walk's step for a trial: benign evidence for an open port, but only
/// from a client's probe (see `Packet::open_step`); scanner evidence for a
/// closed one, more for a stealth probe.
#[inline(always)]
pub(crate) fn step(pkt: &Packet, cfg: &Config) -> i32 {
    if pkt.open {
        pkt.open_step
    } else if pkt.stealth {
        cfg.step_stealth
    } else {
        cfg.step_closed
    }
}

/// Decides the entry when its score or fan-out crosses a threshold: stamps
/// it, blocks a source when configured to, and tells the daemon.
///
/// # Safety
/// `s` points at a live value of SOURCES or PREFIXES.
#[inline(always)]
unsafe fn decide(s: *mut SourceStats, key: &SourceKey, scope: u8, pkt: &Packet, cfg: &Config) {
    // SAFETY: the caller holds a live map value.
    unsafe {
        // No thresholds configured (upper <= 0): never decide.
        if cfg.upper <= 0 {
            return;
        }
        if scope == scope::PREFIX && (*s).sources < u32::from(cfg.min_sources) {
            return;
        }
        let reason = if (*s).score >= cfg.upper {
            reason::TRW
        } else if (*s).window_ports >= cfg.fanout_ports {
            reason::FANOUT
        } else {
            reason::NONE
        };
        if reason == reason::NONE {
            return;
        }
        // Sources are checked against the allowlist when admitted; one
        // allowlisted since (the daemon forgets those it finds) is never
        // decided. One trie lookup per decision, none per probe.
        if scope == scope::SOURCE && verdict::allowlisted(key) {
            return;
        }
        (*s).decided_ns = pkt.now;
        (*s).reason = reason;
        (*s).decided_ports = (*s).ports;
        // Block at once, before the scanner learns more ports. Prefixes are
        // reported, never blocked: that would hit innocent neighbours.
        // A protected source (a gateway, a resolver) is reported, never
        // blocked: its address is the one a spoofed scan would borrow.
        if scope == scope::SOURCE && block_source(key, pkt, cfg) {
            (*s).blocked = 1;
        }
        let decision = Decision {
            key: *key,
            ts_ns: pkt.now,
            reason,
            ports: (*s).ports,
            scope,
            _pad: [0; 3],
            ifindex: pkt.ifindex,
        };
        if EVENTS.output::<Decision>(&decision, 0).is_err() {
            counters::bump(pkt.ifindex, counter::EVENTS_DROPPED);
        }
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

/// Marks `source` as a member of its prefix's life `prefix_life`; returns
/// whether it is new to it. A source's own entry can be forgotten (evicted,
/// idle, or reset after its block is lifted) while its prefix lives on: the
/// mark keeps one address from counting as several sources. Runs only on a
/// source's first prefix trial, and on a new source's first probe once its
/// prefix is admitted (see `gather`), never per packet.
#[inline(always)]
pub(crate) fn new_member(source: &SourceKey, prefix_life: u64) -> bool {
    let mark = PortKey {
        source: *source,
        port: 0,
        proto: 0,
        scope: scope::MEMBER,
    };
    match PORTS.get_ptr_mut(&mark) {
        // SAFETY: m points at the mark's value in PORTS.
        Some(m) => unsafe {
            if (*m).life_ns == prefix_life {
                return false;
            }
            (*m).life_ns = prefix_life;
            true
        },
        None => {
            let seen = PortSeen {
                life_ns: prefix_life,
                window_start_ns: 0,
                probes: 0,
                _pad: 0,
            };
            PORTS.insert(&mark, &seen, BPF_NOEXIST as u64).is_ok()
        }
    }
}

/// Marks the (scope, address, protocol, port) pair as probed; returns whether
/// it is new to the owner's life and to its current window.
///
/// # Safety
/// `s` points at a live value of SOURCES or PREFIXES.
#[inline(always)]
unsafe fn mark_port(s: *mut SourceStats, key: &SourceKey, scope: u8, pkt: &Packet) -> (bool, bool) {
    let pair = PortKey {
        source: *key,
        port: pkt.port,
        proto: pkt.proto,
        scope,
    };
    // SAFETY: the caller holds a live map value.
    let (life, window) = unsafe { ((*s).first_seen_ns, (*s).window_start_ns) };
    match PORTS.get_ptr_mut(&pair) {
        // SAFETY: p points at the pair's value in PORTS.
        Some(p) => unsafe {
            if (*p).life_ns != life {
                (*p).life_ns = life;
                (*p).window_start_ns = window;
                (*p).probes = 1;
                (true, true)
            } else if (*p).window_start_ns != window {
                (*p).window_start_ns = window;
                (*p).probes = (*p).probes.wrapping_add(1);
                (false, true)
            } else {
                (*p).probes = (*p).probes.wrapping_add(1);
                (false, false)
            }
        },
        None => {
            let seen = PortSeen {
                life_ns: life,
                window_start_ns: window,
                probes: 1,
                _pad: 0,
            };
            let new = PORTS.insert(&pair, &seen, BPF_NOEXIST as u64).is_ok();
            (new, new)
        }
    }
}
