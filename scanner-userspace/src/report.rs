//! Events, as JSON lines or human text, on stdout.
//!
//! The JSON schema is a contract: fields are added, never renamed.

use std::{
    io::{self, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::SystemTime,
};

use scanner_common::SourceKey;
use serde::Serialize;

use crate::cli::EventFormat;

/// A scan detected (`scan_detected`) or over (`scan_ended`, with its totals).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanEvent {
    pub ts: String,
    pub event: &'static str,
    pub source: String,
    pub kind: &'static str,
    pub ports: u32,
    pub probes: u32,
    pub top_ports: Vec<u16>,
    pub iface: String,
    /// Probed ports that are open on this host (a sample of up to four).
    pub open_ports: Vec<u16>,
    /// How many distinct probed ports were open.
    pub open_hits: u32,
    /// Why the kernel decided: `trw` (sequential test) or `fanout`.
    pub reason: &'static str,
    /// Distinct ports probed when the decision was made.
    pub decided_after: u32,
    /// Sources involved: 1, or the scanning sources of a distributed scan.
    pub sources: u32,
    /// `scan_detected`: microseconds from the deciding probe to this event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
}

/// The program attached to (`attached`) or detached from (`detached`) an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfaceEvent {
    pub ts: String,
    pub event: &'static str,
    pub iface: String,
    pub mode: &'static str,
    /// `removed` (the interface went away) or `reappeared`; absent at start
    /// and stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// A source blocked (`blocked`), unblocked (`unblocked`), or a block that
/// could not be made (`block_refused`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyEvent {
    pub ts: String,
    pub event: &'static str,
    pub source: String,
    /// `scan` or `manual` for blocks; `expired` or `manual` for unblocks;
    /// `cap` or `allowlisted` for refusals.
    pub reason: &'static str,
    /// Seconds the block lasts, when it expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
    /// True when `--dry-run` only reports what it would have done.
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Event {
    Scan(ScanEvent),
    Interface(InterfaceEvent),
    Policy(PolicyEvent),
}

/// An address for a host network (`/32`, `/128`), else the CIDR.
pub fn net_name(net: &ipnet::IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// RFC 3339, UTC, milliseconds: `2026-11-25T14:42:17.123Z`.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The address a key stands for (IPv4-mapped keys are IPv4).
pub fn ip_of(key: &SourceKey) -> IpAddr {
    match key.as_v4() {
        Some(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
        None => IpAddr::V6(Ipv6Addr::from(key.addr)),
    }
}

/// Writes events in the chosen format, one line each, flushed at once so a
/// reader sees a detection the moment it is made.
pub struct Reporter<W: Write> {
    format: EventFormat,
    out: W,
}

impl<W: Write> Reporter<W> {
    pub fn new(format: EventFormat, out: W) -> Self {
        Self { format, out }
    }

    pub fn emit(&mut self, event: &Event) -> io::Result<()> {
        match self.format {
            EventFormat::Json => {
                serde_json::to_writer(&mut self.out, event)?;
                writeln!(self.out)?;
            }
            EventFormat::Text => writeln!(self.out, "{}", text(event))?,
        }
        self.out.flush()
    }
}

fn text(event: &Event) -> String {
    match event {
        Event::Scan(e) => {
            let what = match e.event {
                "scan_detected" => "SCAN DETECTED",
                "scan_ended" => "scan ended   ",
                other => other,
            };
            let list = |ports: &[u16]| {
                let v: Vec<String> = ports.iter().map(u16::to_string).collect();
                if v.is_empty() {
                    "-".to_owned()
                } else {
                    v.join(",")
                }
            };
            let sources = if e.sources > 1 {
                format!(" sources={}", e.sources)
            } else {
                String::new()
            };
            let decided = if e.event == "scan_detected" {
                format!(" decided_after={}", e.decided_after)
            } else {
                String::new()
            };
            format!(
                "{} {what} {} kind={}{decided} ports={} probes={} top_ports={} open={}{sources} iface={}",
                e.ts,
                e.source,
                e.kind,
                e.ports,
                e.probes,
                list(&e.top_ports),
                list(&e.open_ports),
                e.iface
            )
        }
        Event::Interface(e) => {
            let reason = e.reason.map(|r| format!(" ({r})")).unwrap_or_default();
            format!("{} {} {} mode={}{reason}", e.ts, e.event, e.iface, e.mode)
        }
        Event::Policy(e) => {
            let what = match (e.event, e.dry_run) {
                ("blocked", true) => "WOULD BLOCK  ",
                ("blocked", false) => "BLOCKED      ",
                ("unblocked", _) => "unblocked    ",
                _ => "BLOCK REFUSED",
            };
            let ttl = e.ttl_s.map(|t| format!(" ttl={t}s")).unwrap_or_default();
            format!("{} {what} {} reason={}{ttl}", e.ts, e.source, e.reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn scan() -> Event {
        Event::Scan(ScanEvent {
            ts: timestamp(UNIX_EPOCH + Duration::from_millis(1_764_081_737_123)),
            event: "scan_detected",
            source: "198.18.0.1".into(),
            kind: "syn",
            ports: 1000,
            probes: 1000,
            top_ports: vec![22, 80],
            iface: "eth1".into(),
            open_ports: vec![22],
            open_hits: 1,
            reason: "trw",
            decided_after: 4,
            sources: 1,
            latency_us: Some(850),
        })
    }

    #[test]
    fn json_lines_follow_the_schema() {
        let mut r = Reporter::new(EventFormat::Json, Vec::new());
        r.emit(&scan()).ok();
        let line = String::from_utf8(r.out).unwrap_or_default();
        assert!(line.ends_with('\n') && line.lines().count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(v["ts"], "2025-11-25T14:42:17.123Z");
        assert_eq!(v["event"], "scan_detected");
        assert_eq!(v["source"], "198.18.0.1");
        assert_eq!(v["kind"], "syn");
        assert_eq!(v["ports"], 1000);
        assert_eq!(v["probes"], 1000);
        assert_eq!(v["top_ports"], serde_json::json!([22, 80]));
        assert_eq!(v["iface"], "eth1");
        assert_eq!(v["open_ports"], serde_json::json!([22]));
        assert_eq!(v["open_hits"], 1);
        assert_eq!(v["reason"], "trw");
        assert_eq!(v["decided_after"], 4);
        assert_eq!(v["sources"], 1);
        assert_eq!(v["latency_us"], 850);
    }

    #[test]
    fn text_is_one_readable_line() {
        let mut r = Reporter::new(EventFormat::Text, Vec::new());
        r.emit(&scan()).ok();
        let line = String::from_utf8(r.out).unwrap_or_default();
        assert_eq!(
            line,
            "2025-11-25T14:42:17.123Z SCAN DETECTED 198.18.0.1 kind=syn decided_after=4 ports=1000 probes=1000 top_ports=22,80 open=22 iface=eth1\n"
        );
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
