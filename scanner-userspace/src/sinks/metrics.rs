//! Prometheus metrics (`--metrics-listen`): the kernel's packet counters by
//! interface, what the daemon tracks, detects and blocks, and how long a
//! poll takes. Served as text over plain HTTP: `GET /metrics`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::kernel::maps::Counters;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct IfaceLabel {
    pub iface: String,
}

/// What became of a probe the signals read: `sent`, `client`, `repeat`,
/// `limited`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OriginLabel {
    pub origin: String,
}

/// What the CrowdSec tasks did, as totals since they started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FleetFigures {
    /// Unix time of the last successful pull (0: none yet).
    pub last_sync_s: u64,
    pub pull_errors: u64,
    pub push_errors: u64,
    pub pushed: u64,
    pub push_dropped: u64,
    pub queued: usize,
}

/// The CrowdSec metrics (0 while the `[crowdsec]` section is off).
#[derive(Debug, Clone, Default)]
struct FleetMetrics {
    last_sync: Gauge,
    queue: Gauge,
    pull_errors: Counter,
    push_errors: Counter,
    pushed: Counter,
    push_dropped: Counter,
    /// Totals already added.
    last: FleetFigures,
}

/// The daemon's handles on its metrics; the registry goes to the server.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    seen: Family<IfaceLabel, Counter>,
    passed: Family<IfaceLabel, Counter>,
    dropped: Family<IfaceLabel, Counter>,
    parse_failures: Family<IfaceLabel, Counter>,
    fragments: Family<IfaceLabel, Counter>,
    events_dropped: Counter,
    blocks_refused: Counter,
    sources: Gauge,
    capacity: Gauge,
    fill: Gauge<f64, std::sync::atomic::AtomicU64>,
    detections: Family<KindLabel, Counter>,
    blocks_active: Gauge,
    blocks_by_origin: Family<OriginLabel, Gauge>,
    blocks: Family<ReasonLabel, Counter>,
    fleet: FleetMetrics,
    history_errors: Counter,
    history_written: Counter,
    memory: MemoryMetrics,
    /// History totals already added: (errors, written).
    history_last: (u64, u64),
    syslog_sent: Counter,
    syslog_dropped: Counter,
    syslog_last: (u64, u64),
    probe_signals: Family<OutcomeLabel, Counter>,
    poll: Histogram,
    full_scan: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Kernel totals already added, per interface: the kernel counts from
    /// load (or from before a restart), metrics add the difference.
    last: HashMap<String, Counters>,
    /// The global kernel counters already added.
    last_totals: Counters,
}

/// The long memory's figures, and its totals already added.
#[derive(Debug, Clone, Default)]
struct MemoryMetrics {
    rows: Gauge,
    probes: Counter,
    dropped: Counter,
    capped: Counter,
    last: [u64; 3],
}

impl Metrics {
    /// The metrics and the registry that serves them.
    pub(crate) fn new(capacity: u32) -> (Self, Registry) {
        let m = Self {
            seen: Family::default(),
            passed: Family::default(),
            dropped: Family::default(),
            parse_failures: Family::default(),
            fragments: Family::default(),
            events_dropped: Counter::default(),
            blocks_refused: Counter::default(),
            sources: Gauge::default(),
            capacity: Gauge::default(),
            fill: Gauge::default(),
            detections: Family::default(),
            blocks_active: Gauge::default(),
            blocks_by_origin: Family::default(),
            blocks: Family::default(),
            fleet: FleetMetrics::default(),
            history_errors: Counter::default(),
            history_written: Counter::default(),
            memory: MemoryMetrics::default(),
            history_last: (0, 0),
            syslog_sent: Counter::default(),
            syslog_dropped: Counter::default(),
            syslog_last: (0, 0),
            probe_signals: Family::default(),
            // 100 µs to ~3 s.
            poll: Histogram::new(exponential_buckets(1e-4, 2.0, 16)),
            full_scan: Gauge::default(),
            last: HashMap::new(),
            last_totals: Counters::default(),
        };
        m.capacity.set(i64::from(capacity));
        // Every kind from the start, at 0: `increase()` over the first
        // detection of a kind after a restart sees it.
        for kind in crate::detect::ScanKind::ALL {
            let _ = m.detections.get_or_create(&KindLabel {
                kind: kind.as_str().to_owned(),
            });
        }
        let mut r = Registry::with_prefix("scanner");
        m.register_packets(&mut r);
        m.register_response(&mut r);
        m.register_fleet(&mut r);
        m.register_daemon(&mut r);
        (m, r)
    }

