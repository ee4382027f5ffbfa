//! Reading the kernel's maps: sources, prefixes, fan-out pairs and counters.

use std::os::fd::{AsFd as _, OwnedFd};

use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, MapError},
};
use scanner_common::{
    Config, DEFAULT_IDLE_NS, IPPROTO_ANY, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, PortHits,
    PortKey, PortSeen, SAMPLE_PORTS, SourceKey, SourceStats, counter,
    names::{
        ADMISSIONS_MAP, CONFIG_MAP, COUNTERS_ENTRIES, COUNTERS_MAP, FIRST_PROBES_MAP,
        PORT_HITS_ENTRIES, PORT_HITS_MAP, PORTS_MAP, PREFIXES_MAP, SOURCES_MAP,
    },
    pair, scope,
};
use thiserror::Error;

use crate::{
    detect::EntryId,
    kernel::{batch, first::FirstProbes},
};

mod admitted;
pub(crate) mod probed;

#[derive(Debug, Error)]
pub enum PollError {
    #[error("map {0} is missing from the loaded object")]
    MissingMap(&'static str),
    #[error("opening map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("reading map {name}")]
    Batch {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn batch_err(name: &'static str) -> impl FnOnce(std::io::Error) -> PollError {
    move |source| PollError::Batch { name, source }
}

pub(crate) fn map_err(name: &'static str) -> impl FnOnce(MapError) -> PollError {
    move |source| PollError::Map { name, source }
}

/// Takes map `name` out of the loaded object, as type `M`.
pub fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, PollError>
where
    M: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(PollError::MissingMap(name))?;
    M::try_from(map).map_err(map_err(name))
}

/// Packet counters, summed over CPUs (and interfaces, or of one interface).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub seen: u64,
    pub passed: u64,
    pub dropped: u64,
    pub parse_failures: u64,
    pub events_dropped: u64,
    pub blocks_refused: u64,
    pub allowed: u64,
    /// Fragments other than the first (no transport header to track).
    pub fragments: u64,
}

impl Counters {
    /// Sums the counter slots of `slots` (indexes into the COUNTERS layout).
    fn of(values: &[u64], slots: impl Iterator<Item = u32> + Clone) -> Self {
        let sum = |counter: u32| -> u64 {
            slots
                .clone()
                .map(|slot| (slot * counter::COUNT + counter) as usize)
                .filter_map(|i| values.get(i))
                .sum()
        };
        // The kernel counts no passed packets (a counter update on every
        // packet saved): every packet seen and not dropped was passed.
        let (seen, dropped) = (sum(counter::SEEN), sum(counter::DROPPED));
        Self {
            seen,
            passed: seen.saturating_sub(dropped),
            dropped,
            parse_failures: sum(counter::PARSE_FAILURES),
            events_dropped: sum(counter::EVENTS_DROPPED),
            blocks_refused: sum(counter::BLOCKS_REFUSED),
            allowed: sum(counter::ALLOWED),
            fragments: sum(counter::FRAGMENTS),
        }
    }
}

/// All counters, per interface slot, summed over CPUs.
#[derive(Debug, Clone, Default)]
pub struct CounterTable {
    values: Vec<u64>,
}

impl CounterTable {
    /// Everything, all interfaces together.
    pub fn total(&self) -> Counters {
        Counters::of(&self.values, 0..counter::IFACE_SLOTS)
    }

    /// Packets that came in on the interfaces `ifindexes` (the daemon's):
    /// not what a test run of the program (BPF_PROG_TEST_RUN, ifindex 1)
    /// or another interface sharing no slot with them counted.
    pub fn ifaces(&self, ifindexes: &[u32]) -> Counters {
        let mut slots: Vec<u32> = ifindexes.iter().map(|i| i % counter::IFACE_SLOTS).collect();
        slots.sort_unstable();
        slots.dedup();
        Counters::of(&self.values, slots.into_iter())
    }

