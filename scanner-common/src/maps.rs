//! Map names, capacities and the `#[repr(C)]` types stored in them.
//!
//! Every type here is plain old data: fixed layout, explicit padding, integers
//! instead of bool/enum/Option, so both sides agree on every byte.

/// Per-source statistics, an LRU hash keyed by [`SourceKey`].
pub const SOURCES_MAP: &str = "SOURCES";
/// Per-prefix statistics (sources aggregated by /24 or /64), same types.
pub const PREFIXES_MAP: &str = "PREFIXES";
/// Per-(scope, address, protocol, port) first-seen marks, keyed by [`PortKey`].
pub const PORTS_MAP: &str = "PORTS";
/// The host's open and ignored ports as bitmaps (see [`port_bit`]).
pub const PORT_BITS_MAP: &str = "PORT_BITS";
/// Per-CPU counters per interface slot, indexed by [`counter_index`].
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Probes and distinct probing sources per destination port, for the
/// open-ports audit: an array indexed by [`port_hits_index`].
pub const PORT_HITS_MAP: &str = "PORT_HITS";
/// One [`Config`] entry written by the daemon before it attaches.
pub const CONFIG_MAP: &str = "CONFIG";
/// Ring buffer of [`Decision`]s: the kernel tells the daemon at once.
pub const EVENTS_MAP: &str = "EVENTS";
/// Allowlist rules by address or CIDR prefix: an LPM trie keyed by
/// [`SourceKey`] with [`PolicyEntry`] values.
pub const ALLOWLIST_MAP: &str = "ALLOWLIST";
/// Block rules, likewise. A map of its own, sized to the block cap, so the
/// kernel itself can never hold more blocks than the cap.
pub const BLOCKLIST_MAP: &str = "BLOCKLIST";
/// One u32: 1 while BLOCKLIST is known to be empty, so packets skip its
/// lookup. The daemon sets it (and checks again) when a sweep finds no
/// block; every insert, the kernel's or the daemon's, clears it. 0, the
/// default, means "look it up".
pub const BLOCKS_EMPTY_MAP: &str = "BLOCKS_EMPTY";
/// One u64 the daemon creates and pins itself (the XDP program never sees
/// it): decisions and blocks made at or before this CLOCK_MONOTONIC time
/// have been reported, so a restarted daemon does not report them again.
pub const REPORTED_MAP: &str = "REPORTED";

/// Layout version of the pinned maps: bumped whenever a pinned map's key,
/// value or type changes, so a new daemon never opens an old layout.
pub const STATE_VERSION: u32 = 2;
/// Maps pinned under bpffs, so blocks and state outlive a daemon restart.
pub const PINNED_MAPS: [&str; 7] = [
    ALLOWLIST_MAP,
    BLOCKLIST_MAP,
    SOURCES_MAP,
    PREFIXES_MAP,
    PORTS_MAP,
    COUNTERS_MAP,
    PORT_HITS_MAP,
];

/// Default number of tracked sources (LRU: the least recently seen is evicted).
pub const SOURCES_CAPACITY: u32 = 1 << 20;
/// Default number of (source, port) pairs remembered for the fan-out count.
///
/// A full nmap scan of 65,535 ports uses 65,535 entries, so a million pairs
/// keep a few such scans and thousands of ordinary clients exact at once.
pub const PORTS_CAPACITY: u32 = 1 << 20;
/// Default number of tracked prefixes.
pub const PREFIXES_CAPACITY: u32 = 1 << 18;
/// Ring buffer size: 256 KiB holds thousands of decisions between reads.
pub const EVENTS_BYTES: u32 = 256 * 1024;
/// Default cap on blocked entries (BLOCKLIST's size); when full, new blocks
/// fail loudly, nothing is evicted.
pub const BLOCK_CAPACITY: u32 = 65_536;
/// Size of ALLOWLIST.
pub const ALLOW_CAPACITY: u32 = 4_096;

pub const COUNTER_SEEN: u32 = 0;
pub const COUNTER_PASSED: u32 = 1;
pub const COUNTER_DROPPED: u32 = 2;
pub const COUNTER_PARSE_FAILURES: u32 = 3;
/// Decisions the ring buffer had no room for (the daemon's poll still sees them).
pub const COUNTER_EVENTS_DROPPED: u32 = 4;
/// Blocks the kernel could not add because BLOCKLIST was full (the block cap).
pub const COUNTER_BLOCKS_REFUSED: u32 = 5;
/// Packets from allowlisted sources (passed, never counted).
pub const COUNTER_ALLOWED: u32 = 6;
pub const COUNTER_COUNT: u32 = 7;
/// Interfaces are counted apart in this many slots (by ifindex modulo the
/// slot count): one array index per packet, no hash lookup.
pub const IFACE_SLOTS: u32 = 64;
/// Size of COUNTERS.
pub const COUNTERS_ENTRIES: u32 = IFACE_SLOTS * COUNTER_COUNT;

