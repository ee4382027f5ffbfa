//! The fleet through a real CrowdSec Local API (Debian's crowdsec, run
//! alone in a namespace): a scanner blocked on one server is dropped by the
//! other from its first probe; `cscli` decisions are enforced and lifted,
//! the allowlist and the block cap hold; a Local API that is down costs
//! nothing locally and gets its alert later; a wrong key stops the start.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use scanner_tests::{
    Daemon, Netns, TempDir,
    crowdsec::{FleetLab, LAPI_PORT, LAPI_V4, Lapi, secret_file},
    require_root,
    scenario::RUN_ARGS,
    traffic,
};
use scanner_userspace::testing::{Request, call};
use serde_json::Value;

pub(crate) const ATTACKER: &str = "198.18.0.1";
/// Every wait: a pull interval is 2 s, a scan a few seconds.
// A daemon verifies three programs before it reaches the Local API: on 2
// cores running the whole suite that alone has taken over 30 s.
pub(crate) const WAIT: Duration = Duration::from_secs(90);

/// A config file whose `[crowdsec]` section uses `key` as the bouncer key
/// and `name` (if any) as the machine.
fn config(dir: &Path, name: &str, key: &str, machine: Option<&str>) -> anyhow::Result<PathBuf> {
    config_at(
        dir,
        name,
        key,
        machine,
        &format!("http://{LAPI_V4}:{LAPI_PORT}/"),
    )
}

