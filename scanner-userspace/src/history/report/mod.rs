//! `scanner report`: the history of a period turned into what a person
//! looks at. One model ([`Report`]), printed as JSON or as one
//! self-contained HTML page (`html`) with inline SVG charts (`svg`).

mod html;
mod svg;

use std::collections::{BTreeMap, HashMap};

pub(crate) use html::render;
use serde::Serialize;
use serde_json::Value;

use crate::history::store::{EventRow, HistoryError, PortHour, Store};

/// Ports drawn in the probes-over-time chart.
const TOP_PORTS: usize = 10;
/// Sources listed.
const TOP_SOURCES: usize = 25;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub host: String,
    pub generated: String,
    pub since: String,
    pub totals: Totals,
    /// The hours charted, Unix seconds (the x axis): from an hour before
    /// the first data of the period (not its start: a short spike in a week
    /// is not squashed against the right edge) to now.
    pub hours: Vec<i64>,
    /// The most probed ports, probes per hour of `hours`.
    pub ports: Vec<Series>,
    pub scans_per_day: Vec<Day>,
    pub sources: Vec<SourceRow>,
    pub exposed: Vec<ExposedRow>,
    pub changes: Vec<Change>,
    /// The slow scans decided in the period, each with its long record.
    pub slow: Vec<SlowRow>,
}

/// A slow scan (kind `slow`) and why it was decided: its source's (or
/// prefix's) long record, day by day.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SlowRow {
    pub source: String,
    pub decided: String,
    pub ports: u64,
    pub sources: u64,
    pub days: Vec<crate::history::record::RecordDay>,
}

/// Slow scans shown with their record at most.
const SLOW_SHOWN: usize = 20;