/// The COUNTERS index of `counter` for packets that came in on `ifindex`.
#[inline(always)]
pub const fn counter_index(ifindex: u32, counter: u32) -> u32 {
    (ifindex % IFACE_SLOTS) * COUNTER_COUNT + counter
}

/// Size of PORT_HITS: every TCP port, then every UDP port.
pub const PORT_HITS_ENTRIES: u32 = 2 * 65_536;

/// The PORT_HITS index of a destination port.
#[inline(always)]
pub const fn port_hits_index(proto: u8, port: u16) -> u32 {
    if proto == crate::IPPROTO_UDP {
        65_536 + port as u32
    } else {
        port as u32
    }
}

/// The (protocol, port) of a PORT_HITS index: the inverse of [`port_hits_index`].
#[inline(always)]
pub const fn port_of_hits_index(index: u32) -> (u8, u16) {
    if index >= 65_536 {
        (crate::IPPROTO_UDP, (index - 65_536) as u16)
    } else {
        (crate::IPPROTO_TCP, index as u16)
    }
}

/// Probes to one destination port, from all sources.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortHits {
    /// Probes (packets that count as probes) to the port.
    pub probes: u64,
    /// Sources whose first probe of the port in their tracked life this was:
    /// distinct scanners, as long as the kernel remembers them.
    pub sources: u64,
}

/// [`PolicyEntry::action`].
pub const ACTION_ALLOW: u32 = 1;
pub const ACTION_BLOCK: u32 = 2;
/// [`PolicyEntry::reason`] of a block.
pub const BLOCK_REASON_SCAN: u32 = 1;
pub const BLOCK_REASON_MANUAL: u32 = 2;

/// Traffic classes counted per source (indexes into [`SourceStats::classes`]).
pub const CLASS_SYN: usize = 0;
pub const CLASS_FIN: usize = 1;
pub const CLASS_NULL: usize = 2;
pub const CLASS_XMAS: usize = 3;
/// FIN|ACK (nmap's Maimon scan; also an ordinary close).
pub const CLASS_MAIMON: usize = 4;
pub const CLASS_ACK: usize = 5;
pub const CLASS_OTHER_TCP: usize = 6;
pub const CLASS_UDP: usize = 7;
pub const CLASS_COUNT: usize = 8;

/// How many distinct ports are remembered by number, for reports.
pub const SAMPLE_PORTS: usize = 16;
/// How many distinct open ports hit are remembered by number.
pub const SAMPLE_OPEN_PORTS: usize = 4;

/// [`SourceStats::reason`]: why the kernel decided an entry is scanning.
pub const REASON_NONE: u32 = 0;
/// The sequential hypothesis test (TRW) crossed its upper threshold.
pub const REASON_TRW: u32 = 1;
/// Distinct ports within one window reached the fan-out threshold.
pub const REASON_FANOUT: u32 = 2;

/// Trials (first probes of a port) each source may contribute to its
/// prefix. A distributed scan is many sources with a few probes each; capping
/// the contribution keeps one loud scanner, already reported on its own, from
/// making its neighbours' prefix look like one.
pub const PREFIX_TRIALS_PER_SOURCE: u32 = 2;

/// [`PortKey::scope`] and [`Decision::scope`]: a single source or a prefix.
pub const SCOPE_SOURCE: u8 = 0;
pub const SCOPE_PREFIX: u8 = 1;
/// [`PortKey::scope`] of a membership mark: `source` has been counted among
/// its prefix's sources in the prefix life stamped in `PortSeen::life_ns`
/// (port and protocol 0). Never a decision's scope.
pub const SCOPE_MEMBER: u8 = 2;

/// Regions of the PORT_BITS bitmap, 1,024 u64 words (65,536 bits) each.
pub const BITS_TCP_OPEN: u32 = 0;
pub const BITS_UDP_OPEN: u32 = 1;
pub const BITS_TCP_IGNORED: u32 = 2;
pub const BITS_UDP_IGNORED: u32 = 3;
pub const PORT_BITS_WORDS: u32 = 4 * 1024;