/// [`config`] with the Local API at `url`; a machine's outbox is
/// `NAME-outbox.db` in `dir`.
pub(crate) fn config_at(
    dir: &Path,
    name: &str,
    key: &str,
    machine: Option<&str>,
    url: &str,
) -> anyhow::Result<PathBuf> {
    let key_file = secret_file(dir, &format!("{name}.key"), key)?;
    let mut text = format!(
        "[crowdsec]\nurl = \"{url}\"\nbouncer_key_file = \"{}\"\npull_interval = \"2s\"\n",
        key_file.display()
    );
    if let Some(password) = machine {
        let pw_file = secret_file(dir, &format!("{name}.password"), password)?;
        text.push_str(&format!(
            "machine_id = \"{name}\"\npassword_file = \"{}\"\noutbox = \"{}\"\n",
            pw_file.display(),
            dir.join(format!("{name}-outbox.db")).display()
        ));
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// `scanner run` on a fleet server with `config` and `extra` arguments
/// (not waited for: a start refused is what some tests look for).
pub(crate) fn run_with(ns: &Netns, config: &Path, extra: &[&str]) -> anyhow::Result<Daemon> {
    let config = config.to_string_lossy().into_owned();
    let mut args: Vec<&str> = RUN_ARGS.to_vec();
    args.extend(["--config", &config]);
    args.extend_from_slice(extra);
    Daemon::start(ns, &args)
}

/// [`run_with`], attached.
pub(crate) fn attached(ns: &Netns, config: &Path, extra: &[&str]) -> anyhow::Result<Daemon> {
    let mut daemon = run_with(ns, config, extra)?;
    daemon.wait_attached(FleetLab::SERVER_IF)?;
    Ok(daemon)
}

/// A server's daemon, registered with the Local API as bouncer and machine.
fn server(
    lab: &FleetLab,
    lapi: &Lapi,
    ns: &Netns,
    dir: &Path,
    name: &str,
    extra: &[&str],
) -> anyhow::Result<Daemon> {
    let key = lapi.bouncer_key(&lab.lapi, name)?;
    let password = format!("{name}-password");
    lapi.add_machine(&lab.lapi, name, &password)?;
    let config = config(dir, name, &key, Some(&password))?;
    attached(ns, &config, extra)
}

pub(crate) fn event(e: &Value, event: &str, source: &str) -> bool {
    e["event"] == event && e["source"] == source
}

pub(crate) fn wall(e: &Value) -> anyhow::Result<SystemTime> {
    let ts = e["ts"].as_str().unwrap_or_default();
    Ok(humantime::parse_rfc3339(ts)?)
}

/// How many of `ports` on `target` answered an nmap SYN scan from the attacker.
pub(crate) fn answered(lab: &FleetLab, target: &str, ports: &str) -> anyhow::Result<usize> {
    let out = traffic::nmap(
        &lab.attacker,
        &[
            "-sS",
            "--max-retries",
            "0",
            "--min-rate",
            "5000",
            "-p",
            ports,
            "-oG",
            "-",
            target,
        ],
    )?;
    Ok(traffic::answered_ports(&String::from_utf8_lossy(
        &out.stdout,
    )))
}

#[test]
fn a_scanner_blocked_on_one_server_is_dropped_by_the_other_from_its_first_probe()
-> anyhow::Result<()> {
    if !require_root("a_scanner_blocked_on_one_server_is_dropped_by_the_other_from_its_first_probe")
    {
        return Ok(());
    }
    let lab = FleetLab::new()?;
    let lapi = Lapi::start(&lab.lapi, LAPI_V4, LAPI_PORT)?;
    let dir = TempDir::new("two-servers")?;
    let mut a = server(&lab, &lapi, &lab.a, &dir.0, "server-a", &["--block"])?;
    let mut b = server(&lab, &lapi, &lab.b, &dir.0, "server-b", &["--block"])?;

    traffic::nmap(
        &lab.attacker,
        &["-sS", "--max-retries", "0", "-p1-200", FleetLab::A_V4],
    )?;
    let detected = a.wait_for_event(|e| event(e, "scan_detected", ATTACKER), WAIT)?;
    assert_eq!(detected["action"], "block", "{detected}");
    let blocked = b.wait_for_event(|e| event(e, "blocked", ATTACKER), WAIT)?;
    assert_eq!(
        (blocked["reason"].as_str(), blocked["origin"].as_str()),
        (Some("crowdsec"), Some("crowdsec")),
        "{blocked}"
    );
    let latency = wall(&blocked)?
        .duration_since(wall(&detected)?)
        .unwrap_or_default();
    eprintln!(
        "fleet: detected on A -> blocked on B in {} ms (pull interval 2 s)",
        latency.as_millis()
    );

    // B drops the scanner from its first probe: nmap sees nothing answer.
    assert_eq!(answered(&lab, FleetLab::B_V4, "1-200")?, 0);
    // A's alert is in the Local API, with its ban.
    let alerts = lapi.alerts(&lab.lapi)?;
    let alert = alerts
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["source"]["value"] == ATTACKER && a["scenario"] == "scanner/port-scan")
        .cloned()
        .unwrap_or_default();
    assert_eq!(alert["machine_id"], "server-a", "{alerts}");
    assert_eq!(alert["decisions"][0]["type"], "ban", "{alert}");
    // B's list tells whose block it is.
    let list = call(b.socket(), &Request::List {})?;
    let row = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["address"] == ATTACKER)
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["block_origin"], "crowdsec", "{list}");
    a.stop()?;
    let events_b = b.events();
    b.stop()?;
    assert!(
        !events_b.iter().any(|e| event(e, "scan_detected", ATTACKER)),
        "B never saw the scan it dropped"
    );
    Ok(())
}

