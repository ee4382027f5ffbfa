//! `cargo xtask soak --minutes N`: the daemon (release build) on a server
//! of the fleet lab, with blocking, history and a real CrowdSec Local API,
//! under everything at once for N minutes: benign clients throughout, real
//! scans of every family each from an address of its own, spoofed floods
//! in bursts, the Local API stopped and started again, a SIGHUP every
//! minute (each changing the `[crowdsec]` section), a watched interface
//! removed and added again, two restarts and one kill -9, each just after
//! a detection. Then it checks what the ledger ([`scanner_tests::soak`])
//! says and writes the soak's section of BENCHMARKS.md.

mod lab;
mod load;
mod report;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use scanner_tests::{
    Daemon,
    privilege::is_root,
    soak::{Actions, BlockProbe, Instance, Ledger, Moment, ScanRun},
};
use scanner_userspace::testing::{Request, call};
use serde_json::Value;

use crate::{lab::SoakLab, load::FAMILIES};

/// How long a block lasts: short, so that many are lifted within the run.
const BLOCK_TTL: Duration = Duration::from_secs(90);
/// Time after which memory is expected to be flat in an instance.
const WARMUP: Duration = Duration::from_secs(120);
/// Frames per flood burst.
const BURST: usize = 50_000;
/// Pause between scans.
const SCAN_GAP: Duration = Duration::from_secs(10);
/// How long the Local API stays down, and the interface away.
const LAPI_DOWN: Duration = Duration::from_secs(30);
const UNPLUGGED: Duration = Duration::from_secs(10);

/// When each kind of disturbance is due, in seconds from the start.
struct Schedule {
    total: f64,
    scans_until: f64,
    restarts: Vec<(f64, bool)>,
    lapi: Vec<f64>,
    flaps: Vec<f64>,
    bursts: Vec<f64>,
}

impl Schedule {
    fn new(minutes: u64) -> Self {
        let total = minutes as f64 * 60.0;
        let every = |n: u32, offset: f64| -> Vec<f64> {
            (0..n)
                .map(|k| total * f64::from(k) / f64::from(n) + offset)
                .collect()
        };
        Self {
            total,
            // The last blocks run out before the end, to see them lifted.
            scans_until: total - BLOCK_TTL.as_secs_f64() - 30.0,
            // SIGTERM at a sixth and a third, kill -9 at half way.
            restarts: vec![
                (total / 6.0, false),
                (total / 3.0, false),
                (total / 2.0, true),
            ],
            lapi: every(5, 30.0),
            flaps: every(6, 100.0),
            bursts: every(10, 45.0),
        }
    }
}

/// Pops the first of `times` that is due at `now`.
fn due(times: &mut Vec<f64>, now: f64) -> bool {
    match times.first() {
        Some(&t) if t <= now => {
            times.remove(0);
            true
        }
        _ => false,
    }
}

struct Soak {
    lab: SoakLab,
    daemon: Daemon,
    instance: Instance,
    /// stdout lines of the running daemon already read.
    read: usize,
    finished: Vec<Instance>,
    scans: Vec<ScanRun>,
    probes: Vec<BlockProbe>,
    actions: Actions,
    sources: HashSet<String>,
    /// Sources whose block was lifted: checked once their last block ends.
    lifted: Vec<(String, Instant)>,
    /// Sources blocked now, as the events say.
    blocked: HashSet<String>,
    /// Each block's expiry as `scanner list` first showed it.
    expiries: HashMap<String, SystemTime>,
    start: Instant,
}

