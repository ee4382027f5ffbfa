//! What an operator must be able to trust: a second daemon never disables
//! the first, a closed output never stops protection, a restart resumes
//! instead of reporting old scans again, one host is never a distributed
//! scan, a dry run drops nothing, and pins in a private mount namespace are
//! called out.

use std::{path::PathBuf, process::Stdio, time::Duration};

use scanner_tests::{
    Daemon, Lab,
    daemon::{SOCKET_DIR, cli_ok, pin_dir, scanner_binary},
    require_root,
    scenario::{RUN_ARGS, Scenario, about, count},
    traffic,
};
use scanner_userspace::testing::{Request, call};
use serde_json::Value;

/// A pin directory of the test's own on the fixtures' bpffs, removed on drop.
struct OtherPins(PathBuf);

impl Drop for OtherPins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `scanner run` on the lab's server interface with `more` arguments, run to
/// its end (bounded): (exit code, stdout, stderr).
fn run_once(lab: &Lab, more: &[&str]) -> anyhow::Result<(Option<i32>, String, String)> {
    let bin = scanner_binary()?;
    let bin = bin.to_str().unwrap_or_default();
    let out = lab
        .server
        .command("timeout")
        .args([
            "60",
            bin,
            "run",
            "--iface",
            Lab::SERVER_IF,
            "--log",
            "stderr",
        ])
        .args(more)
        .output()?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn a_second_daemon_is_refused_and_the_first_keeps_protecting() -> anyhow::Result<()> {
    if !require_root("a_second_daemon_is_refused_and_the_first_keeps_protecting") {
        return Ok(());
    }
    let mut sc = Scenario::start(&[22, 80], &[], &["--block"])?;
    let first = sc.daemon.pid();
    let pins = pin_dir(&sc.lab.server)?;
    let socket = PathBuf::from(SOCKET_DIR).join(format!("{}-second.sock", sc.lab.server.name()));
    let socket = socket.to_str().unwrap_or_default();

    // The same pins, another socket.
    let (code, out, err) = run_once(
        &sc.lab,
        &[
            "--socket",
            socket,
            "--pin-dir",
            pins.to_str().unwrap_or_default(),
        ],
    )?;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("another scanner daemon (pid {first}) is running")),
        "{err}"
    );
    assert!(!out.contains("attached"), "{out}");

    // Pins of its own, the same interface.
    let other = OtherPins(pins.with_file_name(format!("{}-second", sc.lab.server.name())));
    let (code, out, err) = run_once(
        &sc.lab,
        &[
            "--socket",
            socket,
            "--pin-dir",
            other.0.to_str().unwrap_or_default(),
        ],
    )?;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("another XDP program is attached to veth-srv")
            && err.contains("\"scanner\"")
            && err.contains(&format!("pid {first}")),
        "names the program and its daemon: {err}"
    );
    assert!(!out.contains("attached"), "{out}");

    // The first daemon still watches and blocks.
    assert_eq!(sc.xdp_programs()?.len(), 1);
    assert!(sc.answered(None, "1-1000")? < 10);
    sc.wait("blocked", Lab::ATTACKER_V4)?;
    sc.stop()?;
    Ok(())
}

#[test]
fn a_closed_stdout_never_stops_protection() -> anyhow::Result<()> {
    if !require_root("a_closed_stdout_never_stops_protection") {
        return Ok(());
    }
    let lab = Lab::new()?;
    let _ssh = traffic::listen(&lab.server, "[::]:22".parse()?)?;
    let run = RUN_ARGS;
    // Blocking on: the daemon goes on without its stdout.
    let mut d = Daemon::start_with_closed_stdout(&lab.server, &[&run[..], &["--block"]].concat())?;
    d.wait_for_log("writing events to stdout failed", Duration::from_secs(60))?;
    let scan = traffic::nmap(
        &lab.attacker,
        &[
            "-sS",
            "--min-rate",
            "5000",
            "--max-retries",
            "0",
            "-p1-1000",
            "-oG",
            "-",
            Lab::SERVER_V4,
        ],
    )?;
    let answered = traffic::answered_ports(&String::from_utf8_lossy(&scan.stdout));
    assert!(
        answered < 10,
        "blocked while its stdout is closed: {answered} answered"
    );
    let list = call(d.socket(), &Request::List {})?;
    let attacker = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["address"] == Lab::ATTACKER_V4)
        .cloned()
        .unwrap_or_default();
    assert_eq!(attacker["state"], "blocked", "{list}");

    // The CLI on a closed pipe ends normally too.
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    let out = std::process::Command::new(scanner_binary()?)
        .args(["list", "--socket"])
        .arg(d.socket())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()?
        .wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.is_empty(),
        "{:?}: {err}",
        out.status
    );

    d.signal(libc::SIGTERM)?;
    let status = d.wait_status(Duration::from_secs(30))?;
    assert!(status.success(), "{status}: {}", d.log_tail());
    assert!(lab.xdp_programs()?.is_empty());

    // Nothing to report to and nothing to block: it stops, cleanly.
    let mut d = Daemon::start_with_closed_stdout(&lab.server, &run)?;
    let status = d.wait_status(Duration::from_secs(60))?;
    assert_eq!(status.code(), Some(1), "{}", d.log_tail());
    assert!(
        d.log().iter().any(|l| l.contains("nothing left to do")),
        "says why: {}",
        d.log_tail()
    );
    assert!(lab.xdp_programs()?.is_empty(), "detached on the way out");
    Ok(())
}

