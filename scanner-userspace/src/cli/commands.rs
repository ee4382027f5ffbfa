//! The CLI side of the control socket: `scanner status`, `list`, `block`,
//! `unblock`, `allow`, `disallow`, `ports`; and the generated completions
//! and man pages; `scanner config`.
//!
//! Output goes through [`out`]: a closed pipe (`scanner list | head -1`)
//! ends the command as an error whose cause is EPIPE, which `main` treats as
//! a normal end.

use std::io::Write as _;

use anyhow::Context as _;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::{
    audit::{self, listeners, proto_name, services},
    cli::{
        AllowArgs, BlockArgs, ClientArgs, CompletionsArgs, ConfigArgs, ListArgs, ManpageArgs,
        PortsArgs, TargetArgs,
    },
    config::{DEFAULT_FILE, FileConfig},
    control::{
        self, Request,
        reply::{
            AllowEntry, AllowReply, BlockReply, DisallowReply, ListRow, StatusReply, UnblockReply,
        },
    },
    detect::hits::PortHit,
    kernel::policy::AllowOrigin,
};

/// Writes `text` to stdout; fails (with the io::Error as the cause) when
/// stdout is gone.
pub(crate) fn out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing to stdout")
}

/// [`out`] with a newline.
pub(crate) fn outln(line: &str) -> anyhow::Result<()> {
    out(&format!("{line}\n"))
}

/// Pretty JSON on stdout.
fn out_json(value: &impl Serialize) -> anyhow::Result<()> {
    outln(&serde_json::to_string_pretty(value).context("printing JSON")?)
}

/// Rows as a table: each column as wide as its widest cell, numbers (cells
/// of `right` columns) aligned right; the last column is not padded.
pub(crate) fn table(header: &[&str], right: &[usize], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let pad = w.saturating_sub(cell.chars().count());
            if right.contains(&i) {
                l.push_str(&" ".repeat(pad));
                l.push_str(cell);
            } else if i == last {
                l.push_str(cell);
            } else {
                l.push_str(cell);
                l.push_str(&" ".repeat(pad));
            }
        }
        l.trim_end().to_owned() + "\n"
    };
    let mut text = line(header.to_vec());
    for row in rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

/// Asks the daemon; its reply read as `R`.
fn ask<R: DeserializeOwned>(client: &ClientArgs, request: &Request) -> anyhow::Result<R> {
    control::ask(&client.socket, request).map_err(anyhow::Error::from)
}

/// Asks for a list: with `json`, prints it as the daemon sent it and
/// returns None; else its rows.
fn ask_rows<R: DeserializeOwned>(
    client: &ClientArgs,
    request: &Request,
    json: bool,
) -> anyhow::Result<Option<Vec<R>>> {
    if json {
        let list: Value = ask(client, request)?;
        out_json(&list)?;
        return Ok(None);
    }
    ask(client, request).map(Some)
}

/// A value, or "-" when there is none.
pub(crate) fn or_dash<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `address (mode)` of each watched interface.
pub(crate) fn interfaces(s: &StatusReply) -> String {
    let ifaces: Vec<String> = s
        .interfaces
        .iter()
        .map(|i| format!("{} ({})", i.iface, i.mode))
        .collect();
    ifaces.join(", ")
}