/// The slow scans among `events`, latest first, with their long records.
fn slow_rows(
    store: &Store,
    events: &[EventRow],
    since_ms: i64,
) -> Result<Vec<SlowRow>, HistoryError> {
    let mut rows = Vec::new();
    for e in events
        .iter()
        .rev()
        .filter(|e| e.event == "scan_detected" && e.kind.as_deref() == Some("slow"))
        .take(SLOW_SHOWN)
    {
        let v: Value = serde_json::from_str(&e.json).unwrap_or(Value::Null);
        let Some(net) = e
            .source
            .as_deref()
            .and_then(|s| crate::kernel::policy::parse_net(s).ok())
        else {
            continue;
        };
        let record = crate::history::record::record_of(store.connection(), net, since_ms)?;
        rows.push(SlowRow {
            source: e.source.clone().unwrap_or_default(),
            decided: ts_of(e.ts_ms),
            ports: v["ports"].as_u64().unwrap_or(0),
            sources: v["sources"].as_u64().unwrap_or(1),
            days: crate::history::record::by_day(&record),
        });
    }
    Ok(rows)
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Totals {
    pub scans: usize,
    pub sources: usize,
    pub blocks: usize,
    pub probes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Series {
    /// `tcp/22`.
    pub label: String,
    pub total: u64,
    pub probes: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Day {
    /// `2026-11-25`.
    pub day: String,
    pub kinds: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SourceRow {
    pub source: String,
    pub kind: String,
    pub scans: u64,
    pub ports: u64,
    pub probes: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// Blocked at some time in the period.
    pub blocked: bool,
    /// The end of the block in force as the report is made (Unix time,
    /// RFC 3339); absent when no block holds it now (expired, lifted).
    pub blocked_until: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ExposedRow {
    pub proto: String,
    pub port: u16,
    pub address: String,
    pub service: Option<String>,
    pub risk: Option<String>,
    pub process: Option<String>,
    pub probes: u64,
    pub sources: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Change {
    pub ts: String,
    /// `port_opened` or `port_closed`.
    pub event: String,
    pub proto: String,
    pub port: u16,
    pub address: String,
    pub process: Option<String>,
    pub risk: Option<String>,
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// The last second RFC 3339's four-digit years can write
/// (9999-12-31T23:59:59Z).
const LAST_S: i64 = 253_402_300_799;

/// Unix seconds as RFC 3339; a time before 1970 or past year 9999 (a
/// damaged row) is written as the nearest it can be.
pub(super) fn rfc3339_s(secs: i64) -> String {
    let secs = secs.clamp(0, LAST_S).unsigned_abs();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn ts_of(ms: i64) -> String {
    rfc3339_s(ms.div_euclid(1000))
}

/// The report of everything since `since_ms` (Unix ms), as of `now_ms`.
pub(crate) fn build(store: &Store, since_ms: i64, now_ms: i64) -> Result<Report, HistoryError> {
    let events = store.events(since_ms)?;
    let since_hour = (since_ms / 1000) - (since_ms / 1000).rem_euclid(3600);
    let port_hours = store.port_hours(since_hour)?;
    let hours = hours_covered(&port_hours, &events, since_hour, now_ms);
    let (totals_by_port, ports) = port_series(&port_hours, &hours);
    let mut tally = Tally::default();
    for e in &events {
        tally.add(e);
    }
    let (mut totals, sources, scans_per_day, changes) = tally.finish(now_ms);
    totals.probes = port_hours.iter().map(|p| p.probes).sum();
    let exposed = exposed_rows(store, &totals_by_port)?;
    let slow = slow_rows(store, &events, since_ms)?;
    Ok(Report {
        host: crate::sys::hostname(),
        generated: ts_of(now_ms),
        since: ts_of(since_ms),
        totals,
        hours,
        ports,
        scans_per_day,
        sources,
        exposed,
        changes,
        slow,
    })
}

/// The hours the report covers, each as its first second: from the hour
/// before the first data (within `since_hour`) to now.
fn hours_covered(
    port_hours: &[PortHour],
    events: &[EventRow],
    since_hour: i64,
    now_ms: i64,
) -> Vec<i64> {
    let now_hour = (now_ms / 1000) - (now_ms / 1000).rem_euclid(3600);
    let first_data = port_hours
        .iter()
        .map(|p| p.hour_s)
        .chain(events.iter().map(|e| e.ts_ms / 1000))
        .min();
    let from_hour = first_data.map_or(since_hour, |s| {
        (s - s.rem_euclid(3600) - 3600).clamp(since_hour, now_hour)
    });
    (0..)
        .map(|i| from_hour + i * 3600)
        .take_while(|h| *h <= now_hour)
        .collect()
}

/// Probes and sources per (protocol, port) over the report, and the top
/// ports' probes per hour of `hours`.
type PortTotals = HashMap<(u8, u16), (u64, u64)>;

fn port_series(port_hours: &[PortHour], hours: &[i64]) -> (PortTotals, Vec<Series>) {
    let from_hour = hours.first().copied().unwrap_or_default();
    let name = |proto: u8, port: u16| format!("{}/{port}", crate::audit::proto_name(proto));
    let mut totals_by_port: PortTotals = HashMap::new();
    for p in port_hours {
        let t = totals_by_port.entry((p.proto, p.port)).or_default();
        t.0 += p.probes;
        t.1 += p.sources;
    }
    let mut ranked: Vec<((u8, u16), (u64, u64))> =
        totals_by_port.iter().map(|(k, v)| (*k, *v)).collect();
    ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
    let ports = ranked
        .iter()
        .take(TOP_PORTS)
        .map(|((proto, port), (total, _))| {
            let mut probes = vec![0u64; hours.len()];
            for p in port_hours
                .iter()
                .filter(|p| p.proto == *proto && p.port == *port)
            {
                if let Ok(i) = usize::try_from((p.hour_s - from_hour) / 3600)
                    && let Some(slot) = probes.get_mut(i)
                {
                    *slot += p.probes;
                }
            }
            Series {
                label: name(*proto, *port),
                total: *total,
                probes,
            }
        })
        .collect();
    (totals_by_port, ports)
}

/// Scans per day by kind, sources, blocks and port changes, counted from
/// the events one by one.
#[derive(Default)]
struct Tally {
    days: BTreeMap<String, BTreeMap<String, u64>>,
    sources: HashMap<String, SourceRow>,
    /// When each source's latest block ends (None once lifted), Unix ms.
    block_ends: HashMap<String, Option<i64>>,
    changes: Vec<Change>,
    totals: Totals,
}

impl Tally {
    fn add(&mut self, e: &EventRow) {
        let v: Value = serde_json::from_str(&e.json).unwrap_or(Value::Null);
        let ts = ts_of(e.ts_ms);
        match e.event.as_str() {
            "scan_detected" => self.detected(e, &v, ts),
            "scan_ended" => {
                if let Some(row) = e.source.as_ref().and_then(|s| self.sources.get_mut(s)) {
                    row.last_seen = ts;
                    row.ports = row.ports.max(v["ports"].as_u64().unwrap_or(0));
                    row.probes = row.probes.max(v["probes"].as_u64().unwrap_or(0));
                }
            }
            "blocked" if v["dry_run"] != true => {
                self.totals.blocks += 1;
                if let Some(row) = e.source.as_ref().and_then(|s| self.sources.get_mut(s)) {
                    row.blocked = true;
                }
                let ttl_ms = v["ttl_s"].as_i64().unwrap_or(0).saturating_mul(1000);
                if let Some(source) = &e.source {
                    self.block_ends
                        .insert(source.clone(), Some(e.ts_ms.saturating_add(ttl_ms)));
                }
            }
            "unblocked" => {
                if let Some(source) = &e.source {
                    self.block_ends.insert(source.clone(), None);
                }
            }
            "port_opened" | "port_closed" => self.changes.push(Change {
                ts,
                event: e.event.clone(),
                proto: e.proto.clone().unwrap_or_default(),
                port: e.port.unwrap_or(0),
                address: text(&v["address"]).unwrap_or_default(),
                process: text(&v["process"]),
                risk: text(&v["risk"]),
            }),
            _ => {}
        }
    }

    fn detected(&mut self, e: &EventRow, v: &Value, ts: String) {
        self.totals.scans += 1;
        let kind = e.kind.clone().unwrap_or_else(|| "mixed".into());
        *self
            .days
            .entry(ts[..10].to_owned())
            .or_default()
            .entry(kind.clone())
            .or_default() += 1;
        let source = e.source.clone().unwrap_or_default();
        let row = self
            .sources
            .entry(source.clone())
            .or_insert_with(|| SourceRow {
                source,
                kind: kind.clone(),
                scans: 0,
                ports: 0,
                probes: 0,
                first_seen: ts.clone(),
                last_seen: ts.clone(),
                blocked: false,
                blocked_until: None,
            });
        row.scans += 1;
        row.kind = kind;
        row.last_seen = ts;
        row.ports = row.ports.max(v["ports"].as_u64().unwrap_or(0));
        row.probes = row.probes.max(v["probes"].as_u64().unwrap_or(0));
    }

    /// The totals, the top sources (with the blocks still in force at
    /// `now_ms`), scans per day and port changes.
    fn finish(mut self, now_ms: i64) -> (Totals, Vec<SourceRow>, Vec<Day>, Vec<Change>) {
        for row in self.sources.values_mut() {
            if let Some(Some(end)) = self.block_ends.get(&row.source).filter(|_| row.blocked)
                && *end > now_ms
            {
                row.blocked_until = Some(ts_of(*end));
            }
        }
        self.totals.sources = self.sources.len();
        let mut sources: Vec<SourceRow> = self.sources.into_values().collect();
        sources.sort_by(|a, b| (b.scans, b.ports, &a.source).cmp(&(a.scans, a.ports, &b.source)));
        sources.truncate(TOP_SOURCES);
        let days = self
            .days
            .into_iter()
            .map(|(day, kinds)| Day { day, kinds })
            .collect();
        (self.totals, sources, days, self.changes)
    }
}

/// The exposed listening ports as the history last saw them, with the
/// probes each had over the report.
fn exposed_rows(
    store: &Store,
    totals_by_port: &PortTotals,
) -> Result<Vec<ExposedRow>, HistoryError> {
    Ok(store
        .listening()?
        .into_iter()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(&l.json).unwrap_or(Value::Null);
            if v["exposed"] == false {
                return None;
            }
            let proto = crate::audit::proto_number(&l.proto);
            let (probes, sources) = totals_by_port
                .get(&(proto, l.port))
                .copied()
                .unwrap_or_default();
            Some(ExposedRow {
                proto: l.proto,
                port: l.port,
                address: l.address,
                service: text(&v["service"]),
                risk: text(&v["risk"]),
                process: text(&v["process"]),
                probes,
                sources,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::store::{ListeningRow, Record};

    pub(super) fn sample(name: &str) -> (Store, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("scanner-report-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("h.db");
        let mut s = Store::open(&path).unwrap();
        let h0 = 1_795_600_800; // an hour start
        let ev = |ms: i64, event: &str, source: &str, json: Value| {
            Record::Event(EventRow {
                ts_ms: ms,
                event: event.into(),
                source: Some(source.into()),
                kind: json["kind"].as_str().map(str::to_owned),
                proto: json["proto"].as_str().map(str::to_owned),
                port: json["port"].as_u64().map(|p| p as u16),
                json: json.to_string(),
                id: 0,
                probed: Vec::new(),
            })
        };
        s.write(&[
            ev(h0 * 1000 + 5, "scan_detected", "198.18.0.1", serde_json::json!({"kind":"syn","ports":4,"probes":4})),
            ev(h0 * 1000 + 9, "blocked", "198.18.0.1", serde_json::json!({"dry_run":false,"ttl_s":10800})),
            ev(h0 * 1000 + 3_700_000, "scan_detected", "198.18.0.5", serde_json::json!({"kind":"fin","ports":2,"probes":2})),
            ev(h0 * 1000 + 3_800_000, "port_opened", "", serde_json::json!({"proto":"tcp","port":23,"address":"0.0.0.0","risk":"Telnet: cleartext"})),
            Record::Probes(vec![
                PortHour { hour_s: h0, proto: 6, port: 22, probes: 30, sources: 3 },
                PortHour { hour_s: h0 + 3600, proto: 6, port: 23, probes: 50, sources: 2 },
            ]),
            Record::Listening(vec![ListeningRow {
                proto: "tcp".into(),
                port: 23,
                address: "0.0.0.0".into(),
                json: serde_json::json!({"exposed":true,"service":"telnet","risk":"Telnet: cleartext","process":"telnetd"}).to_string(),
            }]),
        ])
        .unwrap();
        (s, dir)
    }

    #[test]
    fn times_a_damaged_row_holds_are_written_clamped() {
        assert_eq!(ts_of(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(ts_of(-5), "1970-01-01T00:00:00Z");
        assert_eq!(ts_of(1_796_598_000_123), "2026-12-06T23:00:00Z");
    }

    #[test]
    fn the_report_gathers_ports_days_sources_exposure_and_changes() {
        let (s, dir) = sample("model");
        let h0 = 1_795_600_800i64;
        let r = build(&s, h0 * 1000, (h0 + 7200) * 1000).unwrap();
        assert_eq!(r.hours.len(), 3);
        assert_eq!(r.ports[0].label, "tcp/23", "most probed first");
        assert_eq!(r.ports[0].probes, vec![0, 50, 0]);
        assert_eq!(
            (
                r.totals.scans,
                r.totals.sources,
                r.totals.blocks,
                r.totals.probes
            ),
            (2, 2, 1, 80)
        );
        assert_eq!(r.scans_per_day.len(), 1);
        assert_eq!(r.scans_per_day[0].kinds.get("fin"), Some(&1));
        let first = r.sources.iter().find(|s| s.source == "198.18.0.1").unwrap();
        assert!(first.blocked && first.kind == "syn");
        assert_eq!(
            first.blocked_until.as_deref(),
            Some("2026-11-25T13:00:00Z"),
            "the hour's block holds as of the report"
        );
        let r_later = build(&s, h0 * 1000, (h0 + 4 * 3600) * 1000).unwrap();
        let first = r_later
            .sources
            .iter()
            .find(|s| s.source == "198.18.0.1")
            .unwrap();
        assert!(
            first.blocked && first.blocked_until.is_none(),
            "expired since"
        );
        // A week asked for, two hours of data: the chart starts an hour
        // before the data, not seven days back.
        let week = build(&s, (h0 - 7 * 86_400) * 1000, (h0 + 7200) * 1000).unwrap();
        assert_eq!(week.hours.first(), Some(&(h0 - 3600)));
        assert_eq!(week.ports[0].probes, vec![0, 0, 50, 0]);
        assert_eq!(r.exposed[0].probes, 50);
        assert_eq!(r.exposed[0].service.as_deref(), Some("telnet"));
        assert_eq!(
            (r.changes[0].event.as_str(), r.changes[0].port),
            ("port_opened", 23)
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
