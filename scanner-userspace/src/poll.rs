//! Reading the kernel's maps: sources, fan-out pairs and counters.

use aya::{
    Ebpf,
    maps::{HashMap, MapData, MapError, PerCpuArray},
};
use scanner_common::{
    COUNTER_DROPPED, COUNTER_PARSE_FAILURES, COUNTER_PASSED, COUNTER_SEEN, COUNTERS_MAP,
    IPPROTO_TCP, IPPROTO_UDP, PORTS_MAP, PortKey, PortSeen, SAMPLE_PORTS, SOURCES_MAP, SourceKey,
    SourceStats,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PollError {
    #[error("map {0} is missing from the loaded object")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> PollError {
    move |source| PollError::Map { name, source }
}

/// Global counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub seen: u64,
    pub passed: u64,
    pub dropped: u64,
    pub parse_failures: u64,
}

/// The maps the daemon reads, taken out of the loaded object.
pub struct Maps {
    sources: HashMap<MapData, SourceKey, SourceStats>,
    ports: HashMap<MapData, PortKey, PortSeen>,
    counters: PerCpuArray<MapData, u64>,
}

impl Maps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, PollError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(PollError::MissingMap(name));
        // aya has no LruHashMap type in userspace: LRU maps read as HashMap.
        let sources = HashMap::try_from(take(SOURCES_MAP)?).map_err(map_err(SOURCES_MAP))?;
        let ports = HashMap::try_from(take(PORTS_MAP)?).map_err(map_err(PORTS_MAP))?;
        let counters = PerCpuArray::try_from(take(COUNTERS_MAP)?).map_err(map_err(COUNTERS_MAP))?;
        Ok(Self {
            sources,
            ports,
            counters,
        })
    }

    /// Every tracked source. Entries the kernel evicts while we iterate are skipped.
    pub fn sources(&self) -> Vec<(SourceKey, SourceStats)> {
        self.sources.iter().filter_map(Result::ok).collect()
    }

    /// One source's stats, if tracked.
    pub fn source(&self, key: &SourceKey) -> Option<SourceStats> {
        self.sources.get(key, 0).ok()
    }

    /// One (source, protocol, port) pair, if remembered.
    pub fn port(&self, source: SourceKey, proto: u8, port: u16) -> Option<PortSeen> {
        let key = PortKey {
            source,
            port,
            proto,
            _pad: 0,
        };
        self.ports.get(&key, 0).ok()
    }

    pub fn counters(&self) -> Result<Counters, PollError> {
        let sum = |index: u32| -> Result<u64, PollError> {
            let values = self
                .counters
                .get(&index, 0)
                .map_err(map_err(COUNTERS_MAP))?;
            Ok(values.iter().sum())
        };
        Ok(Counters {
            seen: sum(COUNTER_SEEN)?,
            passed: sum(COUNTER_PASSED)?,
            dropped: sum(COUNTER_DROPPED)?,
            parse_failures: sum(COUNTER_PARSE_FAILURES)?,
        })
    }

    /// Up to `n` of the source's sampled ports, most probed first.
    pub fn top_ports(&self, source: SourceKey, stats: &SourceStats, n: usize) -> Vec<u16> {
        let sampled = (stats.distinct_ports as usize).min(SAMPLE_PORTS);
        let counted: Vec<(u16, u32)> = stats.sample_ports[..sampled]
            .iter()
            .map(|&port| {
                let probes = [IPPROTO_TCP, IPPROTO_UDP]
                    .into_iter()
                    .filter_map(|proto| self.port(source, proto, port))
                    .filter(|seen| seen.window_start_ns == stats.window_start_ns)
                    .map(|seen| seen.probes)
                    .sum();
                (port, probes)
            })
            .collect();
        rank_ports(&counted, n)
    }
}

/// Ports ordered by probes (most first), then by number; duplicates merged.
pub fn rank_ports(counted: &[(u16, u32)], n: usize) -> Vec<u16> {
    let mut merged: Vec<(u16, u32)> = Vec::with_capacity(counted.len());
    for &(port, probes) in counted {
        match merged.iter_mut().find(|(p, _)| *p == port) {
            Some((_, total)) => *total = total.saturating_add(probes),
            None => merged.push((port, probes)),
        }
    }
    merged.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    merged.into_iter().take(n).map(|(port, _)| port).collect()
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_rank_by_probes_then_number() {
        let counted = [(443, 1), (22, 3), (80, 1), (8080, 2), (22, 1)];
        assert_eq!(rank_ports(&counted, 10), [22, 8080, 80, 443]);
        assert_eq!(rank_ports(&counted, 2), [22, 8080]);
        assert!(rank_ports(&[], 5).is_empty());
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
