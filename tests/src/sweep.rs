//! The fleet sweep lab: five servers, a central CrowdSec (Local API and
//! agent) and a monitoring host on one bridge (198.18.0.0/24), and an
//! attacker behind a router (198.18.100.0/24), as the Internet would put
//! it: zmap and masscan send every frame to one next-hop MAC, the router's.
//!
//! attacker 198.18.100.1-.9 -- router (.100.254 | .0.254) -- bridge --
//! servers 198.18.0.2-.6 (`veth-srv`), central 198.18.0.10, monitor .20/.21.

use std::process::Command;

use anyhow::Context as _;

use crate::netns::{Netns, run};

pub struct SweepLab {
    pub attacker: Netns,
    pub router: Netns,
    pub servers: Vec<Netns>,
    pub central: Netns,
    pub monitor: Netns,
    /// Holds the bridge; dropped last.
    _switch: Netns,
}

impl SweepLab {
    pub const SERVERS: usize = 5;
    pub const SERVER_IF: &str = "veth-srv";
    pub const ATTACKER_IF: &str = "veth-atk";
    /// The router's side towards the attacker.
    pub const ROUTER_OUT: &str = "r-out";
    pub const CENTRAL_V4: &str = "198.18.0.10";
    pub const MONITOR_V4: &str = "198.18.0.20";
    pub const BALANCER_V4: &str = "198.18.0.21";
    pub const GATEWAY_V4: &str = "198.18.0.254";

    /// Server `i`'s address (0-based).
    pub fn server_v4(i: usize) -> String {
        format!("198.18.0.{}", i + 2)
    }

    /// Attacker address `n` (1-9), on the attacker's interface.
    pub fn attacker_v4(n: u8) -> String {
        format!("198.18.100.{n}")
    }

    pub fn new() -> anyhow::Result<Self> {
        let switch = Netns::new("sw")?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let servers = (0..Self::SERVERS)
            .map(|i| Netns::new(&format!("srv{i}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let central = Netns::new("cs")?;
        let monitor = Netns::new("mon")?;
        let router = Netns::new("rtr")?;
        let attacker = Netns::new("atk")?;
        let mut on_bridge: Vec<(&Netns, &str, String, Vec<String>)> = servers
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                (
                    ns,
                    Self::SERVER_IF,
                    format!("p-s{i}"),
                    vec![Self::server_v4(i)],
                )
            })
            .collect();
        on_bridge.push((
            &central,
            "veth-cs",
            "p-cs".into(),
            vec![Self::CENTRAL_V4.into()],
        ));
        on_bridge.push((
            &monitor,
            "veth-mon",
            "p-mon".into(),
            vec![Self::MONITOR_V4.into(), Self::BALANCER_V4.into()],
        ));
        on_bridge.push((
            &router,
            "r-in",
            "p-rtr".into(),
            vec![Self::GATEWAY_V4.into()],
        ));
        for (ns, ifname, port, addrs) in &on_bridge {
            veth(ns, ifname, &switch, port)?;
            switch.ip(&["link", "set", port, "master", "br0"])?;
            switch.ip(&["link", "set", port, "up"])?;
            for a in addrs {
                ns.ip(&["addr", "add", &format!("{a}/24"), "dev", ifname])?;
            }
            ns.ip(&["link", "set", ifname, "up"])?;
        }
        for ns in servers.iter().chain([&central, &monitor]) {
            ns.ip(&["route", "add", "default", "via", Self::GATEWAY_V4])?;
        }
        veth(&attacker, Self::ATTACKER_IF, &router, Self::ROUTER_OUT)?;
        router.ip(&["addr", "add", "198.18.100.254/24", "dev", Self::ROUTER_OUT])?;
        router.ip(&["link", "set", Self::ROUTER_OUT, "up"])?;
        for n in 1..=9 {
            attacker.ip(&[
                "addr",
                "add",
                &format!("{}/24", Self::attacker_v4(n)),
                "dev",
                Self::ATTACKER_IF,
            ])?;
        }
        attacker.ip(&["link", "set", Self::ATTACKER_IF, "up"])?;
        attacker.ip(&["route", "add", "default", "via", "198.18.100.254"])?;
        router.enter(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))??;
        Ok(Self {
            attacker,
            router,
            servers,
            central,
            monitor,
            _switch: switch,
        })
    }

    /// The MAC of the router's interface towards the attacker: zmap's
    /// `-G` and masscan's `--router-mac`.
    pub fn gateway_mac(&self) -> anyhow::Result<String> {
        let out = self.router.ip(&["-j", "link", "show", Self::ROUTER_OUT])?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(json[0]["address"]
            .as_str()
            .context("no MAC on the router")?
            .to_owned())
    }
}

/// A veth pair: `ifname` in `ns`, `peer` in `other`.
fn veth(ns: &Netns, ifname: &str, other: &Netns, peer: &str) -> anyhow::Result<()> {
    run(Command::new("ip").args([
        "link",
        "add",
        "name",
        ifname,
        "netns",
        ns.name(),
        "type",
        "veth",
        "peer",
        "name",
        peer,
        "netns",
        other.name(),
    ]))
    .map(drop)
}