    /// Packets that came in on `ifindex`.
    pub fn iface(&self, ifindex: u32) -> Counters {
        let slot = ifindex % counter::IFACE_SLOTS;
        Counters::of(&self.values, slot..slot + 1)
    }
}

/// One pass over the maps.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Sources tracked: admitted ones (SOURCES entries) and those whose
    /// first probe is remembered (live FIRST_PROBES slots).
    pub sources: usize,
    /// The entries kept (sources first, then prefixes).
    pub entries: Vec<(EntryId, SourceStats)>,
}

/// The first-probe slots a full read has still to sweep (counting the live
/// ones, clearing stale displaced marks): see [`Maps::decided_then_sweep`].
#[derive(Debug)]
pub struct FirstSweep {
    /// The slots admitted sources hash to, a bit each (`None`: unknown,
    /// every mark kept).
    owned: Option<Vec<u64>>,
    idle_ns: u64,
    /// The time the slots are judged live at: when the entries were read.
    now_ns: u64,
    /// The next slot to sweep.
    next: usize,
}

/// Descriptors for whole-map batch reads.
struct Fds {
    sources: OwnedFd,
    prefixes: OwnedFd,
    counters: OwnedFd,
    port_hits: OwnedFd,
    ports: OwnedFd,
}

/// The maps the daemon reads, taken out of the loaded object.
pub struct Maps {
    sources: HashMap<MapData, SourceKey, SourceStats>,
    prefixes: HashMap<MapData, SourceKey, SourceStats>,
    ports: HashMap<MapData, PortKey, PortSeen>,
    first: FirstProbes,
    /// CONFIG, read for the idle timeout (it stays in the object: the
    /// daemon rewrites it on reload).
    config: Array<MapData, Config>,
    /// The latest admissions, per CPU.
    admitted: admitted::Admitted,
    fds: Fds,
    cpus: usize,
}