pub(crate) fn status(args: &ClientArgs) -> anyhow::Result<()> {
    let s: StatusReply = ask(args, &Request::Status {})?;
    let p = &s.packets;
    let blocking = if s.dry_run {
        "dry run: nothing is dropped (blocks are kept, not enforced)"
    } else if s.blocking {
        "on: detected sources are dropped"
    } else {
        "off: report only"
    };
    let crowdsec = match &s.crowdsec {
        None => "off".to_owned(),
        Some(c) => format!(
            "{} (last pull {}, {} alerts pushed, {} queued, {} pull / {} push errors)",
            c.url,
            or_dash(c.last_sync.as_ref()),
            c.alerts_pushed,
            c.push_queue,
            c.pull_errors,
            c.push_errors
        ),
    };
    let lines = [
        format!("interfaces:        {}", interfaces(&s)),
        format!("daemon uptime:     {}s", s.uptime_s),
        format!(
            "packets:           seen {} passed {} dropped {} parse failures {}",
            p.seen, p.passed, p.dropped, p.parse_failures
        ),
        format!(
            "                   (counted since {}, across daemon restarts)",
            or_dash(s.counting_since.as_ref())
        ),
        format!("sources tracked:   {}", s.sources_tracked),
        format!(
            "kernel memory:     {:.1} MiB (the maps)",
            s.kernel_memory_bytes as f64 / (1024.0 * 1024.0)
        ),
        format!("active detections: {}", s.active_detections),
        format!("blocks:            {} (cap {})", s.blocks, s.block_cap),
        format!("blocking:          {blocking}"),
        format!("crowdsec:          {crowdsec}"),
        format!(
            "long memory:       {}",
            s.long_memory.as_ref().map_or_else(
                || "off".to_owned(),
                |m| format!(
                    "{} window, {} rows, {} probes taken ({} dropped), {} slow scans",
                    m.window, m.rows, m.probes, m.dropped, m.slow_scans
                )
            )
        ),
    ];
    outln(&lines.join("\n"))
}

/// `scanner list`'s headers, one per column of [`list_cells`].
const LIST_HEADER: [&str; 11] = [
    "address",
    "state",
    "kind",
    "sources",
    "ports",
    "probes",
    "first seen",
    "last seen",
    "block expires",
    "blocked by",
    "decoy group",
];

/// A `scanner list` row's cells, "-" where it has nothing.
fn list_cells(r: &ListRow) -> Vec<String> {
    vec![
        r.address.clone(),
        r.state.to_string(),
        or_dash(r.kind),
        or_dash(r.sources),
        or_dash(r.ports),
        or_dash(r.probes),
        or_dash(r.first_seen.as_ref()),
        or_dash(r.last_seen.as_ref()),
        or_dash(r.block_expires.as_ref()),
        or_dash(r.block_origin.flatten()),
        or_dash(r.decoy_group.clone().flatten().map(|g| g.join(","))),
    ]
}

pub(crate) fn list(args: &ListArgs) -> anyhow::Result<()> {
    let Some(list) = ask_rows::<ListRow>(&args.client, &Request::List {}, args.json)? else {
        return Ok(());
    };
    let rows: Vec<Vec<String>> = list.iter().map(list_cells).collect();
    // sources, ports and probes are counts: right-aligned.
    out(&table(&LIST_HEADER, &[3, 4, 5], &rows))
}

pub(crate) fn block(args: &BlockArgs) -> anyhow::Result<()> {
    let request = Request::Block {
        target: args.target.to_string(),
        ttl: args.ttl.map(|t| humantime::format_duration(t).to_string()),
        force: args.force,
    };
    let r: BlockReply = ask(&args.client, &request)?;
    let net = &r.blocked;
    // What the block covers that is protected: cut off (--force) or spared.
    let protected: Vec<String> = r
        .protected
        .iter()
        .map(|p| format!("{} ({})", p.address, p.why))
        .collect();
    if !protected.is_empty() {
        let what = if args.force {
            "forced: this cuts the host off from"
        } else {
            "spared (protected, never dropped by this block)"
        };
        eprintln!("{what}: {}", protected.join(", "));
    }
    let until = match r.ttl_s {
        Some(s) => format!(
            "for {}",
            humantime::format_duration(std::time::Duration::from_secs(s))
        ),
        None => "until unblocked".into(),
    };
    let said = if r.kept {
        format!("{net} is already blocked {until}: kept (give --ttl to change it)")
    } else {
        format!("blocked {net} {until}")
    };
    if r.dry_run {
        return outln(&format!(
            "{said}; the daemon runs a dry run: nothing is dropped until it blocks for real"
        ));
    }
    outln(&said)
}

pub(crate) fn unblock(args: &TargetArgs) -> anyhow::Result<()> {
    let r: UnblockReply = ask(
        &args.client,
        &Request::Unblock {
            target: args.target.to_string(),
        },
    )?;
    outln(&format!("unblocked {}", r.unblocked))
}

