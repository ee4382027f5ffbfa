//! Events, as JSON lines or human text, on stdout, and to the systemd
//! journal with structured fields.
//!
//! The JSON schema is a contract: fields are added, never renamed.

use std::{
    io::{self, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::SystemTime,
};

use scanner_common::SourceKey;
use serde::Serialize;

use crate::sinks::{
    file::{EventsFile, OpenError},
    journal::{Journal, priority},
};

/// How events are written on stdout: human text, or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum EventFormat {
    Text,
    Json,
}

/// A scan detected (`scan_detected`) or over (`scan_ended`, with its totals).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ScanEvent {
    pub ts: String,
    pub event: &'static str,
    pub source: String,
    pub kind: &'static str,
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
    /// Why the kernel decided: `trw` (sequential test) or `fanout`.
    pub reason: &'static str,
    /// Distinct ports probed when the decision was made.
    pub decided_after: u32,
    /// Sources involved: 1, or the scanning sources of a distributed scan.
    pub sources: u32,
    /// `scan_detected`: microseconds from the deciding probe to this event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// What the daemon does about it: `report`, `block`, `dry_run`, or
    /// `protected` (it would block, but the source is never blocked).
    pub action: &'static str,
    /// Why the source is never blocked: `gateway`, `resolver` or
    /// `established`; absent for other sources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protected: Option<&'static str>,
    /// Every address of the decoy group this source belongs to (itself
    /// included): one scan sent from all of them (nmap `-D`). Absent for a
    /// source scanning alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoy_group: Option<Vec<String>>,
    /// Fragments other than the first seen from the source (fragmented
    /// probes' tails); absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fragments: Option<u32>,
    /// `scan_detected` of a blocked source: the TCP connections the host had
    /// open with it, which the block spares (their segments pass; new
    /// connections and probes are dropped). Absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spared_flows: Option<u32>,
    /// `scan_ended`: every port the scan probed, as (protocol, first, last)
    /// ranges. Kept in the history only (`scanner history --port`): too
    /// long for a log line.
    #[serde(skip)]
    pub probed: Vec<(u8, u16, u16)>,
}

/// The daemon itself: `daemon_started`, `daemon_stopped`, `config_reloaded`,
/// `config_rejected` (the old configuration stays), `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct DaemonEvent {
    pub ts: String,
    pub event: &'static str,
    pub detail: String,
}

/// The program attached to (`attached`) or detached from (`detached`) an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct InterfaceEvent {
    pub ts: String,
    pub event: &'static str,
    pub iface: String,
    pub mode: &'static str,
    /// `removed` (the interface went away) or `reappeared`; absent at start
    /// and stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// A source blocked (`blocked`), unblocked (`unblocked`), a block that
/// could not be made (`block_refused`), or the allowlist changed
/// (`allowlisted`, `disallowed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct PolicyEvent {
    pub ts: String,
    pub event: &'static str,
    pub source: String,
    /// `scan`, `manual` or `crowdsec` for blocks; `expired`, `manual`,
    /// `protected` or `crowdsec` (the decision was deleted) for unblocks;
    /// `cap` or `allowlist` for refusals; `manual` for allowlist changes.
    pub reason: &'static str,
    /// Whose block it is (or was, or would have been): `scan`, `manual` or
    /// `crowdsec`. Absent for allowlist changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<&'static str>,
    /// Seconds the block lasts, when it expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
    /// True when `--dry-run` only reports what it would have done.
    pub dry_run: bool,
}

/// A listening socket appeared (`port_opened`) or went away
/// (`port_closed`): what this host exposes changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct PortEvent {
    pub ts: String,
    pub event: &'static str,
    pub proto: &'static str,
    pub port: u16,
    /// The bound address (`0.0.0.0` or `::`: every address).
    pub address: String,
    pub all_addresses: bool,
    /// Reachable from the network (not loopback only).
    pub exposed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<&'static str>,
    /// The audit's note on a commonly attacked service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
            Self::Scan(e) => e.event,
            Self::Interface(e) => e.event,
            Self::Policy(e) => e.event,
            Self::Daemon(e) => e.event,
            Self::Port(e) => e.event,
        }
    }
}