#[test]
fn cscli_decisions_are_enforced_and_lifted_within_the_allowlist_and_the_cap() -> anyhow::Result<()>
{
    if !require_root("cscli_decisions_are_enforced_and_lifted_within_the_allowlist_and_the_cap") {
        return Ok(());
    }
    let lab = FleetLab::new()?;
    let lapi = Lapi::start(&lab.lapi, LAPI_V4, LAPI_PORT)?;
    let dir = TempDir::new("decisions")?;
    let mut a = server(
        &lab,
        &lapi,
        &lab.a,
        &dir.0,
        "server-a",
        &["--block-cap", "4", "--allow", "198.18.0.7"],
    )?;
    // A decision before anything is blocked: enforced within a pull.
    let asked = Instant::now();
    lapi.cscli(
        &lab.lapi,
        &["decisions", "add", "--ip", ATTACKER, "--duration", "1h"],
    )?;
    let blocked = a.wait_for_event(|e| event(e, "blocked", ATTACKER), WAIT)?;
    eprintln!(
        "fleet: cscli decision enforced in {} ms (pull interval 2 s)",
        asked.elapsed().as_millis()
    );
    assert_eq!(blocked["origin"], "crowdsec", "{blocked}");
    assert!(
        blocked["ttl_s"]
            .as_u64()
            .is_some_and(|t| (3500..=3600).contains(&t)),
        "{blocked}"
    );
    assert_eq!(answered(&lab, FleetLab::A_V4, "22,80")?, 0, "dropped");
    for (flag, value) in [("--range", "198.18.0.64/26"), ("--ip", "2001:db8::1")] {
        lapi.cscli(&lab.lapi, &["decisions", "add", flag, value])?;
        a.wait_for_event(
            |e| event(e, "blocked", value) && e["origin"] == "crowdsec",
            WAIT,
        )?;
    }
    // The allowlist wins.
    lapi.cscli(&lab.lapi, &["decisions", "add", "--ip", "198.18.0.7"])?;
    let refused = a.wait_for_event(|e| event(e, "block_refused", "198.18.0.7"), WAIT)?;
    assert_eq!(
        (refused["reason"].as_str(), refused["origin"].as_str()),
        (Some("allowlist"), Some("crowdsec")),
        "{refused}"
    );
    // The cap (4) holds, and the fleet may fill three quarters of it: a
    // quarter stays for this host's own blocks.
    lapi.cscli(
        &lab.lapi,
        &["decisions", "add", "--range", "2001:db8:0:1::/64"],
    )?;
    let refused = a.wait_for_event(|e| event(e, "block_refused", "2001:db8:0:1::/64"), WAIT)?;
    assert_eq!(refused["reason"], "cap", "{refused}");
    let status = call(a.socket(), &Request::Status {})?;
    assert_eq!(status["blocks"], 3, "{status}");
    // This host's own block still fits.
    let (ok, said, err) = scanner_tests::daemon::cli(a.socket(), &["block", "198.18.0.99"])?;
    assert!(ok, "{said}{err}");
    let status = call(a.socket(), &Request::Status {})?;
    assert_eq!(status["blocks"], 4, "{status}");

    // Deleting the decision lifts the block.
    lapi.cscli(&lab.lapi, &["decisions", "delete", "--ip", ATTACKER])?;
    let lifted = a.wait_for_event(|e| event(e, "unblocked", ATTACKER), WAIT)?;
    assert_eq!(lifted["reason"], "crowdsec", "{lifted}");
    assert_eq!(
        answered(&lab, FleetLab::A_V4, "22,80")?,
        2,
        "answered again"
    );
    a.stop()?;
    Ok(())
}

#[test]
fn a_local_api_that_is_down_costs_nothing_locally_and_gets_its_alert_later() -> anyhow::Result<()> {
    if !require_root("a_local_api_that_is_down_costs_nothing_locally_and_gets_its_alert_later") {
        return Ok(());
    }
    let lab = FleetLab::new()?;
    let mut lapi = Lapi::start(&lab.lapi, LAPI_V4, LAPI_PORT)?;
    let dir = TempDir::new("down")?;
    let mut a = server(&lab, &lapi, &lab.a, &dir.0, "server-a", &["--block"])?;
    lapi.stop();
    traffic::nmap(
        &lab.attacker,
        &["-sS", "--max-retries", "0", "-p1-200", FleetLab::A_V4],
    )?;
    let detected = a.wait_for_event(|e| event(e, "scan_detected", ATTACKER), WAIT)?;
    assert!(
        detected["latency_us"]
            .as_u64()
            .is_some_and(|us| us < 1_000_000),
        "detection does not wait for the Local API: {detected}"
    );
    a.wait_for_event(|e| event(e, "blocked", ATTACKER), WAIT)?;
    assert_eq!(
        answered(&lab, FleetLab::A_V4, "22,80")?,
        0,
        "blocked locally"
    );
    // The waiting alert is counted, also while its batch is being retried.
    let status = call(a.socket(), &Request::Status {})?;
    assert_eq!(status["crowdsec"]["push_queue"], 1, "{status}");

    lapi.run(&lab.lapi)?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let alerts = lapi.alerts(&lab.lapi)?;
        if alerts
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["source"]["value"] == ATTACKER)
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the queued alert never reached the Local API: {alerts}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    a.stop()?;
    Ok(())
}

