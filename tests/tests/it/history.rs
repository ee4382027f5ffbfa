//! History across restarts: detections of two sources over two daemon
//! runs, a listener opened and closed, all in the history file; `scanner
//! history` answers by source and by port without a daemon; `scanner
//! report` makes a page a real browser renders; a damaged history file is
//! a warning and detection goes on.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context as _;
use scanner_tests::{
    Lab, TempDir, daemon::scanner_binary, require_root, scenario::Scenario, traffic,
};
use serde_json::Value;

const OTHER: &str = "198.18.0.5";

/// `scanner ARGS`: (success, stdout, stderr).
fn scanner(args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let out = Command::new(scanner_binary()?).args(args).output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn history_json(db: &str, filter: &[&str]) -> anyhow::Result<Value> {
    let mut args = vec!["history", "--history", db, "--since", "1h", "--json"];
    args.extend_from_slice(filter);
    let (ok, out, err) = scanner(&args)?;
    anyhow::ensure!(ok, "scanner history failed: {err}");
    Ok(serde_json::from_str(&out)?)
}

fn count(events: &Value, event: &str, pred: impl Fn(&Value) -> bool) -> usize {
    events["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["event"] == event && pred(e))
        .count()
}

fn scan_from(sc: &Scenario, source: Option<&str>, ports: &str) -> anyhow::Result<()> {
    let mut args = vec!["-sS", "--max-retries", "0", "-p", ports];
    if let Some(s) = source {
        args.extend(["-S", s, "-e", Lab::ATTACKER_IF]);
    }
    args.push(Lab::SERVER_V4);
    traffic::nmap(&sc.lab.attacker, &args).map(drop)
}

#[test]
fn history_outlives_a_restart_and_answers_by_source_port_and_in_a_report() -> anyhow::Result<()> {
    if !require_root("history_outlives_a_restart_and_answers_by_source_port_and_in_a_report") {
        return Ok(());
    }
    let dir = TempDir::new("restart")?;
    let db = dir.0.join("history.db");
    let db_s = db.to_string_lossy().into_owned();
    let mut sc = Scenario::start(&[22, 80], &[], &["--history", &db_s])?;
    sc.lab.add_attacker_address(&format!("{OTHER}/24"))?;
    scan_from(&sc, None, "1-100")?;
    sc.wait("scan_detected", Lab::ATTACKER_V4)?;
    scan_from(&sc, Some(OTHER), "100-200")?;
    sc.wait("scan_detected", OTHER)?;
    // Telnet opens on every address, then closes.
    let telnet = traffic::listen(&sc.lab.server, SocketAddr::from(([0u16; 8], 23)))?;
    let opened = sc.daemon.wait_for_event(
        |e| e["event"] == "port_opened" && e["port"] == 23,
        Duration::from_secs(30),
    )?;
    assert_eq!(
        (
            opened["address"].as_str(),
            opened["all_addresses"].as_bool()
        ),
        (Some("::"), Some(true)),
        "{opened}"
    );
    assert!(
        opened["risk"]
            .as_str()
            .is_some_and(|r| r.contains("Telnet")),
        "{opened}"
    );
    drop(telnet);
    sc.daemon.wait_for_event(
        |e| e["event"] == "port_closed" && e["port"] == 23,
        Duration::from_secs(30),
    )?;

    // A second run on the same file: the scanner comes back after its scan
    // ended (a probe within quiet_after of the last one would continue it).
    let ended = sc.wait("scan_ended", Lab::ATTACKER_V4)?;
    sc.wait("scan_ended", OTHER)?;
    sc.stop()?;
    let restarted = std::time::Instant::now();
    sc.restart()?;
    scan_from(&sc, None, "200-300")?;
    sc.wait("scan_detected", Lab::ATTACKER_V4)?;
    // The last hour outlives the restart: the first run's probes of port 50
    // are in it, and it covers more than the second run's life.
    let probed = sc.cli_json(&["ports", "--probed", "--json", "--limit", "1000"])?;
    let port50 = probed
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h["proto"] == "tcp" && h["port"] == 50)
        .cloned()
        .unwrap_or_default();
    assert!(
        port50["probes_last_hour"].as_u64() >= Some(1),
        "the first run's probes: {port50}"
    );
    assert!(
        port50["last_hour_s"].as_u64() > Some(restarted.elapsed().as_secs()),
        "{port50}"
    );
    sc.stop()?;

    // No daemon now: the file answers.
    let by_source = history_json(&db_s, &["--source", Lab::ATTACKER_V4])?;
    let detected = count(&by_source, "scan_detected", |_| true);
    assert_eq!(detected, 2, "both runs' detections: {by_source}");
    assert_eq!(
        count(&by_source, "scan_detected", |e| e["source"] == OTHER),
        0,
        "only the source asked for"
    );
    let by_cidr = history_json(&db_s, &["--source", "198.18.0.0/24", "--kind", "syn"])?;
    assert_eq!(count(&by_cidr, "scan_detected", |_| true), 3, "{by_cidr}");
    let by_port = history_json(&db_s, &["--port", "23"])?;
    assert_eq!(count(&by_port, "port_opened", |_| true), 1, "{by_port}");
    assert_eq!(count(&by_port, "port_closed", |_| true), 1, "{by_port}");
    let probed: u64 = by_port["port_hours"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["probes"].as_u64())
        .sum();
    assert!(probed >= 1, "probes of port 23 in its hour: {by_port}");
    // Every port a scan probed is kept, not only the ten in top_ports: a
    // port of the first scan its event does not list finds that scan (and
    // not the other source's, which probed 100-200).
    let top: Vec<u64> = ended["top_ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(top.len(), 10, "{ended}");
    let unlisted = (1..100u64)
        .find(|p| !top.contains(p))
        .context("a port outside top_ports")?;
    let by_unlisted = history_json(&db_s, &["--port", &unlisted.to_string()])?;
    let ended_with = |source: &str| {
        count(&by_unlisted, "scan_ended", |e| {
            e["source"] == source && e["ports"] == 100
        })
    };
    assert_eq!(
        (ended_with(Lab::ATTACKER_V4), ended_with(OTHER)),
        (1, 0),
        "port {unlisted}: {by_unlisted}"
    );
    let (ok, table, err) = scanner(&["history", "--history", &db_s, "--port", "23"])?;
    assert!(
        ok && table.contains("port_opened") && table.contains("probes"),
        "{table}{err}"
    );

    // The report, rendered by a real browser.
    let page = dir.0.join("report.html");
    let page_s = page.to_string_lossy().into_owned();
    let (ok, said, err) = scanner(&[
        "report",
        "--history",
        &db_s,
        "--since",
        "1h",
        "--html",
        &page_s,
    ])?;
    assert!(ok && said.contains("3 scans"), "{said}{err}");
    let html = std::fs::read_to_string(&page)?;
    well_formed(&html)?;
    let dom = chromium(&dir.0, &["--dump-dom", &format!("file://{page_s}")])?;
    for want in [
        "Probes per port over time",
        "Scans detected per day",
        "Top sources",
        "Exposed listening ports",
        "Port changes",
        "tcp/23",
        Lab::ATTACKER_V4,
        OTHER,
    ] {
        assert!(dom.contains(want), "{want} not in the rendered page");
    }
    let shot = dir.0.join("report.png");
    chromium(
        &dir.0,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,1800",
            &format!("file://{page_s}"),
        ],
    )?;
    non_blank(&shot)?;
    // To look at the page: SCANNER_TEST_ARTIFACTS=DIR keeps a copy.
    if let Some(keep) = std::env::var_os("SCANNER_TEST_ARTIFACTS") {
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(&keep)?;
        std::fs::copy(&shot, keep.join("report.png"))?;
        std::fs::copy(&page, keep.join("report.html"))?;
    }
    Ok(())
}

#[test]
fn a_damaged_history_file_is_a_warning_and_detection_goes_on() -> anyhow::Result<()> {
    if !require_root("a_damaged_history_file_is_a_warning_and_detection_goes_on") {
        return Ok(());
    }
    let dir = TempDir::new("damaged")?;
    let db = dir.0.join("history.db");
    std::fs::write(&db, vec![0x5a; 16384])?;
    let db_s = db.to_string_lossy().into_owned();
    let mut sc = Scenario::start(&[22, 80], &[], &["--history", &db_s])?;
    let line = sc
        .daemon
        .wait_for_log("history off", Duration::from_secs(10))?;
    assert!(line.contains("is not a scanner history"), "{line}");
    scan_from(&sc, None, "1-100")?;
    sc.wait("scan_detected", Lab::ATTACKER_V4)?;
    sc.stop()?;
    let (ok, _, err) = scanner(&["history", "--history", &db_s])?;
    assert!(!ok && err.contains("is not a scanner history"), "{err}");
    // A path that cannot be a file (its directory is a file): the same.
    let blocked = dir.0.join("history.db").join("x.db");
    let blocked_s = blocked.to_string_lossy().into_owned();
    let mut sc = Scenario::start(&[22, 80], &[], &["--history", &blocked_s])?;
    let line = sc
        .daemon
        .wait_for_log("history off", Duration::from_secs(10))?;
    assert!(line.contains("creating the history directory"), "{line}");
    scan_from(&sc, None, "1-100")?;
    sc.wait("scan_detected", Lab::ATTACKER_V4)?;
    sc.stop()?;
    Ok(())
}

/// Runs headless Chromium (Debian's) on `args`; returns its stdout.
fn chromium(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let profile = dir.join("chromium-profile");
    let out = Command::new("timeout")
        .arg("60")
        .arg("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .context("running chromium (cargo xtask setup installs it)")?;
    anyhow::ensure!(
        out.status.success(),
        "chromium {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The screenshot shows a page: many colours, and far from all white.
fn non_blank(png_file: &Path) -> anyhow::Result<()> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png_file)?));
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().context("png size")?];
    let info = reader.next_frame(&mut buf)?;
    let bytes = &buf[..info.buffer_size()];
    let px = info.color_type.samples();
    let pixels: Vec<&[u8]> = bytes.chunks(px).collect();
    let colours: std::collections::HashSet<&[u8]> = pixels.iter().copied().collect();
    let ink = pixels
        .iter()
        .filter(|p| p[..3].iter().any(|c| *c < 200))
        .count();
    eprintln!(
        "report screenshot: {}x{}, {} colours, {:.1}% ink",
        info.width,
        info.height,
        colours.len(),
        100.0 * ink as f64 / pixels.len() as f64
    );
    anyhow::ensure!(colours.len() > 20, "{} colours: blank?", colours.len());
    anyhow::ensure!(ink * 200 > pixels.len(), "under 0.5% of the page drawn");
    Ok(())
}

/// Every element is closed, in order (void elements and `/>` aside), and
/// the page starts with its doctype.
fn well_formed(html: &str) -> anyhow::Result<()> {
    anyhow::ensure!(html.starts_with("<!DOCTYPE html>"), "no doctype");
    const VOID: [&str; 3] = ["meta", "br", "hr"];
    let mut stack: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').context("a tag is not closed")?;
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().context("a closing tag without its opening")?;
            anyhow::ensure!(open == name.trim(), "<{open}> closed by </{name}>");
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if tag.ends_with('/') || VOID.contains(&name.as_str()) {
            continue;
        }
        stack.push(name);
    }
    anyhow::ensure!(stack.is_empty(), "unclosed: {stack:?}");
    Ok(())
}
