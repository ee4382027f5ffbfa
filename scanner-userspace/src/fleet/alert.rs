//! Detections as Local API alerts (`POST /v1/alerts`, a JSON array): the
//! fields crowdsec 1.4.6 requires, the scan's figures as event meta, and a
//! ban decision when this daemon blocked the source.

use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use serde::Serialize;

use crate::sinks::text::comma_list;

/// Scenario of a single source's scan.
pub(crate) const PORT_SCAN: &str = "scanner/port-scan";
/// Scenario of a scan spread over a prefix.
pub(crate) const DISTRIBUTED_SCAN: &str = "scanner/distributed-scan";
/// Scenario of a slow scan (the long memory's decision), a source's or a
/// prefix's.
pub(crate) const SLOW_SCAN: &str = "scanner/slow-scan";
/// The decisions' origin. `crowdsec` is what `cscli alerts list` and
/// `cscli decisions list` show without `-a`.
pub(crate) const ORIGIN: &str = "crowdsec";

/// What a detection tells the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Detection {
    /// The source, or the prefix of a distributed scan.
    pub(crate) source: IpNet,
    pub(crate) kind: &'static str,
    pub(crate) ports: u32,
    pub(crate) probes: u32,
    pub(crate) top_ports: Vec<u16>,
    pub(crate) started: SystemTime,
    pub(crate) decided: SystemTime,
    /// The block this daemon made, and for how long: every bouncer of the
    /// fleet gets the same ban. None when it did not block (report only,
    /// dry run, a protected source, a prefix).
    pub(crate) ban: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Alert {
    pub(crate) scenario: &'static str,
    pub(crate) scenario_hash: &'static str,
    pub(crate) scenario_version: &'static str,
    pub(crate) message: String,
    pub(crate) events_count: i32,
    pub(crate) capacity: i32,
    pub(crate) leakspeed: &'static str,
    pub(crate) simulated: bool,
    pub(crate) remediation: bool,
    pub(crate) start_at: String,
    pub(crate) stop_at: String,
    pub(crate) source: Source,
    pub(crate) events: Vec<Event>,
    pub(crate) decisions: Vec<Decision>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Source {
    /// `Ip` or `Range`.
    pub(crate) scope: &'static str,
    pub(crate) value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) range: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Event {
    pub(crate) timestamp: String,
    pub(crate) meta: Vec<Meta>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Meta {
    pub(crate) key: &'static str,
    pub(crate) value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Decision {
    pub(crate) origin: &'static str,
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) scope: &'static str,
    pub(crate) value: String,
    pub(crate) duration: String,
    pub(crate) scenario: &'static str,
}

/// The event meta key of the id an alert carries from the outbox (see
/// `fleet::outbox`): how a push whose answer was lost is found again.
pub(crate) const ALERT_ID_KEY: &str = "scanner_alert_id";

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Alert {
    /// The alert carrying `id` in its event's meta.
    pub(crate) fn with_id(mut self, id: String) -> Self {
        if let Some(e) = self.events.first_mut() {
            e.meta.push(Meta {
                key: ALERT_ID_KEY,
                value: id,
            });
        }
        self
    }

    pub(crate) fn of(d: &Detection) -> Self {
        let host = d.source.prefix_len() == d.source.max_prefix_len();
        let (scenario, scope) = match (host, d.kind == crate::detect::ScanKind::Slow.as_str()) {
            (true, false) => (PORT_SCAN, "Ip"),
            (false, false) => (DISTRIBUTED_SCAN, "Range"),
            (true, true) => (SLOW_SCAN, "Ip"),
            (false, true) => (SLOW_SCAN, "Range"),
        };
        let value = if host {
            d.source.addr().to_string()
        } else {
            d.source.to_string()
        };
        let stop_at = rfc3339(d.decided);
        Self {
            scenario,
            scenario_hash: "",
            scenario_version: "",
            message: format!(
                "{value} performed '{scenario}' ({} scan, {} ports, {} probes) at {stop_at}",
                d.kind, d.ports, d.probes
            ),
            events_count: i32::try_from(d.probes).unwrap_or(i32::MAX),
            capacity: 0,
            leakspeed: "0",
            simulated: false,
            // The decision, if any, comes with the alert: the Local API's
            // profiles must not add one of their own.
            remediation: false,
            start_at: rfc3339(d.started),
            stop_at: stop_at.clone(),
            source: Source {
                scope,
                value: value.clone(),
                ip: host.then(|| value.clone()),
                range: (!host).then(|| value.clone()),
            },
            events: vec![Event {
                timestamp: stop_at,
                meta: vec![
                    Meta {
                        key: "kind",
                        value: d.kind.to_owned(),
                    },
                    Meta {
                        key: "ports",
                        value: d.ports.to_string(),
                    },
                    Meta {
                        key: "top_ports",
                        value: comma_list(&d.top_ports),
                    },
                ],
            }],
            decisions: d
                .ban
                .map(|ttl| Decision {
                    origin: ORIGIN,
                    kind: "ban",
                    scope,
                    value,
                    duration: format!("{}s", ttl.as_secs().max(1)),
                    scenario,
                })
                .into_iter()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn detection(source: &str, ban: Option<Duration>) -> Detection {
        Detection {
            source: source.parse().unwrap(),
            kind: "syn",
            ports: 4,
            probes: 5,
            top_ports: vec![22, 80],
            started: UNIX_EPOCH + Duration::from_secs(1_795_667_542),
            decided: UNIX_EPOCH + Duration::from_secs(1_795_667_572),
            ban,
        }
    }

    #[test]
    fn a_blocked_source_is_an_alert_with_a_ban() {
        let a = Alert::of(&detection("198.18.0.1/32", Some(Duration::from_secs(3600))));
        let v = serde_json::to_value([&a]).unwrap();
        let a = &v[0];
        // Every field crowdsec 1.4.6 requires is present.
        for key in [
            "scenario",
            "scenario_hash",
            "scenario_version",
            "message",
            "events_count",
            "capacity",
            "leakspeed",
            "simulated",
            "start_at",
            "stop_at",
            "source",
            "events",
        ] {
            assert!(!a[key].is_null(), "{key} missing: {a}");
        }
        assert_eq!(a["scenario"], PORT_SCAN);
        assert_eq!(a["source"]["scope"], "Ip");
        assert_eq!(a["source"]["value"], "198.18.0.1");
        assert_eq!(a["start_at"], "2026-11-26T04:32:22Z");
        assert_eq!(a["events_count"], 5);
        assert_eq!(a["events"][0]["meta"][2]["value"], "22,80");
        let d = &a["decisions"][0];
        assert_eq!(
            (&d["type"], &d["scope"], &d["value"], &d["duration"]),
            (
                &serde_json::json!("ban"),
                &serde_json::json!("Ip"),
                &serde_json::json!("198.18.0.1"),
                &serde_json::json!("3600s")
            )
        );
    }

    #[test]
    fn a_prefix_is_a_range_alert_and_a_report_has_no_decision() {
        let a = Alert::of(&detection("2001:db8::/64", None));
        assert_eq!(a.scenario, DISTRIBUTED_SCAN);
        assert_eq!(
            (a.source.scope, a.source.value.as_str()),
            ("Range", "2001:db8::/64")
        );
        assert!(a.decisions.is_empty());
    }

    #[test]
    fn a_slow_scan_has_its_own_scenario_for_an_address_or_a_prefix() {
        let slow = |source: &str, ban| Detection {
            kind: crate::detect::ScanKind::Slow.as_str(),
            ..detection(source, ban)
        };
        let a = Alert::of(&slow("198.18.0.1/32", Some(Duration::from_secs(60))));
        assert_eq!((a.scenario, a.source.scope), (SLOW_SCAN, "Ip"));
        assert_eq!(a.decisions.len(), 1, "the ban of a blocked slow scan");
        let a = Alert::of(&slow("198.18.77.0/24", None));
        assert_eq!((a.scenario, a.source.scope), (SLOW_SCAN, "Range"));
        assert!(a.message.contains("slow scan"), "{}", a.message);
        assert!(a.decisions.is_empty());
    }
}