impl DaemonEvent {
    pub(crate) fn now(event: &'static str, detail: impl Into<String>) -> Event {
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

/// Writes events in the chosen format, one line each, flushed at once so a
/// reader sees a detection the moment it is made; and to the journal, when
/// one is connected.
pub(crate) struct Reporter<W: Write> {
    format: EventFormat,
    /// None once writing to it failed (a closed pipe): events then go to
    /// the journal only.
    out: Option<W>,
    journal: Option<Journal>,
    /// Every event as a JSON line in `--events-file`.
    file: Option<EventsFile>,
    /// The latest events, for `scanner top`.
    recent: std::collections::VecDeque<Event>,
    /// Every event also goes into the history file, when it is kept.
    history: Option<crate::history::writer::Writer>,
}

/// Events kept for `scanner top`.
pub(crate) const RECENT_EVENTS: usize = 50;

impl<W: Write> Reporter<W> {
    pub(crate) fn new(format: EventFormat, out: W) -> Self {
        Self {
            format,
            out: Some(out),
            journal: None,
            file: None,
            recent: std::collections::VecDeque::with_capacity(RECENT_EVENTS),
            history: None,
        }
    }

    /// Also records every event in the history file.
    pub(crate) fn with_history(mut self, history: Option<crate::history::writer::Writer>) -> Self {
        self.history = history;
        self
    }

    /// The history writer, when history is kept.
    pub(crate) fn history(&self) -> Option<&crate::history::writer::Writer> {
        self.history.as_ref()
    }

    /// Also sends every event to `journal`.
    pub(crate) fn with_journal(mut self, journal: Option<Journal>) -> Self {
        self.journal = journal;
        self
    }

    /// Also appends every event, as a JSON line, to `file`.
    pub(crate) fn with_file(mut self, file: Option<EventsFile>) -> Self {
        self.file = file;
        self
    }

    /// Opens the events file again (SIGHUP, after a rotation); what failed
    /// is returned and the old file kept.
    pub(crate) fn reopen_file(&mut self) -> Result<(), OpenError> {
        match &mut self.file {
            Some(file) => file.reopen(),
            None => Ok(()),
        }
    }

    /// The latest events, oldest first.
    pub(crate) fn recent(&self) -> impl Iterator<Item = &Event> {
        self.recent.iter()
    }

    /// Whether events still reach anyone: stdout, the journal or the
    /// events file.
    pub(crate) fn has_sink(&self) -> bool {
        self.out.is_some() || self.journal.is_some() || self.file.is_some()
    }

    /// Records `event` for `scanner top` and writes it to every sink. A sink
    /// that fails is dropped, said once in the log: a closed stdout or a
    /// journal gone away never stops detection.
    pub(crate) fn emit(&mut self, event: &Event) {
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(event.clone());
        // The JSON line, made once for the history, the events file and
        // JSON on stdout (and not at all for text alone).
        let wanted = self.history.is_some()
            || self.file.is_some()
            || (self.out.is_some() && self.format == EventFormat::Json);
        let json = if wanted {
            serde_json::to_string(event).unwrap_or_default()
        } else {
            String::new()
        };
        if let Some(history) = &self.history {
            history.send(crate::history::Record::Event(history_row(event, &json)));
        }
        if let Some(journal) = &self.journal {
            let (prio, message, fields) = journal_entry(event);
            // A journal that went away must not stop detection: say so once
            // on stderr and keep the stdout stream.
            if let Err(e) = journal.send(prio, &message, &fields) {
                tracing::error!(socket = %journal.path().display(), "journal write failed, events go to stdout only: {e}");
                self.journal = None;
            }
        }
        if let Some(file) = &mut self.file {
            file.append(format!("{json}\n").as_bytes());
        }
        if let Some(out) = &mut self.out
            && let Err(e) = write_line(out, self.format, event, &json)
        {
            let also = if self.journal.is_some() {
                "events go to the journal only"
            } else {
                "no event sink is left"
            };
            tracing::error!("writing events to stdout failed ({e}): {also}");
            self.out = None;
        }
    }
}

/// An event as the history stores it: its JSON line, and the fields
/// queries filter on.
fn history_row(event: &Event, json: &str) -> crate::history::EventRow {
    let (source, kind, proto, port, probed) = match event {
        Event::Scan(e) => (
            Some(e.source.clone()),
            Some(e.kind.to_owned()),
            None,
            None,
            e.probed.clone(),
        ),
        Event::Policy(e) => (Some(e.source.clone()), None, None, None, Vec::new()),
        Event::Port(e) => (
            None,
            None,
            Some(e.proto.to_owned()),
            Some(e.port),
            Vec::new(),
        ),
        Event::Interface(_) | Event::Daemon(_) => (None, None, None, None, Vec::new()),
    };
    crate::history::EventRow {
        id: 0,
        ts_ms: crate::history::unix_ms(SystemTime::now()),
        event: event.name().to_owned(),
        source,
        kind,
        proto,
        port,
        json: json.to_owned(),
        probed,
    }
}

/// The text line's top ports: numbers when every one is TCP, else each
/// with its protocol (`udp/53`).
fn top_text(e: &ScanEvent) -> String {
    if e.top_ports.is_empty() {
        return "-".to_owned();
    }
    if e.top_probed.iter().all(|p| p.starts_with("tcp/")) {
        return e
            .top_ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
    }
    e.top_probed.join(",")
}

/// One line on stdout: `json` (the event's JSON) or the text line.
fn write_line(
    out: &mut impl Write,
    format: EventFormat,
    event: &Event,
    json: &str,
) -> io::Result<()> {
    match format {
        EventFormat::Json => writeln!(out, "{json}")?,
        EventFormat::Text => writeln!(out, "{}", text(event))?,
    }
    out.flush()
}

/// Ports as `22,80,443`.
pub(crate) fn comma_list(ports: &[u16]) -> String {
    let v: Vec<String> = ports.iter().map(u16::to_string).collect();
    v.join(",")
}

/// An event as a journal entry: priority, a one-line MESSAGE, and fields.
pub(crate) fn journal_entry(event: &Event) -> (u8, String, Vec<(&'static str, String)>) {
    let mut fields = Vec::with_capacity(12);
    let (prio, message) = match event {
        Event::Scan(e) => {
            fields.extend([
                ("SCANNER_EVENT", e.event.to_owned()),
                ("SCANNER_SOURCE", e.source.clone()),
                ("SCANNER_KIND", e.kind.to_owned()),
                ("SCANNER_PORTS", e.ports.to_string()),
                ("SCANNER_PROBES", e.probes.to_string()),
                ("SCANNER_TOP_PORTS", comma_list(&e.top_ports)),
                ("SCANNER_TOP_PROBED", e.top_probed.join(",")),
                ("SCANNER_OPEN_PORTS", comma_list(&e.open_ports)),
                ("SCANNER_IFACE", e.iface.clone()),
                ("SCANNER_ACTION", e.action.to_owned()),
                ("SCANNER_REASON", e.reason.to_owned()),
                ("SCANNER_SOURCES", e.sources.to_string()),
            ]);
            if let Some(why) = e.protected {
                fields.push(("SCANNER_PROTECTED", why.to_owned()));
            }
            if let Some(group) = &e.decoy_group {
                fields.push(("SCANNER_DECOY_GROUP", group.join(",")));
            }
            if let Some(n) = e.fragments {
                fields.push(("SCANNER_FRAGMENTS", n.to_string()));
            }
            if let Some(n) = e.spared_flows {
                fields.push(("SCANNER_SPARED_FLOWS", n.to_string()));
            }
            if e.event == "scan_detected" {
                let message = format!(
                    "port scan detected from {}: {} scan of {} ports ({} probes) on {}, top ports {}; action {}",
                    e.source,
                    e.kind,
                    e.ports,
                    e.probes,
                    e.iface,
                    comma_list(&e.top_ports),
                    e.action
                );
                (priority::WARNING, message)
            } else {
                let message = format!(
                    "port scan from {} ended: {} ports, {} probes",
                    e.source, e.ports, e.probes
                );
                (priority::INFO, message)
            }
        }
        Event::Policy(e) => {
            let action = match (e.event, e.dry_run) {
                ("blocked", true) => "would_block",
                ("blocked", false) => "block",
                ("unblocked", _) => "unblock",
                ("allowlisted", _) => "allow",
                ("disallowed", _) => "disallow",
                _ => "block_refused",
            };
            fields.extend([
                ("SCANNER_EVENT", e.event.to_owned()),
                ("SCANNER_SOURCE", e.source.clone()),
                ("SCANNER_ACTION", action.to_owned()),
                ("SCANNER_REASON", e.reason.to_owned()),
            ]);
            if let Some(ttl) = e.ttl_s {
                fields.push(("SCANNER_TTL_S", ttl.to_string()));
            }
            if let Some(origin) = e.origin {
                fields.push(("SCANNER_ORIGIN", origin.to_owned()));
            }
            let ttl = e.ttl_s.map(|t| format!(" for {t}s")).unwrap_or_default();
            let prio = if action == "block_refused" {
                priority::ERR
            } else {
                priority::NOTICE
            };
            let message = match action {
                "would_block" => format!("dry run: would block {}{ttl}", e.source),
                "block" => format!("blocked {} ({}){ttl}", e.source, e.reason),
                "unblock" => format!("unblocked {} ({})", e.source, e.reason),
                "allow" => format!("allowlisted {} ({})", e.source, e.reason),
                "disallow" => format!("removed {} from the allowlist ({})", e.source, e.reason),
                _ => format!("could not block {} ({})", e.source, e.reason),
            };
            (prio, message)
        }
        Event::Interface(e) => {
            fields.extend([
                ("SCANNER_EVENT", e.event.to_owned()),
                ("SCANNER_IFACE", e.iface.clone()),
                ("SCANNER_MODE", e.mode.to_owned()),
            ]);
            let reason = e.reason.map(|r| format!(" ({r})")).unwrap_or_default();
            let prio = if e.reason == Some("removed") {
                priority::WARNING
            } else {
                priority::NOTICE
            };
            (
                prio,
                format!("{} {} in {} mode{reason}", e.event, e.iface, e.mode),
            )
        }
        Event::Port(e) => {
            fields.extend([
                ("SCANNER_EVENT", e.event.to_owned()),
                ("SCANNER_PROTO", e.proto.to_owned()),
                ("SCANNER_PORT", e.port.to_string()),
                ("SCANNER_ADDRESS", e.address.clone()),
            ]);
            if let Some(p) = &e.process {
                fields.push(("SCANNER_PROCESS", p.clone()));
            }
            if let Some(r) = e.risk {
                fields.push(("SCANNER_RISK", r.to_owned()));
            }
            let what = if e.event == "port_opened" {
                "now listening"
            } else {
                "no longer listening"
            };
            let by = e
                .process
                .as_ref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default();
            let risk = e.risk.map(|r| format!(": {r}")).unwrap_or_default();
            // A commonly attacked service newly reachable on every address
            // is what an admin must hear about first.
            let prio = if e.event == "port_opened" && e.risk.is_some() && e.all_addresses {
                priority::WARNING
            } else {
                priority::NOTICE
            };
            (
                prio,
                format!("{}/{} on {}{by} {what}{risk}", e.proto, e.port, e.address),
            )
        }
        Event::Daemon(e) => {
            fields.push(("SCANNER_EVENT", e.event.to_owned()));
            let prio = match e.event {
                "config_rejected" | "error" => priority::ERR,
                _ => priority::NOTICE,
            };
            let what = e.event.replace('_', " ");
            (prio, format!("{what}: {}", e.detail))
        }
    };
    (prio, message, fields)
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
                if ports.is_empty() {
                    "-".to_owned()
                } else {
                    comma_list(ports)
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
            let protected = e
                .protected
                .map(|why| format!(" protected={why}"))
                .unwrap_or_default();
            let decoys = e
                .decoy_group
                .as_ref()
                .map(|g| format!(" decoy_group={}", g.join(",")))
                .unwrap_or_default();
            let spared = e
                .spared_flows
                .map(|n| format!(" spared_flows={n}"))
                .unwrap_or_default();
            format!(
                "{} {what} {} kind={}{decided} ports={} probes={} top_ports={} open={}{sources} iface={}{protected}{decoys}{spared}",
                e.ts,
                e.source,
                e.kind,
                e.ports,
                e.probes,
                top_text(e),
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
                ("allowlisted", _) => "allowlisted  ",
                ("disallowed", _) => "disallowed   ",
                _ => "BLOCK REFUSED",
            };
            let ttl = e.ttl_s.map(|t| format!(" ttl={t}s")).unwrap_or_default();
            format!("{} {what} {} reason={}{ttl}", e.ts, e.source, e.reason)
        }
        Event::Daemon(e) => format!("{} {} {}", e.ts, e.event, e.detail),
        Event::Port(e) => {
            let process = e
                .process
                .as_ref()
                .map(|p| format!(" process={p}"))
                .unwrap_or_default();
            let risk = e.risk.map(|r| format!(" risk=\"{r}\"")).unwrap_or_default();
            format!(
                "{} {} {}/{} address={}{process}{risk}",
                e.ts, e.event, e.proto, e.port, e.address
            )
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
            top_probed: vec!["tcp/22".into(), "tcp/80".into()],
            iface: "eth1".into(),
            open_ports: vec![22],
            open_hits: 1,
            reason: "trw",
            decided_after: 4,
            sources: 1,
            latency_us: Some(850),
            action: "block",
            protected: None,
            decoy_group: None,
            fragments: None,
            spared_flows: None,
            probed: vec![(6, 1, 1000)],
        })
    }

    #[test]
    fn json_lines_follow_the_schema() {
        let mut r = Reporter::new(EventFormat::Json, Vec::new());
        r.emit(&scan());
        let line = String::from_utf8(r.out.unwrap_or_default()).unwrap_or_default();
        assert!(line.ends_with('\n') && line.lines().count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(v["ts"], "2025-11-25T14:42:17.123Z");
        assert_eq!(v["event"], "scan_detected");
        assert_eq!(v["source"], "198.18.0.1");
        assert_eq!(v["kind"], "syn");
        assert_eq!(v["ports"], 1000);
        assert_eq!(v["probes"], 1000);
        assert_eq!(v["top_ports"], serde_json::json!([22, 80]));
        assert_eq!(v["top_probed"], serde_json::json!(["tcp/22", "tcp/80"]));
        assert!(v.get("probed").is_none(), "the ranges are the history's");
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
        r.emit(&scan());
        let line = String::from_utf8(r.out.unwrap_or_default()).unwrap_or_default();
        assert_eq!(
            line,
            "2025-11-25T14:42:17.123Z SCAN DETECTED 198.18.0.1 kind=syn decided_after=4 ports=1000 probes=1000 top_ports=22,80 open=22 iface=eth1\n"
        );
        let Event::Scan(mut udp) = scan() else {
            unreachable!()
        };
        udp.top_ports = vec![53, 161];
        udp.top_probed = vec!["udp/53".into(), "udp/161".into()];
        assert!(
            line_of(&Event::Scan(udp)).contains(" top_ports=udp/53,udp/161 "),
            "a UDP scan's ports say so"
        );
    }

    fn line_of(event: &Event) -> String {
        let mut r = Reporter::new(EventFormat::Text, Vec::new());
        r.emit(event);
        String::from_utf8(r.out.unwrap_or_default()).unwrap_or_default()
    }

    /// A writer whose reader has gone, like a closed pipe.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_stdout_is_dropped_and_events_still_recorded() {
        let mut r = Reporter::new(EventFormat::Json, Closed);
        assert!(r.has_sink());
        r.emit(&scan());
        assert!(!r.has_sink(), "the closed stdout is gone");
        r.emit(&scan());
        assert_eq!(r.recent().count(), 2, "scanner top still sees them");
    }

    #[test]
    fn detections_are_journal_warnings_with_fields() {
        let (prio, message, fields) = journal_entry(&scan());
        assert_eq!(prio, priority::WARNING);
        assert!(!message.contains('\n'));
        assert!(message.contains("198.18.0.1"), "{message}");
        let get = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("SCANNER_EVENT"), Some("scan_detected"));
        assert_eq!(get("SCANNER_SOURCE"), Some("198.18.0.1"));
        assert_eq!(get("SCANNER_KIND"), Some("syn"));
        assert_eq!(get("SCANNER_PORTS"), Some("1000"));
        assert_eq!(get("SCANNER_PROBES"), Some("1000"));
        assert_eq!(get("SCANNER_TOP_PORTS"), Some("22,80"));
        assert_eq!(get("SCANNER_TOP_PROBED"), Some("tcp/22,tcp/80"));
        assert_eq!(get("SCANNER_IFACE"), Some("eth1"));
        assert_eq!(get("SCANNER_ACTION"), Some("block"));
    }

