//! The accounting of one probe into an entry, a source's in SOURCES or a
//! prefix's in PREFIXES: its life (made, idle, started afresh), its classes
//! and distinct ports, the Threshold Random Walk's trial, and the decision
//! (stamped, blocked when blocking is on, pushed through the ring buffer).
//! `track` and `gather` call it; it calls neither.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    maps::LruHashMap,
};
use scanner_common::{
    Config, DEFAULT_WINDOW_NS, Decision, PortKey, PortSeen, SAMPLE_OPEN_PORTS, SAMPLE_PORTS,
    SourceKey, SourceStats, class, counter, pair, reason, scope,
};

use crate::{
    counters,
    maps::{BLANK, EVENTS, PORTS, PROTECTED},
    verdict,
};

/// Adds without fetching: the BPF target has atomic add, not fetch-add.
///
/// # Safety
/// `dst` points into a map value that stays valid while the program runs.
#[inline(always)]
pub(crate) unsafe fn add<T: Copy>(dst: *mut T, v: T) {
    // SAFETY: dst points into a map value that lives while the program runs.
    unsafe { atomic_xadd::<T, T, { AtomicOrdering::Relaxed }>(dst, v) };
}

/// What one packet contributes, worked out once for the source and its prefix.
pub(crate) struct Packet {
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

/// Blocks source `key` for the configured lifetime, when blocking is on and
/// the source is not a protected gateway or resolver (its address is the
/// one a spoofed scan would borrow); whether it is blocked.
#[inline(always)]
pub(crate) fn block_source(key: &SourceKey, pkt: &Packet, cfg: &Config) -> bool {
    cfg.block_on_decide != 0
        && PROTECTED.get_ptr(key).is_none()
        && verdict::block(key, pkt.now, cfg.block_ttl_ns, pkt.ifindex)
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
    live(map, key, pkt.now, cfg.idle_ns).or_else(|| start(map, key, pkt))
}

/// The entry for `key`, unless it is missing or was last seen `idle_ns` or
/// more before `now` (an idle entry starts a new life).
#[inline(always)]
pub(crate) fn live(
    map: &LruHashMap<SourceKey, SourceStats>,
    key: &SourceKey,
    now: u64,
    idle_ns: u64,
) -> Option<*mut SourceStats> {
    let s = map.get_ptr_mut(key)?;
    // SAFETY: a live map value.
    (now.saturating_sub(unsafe { (*s).last_seen_ns }) < idle_ns).then_some(s)
}

/// A new life for `key` in `map`, from `pkt` on.
#[inline(always)]
pub(crate) fn start(
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
        if pkt.now.saturating_sub((*s).window_start_ns) >= window_ns {
            (*s).window_start_ns = pkt.now;
            (*s).window_ports = 0;
            // The last pair is new to this window (its repeats stay held).
            (*s).last_pair &= !pair::VALID;
        }
        (*s).last_seen_ns = pkt.now;
        (*s).ifindex = pkt.ifindex;
        // Branch-free where it can be: every branch here is walked by the
        // verifier in each program that counts (and again for the prefix
        // in `scanner_replay` and `scanner_prefix`).
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
        // The precise clock, not the probe's: the daemon measures the
        // report's latency from it.
        let decided_ns = crate::now();
        (*s).decided_ns = decided_ns;
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
            ts_ns: decided_ns,
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

/// Adds the repeats `last` holds to its pair's count, in the source's life
/// `life` (another pair came; see `scanner_common::pair`).
#[inline(always)]
fn add_pending(source: &SourceKey, last: u32, life: u64) {
    let (proto, port) = pair::pair(last);
    let key = PortKey {
        source: *source,
        port,
        proto,
        scope: scope::SOURCE,
    };
    if let Some(p) = PORTS.get_ptr_mut(&key) {
        // SAFETY: p points at the pair's value in PORTS.
        unsafe {
            if (*p).life_ns == life {
                (*p).probes = (*p).probes.wrapping_add(pair::pending(last));
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
/// it is new to the owner's life and to its current window. A source's
/// repeat of its last pair is counted in its entry, without a lookup (see
/// `scanner_common::pair`).
///
/// # Safety
/// `s` points at a live value of SOURCES or PREFIXES.
#[inline(always)]
unsafe fn mark_port(s: *mut SourceStats, key: &SourceKey, scope: u8, pkt: &Packet) -> (bool, bool) {
    // SAFETY: the caller holds a live map value.
    let (life, window) = unsafe { ((*s).first_seen_ns, (*s).window_start_ns) };
    if scope == scope::SOURCE {
        let tag = pair::tag(pkt.proto, pkt.port);
        // SAFETY: as above.
        unsafe {
            let last = (*s).last_pair;
            if pair::repeats(last, tag) {
                (*s).last_pair = pair::repeated(last);
                return (false, false);
            }
            if pair::pending(last) != 0 {
                add_pending(key, last, life);
            }
            (*s).last_pair = tag;
        }
    }
    let pair = PortKey {
        source: *key,
        port: pkt.port,
        proto: pkt.proto,
        scope,
    };
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
