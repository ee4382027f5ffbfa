//! The probe signals' reading side (see `sinks::probes`): at every poll the
//! first probes written since the last one are read from FIRST_PROBES, and
//! at every full scan the undecided admitted sources' later ports from
//! their entries; what the filter lets through goes to the syslog queue.
//! Nothing here runs per packet, and a walk costs one pass over the
//! first-probe table's memory.

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use scanner_common::{
    IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, SAMPLE_OPEN_PORTS, SourceKey, SourceStats, class,
    clock, scope,
};

use crate::{
    config::signals::SignalsConfig,
    detect::{EntryId, kind_of},
    kernel::maps::{Maps, monotonic_ns},
    memory,
    sinks::{
        metrics::Metrics,
        probes::{Offered, Probe, ProbeSignals, SignalName, record},
        syslog::Queue,
    },
};

/// The syslog severity of a probe record: informational (6).
const PRIORITY: u8 = 6;
/// A slot whose write began just before a walk may land after the walk
/// passed it, stamped up to the probe clock's lag before it
/// (`scanner_common::clock`): the walk reads up to this long before its
/// start, the next one picks up the rest.
const WRITE_SLACK_NS: u64 = 50_000_000 + clock::MAX_LAG_NS;
/// Admitted sources whose offered ports are remembered at most.
const MAX_ADMITTED: usize = 100_000;
/// Probes of closed ports waiting for the next listeners' read at most;
/// past it they are judged at once.
const MAX_PENDING: usize = 100_000;
/// Probes kept for the long memory between two polls at most; past it they
/// are left out, and counted as the memory's drops.
const MAX_REMEMBERED: usize = 200_000;

/// An interface's addresses, one per family (the probed one, as far as the
/// kernel's first probes tell).
#[derive(Debug, Clone, Copy, Default)]
struct Addresses {
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
}

/// A walk of the first probes written in a span of time, a range of slots
/// at a time (see [`ProbeWatch::walk_step`]).
#[derive(Debug)]
pub(crate) struct ProbeWalk {
    after_ns: u64,
    upto_ns: u64,
    /// When the walk began: the time the probes are judged at.
    now_ns: u64,
    /// The next slot to read.
    next: usize,
}

/// Reads the kernel's probes, sends the signals, and keeps what the long
/// memory is handed at each poll.
pub(crate) struct ProbeWatch {
    /// The probe signals and their queue, when sent.
    signals: Option<(ProbeSignals, Queue)>,
    /// For the long memory, when kept: the prefix lengths, and the probes
    /// judged since it was last handed them.
    remember: Option<((u8, u8), Vec<memory::Probe>)>,
    /// Probes left out of `remember` (full) since it was last taken.
    left_out: u64,
    /// FIRST_PROBES has been read up to this CLOCK_MONOTONIC time.
    walked_ns: u64,
    /// Admitted sources: (the life's first_seen_ns, sample ports offered).
    admitted: HashMap<SourceKey, (u64, usize)>,
    /// By interface name.
    addresses: HashMap<String, Addresses>,
    /// The host's open ports, and the probes waiting for them.
    ports: OpenPorts,
}

/// The host's exposed (protocol, port)s as its listeners were last read,
/// and the probes of ports closed when they came that were made since:
/// they wait for the next read, so that a service started meanwhile makes
/// its first clients no evidence (the kernel learns of a new listener at
/// the same read).
#[derive(Debug, Default)]
struct OpenPorts {
    open: BTreeSet<(u8, u16)>,
    /// CLOCK_MONOTONIC of the read `open` comes from (0: none yet).
    read_ns: u64,
    pending: Vec<Probe>,
}

