//! The event model: what the daemon reports, one struct per kind of event.
//! How each is written is the formats' business ([`json`](super::json),
//! [`text`](super::text), [`journal`](super::journal), [`record`](super::record)).
//!
//! The JSON schema is a contract, documented in docs/events.md: fields are
//! added, never renamed (pinned by `json`'s tests against recorded events).

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::SystemTime,
};

use ipnet::IpNet;
use scanner_common::SourceKey;
use serde::{Deserialize, Serialize};

pub(crate) use crate::sinks::names::{
    Action, DaemonName, DecidedBy, InterfaceName, InterfaceReason, PolicyName, PolicyReason,
    PortName, ScanName,
};
use crate::{
    detect::ScanKind,
    kernel::{
        load::AttachedMode,
        policy::{Origin, net_name},
        protect::ProtectedBy,
    },
};

/// A scan detected (`scan_detected`) or over (`scan_ended`, with its totals).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ScanEvent {
    pub ts: String,
    pub event: ScanName,
    pub source: String,
    pub kind: ScanKind,
    pub ports: u32,
    pub probes: u32,
    pub top_ports: Vec<u16>,
    /// The most probed (protocol, port) pairs, as `tcp/22` or `udp/53`:
    /// `top_ports` with the protocol of each.
    pub top_probed: Vec<String>,
    pub iface: String,
    /// Probed ports that are open on this host (a sample of up to four).
    pub open_ports: Vec<u16>,
    /// How many distinct probed ports were open.
    pub open_hits: u32,
    /// Why the kernel decided.
    pub reason: DecidedBy,
    /// Distinct ports probed when the decision was made.
    pub decided_after: u32,
    /// Sources involved: 1, or the scanning sources of a distributed scan.
    pub sources: u32,
    /// `scan_detected`: microseconds from the deciding probe to this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// What the daemon does about it.
    pub action: Action,
    /// Why the source is never blocked; absent for other sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<ProtectedBy>,
    /// Every address of the decoy group this source belongs to (itself
    /// included): one scan sent from all of them (nmap `-D`). Absent for a
    /// source scanning alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoy_group: Option<Vec<String>>,
    /// Fragments other than the first seen from the source (fragmented
    /// probes' tails); absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fragments: Option<u32>,
    /// `scan_detected` of a blocked source: the TCP connections the host had
    /// open with it, which the block spares (their segments pass; new
    /// connections and probes are dropped). Absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spared_flows: Option<u32>,
    /// A slow scan's evidence (kind `slow`): the long record behind it.
    /// Absent for the kernel's decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow: Option<Box<SlowEvidence>>,
    /// `scan_ended`: every port the scan probed, as (protocol, first, last)
    /// ranges. Kept in the history only (`scanner history --port`): too
    /// long for a log line.
    #[serde(skip)]
    pub probed: Vec<(u8, u16, u16)>,
}

/// What the long memory decided a slow scan on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SlowEvidence {
    /// The first and latest probe of the record, RFC 3339.
    pub first_seen: String,
    pub last_seen: String,
    /// The window the record spans at most, e.g. `7d`.
    pub window: String,
    /// Distinct (protocol, port)s that were closed, and open.
    pub closed_ports: u32,
    pub open_ports: u32,
    /// The (protocol, port)s probed, by first probe, as `tcp/23` (up to 64).
    pub probed: Vec<String>,
    /// The addresses behind it (up to 32): the source, or the prefix's.
    pub addresses: Vec<String>,
}

/// The daemon itself: `daemon_started`, `daemon_stopped`, `config_reloaded`,
/// `config_rejected` (the old configuration stays).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DaemonEvent {
    pub ts: String,
    pub event: DaemonName,
    pub detail: String,
}

/// The program attached to (`attached`) or detached from (`detached`) an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InterfaceEvent {
    pub ts: String,
    pub event: InterfaceName,
    pub iface: String,
    pub mode: AttachedMode,
    /// Why, when the interface flapped; absent at start and stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<InterfaceReason>,
}

/// A source blocked (`blocked`), unblocked (`unblocked`), a block that
/// could not be made (`block_refused`), or the allowlist changed
/// (`allowlisted`, `disallowed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PolicyEvent {
    pub ts: String,
    pub event: PolicyName,
    pub source: String,
    /// Blocks: their origin; unblocks: `expired`, `manual`, `protected` or
    /// `crowdsec` (the decision was deleted); refusals: `cap`, `allowlist`
    /// or `protected`; allowlist changes: `manual`.
    pub reason: PolicyReason,
    /// Whose block it is (or was, or would have been). Absent for
    /// allowlist changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// Seconds the block lasts, when it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
    /// True when `--dry-run` only reports what it would have done.
    pub dry_run: bool,
}

impl PolicyEvent {
    fn now(
        event: PolicyName,
        net: &IpNet,
        reason: PolicyReason,
        origin: Option<Origin>,
        ttl_s: Option<u64>,
        dry_run: bool,
    ) -> Self {
        Self {
            ts: timestamp(SystemTime::now()),
            event,
            source: net_name(net),
            reason,
            origin,
            ttl_s,
            dry_run,
        }
    }

