//! A fleet for the sweep tests and benchmarks: the [`SweepLab`] with a
//! Local API and a central CrowdSec agent running scanner's collection on
//! the central host, and a daemon with the bouncer (2 s pulls) and probe
//! signals on every server, sending to the agent's syslog datasource over
//! UDP or to rsyslog over TCP (which writes the file the agent reads).

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use serde_json::Value;

use crate::{
    Daemon, TempDir,
    agent::{Agent, Rsyslog},
    crowdsec::{LAPI_PORT, Lapi, secret_file},
    scenario::RUN_ARGS,
    sweep::SweepLab,
};

/// Every wait on the fleet: a daemon verifies three programs before it
/// reaches the Local API, which on 2 busy cores has taken over 30 s.
pub const WAIT: Duration = Duration::from_secs(90);

/// Server `i`'s configuration: the bouncer (2 s pulls), and every event
/// and probe record to `collector`, as `server-i`.
fn config(dir: &Path, i: usize, key: &str, collector: &str) -> anyhow::Result<String> {
    let key_file = secret_file(dir, &format!("server-{i}.key"), key)?;
    let path = dir.join(format!("server-{i}.toml"));
    std::fs::write(
        &path,
        format!(
            "[crowdsec]\nurl = \"http://{c}:{LAPI_PORT}/\"\nbouncer_key_file = \"{k}\"\npull_interval = \"2s\"\n\n\
             [signals]\nsyslog = \"{collector}\"\nhost = \"server-{i}\"\n",
            c = SweepLab::CENTRAL_V4,
            k = key_file.display()
        ),
    )?;
    Ok(path.to_string_lossy().into_owned())
}

/// When an event was made.
fn wall(e: &Value) -> anyhow::Result<SystemTime> {
    Ok(humantime::parse_rfc3339(
        e["ts"].as_str().unwrap_or_default(),
    )?)
}

/// Waits until every server has blocked `source` on CrowdSec's word;
/// returns the longest time from `since` to a server's block.
pub fn all_block(
    daemons: &mut [Daemon],
    source: &str,
    since: SystemTime,
) -> anyhow::Result<Duration> {
    let mut longest = Duration::ZERO;
    for (i, d) in daemons.iter_mut().enumerate() {
        let blocked = d
            .wait_for_event(|e| e["event"] == "blocked" && e["source"] == source, WAIT)
            .map_err(|e| e.context(format!("server-{i} never blocked {source}")))?;
        assert_eq!(blocked["origin"], "crowdsec", "server-{i}: {blocked}");
        longest = longest.max(wall(&blocked)?.duration_since(since).unwrap_or_default());
    }
    Ok(longest)
}

/// The lab with its Local API, the central agent running, and a daemon
/// attached on every server.
pub struct Fleet {
    pub lab: SweepLab,
    pub lapi: Lapi,
    pub agent: Agent,
    pub daemons: Vec<Daemon>,
    pub rsyslog: Option<Rsyslog>,
    _dir: TempDir,
}

impl Fleet {
    /// Signals over UDP straight to the agent's syslog datasource, or
    /// (`rsyslog`) over TCP to rsyslog, which writes the file the agent
    /// reads.
    pub fn start(rsyslog: bool) -> anyhow::Result<Self> {
        let lab = SweepLab::new()?;
        let dir = TempDir::new("fleet-sweep")?;
        let lapi = Lapi::start(&lab.central, SweepLab::CENTRAL_V4, LAPI_PORT)?;
        let c = SweepLab::CENTRAL_V4;
        let (relay, acquis, collector) = if rsyslog {
            let relay = Rsyslog::start(&lab.central, c, 6514)?;
            let acquis = format!(
                "source: file\nfilenames:\n  - {}\nlabels:\n  type: syslog\n",
                relay.file().display()
            );
            (Some(relay), acquis, format!("tcp://{c}:6514"))
        } else {
            let acquis = format!(
                "source: syslog\nlisten_addr: {c}\nlisten_port: 5514\nlabels:\n  type: syslog\n"
            );
            (None, acquis, format!("udp://{c}:5514"))
        };
        let mut agent = Agent::new(&lapi, &lab.central, "central", &acquis)?;
        agent.start(&lab.central)?;
        let mut daemons = Vec::new();
        for (i, ns) in lab.servers.iter().enumerate() {
            let key = lapi.bouncer_key(&lab.central, &format!("server-{i}"))?;
            let cfg = config(&dir.0, i, &key, &collector)?;
            let mut args: Vec<&str> = RUN_ARGS.to_vec();
            args.extend(["--config", &cfg, "--block"]);
            let mut d = Daemon::start(ns, &args)?;
            d.wait_attached(SweepLab::SERVER_IF)?;
            daemons.push(d);
        }
        Ok(Self {
            lab,
            lapi,
            agent,
            daemons,
            rsyslog: relay,
            _dir: dir,
        })
    }
}
