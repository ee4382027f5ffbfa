//! Map names and capacities, in one place for the kernel and the daemon.

use crate::counter;

/// Per-source statistics of admitted sources (suspects: those that probed a
/// second port while their first probe was remembered), an LRU hash keyed
/// by [`crate::SourceKey`].
pub const SOURCES_MAP: &str = "SOURCES";
/// First probes of sources not yet admitted: a `BPF_F_MMAPABLE` array of
/// [`crate::first::FirstProbe`] slots (see [`crate::first`]), which the
/// daemon reads through an mmap.
pub const FIRST_PROBES_MAP: &str = "FIRST_PROBES";
/// Per-prefix statistics (sources aggregated by /24 or /64), same types.
pub const PREFIXES_MAP: &str = "PREFIXES";
/// Single-probe sources gathered by prefix: an array of
/// [`crate::gather::PrefixSlot`] (see [`crate::gather`]). Not pinned: a
/// restart forgets the evidence of prefixes not yet admitted.
pub const PREFIX_SLOTS_MAP: &str = "PREFIX_SLOTS";
/// Per-(scope, address, protocol, port) first-seen marks, keyed by [`crate::PortKey`].
pub const PORTS_MAP: &str = "PORTS";
/// The host's open and ignored ports as bitmaps (see [`crate::bits`]).
pub const PORT_BITS_MAP: &str = "PORT_BITS";
/// Per-CPU counters per interface slot, indexed by [`counter::index`].
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Probes and distinct probing sources per destination port, for the
/// open-ports audit: an array indexed by [`crate::port_hits_index`].
pub const PORT_HITS_MAP: &str = "PORT_HITS";
/// One [`crate::Config`] entry written by the daemon before it attaches.
pub const CONFIG_MAP: &str = "CONFIG";
/// Ring buffer of [`crate::Decision`]s: the kernel tells the daemon at once.
pub const EVENTS_MAP: &str = "EVENTS";
/// Allowlist rules by address or CIDR prefix: an LPM trie keyed by
/// [`crate::SourceKey`] with [`crate::PolicyEntry`] values.
pub const ALLOWLIST_MAP: &str = "ALLOWLIST";
/// Block rules, likewise. A map of its own, sized to the block cap, so the
/// kernel itself can never hold more blocks than the cap.
pub const BLOCKLIST_MAP: &str = "BLOCKLIST";
/// One u32: 1 while the kernel is to skip BLOCKLIST: while it is known to be
/// empty, and throughout a dry run. The daemon sets it (and checks again)
/// when a sweep finds no block; every insert, the kernel's or the daemon's,
/// clears it outside a dry run. 0, the default, means "look it up".
pub const BLOCKS_EMPTY_MAP: &str = "BLOCKS_EMPTY";
/// A per-CPU array of [`crate::CachedBlock`] slots in front of BLOCKLIST
/// (see [`crate::policy`]): a blocked source's packets skip the trie. Not
/// pinned: a new program starts with it empty.
pub const BLOCK_CACHE_MAP: &str = "BLOCK_CACHE";
/// One u32 the daemon bumps after every change it makes to the rules
/// (ALLOWLIST, BLOCKLIST, PROTECTED): a BLOCK_CACHE slot filled at another
/// value is stale. The kernel's own blocks only add a rule: no bump.
pub const RULES_GENERATION_MAP: &str = "RULES_GENERATION";
/// Sources never blocked even when decided (the host's gateways and DNS
/// resolvers): a hash of [`crate::SourceKey`] to a `protect::*` reason, read
/// by the kernel only at a decision, never per packet. Detection and reports
/// go on; blocking skips them. Rewritten by the daemon at every start.
pub const PROTECTED_MAP: &str = "PROTECTED";
/// A one-slot program array holding the `scanner_admit` program, which the
/// XDP program tail-calls to count the probe that admitted a source. Pinned
/// so the slot stays filled while no daemon runs (the kernel empties a
/// program array when no user holds it).
pub const ADMITTED_MAP: &str = "ADMITTED";
/// Likewise for the `scanner_gather` program (see [`crate::gather`]).
pub const GATHERED_MAP: &str = "GATHERED";
/// Likewise for the `scanner_replay` program, which the XDP program
/// tail-calls to create an admitted source's entry and count its first
/// probe there (then `scanner_admit` counts the probe that admitted it).
pub const REPLAYED_MAP: &str = "REPLAYED";
/// Likewise for the `scanner_prefix` program, which the XDP program (and
/// `scanner_admit`) tail-calls to count an admitted source's first trials
/// into its prefix.
pub const PREFIXED_MAP: &str = "PREFIXED";
/// The latest admissions to SOURCES, per CPU (see `admissions`). Not
/// pinned: the daemon reads it only for the admissions since its program
/// was attached.
pub const ADMISSIONS_MAP: &str = "ADMISSIONS";
/// One u64 the daemon creates and pins itself (the XDP program never sees
/// it): decisions and blocks made at or before this CLOCK_MONOTONIC time
/// have been reported, so a restarted daemon does not report them again.
pub const REPORTED_MAP: &str = "REPORTED";
/// Pinned beside REPORTED, by the daemon: the scans decided at or before
/// this CLOCK_MONOTONIC time were reported as ended by a clean stop, so the
/// next daemon does not end them again.
pub const SCANS_ENDED_MAP: &str = "SCANS_ENDED";