/// Word index and bit mask of `port` in bitmap `region`.
#[inline(always)]
pub const fn port_bit(region: u32, port: u16) -> (u32, u64) {
    (region * 1024 + (port as u32 >> 6), 1u64 << (port & 63))
}

/// Default fan-out window: distinct ports are counted from a source's first
/// probe until this much time has passed, then counting starts again.
pub const DEFAULT_WINDOW_NS: u64 = 60_000_000_000;
/// Default idle timeout: a source unseen this long starts afresh.
pub const DEFAULT_IDLE_NS: u64 = 3_600_000_000_000;

/// A source address, or a prefix (host bits zero). IPv4 is stored IPv4-mapped
/// (`::ffff:a.b.c.d`) so both families share one key type and one map.
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

    /// Whether this key is IPv4-mapped.
    #[inline(always)]
    pub fn is_v4(&self) -> bool {
        let a = &self.addr;
        a[0] == 0
            && a[1] == 0
            && a[2] == 0
            && a[3] == 0
            && a[4] == 0
            && a[5] == 0
            && a[6] == 0
            && a[7] == 0
            && a[8] == 0
            && a[9] == 0
            && a[10] == 0xff
            && a[11] == 0xff
    }

    /// The IPv4 address when this key is IPv4-mapped.
    pub fn as_v4(&self) -> Option<[u8; 4]> {
        let a = &self.addr;
        self.is_v4().then(|| [a[12], a[13], a[14], a[15]])
    }

    /// The key with all but the first `v4_len` (IPv4) or `v6_len` (IPv6)
    /// address bits cleared. Word arithmetic, no per-byte loop: it runs in
    /// the kernel for every probe.
    #[inline(always)]
    pub fn prefix(&self, v4_len: u8, v6_len: u8) -> Self {
        let a = self.addr;
        let hi = u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
        let lo = u64::from_be_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
        // IPv4 bits start after the 96-bit mapping prefix.
        let keep = if self.is_v4() {
            96 + u32::from(v4_len.min(32))
        } else {
            u32::from(v6_len.min(128))
        };
        let mask = |bits: u32| -> u64 {
            if bits == 0 {
                0
            } else if bits >= 64 {
                u64::MAX
            } else {
                u64::MAX << (64 - bits)
            }
        };
        let hi = hi & mask(keep.min(64));
        let lo = lo & mask(keep.saturating_sub(64));
        let (h, l) = (hi.to_be_bytes(), lo.to_be_bytes());
        let mut addr = [0u8; 16];
        addr[..8].copy_from_slice(&h);
        addr[8..].copy_from_slice(&l);
        Self { addr }
    }
}

/// What the XDP program knows about one source (or one prefix). Counters
/// cover the entry's life: from its first packet, or since it was last idle
/// for longer than `Config::idle_ns`. `window_*` fields restart every
/// `Config::window_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the first packet of this life.
    pub first_seen_ns: u64,
    /// Of the latest packet.
    pub last_seen_ns: u64,
    /// Start of the current fan-out window.
    pub window_start_ns: u64,
    /// Of the latest probe (see [`crate::classify::is_probe`]).
    pub last_probe_ns: u64,
    /// When the kernel decided this entry is scanning; 0 while undecided.
    pub decided_ns: u64,
    /// TCP/UDP packets, by `CLASS_*`.
    pub classes: [u32; CLASS_COUNT],
    /// Probe packets.
    pub probes: u32,
    /// Distinct (protocol, destination port) pairs probed.
    pub ports: u32,
    /// Distinct pairs probed in the current window (the fan-out).
    pub window_ports: u32,
    /// Distinct pairs probed that were open on this host.
    pub open_ports: u32,
    /// SYNs carrying a full operating-system option set (connect() scans,
    /// real clients), as opposed to the bare SYNs of raw-packet scanners.
    pub stack_syns: u32,
    /// Threshold Random Walk log-likelihood ratio, in 1/1024 nats.
    pub score: i32,
    /// `REASON_*` of the decision.
    pub reason: u32,
    /// `ports` when the decision was made.
    pub decided_ports: u32,
    /// Prefix entries: distinct sources that sent probes counted here.
    pub sources: u32,
    /// Source entries: trials this source has contributed to its prefix
    /// (at most [`PREFIX_TRIALS_PER_SOURCE`]).
    pub prefix_trials: u32,
    /// Interface index the latest packet arrived on.
    pub ifindex: u32,
    pub _pad: u32,
    /// The first `SAMPLE_PORTS` distinct ports, in arrival order.
    pub sample_ports: [u16; SAMPLE_PORTS],
    /// The first `SAMPLE_OPEN_PORTS` distinct open ports probed.
    pub open_sample: [u16; SAMPLE_OPEN_PORTS],
}

