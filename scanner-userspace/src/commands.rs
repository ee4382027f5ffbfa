//! The CLI side of the control socket: `scanner status`, `list`, `block`,
//! `unblock`, `allow`, `disallow`, `ports`; and the generated completions
//! and man pages.

use anyhow::Context as _;
use serde_json::Value;

use crate::{
    audit::{self, PortHit, proto_name},
    cli::{BlockArgs, ClientArgs, CompletionsArgs, ListArgs, ManpageArgs, PortsArgs, TargetArgs},
    control::{Request, call},
    ports, services,
};

fn ask(client: &ClientArgs, request: &Request) -> anyhow::Result<Value> {
    call(&client.socket, request).map_err(anyhow::Error::from)
}

pub fn status(args: &ClientArgs) -> anyhow::Result<()> {
    let s = ask(args, &Request::Status {})?;
    let ifaces: Vec<String> = s["interfaces"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| format!("{} ({})", text(&i["iface"]), text(&i["mode"])))
                .collect()
        })
        .unwrap_or_default();
    let p = &s["packets"];
    println!("interfaces:        {}", ifaces.join(", "));
    println!("uptime:            {}s", s["uptime_s"]);
    println!(
        "packets:           seen {} passed {} dropped {} parse failures {}",
        p["seen"], p["passed"], p["dropped"], p["parse_failures"]
    );
    println!("sources tracked:   {}", s["sources_tracked"]);
    println!("active detections: {}", s["active_detections"]);
    println!(
        "blocks:            {} (cap {})",
        s["blocks"], s["block_cap"]
    );
    println!("blocking:          {}", s["blocking"]);
    Ok(())
}

pub fn list(args: &ListArgs) -> anyhow::Result<()> {
    let list = ask(&args.client, &Request::List {})?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).context("printing JSON")?
        );
        return Ok(());
    }
    println!(
        "{:<28} {:<11} {:<9} {:>6} {:>7} {:<24} {:<24} block expires",
        "address", "state", "kind", "ports", "probes", "first seen", "last seen"
    );
    for e in list.as_array().into_iter().flatten() {
        println!(
            "{:<28} {:<11} {:<9} {:>6} {:>7} {:<24} {:<24} {}",
            text(&e["address"]),
            text(&e["state"]),
            text(&e["kind"]),
            e["ports"],
            e["probes"],
            text(&e["first_seen"]),
            text(&e["last_seen"]),
            text(&e["block_expires"]),
        );
    }
    Ok(())
}

pub fn block(args: &BlockArgs) -> anyhow::Result<()> {
    let request = Request::Block {
        target: args.target.to_string(),
        ttl: args.ttl.map(|t| humantime::format_duration(t).to_string()),
    };
    let r = ask(&args.client, &request)?;
    println!("blocked {} for {}s", text(&r["blocked"]), r["ttl_s"]);
    Ok(())
}

pub fn unblock(args: &TargetArgs) -> anyhow::Result<()> {
    on_target(
        args,
        |target| Request::Unblock { target },
        "unblocked",
        |n| format!("unblocked {n}"),
    )
}

pub fn allow(args: &TargetArgs) -> anyhow::Result<()> {
    on_target(
        args,
        |target| Request::Allow { target },
        "allowed",
        |n| format!("allowlisted {n}"),
    )
}

pub fn disallow(args: &TargetArgs) -> anyhow::Result<()> {
    on_target(
        args,
        |target| Request::Disallow { target },
        "disallowed",
        |n| format!("removed {n} from the allowlist"),
    )
}

/// Sends a request about one address or CIDR; prints `say` of the network
/// the daemon names under `key` in its answer.
fn on_target(
    args: &TargetArgs,
    request: fn(String) -> Request,
    key: &str,
    say: fn(&str) -> String,
) -> anyhow::Result<()> {
    let r = ask(&args.client, &request(args.target.to_string()))?;
    println!("{}", say(&text(&r[key])));
    Ok(())
}