/// The daemon's status once it is ready: it reports what it has to catch
/// up on before `daemon_started`.
fn status_when_ready(sc: &mut Scenario) -> anyhow::Result<Value> {
    sc.daemon
        .wait_for_event(|e| e["event"] == "daemon_started", Duration::from_secs(30))?;
    Ok(call(sc.daemon.socket(), &Request::Status {})?)
}

#[test]
fn a_restart_resumes_instead_of_reporting_old_scans_again() -> anyhow::Result<()> {
    if !require_root("a_restart_resumes_instead_of_reporting_old_scans_again") {
        return Ok(());
    }
    let metrics = "127.0.0.1:9464";
    let mut sc = Scenario::start(&[22, 80], &[], &["--block", "--metrics-listen", metrics])?;
    let src = Lab::ATTACKER_V4;
    assert!(sc.answered(None, "1-1000")? < 10);
    sc.wait("blocked", src)?;
    sc.wait("scan_ended", src)?;

    // A planned restart: nothing is new.
    sc.daemon.stop()?;
    sc.restart()?;
    let status = status_when_ready(&mut sc)?;
    assert_eq!(status["resumed"]["detections"], 1, "{status}");
    assert_eq!(status["resumed"]["blocks"], 1, "{status}");
    assert_eq!(status["blocks"], 1, "{status}");
    let events = sc.daemon.events();
    assert!(
        about(&events, src).is_empty(),
        "reported again: {events:#?}"
    );
    // Its own metrics endpoint is not one of the host's ports coming and
    // going at every restart.
    let own: Vec<&Value> = events.iter().filter(|e| e["port"] == 9464).collect();
    assert!(own.is_empty(), "{own:#?}");
    assert_eq!(sc.answered(None, "22,80")?, 0, "the block still holds");
    let m = traffic::scrape_metrics(&sc.lab.server, 9464)?;
    assert_eq!(
        m.get("scanner_detections_total{kind=\"syn\"}")
            .copied()
            .unwrap_or(0.0),
        0.0,
        "{m:?}"
    );
    assert!(
        m.iter()
            .all(|(k, v)| !k.starts_with("scanner_blocks_total") || *v == 0.0),
        "no block counted again: {m:?}"
    );

    // A crash, and a scan while no daemon reads: that one is new.
    sc.kill9()?;
    let second = "198.18.0.7";
    sc.lab.add_attacker_address(&format!("{second}/24"))?;
    assert!(
        sc.answered(Some(second), "1-1000")? < 10,
        "blocked by the orphaned program"
    );
    sc.restart()?;
    status_when_ready(&mut sc)?;
    let new = sc.wait("scan_detected", second)?;
    assert!(new["latency_us"].as_u64() > Some(0), "{new}");
    sc.wait("blocked", second)?;
    let events = sc.daemon.events();
    assert!(
        about(&events, src).is_empty(),
        "the old scan again: {events:#?}"
    );
    let detections = count(&events, second, "scan_detected");
    assert_eq!(detections, 1, "{events:#?}");
    let status = call(sc.daemon.socket(), &Request::Status {})?;
    assert_eq!(status["blocks"], 2, "{status}");
    let refused: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "block_refused")
        .collect();
    assert!(refused.is_empty(), "no bogus refusal: {refused:?}");
    sc.stop()?;
    Ok(())
}

