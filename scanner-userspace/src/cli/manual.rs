//! `scanner manpage`: the man pages clap generates from the CLI, with the
//! sections an operator looks for that `--help` does not have: signals,
//! exit status, files, configuration keys and events.

use std::path::Path;

use anyhow::Context as _;

use crate::{cli::Cli, config::DEFAULT_FILE};

/// The event schema, the one description of it: the EVENTS section is
/// made from its tables.
const EVENTS_DOC: &str = include_str!("../../../docs/events.md");

/// scanner(1): clap's page, then the extra sections.
pub(crate) fn main_page() -> anyhow::Result<Vec<u8>> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut page)
        .context("rendering the man page")?;
    page.extend_from_slice(extra_sections().as_bytes());
    Ok(page)
}

/// scanner.1 and scanner-COMMAND.1 in `dir`.
pub(crate) fn write_pages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = <Cli as clap::CommandFactory>::command();
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("writing man pages to {}", dir.display()))?;
    let main = dir.join("scanner.1");
    std::fs::write(&main, main_page()?).with_context(|| format!("writing {}", main.display()))
}

/// Roff for literal text: backslashes escaped, and lines that start with a
/// dot or a quote kept from being read as requests.
fn literal(text: &str) -> String {
    text.lines()
        .map(|l| {
            let l = l.replace('\\', "\\e");
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `.TP` list: (term, text) pairs.
fn items<S: AsRef<str>>(list: &[(S, S)]) -> String {
    list.iter()
        .map(|(term, text)| {
            format!(
                ".TP\n\\fB{}\\fR\n{}\n",
                literal(term.as_ref()),
                literal(text.as_ref())
            )
        })
        .collect()
}

/// The rows of docs/events.md's table under `## {section}`, as plain text.
fn doc_table(section: &str) -> Vec<(String, String)> {
    let heading = format!("## {section}\n");
    let Some(at) = EVENTS_DOC.find(&heading) else {
        return Vec::new();
    };
    EVENTS_DOC[at + heading.len()..]
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("| ")?.strip_suffix(" |"))
        // The header and the rule under it.
        .skip(2)
        .filter_map(|row| row.split_once(" | "))
        .map(|(term, text)| (plain(term), plain(text)))
        .collect()
}

/// Markdown to plain text: no backticks, links as their text.
fn plain(md: &str) -> String {
    let mut out = String::with_capacity(md.len());
    let mut rest = md;
    while let Some(open) = rest.find('[') {
        let (before, after) = rest.split_at(open);
        out.push_str(before);
        let link = after
            .find("](")
            .and_then(|mid| Some((mid, after[mid..].find(')')? + mid)));
        match link {
            Some((mid, close)) => {
                out.push_str(&after[1..mid]);
                rest = &after[close + 1..];
            }
            None => {
                out.push('[');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out.replace('`', "")
}

fn extra_sections() -> String {
    let mut s = String::new();
    s.push_str(".SH SIGNALS\n");
    s.push_str(&items(&[
        (
            "SIGINT, SIGTERM",
            "Report every scan still open, detach the XDP program and exit 0. Pinned maps, blocks included, stay for the next start.",
        ),
        (
            "SIGHUP",
            "Reload the configuration file: thresholds, blocking, block TTL, dry run and the file's allowlist change without detaching or losing state. An invalid file is refused (a config_rejected event) and the old configuration stays. The events file (--events-file) is opened again, for logrotate.",
        ),
        (
            "SIGKILL, a crash",
            "The program stays attached through its pinned link and keeps dropping blocked sources; the next scanner run takes it over.",
        ),
    ]));
    s.push_str(".SH ENVIRONMENT\n");
    s.push_str(&items(&[
        (
            "SCANNER_LOG",
            "The log filter, as tracing's EnvFilter reads it: error, warn, info (the default), debug, trace, or per module (scanner_userspace::fleet=debug).",
        ),
        (
            "NOTIFY_SOCKET, JOURNAL_STREAM",
            "Set by systemd: readiness is sent to the first; when stderr is the second, a fatal error is logged once, to the journal.",
        ),
    ]));
    s.push_str(".SH EXAMPLES\n");
    s.push_str(&items(&[
        (
            "scanner run --iface eth0",
            "Report scans on eth0, as text on stdout.",
        ),
        (
            "scanner run --iface eth0 --block --block-ttl 30m --allow 203.0.113.0/24",
            "Drop detected scanners for 30 minutes; never touch 203.0.113.0/24.",
        ),
        (
            "scanner list",
            "Suspects, detections and blocks of the running daemon.",
        ),
        (
            "scanner block 198.51.100.7 --ttl 2h",
            "Block an address by hand.",
        ),
        (
            "scanner ports --probed",
            "The most probed ports, open or closed.",
        ),
        (
            "scanner history --port 23 --since 24h",
            "Who probed telnet today.",
        ),
        (
            "journalctl -u scanner SCANNER_EVENT=scan_detected -o json",
            "Detections in the journal, with their SCANNER_* fields.",
        ),
    ]));
    s.push_str(".SH EXIT STATUS\n");
    s.push_str(&items(&[
        ("0", "Stopped by SIGINT or SIGTERM; a client command succeeded, also when its reader closed the pipe early."),
        (
            "1",
            "An error: the kernel refused the program, the daemon is unreachable, or the daemon stopped because nothing was left to watch (interfaces removed with --no-reattach) or to report to.",
        ),
        (
            "2",
            "A usage error, nothing attached: bad arguments or configuration, another daemon on the same pin directory or control socket, no BPF filesystem at the pin directory (and none may be mounted), or another XDP program on the interface. scanner.service does not restart after it (RestartPreventExitStatus=2).",
        ),
    ]));
    s.push_str(".SH FILES\n");
    s.push_str(&items(&[
        ("/etc/scanner/scanner.toml", "The configuration file (scanner config --print-default shows every key)."),
        ("/etc/default/scanner", "SCANNER_ARGS for the systemd unit, e.g. --iface eth0."),
        ("/run/scanner/scanner.sock", "The control socket of scanner status, list, block, allow, ports and top."),
        (
            "/sys/fs/bpf/scanner",
            "Pinned maps (blocks, allowlist, sources, counters, what was reported) and, while the daemon runs, its XDP links. Locked by the running daemon; remove it, with the daemon stopped, to start afresh.",
        ),
        (
            "/var/log/scanner/events.jsonl",
            "Events as JSON lines (--events-file in the systemd unit), mode 0640, group scanner; opened again on SIGHUP, rotated by /etc/logrotate.d/scanner.",
        ),
        (
            "/var/lib/scanner/history.db",
            "The history (SQLite): every event, probes per port per hour, the listening ports; read by scanner history and scanner report (report.history, --history, --no-history).",
        ),
        (
            "/usr/share/scanner/grafana-dashboard.json, /usr/share/scanner/prometheus-alerts.yml",
            "A Grafana dashboard and Prometheus alert rules over the metrics.",
        ),
    ]));
    s.push_str(".SH CONFIGURATION\nEvery key is optional; this is the default file, with what each key means:\n.PP\n.nf\n");
    s.push_str(&literal(DEFAULT_FILE));
    s.push_str("\n.fi\n");
    s.push_str(".SH EVENTS\nOne JSON object per line on stdout with --events json (fields are added, never renamed), and one journal entry each with SCANNER_* fields.\n");
    s.push_str(&items(&doc_table("Events")));
    s.push_str(".SS Fields\n");
    s.push_str(&items(&doc_table("Fields")));
    s.push_str(".SS Journal fields\n");
    s.push_str(&items(&doc_table("Journal")));
    s.push_str(".SH SEE ALSO\nscanner-run(1), scanner-status(1), scanner-list(1), scanner-block(1), scanner-ports(1), scanner-history(1), scanner-report(1), scanner-top(1), journalctl(1), systemd.exec(5), bpftool(8), nmap(1)\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_the_operator_sections() {
        let page = String::from_utf8(main_page().unwrap_or_default()).unwrap_or_default();
        for section in [
            ".SH SIGNALS",
            ".SH EXIT STATUS",
            ".SH FILES",
            ".SH CONFIGURATION",
            ".SH EVENTS",
            ".SH ENVIRONMENT",
            ".SH EXAMPLES",
            ".SH SEE ALSO",
        ] {
            assert!(page.contains(section), "{section}");
        }
        assert!(page.contains("SCANNER_LOG"), "the environment");
        assert!(
            page.contains("block_ttl = \"1h\""),
            "the configuration keys"
        );
    }

    #[test]
    fn the_events_come_from_docs_events_md() {
        let events = doc_table("Events");
        let fields = doc_table("Fields");
        assert!(events.len() >= 10 && fields.len() >= 30, "{events:?}");
        let page = String::from_utf8(main_page().unwrap_or_default()).unwrap_or_default();
        assert!(page.contains("scan_detected"), "the table is in the page");
        assert!(page.contains(".SS Journal fields") && page.contains("SCANNER_SPARED_FLOWS"));
        let section = page
            .split(".SH EVENTS")
            .nth(1)
            .and_then(|s| s.split(".SH SEE ALSO").next())
            .unwrap_or_default();
        assert!(
            !section.contains("](") && !section.contains('`'),
            "no markdown left"
        );
        assert_eq!(plain("a [link](x.md#y) and `code`"), "a link and code");
    }

    /// docs/events.md names every value the code can write, and has a row
    /// for every field of every recorded event.
    #[test]
    fn docs_events_md_covers_every_name_and_field() {
        use crate::{
            detect::ScanKind,
            kernel::{load::AttachedMode, policy::Origin, protect::ProtectedBy},
            sinks::{
                event::{
                    Action, DaemonName, DecidedBy, InterfaceName, InterfaceReason, PolicyName,
                    PolicyReason, PortName, ScanName,
                },
                probes::{PortState, SignalName},
            },
        };
        let names = ScanName::ALL
            .iter()
            .map(|n| n.as_str())
            .chain(InterfaceName::ALL.iter().map(|n| n.as_str()))
            .chain(PolicyName::ALL.iter().map(|n| n.as_str()))
            .chain(DaemonName::ALL.iter().map(|n| n.as_str()))
            .chain(PortName::ALL.iter().map(|n| n.as_str()))
            .chain(ScanKind::ALL.iter().map(|n| n.as_str()))
            .chain(DecidedBy::ALL.iter().map(|n| n.as_str()))
            .chain(Action::ALL.iter().map(|n| n.as_str()))
            .chain(PolicyReason::ALL.iter().map(|n| n.as_str()))
            .chain(ProtectedBy::ALL.iter().map(|n| n.as_str()))
            .chain(Origin::ALL.iter().map(|n| n.as_str()))
            .chain(InterfaceReason::ALL.iter().map(|n| n.as_str()))
            .chain(AttachedMode::ALL.iter().map(|n| n.as_str()))
            .chain(PortState::ALL.iter().map(|n| n.as_str()))
            .chain(SignalName::ALL.iter().map(|n| n.as_str()));
        for name in names {
            assert!(
                EVENTS_DOC.contains(&format!("`{name}`")),
                "docs/events.md lacks `{name}`"
            );
        }
        let rows: Vec<String> = doc_table("Fields").into_iter().map(|(f, _)| f).collect();
        for event in crate::sinks::json::tests::recorded() {
            let json = serde_json::to_value(&event).unwrap_or_default();
            for key in json.as_object().into_iter().flat_map(|o| o.keys()) {
                assert!(rows.contains(key), "docs/events.md has no row for {key}");
            }
        }
        let rows: Vec<String> = doc_table("Probe records")
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        let record = crate::sinks::probes::tests::full_record();
        let json = serde_json::to_value(&record).unwrap_or_default();
        let keys: Vec<&String> = json
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys())
            .collect();
        assert!(keys.len() >= 10, "{json}");
        for key in keys {
            assert!(
                rows.contains(key),
                "docs/events.md's probe records have no row for {key}"
            );
        }
    }

    #[test]
    fn literal_text_cannot_become_a_request() {
        assert_eq!(literal(".x\n'y\na\\b"), "\\&.x\n\\&'y\na\\eb");
    }
}
