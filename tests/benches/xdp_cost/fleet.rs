//! The fleet's figures (probe signals, issue 24), each from real programs
//! in namespaces: the time from a zmap sweep's first probe to every server
//! of a five-server fleet dropping the sweeper (CrowdSec deciding, 2 s
//! pulls), over UDP syslog and over rsyslog; the daemon's CPU at 1,000 new
//! sources a second with the signals off, on at their defaults and sending
//! every record; CrowdSec 1.4.6's ingestion (records a second in, parsed by
//! the collection's parser) over its UDP syslog datasource and over rsyslog
//! and its file datasource; and a simulated fleet of 50 servers (records
//! replayed at background rates) with a sweep across it: the time from its
//! first record to the Local API's decision.

use std::{
    fmt::Write as _,
    io::Write as _,
    net::{TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use scanner_tests::{
    Lab, Netns, TempDir,
    agent::{Agent, Rsyslog},
    crowdsec::{LAPI_PORT, Lapi},
    fleet::{Fleet, all_block},
    sweep::SweepLab,
    traffic,
};

use crate::{daemon_cost, median, throughput};

/// Sweeps timed per transport.
const SWEEPS: u8 = 3;
/// The daemon's CPU window per configuration, and the rounds (the
/// configurations take turns within each).
const COST_WINDOW: Duration = Duration::from_secs(30);
const COST_ROUNDS: usize = 2;
/// New sources a second in the cost run.
const NEW_SOURCES: u64 = 1_000;
const METRICS_PORT: u16 = 9465;
/// Where the cost run's daemon sends (a counting socket on the attacker).
const SINK_PORT: u16 = 5514;
/// The agent's Prometheus port, its syslog port, rsyslog's.
const AGENT_METRICS: u16 = 6060;
const SYSLOG_PORT: u16 = 5514;
const RSYSLOG_PORT: u16 = 6514;
/// Offered rates in the ingestion run, each for `STEP`.
const RATES: [u64; 6] = [250, 500, 1_000, 2_000, 4_000, 8_000];
const STEP: Duration = Duration::from_secs(5);
/// The simulated fleet.
const SIMULATED: usize = 50;
/// Background records a second per simulated server: a cloud telescope's
/// per-address rate (about 0.3 packets a second), and a busier one.
const BACKGROUND: [f64; 2] = [0.3, 5.0];
/// The parser's hits: a record read, parsed and handed to the scenarios.
const PARSED: (&str, &str) = ("cs_node_hits_ok_total", "name=\"scanner/scanner-logs\"");

pub(crate) struct CostRow {
    pub label: &'static str,
    /// Percent of one core (median of the rounds).
    pub cpu: f64,
    /// Records the collector received a second.
    pub records: f64,
}

pub(crate) struct IngestRow {
    pub offered: u64,
    pub sent: u64,
    pub parsed: u64,
    /// From the first record sent to the last one parsed.
    pub seconds: f64,
}

pub(crate) struct SimulatedRow {
    pub per_server: f64,
    /// Records a second the collector parsed over the run.
    pub received: f64,
    /// From the sweep's first record to the decision at the Local API.
    pub decided_s: Option<f64>,
}

pub(crate) struct Figures {
    pub sweep_udp: Vec<f64>,
    pub sweep_rsyslog: Vec<f64>,
    pub cost: Vec<CostRow>,
    pub ingest_udp: Vec<IngestRow>,
    pub ingest_file: Vec<IngestRow>,
    pub simulated: Vec<SimulatedRow>,
}

pub(crate) fn measure() -> anyhow::Result<Figures> {
    let sweep_udp = sweeps(false)?;
    let sweep_rsyslog = sweeps(true)?;
    let cost = cost()?;
    let (simulated, ingest_udp) = collector(false)?;
    let (_, ingest_file) = collector(true)?;
    Ok(Figures {
        sweep_udp,
        sweep_rsyslog,
        cost,
        ingest_udp,
        ingest_file,
        simulated,
    })
}

/// zmap -p 22 over the five servers from fresh sources: seconds from its
/// start to the last server's block.
fn sweeps(rsyslog: bool) -> anyhow::Result<Vec<f64>> {
    let mut fleet = Fleet::start(rsyslog)?;
    let targets: Vec<String> = (0..SweepLab::SERVERS).map(SweepLab::server_v4).collect();
    let mac = fleet.lab.gateway_mac()?;
    let mut took = Vec::new();
    for n in 0..SWEEPS {
        let source = SweepLab::attacker_v4(4 + n);
        let began = SystemTime::now();
        traffic::zmap(
            &fleet.lab.attacker,
            SweepLab::ATTACKER_IF,
            &source,
            &mac,
            &targets,
            22,
        )?;
        let t = all_block(&mut fleet.daemons, &source, began)?.as_secs_f64();
        eprintln!(
            "sweep ({}): every server drops it {t:.2} s after its start",
            if rsyslog { "rsyslog" } else { "udp" }
        );
        took.push(t);
    }
    Ok(took)
}

/// What marks a probe record in a datagram.
const PROBE: &[u8] = b"\"event\":\"probe\"";

/// Probe records a UDP socket in `ns` receives, counted until `stop`.
fn count_datagrams(
    ns: &Netns,
    addr: &str,
    port: u16,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let socket = ns.enter(|| UdpSocket::bind((addr, port)))??;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = socket.recv(&mut buf)
                && buf[..n].windows(PROBE.len()).any(|w| w == PROBE)
            {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }))
}