/// Layout version of the pinned maps: bumped whenever a pinned map's key,
/// value or type changes, so a new daemon never opens an old layout.
///
/// 3: first probes in FIRST_PROBES, SOURCES holds admitted sources only.
/// 4: sixteen traffic classes and a fragment count per source; PORT_HITS
/// covers SCTP ports and IP protocols (a version-3 daemon's blocks,
/// allowlist and port counts are migrated, see the daemon's
/// `kernel::migrate`).
pub const STATE_VERSION: u32 = 4;
/// Maps pinned under bpffs, so blocks and state outlive a daemon restart.
pub const PINNED_MAPS: [&str; 12] = [
    ADMITTED_MAP,
    GATHERED_MAP,
    REPLAYED_MAP,
    PREFIXED_MAP,
    ALLOWLIST_MAP,
    BLOCKLIST_MAP,
    FIRST_PROBES_MAP,
    SOURCES_MAP,
    PREFIXES_MAP,
    PORTS_MAP,
    COUNTERS_MAP,
    PORT_HITS_MAP,
];

/// Default number of tracked sources (`--max-sources`): first-probe slots
/// and admitted sources together. Every other per-source capacity follows
/// from it (the functions below), so one setting sizes the kernel state.
pub const SOURCES_CAPACITY: u32 = 1 << 20;
/// Admitted sources (SOURCES entries, LRU) out of `sources`: one in 32, at
/// least 1,024 and at most half. Only sources that probed two ports get
/// here: scanners, and clients of several services.
pub const fn suspects(sources: u32) -> u32 {
    let n = sources / 32;
    let n = if n < 1024 { 1024 } else { n };
    if n > sources / 2 { sources / 2 } else { n }
}
/// FIRST_PROBES slots out of `sources`: the rest.
pub const fn first_probe_slots(sources: u32) -> u32 {
    sources - suspects(sources)
}
/// (source, port) pairs remembered for the fan-out count (PORTS, LRU): four
/// per admitted source, which uses two or three (its ports, its prefix
/// membership mark, its prefix's pairs). A scan blocked at its deciding
/// probe uses a handful. Eviction is global and by recency: a long
/// report-only scan pushes out the pairs touched longest ago, and a pair
/// forgotten that way counts once more if its source probes it again.
pub const fn port_pairs(sources: u32) -> u32 {
    4 * suspects(sources)
}
/// Tracked prefixes (PREFIXES, LRU): one per four admitted sources.
pub const fn prefixes(sources: u32) -> u32 {
    suspects(sources) / 4
}
/// PREFIX_SLOTS slots (see `gather`): one per 32 tracked sources, at least
/// 1,024. 64 bytes each: 2 MiB at the default capacity.
pub const fn prefix_slots(sources: u32) -> u32 {
    let n = sources / 32;
    if n < 1024 { 1024 } else { n }
}
/// SOURCES entries at the default capacity.
pub const SUSPECTS_CAPACITY: u32 = suspects(SOURCES_CAPACITY);
/// FIRST_PROBES slots at the default capacity.
pub const FIRST_PROBES_CAPACITY: u32 = first_probe_slots(SOURCES_CAPACITY);
/// PORTS entries at the default capacity.
pub const PORTS_CAPACITY: u32 = port_pairs(SOURCES_CAPACITY);
/// PREFIX_SLOTS slots at the default capacity.
pub const PREFIX_SLOTS_CAPACITY: u32 = prefix_slots(SOURCES_CAPACITY);
/// PREFIXES entries at the default capacity.
pub const PREFIXES_CAPACITY: u32 = prefixes(SOURCES_CAPACITY);
/// Ring buffer size: 256 KiB holds thousands of decisions between reads.
pub const EVENTS_BYTES: u32 = 256 * 1024;
/// Default cap on blocked entries (BLOCKLIST's size); when full, new blocks
/// fail loudly, nothing is evicted.
pub const BLOCK_CAPACITY: u32 = 65_536;
/// Size of ALLOWLIST.
pub const ALLOW_CAPACITY: u32 = 4_096;
/// Size of PROTECTED.
pub const PROTECTED_CAPACITY: u32 = 1_024;
/// Size of COUNTERS.
pub const COUNTERS_ENTRIES: u32 = counter::IFACE_SLOTS * counter::COUNT;
/// Size of PORT_HITS: every TCP port, every UDP port, every SCTP port, then
/// every IP protocol number.
pub const PORT_HITS_ENTRIES: u32 = 3 * 65_536 + 256;
/// Size of PORT_BITS: nine regions of 1,024 u64 words (65,536 bits) each.
pub const PORT_BITS_WORDS: u32 = crate::bits::REGIONS * 1024;
