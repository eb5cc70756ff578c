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
    ("errors", |r| causes(r)),
    ("not measured", |r| {
        format!("{} warm-up, {} unsent", r.unmeasured, r.unsent)
    }),
];

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
    let label_width = ROWS.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let cells: Vec<Vec<String>> = s
        .routes
        .iter()
        .map(|r| ROWS.iter().map(|(_, f)| f(r)).collect())
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
    for (i, (label, _)) in ROWS.iter().enumerate() {
        let _ = write!(out, "{label:label_width$}");
        for (c, w) in cells.iter().zip(&widths) {
            let _ = write!(out, "  {:>w$}", c[i]);
        }
        out.push('\n');
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