    /// Registers the metrics of the kernel's packet and map counters.
    fn register_packets(&self, r: &mut Registry) {
        r.register(
            "packets_seen",
            "Packets the XDP program saw",
            self.seen.clone(),
        );
        r.register(
            "packets_passed",
            "Packets passed on to the stack",
            self.passed.clone(),
        );
        r.register(
            "packets_dropped",
            "Packets dropped (blocked sources)",
            self.dropped.clone(),
        );
        r.register(
            "parse_failures",
            "Malformed packets (passed)",
            self.parse_failures.clone(),
        );
        r.register(
        "fragments",
        "Fragments other than the first: no transport header, passed or dropped by their source's rules",
        self.fragments.clone(),
    );
        r.register(
            "events_dropped",
            "Decisions the ring buffer had no room for (the poll still finds them)",
            self.events_dropped.clone(),
        );
        r.register(
            "blocks_refused",
            "Blocks the kernel could not add: the block cap was reached",
            self.blocks_refused.clone(),
        );
        r.register(
            "sources_tracked",
            "Sources in the SOURCES map",
            self.sources.clone(),
        );
        r.register(
            "sources_capacity",
            "Sources tracked at most: first-probe slots and admitted sources (LRU beyond)",
            self.capacity.clone(),
        );
        r.register(
            "sources_fill_ratio",
            "Sources tracked over capacity",
            self.fill.clone(),
        );
    }

    /// Registers the metrics of detections and blocks.
    fn register_response(&self, r: &mut Registry) {
        r.register(
            "detections",
            "Scans detected, by kind",
            self.detections.clone(),
        );
        r.register(
            "blocks_active",
            "Sources and prefixes blocked now",
            self.blocks_active.clone(),
        );
        r.register(
            "blocks",
            "Blocks made, by reason (scan, manual, crowdsec)",
            self.blocks.clone(),
        );
        r.register(
            "blocks_enforced",
            "Blocks in force now, by origin (scan, manual, crowdsec)",
            self.blocks_by_origin.clone(),
        );
    }

    /// Registers the metrics of the CrowdSec link.
    fn register_fleet(&self, r: &mut Registry) {
        r.register(
            "crowdsec_last_sync_timestamp_seconds",
            "When decisions were last pulled from the CrowdSec Local API (Unix time; 0: never)",
            self.fleet.last_sync.clone(),
        );
        r.register(
            "crowdsec_push_queue",
            "Alerts waiting to be pushed to the CrowdSec Local API",
            self.fleet.queue.clone(),
        );
        r.register(
            "crowdsec_pull_errors",
            "Failed pulls of CrowdSec decisions",
            self.fleet.pull_errors.clone(),
        );
        r.register(
            "crowdsec_push_errors",
            "Failed alert pushes and logins to the CrowdSec Local API",
            self.fleet.push_errors.clone(),
        );
        r.register(
            "crowdsec_alerts_pushed",
            "Alerts the CrowdSec Local API accepted",
            self.fleet.pushed.clone(),
        );
        r.register(
            "crowdsec_alerts_dropped",
            "Alerts dropped: the outbox full or failing, or refused for good by the Local API",
            self.fleet.push_dropped.clone(),
        );
    }

