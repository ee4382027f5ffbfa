//! Packets per second through a veth pair between two namespaces, sent by
//! trafgen (netsniff-ng), received with no XDP program, with an XDP_PASS
//! program, and with scanner attached in native mode: benign UDP from one
//! source, and a SYN flood from random sources of 2001:db8::/32.

use std::{fmt::Write as _, time::Instant};

use anyhow::{Context as _, bail};
use aya::programs::{
    Xdp,
    xdp::{XdpLinkId, XdpMode},
};
use scanner_common::Config;
use scanner_tests::{Lab, Netns};
use scanner_userspace::testing::load;

/// Packets per trafgen run (bounded: trafgen stops after this many, and a
/// timeout stops it regardless).
const PACKETS: u64 = 2_000_000;
const ROUNDS: usize = 5;

pub(crate) struct Row {
    pub traffic: &'static str,
    /// pps with no program, XDP_PASS, scanner.
    pub pps: [f64; 3],
}

pub(crate) fn mac(ns: &Netns, iface: &str) -> anyhow::Result<[u8; 6]> {
    let out = ns.ip(&["-j", "link", "show", iface])?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let text = json[0]["address"].as_str().context("no MAC")?;
    let mut mac = [0u8; 6];
    for (i, part) in text.split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(part, 16)?;
    }
    Ok(mac)
}