impl SourceStats {
    pub const fn new(now_ns: u64, ifindex: u32) -> Self {
        Self {
            first_seen_ns: now_ns,
            last_seen_ns: now_ns,
            window_start_ns: now_ns,
            last_probe_ns: 0,
            decided_ns: 0,
            classes: [0; CLASS_COUNT],
            probes: 0,
            ports: 0,
            window_ports: 0,
            open_ports: 0,
            stack_syns: 0,
            score: 0,
            reason: REASON_NONE,
            decided_ports: 0,
            sources: 0,
            prefix_trials: 0,
            ifindex,
            _pad: 0,
            sample_ports: [0; SAMPLE_PORTS],
            open_sample: [0; SAMPLE_OPEN_PORTS],
        }
    }
}

/// Key of the fan-out map: one entry per (scope, address, protocol, port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    /// A source address, or a prefix when `scope` is `SCOPE_PREFIX`.
    pub source: SourceKey,
    pub port: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    /// `SCOPE_SOURCE`, `SCOPE_PREFIX` or `SCOPE_MEMBER`.
    pub scope: u8,
}

/// Value of the fan-out map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortSeen {
    /// The owner's `first_seen_ns` when this pair was first probed: another
    /// value means the pair belongs to an earlier life and is new again.
    pub life_ns: u64,
    /// The owner's `window_start_ns` when this pair was last counted in a window.
    pub window_start_ns: u64,
    /// Probes to this pair in this life.
    pub probes: u32,
    pub _pad: u32,
}

/// Settings the daemon writes into `CONFIG` before attaching. Scores are in
/// 1/1024 nats (natural-log likelihood ratios, fixed point).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Fan-out window length; 0 means [`DEFAULT_WINDOW_NS`].
    pub window_ns: u64,
    /// A source idle this long starts a new life; 0 means [`DEFAULT_IDLE_NS`].
    pub idle_ns: u64,
    /// The host's ephemeral port range (`ip_local_port_range`): ACK and UDP
    /// packets to these ports are replies to the host's own connections.
    pub ephemeral_lo: u16,
    pub ephemeral_hi: u16,
    /// Prefix lengths sources are aggregated by.
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    /// A prefix is decided only once this many sources probed from it.
    pub min_sources: u16,
    /// Score step for a first probe to an open port (negative: benign evidence).
    pub step_open: i32,
    /// Score step for a first probe to a closed port.
    pub step_closed: i32,
    /// Score step for a first stealth probe (FIN, NULL, Xmas) to a closed port.
    pub step_stealth: i32,
    /// Decide "scanner" at or above this score.
    pub upper: i32,
    /// The score never falls below this ("benign" floor).
    pub lower: i32,
    /// Decide "scanner" at this many distinct ports within one window.
    pub fanout_ports: u32,
    /// Block a source in the kernel the moment it is decided (1) or not (0).
    pub block_on_decide: u32,
    pub _pad: u32,
    /// How long such a block lasts; 0 means until removed.
    pub block_ttl_ns: u64,
}

impl Default for Config {
    /// TRW with θ0 = 0.8, θ1 = 0.2, P_D = 0.99, P_F = 0.01 (see the daemon's
    /// `trw` module, which derives these from probabilities).
    fn default() -> Self {
        Self {
            window_ns: DEFAULT_WINDOW_NS,
            idle_ns: DEFAULT_IDLE_NS,
            ephemeral_lo: 32768,
            ephemeral_hi: 60999,
            prefix_v4: 24,
            prefix_v6: 64,
            min_sources: 3,
            step_open: -1420,
            step_closed: 1420,
            step_stealth: 2353,
            upper: 4705,
            lower: -4705,
            fanout_ports: 20,
            block_on_decide: 0,
            _pad: 0,
            block_ttl_ns: 3_600_000_000_000,
        }
    }
}

