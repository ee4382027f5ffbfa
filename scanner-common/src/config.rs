//! The settings the daemon writes into CONFIG for the XDP program.

/// Default fan-out window: distinct ports are counted from a source's first
/// probe until this much time has passed, then counting starts again.
pub const DEFAULT_WINDOW_NS: u64 = 60_000_000_000;
/// Default idle timeout: a source unseen this long starts afresh.
pub const DEFAULT_IDLE_NS: u64 = 3_600_000_000_000;

/// Settings the daemon writes into `CONFIG` before attaching. Scores are in
/// 1/1024 nats (natural-log likelihood ratios, fixed point).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Fan-out window length; 0 means [`DEFAULT_WINDOW_NS`].
    pub window_ns: u64,
    /// A source idle this long starts a new life. 0: every probe starts one,
    /// as a new source's (the daemon takes 2 s at least; the bench and the
    /// tests use 0 for a new source on every run of one frame).
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
    /// Slots in FIRST_PROBES (the loader writes the map's real size here).
    pub first_probe_slots: u32,
    /// How long such a block lasts; 0 means until removed.
    pub block_ttl_ns: u64,
    /// Secret key of the first-probe slot hash ([`crate::first::slot_of`]):
    /// the loader derives it from the pinned FIRST_PROBES map and this boot's
    /// random id, so it holds for the map's life.
    pub hash_seed: u64,
    /// Slots in PREFIX_SLOTS (the loader writes the map's real size here).
    pub prefix_slots: u32,
    /// 1: a block spares the TCP connections the host has open with the
    /// blocked source (its segments pass; see `verdict::live_flow`).
    pub spare_flows: u32,
    /// The timer tick's length, which the probe clock counts in (see
    /// [`crate::clock`]): the loader writes
    /// `clock_getres(CLOCK_MONOTONIC_COARSE)` here.
    pub tick_ns: u64,
    /// The probe clock's origin ([`crate::clock::origin`]), which the
    /// loader measures.
    pub clock_origin_ns: u64,
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
            first_probe_slots: crate::names::FIRST_PROBES_CAPACITY,
            block_ttl_ns: 3_600_000_000_000,
            hash_seed: 0,
            prefix_slots: crate::names::PREFIX_SLOTS_CAPACITY,
            spare_flows: 1,
            tick_ns: 0,
            clock_origin_ns: 0,
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, no implicit padding (size asserted below).
unsafe impl aya::Pod for Config {}

const _: () = assert!(core::mem::size_of::<Config>() == 96);
