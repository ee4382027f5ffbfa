//! The CLI side of the control socket: `scanner status`, `list`, `block`,
//! `unblock`, `allow`, `disallow`.

use anyhow::Context as _;
use serde_json::Value;

use crate::{
    cli::{BlockArgs, ClientArgs, ListArgs, TargetArgs},
    control::{Request, call},
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
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}