#[test]
fn one_host_blocked_again_and_again_is_not_a_distributed_scan() -> anyhow::Result<()> {
    if !require_root("one_host_blocked_again_and_again_is_not_a_distributed_scan") {
        return Ok(());
    }
    let mut sc = Scenario::start(&[22], &[], &["--block", "--block-ttl", "2s"])?;
    let src = Lab::ATTACKER_V4;
    for round in 0..4 {
        assert!(sc.answered(None, "1-300")? < 10, "round {round}");
        // The round-th block and its expiry (earlier ones are in the output).
        for event in ["blocked", "unblocked"] {
            let mut seen = 0;
            sc.daemon.wait_for_event(
                |e| {
                    if e["event"] == event && e["source"] == src {
                        seen += 1;
                    }
                    seen > round
                },
                Duration::from_secs(60),
            )?;
        }
    }
    let events = sc.stop()?;
    let distributed: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "distributed")
        .collect();
    assert!(
        distributed.is_empty(),
        "one host as many sources: {distributed:#?}"
    );
    // One scan: blocked again after each expiry, not detected again.
    assert_eq!(count(&events, src, "scan_detected"), 1, "detected again");
    assert_eq!(count(&events, src, "blocked"), 4, "not blocked again");
    Ok(())
}

#[test]
fn a_dry_run_drops_nothing_not_even_blocks_kept_from_before() -> anyhow::Result<()> {
    if !require_root("a_dry_run_drops_nothing_not_even_blocks_kept_from_before") {
        return Ok(());
    }
    let mut sc = Scenario::start(&[22, 80], &[], &["--block"])?;
    let src = Lab::ATTACKER_V4;
    assert!(sc.answered(None, "1-1000")? < 10);
    sc.wait("blocked", src)?;
    sc.daemon.stop()?;

    sc.restart_with(&["--dry-run"])?;
    let started = sc
        .daemon
        .wait_for_event(|e| e["event"] == "daemon_started", Duration::from_secs(30))?;
    assert!(
        started["detail"]
            .as_str()
            .is_some_and(|d| d.contains("dry run: nothing is dropped")),
        "{started}"
    );
    assert_eq!(
        sc.answered(None, "22,80")?,
        2,
        "the kept block is not enforced"
    );
    let status = cli_ok(sc.daemon.socket(), &["status"])?;
    assert!(status.contains("blocking:          dry run"), "{status}");
    // Listed as kept, not as blocked: nothing is enforced.
    let list: Value = serde_json::from_str(&cli_ok(sc.daemon.socket(), &["list", "--json"])?)?;
    let row = scanner_tests::daemon::listed(&list, src);
    assert_eq!(row["state"], "unenforced", "{list}");
    let json = call(sc.daemon.socket(), &Request::Status {})?;
    assert_eq!(
        (json["dry_run"].as_bool(), json["blocks"].as_u64()),
        (Some(true), Some(1))
    );

    // A new scanner: reported as what would be blocked, never dropped.
    let second = "198.18.0.8";
    sc.lab.add_attacker_address(&format!("{second}/24"))?;
    assert_eq!(sc.answered(Some(second), "1-300")?, 300, "nothing dropped");
    let would = sc.wait("blocked", second)?;
    assert_eq!(would["dry_run"], true, "{would}");
    // A manual block in a dry run is kept, not enforced, and says so.
    let out = cli_ok(sc.daemon.socket(), &["block", "198.18.0.9"])?;
    assert!(out.contains("dry run"), "{out}");
    sc.daemon.stop()?;

    // Blocking for real again: the kept block holds once more.
    sc.restart()?;
    assert_eq!(sc.answered(None, "22,80")?, 0, "enforced again");
    sc.stop()?;
    Ok(())
}

#[test]
fn pins_in_a_private_mount_namespace_are_called_out() -> anyhow::Result<()> {
    if !require_root("pins_in_a_private_mount_namespace_are_called_out") {
        return Ok(());
    }
    // `ip netns exec` gives the daemon /sys of its own, without bpffs: it
    // mounts one, which vanishes with that mount namespace.
    let lab = Lab::new()?;
    let mut d = Daemon::start(
        &lab.server,
        &[
            "run",
            "--iface",
            Lab::SERVER_IF,
            "--events",
            "json",
            "--pin-dir",
            "/sys/fs/bpf/scanner",
        ],
    )?;
    let line = d.wait_for_log("private mount namespace", Duration::from_secs(60))?;
    assert!(line.contains("will not outlive"), "{line}");
    d.wait_attached(Lab::SERVER_IF)?;
    let status = d.stop()?;
    assert!(status.success(), "{status}");
    Ok(())
}
