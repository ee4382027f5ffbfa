//! The maps. Names match the `*_MAP` constants in scanner-common (the loader
//! checks each one exists); capacities come from there too.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use scanner_common::{
    Admissions, BLOCK_CACHE_SLOTS, CachedBlock, Config, FirstProbe, PolicyEntry, PortHits, PortKey,
    PortSeen, PrefixSlot, SourceKey, SourceStats,
    names::{
        ALLOW_CAPACITY, BLOCK_CAPACITY, COUNTERS_ENTRIES, EVENTS_BYTES, FIRST_PROBES_CAPACITY,
        PORT_BITS_WORDS, PORT_HITS_ENTRIES, PORTS_CAPACITY, PREFIX_SLOTS_CAPACITY,
        PREFIXES_CAPACITY, PROTECTED_CAPACITY, SUSPECTS_CAPACITY,
    },
};

/// `BPF_F_MMAPABLE`: the daemon maps the array into its memory and reads
/// every slot without a system call.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// First probes waiting for a second (see `scanner_common::first`). Sized by
/// the loader; the daemon writes the size into CONFIG.
#[map]
pub(crate) static FIRST_PROBES: Array<FirstProbe> =
    Array::with_max_entries(FIRST_PROBES_CAPACITY, BPF_F_MMAPABLE);

/// Admitted sources: those that probed a second port while their first
/// probe was still in FIRST_PROBES.
#[map]
pub(crate) static SOURCES: LruHashMap<SourceKey, SourceStats> =
    LruHashMap::with_max_entries(SUSPECTS_CAPACITY, 0);

/// The latest admissions to SOURCES, a ring per CPU (see
/// `scanner_common::admissions`): written at an admission only.
#[map]
pub(crate) static ADMISSIONS: PerCpuArray<Admissions> = PerCpuArray::with_max_entries(1, 0);

/// Single-probe sources gathered by prefix (see `scanner_common::gather`).
/// Sized by the loader; the daemon writes the size into CONFIG.
#[map]
pub(crate) static PREFIX_SLOTS: Array<PrefixSlot> =
    Array::with_max_entries(PREFIX_SLOTS_CAPACITY, 0);

/// Sources aggregated by prefix, to see scans spread over many addresses.
#[map]
pub(crate) static PREFIXES: LruHashMap<SourceKey, SourceStats> =
    LruHashMap::with_max_entries(PREFIXES_CAPACITY, 0);

/// The fan-out structure. One LRU entry per (scope, address, protocol,
/// port): a successful no-overwrite insert is the first probe of that port,
/// so distinct counters are exact and cost one hash operation per probe,
/// whatever the number of ports. A per-source 65,536-bit bitmap would also be
/// exact and O(1), but costs 8 KiB for every source, including the millions
/// that send one packet; here memory follows the pairs actually seen. Stale
/// pairs from an earlier window or life are recognised by their stamps, so
/// nothing needs clearing, and LRU eviction drops the pairs nobody has
/// touched for longest.
#[map]
pub(crate) static PORTS: LruHashMap<PortKey, PortSeen> =
    LruHashMap::with_max_entries(PORTS_CAPACITY, 0);

/// Open and ignored ports, kept current by the daemon.
#[map]
pub(crate) static PORT_BITS: Array<u64> = Array::with_max_entries(PORT_BITS_WORDS, 0);

/// Packet counters per CPU and interface slot (`counter_index`).
#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_ENTRIES, 0);

/// Probes per destination port, all sources together (2 MiB, shared by
/// the CPUs: atomic adds, not per-CPU copies that grow with the core count).
#[map]
pub(crate) static PORT_HITS: Array<PortHits> = Array::with_max_entries(PORT_HITS_ENTRIES, 0);

#[map]
pub(crate) static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Allowlist rules by address or prefix.
#[map]
pub(crate) static ALLOWLIST: LpmTrie<SourceKey, PolicyEntry> =
    LpmTrie::with_max_entries(ALLOW_CAPACITY, 0);

/// Block rules by address or prefix. The daemon sizes it to its block cap:
/// a full map refuses new blocks, it never evicts.
#[map]
pub(crate) static BLOCKLIST: LpmTrie<SourceKey, PolicyEntry> =
    LpmTrie::with_max_entries(BLOCK_CAPACITY, 0);

/// 1 while BLOCKLIST is known to be empty (see `BLOCKS_EMPTY_MAP`).
#[map]
pub(crate) static BLOCKS_EMPTY: Array<u32> = Array::with_max_entries(1, 0);

/// The last blocked sources per CPU, in front of BLOCKLIST (see
/// `scanner_common::CachedBlock`).
#[map]
pub(crate) static BLOCK_CACHE: PerCpuArray<CachedBlock> =
    PerCpuArray::with_max_entries(BLOCK_CACHE_SLOTS, 0);

/// The rules' generation, bumped by the daemon after each change it makes.
#[map]
pub(crate) static RULES_GENERATION: Array<u32> = Array::with_max_entries(1, 0);

/// Sources a decision never blocks (gateways, resolvers), with why.
#[map]
pub(crate) static PROTECTED: HashMap<SourceKey, u32> =
    HashMap::with_max_entries(PROTECTED_CAPACITY, 0);

/// Slot 0: the `scanner_admit` program, which `scanner` tail-calls to
/// count the probe that admitted a source (the loader puts it there).
#[map]
pub(crate) static ADMITTED: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Holds `scanner_gather`, tail-called for a new source's first probe that
/// decides its prefix or belongs to an admitted one (see `gather`). Pinned,
/// like ADMITTED.
#[map]
pub(crate) static GATHERED: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Holds `scanner_replay`, tail-called for the probe that admits a source:
/// it creates the entry and counts the first probe into it. Pinned, like
/// ADMITTED.
#[map]
pub(crate) static REPLAYED: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Holds `scanner_prefix`, tail-called for an admitted source's probe that
/// owes its prefix a trial (its first few). Pinned, like ADMITTED.
#[map]
pub(crate) static PREFIXED: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Decisions, for the daemon to report within milliseconds.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// An all-zero value (never written) that new entries are copied from by
/// the map-update helper.
#[map]
pub(crate) static BLANK: Array<SourceStats> = Array::with_max_entries(1, 0);
