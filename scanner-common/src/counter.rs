//! Packet counters (COUNTERS, per CPU), by interface slot.

pub const SEEN: u32 = 0;
/// Not counted by the kernel (one update per packet saved): the daemon
/// derives it as SEEN - DROPPED.
pub const PASSED: u32 = 1;
pub const DROPPED: u32 = 2;
pub const PARSE_FAILURES: u32 = 3;
/// Decisions the ring buffer had no room for (the daemon's poll still sees them).
pub const EVENTS_DROPPED: u32 = 4;
/// Blocks the kernel could not add because BLOCKLIST was full (the block cap).
pub const BLOCKS_REFUSED: u32 = 5;
/// Packets from allowlisted sources (passed, never counted): probes from
/// their second port on (a first probe is remembered before any rule is
/// looked up), and packets a block would have dropped.
pub const ALLOWED: u32 = 6;
/// Fragments other than the first (they carry no transport header): passed
/// or dropped by the source's rules, never tracked as probes.
pub const FRAGMENTS: u32 = 7;
/// How many counters each interface slot has.
pub const COUNT: u32 = 8;
/// Interfaces are counted apart in this many slots (by ifindex modulo the
/// slot count): one array index per packet, no hash lookup.
pub const IFACE_SLOTS: u32 = 64;

/// The COUNTERS index of `counter` for packets that came in on `ifindex`.
#[inline(always)]
pub const fn index(ifindex: u32, counter: u32) -> u32 {
    (ifindex % IFACE_SLOTS) * COUNT + counter
}
