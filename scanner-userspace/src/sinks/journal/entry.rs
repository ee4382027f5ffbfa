//! An event as a journal entry: its priority, a one-line MESSAGE, and the
//! `SCANNER_*` fields (`journalctl SCANNER_SOURCE=198.18.0.1`).

use crate::sinks::{
    event::{
        DaemonEvent, DaemonName, Event, InterfaceEvent, InterfaceReason, PolicyEvent, PolicyName,
        PortEvent, PortName, ScanEvent, ScanName,
    },
    journal::{Journal, priority},
    output::Output,
    text::comma_list,
};

impl Output for Journal {
    fn name(&self) -> String {
        format!("the journal ({})", self.path().display())
    }

    fn wants_json(&self) -> bool {
        false
    }

    fn write(&mut self, event: &Event, _: &str) -> std::io::Result<()> {
        let (prio, message, fields) = entry(event);
        self.send(prio, &message, &fields)
    }
}

/// A journal entry's fields, in the order they are sent.
pub(crate) type Fields = Vec<(&'static str, String)>;

/// The entry for `event`: priority, MESSAGE, fields.
pub(crate) fn entry(event: &Event) -> (u8, String, Fields) {
    let mut fields = Vec::with_capacity(12);
    let (prio, message) = match event {
        Event::Scan(e) => scan(e, &mut fields),
        Event::Policy(e) => policy(e, &mut fields),
        Event::Interface(e) => interface(e, &mut fields),
        Event::Port(e) => port(e, &mut fields),
        Event::Daemon(e) => daemon(e, &mut fields),
    };
    (prio, message, fields)
}

fn scan(e: &ScanEvent, fields: &mut Fields) -> (u8, String) {
    fields.extend([
        ("SCANNER_EVENT", e.event.as_str().to_owned()),
        ("SCANNER_SOURCE", e.source.clone()),
        ("SCANNER_KIND", e.kind.as_str().to_owned()),
        ("SCANNER_PORTS", e.ports.to_string()),
        ("SCANNER_PROBES", e.probes.to_string()),
        ("SCANNER_TOP_PORTS", comma_list(&e.top_ports)),
        ("SCANNER_TOP_PROBED", e.top_probed.join(",")),
        ("SCANNER_OPEN_PORTS", comma_list(&e.open_ports)),
        ("SCANNER_IFACE", e.iface.clone()),
        ("SCANNER_ACTION", e.action.as_str().to_owned()),
        ("SCANNER_REASON", e.reason.as_str().to_owned()),
        ("SCANNER_SOURCES", e.sources.to_string()),
    ]);
    if let Some(why) = e.protected {
        fields.push(("SCANNER_PROTECTED", why.as_str().to_owned()));
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
    // A slow scan's evidence: when it probed, and from where.
    if let Some(slow) = &e.slow {
        fields.extend([
            ("SCANNER_FIRST_SEEN", slow.first_seen.clone()),
            ("SCANNER_LAST_SEEN", slow.last_seen.clone()),
            ("SCANNER_WINDOW", slow.window.clone()),
            ("SCANNER_CLOSED_PORTS", slow.closed_ports.to_string()),
            ("SCANNER_PROBED", slow.probed.join(",")),
            ("SCANNER_ADDRESSES", slow.addresses.join(",")),
        ]);
    }
    let span = e
        .slow
        .as_ref()
        .map(|s| format!(", probed from {} to {}", s.first_seen, s.last_seen))
        .unwrap_or_default();
    match e.event {
        ScanName::Detected => (
            priority::WARNING,
            format!(
                "port scan detected from {}: {} scan of {} ports ({} probes) on {}, top ports {}{span}; action {}",
                e.source,
                e.kind,
                e.ports,
                e.probes,
                e.iface,
                comma_list(&e.top_ports),
                e.action
            ),
        ),
        ScanName::Ended => (
            priority::INFO,
            format!(
                "port scan from {} ended: {} ports, {} probes",
                e.source, e.ports, e.probes
            ),
        ),
    }
}

/// What a policy event did, as `SCANNER_ACTION` says it.
fn policy_action(e: &PolicyEvent) -> &'static str {
    match (e.event, e.dry_run) {
        (PolicyName::Blocked, true) => "would_block",
        (PolicyName::Blocked, false) => "block",
        (PolicyName::Unblocked, _) => "unblock",
        (PolicyName::Allowlisted, _) => "allow",
        (PolicyName::Disallowed, _) => "disallow",
        (PolicyName::BlockRefused, _) => "block_refused",
    }
}

fn policy(e: &PolicyEvent, fields: &mut Fields) -> (u8, String) {
    let action = policy_action(e);
    fields.extend([
        ("SCANNER_EVENT", e.event.as_str().to_owned()),
        ("SCANNER_SOURCE", e.source.clone()),
        ("SCANNER_ACTION", action.to_owned()),
        ("SCANNER_REASON", e.reason.as_str().to_owned()),
    ]);
    if let Some(ttl) = e.ttl_s {
        fields.push(("SCANNER_TTL_S", ttl.to_string()));
    }
    if let Some(origin) = e.origin {
        fields.push(("SCANNER_ORIGIN", origin.as_str().to_owned()));
    }
    let ttl = e.ttl_s.map(|t| format!(" for {t}s")).unwrap_or_default();
    let (source, reason) = (&e.source, e.reason);
    match (e.event, e.dry_run) {
        (PolicyName::Blocked, true) => (
            priority::NOTICE,
            format!("dry run: would block {source}{ttl}"),
        ),
        (PolicyName::Blocked, false) => (
            priority::NOTICE,
            format!("blocked {source} ({reason}){ttl}"),
        ),
        (PolicyName::Unblocked, _) => (priority::NOTICE, format!("unblocked {source} ({reason})")),
        (PolicyName::Allowlisted, _) => {
            (priority::NOTICE, format!("allowlisted {source} ({reason})"))
        }
        (PolicyName::Disallowed, _) => (
            priority::NOTICE,
            format!("removed {source} from the allowlist ({reason})"),
        ),
        (PolicyName::BlockRefused, _) => (
            priority::ERR,
            format!("could not block {source} ({reason})"),
        ),
    }
}

fn interface(e: &InterfaceEvent, fields: &mut Fields) -> (u8, String) {
    fields.extend([
        ("SCANNER_EVENT", e.event.as_str().to_owned()),
        ("SCANNER_IFACE", e.iface.clone()),
        ("SCANNER_MODE", e.mode.as_str().to_owned()),
    ]);
    let reason = e.reason.map(|r| format!(" ({r})")).unwrap_or_default();
    let prio = if e.reason == Some(InterfaceReason::Removed) {
        priority::WARNING
    } else {
        priority::NOTICE
    };
    (
        prio,
        format!("{} {} in {} mode{reason}", e.event, e.iface, e.mode),
    )
}

fn port(e: &PortEvent, fields: &mut Fields) -> (u8, String) {
    fields.extend([
        ("SCANNER_EVENT", e.event.as_str().to_owned()),
        ("SCANNER_PROTO", e.proto.to_string()),
        ("SCANNER_PORT", e.port.to_string()),
        ("SCANNER_ADDRESS", e.address.clone()),
    ]);
    if let Some(p) = &e.process {
        fields.push(("SCANNER_PROCESS", p.clone()));
    }
    if let Some(r) = &e.risk {
        fields.push(("SCANNER_RISK", r.to_string()));
    }
    let what = match e.event {
        PortName::Opened => "now listening",
        PortName::Closed => "no longer listening",
    };
    let by = e
        .process
        .as_ref()
        .map(|p| format!(" ({p})"))
        .unwrap_or_default();
    let risk = e
        .risk
        .as_ref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    // A commonly attacked service newly reachable on every address is what
    // an admin must hear about first.
    let prio = if e.event == PortName::Opened && e.risk.is_some() && e.all_addresses {
        priority::WARNING
    } else {
        priority::NOTICE
    };
    (
        prio,
        format!("{}/{} on {}{by} {what}{risk}", e.proto, e.port, e.address),
    )
}

fn daemon(e: &DaemonEvent, fields: &mut Fields) -> (u8, String) {
    fields.push(("SCANNER_EVENT", e.event.as_str().to_owned()));
    let prio = match e.event {
        DaemonName::ConfigRejected => priority::ERR,
        DaemonName::Started | DaemonName::Stopped | DaemonName::ConfigReloaded => priority::NOTICE,
    };
    let what = e.event.as_str().replace('_', " ");
    (prio, format!("{what}: {}", e.detail))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::sinks::{event::PolicyReason, json::tests::scan};

    #[test]
    fn detections_are_journal_warnings_with_fields() {
        let (prio, message, fields) = entry(&scan());
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
        let port = |event, address: &str, all, risk: Option<&'static str>| {
            Event::Port(PortEvent {
                ts: String::new(),
                event,
                proto: Cow::Borrowed("tcp"),
                port: 23,
                address: address.into(),
                all_addresses: all,
                exposed: true,
                process: Some("telnetd".into()),
                pid: Some(7),
                service: Some(Cow::Borrowed("telnet")),
                risk: risk.map(Cow::Borrowed),
            })
        };
        let telnet = Some("Telnet: clear-text logins");
        let (prio, message, fields) = entry(&port(PortName::Opened, "0.0.0.0", true, telnet));
        assert_eq!(prio, priority::WARNING);
        assert!(
            message.contains("tcp/23 on 0.0.0.0 (telnetd) now listening"),
            "{message}"
        );
        assert!(fields.contains(&("SCANNER_PORT", "23".into())));
        assert!(fields.contains(&("SCANNER_RISK", "Telnet: clear-text logins".into())));
        let (prio, _, _) = entry(&port(PortName::Opened, "198.18.0.2", false, telnet));
        assert_eq!(prio, priority::NOTICE, "one address only");
        let (prio, _, _) = entry(&port(PortName::Closed, "0.0.0.0", true, telnet));
        assert_eq!(prio, priority::NOTICE);
        let (prio, _, _) = entry(&port(PortName::Opened, "0.0.0.0", true, None));
        assert_eq!(prio, priority::NOTICE, "no known risk");
    }

    #[test]
    fn blocks_are_notices_and_refusals_errors() {
        let block = |event, dry_run| {
            Event::Policy(PolicyEvent {
                ts: String::new(),
                event,
                source: "198.18.0.1".into(),
                reason: PolicyReason::Crowdsec,
                origin: Some(crate::kernel::policy::Origin::Crowdsec),
                ttl_s: Some(60),
                dry_run,
            })
        };
        let (prio, _, fields) = entry(&block(PolicyName::Blocked, false));
        assert_eq!(prio, priority::NOTICE);
        assert!(fields.contains(&("SCANNER_ORIGIN", "crowdsec".into())));
        assert!(fields.contains(&("SCANNER_ACTION", "block".into())));
        assert!(fields.contains(&("SCANNER_TTL_S", "60".into())));
        let (_, _, fields) = entry(&block(PolicyName::Blocked, true));
        assert!(fields.contains(&("SCANNER_ACTION", "would_block".into())));
        let (prio, _, _) = entry(&block(PolicyName::BlockRefused, false));
        assert_eq!(prio, priority::ERR);
        let (prio, message, _) = entry(&DaemonEvent::now(DaemonName::ConfigRejected, "bad"));
        assert_eq!(
            (prio, message.as_str()),
            (priority::ERR, "config rejected: bad")
        );
    }

    /// Every recorded event makes an entry with its name and a one-line
    /// message.
    #[test]
    fn every_recorded_event_has_an_entry() {
        for event in crate::sinks::json::tests::recorded() {
            let (_, message, fields) = entry(&event);
            assert!(!message.is_empty() && !message.contains('\n'), "{message}");
            assert_eq!(fields[0], ("SCANNER_EVENT", event.name().to_owned()));
        }
    }
}
