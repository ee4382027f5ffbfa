//! The text line: one event as a person reads it on a terminal
//! (`--events text`, the default).

use crate::sinks::event::{Event, PolicyName, ScanEvent, ScanName};

/// Ports as `22,80,443`.
pub(crate) fn comma_list(ports: &[u16]) -> String {
    let v: Vec<String> = ports.iter().map(u16::to_string).collect();
    v.join(",")
}

/// The text line's top ports: numbers when every one is TCP, else each
/// with its protocol (`udp/53`).
fn top_text(e: &ScanEvent) -> String {
    if e.top_ports.is_empty() {
        return "-".to_owned();
    }
    if e.top_probed.iter().all(|p| p.starts_with("tcp/")) {
        return comma_list(&e.top_ports);
    }
    e.top_probed.join(",")
}

/// The event's line, without its newline.
pub(crate) fn line(event: &Event) -> String {
    match event {
        Event::Scan(e) => scan(e),
        Event::Interface(e) => {
            let reason = e.reason.map(|r| format!(" ({r})")).unwrap_or_default();
            format!("{} {} {} mode={}{reason}", e.ts, e.event, e.iface, e.mode)
        }
        Event::Policy(e) => {
            let what = match (e.event, e.dry_run) {
                (PolicyName::Blocked, true) => "WOULD BLOCK  ",
                (PolicyName::Blocked, false) => "BLOCKED      ",
                (PolicyName::Unblocked, _) => "unblocked    ",
                (PolicyName::Allowlisted, _) => "allowlisted  ",
                (PolicyName::Disallowed, _) => "disallowed   ",
                (PolicyName::BlockRefused, _) => "BLOCK REFUSED",
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
            let risk = e
                .risk
                .as_ref()
                .map(|r| format!(" risk=\"{r}\""))
                .unwrap_or_default();
            format!(
                "{} {} {}/{} address={}{process}{risk}",
                e.ts, e.event, e.proto, e.port, e.address
            )
        }
    }
}

fn scan(e: &ScanEvent) -> String {
    let what = match e.event {
        ScanName::Detected => "SCAN DETECTED",
        ScanName::Ended => "scan ended   ",
    };
    let open = if e.open_ports.is_empty() {
        "-".to_owned()
    } else {
        comma_list(&e.open_ports)
    };
    let sources = if e.sources > 1 {
        format!(" sources={}", e.sources)
    } else {
        String::new()
    };
    let decided = if e.event == ScanName::Detected {
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
    // A slow scan's span: its evidence may be days old.
    let slow = e
        .slow
        .as_ref()
        .map(|s| format!(" first_seen={} last_seen={}", s.first_seen, s.last_seen))
        .unwrap_or_default();
    format!(
        "{} {what} {} kind={}{decided} ports={} probes={} top_ports={} open={open}{sources} iface={}{protected}{decoys}{spared}{slow}",
        e.ts,
        e.source,
        e.kind,
        e.ports,
        e.probes,
        top_text(e),
        e.iface
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::json::tests::scan;

    #[test]
    fn text_is_one_readable_line() {
        assert_eq!(
            line(&scan()),
            "2025-11-25T14:42:17.123Z SCAN DETECTED 198.18.0.1 kind=syn decided_after=4 ports=1000 probes=1000 top_ports=22,80 open=22 iface=eth1"
        );
        let Event::Scan(mut udp) = scan() else {
            unreachable!()
        };
        udp.top_ports = vec![53, 161];
        udp.top_probed = vec!["udp/53".into(), "udp/161".into()];
        assert!(
            line(&Event::Scan(udp)).contains(" top_ports=udp/53,udp/161 "),
            "a UDP scan's ports say so"
        );
    }

    /// Every recorded event has a line of its own kind, on one line.
    #[test]
    fn every_recorded_event_has_a_line() {
        for event in crate::sinks::json::tests::recorded() {
            let text = line(&event);
            assert!(!text.contains('\n'), "{text}");
            assert!(
                text.contains(event.name()) || matches!(event, Event::Scan(_) | Event::Policy(_)),
                "{text}"
            );
        }
    }
}