/// A JSON string without quotes; "-" for null.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Probes per port from the daemon, most probed first.
pub fn port_hits(client: &ClientArgs, limit: Option<u32>) -> anyhow::Result<Vec<PortHit>> {
    let v = ask(client, &Request::PortHits { limit })?;
    serde_json::from_value(v).context("reading the daemon's port counts")
}

/// `scanner ports`: the audit of listening sockets, or (`--probed`) the
/// most probed ports.
pub fn ports(args: &PortsArgs) -> anyhow::Result<()> {
    if args.probed {
        let hits = port_hits(&args.client, Some(args.limit))?;
        return print_probed(&hits, args.json);
    }
    let hits = match port_hits(&args.client, None) {
        Ok(h) => Some(h),
        Err(e) => {
            eprintln!("scanner: no probe counts ({e:#})");
            None
        }
    };
    let rows = audit::rows(
        &ports::listeners(),
        &audit::socket_owners(),
        hits.as_deref(),
    );
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).context("printing JSON")?
        );
        return Ok(());
    }
    let counts = hits.is_some();
    println!(
        "{:<5} {:>5}  {:<22} {:<14} {:<20} {}",
        "proto",
        "port",
        "address",
        "service",
        "process",
        if counts {
            "probes 1h/all  sources 1h/all  notes"
        } else {
            "notes"
        }
    );
    for r in &rows {
        let process = match (&r.process, r.pid) {
            (Some(p), Some(pid)) => format!("{p}[{pid}]"),
            _ => "-".into(),
        };
        let mut notes = Vec::new();
        if r.all_addresses {
            notes.push("! all addresses".to_owned());
        } else if !r.exposed {
            notes.push("loopback only".to_owned());
        }
        if let Some(risk) = r.risk.filter(|_| r.exposed) {
            notes.push(risk.to_owned());
        }
        let counts = match (r.probes, r.probes_last_hour, r.sources, r.sources_last_hour) {
            (Some(p), Some(p1), Some(s), Some(s1)) => {
                format!("{:>14}  {:>14}  ", format!("{p1}/{p}"), format!("{s1}/{s}"))
            }
            _ => String::new(),
        };
        println!(
            "{:<5} {:>5}  {:<22} {:<14} {:<20} {counts}{}",
            r.proto,
            r.port,
            r.address,
            r.service.unwrap_or("-"),
            process,
            notes.join("; ")
        );
    }
    Ok(())
}

fn print_probed(hits: &[PortHit], json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(hits).context("printing JSON")?
        );
        return Ok(());
    }
    println!(
        "{:<5} {:>5}  {:<14} {:<6} {:>10} {:>10} {:>10} {:>10}",
        "proto", "port", "service", "state", "probes", "last hour", "sources", "last hour"
    );
    for h in hits {
        let service = services::lookup(h.proto, h.port).map_or("-", |s| s.name);
        println!(
            "{:<5} {:>5}  {:<14} {:<6} {:>10} {:>10} {:>10} {:>10}",
            proto_name(h.proto),
            h.port,
            service,
            if h.open { "open" } else { "closed" },
            h.probes,
            h.probes_last_hour,
            h.sources,
            h.sources_last_hour
        );
    }
    Ok(())
}

/// `scanner completions SHELL`.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = <crate::cli::Cli as clap::CommandFactory>::command();
    clap_complete::generate(args.shell, &mut cmd, "scanner", &mut std::io::stdout());
    Ok(())
}

/// `scanner manpage [--dir DIR]`.
pub fn manpage(args: &ManpageArgs) -> anyhow::Result<()> {
    let cmd = <crate::cli::Cli as clap::CommandFactory>::command();
    match &args.dir {
        None => clap_mangen::Man::new(cmd)
            .render(&mut std::io::stdout())
            .context("writing the man page"),
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))
        }
    }
}
