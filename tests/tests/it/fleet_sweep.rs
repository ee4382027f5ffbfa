//! Horizontal sweeps no single server sees, decided fleet-wide by CrowdSec:
//! five servers run scanner with the bouncer and probe signals on, a
//! central CrowdSec agent runs the shipped collection (packaging/crowdsec)
//! on their syslog, and real zmap and masscan sweep them from behind a
//! router (see `scanner_tests::sweep`). No server decides alone; CrowdSec
//! does, and every server then drops the sweeper. A slow sweep is caught
//! too; a monitoring host and a load balancer's health checks never are;
//! with the collector down local detection goes on, and once it is back
//! the signals flow again. The same sweep also goes the rsyslog way: TCP
//! to rsyslog on the central host, a file, CrowdSec's `file` datasource.

use std::{
    net::{SocketAddr, TcpListener},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, SystemTime},
};

use scanner_tests::{
    agent::Rsyslog,
    crowdsec::Lapi,
    fleet::{Fleet, WAIT, all_block},
    require_root,
    sweep::SweepLab,
    traffic,
};
use serde_json::Value;

/// Listeners on ports 22 and 80 of every server (see [`accept_all`]).
fn serve(lab: &SweepLab) -> anyhow::Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    for (i, ns) in lab.servers.iter().enumerate() {
        for port in [22u16, 80] {
            let addr: SocketAddr = format!("{}:{port}", SweepLab::server_v4(i)).parse()?;
            let l = ns.enter(|| TcpListener::bind(addr))??;
            l.set_nonblocking(true)?;
            listeners.push(l);
        }
    }
    Ok(listeners)
}