    /// Registers the metrics of the daemon's own work: the history, polls and full scans.
    fn register_daemon(&self, r: &mut Registry) {
        r.register(
            "syslog_sent",
            "Events sent to the syslog collector ([signals])",
            self.syslog_sent.clone(),
        );
        r.register(
            "syslog_dropped",
            "Events not sent to the syslog collector: its queue was full, or it could not be reached",
            self.syslog_dropped.clone(),
        );
        r.register(
            "probe_signals",
            "Probes the signals read ([signals] probes), by outcome: sent (queued for the collector), client (a client's request to an open port), repeat (within the window), limited (over probe_rate)",
            self.probe_signals.clone(),
        );
        r.register(
            "history_write_errors",
            "History records not written (database error, or the writer behind); detection goes on",
            self.history_errors.clone(),
        );
        r.register(
            "history_records",
            "Records written to the history database",
            self.history_written.clone(),
        );
        r.register(
            "memory_rows",
            "Rows the long memory holds ([slow]: one per source, protocol and port within the window)",
            self.memory.rows.clone(),
        );
        r.register(
            "memory_probes",
            "Probes added to the long memory",
            self.memory.probes.clone(),
        );
        r.register(
            "memory_dropped",
            "Probes the long memory could not take (its queue full, or a write failed)",
            self.memory.dropped.clone(),
        );
        r.register(
            "memory_capped",
            "Rows the long memory forgot before the window ended, past max_rows",
            self.memory.capped.clone(),
        );
        r.register(
            "poll_duration_seconds",
            "Time to read the maps and run detection",
            self.poll.clone(),
        );
        r.register(
            "full_scan_seconds",
            "Time of the last read of every tracked source and prefix",
            self.full_scan.clone(),
        );
    }

    /// Adds what the kernel counted on `iface` since the last update.
    pub(crate) fn packets(&mut self, iface: &str, now: Counters) {
        let label = IfaceLabel {
            iface: iface.to_owned(),
        };
        let last = self.last.entry(iface.to_owned()).or_default();
        let add = |family: &Family<IfaceLabel, Counter>, new: u64, old: u64| {
            // A counter that went backwards was reset (maps recreated).
            let delta = if new >= old { new - old } else { new };
            family.get_or_create(&label).inc_by(delta);
        };
        add(&self.seen, now.seen, last.seen);
        add(&self.passed, now.passed, last.passed);
        add(&self.dropped, now.dropped, last.dropped);
        add(
            &self.parse_failures,
            now.parse_failures,
            last.parse_failures,
        );
        add(&self.fragments, now.fragments, last.fragments);
        *last = now;
    }

    /// Global counters (not per interface).
    pub(crate) fn totals(&mut self, now: Counters) {
        let last = &mut self.last_totals;
        self.events_dropped
            .inc_by(now.events_dropped.saturating_sub(last.events_dropped));
        self.blocks_refused
            .inc_by(now.blocks_refused.saturating_sub(last.blocks_refused));
        *last = now;
    }

    pub(crate) fn sources(&self, tracked: usize) {
        self.sources.set(tracked as i64);
        let capacity = self.capacity.get().max(1) as f64;
        self.fill.set(tracked as f64 / capacity);
    }