/// An allow or block rule. The key's prefix length gives its scope: /128 for one
/// address (IPv4 as /128 of the IPv4-mapped form), shorter for a CIDR.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyEntry {
    /// `ACTION_ALLOW` or `ACTION_BLOCK`.
    pub action: u32,
    /// `BLOCK_REASON_*` for blocks.
    pub reason: u32,
    /// CLOCK_MONOTONIC time the rule was made.
    pub created_ns: u64,
    /// CLOCK_MONOTONIC time a block stops applying; 0 means never.
    pub expires_ns: u64,
}

impl PolicyEntry {
    /// Whether this rule drops traffic at `now_ns`.
    #[inline(always)]
    pub fn blocks(&self, now_ns: u64) -> bool {
        self.action == ACTION_BLOCK && (self.expires_ns == 0 || now_ns < self.expires_ns)
    }
}

/// Prefix length of a CIDR in the rule tries' key space (IPv4 sits under the
/// 96-bit IPv4-mapped prefix).
pub const fn policy_prefix_len(is_v4: bool, len: u8) -> u32 {
    if is_v4 { 96 + len as u32 } else { len as u32 }
}

/// A ring buffer record: the kernel decided this entry is scanning.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub key: SourceKey,
    /// `bpf_ktime_get_ns()` of the deciding probe.
    pub ts_ns: u64,
    /// `REASON_*`.
    pub reason: u32,
    /// Distinct ports probed when decided.
    pub ports: u32,
    /// `SCOPE_SOURCE` or `SCOPE_PREFIX`.
    pub scope: u8,
    pub _pad: [u8; 7],
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
    unsafe impl aya::Pod for super::Decision {}
    unsafe impl aya::Pod for super::PolicyEntry {}
    unsafe impl aya::Pod for super::PortHits {}
}

// Layouts are shared with the kernel byte for byte: no implicit padding.
const _: () = assert!(core::mem::size_of::<SourceKey>() == 16);
const _: () = assert!(core::mem::size_of::<PortHits>() == 16);
const _: () = assert!(
    core::mem::size_of::<SourceStats>()
        == 5 * 8 + 4 * CLASS_COUNT + 12 * 4 + 2 * (SAMPLE_PORTS + SAMPLE_OPEN_PORTS)
);
const _: () = assert!(core::mem::size_of::<SourceStats>().is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<PortKey>() == 20);
const _: () = assert!(core::mem::size_of::<PortSeen>() == 24);
const _: () = assert!(core::mem::size_of::<Config>() == 64);
const _: () = assert!(core::mem::size_of::<PolicyEntry>() == 24);
const _: () = assert!(core::mem::size_of::<Decision>() == 40);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_mask_host_bits() {
        let k = SourceKey::from_v4([198, 18, 7, 201]);
        assert_eq!(k.prefix(24, 64), SourceKey::from_v4([198, 18, 7, 0]));
        assert_eq!(k.prefix(20, 64), SourceKey::from_v4([198, 18, 0, 0]));
        assert_eq!(k.prefix(32, 64), k);
        assert_eq!(k.prefix(0, 64), SourceKey::from_v4([0, 0, 0, 0]));
        let mut v6 = [0u8; 16];
        v6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        v6[7] = 0x42;
        v6[8..].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let p = SourceKey::from_v6(v6).prefix(24, 64);
        assert_eq!(&p.addr[..8], &v6[..8]);
        assert_eq!(&p.addr[8..], &[0u8; 8]);
        let p = SourceKey::from_v6(v6).prefix(24, 60);
        assert_eq!(p.addr[7], 0x40);
        assert!(!p.is_v4() && k.is_v4());
    }

    #[test]
    fn port_hits_indexes_turn_back_into_ports() {
        for proto in [crate::IPPROTO_TCP, crate::IPPROTO_UDP] {
            for port in [0, 1, 22, 65_535] {
                let index = port_hits_index(proto, port);
                assert!(index < PORT_HITS_ENTRIES);
                assert_eq!(port_of_hits_index(index), (proto, port));
            }
        }
    }

    #[test]
    fn port_bits_cover_every_port_once() {
        assert_eq!(port_bit(BITS_TCP_OPEN, 0), (0, 1));
        assert_eq!(port_bit(BITS_TCP_OPEN, 65), (1, 2));
        assert_eq!(port_bit(BITS_UDP_OPEN, 65535), (2047, 1 << 63));
        assert_eq!(port_bit(BITS_UDP_IGNORED, 0).0, 3072);
        assert!(port_bit(BITS_UDP_IGNORED, 65535).0 < PORT_BITS_WORDS);
    }
}
