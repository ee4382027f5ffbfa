//! Normal clients are not scanners: 300 HTTP requests to one open port
//! produce no detection, while a real scan in the same run still does.

use std::{net::SocketAddr, time::Duration};

use scanner_tests::{Daemon, Lab, require_root, traffic};

const CLIENT: &str = "198.18.0.3";
const REQUESTS: usize = 300;

#[test]
fn http_client_is_not_reported() -> anyhow::Result<()> {
    if !require_root("http_client_is_not_reported") {
        return Ok(());
    }
    let lab = Lab::new()?;
    lab.add_attacker_address(&format!("{CLIENT}/24"))?;
    let mut daemon = Daemon::start(
        &lab.server,
        &[
            "run",
            "--iface",
            Lab::SERVER_IF,
            "--events",
            "json",
            "--poll-interval",
            "100ms",
            "--quiet-after",
            "1s",
        ],
    )?;
    daemon.wait_attached(Lab::SERVER_IF)?;

    let server: SocketAddr = format!("{}:8080", Lab::SERVER_V4).parse()?;
    let from: SocketAddr = format!("{CLIENT}:0").parse()?;
    let listener = traffic::listen(&lab.server, server)?;
    std::thread::scope(|s| -> anyhow::Result<()> {
        let served = s.spawn(|| traffic::serve_http(&listener, REQUESTS));
        lab.attacker.enter(|| -> anyhow::Result<()> {
            for _ in 0..REQUESTS {
                traffic::http_get(from, server)?;
            }
            Ok(())
        })??;
        served
            .join()
            .map_err(|_| anyhow::anyhow!("server thread panicked"))?
    })?;

    // A real scan from another address proves the detector is live; once it
    // has been reported, the benign client's traffic has been polled too.
    traffic::nmap(
        &lab.attacker,
        &["-sS", "-p1-100", "--max-retries", "1", Lab::SERVER_V4],
    )?;
    daemon.wait_for_event(
        |e| e["event"] == "scan_ended" && e["source"] == Lab::ATTACKER_V4,
        Duration::from_secs(120),
    )?;
    // Stopping polls once more and closes every open scan: read to the end.
    let status = daemon.stop()?;
    assert!(status.success(), "{status}");
    let about_client: Vec<_> = daemon
        .events()
        .into_iter()
        .filter(|e| e["source"] == CLIENT)
        .collect();
    assert!(
        about_client.is_empty(),
        "benign client reported: {about_client:?}"
    );
    Ok(())
}