/// `scanner allow TARGET`, or `scanner allow --list`.
pub(crate) fn allow(args: &AllowArgs) -> anyhow::Result<()> {
    let Some(target) = args.target else {
        let Some(list) = ask_rows::<AllowEntry>(&args.client, &Request::Allowlist {}, args.json)?
        else {
            return Ok(());
        };
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|e| {
                let why = match e.origin {
                    AllowOrigin::Host => "always: loopback or this host's address",
                    AllowOrigin::Config => "configuration (file or --allow)",
                    AllowOrigin::Runtime => "scanner allow",
                };
                vec![e.address.clone(), why.to_owned()]
            })
            .collect();
        return out(&table(&["address", "allowlisted by"], &[], &rows));
    };
    let r: AllowReply = ask(
        &args.client,
        &Request::Allow {
            target: target.to_string(),
        },
    )?;
    if !r.unblocked.is_empty() {
        return outln(&format!(
            "allowlisted {} (and lifted its block: {})",
            r.allowed,
            r.unblocked.join(",")
        ));
    }
    outln(&format!("allowlisted {}", r.allowed))
}

pub(crate) fn disallow(args: &TargetArgs) -> anyhow::Result<()> {
    let r: DisallowReply = ask(
        &args.client,
        &Request::Disallow {
            target: args.target.to_string(),
        },
    )?;
    outln(&format!("removed {} from the allowlist", r.disallowed))
}

/// A JSON string without quotes; "-" for null.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Probes per port from the daemon, most probed first.
pub(crate) fn port_hits(client: &ClientArgs, limit: Option<u32>) -> anyhow::Result<Vec<PortHit>> {
    ask(client, &Request::PortHits { limit }).context("reading the daemon's port counts")
}

/// `scanner ports`: the audit of listening sockets, or (`--probed`) the
/// most probed ports.
pub(crate) fn ports(args: &PortsArgs) -> anyhow::Result<()> {
    if args.probed {
        let hits = port_hits(&args.client, Some(args.limit))?;
        return print_probed(&hits, args.json);
    }
    let hits = match port_hits(&args.client, None) {
        Ok(h) => Some(h),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "scanner: no probe counts ({e:#})");
            None
        }
    };
    let rows = audit::rows(
        &listeners::listeners(),
        &audit::socket_owners(),
        hits.as_deref(),
    );
    if args.json {
        return out_json(&rows);
    }
    let mut header = vec!["proto", "port", "address", "service", "process"];
    let counts = hits.is_some();
    let recent = last_hour_label(hits.as_deref().unwrap_or_default());
    if counts {
        header.extend(["probes", &recent, "sources", &recent]);
    }
    header.push("notes");
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let process = match (&r.process, r.pid) {
                (Some(p), Some(pid)) => format!("{p}[{pid}]"),
                _ => "-".into(),
            };
            let mut notes = Vec::new();
            if r.all_addresses {
                notes.push("! all addresses".to_owned());
            } else if !r.exposed {
                notes.push("loopback only".to_owned());
            }
            if let Some(risk) = r.risk.filter(|_| r.exposed) {
                notes.push(risk.to_owned());
            }
            let mut row = vec![
                r.proto.to_owned(),
                r.port.to_string(),
                r.address.clone(),
                r.service.unwrap_or("-").to_owned(),
                process,
            ];
            if counts {
                row.extend(
                    [r.probes, r.probes_last_hour, r.sources, r.sources_last_hour]
                        .map(|n| n.map_or("-".into(), |n| n.to_string())),
                );
            }
            row.push(notes.join("; "));
            row
        })
        .collect();
    let right: &[usize] = if counts { &[1, 5, 6, 7, 8] } else { &[1] };
    out(&table(&header, right, &table_rows))
}

/// The name of the "last hour" columns: what they cover, when the counts
/// are younger than an hour (a first start, or a daemon without history
/// restarted: see `daemon::history::LastHour`).
fn last_hour_label(hits: &[PortHit]) -> String {
    match hits.iter().map(|h| h.last_hour_s).max() {
        Some(s) if s < 3600 => format!("last {}m", s.div_ceil(60).max(1)),
        _ => "last hour".to_owned(),
    }
}

