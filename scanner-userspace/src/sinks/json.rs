//! The JSON line: one event as one JSON object (`--events json`, the
//! events file, the history, `scanner top`). Its schema is the contract
//! docs/events.md describes; the tests pin it against recorded events.

use crate::sinks::event::Event;

/// The event's JSON object, on one line, without its newline.
pub(crate) fn line(event: &Event) -> String {
    // Plain structs of strings and numbers: serialising cannot fail.
    serde_json::to_string(event).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{
        collections::HashSet,
        time::{Duration, UNIX_EPOCH},
    };

    use super::*;
    use crate::{
        detect::ScanKind,
        sinks::event::{
            Action, DaemonName, DecidedBy, InterfaceName, PolicyName, PortName, ScanEvent,
            ScanName, timestamp,
        },
    };

    /// Events as the daemon wrote them: a real run's stdout (a scan,
    /// blocks, the allowlist, a port opened and closed), then one of every
    /// other name and shape, as serialised before the fields were typed.
    const RECORDED: &str = include_str!("../../testdata/events.jsonl");

    pub(crate) fn recorded() -> Vec<Event> {
        RECORDED
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    pub(crate) fn scan() -> Event {
        Event::Scan(ScanEvent {
            ts: timestamp(UNIX_EPOCH + Duration::from_millis(1_764_081_737_123)),
            event: ScanName::Detected,
            source: "198.18.0.1".into(),
            kind: ScanKind::Syn,
            ports: 1000,
            probes: 1000,
            top_ports: vec![22, 80],
            top_probed: vec!["tcp/22".into(), "tcp/80".into()],
            iface: "eth1".into(),
            open_ports: vec![22],
            open_hits: 1,
            reason: DecidedBy::Trw,
            decided_after: 4,
            sources: 1,
            latency_us: Some(850),
            action: Action::Block,
            protected: None,
            decoy_group: None,
            fragments: None,
            spared_flows: None,
            slow: None,
            probed: vec![(6, 1, 1000)],
        })
    }

    /// Each recorded line reads back into its event and is written again
    /// byte for byte: names, field order, absent and null fields.
    #[test]
    fn recorded_events_are_written_byte_for_byte() {
        for (recorded, event) in RECORDED.lines().zip(recorded()) {
            assert_eq!(line(&event), recorded);
        }
    }

    /// The recording has every event name, so each one is pinned.
    #[test]
    fn the_recording_has_every_event() {
        let seen: HashSet<&str> = recorded().iter().map(Event::name).collect();
        let every = ScanName::ALL
            .iter()
            .map(|n| n.as_str())
            .chain(InterfaceName::ALL.iter().map(|n| n.as_str()))
            .chain(PolicyName::ALL.iter().map(|n| n.as_str()))
            .chain(DaemonName::ALL.iter().map(|n| n.as_str()))
            .chain(PortName::ALL.iter().map(|n| n.as_str()));
        for name in every {
            assert!(seen.contains(name), "no recorded {name}");
        }
    }

    #[test]
    fn json_lines_follow_the_schema() {
        let line = line(&scan());
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(v["ts"], "2025-11-25T14:42:17.123Z");
        assert_eq!(v["event"], "scan_detected");
        assert_eq!(v["kind"], "syn");
        assert_eq!(v["top_probed"], serde_json::json!(["tcp/22", "tcp/80"]));
        assert!(v.get("probed").is_none(), "the ranges are the history's");
        assert_eq!(v["reason"], "trw");
        assert_eq!(v["action"], "block");
        assert_eq!(v["latency_us"], 850);
    }
}
