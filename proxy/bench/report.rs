//! `--report FILE`: one self-contained file, no scripts or fonts fetched. `.svg` is the plot alone;
//! anything else is an HTML page with the plot, the table and the run's JSON (in a
//! `<script type="application/json" id="popgate-bench">` element, for machines).
//!
//! The plot: p99 (solid) and p50 (dashed) latency of each second per route, on a log scale; the
//! start of the measured phase and every token acquisition, refresh and certificate rotation are
//! vertical lines with their name.

use std::fmt::Write as _;
use std::path::Path;

use super::summary::Summary;
use super::table;

/// Plot size in SVG units.
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 420.0;
/// Room for the axes' labels.
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;
/// Spacing of the time axis' labels, seconds: the first giving at most [`MAX_X_TICKS`] labels.
const X_STEPS: [f64; 7] = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0];
const MAX_X_TICKS: f64 = 12.0;
/// One colour per route, cycling (the bench allows 16 routes; 8 colours stay distinguishable).
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The plot as an SVG element.
pub(crate) fn svg(s: &Summary, measure_start_s: f64) -> String {
    let points = s.routes.iter().flat_map(|r| r.series.iter());
    let (mut lo, mut hi, mut t_max) = (f64::MAX, 0.0_f64, 1.0_f64);
    for p in points {
        for v in [p.p50_ms, p.p99_ms] {
            if v > 0.0 {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        t_max = t_max.max(p.t as f64 + 1.0);
    }
    if hi == 0.0 {
        (lo, hi) = (0.1, 1.0);
    }
    let (d_lo, d_hi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let x = |t: f64| LEFT + t / t_max * (WIDTH - LEFT - RIGHT);
    let y = |v: f64| {
        let f = (v.max(10f64.powf(d_lo)).log10() - d_lo) / (d_hi - d_lo);
        HEIGHT - BOTTOM - f * (HEIGHT - TOP - BOTTOM)
    };
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
    );
    for d in (d_lo as i32)..=(d_hi as i32) {
        let v = 10f64.powi(d);
        let _ = write!(
            o,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{v} ms</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0,
            y = y(v)
        );
    }
    let step = X_STEPS
        .iter()
        .copied()
        .find(|s| t_max / s <= MAX_X_TICKS)
        .unwrap_or(600.0);
    let mut tick = 0.0;
    while tick <= t_max {
        let _ = write!(
            o,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{tick}</text>"#,
            x(tick),
            HEIGHT - BOTTOM + 16.0
        );
        tick += step;
    }
    let _ = write!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds since the load started</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 12.0
    );
    let mut vline = |t: f64, colour: &str, label: &str, row: usize| {
        let _ = write!(
            o,
            r#"<line class="mark" x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}" stroke="{colour}" stroke-dasharray="2,3"><title>{label}</title></line><text x="{:.1}" y="{}" fill="{colour}">{label}</text>"#,
            HEIGHT - BOTTOM,
            x(t) + 3.0,
            TOP + 12.0 * (row % 3) as f64 + 10.0,
            x = x(t),
            label = escape(label)
        );
    };
    if measure_start_s > 0.0 {
        vline(measure_start_s, "#555", "measured from here", 0);
    }
    for (i, m) in s.marks.iter().enumerate() {
        vline(
            m.t_s,
            "#b8860b",
            &format!("{}: {}", m.kind, m.detail),
            i + 1,
        );
    }
    for (i, r) in s.routes.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        for (dash, pick) in [("", true), (r#" stroke-dasharray="5,4""#, false)] {
            let pts: Vec<String> = r
                .series
                .iter()
                .map(|p| {
                    let v = if pick { p.p99_ms } else { p.p50_ms };
                    format!("{:.1},{:.1}", x(p.t as f64 + 0.5), y(v))
                })
                .collect();
            let _ = write!(
                o,
                r#"<polyline class="route" data-route="{}" fill="none" stroke="{colour}" stroke-width="1.5"{dash} points="{}"/>"#,
                escape(&r.route),
                pts.join(" ")
            );
        }
        let _ = write!(
            o,
            r#"<text x="{}" y="{}" fill="{colour}" text-anchor="end">{} p99 (solid), p50 (dashed)</text>"#,
            WIDTH - RIGHT - 4.0,
            TOP + 14.0 * i as f64,
            escape(&r.route)
        );
    }
    o.push_str("</svg>");
    o
}

/// The HTML page.
pub(crate) fn html(s: &Summary, measure_start_s: f64) -> Result<String, serde_json::Error> {
    // `</` would end the script element early; JSON allows `<\/` for the same string.
    let data = serde_json::to_string(s)?.replace("</", "<\\/");
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>popgate bench</title></head><body>\n<h1>popgate bench</h1>\n{}\n<pre>{}</pre>\n<script type=\"application/json\" id=\"popgate-bench\">{data}</script>\n</body></html>\n",
        svg(s, measure_start_s),
        escape(&table::render(s))
    ))
}

/// Writes the report to `path` (`.svg`: the plot alone).
pub(crate) fn write(path: &Path, s: &Summary, measure_start_s: f64) -> std::io::Result<()> {
    let svg_only = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    let text = if svg_only {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}\n",
            svg(s, measure_start_s)
        )
    } else {
        html(s, measure_start_s).map_err(std::io::Error::other)?
    };
    std::fs::write(path, text)
}
