//! Probe signals: evidence about sources this host has not decided, for a
//! central engine that sees the whole fleet (`[signals] probes`; CrowdSec's
//! scenarios in packaging/crowdsec decide the horizontal scans no single
//! server sees). One `probe` record per (source, destination, protocol,
//! port) the first time it is seen in a window, read from the kernel's
//! first-probe table (a source's first probe) and its admitted entries
//! (their later ports), never per packet.
//!
//! What is not evidence is left out: a probe that earns benign credit at
//! an open port (an operating system's SYN, a UDP or SCTP request: the
//! handshake it starts is a client's), and a repeat within the window.
//! What is sent is bounded by a rate per host (a token bucket); what the
//! bucket refuses is counted and said once per streak. The decisions are
//! the engine's: this only filters and bounds.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use scanner_common::{FirstProbe, SourceKey, class, first};
use serde::Serialize;

use crate::{
    audit::proto_name,
    detect::ScanKind,
    sinks::event::{ip_of, timestamp},
};

crate::named::named! {
    /// Whether the probed port was open on this host.
    pub(crate) enum PortState {
        Open = "open",
        Closed = "closed",
    }
}

crate::named::named! {
    /// The name of a probe signal (the syslog MSGID and the record's
    /// `event`).
    pub(crate) enum SignalName {
        Probe = "probe",
    }
}

/// Remembered (source, destination, protocol, port) keys at most: past
/// it, expired keys are dropped and, if none is, records are sent without
/// being remembered (the rate still bounds them).
const MAX_REMEMBERED: usize = 200_000;

/// One probe the kernel kept, as the signals read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probe {
    pub source: SourceKey,
    /// CLOCK_MONOTONIC of the probe.
    pub seen_ns: u64,
    pub ifindex: u32,
    pub proto: u8,
    pub port: u16,
    pub open: bool,
    pub kind: ScanKind,
    /// A client's kind of request (an operating system's SYN, a UDP or
    /// SCTP request): it earns benign credit where the port is open.
    pub credit: bool,
}

impl Probe {
    /// The probe a FIRST_PROBES slot holds.
    pub(crate) fn of_slot(p: &FirstProbe) -> Self {
        let class = usize::from(p.traits & first::CLASS_MASK);
        let stack = p.traits & first::STACK_SYN != 0;
        // The kernel's credit needs the port open when the probe came; a
        // port opened since (a service just started) is judged again by
        // the request's kind.
        let asks = match class {
            class::SYN => stack,
            class::UDP | class::SCTP_INIT => true,
            _ => false,
        };
        Self {
            source: p.source,
            seen_ns: p.seen_ns,
            ifindex: p.ifindex & !first::MARKS,
            proto: p.proto,
            port: p.port,
            open: p.traits & first::OPEN != 0,
            kind: kind_of_class(class, stack),
            credit: p.traits & first::CREDIT != 0 || asks,
        }
    }

    /// A later port of an admitted source (from its entry's sample), seen
    /// at `seen_ns`: its kind is the entry's dominant one, and whether the
    /// entry makes a client's requests (`client`) is the caller's reading
    /// of it, as the dominant kind of a client's mixed traffic says
    /// nothing.
    pub(crate) fn later(
        source: SourceKey,
        seen_ns: u64,
        ifindex: u32,
        (proto, port): (u8, u16),
        (open, client): (bool, bool),
        kind: ScanKind,
    ) -> Self {
        Self {
            source,
            seen_ns,
            ifindex,
            proto,
            port,
            open,
            kind,
            credit: client,
        }
    }

    /// The wall-clock time of the probe, `now_ns` being CLOCK_MONOTONIC now.
    pub(crate) fn seen_at(&self, now_ns: u64) -> SystemTime {
        let ago = Duration::from_nanos(now_ns.saturating_sub(self.seen_ns));
        SystemTime::now()
            .checked_sub(ago)
            .unwrap_or(std::time::UNIX_EPOCH)
    }

    /// The probe with its port open, as the host's listeners read since
    /// it came say.
    pub(crate) fn opened(self) -> Self {
        Self { open: true, ..self }
    }

    /// A client's request to an open port: not evidence.
    fn is_client(&self) -> bool {
        self.open && self.credit
    }
}