impl Soak {
    fn start() -> anyhow::Result<Self> {
        let lab = SoakLab::new()?;
        let daemon = lab.start_daemon(&humantime::format_duration(BLOCK_TTL).to_string())?;
        Ok(Self {
            lab,
            daemon,
            instance: Instance {
                started: Some(SystemTime::now()),
                ..Instance::default()
            },
            read: 0,
            finished: Vec::new(),
            scans: Vec::new(),
            probes: Vec::new(),
            actions: Actions::default(),
            sources: HashSet::new(),
            lifted: Vec::new(),
            blocked: HashSet::new(),
            expiries: HashMap::new(),
            start: Instant::now(),
        })
    }

    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Reads what the daemon said since the last call; checks every block
    /// of a scan's source as it is made.
    fn pump(&mut self) -> anyhow::Result<()> {
        self.daemon.drain();
        let new: Vec<Value> = self.daemon.stdout()[self.read..]
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        self.read = self.daemon.stdout().len();
        for e in new {
            let source = e["source"].as_str().unwrap_or_default().to_owned();
            if e["event"] == "blocked" || e["event"] == "unblocked" {
                self.expiries.remove(&source);
            }
            if self.sources.contains(&source) {
                if e["event"] == "blocked" {
                    self.blocked.insert(source.clone());
                    // A fleet ban taking over for its last second or two is
                    // gone before a connection could tell.
                    if e["ttl_s"].as_u64().unwrap_or(0) >= 5 {
                        let answered =
                            load::answered(&self.lab, &source, Duration::from_millis(1500))?;
                        self.probes.push(BlockProbe {
                            source: source.clone(),
                            moment: Moment::Blocked,
                            answered,
                        });
                    }
                } else if e["event"] == "unblocked" {
                    self.blocked.remove(&source);
                    self.lifted
                        .push((source.clone(), Instant::now() + Duration::from_millis(1500)));
                }
            }
            self.instance.events.push(e);
        }
        // A source whose last block was lifted a moment ago, and that no
        // fleet ban took over: its connections go through again.
        let now = Instant::now();
        let (ready, wait): (Vec<_>, Vec<_>) = self.lifted.drain(..).partition(|(_, at)| *at <= now);
        self.lifted = wait;
        for (source, _) in ready {
            if self.blocked.contains(&source) {
                continue;
            }
            let answered = load::answered(&self.lab, &source, Duration::from_secs(3))?;
            self.probes.push(BlockProbe {
                source,
                moment: Moment::Lifted,
                answered,
            });
        }
        Ok(())
    }

    /// Pumps until `pred` holds for some event of the running daemon
    /// after the first `from`, or `wait` passes.
    fn wait_event(
        &mut self,
        from: usize,
        wait: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<bool> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            self.pump()?;
            if self.instance.events[from.min(self.instance.events.len())..]
                .iter()
                .any(&pred)
            {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(false)
    }

    fn sample(&mut self) {
        let pid = self.daemon.pid();
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as i64);
        let t = self.elapsed();
        self.instance.samples.push((t, rss, fds));
    }

    fn status(&mut self) -> Option<Value> {
        match call(self.daemon.socket(), &Request::Status {}) {
            Ok(v) => {
                self.actions.status_ok += 1;
                Some(v)
            }
            Err(e) => {
                eprintln!("soak: scanner status: {e}");
                self.actions.status_failed += 1;
                None
            }
        }
    }

