//! The daemon's side of the history (see `history`): the file opened at
//! start (a file that cannot be used is a warning, never a stop), probes
//! per port added to their hour, the last hour's snapshots kept and taken
//! back at start, and the listening ports watched for changes
//! (`port_opened` / `port_closed` events).

use std::{
    borrow::Cow,
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime},
};

use scanner_common::{PortHits, port_of_hits_index};

use crate::{
    audit::{self, AuditRow, listeners::Listener},
    config::settings::Settings,
    daemon::respond::{Output, write},
    detect::hits::{PortHistory, Snapshot},
    history::{
        ListeningRow, PortHour, Record, Store, hour_of,
        snapshots::{KEEP_MS, KeptSnapshot},
        unix_ms,
        writer::Writer,
    },
    kernel::maps::Maps,
    sinks::event::{Event, PortEvent, PortName, timestamp},
};

/// How often probes per port are added to their hour.
const PORT_HOURS_EVERY: Duration = Duration::from_secs(60);

/// The history as the daemon opened it.
#[derive(Default)]
pub(crate) struct Opened {
    pub writer: Option<Writer>,
    /// The listening sockets it last recorded (to report what changed
    /// while no daemon ran).
    pub listening: Option<Vec<ListeningRow>>,
    /// The probes-per-port snapshots of the last hour, of the counts the
    /// kernel holds now.
    pub snapshots: Vec<KeptSnapshot>,
}

/// Opens the history the settings ask for. A file that cannot be used is
/// logged, and the daemon runs without.
pub(crate) fn open(settings: &Settings, counts: &str) -> Opened {
    let Some(path) = settings.history_path() else {
        return Opened::default();
    };
    match Store::open(&path) {
        Ok(store) => {
            let listening = store.listening().ok().filter(|l| !l.is_empty());
            let since = unix_ms(SystemTime::now()) - KEEP_MS;
            let snapshots = store.snapshots(counts, since).unwrap_or_else(|e| {
                tracing::warn!("reading the last hour's probes per port from the history: {e}");
                Vec::new()
            });
            tracing::info!(path = %path.display(), "keeping history");
            let retention = settings.file.report.history_retention;
            Opened {
                writer: Some(Writer::spawn(store, path, retention)),
                listening,
                snapshots,
            }
        }
        Err(e) => {
            tracing::warn!(
                "history off: {:#}; detection and blocking go on",
                anyhow::Error::from(e)
            );
            Opened::default()
        }
    }
}

/// Probes per port in the last hour (`scanner ports --probed`): snapshots
/// of the kernel's counts every five minutes, kept in the history so a
/// restarted daemon's hour still covers the hour.
pub(crate) struct LastHour {
    hits: PortHistory,
    /// The identity of the counts (see `Maps::counts_identity`).
    counts: String,
}

impl LastHour {
    /// Takes back the snapshots `kept` (an earlier daemon's), then one of
    /// the counts as they stand, before any probe this daemon's program
    /// sees.
    pub(crate) fn start(
        maps: &Maps,
        counts: String,
        kept: Vec<KeptSnapshot>,
        out: &Output,
    ) -> Self {
        let mut last = Self {
            hits: PortHistory::default(),
            counts,
        };
        let now_ms = unix_ms(SystemTime::now());
        let aged: Vec<(Duration, Snapshot)> = kept
            .into_iter()
            .filter_map(|k| {
                let age = u64::try_from(now_ms - k.taken_ms).ok()?;
                Some((Duration::from_millis(age), k.ports))
            })
            .collect();
        match maps.port_hits() {
            Ok(current) => {
                let restored = aged.len();
                last.hits.restore(Instant::now(), aged, &current);
                if restored > 0 {
                    tracing::debug!(
                        restored,
                        "probes per port: the last hour taken back from the history"
                    );
                }
                last.record(out, &current);
            }
            Err(e) => tracing::warn!("reading probes per port: {:#}", anyhow::Error::from(e)),
        }
        last
    }

    /// A snapshot when one is due (every five minutes), kept in the history.
    pub(crate) fn refresh(&mut self, maps: &Maps, out: &Output) {
        if !self.hits.due(Instant::now()) {
            return;
        }
        match maps.port_hits() {
            Ok(current) => self.record(out, &current),
            Err(e) => tracing::warn!("reading probes per port: {:#}", anyhow::Error::from(e)),
        }
    }

    fn record(&mut self, out: &Output, current: &[PortHits]) {
        let Some(snapshot) = self.hits.record(Instant::now(), current) else {
            return;
        };
        if let Some(writer) = out.reporter.history() {
            writer.send(Record::Snapshot(KeptSnapshot {
                taken_ms: unix_ms(SystemTime::now()),
                counts: self.counts.clone(),
                ports: snapshot.clone(),
            }));
        }
    }

    pub(crate) fn hits(&self) -> &PortHistory {
        &self.hits
    }
}

/// Probes per port since the last look, added to the current hour.
pub(crate) struct PortHours {
    last: Option<Vec<PortHits>>,
    at: Option<Instant>,
}

impl PortHours {
    /// Starts from the counts as they are now: probes before this daemon
    /// are not this hour's.
    pub(crate) fn new(maps: &Maps) -> Self {
        Self {
            last: maps.port_hits().ok(),
            at: Some(Instant::now()),
        }
    }

