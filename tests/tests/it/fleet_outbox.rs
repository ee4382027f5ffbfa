//! Nothing lost, nothing twice, on the way to a real CrowdSec Local API:
//! an alert made while the Local API is down waits in the outbox through a
//! stop (SIGINT) or a kill -9 and arrives once after the next start, with
//! the detection's own time; an alert whose answer is lost on the way back
//! (a proxy that closes the connection after forwarding the push) is found
//! on the Local API and not sent again.

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use scanner_tests::{
    Daemon, TempDir,
    crowdsec::{FleetLab, LAPI_PORT, LAPI_V4, Lapi},
    proxy::CutProxy,
    require_root, traffic,
};
use scanner_userspace::testing::{Request, call};
use serde_json::Value;

use crate::fleet::{ATTACKER, WAIT, attached, config_at, event, wall};

/// The Local API's alerts about the attacker.
fn attacker_alerts(lapi: &Lapi, lab: &FleetLab) -> anyhow::Result<Vec<Value>> {
    Ok(lapi
        .alerts(&lab.lapi)?
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["source"]["value"] == ATTACKER)
        .cloned()
        .collect())
}

/// Alerts waiting in the daemon's outbox, as `scanner status` says.
fn waiting(daemon: &Daemon) -> anyhow::Result<u64> {
    let status = call(daemon.socket(), &Request::Status {})?;
    status["crowdsec"]["push_queue"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no push_queue in {status}"))
}

/// Waits until the daemon's outbox is empty, then returns the Local API's
/// alerts about the attacker.
fn delivered(daemon: &Daemon, lapi: &Lapi, lab: &FleetLab) -> anyhow::Result<Vec<Value>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = waiting(daemon)?;
        let alerts = attacker_alerts(lapi, lab)?;
        if left == 0 && !alerts.is_empty() {
            return Ok(alerts);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{left} alerts still wait; the Local API has {alerts:?}; log:\n{}",
            daemon.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A time as cscli writes it (`2026-12-06T23:20:01Z`, or Go's
/// `2026-12-06 23:20:01 +0000 UTC`), to the second, in UTC.
fn seconds(text: &str) -> anyhow::Result<SystemTime> {
    let head: String = text.chars().take(19).collect();
    humantime::parse_rfc3339_weak(&head.replace(' ', "T"))
        .map_err(|e| anyhow::anyhow!("{text:?}: {e}"))
}

/// A SYN scan of server A's first 200 ports.
fn scan(lab: &FleetLab) -> anyhow::Result<()> {
    traffic::nmap(
        &lab.attacker,
        &["-sS", "--max-retries", "0", "-p1-200", FleetLab::A_V4],
    )
    .map(drop)
}

/// Server A registered as bouncer and machine `server-a`, with the Local
/// API at `url`; its config file.
fn register(
    lab: &FleetLab,
    lapi: &Lapi,
    dir: &Path,
    url: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let key = lapi.bouncer_key(&lab.lapi, "server-a")?;
    lapi.add_machine(&lab.lapi, "server-a", "server-a-password")?;
    config_at(dir, "server-a", &key, Some("server-a-password"), url)
}

/// The Local API down, a detection, the daemon ended by `end`, the Local
/// API back, the daemon started again: the alert arrives once, carrying
/// the time it was made.
fn survives(end: impl FnOnce(&mut Daemon) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let lab = FleetLab::new()?;
    let mut lapi = Lapi::start(&lab.lapi, LAPI_V4, LAPI_PORT)?;
    let dir = TempDir::new("outbox")?;
    let config = register(
        &lab,
        &lapi,
        &dir.0,
        &format!("http://{LAPI_V4}:{LAPI_PORT}/"),
    )?;
    lapi.stop();
    let mut a = attached(&lab.a, &config, &["--block"])?;
    scan(&lab)?;
    let detected = a.wait_for_event(|e| event(e, "scan_detected", ATTACKER), WAIT)?;
    let made = wall(&detected)?;
    let deadline = Instant::now() + WAIT;
    while waiting(&a)? != 1 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the alert never waited: {}",
            a.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    end(&mut a)?;
    drop(a);

    lapi.run(&lab.lapi)?;
    let restarted = SystemTime::now();
    let mut a = attached(&lab.a, &config, &["--block"])?;
    a.wait_for_log("alerts from before this start wait for the Local API", WAIT)?;
    let alerts = delivered(&a, &lapi, &lab)?;
    assert_eq!(alerts.len(), 1, "exactly once: {alerts:?}");
    let alert = &alerts[0];
    assert_eq!(alert["scenario"], "scanner/port-scan", "{alert}");
    assert_eq!(alert["machine_id"], "server-a", "{alert}");
    // The detection's own time, not the time it was sent.
    let stop_at = seconds(alert["stop_at"].as_str().unwrap_or_default())?;
    let off = stop_at
        .duration_since(made)
        .unwrap_or_else(|e| e.duration());
    assert!(
        off <= Duration::from_secs(2) && stop_at < restarted,
        "stop_at {stop_at:?}, detected {made:?}, restarted {restarted:?}"
    );
    // Nothing more comes later: the outbox is empty and stays so.
    assert_eq!(waiting(&a)?, 0);
    a.stop()?;
    assert_eq!(attacker_alerts(&lapi, &lab)?.len(), 1);
    Ok(())
}

#[test]
fn an_alert_waiting_at_a_stop_arrives_once_after_the_next_start() -> anyhow::Result<()> {
    if !require_root("an_alert_waiting_at_a_stop_arrives_once_after_the_next_start") {
        return Ok(());
    }
    survives(|a| {
        a.signal(libc::SIGINT)?;
        let status = a.wait_status(WAIT)?;
        anyhow::ensure!(status.success(), "{status}: {}", a.log_tail());
        anyhow::ensure!(
            a.log()
                .iter()
                .any(|l| l.contains("alerts kept for the Local API until the next start")),
            "the stop did not say what it kept: {}",
            a.log_tail()
        );
        Ok(())
    })
}

#[test]
fn an_alert_waiting_at_a_kill_9_arrives_once_after_the_next_start() -> anyhow::Result<()> {
    if !require_root("an_alert_waiting_at_a_kill_9_arrives_once_after_the_next_start") {
        return Ok(());
    }
    survives(Daemon::kill9)
}

#[test]
fn an_alert_whose_answer_was_lost_is_not_sent_twice() -> anyhow::Result<()> {
    if !require_root("an_alert_whose_answer_was_lost_is_not_sent_twice") {
        return Ok(());
    }
    let lab = FleetLab::new()?;
    let lapi = Lapi::start(&lab.lapi, LAPI_V4, LAPI_PORT)?;
    let proxy = CutProxy::start(
        &lab.lapi,
        format!("{LAPI_V4}:8081").parse()?,
        format!("{LAPI_V4}:{LAPI_PORT}").parse()?,
        "POST /v1/alerts ",
        1,
    )?;
    let dir = TempDir::new("lost-answer")?;
    let config = register(&lab, &lapi, &dir.0, &format!("http://{LAPI_V4}:8081/"))?;
    let mut a = attached(&lab.a, &config, &["--block"])?;
    scan(&lab)?;
    a.wait_for_event(|e| event(e, "scan_detected", ATTACKER), WAIT)?;
    // The push reached the Local API; its answer never came back.
    a.wait_for_log("cannot reach the CrowdSec Local API", WAIT)?;
    assert_eq!(proxy.cuts(), 1, "{}", a.log_tail());
    a.wait_for_log("not sent again", WAIT)?;
    let alerts = delivered(&a, &lapi, &lab)?;
    assert_eq!(alerts.len(), 1, "no duplicate: {alerts:?}");
    a.stop()?;
    assert_eq!(attacker_alerts(&lapi, &lab)?.len(), 1);
    Ok(())
}
