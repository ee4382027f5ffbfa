//! Hand-made SVG charts (a few dozen elements each: smaller and clearer
//! than a plotting crate): probes per port over the hours of the period,
//! and scans per day stacked by kind.

use std::fmt::Write as _;

use crate::history::report::{Day, Series};

const W: f64 = 900.0;
const H: f64 = 280.0;
const LEFT: f64 = 60.0;
const BOTTOM: f64 = 30.0;
const TOP: f64 = 10.0;
const RIGHT: f64 = 150.0;

/// Colours for series and kinds, in order.
const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

pub(super) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The axis top: `max` rounded up so the four gridlines fall on whole
/// numbers.
fn axis_max(max: u64) -> u64 {
    max.max(1).div_ceil(4) * 4
}

fn frame(out: &mut String, title: &str, max: u64) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}">"#,
        escape(title)
    );
    let plot_h = H - TOP - BOTTOM;
    for i in 0..=4 {
        let y = TOP + plot_h * f64::from(i) / 4.0;
        let value = max as f64 * f64::from(4 - i) / 4.0;
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#555">{value:.0}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
}

/// Probes per hour of each series, one line each, with a legend.
pub(super) fn lines(series: &[Series], hours: &[i64]) -> String {
    let max = axis_max(
        series
            .iter()
            .flat_map(|s| s.probes.iter().copied())
            .max()
            .unwrap_or(0),
    );
    let mut out = String::new();
    frame(&mut out, "probes per port per hour", max);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let n = hours.len().max(2) - 1;
    let x = |i: usize| LEFT + plot_w * i as f64 / n as f64;
    let y = |v: u64| TOP + plot_h * (1.0 - v as f64 / max as f64);
    for (k, s) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let points: Vec<String> = s
            .probes
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let ly = TOP + 14.0 * k as f64 + 10.0;
        let _ = write!(
            out,
            r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{colour}"/><text x="{:.1}" y="{:.1}" font-size="12">{} ({})</text>"#,
            W - RIGHT + 10.0,
            ly - 9.0,
            W - RIGHT + 25.0,
            ly,
            escape(&s.label),
            s.total
        );
    }
    // First and last hour under the axis.
    if let (Some(first), Some(last)) = (hours.first(), hours.last()) {
        for (i, h) in [(0, first), (n, last)] {
            let anchor = if i == 0 { "start" } else { "end" };
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="{anchor}" fill="#555">{}</text>"##,
                x(i),
                H - 10.0,
                hour_label(*h)
            );
        }
    }
    out.push_str("</svg>");
    out
}

fn hour_label(hour_s: i64) -> String {
    let s = super::rfc3339_s(hour_s);
    format!("{} {}h", &s[..10], &s[11..13])
}

/// Scans per day, one bar per day stacked by kind, with a legend.
pub(super) fn bars(days: &[Day]) -> String {
    let mut kinds: Vec<&String> = days.iter().flat_map(|d| d.kinds.keys()).collect();
    kinds.sort();
    kinds.dedup();
    let max = axis_max(
        days.iter()
            .map(|d| d.kinds.values().sum::<u64>())
            .max()
            .unwrap_or(0),
    );
    let mut out = String::new();
    frame(&mut out, "scans detected per day, by kind", max);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let slot = plot_w / days.len().max(1) as f64;
    let bar = (slot * 0.7).min(60.0);
    for (i, d) in days.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
        let mut base = TOP + plot_h;
        for (k, kind) in kinds.iter().enumerate() {
            let v = d.kinds.get(*kind).copied().unwrap_or(0);
            if v == 0 {
                continue;
            }
            let h = plot_h * v as f64 / max as f64;
            base -= h;
            let _ = write!(
                out,
                r#"<rect x="{x:.1}" y="{base:.1}" width="{bar:.1}" height="{h:.1}" fill="{}"><title>{} {}: {v}</title></rect>"#,
                PALETTE[k % PALETTE.len()],
                escape(&d.day),
                escape(kind)
            );
        }
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#555">{}</text>"##,
            x + bar / 2.0,
            H - 10.0,
            escape(&d.day)
        );
    }
    for (k, kind) in kinds.iter().enumerate() {
        let ly = TOP + 14.0 * k as f64 + 10.0;
        let _ = write!(
            out,
            r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            W - RIGHT + 10.0,
            ly - 9.0,
            PALETTE[k % PALETTE.len()],
            W - RIGHT + 25.0,
            ly,
            escape(kind)
        );
    }
    out.push_str("</svg>");
    out
}