impl Maps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, PollError> {
        let fd = |name: &'static str| batch::map_fd(ebpf, name).map_err(batch_err(name));
        let fds = Fds {
            sources: fd(SOURCES_MAP)?,
            prefixes: fd(PREFIXES_MAP)?,
            counters: fd(COUNTERS_MAP)?,
            port_hits: fd(PORT_HITS_MAP)?,
            ports: fd(PORTS_MAP)?,
        };
        let first_fd = fd(FIRST_PROBES_MAP)?;
        let first = FirstProbes::map(first_fd.as_fd()).map_err(batch_err(FIRST_PROBES_MAP))?;
        let config_fd = fd(CONFIG_MAP)?;
        let config = MapData::from_fd(config_fd)
            .and_then(|data| Array::try_from(Map::Array(data)))
            .map_err(map_err(CONFIG_MAP))?;
        // aya has no LruHashMap type in userspace: LRU maps read as HashMap.
        Ok(Self {
            sources: take_map(ebpf, SOURCES_MAP)?,
            prefixes: take_map(ebpf, PREFIXES_MAP)?,
            ports: take_map(ebpf, PORTS_MAP)?,
            first,
            config,
            admitted: admitted::Admitted::new(take_map(ebpf, ADMISSIONS_MAP)?),
            fds,
            cpus: batch::possible_cpus().map_err(batch_err(COUNTERS_MAP))?,
        })
    }

    fn table(&self, scope: u8) -> &HashMap<MapData, SourceKey, SourceStats> {
        if scope == scope::PREFIX {
            &self.prefixes
        } else {
            &self.sources
        }
    }

    /// Every tracked source.
    pub fn sources(&self) -> Vec<(SourceKey, SourceStats)> {
        self.sources_where(|_| true)
    }

    /// The tracked sources `keep` selects, streamed (nothing else copied).
    pub fn sources_where(
        &self,
        keep: impl Fn(&SourceStats) -> bool,
    ) -> Vec<(SourceKey, SourceStats)> {
        self.scope_entries(scope::SOURCE, keep, |_, _| {}).1
    }

    /// Both maps streamed through once, in batches, and the first probes
    /// walked through their mmap: how many sources are tracked, and the
    /// entries the kernel decided (all the detector needs; a million
    /// undecided sources are counted, not copied). Entries the kernel evicts
    /// while we read are skipped.
    pub fn decided(&self) -> Snapshot {
        let (mut snapshot, mut sweep) = self.decided_then_sweep(|_, _| {});
        while let Some(live) = self.sweep_step(&mut sweep, usize::MAX) {
            snapshot.sources += live;
        }
        snapshot
    }

    /// [`Self::decided`] in steps, handing every admitted source on the
    /// way to `source` (the probe signals read the undecided ones' later
    /// ports): SOURCES and PREFIXES read now (the snapshot counts the
    /// admitted sources only), the first probes left for
    /// [`Self::sweep_step`], so that the daemon can report the decisions
    /// made meanwhile between steps.
    pub fn decided_then_sweep(
        &self,
        mut source: impl FnMut(&SourceKey, &SourceStats),
    ) -> (Snapshot, FirstSweep) {
        let mut entries = Vec::new();
        let mut sources = 0;
        // The slots admitted sources hash to: displaced marks elsewhere are
        // cleared by the walk over FIRST_PROBES (the sweep).
        let config = self.config.get(&0, 0).ok();
        let mut owned = vec![0u64; self.first.slots().div_ceil(64)];
        for scope in [scope::SOURCE, scope::PREFIX] {
            let mark = |key: &SourceKey, stats: &SourceStats| {
                if scope == scope::SOURCE {
                    source(key, stats);
                }
                if let (scope::SOURCE, Some(c)) = (scope, config) {
                    let slot =
                        scanner_common::first::slot_of(key, c.hash_seed, c.first_probe_slots);
                    if let Some(word) = owned.get_mut(slot as usize / 64) {
                        *word |= 1 << (slot % 64);
                    }
                }
            };
            let (count, kept) = self.scope_entries(scope, |s| s.decided_ns != 0, mark);
            if scope == scope::SOURCE {
                sources += count;
            }
            entries.extend(
                kept.into_iter()
                    .map(|(key, stats)| (EntryId { scope, key }, stats)),
            );
        }
        let sweep = FirstSweep {
            // Without the settings no slot is known: every mark is kept.
            owned: config.is_some().then_some(owned),
            idle_ns: idle_of(config),
            now_ns: monotonic_ns(),
            next: 0,
        };
        (Snapshot { sources, entries }, sweep)
    }

    /// Sweeps up to `slots` more first-probe slots of `sweep`: how many of
    /// them hold a live first probe; `None` once every slot is swept.
    pub fn sweep_step(&self, sweep: &mut FirstSweep, slots: usize) -> Option<usize> {
        let range = self.first.next_range(&mut sweep.next, slots)?;
        let owned = |i: usize| {
            sweep
                .owned
                .as_ref()
                .is_none_or(|o| o.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0))
        };
        Some(self.first.sweep(range, sweep.now_ns, sweep.idle_ns, owned))
    }

    /// The decided entries among `ids`, looked up one by one: a poll that
    /// costs what the detections cost, not what the map holds.
    pub fn decided_among(&self, ids: &[EntryId]) -> Vec<(EntryId, SourceStats)> {
        ids.iter()
            .filter_map(|&id| {
                self.entry(id)
                    .filter(|s| s.decided_ns != 0)
                    .map(|s| (id, s))
            })
            .collect()
    }

    /// (entries in the map, those `keep` selects); `seen` sees every key.
    fn scope_entries(
        &self,
        scope: u8,
        keep: impl Fn(&SourceStats) -> bool,
        mut seen: impl FnMut(&SourceKey, &SourceStats),
    ) -> (usize, Vec<(SourceKey, SourceStats)>) {
        let fd = if scope == scope::PREFIX {
            &self.fds.prefixes
        } else {
            &self.fds.sources
        };
        let mut count = 0;
        let mut kept = Vec::new();
        let streamed = batch::for_each(
            fd.as_fd(),
            1,
            batch::CHUNK,
            |keys: &[SourceKey], values: &[SourceStats]| {
                count += keys.len();
                keys.iter().zip(values).for_each(|(k, v)| seen(k, v));
                kept.extend(
                    keys.iter()
                        .zip(values)
                        .filter(|(_, s)| keep(s))
                        .map(|(k, s)| (*k, *s)),
                );
            },
        );
        match streamed {
            Ok(()) => (count, kept),
            // A kernel without batch reads: one entry at a time.
            Err(e) => {
                tracing::debug!("batch read failed ({e}), iterating");
                let all: Vec<(SourceKey, SourceStats)> =
                    self.table(scope).iter().filter_map(Result::ok).collect();
                let count = all.len();
                all.iter().for_each(|(k, v)| seen(k, v));
                (count, all.into_iter().filter(|(_, s)| keep(s)).collect())
            }
        }
    }

    /// Sources whose first probe waits in FIRST_PROBES (not yet admitted).
    pub fn waiting(&self) -> usize {
        self.first
            .live(monotonic_ns(), idle_of(self.config.get(&0, 0).ok()))
    }

    /// The first probes in the slots `range` written after `after_ns`, up
    /// to `upto_ns`, to `f` (see `FirstProbes::written`): one per source
    /// new in that time. A walk of every slot goes a range at a time, so
    /// that the daemon reads the ring buffer between ranges.
    pub fn first_probes_written(
        &self,
        range: std::ops::Range<usize>,
        after_ns: u64,
        upto_ns: u64,
        f: impl FnMut(scanner_common::FirstProbe),
    ) {
        self.first.written(range, after_ns, upto_ns, f);
    }

    /// The next `slots` first-probe slots from `next` on (moved past
    /// them), `None` once past the last: a walk's steps.
    pub fn first_probe_range(
        &self,
        next: &mut usize,
        slots: usize,
    ) -> Option<std::ops::Range<usize>> {
        self.first.next_range(next, slots)
    }

    /// The first probe of `key` waiting in its slot (live or idle), if the
    /// slot holds it.
    pub fn first_probe(&self, key: &SourceKey) -> Option<scanner_common::FirstProbe> {
        self.first_probe_slot(key)
            .filter(|p| p.seen_ns != 0 && p.source.same(key))
    }

    /// The FIRST_PROBES slot `key` hashes to, whoever holds it.
    pub fn first_probe_slot(&self, key: &SourceKey) -> Option<scanner_common::FirstProbe> {
        let c = self.config.get(&0, 0).ok()?;
        let slot = scanner_common::first::slot_of(key, c.hash_seed, c.first_probe_slots);
        self.first.get(slot as usize)
    }

    /// Which counts PORT_HITS holds: this boot's id and the map's. Counts
    /// read under another identity are from a map since made anew (a
    /// reboot, a capacity change).
    pub fn counts_identity(&self) -> String {
        let id = self
            .fds
            .port_hits
            .try_clone()
            .ok()
            .and_then(|fd| MapData::from_fd(fd).ok())
            .and_then(|data| data.info().ok())
            .map_or(0, |info| info.id());
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        format!("{}/{id}", boot.trim())
    }

    /// Probes per destination port, indexed by `port_hits_index`.
    pub fn port_hits(&self) -> Result<Vec<PortHits>, PollError> {
        let (keys, values) =
            batch::read_all::<u32, PortHits>(self.fds.port_hits.as_fd(), 1, batch::CHUNK)
                .map_err(batch_err(PORT_HITS_MAP))?;
        let mut hits = vec![PortHits::default(); PORT_HITS_ENTRIES as usize];
        for (k, v) in keys.into_iter().zip(values) {
            if let Some(slot) = hits.get_mut(k as usize) {
                *slot = v;
            }
        }
        Ok(hits)
    }

    /// One entry's stats, if tracked.
    pub fn entry(&self, id: EntryId) -> Option<SourceStats> {
        self.table(id.scope).get(&id.key, 0).ok()
    }

    /// Forgets a source: its next packet starts a new life.
    pub fn forget(&mut self, key: &SourceKey) {
        let _ = self.sources.remove(key);
    }

    /// Tells the kernel a source's block was lifted on purpose (a protected
    /// source spared): it is not blocked again when it probes on, as a
    /// source whose block lapsed is. The entry is read and written back
    /// (BPF_EXIST): a probe the kernel counts in between loses its
    /// increments, and repeats of the last pair it added to the pair's
    /// count meanwhile are held again (counted twice), once per spared
    /// detection.
    pub fn unmark_blocked(&mut self, key: &SourceKey) {
        if let Ok(mut stats) = self.sources.get(key, 0)
            && stats.blocked != 0
        {
            stats.blocked = 0;
            // BPF_EXIST: never re-creates an entry evicted meanwhile.
            const BPF_EXIST: u64 = 2;
            let _ = self.sources.insert(key, stats, BPF_EXIST);
        }
    }

    /// Forgets every admitted source `covered` selects (those a new allow
    /// rule covers: the kernel checks the allowlist when it admits a
    /// source, not on every probe). Returns how many were forgotten.
    pub fn forget_where(&mut self, covered: impl Fn(&SourceKey) -> bool) -> usize {
        let keys: Vec<SourceKey> = self
            .sources
            .keys()
            .filter_map(Result::ok)
            .filter(|k| covered(k))
            .collect();
        keys.iter()
            .filter(|k| self.sources.remove(k).is_ok())
            .count()
    }

    /// One source's stats, if tracked.
    pub fn source(&self, key: &SourceKey) -> Option<SourceStats> {
        self.sources.get(key, 0).ok()
    }

    /// One (entry, protocol, port) pair, if remembered.
    pub fn pair(&self, id: EntryId, proto: u8, port: u16) -> Option<PortSeen> {
        let key = PortKey {
            source: id.key,
            port,
            proto,
            scope: id.scope,
        };
        self.ports.get(&key, 0).ok()
    }

    /// One (source, protocol, port) pair, if remembered, its probes all
    /// counted: the pair's own and the repeats its source's entry holds
    /// (see `scanner_common::pair`).
    pub fn port(&self, source: SourceKey, proto: u8, port: u16) -> Option<PortSeen> {
        let id = EntryId {
            scope: scope::SOURCE,
            key: source,
        };
        let mut seen = self.pair(id, proto, port)?;
        if let Some(last) = self.held(&source, seen.life_ns) {
            seen.probes = seen
                .probes
                .saturating_add(pair::pending_for(last, proto, port));
        }
        Some(seen)
    }

    /// The `last_pair` word of `source`'s entry while it is in the life
    /// that began at `life_ns`: the repeats of its last pair the kernel
    /// holds there, not yet in the pair's count (see
    /// `scanner_common::pair`).
    fn held(&self, source: &SourceKey, life_ns: u64) -> Option<u32> {
        self.source(source)
            .filter(|live| live.first_seen_ns == life_ns)
            .map(|live| live.last_pair)
    }

    /// All packet counters, all interfaces together.
    pub fn counters(&self) -> Result<Counters, PollError> {
        Ok(self.counter_table()?.total())
    }

    /// Every counter of every interface slot, in one batch read.
    pub fn counter_table(&self) -> Result<CounterTable, PollError> {
        let (keys, values) = batch::read_all::<u32, u64>(
            self.fds.counters.as_fd(),
            self.cpus,
            COUNTERS_ENTRIES as usize,
        )
        .map_err(batch_err(COUNTERS_MAP))?;
        let mut table = vec![0u64; (counter::IFACE_SLOTS * counter::COUNT) as usize];
        for (i, key) in keys.iter().enumerate() {
            let per_cpu = values
                .get(i * self.cpus..(i + 1) * self.cpus)
                .unwrap_or(&[]);
            if let Some(slot) = table.get_mut(*key as usize) {
                *slot = per_cpu.iter().sum();
            }
        }
        Ok(CounterTable { values: table })
    }

    /// Up to `n` of the entry's sampled (protocol, port) pairs, most probed
    /// first.
    pub fn top_ports(&self, id: EntryId, stats: &SourceStats, n: usize) -> Vec<(u8, u16)> {
        let sampled = (stats.ports as usize).min(SAMPLE_PORTS);
        // A source's repeats of its last pair are held in its entry: the
        // live entry's, while it is in the same life (`stats` may be an
        // older copy, whose held repeats the kernel has since added to
        // the pair); otherwise the copy's, which were never added.
        let last_pair = match id.scope {
            scope::SOURCE => self
                .held(&id.key, stats.first_seen_ns)
                .unwrap_or(stats.last_pair),
            _ => 0,
        };
        let counted: Vec<((u8, u16), u32)> = stats.sample_ports[..sampled]
            .iter()
            .flat_map(|&port| {
                [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_ANY]
                    .into_iter()
                    .filter_map(move |proto| {
                        self.pair(id, proto, port)
                            .filter(|seen| seen.life_ns == stats.first_seen_ns)
                            .map(|seen| {
                                let held = pair::pending_for(last_pair, proto, port);
                                ((proto, port), seen.probes.saturating_add(held))
                            })
                    })
            })
            // A port whose pairs are gone (evicted, or the entry itself
            // is, and the stats came from the decision record) is unknown.
            .filter(|&(_, probes)| probes > 0)
            .collect();
        rank_ports(&counted, n)
    }
}

