//! The maps. Names match the `*_MAP` constants in scanner-common (the loader
//! checks each one exists); capacities come from there too.

use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
};
use scanner_common::{
    COUNTER_COUNT, Config, PORTS_CAPACITY, PortKey, PortSeen, SOURCES_CAPACITY, SourceKey,
    SourceStats,
};

#[map]
pub static SOURCES: LruHashMap<SourceKey, SourceStats> =
    LruHashMap::with_max_entries(SOURCES_CAPACITY, 0);

/// The fan-out structure. One LRU entry per (source, protocol, port): a
/// successful no-overwrite insert is the first probe of that port, so the
/// source's distinct counter is exact and costs one hash operation per probe,
/// whatever the number of ports. A per-source 65,536-bit bitmap would also be
/// exact and O(1), but costs 8 KiB for every source, including the millions
/// that send one packet; here memory follows the pairs actually seen. Stale
/// pairs from an earlier window are recognised by their window stamp, so
/// nothing needs clearing when a window restarts, and LRU eviction only drops
/// the pairs nobody has touched for longest.
#[map]
pub static PORTS: LruHashMap<PortKey, PortSeen> = LruHashMap::with_max_entries(PORTS_CAPACITY, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);
