//! `scanner history` and `scanner report`: the history file read without
//! the daemon (it may run or not: the file is opened read-only, and WAL
//! mode lets a reader in while the daemon writes).

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use ipnet::IpNet;
use serde_json::Value;

use crate::{
    cli::{
        commands::{out, outln, table, text},
        parse_duration, parse_net,
    },
    config::FileConfig,
    history::{Store, report, unix_ms},
};

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct HistoryFile {
    /// The history file [default: the configuration's report.history,
    /// /var/lib/scanner/history.db].
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
}

impl HistoryFile {
    fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.history {
            return Ok(p.clone());
        }
        let config = FileConfig::load(None)?;
        anyhow::ensure!(
            !config.report.history.as_os_str().is_empty(),
            "the configuration keeps no history (report.history is empty); give --history FILE"
        );
        Ok(config.report.history)
    }
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct HistoryArgs {
    #[command(flatten)]
    pub file: HistoryFile,
    /// Only events about this address or CIDR, and its long record: every
    /// port it probed in the period, day by day (the `[slow]` memory).
    #[arg(long, value_name = "ADDR|CIDR", value_parser = parse_net)]
    pub source: Option<IpNet>,
    /// Only events about this port (ended scans that probed it, every port
    /// of theirs kept; detections listing it; the port opening or closing),
    /// and its probes per hour.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// How far back, e.g. 24h, 7d.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub since: Duration,
    /// Only scans of this kind (syn, fin, udp, ...).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(crate::detect::ScanKind::ALL.iter().map(|k| k.as_str())))]
    pub kind: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ReportArgs {
    #[command(flatten)]
    pub file: HistoryFile,
    /// How far back, e.g. 24h, 7d.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub since: Duration,
    /// Write the report as one self-contained HTML page to FILE.
    #[arg(long, value_name = "FILE", required_unless_present = "json")]
    pub html: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn open(file: &HistoryFile) -> anyhow::Result<Store> {
    let path = file.path()?;
    Ok(Store::open_read_only(&path)?)
}

fn since_ms(since: Duration) -> i64 {
    unix_ms(
        SystemTime::now()
            .checked_sub(since)
            .unwrap_or(SystemTime::UNIX_EPOCH),
    )
}

/// Whether `source` (an address, or a prefix) is about `filter`.
fn about(source: Option<&str>, filter: &IpNet) -> bool {
    source
        .and_then(|s| parse_net(s).ok())
        .is_some_and(|net| filter.contains(&net.addr()) || net.contains(&filter.addr()))
}

fn mentions_port(v: &Value, port: u16) -> bool {
    let listed = |key: &str| {
        v[key]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p.as_u64() == Some(u64::from(port))))
    };
    v["port"].as_u64() == Some(u64::from(port)) || listed("top_ports") || listed("open_ports")
}

/// Whether the event's own fields name the port (an event without kept
/// ports: a detection, a port event, a scan from before they were kept).
fn mentions(e: &crate::history::EventRow, port: u16) -> bool {
    serde_json::from_str::<Value>(&e.json).is_ok_and(|v| mentions_port(&v, port))
}

pub(crate) fn history(args: &HistoryArgs) -> anyhow::Result<()> {
    let store = open(&args.file)?;
    let since = since_ms(args.since);
    // Ended scans whose every probed port was kept (see `scan_ports`).
    let probing: std::collections::HashSet<i64> = match args.port {
        Some(port) => store.scans_probing(since, port)?.into_iter().collect(),
        None => Default::default(),
    };
    let events: Vec<Value> = store
        .events(since)?
        .into_iter()
        .filter(|e| args.source.is_none_or(|f| about(e.source.as_deref(), &f)))
        .filter(|e| {
            args.port
                .is_none_or(|p| probing.contains(&e.id) || mentions(e, p))
        })
        .filter(|e| {
            args.kind
                .as_ref()
                .is_none_or(|k| e.kind.as_deref() == Some(k.as_str()))
        })
        .filter_map(|e| serde_json::from_str::<Value>(&e.json).ok())
        .collect();
    let hours: Vec<Value> = match args.port {
        Some(port) => store
            // The hour `since` falls in counts: its probes may be after it.
            .port_hours((since / 1000) - (since / 1000).rem_euclid(3600))?
            .into_iter()
            .filter(|h| h.port == port)
            .map(|h| {
                serde_json::json!({
                    "hour": crate::sinks::event::timestamp(std::time::UNIX_EPOCH + Duration::from_secs(h.hour_s.max(0) as u64)),
                    "proto": crate::audit::proto_name(h.proto),
                    "port": h.port,
                    "probes": h.probes,
                    "sources": h.sources,
                })
            })
            .collect(),
        None => Vec::new(),
    };
    // A source's long record: every port it probed over the period.
    let record = match args.source {
        Some(net) => crate::history::record::record_of(store.connection(), net, since)?,
        None => Vec::new(),
    };
    if args.json {
        let mut doc = serde_json::json!({ "events": events });
        if args.port.is_some() {
            doc["port_hours"] = Value::Array(hours);
        }
        if args.source.is_some() {
            doc["record"] = serde_json::to_value(&record)?;
        }
        return outln(&serde_json::to_string_pretty(&doc)?);
    }
    if events.is_empty() {
        outln("no events in this period")?;
    } else {
        let rows: Vec<Vec<String>> = events.iter().map(row).collect();
        out(&table(
            &[
                "time", "event", "source", "kind", "ports", "probes", "detail",
            ],
            &[4, 5],
            &rows,
        ))?;
    }
    if args.port.is_some() && !hours.is_empty() {
        outln("")?;
        let rows: Vec<Vec<String>> = hours
            .iter()
            .map(|h| {
                vec![
                    text(&h["hour"]),
                    format!("{}/{}", text(&h["proto"]), h["port"]),
                    h["probes"].to_string(),
                    h["sources"].to_string(),
                ]
            })
            .collect();
        out(&table(
            &["hour", "port", "probes", "sources"],
            &[2, 3],
            &rows,
        ))?;
    }
    if let Some(net) = args.source {
        outln("")?;
        out(&timeline(&net, &record))?;
    }
    Ok(())
}

