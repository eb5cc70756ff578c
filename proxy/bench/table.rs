//! The table printed at the end of a run: one column per route, so routes compare side by side.

use std::fmt::Write as _;

use super::summary::{RouteSummary, Summary};

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.3} ms"))
}

fn causes(r: &RouteSummary) -> String {
    let e = &r.error_causes;
    let mut parts: Vec<String> = Vec::new();
    parts.extend(e.popgate.iter().map(|(k, n)| format!("popgate {k}: {n}")));
    parts.extend(e.upstream.iter().map(|(k, n)| format!("upstream {k}: {n}")));
    parts.extend(e.transport.iter().map(|(k, n)| format!("{k}: {n}")));
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

type Row = (&'static str, fn(&RouteSummary) -> String);

const ROWS: &[Row] = &[
    ("requests", |r| r.requests.to_string()),
    ("ok", |r| r.ok.to_string()),
    ("throughput", |r| format!("{:.1}/s", r.throughput_rps)),
    ("p50", |r| format!("{:.3} ms", r.latency_ms.p50)),
    ("p90", |r| format!("{:.3} ms", r.latency_ms.p90)),
    ("p99", |r| format!("{:.3} ms", r.latency_ms.p99)),
    ("p99.9", |r| format!("{:.3} ms", r.latency_ms.p999)),
    ("max", |r| format!("{:.3} ms", r.latency_ms.max)),
    ("in popgate (mean)", |r| {
        opt_ms(r.popgate.as_ref().and_then(|p| p.mean_proxy_ms))
    }),
    ("upstream (mean)", |r| {
        opt_ms(r.popgate.as_ref().and_then(|p| p.mean_upstream_ms))
    }),
    ("cold start", |r| opt_ms(r.cold_start_ms)),
    ("upstream connections", |r| {
        r.upstream_connections.as_ref().map_or_else(
            || "-".into(),
            |c| {
                let failed = if c.failed > 0 {
                    format!(", {} failed", c.failed)
                } else {
                    String::new()
                };
                let reuse = c
                    .requests_per_connection
                    .map_or_else(|| "-".into(), |v| format!("{v:.1}"));
                format!("{} opened{failed}, {reuse} req/conn", c.opened)
            },
        )
    }),
    ("errors", |r| causes(r)),
    ("not measured", |r| {
        format!("{} warm-up, {} unsent", r.unmeasured, r.unsent)
    }),
];

/// Step names the routes have, leg 1's first, each in the order an acquisition runs them.
fn step_names(s: &Summary) -> Vec<String> {
    let mut out = Vec::new();
    for prefix in ["leg1 ", ""] {
        for step in crate::metrics::token_steps::STEPS {
            let name = format!("{prefix}{step}");
            let present = s.routes.iter().any(|r| {
                r.token_steps
                    .as_ref()
                    .is_some_and(|t| t.contains_key(&name))
            });
            if present {
                out.push(name);
            }
        }
    }
    out
}

fn step_cell(r: &RouteSummary, name: &str) -> String {
    let Some(f) = r.token_steps.as_ref().and_then(|t| t.get(name)) else {
        return "-".into();
    };
    let failed = if f.failed > 0 {
        format!(", {} failed", f.failed)
    } else {
        String::new()
    };
    match f.mean_ms {
        Some(mean) => format!("{} x {mean:.3} ms{failed}", f.count),
        None => format!("0{failed}"),
    }
}

/// Renders `s` as aligned text.
pub(crate) fn render(s: &Summary) -> String {
    let mut out = String::new();
    let load = match s.rate_per_route {
        Some(r) => format!("fixed rate {r}/s per route"),
        None => "closed loop".into(),
    };
    let _ = writeln!(
        out,
        "popgate bench: {load}, {} connections per route, against {}, measured {:.1} s{}",
        s.concurrency,
        s.against,
        s.elapsed_s,
        if s.interrupted {
            " (interrupted: figures so far)"
        } else {
            ""
        }
    );
    // Fixed rows, then one per token acquisition step any route has (in the order they run).
    let mut labels: Vec<String> = ROWS.iter().map(|(l, _)| l.to_string()).collect();
    let steps = step_names(s);
    labels.extend(steps.iter().map(|n| format!("token step: {n}")));
    let label_width = labels.iter().map(String::len).max().unwrap_or(0);
    let cells: Vec<Vec<String>> = s
        .routes
        .iter()
        .map(|r| {
            let mut c: Vec<String> = ROWS.iter().map(|(_, f)| f(r)).collect();
            c.extend(steps.iter().map(|n| step_cell(r, n)));
            c
        })
        .collect();
    let widths: Vec<usize> = s
        .routes
        .iter()
        .zip(&cells)
        .map(|(r, c)| {
            c.iter()
                .map(String::len)
                .chain([r.route.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let _ = write!(out, "{:label_width$}", "");
    for (r, w) in s.routes.iter().zip(&widths) {
        let _ = write!(out, "  {:>w$}", r.route);
    }
    out.push('\n');
    for (i, label) in labels.iter().enumerate() {
        let _ = write!(out, "{label:label_width$}");
        for (c, w) in cells.iter().zip(&widths) {
            let _ = write!(out, "  {:>w$}", c[i]);
        }
        out.push('\n');
    }
    if let Some(why) = &s.unavailable {
        let _ = writeln!(out, "unavailable: {why}");
    }
    if let Some(window) = s.window {
        let _ = writeln!(
            out,
            "popgate-side figures: time shares over the measured phase; token steps, connections \
             and the lines below {window}"
        );
    }
    if let Some(p) = &s.popgate {
        let calls: Vec<String> = p
            .credential_calls
            .iter()
            .map(|(peer, c)| format!("{peer} {} (mean {:.3} ms)", c.count, c.mean_ms))
            .collect();
        let _ = writeln!(
            out,
            "tokens: {} published, {} token endpoint requests; credential calls: {}",
            p.tokens_published,
            p.token_endpoint_requests,
            if calls.is_empty() {
                "none".into()
            } else {
                calls.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "upstream: {} connections opened ({} TLS handshakes ok, {} failed), {} requests, {} per connection",
            p.upstream_connections_opened,
            p.tls_handshakes.get("ok").copied().unwrap_or(0),
            p.tls_handshakes.get("failed").copied().unwrap_or(0),
            p.upstream_requests,
            p.requests_per_connection
                .map_or_else(|| "-".into(), |v| format!("{v:.1}"))
        );
    }
    if let Some(a) = &s.authority {
        let _ = writeln!(
            out,
            "local authority: {} resource requests, {} token requests ({} ok), {} IMDS requests",
            a.resource_requests, a.token_requests, a.token_ok, a.imds_requests
        );
    }
    out
}