/// A probed port as `ports --probed --json` prints it: the protocol by
/// name, as `scanner ports --json` has it.
#[derive(Debug, Serialize)]
struct ProbedPort {
    proto: &'static str,
    port: u16,
    service: Option<&'static str>,
    open: bool,
    probes: u64,
    probes_last_hour: u64,
    sources: u64,
    sources_last_hour: u64,
    /// Seconds the two last-hour counts cover (3,600 once the counts are
    /// an hour old).
    last_hour_s: u64,
}

fn print_probed(hits: &[PortHit], json: bool) -> anyhow::Result<()> {
    let probed: Vec<ProbedPort> = hits
        .iter()
        .map(|h| ProbedPort {
            proto: proto_name(h.proto),
            port: h.port,
            service: services::lookup(h.proto, h.port).map(|s| s.name),
            open: h.open,
            probes: h.probes,
            probes_last_hour: h.probes_last_hour,
            sources: h.sources,
            sources_last_hour: h.sources_last_hour,
            last_hour_s: h.last_hour_s,
        })
        .collect();
    if json {
        return out_json(&probed);
    }
    let mut header = vec!["proto", "port", "service", "state"];
    let recent = last_hour_label(hits);
    header.extend(["probes", &recent, "sources", &recent]);
    let rows: Vec<Vec<String>> = probed
        .iter()
        .map(|p| {
            vec![
                p.proto.to_owned(),
                p.port.to_string(),
                p.service.unwrap_or("-").to_owned(),
                if p.open { "open" } else { "closed" }.to_owned(),
                p.probes.to_string(),
                p.probes_last_hour.to_string(),
                p.sources.to_string(),
                p.sources_last_hour.to_string(),
            ]
        })
        .collect();
    out(&table(&header, &[1, 4, 5, 6, 7], &rows))
}

/// `scanner config`.
pub(crate) fn config_command(args: &ConfigArgs) -> anyhow::Result<()> {
    if args.print_default {
        return out(DEFAULT_FILE);
    }
    if let Some(path) = &args.check {
        let config = FileConfig::load(Some(path))?;
        // The CrowdSec secrets as `run` reads them: there, not readable by
        // others, not empty.
        crate::fleet::secrets(&config.crowdsec)
            .with_context(|| format!("{}: the [crowdsec] section", path.display()))?;
        let steps = config.probabilities().steps()?;
        let nats = |steps: i32| f64::from(steps) / 1024.0;
        outln(&format!(
            "# {}: ok. The settings it gives, defaults included:",
            path.display()
        ))?;
        outln(&format!(
            "# The walk decides at a score of {:.2}: {} closed ports in a row ({:+.2} each; a stealth probe {:+.2}, an open port {:+.2}, never below {:.2}).",
            nats(steps.upper),
            steps.closed_probes_to_decide(),
            nats(steps.closed),
            nats(steps.stealth),
            nats(steps.open),
            nats(steps.lower),
        ))?;
        if config.slow.enabled {
            let slow = config.slow.rule(&config.probabilities())?;
            outln(&format!(
                "# The long memory decides a slow scan at {} closed ports net of open ones within {} (a source, or a prefix of {} addresses or more).",
                slow.closed_ports_to_decide(),
                crate::config::show(config.slow.window),
                slow.min_addresses,
            ))?;
        }
        out(&toml::to_string(&config).context("printing the settings")?)?;
    }
    Ok(())
}

/// `scanner completions SHELL`.
pub(crate) fn completions(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = <crate::cli::Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "scanner", &mut script);
    out(&String::from_utf8_lossy(&script))
}

/// `scanner manpage [--dir DIR]`.
pub(crate) fn manpage(args: &ManpageArgs) -> anyhow::Result<()> {
    match &args.dir {
        None => out(&String::from_utf8_lossy(&crate::cli::manual::main_page()?)),
        Some(dir) => crate::cli::manual::write_pages(dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_hour_columns_say_what_they_cover() {
        let hit = |last_hour_s| PortHit {
            last_hour_s,
            ..PortHit::default()
        };
        assert_eq!(last_hour_label(&[hit(3600)]), "last hour");
        assert_eq!(last_hour_label(&[hit(35 * 60 - 20), hit(0)]), "last 35m");
        assert_eq!(last_hour_label(&[hit(0)]), "last 1m");
        assert_eq!(last_hour_label(&[]), "last hour");
    }
}