fn bytes(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:#04x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// trafgen configurations: UDP from 198.18.0.1 to 198.18.0.2:9, and TCP
/// SYNs to [2001:db8::2]:80 from random 2001:db8::/32 sources (a bad TCP
/// checksum: the server's stack drops them without replying).
pub(crate) fn configs(dst: [u8; 6], src: [u8; 6]) -> (String, String) {
    let eth = |ty: &str| format!("{}, {}, {ty}", bytes(&dst), bytes(&src));
    let udp = format!(
        "{{\n  {},\n  0x45, 0x00, 0x00, 0x2e, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, csumip(14, 33),\n  \
         198, 18, 0, 1, 198, 18, 0, 2,\n  0x30, 0x39, 0x00, 0x09, 0x00, 0x1a, 0x00, 0x00,\n  fill(0x00, 18)\n}}\n",
        eth("0x08, 0x00")
    );
    let syn = format!(
        "{{\n  {},\n  0x60, 0x00, 0x00, 0x00, 0x00, 0x14, 0x06, 0x40,\n  \
         0x20, 0x01, 0x0d, 0xb8, drnd(12),\n  \
         0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,\n  \
         drnd(2), 0x00, 0x50, drnd(4), 0, 0, 0, 0,\n  0x50, 0x02, 0xff, 0xff, 0xde, 0xad, 0x00, 0x00\n}}\n",
        eth("0x86, 0xdd")
    );
    (udp, syn)
}

fn rx_packets(ns: &Netns, iface: &str) -> anyhow::Result<u64> {
    let out = ns.ip(&["-s", "-j", "link", "show", iface])?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    json[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .context("no rx counter")
}

/// Sends `count` packets of `config` from the attacker; returns them per
/// second as the server's interface received them.
pub(crate) fn blast(lab: &Lab, config: &std::path::Path, count: u64) -> anyhow::Result<f64> {
    let before = rx_packets(&lab.server, Lab::SERVER_IF)?;
    let started = Instant::now();
    let out = lab
        .attacker
        .command("timeout")
        .args(["60", "trafgen", "--dev", Lab::ATTACKER_IF, "--conf"])
        .arg(config)
        .args(["--num", &count.to_string(), "--cpus", "1", "--no-sock-mem"])
        .output()
        .context("running trafgen (package netsniff-ng)")?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = rx_packets(&lab.server, Lab::SERVER_IF)?;
    // trafgen can end early when its ring cannot be flushed (the receiver
    // is saturated): what was received still counts, over the time taken.
    if !out.status.success() {
        eprintln!("trafgen: {}", String::from_utf8_lossy(&out.stderr).trim());
        if after == before {
            bail!(
                "trafgen sent nothing: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok((after - before) as f64 / elapsed)
}

/// Attaches program `name` of `ebpf` to the server's veth in native mode.
fn attach(lab: &Lab, ebpf: &mut aya::Ebpf, name: &str) -> anyhow::Result<XdpLinkId> {
    let program: &mut Xdp = ebpf.program_mut(name).context("program")?.try_into()?;
    if program.fd().is_err() {
        program.load()?;
    }
    let id = lab
        .server
        .enter(|| program.attach(Lab::SERVER_IF, XdpMode::Driver))??;
    Ok(id)
}

/// Detaches what [`attach`] attached.
fn detach(lab: &Lab, ebpf: &mut aya::Ebpf, name: &str, id: XdpLinkId) -> anyhow::Result<()> {
    let program: &mut Xdp = ebpf.program_mut(name).context("program")?.try_into()?;
    lab.server.enter(|| program.detach(id))??;
    Ok(())
}

pub(crate) fn measure() -> anyhow::Result<Vec<Row>> {
    let lab = Lab::new()?;
    let (udp, syn) = configs(
        mac(&lab.server, Lab::SERVER_IF)?,
        mac(&lab.attacker, Lab::ATTACKER_IF)?,
    );
    let dir = std::env::temp_dir();
    let udp_file = dir.join(format!("scanner-bench-udp-{}.cfg", std::process::id()));
    let syn_file = dir.join(format!("scanner-bench-syn-{}.cfg", std::process::id()));
    std::fs::write(&udp_file, udp)?;
    std::fs::write(&syn_file, syn)?;
    // Resolve the neighbours first: the benign stream's replies need them.
    let _ = lab
        .attacker
        .command("ping")
        .args(["-c", "1", "-W", "2", Lab::SERVER_V4])
        .output();
    let mut rows = vec![
        Row {
            traffic: "benign UDP, one source",
            pps: [0.0; 3],
        },
        Row {
            traffic: "SYN flood, random sources (2001:db8::/32)",
            pps: [0.0; 3],
        },
    ];
    // Modes interleave within each round, so drift in the machine's load
    // spreads over all three alike. One object per program, loaded once.
    let mut pass = load::load(&Config::default())?;
    let mut ours = load::load(&Config::default())?;
    let mut runs: Vec<[Vec<f64>; 3]> = vec![Default::default(), Default::default()];
    for _ in 0..ROUNDS {
        for mode in 0..3 {
            let (obj, name) = match mode {
                1 => (Some(&mut pass), "xdp_pass_baseline"),
                2 => (Some(&mut ours), load::PROGRAM),
                _ => (None, ""),
            };
            let link = match obj {
                Some(obj) => Some((attach(&lab, obj, name)?, obj)),
                None => None,
            };
            for (run, file) in runs.iter_mut().zip([&udp_file, &syn_file]) {
                run[mode].push(blast(&lab, file, PACKETS)?);
            }
            if let Some((id, obj)) = link {
                detach(&lab, obj, name, id)?;
            }
        }
    }
    for (row, run) in rows.iter_mut().zip(runs) {
        for (mode, pps) in run.into_iter().enumerate() {
            row.pps[mode] = crate::median(pps).unwrap_or(0.0);
            eprintln!(
                "throughput {} mode {mode}: {:.0} pps",
                row.traffic, row.pps[mode]
            );
        }
    }
    let _ = std::fs::remove_file(&udp_file);
    let _ = std::fs::remove_file(&syn_file);
    Ok(rows)
}

pub(crate) fn markdown(md: &mut String, rows: &[Row]) -> anyhow::Result<()> {
    writeln!(md, "## Throughput through a veth pair\n")?;
    writeln!(
        md,
        "trafgen (netsniff-ng) sends {PACKETS} packets per run from one namespace over a veth \
         pair; the figure is packets received by the server's interface per second of the \
         run, median of {ROUNDS} runs. The XDP programs are attached in native mode. On \
         veth the sender and the receiver share the machine's cores, so these are whole-path \
         figures, not a NIC's line rate.\n"
    )?;
    writeln!(
        md,
        "| traffic | no XDP (pps) | XDP_PASS (pps) | scanner (pps) | scanner / XDP_PASS |"
    )?;
    writeln!(md, "| --- | ---: | ---: | ---: | ---: |")?;
    for r in rows {
        writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0}% |",
            r.traffic,
            r.pps[0],
            r.pps[1],
            r.pps[2],
            100.0 * r.pps[2] / r.pps[1].max(1.0)
        )?;
    }
    writeln!(md)?;
    Ok(())
}
