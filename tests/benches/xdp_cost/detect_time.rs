//! Time to detect and to block an `nmap -sS` scan, beside scanlogd (Debian's
//! scanlogd, in the same server namespace, logging to the journal) on the
//! very same scan.

use std::{
    fmt::Write as _,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};
use scanner_tests::{Daemon, Lab, TempDir, capture::Capture, journald, traffic};
use scanner_userspace::testing::{Request, call};

use crate::median;

const RUNS: usize = 5;

pub(crate) struct Run {
    /// Milliseconds from nmap's start: scanner's `scan_detected` entry in
    /// the journal (as scanlogd's line), and its line on stdout.
    pub detect_ms: f64,
    pub stdout_ms: f64,
    pub drop_ms: f64,
    pub scanlogd_ms: Option<f64>,
    /// The same, from the scan's first probe reaching the server (a capture
    /// on the server's interface).
    pub detect_probe_ms: Option<f64>,
    pub stdout_probe_ms: Option<f64>,
    pub drop_probe_ms: Option<f64>,
    pub scanlogd_probe_ms: Option<f64>,
}

/// A capture of the attacker's probes and the server's answers.
fn capture(lab: &Lab) -> anyhow::Result<Capture> {
    Capture::start(
        &lab.server,
        Lab::SERVER_IF,
        crate::learned::v4(Lab::ATTACKER_V4)?,
        crate::learned::v4(Lab::SERVER_V4)?,
        Duration::from_secs(60),
    )
}

fn after_ms(first: Option<SystemTime>, t: SystemTime) -> Option<f64> {
    first.map(|f| since_ms(f, t))
}

fn since_ms(t0: SystemTime, t: SystemTime) -> f64 {
    t.duration_since(t0).unwrap_or_default().as_secs_f64() * 1000.0
}

/// scanlogd logs through syslog(3): /dev/log must reach journald, and it
/// chroots into /run/scanlogd/empty.
fn prepare_scanlogd() -> anyhow::Result<()> {
    std::fs::create_dir_all("/run/scanlogd/empty")?;
    if !Path::new("/dev/log").exists() {
        std::os::unix::fs::symlink("/run/systemd/journal/dev-log", "/dev/log")
            .context("linking /dev/log to journald")?;
    }
    Ok(())
}

/// The scan every run sends. Once blocked, nmap waits out every dropped
/// probe: the host timeout ends it (the detection came long before).
const NMAP: &[&str] = &[
    "-sS",
    "-T4",
    "--host-timeout",
    "15s",
    "-p",
    "1-1000",
    Lab::SERVER_V4,
];

/// Events on stdout, and in the journal like scanlogd's lines.
fn daemon(lab: &Lab, history: &TempDir, block: bool) -> anyhow::Result<Daemon> {
    let extra: &[&str] = if block { &["--block"] } else { &[] };
    crate::report_latency::reporting_daemon(lab, history, extra)
}

/// When `daemon` reported the attacker's scan: when its line came out of
/// the daemon's stdout.
fn detected(daemon: &mut Daemon) -> anyhow::Result<SystemTime> {
    let ours =
        |e: &serde_json::Value| e["event"] == "scan_detected" && e["source"] == Lab::ATTACKER_V4;
    daemon.wait_for_event(ours, Duration::from_secs(30))?;
    daemon
        .timed_events()
        .into_iter()
        .find_map(|(at, e)| ours(&e).then_some(at))
        .context("the detection's line")
}

/// When journald received `daemon`'s `scan_detected` entry for the
/// attacker: the clock scanlogd's line is timed by.
fn journaled(daemon: &Daemon) -> anyhow::Result<SystemTime> {
    let pid = format!("_PID={}", daemon.pid());
    journald::first_received(
        &["-t", "scanner", "SCANNER_EVENT=scan_detected", &pid],
        |e| e["SCANNER_SOURCE"] == Lab::ATTACKER_V4,
        Duration::from_secs(10),
    )?
    .context("no scan_detected entry in the journal")
}