/// The daemon's CPU while trafgen sends SYNs from 1,000 new random
/// 2001:db8::/32 sources a second, with the signals off (events only), at
/// their defaults, and with every record sent (rate and burst past the
/// offered rate).
fn cost() -> anyhow::Result<Vec<CostRow>> {
    let lab = Lab::new()?;
    let dir = TempDir::new("bench-signals")?;
    let (_, syn) = throughput::configs(
        throughput::mac(&lab.server, Lab::SERVER_IF)?,
        throughput::mac(&lab.attacker, Lab::ATTACKER_IF)?,
    );
    let syn_file = dir.0.join("syn.cfg");
    std::fs::write(&syn_file, syn)?;
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sink = count_datagrams(
        &lab.attacker,
        Lab::ATTACKER_V4,
        SINK_PORT,
        received.clone(),
        stop.clone(),
    )?;
    let configs: [(&'static str, &str); 3] = [
        ("signals off (probes = false)", "probes = false\n"),
        ("signals on, defaults (20 a second, burst 200)", ""),
        (
            "every record sent (probe_rate = probe_burst = 100000)",
            "probe_rate = 100000\nprobe_burst = 100000\n",
        ),
    ];
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); configs.len()];
    for _ in 0..COST_ROUNDS {
        for (i, (label, extra)) in configs.iter().enumerate() {
            let path = dir.0.join(format!("signals-{i}.toml"));
            std::fs::write(
                &path,
                format!(
                    "[signals]\nsyslog = \"udp://{}:{SINK_PORT}\"\n{extra}",
                    Lab::ATTACKER_V4
                ),
            )?;
            let config = path.to_string_lossy().into_owned();
            let mut daemon = daemon_cost::start(&lab, METRICS_PORT, &["--config", &config])?;
            let window = COST_WINDOW + Duration::from_secs(10);
            let packets = (NEW_SOURCES * window.as_secs()).to_string();
            let rate = format!("{NEW_SOURCES}pps");
            let mut trafgen = lab
                .attacker
                .command("timeout")
                .arg((window.as_secs() + 20).to_string())
                .args(["trafgen", "--dev", Lab::ATTACKER_IF, "--conf"])
                .arg(&syn_file)
                .args(["--num", &packets, "--rate", &rate, "--cpus", "1"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("running trafgen (package netsniff-ng)")?;
            // The first seconds fill the table; the window is the steady state.
            std::thread::sleep(Duration::from_secs(5));
            let r0 = received.load(Ordering::Relaxed);
            let c0 = daemon_cost::cpu_ns(daemon.pid())?;
            let t0 = Instant::now();
            std::thread::sleep(COST_WINDOW);
            let c1 = daemon_cost::cpu_ns(daemon.pid())?;
            let elapsed = t0.elapsed().as_secs_f64();
            let r1 = received.load(Ordering::Relaxed);
            let _ = trafgen.wait();
            daemon.stop().context("stopping the daemon")?;
            let cpu = 100.0 * (c1 - c0) as f64 / 1e9 / elapsed;
            let records = (r1 - r0) as f64 / elapsed;
            eprintln!("signals cost, {label}: {cpu:.2}% of a core, {records:.0} records/s");
            samples[i].0.push(cpu);
            samples[i].1.push(records);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sink.join();
    Ok(configs
        .iter()
        .zip(samples)
        .map(|((label, _), (cpu, records))| CostRow {
            label,
            cpu: median(cpu).unwrap_or_default(),
            records: median(records).unwrap_or_default(),
        })
        .collect())
}

/// An RFC 5424 probe record as the daemon writes it, from `host`.
fn record(host: &str, source: &str) -> Vec<u8> {
    let ts = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    format!(
        "<38>1 {ts} {host} scanner 4242 probe - {{\"ts\":\"{ts}\",\"event\":\"probe\",\"host\":\"{host}\",\"source\":\"{source}\",\"destination\":\"198.18.0.2\",\"iface\":\"eth0\",\"proto\":\"tcp\",\"port\":22,\"port_state\":\"closed\",\"kind\":\"syn\"}}"
    )
    .into_bytes()
}

/// A background source: one random /64 of 2001:db8::/32 each (text in a
/// record, never a packet), so no range collects ten.
fn background_source(rng: &mut u64) -> String {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let r = *rng;
    format!("2001:db8:{:x}:{:x}::1", (r >> 16) & 0xffff, r & 0xffff)
}

/// Where records go: a UDP socket to the agent, or TCP to rsyslog
/// (octet counting, as the daemon frames them).
enum Sender {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

impl Sender {
    fn open(ns: &Netns, file: bool) -> anyhow::Result<Self> {
        ns.enter(|| -> anyhow::Result<Self> {
            Ok(if file {
                let s = TcpStream::connect((Lab::SERVER_V4, RSYSLOG_PORT))?;
                s.set_nodelay(true)?;
                Self::Tcp(s)
            } else {
                let s = UdpSocket::bind((Lab::ATTACKER_V4, 0))?;
                s.connect((Lab::SERVER_V4, SYSLOG_PORT))?;
                Self::Udp(s)
            })
        })?
    }

    fn send(&mut self, message: &[u8]) -> anyhow::Result<()> {
        match self {
            // A datagram the socket could not take is lost like one the
            // agent could not read: it is simply not parsed.
            Self::Udp(s) => {
                let _ = s.send(message);
            }
            Self::Tcp(s) => {
                let mut framed = format!("{} ", message.len()).into_bytes();
                framed.extend_from_slice(message);
                s.write_all(&framed)?;
            }
        }
        Ok(())
    }
}

/// Sends `rate` background records a second for `for_`, paced each
/// millisecond; returns how many went.
fn send_at(sender: &mut Sender, rate: f64, for_: Duration, rng: &mut u64) -> anyhow::Result<u64> {
    let began = Instant::now();
    let mut sent = 0u64;
    while began.elapsed() < for_ {
        let due = (rate * began.elapsed().as_secs_f64()) as u64;
        while sent < due {
            let host = format!("sim-{}", sent as usize % SIMULATED);
            sender.send(&record(&host, &background_source(rng)))?;
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(sent)
}

/// Waits until the agent's parsed count stops moving for 2 s (at most a
/// minute); returns it and when it last moved.
fn settled(agent: &Agent, ns: &Netns) -> anyhow::Result<(f64, Instant)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = agent.metric_sum(ns, PARSED.0, PARSED.1)?;
    let mut moved = Instant::now();
    while Instant::now() < deadline && moved.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(100));
        let now = agent.metric_sum(ns, PARSED.0, PARSED.1)?;
        if now != last {
            last = now;
            moved = Instant::now();
        }
    }
    Ok((last, moved))
}

/// Whether the Local API holds a decision on `ip` (as a bouncer asks).
fn decided(ns: &Netns, key: &str, ip: &str) -> anyhow::Result<bool> {
    let body = traffic::http_exchange(
        ns,
        Lab::SERVER_V4,
        LAPI_PORT,
        &format!(
            "GET /v1/decisions?ip={ip} HTTP/1.1\r\nHost: lapi\r\nX-Api-Key: {key}\r\nConnection: close\r\n\r\n"
        ),
    )?;
    Ok(body.contains(&format!("\"value\":\"{ip}\"")))
}

/// The central agent on the lab's server (Local API beside it), fed from
/// the attacker namespace over UDP or through rsyslog: over UDP first the
/// simulated 50-server fleet, then both transports' ingestion steps.
fn collector(file: bool) -> anyhow::Result<(Vec<SimulatedRow>, Vec<IngestRow>)> {
    let lab = Lab::new()?;
    let lapi = Lapi::start(&lab.server, Lab::SERVER_V4, LAPI_PORT)?;
    let (relay, acquis) = if file {
        let relay = Rsyslog::start(&lab.server, Lab::SERVER_V4, RSYSLOG_PORT)?;
        let acquis = format!(
            "source: file\nfilenames:\n  - {}\nlabels:\n  type: syslog\n",
            relay.file().display()
        );
        (Some(relay), acquis)
    } else {
        (
            None,
            format!(
                "source: syslog\nlisten_addr: {}\nlisten_port: {SYSLOG_PORT}\nlabels:\n  type: syslog\n",
                Lab::SERVER_V4
            ),
        )
    };
    let mut agent = Agent::new(&lapi, &lab.server, "collector", &acquis)?;
    agent.enable_metrics(AGENT_METRICS)?;
    agent.start(&lab.server)?;
    let mut sender = Sender::open(&lab.attacker, file)?;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut simulated = Vec::new();
    if !file {
        let key = lapi.bouncer_key(&lab.server, "bench")?;
        for (n, per_server) in BACKGROUND.into_iter().enumerate() {
            simulated.push(simulate(
                &lab,
                &agent,
                &mut sender,
                &key,
                per_server,
                n,
                &mut rng,
            )?);
        }
    }
    let mut ingest = Vec::new();
    for offered in RATES {
        let (before, _) = settled(&agent, &lab.server)?;
        let began = Instant::now();
        let sent = send_at(&mut sender, offered as f64, STEP, &mut rng)?;
        let (after, last) = settled(&agent, &lab.server)?;
        let row = IngestRow {
            offered,
            sent,
            parsed: (after - before) as u64,
            seconds: last.duration_since(began).as_secs_f64(),
        };
        eprintln!(
            "ingestion ({}): {offered}/s offered, {} sent, {} parsed in {:.1} s",
            if file { "rsyslog, file" } else { "udp" },
            row.sent,
            row.parsed,
            row.seconds
        );
        let lossy = row.parsed * 2 < row.sent;
        ingest.push(row);
        if lossy {
            break;
        }
    }
    drop(sender);
    drop(agent);
    drop(relay);
    Ok((simulated, ingest))
}

/// 50 simulated servers send background records at `per_server` a second
/// each; 5 s in, one source sweeps port 22 of all 50 (a record each, 10 ms
/// apart); the time from its first record to the Local API's decision,
/// and the rate the agent parsed over the run.
fn simulate(
    lab: &Lab,
    agent: &Agent,
    sender: &mut Sender,
    key: &str,
    per_server: f64,
    n: usize,
    rng: &mut u64,
) -> anyhow::Result<SimulatedRow> {
    let rate = per_server * SIMULATED as f64;
    let sweeper = format!("198.18.200.{}", 10 + n);
    let (before, _) = settled(agent, &lab.server)?;
    let began = Instant::now();
    let mut sent = send_at(sender, rate, Duration::from_secs(5), rng)?;
    let swept = Instant::now();
    for i in 0..SIMULATED {
        sender.send(&record(&format!("sim-{i}"), &sweeper))?;
        sent += 1 + send_at(sender, rate, Duration::from_millis(10), rng)?;
    }
    let mut decided_s = None;
    let deadline = swept + Duration::from_secs(30);
    while Instant::now() < deadline {
        sent += send_at(sender, rate, Duration::from_millis(50), rng)?;
        if decided(&lab.server, key, &sweeper)? {
            decided_s = Some(swept.elapsed().as_secs_f64());
            break;
        }
    }
    let (after, last) = settled(agent, &lab.server)?;
    let received = (after - before) / last.duration_since(began).as_secs_f64().max(1.0);
    eprintln!(
        "simulated fleet of {SIMULATED}, {per_server}/s each: {sent} records, {received:.0}/s parsed, decision after {decided_s:?} s"
    );
    Ok(SimulatedRow {
        per_server,
        received,
        decided_s,
    })
}

/// The highest offered rate with every record parsed.
fn lossless(rows: &[IngestRow]) -> Option<u64> {
    rows.iter()
        .take_while(|r| r.parsed >= r.sent)
        .last()
        .map(|r| r.offered)
}

pub(crate) fn markdown(md: &mut String, f: &Figures) -> anyhow::Result<()> {
    writeln!(md, "## The fleet: probe signals decided by CrowdSec\n")?;
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|t| format!("{t:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        md,
        "**Sweep to block.** Five servers behind a router namespace, each running the \
         daemon (release build) with the bouncer (2 s pulls) and probe \
         signals, a central CrowdSec 1.4.6 agent running packaging/crowdsec and its Local \
         API; zmap 2.1.1 `-p 22` sweeps the five from a fresh source, {SWEEPS} times per \
         transport. The time is from zmap's start to the last server's `blocked` event \
         (origin crowdsec): over UDP syslog {} s, over TCP to rsyslog and CrowdSec's file \
         datasource {} s (target: at most 5 s).\n",
        fmt(&f.sweep_udp),
        fmt(&f.sweep_rsyslog)
    )?;
    writeln!(
        md,
        "**The signals' cost.** The daemon (release build) on the two-namespace lab while \
         trafgen sends {NEW_SOURCES} SYNs a second, each from a new random 2001:db8::/32 \
         source (none is ever decided: each probes one port); events and records go over \
         UDP to a counting socket. CPU over a {}-second window (schedstat, after 5 s of \
         warm-up), median of {COST_ROUNDS} rounds, the configurations taking turns.\n",
        COST_WINDOW.as_secs()
    )?;
    writeln!(
        md,
        "| configuration | daemon CPU (% of a core) | records received a second |"
    )?;
    writeln!(md, "| --- | ---: | ---: |")?;
    for r in &f.cost {
        writeln!(md, "| {} | {:.2} | {:.0} |", r.label, r.cpu, r.records)?;
    }
    writeln!(
        md,
        "\n**CrowdSec's ingestion.** A sender in one namespace offers probe records (RFC \
         5424, each from a new random source, 50 host names) for {} s at each rate to a \
         crowdsec 1.4.6 agent (`parser_routines: 1`, Debian's default) in another, running \
         the collection; parsed is the agent's own count of records through \
         scanner/scanner-logs (`cs_node_hits_ok_total`), read once it stops moving. UDP: \
         straight to its `syslog` datasource; rsyslog: TCP to rsyslog 8 (imtcp), a file, \
         its `file` datasource (TCP pushes back, so nothing is lost: a rate past the \
         agent's shows as time).\n",
        STEP.as_secs()
    )?;
    writeln!(
        md,
        "| offered (records/s) | UDP: sent | UDP: parsed | rsyslog: sent | rsyslog: parsed | rsyslog: seconds to parse all |"
    )?;
    writeln!(md, "| ---: | ---: | ---: | ---: | ---: | ---: |")?;
    for (i, rate) in RATES.iter().enumerate() {
        let cell = |rows: &[IngestRow], pick: fn(&IngestRow) -> String| {
            rows.get(i).map_or("-".to_owned(), pick)
        };
        writeln!(
            md,
            "| {rate} | {} | {} | {} | {} | {} |",
            cell(&f.ingest_udp, |r| r.sent.to_string()),
            cell(&f.ingest_udp, |r| r.parsed.to_string()),
            cell(&f.ingest_file, |r| r.sent.to_string()),
            cell(&f.ingest_file, |r| r.parsed.to_string()),
            cell(&f.ingest_file, |r| format!("{:.1}", r.seconds)),
        )?;
    }
    writeln!(
        md,
        "\nHighest offered rate with nothing lost: UDP {}, rsyslog {} records a second.\n",
        lossless(&f.ingest_udp).map_or("none".to_owned(), |r| r.to_string()),
        lossless(&f.ingest_file).map_or("none".to_owned(), |r| r.to_string()),
    )?;
    writeln!(
        md,
        "**A simulated fleet of {SIMULATED} servers.** The same agent over UDP gets \
         background records from {SIMULATED} host names at the rate below per server (new \
         random sources; 0.3 a second is what a cloud telescope's sensors each received), \
         and 5 s in, one source's sweep of port 22 across all {SIMULATED}, a record every \
         10 ms. Decision: from the sweep's first record to the Local API holding a ban \
         for the source (polled every 50 ms as a bouncer); a server then blocks it at its \
         next pull (2 s at most, as the sweep-to-block figure above includes).\n"
    )?;
    writeln!(
        md,
        "| background per server (records/s) | collector parsed (records/s) | sweep's first record to decision (s) |"
    )?;
    writeln!(md, "| ---: | ---: | ---: |")?;
    for r in &f.simulated {
        writeln!(
            md,
            "| {} | {:.0} | {} |",
            r.per_server,
            r.received,
            r.decided_s
                .map_or("not decided in 30 s".to_owned(), |s| format!("{s:.2}"))
        )?;
    }
    writeln!(md)?;
    Ok(())
}

/// The targets' rows: sweep to block and the signals' cost.
pub(crate) fn targets(md: &mut String, f: &Figures) -> anyhow::Result<()> {
    let status = |ok: bool| if ok { "met" } else { "missed" };
    let worst = f
        .sweep_udp
        .iter()
        .chain(&f.sweep_rsyslog)
        .copied()
        .fold(0.0, f64::max);
    writeln!(
        md,
        "| a sweep's first probe to every server dropping it at most 5 s (2 s pull) | {worst:.1} s (slowest of {}) | {} |",
        f.sweep_udp.len() + f.sweep_rsyslog.len(),
        status(worst > 0.0 && worst <= 5.0)
    )?;
    if let (Some(off), Some(on)) = (f.cost.first(), f.cost.get(1)) {
        let extra = on.cpu - off.cpu;
        writeln!(
            md,
            "| the signals' cost at {NEW_SOURCES} new sources a second at most +1% of a core | {extra:+.2} points (defaults) | {} |",
            status(extra <= 1.0)
        )?;
    }
    Ok(())
}