impl OpenPorts {
    /// `p` judged by the listeners read since it came, ready to offer; or
    /// None, kept until the next read.
    fn judge(&mut self, p: Probe) -> Option<Probe> {
        let p = if !p.open && self.open.contains(&(p.proto, p.port)) {
            p.opened()
        } else {
            p
        };
        // Stamped by the probe clock, which lags: a probe stamped within the
        // lag before the read may have come after it, and waits too.
        let after_read = p.seen_ns.saturating_add(clock::MAX_LAG_NS) >= self.read_ns;
        if !p.open && after_read && self.pending.len() < MAX_PENDING {
            self.pending.push(p);
            return None;
        }
        Some(p)
    }

    /// The listeners read again at `read_ns`: the probes that waited for
    /// it, judged (those made after it wait on).
    fn read(&mut self, open: BTreeSet<(u8, u16)>, read_ns: u64) -> Vec<Probe> {
        self.open = open;
        self.read_ns = read_ns;
        std::mem::take(&mut self.pending)
            .into_iter()
            .filter_map(|p| self.judge(p))
            .collect()
    }
}

impl ProbeWatch {
    /// The probe signals `config` asks for, into `queue`, and the long
    /// memory's feed (`remember`: the prefix lengths); None when neither.
    pub(crate) fn new(
        config: &SignalsConfig,
        queue: Option<Queue>,
        remember: Option<(u8, u8)>,
    ) -> Option<Self> {
        let signals = queue.filter(|_| config.probes).map(|queue| {
            (
                ProbeSignals::new(config.probe_rate, config.probe_burst, config.probe_window),
                queue,
            )
        });
        if signals.is_none() && remember.is_none() {
            return None;
        }
        let mut watch = Self {
            signals,
            remember: remember.map(|lengths| (lengths, Vec::new())),
            left_out: 0,
            walked_ns: monotonic_ns(),
            admitted: HashMap::new(),
            addresses: HashMap::new(),
            ports: OpenPorts::default(),
        };
        watch.refresh_addresses();
        Some(watch)
    }

    /// The host's exposed ports (`open`, the listeners read at `read_ns`)
    /// and its interfaces' addresses, read again at each open-ports
    /// refresh; the probes that waited for this read are judged.
    pub(crate) fn refresh(
        &mut self,
        open: BTreeSet<(u8, u16)>,
        read_ns: u64,
        names: &HashMap<u32, String>,
        metrics: &Metrics,
    ) {
        self.refresh_addresses();
        let now = monotonic_ns();
        for p in self.ports.read(open, read_ns) {
            self.offer(&p, names, metrics, now);
        }
    }

    /// A probe offered once the listeners read since it came judge it.
    fn consider(&mut self, p: Probe, names: &HashMap<u32, String>, metrics: &Metrics, now: u64) {
        if let Some(p) = self.ports.judge(p) {
            self.offer(&p, names, metrics, now);
        }
    }

    /// The interfaces' addresses read again.
    fn refresh_addresses(&mut self) {
        let Ok(all) = nix::ifaddrs::getifaddrs() else {
            return;
        };
        let mut addresses: HashMap<String, Addresses> = HashMap::new();
        for a in all {
            let Some(addr) = a.address else { continue };
            let entry = addresses.entry(a.interface_name).or_default();
            if let Some(v4) = addr.as_sockaddr_in() {
                entry.v4.get_or_insert(v4.ip());
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                // A link-local address is nobody's target from outside.
                let ip = v6.ip();
                if ip.segments()[0] & 0xffc0 != 0xfe80 {
                    entry.v6.get_or_insert(ip);
                }
            }
        }
        self.addresses = addresses;
    }

    /// The walk of the first probes written since the last one, or `None`
    /// when none can be new yet (see [`Self::walk_step`]).
    pub(crate) fn begin_walk(&self) -> Option<ProbeWalk> {
        let now_ns = monotonic_ns();
        let upto_ns = now_ns.saturating_sub(WRITE_SLACK_NS);
        (upto_ns > self.walked_ns).then_some(ProbeWalk {
            after_ns: self.walked_ns,
            upto_ns,
            now_ns,
            next: 0,
        })
    }