    pub(crate) fn detection(&self, kind: &str) {
        self.detections
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub(crate) fn block(&self, reason: &str) {
        self.blocks
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub(crate) fn blocks_active(&self, n: usize) {
        self.blocks_active.set(n as i64);
    }

    /// Blocks in force by origin (every origin is written, 0 included).
    pub(crate) fn blocks_by_origin(&self, counts: &[(&str, usize)]) {
        for (origin, n) in counts {
            self.blocks_by_origin
                .get_or_create(&OriginLabel {
                    origin: (*origin).to_owned(),
                })
                .set(*n as i64);
        }
    }

    /// Adds what the CrowdSec tasks did since the last update.
    pub(crate) fn fleet(&mut self, now: FleetFigures) {
        let f = &mut self.fleet;
        f.last_sync.set(now.last_sync_s as i64);
        f.queue.set(now.queued as i64);
        f.pull_errors
            .inc_by(now.pull_errors.saturating_sub(f.last.pull_errors));
        f.push_errors
            .inc_by(now.push_errors.saturating_sub(f.last.push_errors));
        f.pushed.inc_by(now.pushed.saturating_sub(f.last.pushed));
        f.push_dropped
            .inc_by(now.push_dropped.saturating_sub(f.last.push_dropped));
        f.last = now;
    }

    /// Adds the history writer's totals since the last update.
    pub(crate) fn history(&mut self, errors: u64, written: u64) {
        let (e, w) = self.history_last;
        self.history_errors.inc_by(errors.saturating_sub(e));
        self.history_written.inc_by(written.saturating_sub(w));
        self.history_last = (errors, written);
    }

    /// The long memory's figures as it counts them: rows held, and its
    /// totals of probes taken, dropped and rows capped.
    pub(crate) fn memory(&mut self, rows: u64, totals: [u64; 3]) {
        let m = &mut self.memory;
        m.rows.set(i64::try_from(rows).unwrap_or(i64::MAX));
        for ((counter, last), total) in [&m.probes, &m.dropped, &m.capped]
            .into_iter()
            .zip(&mut m.last)
            .zip(totals)
        {
            counter.inc_by(total.saturating_sub(*last));
            *last = total;
        }
    }

    /// The syslog sender's totals (`[signals]`), as it counts them.
    pub(crate) fn syslog(&mut self, sent: u64, dropped: u64) {
        let (s, d) = self.syslog_last;
        self.syslog_sent.inc_by(sent.saturating_sub(s));
        self.syslog_dropped.inc_by(dropped.saturating_sub(d));
        self.syslog_last = (sent, dropped);
    }

    /// A probe the signals read, and what became of it.
    pub(crate) fn probe_signal(&self, offered: crate::sinks::probes::Offered) {
        use crate::sinks::probes::Offered;
        let outcome = match offered {
            Offered::Send => "sent",
            Offered::Client => "client",
            Offered::Repeat => "repeat",
            Offered::Limited => "limited",
        };
        self.probe_signals
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// The CrowdSec tasks restarted (a reload): their totals start at 0.
    pub(crate) fn fleet_restarted(&mut self) {
        self.fleet.last = FleetFigures::default();
    }

    pub(crate) fn poll_took(&self, d: Duration) {
        self.poll.observe(d.as_secs_f64());
    }

    pub(crate) fn full_scan_took(&self, d: Duration) {
        self.full_scan.set(d.as_secs_f64());
    }
}

/// The registry in Prometheus/OpenMetrics text.
pub(crate) fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut text, registry);
    text
}

/// Serves `GET /metrics` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, &registry)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    // Read the request head only; requests carry no body we need.
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (status, kind, body) = match (parts.next(), parts.next()) {
        (Some("GET"), Some("/metrics")) if wants_openmetrics(&head) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(registry),
        ),
        // What an Accept header without OpenMetrics (or none) asks for.
        (Some("GET"), Some("/metrics")) => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            text_format(&render(registry)),
        ),
        (Some("GET"), Some("/")) => (
            "200 OK",
            "text/plain",
            "scanner: metrics at /metrics\n".into(),
        ),
        (Some("GET"), _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Whether the request's Accept header names OpenMetrics (Prometheus asks
/// for it first; curl and older scrapers ask for nothing or text/plain).
fn wants_openmetrics(head: &[u8]) -> bool {
    String::from_utf8_lossy(head).lines().any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("accept")
                && value.contains("application/openmetrics-text")
        })
    })
}