/// The scan kind a single probe of `class` stands for.
fn kind_of_class(class: usize, stack_syn: bool) -> ScanKind {
    match class {
        class::SYN if stack_syn => ScanKind::Connect,
        class::SYN => ScanKind::Syn,
        class::FIN => ScanKind::Fin,
        class::NULL => ScanKind::Null,
        class::XMAS => ScanKind::Xmas,
        class::MAIMON => ScanKind::Maimon,
        class::ACK => ScanKind::Ack,
        class::UDP => ScanKind::Udp,
        class::FRAGMENTED => ScanKind::Fragmented,
        class::SCTP_INIT => ScanKind::SctpInit,
        class::SCTP_COOKIE => ScanKind::SctpCookieEcho,
        class::PROTOCOL => ScanKind::IpProtocol,
        class::INVALID_FLAGS => ScanKind::InvalidFlags,
        _ => ScanKind::Mixed,
    }
}

/// A probe record: the `probe` signal's JSON (docs/events.md, "Probe
/// signals").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ProbeRecord {
    pub ts: String,
    pub event: SignalName,
    /// The host that saw it (the syslog HOSTNAME too).
    pub host: String,
    pub source: String,
    /// The probed address: the interface's address of the probe's family
    /// (the kernel keeps the interface, not the address, per first probe).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    pub iface: String,
    pub proto: &'static str,
    pub port: u16,
    pub port_state: PortState,
    pub kind: ScanKind,
}

/// What [`ProbeSignals::offer`] made of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Send it.
    Send,
    /// A client's request to an open port.
    Client,
    /// Already sent within the window.
    Repeat,
    /// Over the rate: dropped, counted.
    Limited,
}

/// The filter and the bound: the window's memory and the token bucket.
#[derive(Debug)]
pub(crate) struct ProbeSignals {
    /// Tokens added per second, and the most kept.
    rate: f64,
    burst: f64,
    tokens: f64,
    /// CLOCK_MONOTONIC of the last refill.
    refilled_ns: u64,
    window_ns: u64,
    /// Key -> when it may be sent again (CLOCK_MONOTONIC).
    sent: HashMap<(SourceKey, Option<IpAddr>, u8, u16), u64>,
    /// Probes over the rate since the last one sent (the streak), and in
    /// all.
    streak: u64,
    limited: u64,
}

impl ProbeSignals {
    /// At most `rate` records a second, `burst` at once, each key once per
    /// `window`.
    pub(crate) fn new(rate: u32, burst: u32, window: Duration) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            refilled_ns: 0,
            window_ns: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            sent: HashMap::new(),
            streak: 0,
            limited: 0,
        }
    }

    /// Probes refused by the rate so far.
    #[cfg(test)]
    pub(crate) fn limited(&self) -> u64 {
        self.limited
    }

    /// Whether `probe`, to `destination`, is sent at `now_ns`. A probe
    /// that ends a streak of refusals logs how many were.
    pub(crate) fn offer(
        &mut self,
        probe: &Probe,
        destination: Option<IpAddr>,
        now_ns: u64,
    ) -> Offered {
        if probe.is_client() {
            return Offered::Client;
        }
        let key = (probe.source, destination, probe.proto, probe.port);
        if self.sent.get(&key).is_some_and(|&until| until > now_ns) {
            return Offered::Repeat;
        }
        self.refill(now_ns);
        if self.tokens < 1.0 {
            self.limited += 1;
            self.streak += 1;
            if self.streak == 1 {
                tracing::warn!(
                    rate = self.rate,
                    "probe signals over the rate: dropped (counted in scanner_probe_signals_limited_total)"
                );
            }
            return Offered::Limited;
        }
        self.tokens -= 1.0;
        if self.streak > 0 {
            tracing::info!(dropped = self.streak, "probe signals under the rate again");
            self.streak = 0;
        }
        self.remember(key, now_ns);
        Offered::Send
    }

    fn refill(&mut self, now_ns: u64) {
        let elapsed = now_ns.saturating_sub(self.refilled_ns) as f64 / 1e9;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled_ns = now_ns;
    }

    fn remember(&mut self, key: (SourceKey, Option<IpAddr>, u8, u16), now_ns: u64) {
        if self.sent.len() >= MAX_REMEMBERED {
            self.sent.retain(|_, &mut until| until > now_ns);
            if self.sent.len() >= MAX_REMEMBERED {
                return;
            }
        }
        self.sent.insert(key, now_ns.saturating_add(self.window_ns));
    }
}