    /// Up to `slots` more slots of `walk`: the first probes written there,
    /// offered and sent. False once every slot is walked: the next walk
    /// starts where this one ends.
    pub(crate) fn walk_step(
        &mut self,
        walk: &mut ProbeWalk,
        maps: &Maps,
        slots: usize,
        names: &HashMap<u32, String>,
        metrics: &Metrics,
    ) -> bool {
        let Some(range) = maps.first_probe_range(&mut walk.next, slots) else {
            self.walked_ns = walk.upto_ns;
            return false;
        };
        let mut probes = Vec::new();
        maps.first_probes_written(range, walk.after_ns, walk.upto_ns, |slot| {
            probes.push(Probe::of_slot(&slot));
        });
        for p in probes {
            self.consider(p, names, metrics, walk.now_ns);
        }
        true
    }

    /// The later ports of the undecided admitted sources of a full scan
    /// (`sources`): those not offered yet in the entry's life, from its
    /// sample of ports, its protocol read back from PORTS. Sources gone
    /// from the scan are forgotten.
    pub(crate) fn admitted(
        &mut self,
        maps: &Maps,
        sources: &[(SourceKey, SourceStats)],
        names: &HashMap<u32, String>,
        metrics: &Metrics,
    ) {
        let now = monotonic_ns();
        let mut kept = HashMap::with_capacity(sources.len().min(MAX_ADMITTED));
        for (key, stats) in sources {
            let sampled = (stats.ports as usize).min(stats.sample_ports.len());
            // The first port came from the first-probe table.
            let offered = match self.admitted.get(key) {
                Some(&(life, n)) if life == stats.first_seen_ns => n,
                _ => 1,
            };
            let id = EntryId {
                scope: scope::SOURCE,
                key: *key,
            };
            let kind = kind_of(scope::SOURCE, stats);
            let open = (stats.open_ports as usize).min(SAMPLE_OPEN_PORTS);
            for &port in stats.sample_ports.get(offered..sampled).unwrap_or(&[]) {
                let proto = [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP]
                    .into_iter()
                    .find(|&proto| {
                        maps.pair(id, proto, port)
                            .is_some_and(|seen| seen.life_ns == stats.first_seen_ns)
                    })
                    .unwrap_or(IPPROTO_TCP);
                let is_open = stats.open_sample[..open].contains(&port);
                let p = Probe::later(
                    *key,
                    stats.last_probe_ns,
                    stats.ifindex,
                    (proto, port),
                    (is_open, asks_like_a_client(stats, proto)),
                    kind,
                );
                self.consider(p, names, metrics, now);
            }
            if kept.len() < MAX_ADMITTED {
                kept.insert(*key, (stats.first_seen_ns, sampled.max(offered)));
            }
        }
        self.admitted = kept;
    }

    /// The probes judged since the last call, for the long memory, and
    /// how many were left out.
    pub(crate) fn remembered(&mut self) -> (Vec<memory::Probe>, u64) {
        let probes = self
            .remember
            .as_mut()
            .map(|(_, probes)| std::mem::take(probes))
            .unwrap_or_default();
        (probes, std::mem::take(&mut self.left_out))
    }

    /// One judged probe: kept for the long memory, and through the
    /// signals' filter to the queue if it passes.
    fn offer(&mut self, p: &Probe, names: &HashMap<u32, String>, metrics: &Metrics, now: u64) {
        if let Some((_, probes)) = &self.remember
            && probes.len() >= MAX_REMEMBERED
        {
            self.left_out += 1;
        } else if let Some(((v4, v6), probes)) = &mut self.remember {
            let source = crate::sinks::event::ip_of(&p.source);
            let len = if source.is_ipv4() { *v4 } else { *v6 };
            if let Ok(net) = ipnet::IpNet::new(source, len) {
                probes.push(memory::Probe {
                    seen: memory::Seen {
                        source,
                        net: net.trunc(),
                        proto: p.proto,
                        port: p.port,
                        open: p.open,
                        ms: crate::history::unix_ms(p.seen_at(now)),
                    },
                    ifindex: p.ifindex,
                });
            }
        }
        let Some((signals, queue)) = &mut self.signals else {
            return;
        };
        let iface = names.get(&p.ifindex).map_or("", String::as_str);
        let addresses = self.addresses.get(iface).copied().unwrap_or_default();
        let destination: Option<IpAddr> = if p.source.is_v4() {
            addresses.v4.map(IpAddr::V4)
        } else {
            addresses.v6.map(IpAddr::V6)
        };
        let offered = signals.offer(p, destination, now);
        metrics.probe_signal(offered);
        if offered != Offered::Send {
            return;
        }
        let r = record(p, queue.host(), iface, destination, now);
        if let Ok(json) = serde_json::to_string(&r) {
            queue.send(PRIORITY, &r.ts, SignalName::Probe.as_str(), &json);
        }
    }
}