    /// `net` blocked by `origin` (which is also its reason), for `ttl_s`;
    /// `dry_run`: only said.
    pub(crate) fn blocked(net: &IpNet, origin: Origin, ttl_s: Option<u64>, dry_run: bool) -> Self {
        let reason = PolicyReason::from(origin);
        Self::now(
            PolicyName::Blocked,
            net,
            reason,
            Some(origin),
            ttl_s,
            dry_run,
        )
    }

    /// `origin`'s block on `net` lifted, for `reason`.
    pub(crate) fn unblocked(net: &IpNet, reason: PolicyReason, origin: Origin) -> Self {
        Self::now(
            PolicyName::Unblocked,
            net,
            reason,
            Some(origin),
            None,
            false,
        )
    }

    /// A block of `origin` on `net` that could not be made, for `reason`.
    pub(crate) fn refused(net: &IpNet, reason: PolicyReason, origin: Origin) -> Self {
        Self::now(
            PolicyName::BlockRefused,
            net,
            reason,
            Some(origin),
            None,
            false,
        )
    }

    /// `net` added to (`Allowlisted`) or removed from (`Disallowed`) the
    /// allowlist by an operator.
    pub(crate) fn allowlist(event: PolicyName, net: &IpNet) -> Self {
        Self::now(event, net, PolicyReason::Manual, None, None, false)
    }
}

/// A listening socket appeared (`port_opened`) or went away
/// (`port_closed`): what this host exposes changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PortEvent {
    pub ts: String,
    pub event: PortName,
    pub proto: Cow<'static, str>,
    pub port: u16,
    /// The bound address (`0.0.0.0` or `::`: every address).
    pub address: String,
    pub all_addresses: bool,
    /// Reachable from the network (not loopback only).
    pub exposed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Cow<'static, str>>,
    /// The audit's note on a commonly attacked service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<Cow<'static, str>>,
}

/// Any event. Untagged: each kind's `event` names tell them apart when read
/// back (`scanner top`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Event {
    Scan(ScanEvent),
    Interface(InterfaceEvent),
    Policy(PolicyEvent),
    Daemon(DaemonEvent),
    Port(PortEvent),
}

impl Event {
    /// The `event` field.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Scan(e) => e.event.as_str(),
            Self::Interface(e) => e.event.as_str(),
            Self::Policy(e) => e.event.as_str(),
            Self::Daemon(e) => e.event.as_str(),
            Self::Port(e) => e.event.as_str(),
        }
    }

    /// The `ts` field: when the event was made.
    pub(crate) fn ts(&self) -> &str {
        match self {
            Self::Scan(e) => &e.ts,
            Self::Interface(e) => &e.ts,
            Self::Policy(e) => &e.ts,
            Self::Daemon(e) => &e.ts,
            Self::Port(e) => &e.ts,
        }
    }
}

impl DaemonEvent {
    pub(crate) fn now(event: DaemonName, detail: impl Into<String>) -> Event {
        Event::Daemon(Self {
            ts: timestamp(SystemTime::now()),
            event,
            detail: detail.into(),
        })
    }
}

/// RFC 3339, UTC, milliseconds: `2026-11-25T14:42:17.123Z`.
pub(crate) fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The address a key stands for (IPv4-mapped keys are IPv4).
pub(crate) fn ip_of(key: &SourceKey) -> IpAddr {
    match key.as_v4() {
        Some(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
        None => IpAddr::V6(Ipv6Addr::from(key.addr)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The constructors make what the daemon wrote before they existed.
    #[test]
    fn policy_events_are_made_as_recorded() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let host = |s: &str| IpNet::from(s.parse::<IpAddr>().unwrap());
        let recorded = crate::sinks::json::tests::recorded();
        let made = [
            PolicyEvent::blocked(&host("198.18.5.5"), Origin::Manual, Some(7200), false),
            PolicyEvent::blocked(&host("198.18.0.1"), Origin::Scan, Some(3600), true),
            PolicyEvent::unblocked(&host("198.18.0.1"), PolicyReason::Manual, Origin::Scan),
            PolicyEvent::refused(&host("198.18.0.1"), PolicyReason::Cap, Origin::Scan),
            PolicyEvent::refused(
                &host("198.18.0.1"),
                PolicyReason::Allowlist,
                Origin::Crowdsec,
            ),
            PolicyEvent::allowlist(PolicyName::Allowlisted, &net("198.18.0.0/24")),
            PolicyEvent::allowlist(PolicyName::Disallowed, &net("198.18.0.0/24")),
        ];
        for mut event in made {
            let found = recorded.iter().any(|r| match r {
                Event::Policy(r) => {
                    event.ts.clone_from(&r.ts);
                    *r == event
                }
                _ => false,
            });
            assert!(found, "{event:?} is not as recorded");
        }
    }

    #[test]
    fn keys_turn_back_into_addresses() {
        assert_eq!(
            ip_of(&SourceKey::from_v4([198, 18, 0, 1])).to_string(),
            "198.18.0.1"
        );
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap_or(Ipv6Addr::UNSPECIFIED);
        assert_eq!(
            ip_of(&SourceKey::from_v6(v6.octets())).to_string(),
            "2001:db8::1"
        );
    }
}
