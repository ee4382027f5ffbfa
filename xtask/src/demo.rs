//! `cargo xtask demo`: the main job, end to end, in two throwaway namespaces.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context as _, bail};
use scanner_tests::{Daemon, Lab, privilege::is_root, traffic};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub(crate) fn demo() -> anyhow::Result<()> {
    if !is_root() {
        bail!("the demo creates network namespaces and loads XDP: run it as root");
    }
    // Ctrl-C reaches the daemon and nmap too (same process group); we stay
    // alive long enough to remove the namespaces.
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    crate::setup::setup(crate::setup::Need::Demo)?;
    crate::shell::build_scanner(false)?;
    let result = run_demo();
    if INTERRUPTED.load(Ordering::SeqCst) {
        println!("\ninterrupted: namespaces removed");
        return Ok(());
    }
    result
}

fn run_demo() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    println!(
        "\n== Lab: namespace {} ({}, attacker) <- veth -> namespace {} ({}, server)",
        lab.attacker.name(),
        Lab::ATTACKER_V4,
        lab.server.name(),
        Lab::SERVER_V4
    );
    // Two services, so nmap finds something open.
    let _ssh = traffic::listen(&lab.server, SocketAddr::from(([198, 18, 0, 2], 22)))?;
    let _web = traffic::listen(&lab.server, SocketAddr::from(([198, 18, 0, 2], 80)))?;

    println!(
        "== Starting the detector on the server: scanner run --iface {}\n",
        Lab::SERVER_IF
    );
    let mut daemon = Daemon::start(
        &lab.server,
        &[
            "run",
            "--iface",
            Lab::SERVER_IF,
            "--poll-interval",
            "250ms",
            "--quiet-after",
            "3s",
        ],
    )?
    .echo(true);
    daemon.wait_for_line(|l| l.contains(" attached "), Duration::from_secs(60))?;

    let target = Lab::SERVER_V4;
    println!("\n== Attacker: nmap -n -Pn -sS -p1-1000 {target}\n");
    std::thread::scope(|s| -> anyhow::Result<()> {
        let scan = s.spawn(|| traffic::nmap(&lab.attacker, &["-sS", "-p1-1000", target]));
        // The detection shows up while nmap is still at work.
        daemon.wait_for_line(
            |l| l.contains("SCAN DETECTED") && l.contains(Lab::ATTACKER_V4),
            Duration::from_secs(60),
        )?;
        let out = scan
            .join()
            .map_err(|_| anyhow::anyhow!("nmap thread panicked"))??;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            println!("[nmap] {line}");
        }
        Ok(())
    })?;
    println!("\n== Waiting for the scan's totals (reported after 3 s of quiet)\n");
    let ended = daemon.wait_for_line(
        |l| l.contains("scan ended") && l.contains(Lab::ATTACKER_V4),
        Duration::from_secs(60),
    )?;
    let status = daemon.stop()?;
    println!(
        "\n== Detected: {}\n== The daemon exited ({status}) and detached; namespaces are removed on exit.",
        ended
            .split_once("scan ended")
            .map_or(ended.as_str(), |(_, r)| r.trim())
    );
    Ok(())
}