    /// Reads the blocks' expiries (`scanner list`): a block's expiry moves
    /// only with a new `blocked` event.
    fn expiries(&mut self) -> anyhow::Result<()> {
        self.pump()?;
        let list = match call(self.daemon.socket(), &Request::List {}) {
            Ok(list) => list,
            Err(e) => {
                eprintln!("soak: scanner list: {e}");
                self.actions.status_failed += 1;
                return Ok(());
            }
        };
        self.actions.status_ok += 1;
        for entry in list.as_array().into_iter().flatten() {
            let (Some(address), Some(expires)) = (
                entry["address"].as_str(),
                entry["block_expires"]
                    .as_str()
                    .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok()),
            ) else {
                continue;
            };
            let first = *self.expiries.entry(address.to_owned()).or_insert(expires);
            if expires
                .duration_since(first)
                .is_ok_and(|d| d > Duration::from_secs(1))
            {
                eprintln!(
                    "soak: the block of {address} moved from {} to {} with no new block event",
                    humantime::format_rfc3339_millis(first),
                    humantime::format_rfc3339_millis(expires)
                );
                self.actions.moved += 1;
                self.expiries.insert(address.to_owned(), expires);
            }
        }
        Ok(())
    }

    fn sighup(&mut self) -> anyhow::Result<()> {
        self.lab.write_config()?;
        let from = self.instance.events.len();
        self.daemon.signal(libc::SIGHUP)?;
        self.actions.sighups += 1;
        let answered = self.wait_event(from, Duration::from_secs(15), |e| {
            e["event"] == "config_reloaded" || e["event"] == "config_rejected"
        })?;
        if !answered {
            eprintln!("soak: no answer to SIGHUP within 15 s");
        }
        Ok(())
    }

    /// Ends the running daemon (SIGTERM, or kill -9) and starts another.
    fn restart(&mut self, kill: bool) -> anyhow::Result<()> {
        self.pump()?;
        self.instance.ended = Some(SystemTime::now());
        let (end, clean) = if kill {
            self.daemon.kill9()?;
            self.actions.kills += 1;
            ("kill -9".to_owned(), true)
        } else {
            let status = self.daemon.stop()?;
            self.actions.restarts += 1;
            (format!("SIGTERM, {status}"), status.success())
        };
        self.pump()?;
        let mut done = std::mem::take(&mut self.instance);
        done.end = end;
        done.clean = clean;
        done.log = self.daemon.log().to_vec();
        self.finished.push(done);
        self.daemon = self
            .lab
            .start_daemon(&humantime::format_duration(BLOCK_TTL).to_string())?;
        self.read = 0;
        self.instance.started = Some(SystemTime::now());
        Ok(())
    }

    /// Runs scan number `n` and waits (pumping) for its detection.
    fn scan(&mut self, n: usize) -> anyhow::Result<()> {
        let family = FAMILIES[n % FAMILIES.len()];
        let source = load::scan_source(n, family.ipv6);
        self.sources.insert(source.clone());
        // The check of blocks is only as good as its connection: from the
        // fresh address, before the scan, it must get an answer.
        self.lab.net.attacker.ip(&[
            "addr",
            "add",
            &load::host_cidr(&source),
            "dev",
            scanner_tests::crowdsec::FleetLab::ATTACKER_IF,
            "nodad",
        ])?;
        let answered = load::answered(&self.lab, &source, Duration::from_secs(3))?;
        self.probes.push(BlockProbe {
            source: source.clone(),
            moment: Moment::Before,
            answered,
        });
        let from = self.instance.events.len();
        let error = load::scan(&self.lab, family, &source)
            .err()
            .map(|e| format!("{e:#}"));
        let detected = self.wait_event(from, Duration::from_secs(30), |e| {
            e["event"] == "scan_detected" && e["source"] == source.as_str()
        })?;
        if !detected {
            eprintln!(
                "soak: {} from {source} not detected within 30 s",
                family.name
            );
        }
        self.scans.push(ScanRun {
            family: family.name,
            source,
            error,
        });
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    if !is_root() {
        anyhow::bail!("the soak loads XDP programs: run `cargo xtask soak` as root");
    }
    let minutes: u64 = std::env::var("SOAK_MINUTES")
        .unwrap_or_else(|_| "30".to_owned())
        .parse()
        .context("SOAK_MINUTES")?;
    anyhow::ensure!(minutes >= 5, "a soak needs at least 5 minutes");
    let mut plan = Schedule::new(minutes);
    let mut soak = Soak::start()?;
    let stop = Arc::new(AtomicBool::new(false));
    let benign = Arc::new(load::Benign::default());
    let clients = load::benign(&soak.lab.net.b, Arc::clone(&stop), Arc::clone(&benign))?;
    eprintln!("soak: {minutes} minutes from now");

    let (mut next_scan, mut next_hup, mut next_sample, mut next_status) = (20.0, 60.0, 0.0, 30.0);
    let mut lapi_back: Option<f64> = None;
    let mut replug: Option<f64> = None;
    let mut scans = 0;
    let mut seed = 1;
    let mut last_minute = 0;
    loop {
        let now = soak.elapsed();
        if now >= plan.total {
            break;
        }
        soak.pump()?;
        if now >= next_sample {
            soak.sample();
            soak.expiries()?;
            next_sample += 5.0;
        }
        if now >= next_status {
            soak.status();
            next_status += 30.0;
        }
        if (now / 60.0) as u64 > last_minute {
            last_minute = (now / 60.0) as u64;
            eprintln!(
                "soak: minute {last_minute}: {scans} scans, {} events, RSS {} KiB",
                soak.instance.events.len(),
                soak.instance.samples.last().map_or(0, |s| s.1)
            );
        }
        if now >= next_hup && now < plan.total - 30.0 {
            soak.sighup()?;
            next_hup += 60.0;
        } else if lapi_back.is_some_and(|t| now >= t) {
            soak.lab.lapi.run(&soak.lab.net.lapi)?;
            lapi_back = None;
        } else if lapi_back.is_none() && now < plan.scans_until && due(&mut plan.lapi, now) {
            soak.lab.lapi.stop();
            soak.actions.lapi_restarts += 1;
            lapi_back = Some(now + LAPI_DOWN.as_secs_f64());
        } else if replug.is_some_and(|t| now >= t) {
            soak.lab.plug()?;
            replug = None;
        } else if replug.is_none() && now < plan.scans_until && due(&mut plan.flaps, now) {
            let from = soak.instance.events.len();
            soak.lab.unplug()?;
            soak.actions.flaps += 1;
            soak.wait_event(from, Duration::from_secs(15), |e| {
                e["event"] == "detached" && e["iface"] == scanner_tests::soak::FLAP_IF
            })?;
            replug = Some(soak.elapsed() + UNPLUGGED.as_secs_f64());
        } else if due(&mut plan.bursts, now) {
            soak.actions.flood_frames += load::flood(&soak.lab, seed, BURST)?;
            soak.actions.bursts += 1;
            seed += 1;
        } else if replug.is_none() && plan.restarts.first().is_some_and(|r| r.0 <= now) {
            // Just after a detection, while its scan is still going on
            // and its alert is on its way.
            let (_, kill) = plan.restarts.remove(0);
            soak.scan(scans)?;
            scans += 1;
            soak.restart(kill)?;
            next_scan = soak.elapsed() + SCAN_GAP.as_secs_f64();
        } else if now >= next_scan && now < plan.scans_until {
            soak.scan(scans)?;
            scans += 1;
            next_scan = soak.elapsed() + SCAN_GAP.as_secs_f64();
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // The end: everything back, the outbox emptied, a last clean stop.
    if lapi_back.is_some() {
        soak.lab.lapi.run(&soak.lab.net.lapi)?;
    }
    if replug.is_some() {
        soak.lab.plug()?;
    }
    let mut outbox_left = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        soak.pump()?;
        outbox_left = soak
            .status()
            .and_then(|s| s["crowdsec"]["push_queue"].as_u64());
        if outbox_left == Some(0) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    soak.pump()?;
    soak.instance.ended = Some(SystemTime::now());
    let status = soak.daemon.stop()?;
    soak.pump()?;
    stop.store(true, Ordering::Relaxed);
    clients
        .join()
        .map_err(|_| anyhow::anyhow!("the benign clients' thread panicked"))?;
    let mut last = std::mem::take(&mut soak.instance);
    last.end = format!("SIGTERM, {status}");
    last.clean = status.success();
    last.log = soak.daemon.log().to_vec();
    soak.finished.push(last);

    let ledger = Ledger {
        history: report::history(&soak.lab)?,
        alerts: report::alerts(&soak.lab)?,
        scans: soak.scans,
        probes: soak.probes,
        instances: soak.finished,
        actions: soak.actions,
        benign_ok: benign.ok.load(Ordering::Relaxed),
        benign_failed: benign.failed.load(Ordering::Relaxed),
        benign_error: benign
            .last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default(),
        outbox_left,
        end: SystemTime::now(),
        warmup: WARMUP,
    };
    report::write(&ledger, minutes)
}
