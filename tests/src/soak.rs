//! The soak's ledger (`cargo xtask soak`): what it did and what the daemon
//! said, and the verdicts drawn from them: each scan reported once (events,
//! history, Local API), each block enforced and lifted on time, the counts
//! agreeing, every SIGHUP and interface flap answered, no panic, memory and
//! descriptors flat.

use std::time::{Duration, SystemTime};

use serde_json::Value;

/// The second watched interface on the soak's server, removed and added again.
pub const FLAP_IF: &str = "veth-x0";
/// The benign client's address (server B's, on the fleet lab).
pub const CLIENT_V4: &str = crate::crowdsec::FleetLab::B_V4;

/// A block lifted within this of its expiry is on time: the daemon reads
/// expiries at its polls (1 s), a fleet ban's end arrives at a pull (2-3 s).
pub const LIFT_SLACK: Duration = Duration::from_secs(5);
/// Growth allowed after warm-up (issue 25): 1 MiB.
pub const GROWTH_LIMIT_KIB: i64 = 1024;

/// One scan the soak ran.
pub struct ScanRun {
    pub family: &'static str,
    pub source: String,
    pub error: Option<String>,
}

/// When a source's connection was tried.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Moment {
    /// Before its scan: it must get an answer (or the checks below prove
    /// nothing).
    Before,
    /// While it is blocked: no answer.
    Blocked,
    /// After its last block was lifted: an answer again.
    Lifted,
}

/// A connection from a scan's source to the server's open port.
pub struct BlockProbe {
    pub source: String,
    pub moment: Moment,
    pub answered: bool,
}

/// One daemon process: when it watched, what it said, how it ended.
#[derive(Default)]
pub struct Instance {
    pub started: Option<SystemTime>,
    pub ended: Option<SystemTime>,
    pub events: Vec<Value>,
    pub log: Vec<String>,
    /// How it ended: "SIGTERM, exit 0", "kill -9", ...
    pub end: String,
    pub clean: bool,
    /// (seconds since the soak's start, RSS KiB, open fds).
    pub samples: Vec<(f64, i64, i64)>,
}

/// Every count the soak keeps of what it did.
#[derive(Default)]
pub struct Actions {
    pub sighups: usize,
    pub flaps: usize,
    pub lapi_restarts: usize,
    pub bursts: usize,
    pub flood_frames: usize,
    pub restarts: usize,
    pub kills: usize,
    pub status_ok: usize,
    pub status_failed: usize,
    /// Blocks whose expiry `scanner list` showed moving with no new
    /// `blocked` event.
    pub moved: usize,
}

/// The soak's record, read at the end.
pub struct Ledger {
    pub scans: Vec<ScanRun>,
    pub probes: Vec<BlockProbe>,
    pub instances: Vec<Instance>,
    pub actions: Actions,
    pub history: Vec<Value>,
    pub alerts: Vec<Value>,
    pub benign_ok: u64,
    pub benign_failed: u64,
    pub benign_error: String,
    pub outbox_left: Option<u64>,
    pub end: SystemTime,
    pub warmup: Duration,
}

/// One verdict: what was measured, against what, and whether it holds.
pub struct Check {
    pub what: String,
    pub measured: String,
    pub met: bool,
}

/// How one scan was reported.
pub struct ScanReport {
    pub family: &'static str,
    pub source: String,
    pub kind: String,
    pub events: usize,
    pub history: usize,
    pub alerts: usize,
}

/// How many of `events` are named `name`.
fn named<'a>(events: impl IntoIterator<Item = &'a Value>, name: &str) -> usize {
    events.into_iter().filter(|e| e["event"] == name).count()
}

