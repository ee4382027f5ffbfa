//! One detection scenario: a lab, services listening on the server, and the
//! daemon watching the server's interface with JSON events.

use std::{
    net::{SocketAddr, TcpListener, UdpSocket},
    process::ExitStatus,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{Daemon, Lab, traffic};

/// How long a scan may take to be detected (slow scans send one probe every
/// 15 s, and detection needs four).
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(150);

/// `scanner run` on the server's interface as the scenarios run it: JSON
/// events, quick polls, scans ended after 2 s of quiet.
pub const RUN_ARGS: [&str; 9] = [
    "run",
    "--iface",
    Lab::SERVER_IF,
    "--events",
    "json",
    "--poll-interval",
    "200ms",
    "--quiet-after",
    "2s",
];

pub struct Scenario {
    pub daemon: Daemon,
    args: Vec<String>,
    pub lab: Lab,
    tcp: Vec<TcpListener>,
    /// Kept open for the scenario's life: bound UDP ports are open ports.
    _udp: Vec<UdpSocket>,
}

impl Scenario {
    /// A lab whose server listens on `tcp` and `udp` ports (IPv4 and IPv6),
    /// with the daemon attached; `extra` are more `scanner run` arguments.
    pub fn start(tcp: &[u16], udp: &[u16], extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(|_| Ok(()), tcp, udp, extra)
    }

    /// [`Scenario::start`] with scans ending after `quiet` (not 2 s).
    pub fn start_quiet(
        tcp: &[u16],
        udp: &[u16],
        extra: &[&str],
        quiet: &str,
    ) -> anyhow::Result<Self> {
        let mut args = vec!["--quiet-after", quiet];
        args.extend_from_slice(extra);
        Self::start_from(|_| Ok(()), tcp, udp, &RUN_ARGS[..7], &args)
    }

    /// [`Scenario::start`], running `setup` on the lab before the daemon starts.
    pub fn start_with(
        setup: impl FnOnce(&Lab) -> anyhow::Result<()>,
        tcp: &[u16],
        udp: &[u16],
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_from(setup, tcp, udp, &RUN_ARGS, extra)
    }

    fn start_from(
        setup: impl FnOnce(&Lab) -> anyhow::Result<()>,
        tcp: &[u16],
        udp: &[u16],
        base: &[&str],
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let lab = Lab::new()?;
        setup(&lab)?;
        let mut tcp_listeners = Vec::new();
        let mut udp_sockets = Vec::new();
        for &port in tcp {
            // [::] listens on IPv4 and IPv6 alike.
            tcp_listeners.push(traffic::listen(
                &lab.server,
                SocketAddr::from(([0u16; 8], port)),
            )?);
        }
        for &port in udp {
            let addr = SocketAddr::from(([0u16; 8], port));
            udp_sockets.push(
                lab.server
                    .enter(|| UdpSocket::bind(addr))?
                    .with_context(|| format!("binding udp {addr}"))?,
            );
        }
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let mut daemon = Daemon::start(&lab.server, &args)?;
        daemon.wait_attached(Lab::SERVER_IF)?;
        Ok(Self {
            daemon,
            args: args.iter().map(|a| a.to_string()).collect(),
            lab,
            tcp: tcp_listeners,
            _udp: udp_sockets,
        })
    }

    /// The server's listener on TCP `port` (one of those `start` was given).
    pub fn listener(&self, port: u16) -> anyhow::Result<&TcpListener> {
        self.tcp
            .iter()
            .find(|l| l.local_addr().is_ok_and(|a| a.port() == port))
            .with_context(|| format!("no listener on {port}"))
    }

    /// Kills the daemon with SIGKILL (a crash: no cleanup at all).
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.daemon.kill9()
    }

    /// Starts a new daemon with the same arguments (after `kill9` or `stop`)
    /// and waits until it is attached.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.restart_with(&[])
    }

    /// [`Scenario::restart`] with `more` arguments this time.
    pub fn restart_with(&mut self, more: &[&str]) -> anyhow::Result<()> {
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        args.extend_from_slice(more);
        let mut daemon = Daemon::start(&self.lab.server, &args)?;
        daemon.wait_attached(Lab::SERVER_IF)?;
        self.daemon = daemon;
        Ok(())
    }

    /// `scanner <args> --socket <the daemon's>` inside the server's
    /// namespace (the audit reads that namespace's sockets); stdout parsed
    /// as JSON.
    pub fn cli_json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let bin = crate::daemon::scanner_binary()?;
        let out = self
            .lab
            .server
            .command(bin.to_str().context("the scanner binary's path")?)
            .args(args)
            .arg("--socket")
            .arg(self.daemon.socket())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "scanner {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("scanner {args:?} printed no JSON"))
    }

    /// The XDP programs attached to the server's interface, by id.
    pub fn xdp_programs(&self) -> anyhow::Result<Vec<u64>> {
        self.lab.xdp_programs()
    }

    /// An nmap SYN scan of the server's `ports` from `source` (an address on
    /// the attacker's side; None: its main one); returns how many ports it
    /// saw answered. A fixed fast rate: nmap otherwise slows down a lot once
    /// probes go unanswered, and what matters is what it sees.
    pub fn answered(&self, source: Option<&str>, ports: &str) -> anyhow::Result<usize> {
        let out = traffic::syn_scan(&self.lab, source, ports)?;
        Ok(traffic::answered_ports(&String::from_utf8_lossy(
            &out.stdout,
        )))
    }

    /// Waits for the `event` about `source`.
    pub fn wait(&mut self, event: &str, source: &str) -> anyhow::Result<Value> {
        self.daemon.wait_for_event(
            |e| e["event"] == event && e["source"] == source,
            DETECT_TIMEOUT,
        )
    }

    /// Stops the daemon (SIGTERM), checks it exits 0, returns every event.
    pub fn stop(&mut self) -> anyhow::Result<Vec<Value>> {
        let status: ExitStatus = self.daemon.stop()?;
        if !status.success() {
            bail!(
                "daemon exited with {status}; log:\n{}",
                self.daemon.log_tail()
            );
        }
        Ok(self.daemon.events())
    }
}

/// Events about `source`.
pub fn about<'a>(events: &'a [Value], source: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["source"] == source).collect()
}

/// How many `event`s there are about `source`.
pub fn count(events: &[Value], source: &str, event: &str) -> usize {
    about(events, source)
        .into_iter()
        .filter(|e| e["event"] == event)
        .count()
}