/// A long record as a timeline: a line per day with the ports first
/// probed that day, then every (source, port) by first probe.
fn timeline(net: &IpNet, record: &[crate::history::record::RecordRow]) -> String {
    if record.is_empty() {
        return format!("no probes of {net} in the long memory in this period\n");
    }
    let closed = record.iter().filter(|r| r.state == "closed").count();
    let sources: std::collections::BTreeSet<&str> =
        record.iter().map(|r| r.source.as_str()).collect();
    let mut text = format!(
        "long record of {net}: {} ports probed ({closed} closed) from {} address{}\n",
        record.len(),
        sources.len(),
        if sources.len() == 1 { "" } else { "es" }
    );
    let days: Vec<Vec<String>> = crate::history::record::by_day(record)
        .into_iter()
        .map(|d| {
            vec![
                d.day,
                d.ports.len().to_string(),
                d.addresses.to_string(),
                d.ports.join(" "),
            ]
        })
        .collect();
    text.push_str(&table(
        &["day", "new ports", "addresses", "ports"],
        &[1, 2],
        &days,
    ));
    let ts = |ms: i64| {
        crate::sinks::event::timestamp(
            std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64),
        )
    };
    let rows: Vec<Vec<String>> = record
        .iter()
        .map(|r| {
            vec![
                ts(r.first_ms),
                ts(r.last_ms),
                r.source.clone(),
                format!("{}/{}", r.proto, r.port),
                r.state.to_owned(),
                r.probes.to_string(),
            ]
        })
        .collect();
    text.push('\n');
    text.push_str(&table(
        &[
            "first seen",
            "last seen",
            "source",
            "port",
            "state",
            "probes",
        ],
        &[5],
        &rows,
    ));
    text
}

/// One event as a table row.
pub(crate) fn row(v: &Value) -> Vec<String> {
    let event = text(&v["event"]);
    let (source, detail) = match event.as_str() {
        "port_opened" | "port_closed" => (
            format!("{}/{}", text(&v["proto"]), v["port"]),
            [&v["address"], &v["process"], &v["risk"]]
                .iter()
                .filter(|x| !x.is_null())
                .map(|x| text(x))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        "scan_detected" | "scan_ended" => (
            text(&v["source"]),
            format!(
                "action {} top {}",
                text(&v["action"]),
                text(&v["top_ports"])
            ),
        ),
        _ => (
            text(&v["source"]),
            [&v["reason"], &v["detail"], &v["iface"]]
                .iter()
                .filter(|x| !x.is_null())
                .map(|x| text(x))
                .collect::<Vec<_>>()
                .join(" "),
        ),
    };
    vec![
        text(&v["ts"]),
        event,
        source,
        text(&v["kind"]),
        text(&v["ports"]),
        text(&v["probes"]),
        detail,
    ]
}

pub(crate) fn report_command(args: &ReportArgs) -> anyhow::Result<()> {
    let store = open(&args.file)?;
    let r = report::build(&store, since_ms(args.since), unix_ms(SystemTime::now()))?;
    if args.json {
        outln(&serde_json::to_string_pretty(&r)?)?;
    }
    if let Some(path) = &args.html {
        write_html(path, &report::render(&r))?;
        let line = format!(
            "wrote {}: {} scans, {} sources, {} blocks, {} probes since {}",
            path.display(),
            r.totals.scans,
            r.totals.sources,
            r.totals.blocks,
            r.totals.probes,
            r.since
        );
        if args.json {
            eprintln!("{line}");
        } else {
            outln(&line)?;
        }
    }
    Ok(())
}

fn write_html(path: &Path, html: &str) -> anyhow::Result<()> {
    std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))
}