    #[test]
    fn a_risky_port_newly_open_to_all_is_a_warning() {
        let port = |event, address: &str, all, risk| {
            Event::Port(PortEvent {
                ts: String::new(),
                event,
                proto: "tcp",
                port: 23,
                address: address.into(),
                all_addresses: all,
                exposed: true,
                process: Some("telnetd".into()),
                pid: Some(7),
                service: Some("telnet"),
                risk,
            })
        };
        let telnet = Some("Telnet: clear-text logins");
        let (prio, message, fields) = journal_entry(&port("port_opened", "0.0.0.0", true, telnet));
        assert_eq!(prio, priority::WARNING);
        assert!(
            message.contains("tcp/23 on 0.0.0.0 (telnetd) now listening"),
            "{message}"
        );
        assert!(fields.contains(&("SCANNER_PORT", "23".into())));
        assert!(fields.contains(&("SCANNER_RISK", "Telnet: clear-text logins".into())));
        let (prio, _, _) = journal_entry(&port("port_opened", "198.18.0.2", false, telnet));
        assert_eq!(prio, priority::NOTICE, "one address only");
        let (prio, _, _) = journal_entry(&port("port_closed", "0.0.0.0", true, telnet));
        assert_eq!(prio, priority::NOTICE);
        let (prio, _, _) = journal_entry(&port("port_opened", "0.0.0.0", true, None));
        assert_eq!(prio, priority::NOTICE, "no known risk");
        let json = serde_json::to_value(port("port_opened", "::", true, telnet)).unwrap();
        assert_eq!(
            (json["event"].as_str(), json["pid"].as_u64()),
            (Some("port_opened"), Some(7))
        );
    }

    #[test]
    fn blocks_are_notices_and_refusals_errors() {
        let block = |event, dry_run| {
            Event::Policy(PolicyEvent {
                ts: String::new(),
                event,
                source: "198.18.0.1".into(),
                reason: "crowdsec",
                origin: Some("crowdsec"),
                ttl_s: Some(60),
                dry_run,
            })
        };
        let (prio, _, fields) = journal_entry(&block("blocked", false));
        assert_eq!(prio, priority::NOTICE);
        assert!(fields.contains(&("SCANNER_ORIGIN", "crowdsec".into())));
        assert!(fields.contains(&("SCANNER_ACTION", "block".into())));
        assert!(fields.contains(&("SCANNER_TTL_S", "60".into())));
        let (_, _, fields) = journal_entry(&block("blocked", true));
        assert!(fields.contains(&("SCANNER_ACTION", "would_block".into())));
        let (prio, _, _) = journal_entry(&block("block_refused", false));
        assert_eq!(prio, priority::ERR);
        let (prio, message, _) = journal_entry(&DaemonEvent::now("config_rejected", "bad"));
        assert_eq!(
            (prio, message.as_str()),
            (priority::ERR, "config rejected: bad")
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