    /// Records the probes since the last time, every minute (or `now`:
    /// the daemon is stopping).
    pub(crate) fn record(&mut self, maps: &Maps, out: &Output, force: bool) {
        let Some(writer) = out.reporter.history() else {
            return;
        };
        if !force && self.at.is_some_and(|t| t.elapsed() < PORT_HOURS_EVERY) {
            return;
        }
        self.at = Some(Instant::now());
        let Ok(now) = maps.port_hits() else {
            return;
        };
        let hour_s = hour_of(SystemTime::now());
        let mut hours = Vec::new();
        if let Some(last) = &self.last {
            for (i, (n, l)) in now.iter().zip(last).enumerate() {
                // A count that went down was reset (maps made anew).
                let probes = n.probes.checked_sub(l.probes).unwrap_or(n.probes);
                if probes == 0 {
                    continue;
                }
                let sources = n.sources.checked_sub(l.sources).unwrap_or(n.sources);
                let (proto, port) = port_of_hits_index(i as u32);
                hours.push(PortHour {
                    hour_s,
                    proto,
                    port,
                    probes,
                    sources,
                });
            }
        }
        // One record for the minute: a scan of every port is one record.
        if !hours.is_empty() {
            writer.send(Record::Probes(hours));
        }
        self.last = Some(now);
    }
}

type Key = (&'static str, u16, String);

/// The listening sockets as last seen, to tell what changed.
pub(crate) struct Listening {
    known: BTreeMap<Key, AuditRow>,
}

/// The listeners but the daemon's own (its metrics endpoint): they would
/// come and go as port events at every start and stop.
fn not_ours(listeners: &[Listener]) -> Vec<Listener> {
    let own = audit::own_sockets();
    listeners
        .iter()
        .filter(|l| l.inode == 0 || !own.contains(&l.inode))
        .copied()
        .collect()
}

fn key(r: &AuditRow) -> Key {
    (r.proto, r.port, r.address.clone())
}

impl Listening {
    /// Starts from what the history recorded last (changes since are
    /// reported at the first look), else from what listens now.
    pub(crate) fn new(stored: Option<Vec<ListeningRow>>, listeners: &[Listener]) -> (Self, bool) {
        let listeners = &not_ours(listeners);
        match stored {
            Some(rows) => {
                let known = rows
                    .iter()
                    .filter_map(|r| serde_json::from_str::<StoredRow>(&r.json).ok())
                    .map(|r| r.into_row())
                    .map(|r| (key(&r), r))
                    .collect();
                (Self { known }, true)
            }
            None => {
                let rows = audit::rows(listeners, &audit::socket_owners(), None);
                (
                    Self {
                        known: rows.into_iter().map(|r| (key(&r), r)).collect(),
                    },
                    false,
                )
            }
        }
    }

    /// Compares `listeners` with what was known: an event for each socket
    /// that appeared or went away, and the new set into the history.
    pub(crate) fn update(&mut self, out: &mut Output, listeners: &[Listener], record_anyway: bool) {
        let listeners = &not_ours(listeners);
        let now: std::collections::BTreeSet<Key> = listeners
            .iter()
            .map(|l| (audit::proto_name(l.proto), l.port, l.addr.to_string()))
            .collect();
        let known: std::collections::BTreeSet<Key> = self.known.keys().cloned().collect();
        if now == known {
            if record_anyway {
                self.record(out);
            }
            return;
        }
        // Owners only when something changed: it walks /proc.
        let rows = audit::rows(listeners, &audit::socket_owners(), None);
        let current: BTreeMap<Key, AuditRow> = rows.into_iter().map(|r| (key(&r), r)).collect();
        for (k, row) in &current {
            if !self.known.contains_key(k) {
                emit(out, PortName::Opened, row);
            }
        }
        for (k, row) in &self.known {
            if !current.contains_key(k) {
                emit(out, PortName::Closed, row);
            }
        }
        self.known = current;
        self.record(out);
    }

    fn record(&self, out: &Output) {
        if let Some(writer) = out.reporter.history() {
            let rows = self
                .known
                .values()
                .map(|r| ListeningRow {
                    proto: r.proto.to_owned(),
                    port: r.port,
                    address: r.address.clone(),
                    json: serde_json::to_string(r).unwrap_or_default(),
                })
                .collect();
            writer.send(Record::Listening(rows));
        }
    }
}

fn emit(out: &mut Output, event: PortName, row: &AuditRow) {
    if event == PortName::Opened {
        tracing::info!(port = %format!("{}/{}", row.proto, row.port), address = %row.address, "now listening");
    } else {
        tracing::info!(port = %format!("{}/{}", row.proto, row.port), address = %row.address, "no longer listening");
    }
    write(
        &mut out.reporter,
        &Event::Port(PortEvent {
            ts: timestamp(SystemTime::now()),
            event,
            proto: Cow::Borrowed(row.proto),
            port: row.port,
            address: row.address.clone(),
            all_addresses: row.all_addresses,
            exposed: row.exposed,
            process: row.process.clone(),
            pid: row.pid,
            service: row.service.map(Cow::Borrowed),
            risk: row.risk.map(Cow::Borrowed),
        }),
    );
}

/// An audit row as stored (strings owned: read back from the file).
#[derive(serde::Deserialize)]
struct StoredRow {
    proto: String,
    port: u16,
    address: String,
    #[serde(default)]
    all_addresses: bool,
    #[serde(default)]
    exposed: bool,
    #[serde(default)]
    process: Option<String>,
    #[serde(default)]
    pid: Option<u32>,
}

impl StoredRow {
    /// As an audit row; the service and risk come from the table again.
    fn into_row(self) -> AuditRow {
        let proto = audit::proto_number(&self.proto);
        let service = audit::services::lookup(proto, self.port);
        AuditRow {
            proto: audit::proto_name(proto),
            port: self.port,
            address: self.address,
            all_addresses: self.all_addresses,
            exposed: self.exposed,
            service: service.map(|s| s.name),
            risk: service.and_then(|s| s.risk),
            process: self.process,
            pid: self.pid,
            probes: None,
            sources: None,
            probes_last_hour: None,
            sources_last_hour: None,
        }
    }
}