/// Accepts and drops what `listeners` have, until `stop`.
fn accept_all(listeners: &[TcpListener], stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        for l in listeners {
            while l.accept().is_ok() {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The monitoring host: a real TCP connection to ports 22 and 80 of every
/// server, and the load balancer's HTTP health check of port 80, every
/// 2 s until `stop`. Runs inside the monitor's namespace. Rounds done.
fn monitor(stop: &AtomicBool) -> anyhow::Result<u32> {
    let mut rounds = 0;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..SweepLab::SERVERS {
            let server = SweepLab::server_v4(i);
            for port in [22, 80] {
                let to: SocketAddr = format!("{server}:{port}").parse()?;
                let from: SocketAddr = format!("{}:0", SweepLab::MONITOR_V4).parse()?;
                anyhow::ensure!(traffic::tcp_check(from, to)?, "{to} refused the monitor");
            }
            let to: SocketAddr = format!("{server}:80").parse()?;
            let from: SocketAddr = format!("{}:0", SweepLab::BALANCER_V4).parse()?;
            anyhow::ensure!(traffic::tcp_check(from, to)?, "{to} refused the balancer");
        }
        rounds += 1;
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok(rounds)
}

/// The scenarios CrowdSec decided about `source`.
fn scenarios(lapi: &Lapi, lab: &SweepLab, source: &str) -> anyhow::Result<Vec<String>> {
    let alerts = lapi.alerts(&lab.central)?;
    Ok(alerts
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["source"]["value"] == source)
        .filter_map(|a| a["scenario"].as_str().map(str::to_owned))
        .collect())
}

#[test]
fn sweeps_no_server_decides_are_decided_by_crowdsec_and_dropped_everywhere() -> anyhow::Result<()> {
    if !require_root("sweeps_no_server_decides_are_decided_by_crowdsec_and_dropped_everywhere") {
        return Ok(());
    }
    let fleet = Fleet::start(false)?;
    let Fleet {
        lab,
        lapi,
        mut agent,
        mut daemons,
        ..
    } = fleet;
    let stop = AtomicBool::new(false);
    let listeners = serve(&lab)?;
    let targets: Vec<String> = (0..SweepLab::SERVERS).map(SweepLab::server_v4).collect();
    let mac = lab.gateway_mac()?;
    let range = format!("{}-{}", targets[0], targets[SweepLab::SERVERS - 1]);
    let monitored = std::thread::scope(|s| -> anyhow::Result<u32> {
        let accepting = s.spawn(|| accept_all(&listeners, &stop));
        let watching = s.spawn(|| lab.monitor.enter(|| monitor(&stop)));
        let outcome = (|| -> anyhow::Result<()> {
            // zmap -p 22 across the five servers: each sees one probe.
            let zmapper = SweepLab::attacker_v4(1);
            let began = SystemTime::now();
            let answered = traffic::zmap(
                &lab.attacker,
                SweepLab::ATTACKER_IF,
                &zmapper,
                &mac,
                &targets,
                22,
            )?;
            assert_eq!(
                answered.len(),
                SweepLab::SERVERS,
                "every server answers the first pass: {answered:?}"
            );
            let took = all_block(&mut daemons, &zmapper, began)?;
            eprintln!("zmap sweep: first probe to every server dropping it: {took:?}");
            let again = traffic::zmap(
                &lab.attacker,
                SweepLab::ATTACKER_IF,
                &zmapper,
                &mac,
                &targets,
                22,
            )?;
            assert!(
                again.is_empty(),
                "a second zmap pass gets no answer: {again:?}"
            );
            assert!(
                scenarios(&lapi, &lab, &zmapper)?.contains(&"scanner/horizontal-scan".to_owned())
            );

            // masscan -p22,80,443 at 100 packets a second: the same.
            let masscanner = SweepLab::attacker_v4(2);
            let began = SystemTime::now();
            traffic::masscan_sweep(
                &lab.attacker,
                SweepLab::ATTACKER_IF,
                &masscanner,
                &mac,
                &range,
                "22,80,443",
                100,
            )?;
            let took = all_block(&mut daemons, &masscanner, began)?;
            eprintln!("masscan sweep: first probe to every server dropping it: {took:?}");
            let again = traffic::zmap(
                &lab.attacker,
                SweepLab::ATTACKER_IF,
                &masscanner,
                &mac,
                &targets,
                80,
            )?;
            assert!(again.is_empty(), "after masscan, no answer: {again:?}");

            // A slow sweep: one server every 10 s.
            let slow = SweepLab::attacker_v4(3);
            for (i, t) in targets.iter().enumerate() {
                if i > 0 {
                    std::thread::sleep(Duration::from_secs(10));
                }
                traffic::nmap(
                    &lab.attacker,
                    &[
                        "-sS",
                        "--max-retries",
                        "0",
                        "-p",
                        "22",
                        "-S",
                        &slow,
                        "-e",
                        SweepLab::ATTACKER_IF,
                        t,
                    ],
                )?;
            }
            all_block(&mut daemons, &slow, SystemTime::now())?;

            // The collector down: a scan of one server is still detected
            // and blocked there.
            agent.stop();
            let loud = SweepLab::attacker_v4(4);
            traffic::nmap(
                &lab.attacker,
                &[
                    "-sS",
                    "--max-retries",
                    "0",
                    "--min-rate",
                    "2000",
                    "-p",
                    "1-200",
                    "-S",
                    &loud,
                    "-e",
                    SweepLab::ATTACKER_IF,
                    &targets[0],
                ],
            )?;
            let blocked = daemons[0].wait_for_event(
                |e| e["event"] == "blocked" && e["source"] == loud.as_str(),
                WAIT,
            )?;
            assert_eq!(blocked["origin"], "scan", "{blocked}");
            // Back: the next sweep is decided again.
            agent.start(&lab.central)?;
            let later = SweepLab::attacker_v4(5);
            let began = SystemTime::now();
            traffic::zmap(
                &lab.attacker,
                SweepLab::ATTACKER_IF,
                &later,
                &mac,
                &targets,
                22,
            )?;
            all_block(&mut daemons, &later, began)?;
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        let _ = accepting.join();
        let rounds = watching
            .join()
            .map_err(|_| anyhow::anyhow!("the monitor panicked"))???;
        outcome.map(|()| rounds)
    });
    let monitored = monitored.inspect_err(|_| {
        for (i, d) in daemons.iter_mut().enumerate() {
            let _ = d.stop();
            let about: Vec<String> = d
                .events()
                .iter()
                .filter(|e| {
                    e["source"] == SweepLab::MONITOR_V4 || e["source"] == SweepLab::BALANCER_V4
                })
                .map(Value::to_string)
                .collect();
            eprintln!(
                "server-{i} about the clients: {about:?}\nlog: {}",
                d.log_tail()
            );
        }
    })?;
    assert!(monitored >= 5, "the monitor ran {monitored} rounds");
    for who in [SweepLab::MONITOR_V4, SweepLab::BALANCER_V4] {
        assert!(
            scenarios(&lapi, &lab, who)?.is_empty(),
            "{who} was decided: {}",
            agent.log()
        );
    }
    for (i, d) in daemons.iter_mut().enumerate() {
        let status = d.stop()?;
        assert!(status.success(), "server-{i} exited with {status}");
        for e in &d.events() {
            let source = e["source"].as_str().unwrap_or_default();
            assert!(
                !(e["event"] == "scan_detected"
                    && source.starts_with("198.18.100.")
                    && source != "198.18.100.4"),
                "server-{i} decided a sweeper alone: {e}"
            );
            assert!(
                source != SweepLab::MONITOR_V4 && source != SweepLab::BALANCER_V4,
                "server-{i} reported a client: {e}"
            );
        }
    }
    Ok(())
}

#[test]
fn the_rsyslog_path_carries_a_sweep_to_crowdsec() -> anyhow::Result<()> {
    if !require_root("the_rsyslog_path_carries_a_sweep_to_crowdsec") {
        return Ok(());
    }
    let mut fleet = Fleet::start(true)?;
    let targets: Vec<String> = (0..SweepLab::SERVERS).map(SweepLab::server_v4).collect();
    let mac = fleet.lab.gateway_mac()?;
    let zmapper = SweepLab::attacker_v4(1);
    let began = SystemTime::now();
    traffic::zmap(
        &fleet.lab.attacker,
        SweepLab::ATTACKER_IF,
        &zmapper,
        &mac,
        &targets,
        22,
    )?;
    let relay = fleet.rsyslog.as_ref().map(Rsyslog::file);
    let took = all_block(&mut fleet.daemons, &zmapper, began).map_err(|e| {
        let written = relay
            .and_then(|f| std::fs::read_to_string(f).ok())
            .unwrap_or_default();
        e.context(format!(
            "rsyslog wrote:\n{written}\nthe agent's log:\n{}",
            fleet.agent.log()
        ))
    })?;
    eprintln!("zmap sweep over rsyslog: first probe to every server dropping it: {took:?}");
    assert!(
        scenarios(&fleet.lapi, &fleet.lab, &zmapper)?
            .contains(&"scanner/horizontal-scan".to_owned()),
        "{}",
        fleet.agent.log()
    );
    Ok(())
}