/// Whether an entry's traffic of `proto` includes a client's requests:
/// SYNs from an OS stack for TCP, datagrams for UDP, INITs for SCTP (what
/// earns benign credit in the kernel). A monitor's connections mix SYNs
/// with ACKs and FINs, so the entry's dominant kind cannot tell.
fn asks_like_a_client(stats: &SourceStats, proto: u8) -> bool {
    match proto {
        IPPROTO_TCP => stats.stack_syns > 0,
        IPPROTO_UDP => stats.classes[class::UDP] > 0,
        IPPROTO_SCTP => stats.classes[class::SCTP_INIT] > 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::ScanKind;

    fn syn(port: u16, seen_ns: u64, open: bool, stack: bool) -> Probe {
        Probe::later(
            SourceKey::from_v4([198, 18, 0, 20]),
            seen_ns,
            1,
            (IPPROTO_TCP, port),
            (open, stack),
            ScanKind::Syn,
        )
    }

    #[test]
    fn a_closed_port_waits_for_the_next_read_of_the_listeners() {
        const MS: u64 = 1_000_000;
        let mut ports = OpenPorts::default();
        // Before any read: every closed port waits; an open one goes.
        assert!(ports.judge(syn(22, 100 * MS, false, true)).is_none());
        assert!(ports.judge(syn(23, 200 * MS, false, false)).is_none());
        assert!(ports.judge(syn(80, 300 * MS, true, true)).is_some());
        // Port 22 opened (a service started): its client's SYN is judged
        // open, so no evidence; port 23 stays closed.
        let ready = ports.read(BTreeSet::from([(IPPROTO_TCP, 22)]), 400 * MS);
        assert_eq!(ready.len(), 2);
        assert!(ready[0].open && ready[0].credit, "{:?}", ready[0]);
        assert!(!ready[1].open);
        // Made after the read: waits for the next one. So does one stamped
        // within the probe clock's lag before it: it may have come after.
        assert!(ports.judge(syn(23, 500 * MS, false, false)).is_none());
        let lagging = 1_000 * MS - clock::MAX_LAG_NS;
        let ready = ports.read(BTreeSet::new(), 1_000 * MS);
        assert_eq!(ready.len(), 1);
        assert!(ports.judge(syn(24, lagging, false, false)).is_none());
        // Made before the last read by more than the lag, closed as of it:
        // judged at once.
        assert!(ports.judge(syn(25, lagging - 1, false, false)).is_some());
    }

    #[test]
    fn a_client_is_told_by_its_requests_not_its_dominant_kind() {
        let mut stats = SourceStats::new(0, 1);
        stats.classes[class::ACK] = 10;
        stats.classes[class::SYN] = 2;
        assert!(!asks_like_a_client(&stats, IPPROTO_TCP), "raw SYNs only");
        stats.stack_syns = 2;
        assert!(asks_like_a_client(&stats, IPPROTO_TCP));
        assert!(!asks_like_a_client(&stats, IPPROTO_UDP));
        stats.classes[class::UDP] = 1;
        assert!(asks_like_a_client(&stats, IPPROTO_UDP));
        assert!(!asks_like_a_client(&stats, IPPROTO_SCTP));
    }
}
