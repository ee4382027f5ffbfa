//! Map names, capacities and the `#[repr(C)]` types stored in them.
//!
//! Every type here is plain old data: fixed layout, explicit padding, integers
//! instead of bool/enum/Option, so both sides agree on every byte.

/// Per-source statistics, an LRU hash keyed by [`SourceKey`].
pub const SOURCES_MAP: &str = "SOURCES";
/// Per-(source, protocol, port) first-seen marks, an LRU hash keyed by [`PortKey`].
pub const PORTS_MAP: &str = "PORTS";
/// Global per-CPU counters, indexed by the `COUNTER_*` constants.
pub const COUNTERS_MAP: &str = "COUNTERS";
/// One [`Config`] entry written by the daemon before it attaches.
pub const CONFIG_MAP: &str = "CONFIG";

/// Default number of tracked sources (LRU: the least recently seen is evicted).
pub const SOURCES_CAPACITY: u32 = 1 << 20;
/// Default number of (source, port) pairs remembered for the fan-out count.
///
/// A full nmap scan of 65,535 ports uses 65,535 entries, so a million pairs
/// keep a few such scans and thousands of ordinary clients exact at once.
pub const PORTS_CAPACITY: u32 = 1 << 20;

pub const COUNTER_SEEN: u32 = 0;
pub const COUNTER_PASSED: u32 = 1;
pub const COUNTER_DROPPED: u32 = 2;
pub const COUNTER_PARSE_FAILURES: u32 = 3;
pub const COUNTER_COUNT: u32 = 4;

/// Traffic classes counted per source (indexes into [`SourceStats::classes`]).
pub const CLASS_SYN: usize = 0;
pub const CLASS_FIN: usize = 1;
pub const CLASS_NULL: usize = 2;
pub const CLASS_XMAS: usize = 3;
pub const CLASS_ACK: usize = 4;
pub const CLASS_OTHER_TCP: usize = 5;
pub const CLASS_UDP: usize = 6;
pub const CLASS_COUNT: usize = 7;

/// How many distinct ports of a window are remembered by number, for reports.
pub const SAMPLE_PORTS: usize = 16;

/// Default fan-out window: distinct ports are counted from a source's first
/// probe until this much time has passed, then counting starts again.
pub const DEFAULT_WINDOW_NS: u64 = 60_000_000_000;

/// A source address. IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`) so both
/// families share one key type and one map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    pub addr: [u8; 16],
}

impl SourceKey {
    pub const fn from_v4(octets: [u8; 4]) -> Self {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12] = octets[0];
        addr[13] = octets[1];
        addr[14] = octets[2];
        addr[15] = octets[3];
        Self { addr }
    }

    pub const fn from_v6(addr: [u8; 16]) -> Self {
        Self { addr }
    }

    /// The IPv4 address when this key is IPv4-mapped.
    pub fn as_v4(&self) -> Option<[u8; 4]> {
        let a = &self.addr;
        if a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff {
            Some([a[12], a[13], a[14], a[15]])
        } else {
            None
        }
    }
}

/// What the XDP program knows about one source. Window fields are reset when a
/// probe arrives more than `Config::window_ns` after `window_start_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the first packet ever seen.
    pub first_seen_ns: u64,
    /// Of the latest packet.
    pub last_seen_ns: u64,
    /// Start of the current fan-out window.
    pub window_start_ns: u64,
    /// Of the latest probe (see [`crate::classify::is_probe`]).
    pub last_probe_ns: u64,
    /// TCP/UDP packets in the current window, by `CLASS_*`.
    pub classes: [u32; CLASS_COUNT],
    /// Probes in the current window.
    pub probes: u32,
    /// Distinct (protocol, destination port) pairs probed in the current window.
    pub distinct_ports: u32,
    /// Interface index the latest packet arrived on.
    pub ifindex: u32,
    /// The first `SAMPLE_PORTS` distinct ports of the window, in arrival order.
    pub sample_ports: [u16; SAMPLE_PORTS],
}

impl SourceStats {
    pub const fn new(now_ns: u64, ifindex: u32) -> Self {
        Self {
            first_seen_ns: now_ns,
            last_seen_ns: now_ns,
            window_start_ns: now_ns,
            last_probe_ns: 0,
            classes: [0; CLASS_COUNT],
            probes: 0,
            distinct_ports: 0,
            ifindex,
            sample_ports: [0; SAMPLE_PORTS],
        }
    }
}

/// Key of the fan-out map: one entry per (source, protocol, destination port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    pub source: SourceKey,
    pub port: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    pub _pad: u8,
}

/// Value of the fan-out map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortSeen {
    /// The source's `window_start_ns` when this port was last counted; a
    /// different value means the port is new to the current window.
    pub window_start_ns: u64,
    /// Probes to this port in that window.
    pub probes: u32,
    pub _pad: u32,
}

/// Settings the daemon writes into `CONFIG` before attaching.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Fan-out window length; 0 means [`DEFAULT_WINDOW_NS`].
    pub window_ns: u64,
    /// The host's ephemeral port range (`ip_local_port_range`): ACK and UDP
    /// packets to these ports are replies to the host's own connections.
    pub ephemeral_lo: u16,
    pub ephemeral_hi: u16,
    pub _pad: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            window_ns: DEFAULT_WINDOW_NS,
            ephemeral_lo: 32768,
            ephemeral_hi: 60999,
            _pad: 0,
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, and have no implicit padding
    // (checked by the size assertions below), so any bit pattern is valid.
    unsafe impl aya::Pod for super::SourceKey {}
    unsafe impl aya::Pod for super::SourceStats {}
    unsafe impl aya::Pod for super::PortKey {}
    unsafe impl aya::Pod for super::PortSeen {}
    unsafe impl aya::Pod for super::Config {}
}

// Layouts are shared with the kernel byte for byte: no implicit padding.
const _: () = assert!(core::mem::size_of::<SourceKey>() == 16);
const _: () =
    assert!(core::mem::size_of::<SourceStats>() == 32 + 4 * CLASS_COUNT + 12 + 2 * SAMPLE_PORTS);
const _: () = assert!(core::mem::size_of::<SourceStats>().is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<PortKey>() == 20);
const _: () = assert!(core::mem::size_of::<PortSeen>() == 16);
const _: () = assert!(core::mem::size_of::<Config>() == 16);
