//! The report as one self-contained HTML page: inline CSS and SVG, no
//! script, no external file or font, so it opens offline and mails well.

use std::fmt::Write as _;

use crate::history::report::{
    Report,
    svg::{bars, escape, lines},
};

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:1100px}\
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\
th{background:#f2f2f2}td.n{text-align:right}.risk{color:#a40000}.muted{color:#777}\
.totals span{display:inline-block;margin-right:2em;font-size:1.1em}";

/// Whether a source was blocked, and whether it still is.
fn blocked_cell(s: &super::SourceRow) -> String {
    match (&s.blocked_until, s.blocked) {
        (Some(until), _) => format!("until {until}"),
        (None, true) => "earlier".to_owned(),
        (None, false) => "no".to_owned(),
    }
}

fn cell(s: &str) -> String {
    if s.is_empty() {
        "<td class=\"muted\">-</td>".to_owned()
    } else {
        format!("<td>{}</td>", escape(s))
    }
}

fn opt(s: Option<&String>) -> String {
    cell(s.map_or("", String::as_str))
}

fn num(n: u64) -> String {
    format!("<td class=\"n\">{n}</td>")
}

/// The page.
pub(crate) fn render(r: &Report) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>scanner report: {host}</title><style>{STYLE}</style></head><body>\n\
         <h1>scanner report: {host}</h1>\n<p class=\"muted\">From {since} to {generated}.</p>\n\
         <p class=\"totals\"><span>{} scans detected</span><span>{} sources</span><span>{} blocks</span><span>{} probes</span></p>\n",
        r.totals.scans,
        r.totals.sources,
        r.totals.blocks,
        r.totals.probes,
        host = escape(&r.host),
        since = escape(&r.since),
        generated = escape(&r.generated),
    );
    h.push_str("<h2>Probes per port over time</h2>\n");
    if r.ports.is_empty() {
        h.push_str("<p class=\"muted\">No probes recorded in this period.</p>\n");
    } else {
        let _ = writeln!(
            h,
            "<p>The {} most probed ports, probes per hour.</p>\n{}",
            r.ports.len(),
            lines(&r.ports, &r.hours)
        );
    }
    h.push_str("<h2>Scans detected per day</h2>\n");
    if r.scans_per_day.is_empty() {
        h.push_str("<p class=\"muted\">No scan detected in this period.</p>\n");
    } else {
        let _ = writeln!(h, "{}", bars(&r.scans_per_day));
    }
    h.push_str("<h2>Top sources</h2>\n");
    if r.sources.is_empty() {
        h.push_str("<p class=\"muted\">None.</p>\n");
    } else {
        h.push_str("<table><tr><th>source</th><th>kind</th><th>scans</th><th>ports</th><th>probes</th><th>first seen</th><th>last seen</th><th>blocked in the period</th></tr>\n");
        for s in &r.sources {
            let _ = writeln!(
                h,
                "<tr>{}{}{}{}{}{}{}{}</tr>",
                cell(&s.source),
                cell(&s.kind),
                num(s.scans),
                num(s.ports),
                num(s.probes),
                cell(&s.first_seen),
                cell(&s.last_seen),
                cell(&blocked_cell(s))
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str(
        "<p class=\"muted\">Blocked: <em>until</em> a time when a block holds as this report is made; <em>earlier</em> when its blocks have expired or were lifted.</p>\n",
    );
    h.push_str("<h2>Slow scans</h2>\n");
    if r.slow.is_empty() {
        h.push_str("<p class=\"muted\">None decided in this period.</p>\n");
    } else {
        h.push_str("<p>Scans spread over hours or days, decided by the long memory: each source's (or network's) record, the ports first probed each day.</p>\n");
        for s in &r.slow {
            let _ = writeln!(
                h,
                "<h3>{} <span class=\"muted\">decided {}: {} ports from {} address(es)</span></h3>",
                escape(&s.source),
                escape(&s.decided),
                s.ports,
                s.sources
            );
            h.push_str(
                "<table><tr><th>day</th><th>addresses</th><th>ports first probed</th></tr>\n",
            );
            for d in &s.days {
                let _ = writeln!(
                    h,
                    "<tr>{}{}{}</tr>",
                    cell(&d.day),
                    num(u64::from(d.addresses)),
                    cell(&d.ports.join(" "))
                );
            }
            h.push_str("</table>\n");
        }
    }
    h.push_str("<h2>Exposed listening ports</h2>\n");
    if r.exposed.is_empty() {
        h.push_str(
            "<p class=\"muted\">No listening port reachable from the network was recorded.</p>\n",
        );
    } else {
        h.push_str("<table><tr><th>port</th><th>address</th><th>service</th><th>process</th><th>probes</th><th>sources</th><th>risk</th></tr>\n");
        for e in &r.exposed {
            let risk = e.risk.as_ref().map_or_else(
                || "<td class=\"muted\">-</td>".to_owned(),
                |r| format!("<td class=\"risk\">{}</td>", escape(r)),
            );
            let _ = writeln!(
                h,
                "<tr>{}{}{}{}{}{}{risk}</tr>",
                cell(&format!("{}/{}", e.proto, e.port)),
                cell(&e.address),
                opt(e.service.as_ref()),
                opt(e.process.as_ref()),
                num(e.probes),
                num(e.sources)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("<h2>Port changes</h2>\n");
    if r.changes.is_empty() {
        h.push_str("<p class=\"muted\">No port opened or closed in this period.</p>\n");
    } else {
        h.push_str("<table><tr><th>time</th><th>change</th><th>port</th><th>address</th><th>process</th><th>risk</th></tr>\n");
        for c in &r.changes {
            let what = if c.event == "port_opened" {
                "opened"
            } else {
                "closed"
            };
            let _ = writeln!(
                h,
                "<tr>{}{}{}{}{}{}</tr>",
                cell(&c.ts),
                cell(what),
                cell(&format!("{}/{}", c.proto, c.port)),
                cell(&c.address),
                opt(c.process.as_ref()),
                opt(c.risk.as_ref())
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_has_every_section() {
        let (store, dir) = super::super::tests::sample("html");
        let h0 = 1_795_600_800i64;
        let r = super::super::build(&store, h0 * 1000, (h0 + 7200) * 1000).unwrap();
        let page = render(&r);
        for heading in [
            "Probes per port over time",
            "Scans detected per day",
            "Top sources",
            "Exposed listening ports",
            "Port changes",
        ] {
            assert!(page.contains(&format!("<h2>{heading}</h2>")), "{heading}");
        }
        assert!(page.contains("tcp/23") && page.contains("198.18.0.1"));
        assert!(page.contains("<svg") && page.contains("<polyline"));
        for external in ["<script", "src=", "href=", "@import", "url("] {
            assert!(!page.contains(external), "external reference {external}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