/// One side-by-side run's times, from nmap's start and (Option) from the
/// scan's first probe.
struct SideBySide {
    journal: (f64, Option<f64>),
    stdout: (f64, Option<f64>),
    scanlogd: (Option<f64>, Option<f64>),
}

/// Detection beside scanlogd: no blocking, so both see the whole scan.
fn side_by_side() -> anyhow::Result<SideBySide> {
    let lab = Lab::new()?;
    let history = TempDir::new("bench-history")?;
    let mut daemon = daemon(&lab, &history, false)?;
    let out = lab
        .server
        .command("scanlogd")
        .output()
        .context("starting scanlogd")?;
    if !out.status.success() {
        bail!("scanlogd: {}", String::from_utf8_lossy(&out.stderr));
    }
    let probes = capture(&lab)?;
    let t0 = SystemTime::now();
    traffic::nmap(&lab.attacker, NMAP)?;
    let printed_at = detected(&mut daemon)?;
    let journaled_at = journaled(&daemon)?;
    let first = probes.finish()?.first_probe;
    let from_attacker = |e: &serde_json::Value| {
        e["MESSAGE"]
            .as_str()
            .is_some_and(|m| m.starts_with(Lab::ATTACKER_V4))
            && journald::received_at(e) >= Some(t0)
    };
    let scanlogd_at =
        journald::first_received(&["-t", "scanlogd"], from_attacker, Duration::from_secs(10))?;
    // scanlogd daemonized: stop it through the namespace's process list.
    let pids = std::process::Command::new("ip")
        .args(["netns", "pids", lab.server.name()])
        .output()?;
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>()
            && u32::try_from(pid).ok() != Some(daemon.pid())
        {
            // SAFETY: kill(2) of scanlogd, a process in our own namespace.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    daemon.stop()?;
    let times = |t| (since_ms(t0, t), after_ms(first, t));
    Ok(SideBySide {
        journal: times(journaled_at),
        stdout: times(printed_at),
        scanlogd: (
            scanlogd_at.map(|t| since_ms(t0, t)),
            scanlogd_at.and_then(|t| after_ms(first, t)),
        ),
    })
}

/// Time to the first packet the kernel dropped, with `--block`: from
/// nmap's start, and from the first probe.
fn first_drop() -> anyhow::Result<(f64, Option<f64>)> {
    let lab = Lab::new()?;
    let history = TempDir::new("bench-history")?;
    let mut daemon = daemon(&lab, &history, true)?;
    // Seen by polling the kernel's counters through the control socket.
    let socket = daemon.socket().to_path_buf();
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || -> Option<SystemTime> {
            while !done.load(Ordering::Relaxed) {
                if let Ok(s) = call(&socket, &Request::Status {})
                    && s["packets"]["dropped"].as_u64() > Some(0)
                {
                    return Some(SystemTime::now());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            None
        })
    };
    let probes = capture(&lab)?;
    let t0 = SystemTime::now();
    traffic::nmap(&lab.attacker, NMAP)?;
    detected(&mut daemon)?;
    done.store(true, Ordering::Relaxed);
    let first = probes.finish()?.first_probe;
    let dropped = watcher
        .join()
        .ok()
        .flatten()
        .context("no packet was dropped")?;
    daemon.stop()?;
    Ok((since_ms(t0, dropped), after_ms(first, dropped)))
}

fn one(run: usize) -> anyhow::Result<Run> {
    let SideBySide {
        journal: (detect_ms, detect_probe_ms),
        stdout: (stdout_ms, stdout_probe_ms),
        scanlogd: (scanlogd_ms, scanlogd_probe_ms),
    } = side_by_side()?;
    let (drop_ms, drop_probe_ms) = first_drop()?;
    eprintln!(
        "detect run {run}: scanner {detect_ms:.1} ms ({detect_probe_ms:?} from the first probe) \
         in the journal, {stdout_ms:.1} ms ({stdout_probe_ms:?}) on stdout, first drop \
         {drop_ms:.1} ms ({drop_probe_ms:?}), scanlogd {scanlogd_ms:?} ms ({scanlogd_probe_ms:?})"
    );
    Ok(Run {
        detect_ms,
        stdout_ms,
        drop_ms,
        scanlogd_ms,
        detect_probe_ms,
        stdout_probe_ms,
        drop_probe_ms,
        scanlogd_probe_ms,
    })
}

pub(crate) fn measure() -> anyhow::Result<Vec<Run>> {
    let _journal = journald::Journald::ensure()?;
    prepare_scanlogd()?;
    (0..RUNS).map(one).collect()
}

pub(crate) fn markdown(md: &mut String, runs: &[Run]) -> anyhow::Result<()> {
    writeln!(md, "## Time to detect and to block\n")?;
    writeln!(
        md,
        "`nmap -n -Pn -sS -T4 --host-timeout 15s -p 1-1000` from the attacker's namespace, \
         {RUNS} runs. Detection: a fresh daemon (report only, as the packaged unit runs it: `Nice=-10`, a history file) and scanlogd (Debian's package) \
         both watch the server's namespace, so both see the very same scan; times are from \
         nmap's start to scanner's `scan_detected` entry and to scanlogd's line, both in the \
         journal (journald's receive time: the same sink and the same clock for both), and \
         to scanner's line read from its stdout by this bench. Blocking: a separate scan against a fresh daemon with `--block` (a \
         block starves scanlogd of the probes it counts); the time is from nmap's start to \
         the first packet the kernel dropped (the daemon's counters polled every \
         millisecond). scanlogd only logs; it cannot block.\n"
    )?;
    writeln!(
        md,
        "Each time is given from nmap's start (mostly nmap's own start-up) and, in \
         parentheses, from the scan's first probe reaching the server (an AF_PACKET capture \
         on the server's interface): the time the attacker actually has.\n"
    )?;
    let cell = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.1}"));
    let pair = |a: Option<f64>, b: Option<f64>| format!("{} ({})", cell(a), cell(b));
    writeln!(
        md,
        "| | scanner: detected, journal (ms) | scanner: detected, stdout (ms) | scanner: first drop (ms) | scanlogd: logged, journal (ms) |"
    )?;
    writeln!(md, "| --- | ---: | ---: | ---: | ---: |")?;
    for (i, r) in runs.iter().enumerate() {
        writeln!(
            md,
            "| run {} | {} | {} | {} | {} |",
            i + 1,
            pair(Some(r.detect_ms), r.detect_probe_ms),
            pair(Some(r.stdout_ms), r.stdout_probe_ms),
            pair(Some(r.drop_ms), r.drop_probe_ms),
            pair(r.scanlogd_ms, r.scanlogd_probe_ms)
        )?;
    }
    let med = |f: &dyn Fn(&Run) -> Option<f64>| median(runs.iter().filter_map(f).collect());
    writeln!(
        md,
        "| **median** | **{}** | **{}** | **{}** | **{}** |\n",
        pair(med(&|r| Some(r.detect_ms)), med(&|r| r.detect_probe_ms)),
        pair(med(&|r| Some(r.stdout_ms)), med(&|r| r.stdout_probe_ms)),
        pair(med(&|r| Some(r.drop_ms)), med(&|r| r.drop_probe_ms)),
        pair(med(&|r| r.scanlogd_ms), med(&|r| r.scanlogd_probe_ms)),
    )?;
    Ok(())
}

pub(crate) fn detect_median(runs: &[Run]) -> Option<f64> {
    median(runs.iter().map(|r| r.detect_ms).collect())
}

/// Medians from the scan's first probe: (scanner's report, scanlogd's line).
pub(crate) fn first_probe_medians(runs: &[Run]) -> Option<(f64, f64)> {
    Some((
        median(runs.iter().filter_map(|r| r.detect_probe_ms).collect())?,
        median(runs.iter().filter_map(|r| r.scanlogd_probe_ms).collect())?,
    ))
}