/// Pairs ordered by probes (most first), then by protocol and port;
/// duplicates merged.
pub(crate) fn rank_ports<P: Copy + Ord>(counted: &[(P, u32)], n: usize) -> Vec<P> {
    let mut merged: Vec<(P, u32)> = Vec::with_capacity(counted.len());
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
    nanos(&ts)
}

/// A timespec in nanoseconds (saturating).
pub(crate) fn nanos(ts: &libc::timespec) -> u64 {
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The idle timeout in `config` (the default when CONFIG is unreadable).
fn idle_of(config: Option<Config>) -> u64 {
    config.map_or(DEFAULT_IDLE_NS, |c| c.idle_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_rank_by_probes_then_number() {
        let counted = [(443, 1), (22, 3), (80, 1), (8080, 2), (22, 1)];
        assert_eq!(rank_ports(&counted, 10), [22, 8080, 80, 443]);
        assert_eq!(rank_ports(&counted, 2), [22, 8080]);
        assert!(rank_ports::<u16>(&[], 5).is_empty());
        let pairs = [((17, 53), 2), ((6, 22), 2), ((6, 53), 5)];
        assert_eq!(rank_ports(&pairs, 10), [(6, 53), (6, 22), (17, 53)]);
    }

    #[test]
    fn counters_sum_by_interface_slot() {
        let mut values = vec![0u64; (counter::IFACE_SLOTS * counter::COUNT) as usize];
        values[scanner_common::counter::index(3, counter::SEEN) as usize] = 10;
        values[scanner_common::counter::index(5, counter::SEEN) as usize] = 7;
        values[scanner_common::counter::index(5, counter::DROPPED) as usize] = 2;
        let table = CounterTable { values };
        assert_eq!(table.total().seen, 17);
        assert_eq!(table.iface(5).seen, 7);
        assert_eq!(table.iface(5).dropped, 2);
        assert_eq!(table.iface(3 + counter::IFACE_SLOTS).seen, 10, "slots wrap");
        assert_eq!(table.iface(4), Counters::default());
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