/// The record of `probe` as `host` saw it on `iface`, at the wall-clock
/// time its monotonic stamp stands for (`now_ns` is the monotonic now).
pub(crate) fn record(
    probe: &Probe,
    host: &str,
    iface: &str,
    destination: Option<IpAddr>,
    now_ns: u64,
) -> ProbeRecord {
    ProbeRecord {
        ts: timestamp(probe.seen_at(now_ns)),
        event: SignalName::Probe,
        host: host.to_owned(),
        source: ip_of(&probe.source).to_string(),
        destination: destination.map(|d| d.to_string()),
        iface: iface.to_owned(),
        proto: proto_name(probe.proto),
        port: probe.port,
        port_state: if probe.open {
            PortState::Open
        } else {
            PortState::Closed
        },
        kind: probe.kind,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record with every field set (for the docs' test).
    pub(crate) fn full_record() -> ProbeRecord {
        let p = probe(1, 22);
        record(&p, "server-0", "eth0", Some([198, 18, 0, 2].into()), 5)
    }

    fn probe(last: u8, port: u16) -> Probe {
        Probe {
            source: SourceKey::from_v4([198, 18, 0, last]),
            seen_ns: 1,
            ifindex: 2,
            proto: scanner_common::IPPROTO_TCP,
            port,
            open: false,
            kind: ScanKind::Syn,
            credit: false,
        }
    }

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_client_of_an_open_port_is_no_evidence_but_a_raw_syn_there_is() {
        let mut s = ProbeSignals::new(10, 10, Duration::from_secs(60));
        let client = Probe {
            open: true,
            credit: true,
            kind: ScanKind::Connect,
            ..probe(1, 22)
        };
        assert_eq!(s.offer(&client, None, SEC), Offered::Client);
        let raw = Probe {
            open: true,
            ..probe(1, 22)
        };
        assert_eq!(
            s.offer(&raw, None, SEC),
            Offered::Send,
            "masscan's SYN to an open port"
        );
        let closed_connect = Probe {
            credit: true,
            kind: ScanKind::Connect,
            ..probe(2, 23)
        };
        assert_eq!(
            s.offer(&closed_connect, None, SEC),
            Offered::Send,
            "a connect() to a closed port is evidence"
        );
    }

    #[test]
    fn each_key_is_sent_once_per_window() {
        let mut s = ProbeSignals::new(100, 100, Duration::from_secs(60));
        let dst: Option<IpAddr> = Some([198, 18, 1, 2].into());
        assert_eq!(s.offer(&probe(1, 22), dst, SEC), Offered::Send);
        assert_eq!(s.offer(&probe(1, 22), dst, 30 * SEC), Offered::Repeat);
        assert_eq!(
            s.offer(&probe(1, 80), dst, 30 * SEC),
            Offered::Send,
            "another port"
        );
        assert_eq!(
            s.offer(&probe(2, 22), dst, 30 * SEC),
            Offered::Send,
            "another source"
        );
        let other: Option<IpAddr> = Some([198, 18, 1, 3].into());
        assert_eq!(
            s.offer(&probe(1, 22), other, 30 * SEC),
            Offered::Send,
            "another address"
        );
        assert_eq!(
            s.offer(&probe(1, 22), dst, 62 * SEC),
            Offered::Send,
            "a new window"
        );
    }

    #[test]
    fn the_rate_bounds_a_flood_and_refills() {
        let mut s = ProbeSignals::new(20, 50, Duration::from_secs(600));
        let sent = (0..1000u32)
            .filter(|i| {
                let p = Probe {
                    source: SourceKey::from_v4([198, 18, (i >> 8) as u8, *i as u8]),
                    ..probe(0, 22)
                };
                s.offer(&p, None, SEC) == Offered::Send
            })
            .count();
        assert_eq!(sent, 50, "the burst, then nothing within the same instant");
        assert_eq!(s.limited(), 950);
        // One second later: the rate's worth again.
        let later = (0..100u32)
            .filter(|i| {
                let p = Probe {
                    source: SourceKey::from_v4([198, 19, 0, *i as u8]),
                    ..probe(0, 22)
                };
                s.offer(&p, None, 2 * SEC) == Offered::Send
            })
            .count();
        assert_eq!(later, 20);
    }

    #[test]
    fn a_slot_reads_as_the_probe_it_holds() {
        let slot = FirstProbe {
            source: SourceKey::from_v4([198, 18, 0, 1]),
            seen_ns: 5,
            port: 22,
            proto: 6,
            traits: class::SYN as u8 | first::STACK_SYN | first::CREDIT | first::OPEN,
            ifindex: 3 | first::RETURNING,
        };
        let p = Probe::of_slot(&slot);
        assert_eq!((p.ifindex, p.port, p.kind), (3, 22, ScanKind::Connect));
        assert!(p.is_client());
        let r = record(&p, "server-a", "eth0", Some([198, 18, 1, 2].into()), 5);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["event"], "probe");
        assert_eq!(json["source"], "198.18.0.1");
        assert_eq!(json["destination"], "198.18.1.2");
        assert_eq!(json["proto"], "tcp");
        assert_eq!(json["port_state"], "open");
        assert_eq!(json["kind"], "connect");
    }
}
