//! Per-source accounting: traffic classes, probes, and the distinct-port fan-out.
//!
//! Counters a source's packets can bump from several CPUs at once (RSS spreads
//! one source's flows over queues) use atomic adds; timestamps and window
//! resets are plain stores, where the last writer winning is harmless.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns, programs::XdpContext};
use scanner_common::{
    CLASS_COUNT, Config, DEFAULT_WINDOW_NS, Headers, IPPROTO_TCP, IPPROTO_UDP, PortKey, PortSeen,
    SAMPLE_PORTS, SourceKey, SourceStats, Transport, class_of, is_probe,
};

use crate::maps::{CONFIG, PORTS, SOURCES};

/// Adds without fetching: the BPF target has atomic add, not fetch-add.
#[inline(always)]
unsafe fn add(dst: *mut u32, v: u32) {
    // SAFETY: dst points into a map value that lives while the program runs.
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(dst, v) };
}

#[inline(always)]
fn config() -> Config {
    match CONFIG.get(0) {
        Some(c) => *c,
        None => Config::default(),
    }
}

#[inline(always)]
pub fn track(ctx: &XdpContext, h: &Headers) {
    let cfg = config();
    // SAFETY: a helper call with no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(s) = source_entry(&h.source, now, ifindex) else {
        return;
    };
    let window_ns = if cfg.window_ns == 0 {
        DEFAULT_WINDOW_NS
    } else {
        cfg.window_ns
    };
    let class = class_of(&h.transport);
    let probe = is_probe(&h.transport, &cfg);
    // SAFETY: s points at this source's value in SOURCES, valid until we return.
    unsafe {
        if now.wrapping_sub((*s).window_start_ns) > window_ns {
            restart_window(s, now);
        }
        (*s).last_seen_ns = now;
        (*s).ifindex = ifindex;
        if class < CLASS_COUNT {
            add(&raw mut (*s).classes[class], 1);
        }
        if probe {
            (*s).last_probe_ns = now;
            add(&raw mut (*s).probes, 1);
            count_port(s, &h.source, &h.transport);
        }
    }
}

/// The source's stats, created on its first packet.
#[inline(always)]
fn source_entry(key: &SourceKey, now: u64, ifindex: u32) -> Option<*mut SourceStats> {
    if let Some(s) = SOURCES.get_ptr_mut(key) {
        return Some(s);
    }
    // Another CPU may insert first; either way the lookup below finds it.
    let _ = SOURCES.insert(key, SourceStats::new(now, ifindex), BPF_NOEXIST as u64);
    SOURCES.get_ptr_mut(key)
}

#[inline(always)]
unsafe fn restart_window(s: *mut SourceStats, now: u64) {
    // SAFETY: the caller holds a valid value pointer.
    unsafe {
        (*s).window_start_ns = now;
        (*s).classes = [0; CLASS_COUNT];
        (*s).probes = 0;
        (*s).distinct_ports = 0;
    }
}

/// Counts the destination port toward the fan-out if the window has not seen it.
#[inline(always)]
unsafe fn count_port(s: *mut SourceStats, source: &SourceKey, t: &Transport) {
    let (port, proto) = match *t {
        Transport::Tcp { dport, .. } => (dport, IPPROTO_TCP),
        Transport::Udp { dport, .. } => (dport, IPPROTO_UDP),
    };
    let key = PortKey {
        source: *source,
        port,
        proto,
        _pad: 0,
    };
    // SAFETY: the caller holds a valid value pointer.
    let window = unsafe { (*s).window_start_ns };
    let first = match PORTS.get_ptr_mut(&key) {
        // SAFETY: p points at the pair's value in PORTS.
        Some(p) => unsafe {
            if (*p).window_start_ns == window {
                add(&raw mut (*p).probes, 1);
                false
            } else {
                (*p).window_start_ns = window;
                (*p).probes = 1;
                true
            }
        },
        None => {
            let seen = PortSeen {
                window_start_ns: window,
                probes: 1,
                _pad: 0,
            };
            PORTS.insert(&key, &seen, BPF_NOEXIST as u64).is_ok()
        }
    };
    if first {
        // SAFETY: as above.
        unsafe {
            let n = (*s).distinct_ports as usize;
            add(&raw mut (*s).distinct_ports, 1);
            if n < SAMPLE_PORTS {
                (*s).sample_ports[n] = port;
            }
        }
    }
}