fn ts(e: &Value) -> Option<SystemTime> {
    humantime::parse_rfc3339(e["ts"].as_str()?).ok()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Ledger {
    /// Every event of every instance, in order.
    pub fn events(&self) -> impl Iterator<Item = &Value> {
        self.instances.iter().flat_map(|i| i.events.iter())
    }

    fn count(events: &[&Value], name: &str, source: &str) -> usize {
        events
            .iter()
            .filter(|e| e["event"] == name && e["source"] == source)
            .count()
    }

    /// How each scan was reported.
    pub fn scan_reports(&self) -> Vec<ScanReport> {
        let events: Vec<&Value> = self.events().collect();
        let history: Vec<&Value> = self.history.iter().collect();
        self.scans
            .iter()
            .map(|s| ScanReport {
                family: s.family,
                source: s.source.clone(),
                kind: events
                    .iter()
                    .find(|e| e["event"] == "scan_detected" && e["source"] == s.source.as_str())
                    .and_then(|e| e["kind"].as_str())
                    .unwrap_or("-")
                    .to_owned(),
                events: Self::count(&events, "scan_detected", &s.source),
                history: Self::count(&history, "scan_detected", &s.source),
                alerts: self
                    .alerts
                    .iter()
                    .filter(|a| a["source"]["value"] == s.source.as_str())
                    .count(),
            })
            .collect()
    }

    /// Whether a daemon was watching at `t`, and if not when the next began.
    fn watching(&self, t: SystemTime) -> Result<(), Option<SystemTime>> {
        let mut next = None;
        for i in &self.instances {
            let (Some(start), end) = (i.started, i.ended.unwrap_or(self.end)) else {
                continue;
            };
            if start <= t && t <= end {
                return Ok(());
            }
            if start > t && next.is_none_or(|n| start < n) {
                next = Some(start);
            }
        }
        Err(next)
    }

    /// Every block's lift: (lateness in seconds, reason) per block lifted,
    /// and how many expired without a lift and are still active at the end.
    pub fn lifts(&self) -> (Vec<f64>, usize, usize) {
        let events: Vec<&Value> = self
            .events()
            .filter(|e| {
                e["dry_run"] != true && (e["event"] == "blocked" || e["event"] == "unblocked")
            })
            .collect();
        let mut lateness = Vec::new();
        let (mut missing, mut active) = (0, 0);
        for (i, b) in events.iter().enumerate() {
            if b["event"] != "blocked" {
                continue;
            }
            let (Some(at), Some(ttl)) = (ts(b), b["ttl_s"].as_u64()) else {
                continue;
            };
            let expiry = at + Duration::from_secs(ttl);
            let lifted = events[i + 1..]
                .iter()
                .find(|e| e["source"] == b["source"])
                .filter(|e| e["event"] == "unblocked");
            match lifted.and_then(|e| ts(e)) {
                Some(when) => {
                    // A block that expired while no daemon ran is due at the
                    // next start.
                    let due = match self.watching(expiry) {
                        Ok(()) => expiry,
                        Err(next) => next.unwrap_or(expiry).max(expiry),
                    };
                    let late = match when.duration_since(due) {
                        Ok(d) => secs(d),
                        Err(e) => -secs(e.duration()),
                    };
                    lateness.push(late);
                }
                None if expiry + LIFT_SLACK >= self.end => active += 1,
                None => missing += 1,
            }
        }
        (lateness, missing, active)
    }

    /// RSS and fd growth after warm-up in the longest-running instance:
    /// (instance, RSS at warm-up end, RSS at the end, peak, fds at warm-up,
    /// peak fds, minutes measured).
    pub fn growth(&self) -> Option<(usize, i64, i64, i64, i64, i64, f64)> {
        let (n, i) = self
            .instances
            .iter()
            .enumerate()
            .max_by_key(|(_, i)| i.samples.len())?;
        let t0 = i.samples.first()?.0 + secs(self.warmup);
        let after: Vec<&(f64, i64, i64)> = i.samples.iter().filter(|s| s.0 >= t0).collect();
        let first = after.first()?;
        let last = after.last()?;
        // The middle of the first and last minute: one sample is noise.
        let around = |t: f64| {
            let mut v: Vec<i64> = after
                .iter()
                .filter(|s| (s.0 - t).abs() <= 30.0)
                .map(|s| s.1)
                .collect();
            v.sort_unstable();
            v.get(v.len() / 2).copied().unwrap_or(0)
        };
        Some((
            n,
            around(first.0 + 30.0),
            around(last.0 - 30.0),
            after.iter().map(|s| s.1).max().unwrap_or(0),
            first.2,
            after.iter().map(|s| s.2).max().unwrap_or(0),
            (last.0 - first.0) / 60.0,
        ))
    }

    /// Every verdict.
    pub fn checks(&self) -> Vec<Check> {
        let mut out = Vec::new();
        let mut check = |what: &str, measured: String, met: bool| {
            out.push(Check {
                what: what.to_owned(),
                measured,
                met,
            });
        };
        let scans = self.scan_reports();
        let once = scans
            .iter()
            .filter(|s| s.events == 1 && s.history == 1 && s.alerts == 1)
            .count();
        check(
            "every scan reported exactly once: one event, one history row, one Local API alert",
            format!("{once} of {} scans", scans.len()),
            once == scans.len() && !scans.is_empty(),
        );
        let events: Vec<&Value> = self.events().collect();
        let detected = named(events.iter().copied(), "scan_detected");
        let stored = named(self.history.iter(), "scan_detected");
        let distributed = events
            .iter()
            .filter(|e| e["event"] == "scan_detected" && e["kind"] == "distributed")
            .count();
        check(
            "detections agree: events, history rows, Local API alerts",
            format!(
                "{detected} events ({distributed} distributed, from the floods), {stored} rows, {} alerts, {} left in the outbox",
                self.alerts.len(),
                self.outbox_left
                    .map_or("unknown".to_owned(), |n| n.to_string())
            ),
            detected == stored && detected == self.alerts.len() && self.outbox_left == Some(0),
        );
        let ended = named(events.iter().copied(), "scan_ended");
        let ended_stored = named(self.history.iter(), "scan_ended");
        check(
            "ended scans agree: events and history rows",
            format!("{ended} events, {ended_stored} rows"),
            ended == ended_stored,
        );
        let blocked: Vec<&&Value> = events.iter().filter(|e| e["event"] == "blocked").collect();
        let stored_blocks = named(self.history.iter(), "blocked");
        check(
            "blocks agree: events and history rows",
            format!("{} events, {stored_blocks} rows", blocked.len()),
            blocked.len() == stored_blocks,
        );
        let tried = |moment: Moment| -> (usize, usize) {
            let all: Vec<&BlockProbe> = self.probes.iter().filter(|p| p.moment == moment).collect();
            (all.iter().filter(|p| p.answered).count(), all.len())
        };
        let (before, tries) = tried(Moment::Before);
        check(
            "the block check's own connection works: each scan's address answered before its scan",
            format!("{before} of {tries}"),
            before == tries && tries > 0,
        );
        let (leaked, tries) = tried(Moment::Blocked);
        check(
            "every block enforced: a connection from the blocked source gets no answer",
            format!("{} of {tries} checked", tries - leaked),
            leaked == 0 && tries > 0,
        );
        let (freed, tries) = tried(Moment::Lifted);
        check(
            "every lifted block lets its source through again",
            format!("{freed} of {tries} checked"),
            freed == tries && tries > 0,
        );
        let (lateness, missing, active) = self.lifts();
        let worst = lateness.iter().copied().fold(f64::MIN, f64::max);
        let earliest = lateness.iter().copied().fold(f64::MAX, f64::min);
        let on_time = lateness
            .iter()
            .filter(|&&l| l >= -1.5 && l <= secs(LIFT_SLACK))
            .count();
        check(
            "every block lifted at its expiry (within -1.5 s to +5 s; a block that expired while no daemon ran: from the next start)",
            format!(
                "{on_time} of {} on time (from {earliest:+.1} to {worst:+.1} s), {missing} never lifted, {active} still running at the end",
                lateness.len()
            ),
            on_time == lateness.len() && missing == 0 && !lateness.is_empty(),
        );
        check(
            "a block's expiry never moves without a new `blocked` event (`scanner list` every 5 s)",
            format!("{} moved", self.actions.moved),
            self.actions.moved == 0,
        );
        let benign: Vec<&&Value> = events
            .iter()
            .filter(|e| {
                (e["event"] == "scan_detected" || e["event"] == "blocked")
                    && (e["source"] == CLIENT_V4 || e["source"] == crate::crowdsec::LAPI_V4)
            })
            .collect();
        check(
            "benign clients: never decided, every request answered",
            format!(
                "{} decisions, {} requests answered, {} not{}",
                benign.len(),
                self.benign_ok,
                self.benign_failed,
                if self.benign_error.is_empty() {
                    String::new()
                } else {
                    format!(" (last: {})", self.benign_error)
                }
            ),
            benign.is_empty() && self.benign_failed == 0 && self.benign_ok > 0,
        );
        let reloaded = named(events.iter().copied(), "config_reloaded");
        let rejected = named(events.iter().copied(), "config_rejected");
        check(
            "every SIGHUP reloaded",
            format!(
                "{} sent, {reloaded} reloaded, {rejected} rejected",
                self.actions.sighups
            ),
            reloaded == self.actions.sighups && rejected == 0,
        );
        let gone = events
            .iter()
            .filter(|e| {
                e["event"] == "detached" && e["iface"] == FLAP_IF && e["reason"] == "removed"
            })
            .count();
        let back = events
            .iter()
            .filter(|e| {
                e["event"] == "attached" && e["iface"] == FLAP_IF && e["reason"] == "reappeared"
            })
            .count();
        check(
            "an interface removed and back: reported and watched again every time",
            format!(
                "{} flaps, {gone} detached, {back} attached again",
                self.actions.flaps
            ),
            gone == self.actions.flaps && back == self.actions.flaps,
        );
        let panics: usize = self
            .instances
            .iter()
            .map(|i| i.log.iter().filter(|l| l.contains("panicked")).count())
            .sum();
        let unclean: Vec<&str> = self
            .instances
            .iter()
            .filter(|i| !i.clean)
            .map(|i| i.end.as_str())
            .collect();
        check(
            "no panic; every stop clean (exit 0)",
            format!(
                "{panics} panics; {} instances, ends: {}",
                self.instances.len(),
                self.instances
                    .iter()
                    .map(|i| i.end.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            panics == 0 && unclean.is_empty(),
        );
        check(
            "the control socket answered every `scanner status` and `scanner list`",
            format!(
                "{} answered, {} not",
                self.actions.status_ok, self.actions.status_failed
            ),
            self.actions.status_failed == 0 && self.actions.status_ok > 0,
        );
        match self.growth() {
            Some((n, warm, last, peak, fds0, fds_peak, minutes)) => {
                check(
                    "RSS flat after warm-up: growth at most 1 MiB",
                    format!(
                        "instance {}, {minutes:.0} min after warm-up: {warm} KiB to {last} KiB ({:+} KiB), peak {peak} KiB",
                        n + 1,
                        last - warm
                    ),
                    last - warm <= GROWTH_LIMIT_KIB,
                );
                check(
                    "open file descriptors flat after warm-up",
                    format!("{fds0} at warm-up, at most {fds_peak}"),
                    fds_peak <= fds0 + 2,
                );
            }
            None => check(
                "RSS flat after warm-up: growth at most 1 MiB",
                "no instance ran past its warm-up".to_owned(),
                false,
            ),
        }
        out
    }
}

/// Where the soak's section of BENCHMARKS.md begins and ends: `cargo xtask
/// bench` writes the rest of the file and keeps this part as it was.
pub const BEGIN: &str = "<!-- soak: written by cargo xtask soak -->";
pub const END: &str = "<!-- /soak -->";

/// The soak's section of a BENCHMARKS.md text, markers included.
pub fn section(md: &str) -> Option<&str> {
    let start = md.find(BEGIN)?;
    let end = start + md[start..].find(END)? + END.len();
    Some(&md[start..end])
}

/// `md` with its soak section replaced by `new` (markers included), or
/// `new` appended when it has none.
pub fn splice(md: &str, new: &str) -> String {
    match section(md) {
        Some(old) => md.replacen(old, new, 1),
        None => format!("{}\n\n{new}\n", md.trim_end()),
    }
}

/// A lateness figure as text.
pub fn seconds(v: f64) -> String {
    format!("{v:+.1} s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(events: Vec<Value>, end: SystemTime) -> Ledger {
        Ledger {
            scans: Vec::new(),
            probes: Vec::new(),
            instances: vec![Instance {
                started: Some(SystemTime::UNIX_EPOCH),
                ended: Some(end),
                events,
                ..Instance::default()
            }],
            actions: Actions::default(),
            history: Vec::new(),
            alerts: Vec::new(),
            benign_ok: 0,
            benign_failed: 0,
            benign_error: String::new(),
            outbox_left: Some(0),
            end,
            warmup: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_soak_section_is_replaced_or_appended() {
        let first = format!("{BEGIN}\nnew\n{END}");
        let fresh = splice("# Benchmarks\n", &first);
        assert_eq!(fresh, format!("# Benchmarks\n\n{first}\n"));
        let again = splice(&format!("{fresh}tail\n"), &format!("{BEGIN}\nnewer\n{END}"));
        assert_eq!(
            again,
            format!("# Benchmarks\n\n{BEGIN}\nnewer\n{END}\ntail\n")
        );
        assert_eq!(
            section(&again),
            Some(format!("{BEGIN}\nnewer\n{END}").as_str())
        );
        assert_eq!(section("# Benchmarks"), None);
    }

    #[test]
    fn a_block_lifted_late_or_never_is_seen() {
        let at = |s: u64| {
            humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_secs(s))
                .to_string()
        };
        let events = vec![
            serde_json::json!({"event": "blocked", "source": "a", "ttl_s": 60, "ts": at(100)}),
            serde_json::json!({"event": "unblocked", "source": "a", "ts": at(161)}),
            serde_json::json!({"event": "blocked", "source": "b", "ttl_s": 60, "ts": at(100)}),
            serde_json::json!({"event": "blocked", "source": "c", "ttl_s": 60, "ts": at(950)}),
        ];
        let l = ledger(events, SystemTime::UNIX_EPOCH + Duration::from_secs(1000));
        let (lateness, missing, active) = l.lifts();
        assert_eq!(lateness, vec![1.0]);
        assert_eq!((missing, active), (1, 1));
    }
}