#[test]
fn a_wrong_bouncer_key_or_a_readable_key_file_stops_the_start_with_exit_2() -> anyhow::Result<()> {
    if !require_root("a_wrong_bouncer_key_or_a_readable_key_file_stops_the_start_with_exit_2") {
        return Ok(());
    }
    let lab = FleetLab::new()?;
    let _lapi = Lapi::start(&lab.lapi, LAPI_V4, LAPI_PORT)?;
    let dir = TempDir::new("bad-key")?;
    let wrong = config(&dir.0, "wrong", "0123456789abcdef0123456789abcdef", None)?;
    let readable = config(&dir.0, "readable", "0123456789abcdef0123456789abcdef", None)?;
    std::fs::set_permissions(
        dir.0.join("readable.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    for (config, says) in [(&wrong, "403"), (&readable, "chmod 600")] {
        let mut daemon = run_with(&lab.a, config, &[])?;
        let status = daemon.wait_status(WAIT)?;
        let log = daemon.log().join("\n");
        assert_eq!(status.code(), Some(2), "{log}");
        assert!(log.contains(says), "the error says why: {log}");
        assert!(
            !log.contains("0123456789abcdef"),
            "the key is never logged: {log}"
        );
    }
    Ok(())
}

#[test]
fn sighup_turns_the_link_on_and_status_shows_it() -> anyhow::Result<()> {
    if !require_root("sighup_turns_the_link_on_and_status_shows_it") {
        return Ok(());
    }
    let lab = FleetLab::new()?;
    let lapi = Lapi::start(&lab.lapi, LAPI_V4, LAPI_PORT)?;
    let dir = TempDir::new("sighup")?;
    let path = dir.0.join("scanner.toml");
    std::fs::write(&path, "[response]\nblock = true\n")?;
    let mut a = attached(&lab.a, &path, &[])?;
    let status = call(a.socket(), &Request::Status {})?;
    assert!(status["crowdsec"].is_null(), "{status}");

    let key = lapi.bouncer_key(&lab.lapi, "server-a")?;
    let with_link = config(&dir.0, "server-a", &key, None)?;
    let section = std::fs::read_to_string(&with_link)?;
    std::fs::write(&path, format!("[response]\nblock = true\n\n{section}"))?;
    a.signal(libc::SIGHUP)?;
    let reloaded = a.wait_for_event(|e| e["event"] == "config_reloaded", WAIT)?;
    assert!(
        reloaded["detail"]
            .as_str()
            .is_some_and(|d| d.contains("CrowdSec link restarted")),
        "{reloaded}"
    );
    lapi.cscli(&lab.lapi, &["decisions", "add", "--ip", ATTACKER])?;
    a.wait_for_event(
        |e| event(e, "blocked", ATTACKER) && e["origin"] == "crowdsec",
        WAIT,
    )?;
    let status = call(a.socket(), &Request::Status {})?;
    let c = &status["crowdsec"];
    assert_eq!(
        (c["bouncer"].as_bool(), c["machine"].as_bool()),
        (Some(true), Some(false)),
        "{status}"
    );
    assert!(c["last_sync"].is_string(), "{status}");
    a.stop()?;
    Ok(())
}

#[test]
fn an_https_local_api_is_trusted_through_ca_file() -> anyhow::Result<()> {
    if !require_root("an_https_local_api_is_trusted_through_ca_file") {
        return Ok(());
    }
    let lab = FleetLab::new()?;
    let dir = TempDir::new("tls")?;
    let (ca, cert, key) = scanner_tests::crowdsec::certificates(&dir.0, LAPI_V4)?;
    let lapi = Lapi::start_with(&lab.lapi, LAPI_V4, 8443, Some((&cert, &key)))?;
    let bouncer = lapi.bouncer_key(&lab.lapi, "server-a")?;
    let key_file = secret_file(&dir.0, "a.key", &bouncer)?;
    let path = dir.0.join("a.toml");
    std::fs::write(
        &path,
        format!(
            "[crowdsec]\nurl = \"{}\"\nbouncer_key_file = \"{}\"\nca_file = \"{}\"\n",
            lapi.url(),
            key_file.display(),
            ca.display()
        ),
    )?;
    let mut a = attached(&lab.a, &path, &[])?;
    lapi.cscli(&lab.lapi, &["decisions", "add", "--ip", ATTACKER])?;
    a.wait_for_event(
        |e| event(e, "blocked", ATTACKER) && e["origin"] == "crowdsec",
        WAIT,
    )?;
    a.stop()?;
    // Without the CA the certificate is not trusted: a warning, and the
    // daemon keeps trying (it is not a wrong key).
    std::fs::write(
        &path,
        format!(
            "[crowdsec]\nurl = \"{}\"\nbouncer_key_file = \"{}\"\n",
            lapi.url(),
            key_file.display()
        ),
    )?;
    let mut a = attached(&lab.a, &path, &[])?;
    let line = a.wait_for_log("cannot reach the CrowdSec Local API", WAIT)?;
    assert!(line.contains("pulling again"), "{line}");
    a.stop()?;
    Ok(())
}

#[test]
fn a_fleet_ban_outlasts_this_hosts_shorter_block() -> anyhow::Result<()> {
    if !require_root("a_fleet_ban_outlasts_this_hosts_shorter_block") {
        return Ok(());
    }
    let lab = FleetLab::new()?;
    let lapi = Lapi::start(&lab.lapi, LAPI_V4, LAPI_PORT)?;
    let dir = TempDir::new("outlast")?;
    let mut a = server(
        &lab,
        &lapi,
        &lab.a,
        &dir.0,
        "server-a",
        &["--block", "--block-ttl", "3s"],
    )?;
    traffic::nmap(
        &lab.attacker,
        &["-sS", "--max-retries", "0", "-p1-200", FleetLab::A_V4],
    )?;
    let own = a.wait_for_event(|e| event(e, "blocked", ATTACKER), WAIT)?;
    assert_eq!(own["origin"], "scan", "{own}");
    // The fleet bans it for an hour: this host's block keeps its origin...
    lapi.cscli(
        &lab.lapi,
        &["decisions", "add", "--ip", ATTACKER, "--duration", "1h"],
    )?;
    // ...and when it expires, the fleet's ban takes over.
    let expired = a.wait_for_event(|e| event(e, "unblocked", ATTACKER), WAIT)?;
    assert_eq!(
        (expired["reason"].as_str(), expired["origin"].as_str()),
        (Some("expired"), Some("scan")),
        "{expired}"
    );
    let fleet = a.wait_for_event(
        |e| event(e, "blocked", ATTACKER) && e["origin"] == "crowdsec",
        WAIT,
    )?;
    assert!(
        fleet["ttl_s"].as_u64().is_some_and(|t| t > 3000),
        "the ban's remaining time: {fleet}"
    );
    assert_eq!(answered(&lab, FleetLab::A_V4, "22,80")?, 0);
    a.stop()?;
    Ok(())
}