/// OpenMetrics text as Prometheus text format 0.0.4: a counter's TYPE
/// names its `_total` series, and `# UNIT` and `# EOF` lines (which 0.0.4
/// does not have) go.
fn text_format(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let counter = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"));
        let help_of_counter = |name: &str| open_metrics.contains(&format!("# TYPE {name} counter"));
        if let Some(name) = counter {
            out.push_str(&format!("# TYPE {name}_total counter\n"));
        } else if let Some((name, help)) = line
            .strip_prefix("# HELP ")
            .and_then(|rest| rest.split_once(' '))
            .filter(|(name, _)| help_of_counter(name))
        {
            out.push_str(&format!("# HELP {name}_total {help}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_starts_at_zero() {
        let (_, registry) = Metrics::new(1024);
        let text = render(&registry);
        for kind in crate::detect::ScanKind::ALL {
            let line = format!("scanner_detections_total{{kind=\"{}\"}} 0", kind.as_str());
            assert!(text.contains(&line), "{line} in\n{text}");
        }
    }

    #[test]
    fn text_format_0_0_4_is_served_unless_openmetrics_is_asked_for() {
        let (m, registry) = Metrics::new(1024);
        m.detection("syn");
        let open = render(&registry);
        assert!(open.contains("# TYPE scanner_detections counter") && open.ends_with("# EOF\n"));
        let text = text_format(&open);
        assert!(
            text.contains("# TYPE scanner_detections_total counter"),
            "{text}"
        );
        assert!(text.contains("# HELP scanner_detections_total "), "{text}");
        assert!(
            text.contains("scanner_detections_total{kind=\"syn\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        // Gauges and histograms keep their names.
        assert!(
            text.contains("# TYPE scanner_sources_tracked gauge"),
            "{text}"
        );
        let asks = |accept: &str| {
            wants_openmetrics(
                format!("GET /metrics HTTP/1.1\r\nAccept: {accept}\r\n\r\n").as_bytes(),
            )
        };
        assert!(asks(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        ));
        assert!(!asks("text/plain;version=0.0.4"));
        assert!(!wants_openmetrics(b"GET /metrics HTTP/1.1\r\n\r\n"));
    }

    /// Every `scanner_*` name in `text`.
    fn names_in(text: &str) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(i) = rest.find("scanner_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
        names
    }

    #[test]
    fn the_shipped_dashboard_and_alerts_use_only_metrics_the_daemon_serves() {
        let (mut m, registry) = Metrics::new(1024);
        // Families show once they have a member.
        m.packets("eth0", counters(10, 1));
        m.detection("syn");
        m.block("scan");
        m.blocks_by_origin(&[("scan", 1)]);
        let text = render(&registry);
        // Families, as `# TYPE name kind` lines name them (empty ones too).
        let families: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let dashboard = include_str!("../../../packaging/grafana-dashboard.json");
        let _: serde_json::Value = serde_json::from_str(dashboard).unwrap();
        let alerts = include_str!("../../../packaging/prometheus-alerts.yml");
        let used = names_in(dashboard);
        let used: Vec<String> = used.into_iter().chain(names_in(alerts)).collect();
        assert!(used.len() > 10, "{used:?}");
        for name in used {
            let family = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                families.contains(family) || families.contains(name.as_str()),
                "{name} is not a metric the daemon serves: {families:?}"
            );
        }
    }

    fn counters(seen: u64, dropped: u64) -> Counters {
        Counters {
            seen,
            passed: seen - dropped,
            dropped,
            ..Counters::default()
        }
    }

    #[test]
    fn kernel_totals_become_counters_by_interface() {
        let (mut m, r) = Metrics::new(1000);
        m.packets("eth0", counters(10, 2));
        m.packets("eth0", counters(25, 3));
        m.packets("eth1", counters(4, 0));
        m.sources(250);
        m.detection("syn");
        m.detection("syn");
        m.block("scan");
        m.blocks_active(1);
        m.poll_took(Duration::from_millis(3));
        let text = render(&r);
        assert!(
            text.contains("scanner_packets_seen_total{iface=\"eth0\"} 25"),
            "{text}"
        );
        assert!(
            text.contains("scanner_packets_dropped_total{iface=\"eth0\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("scanner_packets_seen_total{iface=\"eth1\"} 4"),
            "{text}"
        );
        assert!(text.contains("scanner_sources_tracked 250"), "{text}");
        assert!(text.contains("scanner_sources_fill_ratio 0.25"), "{text}");
        assert!(
            text.contains("scanner_detections_total{kind=\"syn\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("scanner_blocks_total{reason=\"scan\"} 1"),
            "{text}"
        );
        assert!(text.contains("scanner_blocks_active 1"), "{text}");
        assert!(
            text.contains("scanner_poll_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_reset_kernel_counter_does_not_go_backwards() {
        let (mut m, r) = Metrics::new(10);
        m.packets("eth0", counters(100, 0));
        m.packets("eth0", counters(5, 0));
        assert!(render(&r).contains("scanner_packets_seen_total{iface=\"eth0\"} 105"));
    }

    #[tokio::test]
    async fn the_endpoint_serves_metrics_over_http() {
        let (m, r) = Metrics::new(10);
        m.detection("fin");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(r)));
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(
            ok.contains("scanner_detections_total{kind=\"fin\"} 1"),
            "{ok}"
        );
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
