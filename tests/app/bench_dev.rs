//! `popgate bench --dev`, the real binary against the local authority: a PoP and a Bearer route side
//! by side at a fixed rate; every request the bench counts is one the authority's resource server
//! counted, every token popgate requested is one the authority issued, and the report is one
//! self-contained file whose plot has both routes and whose embedded JSON parses.

use crate::kit::bench::*;

/// Requests a second per route: small enough for a shared CI machine, enough for a percentile.
const RATE: u64 = 40;
/// Measured seconds (the issue's 10 s, shortened for the test suite).
const SECONDS: u64 = 2;

#[test]
fn pop_and_bearer_side_by_side_match_the_authority_counts() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.html");
    let rate = RATE.to_string();
    let duration = format!("{SECONDS}s");
    let out = bench(&[
        "--dev",
        "--route",
        "graph",
        "--route",
        "graph-bearer",
        "--rate",
        &rate,
        "--duration",
        &duration,
        "--warmup",
        "1s",
        "--json",
        "--report",
        report.to_str().unwrap(),
    ]);
    let json = json_of(&out);
    assert_eq!(json["mode"], "rate");
    assert_eq!(json["interrupted"], false);

    let mut sent = 0;
    let mut opened = 0;
    for name in ["graph", "graph-bearer"] {
        let r = route(&json, name);
        // The schedule has exactly rate x duration measured requests, all answered 200.
        assert_eq!(n(&r["requests"]), RATE * SECONDS, "{r}");
        assert_eq!(n(&r["ok"]), n(&r["requests"]), "{r}");
        assert_eq!(n(&r["errors"]), 0, "{r}");
        assert_eq!(n(&r["unmeasured"]), RATE, "one second of warm-up: {r}");
        let l = &r["latency_ms"];
        assert!(f(&l["p50"]) > 0.0, "{l}");
        assert!(
            f(&l["p50"]) <= f(&l["p99"]) && f(&l["p99"]) <= f(&l["max"]),
            "{l}"
        );
        assert!(f(&r["cold_start_ms"]) > 0.0, "{r}");
        assert!(
            n(&r["popgate"]["upstream_requests"]) >= n(&r["requests"]),
            "{r}"
        );
        assert!(!r["series"].as_array().unwrap().is_empty(), "{r}");
        // One token request each (the certificate app: no IMDS steps), timed.
        let steps = r["token_steps"].as_object().expect("token steps");
        assert_eq!(steps.keys().collect::<Vec<_>>(), ["token"], "{r}");
        assert_eq!(n(&steps["token"]["count"]), 1, "{r}");
        assert!(f(&steps["token"]["mean_ms"]) > 0.0, "{r}");
        let conns = &r["upstream_connections"];
        assert!(n(&conns["opened"]) >= 1, "{r}");
        assert_eq!(
            n(&conns["upstream_requests"]),
            n(&r["requests"]) + n(&r["unmeasured"]),
            "{r}"
        );
        opened += n(&conns["opened"]);
        sent += n(&r["requests"]) + n(&r["unmeasured"]);
    }
    assert_eq!(
        opened,
        n(&json["popgate"]["upstream_connections_opened"]),
        "the routes' connections are all of popgate's: {json}"
    );
    assert_eq!(json["window"], "since popgate started");
    let authority = &json["authority"];
    assert_eq!(
        n(&authority["resource_requests"]),
        sent,
        "every request the bench sent reached the resource server once: {json}"
    );
    // One PoP token (mtlsauth) and one Bearer token (login) for the certificate app.
    let popgate = &json["popgate"];
    assert_eq!(
        n(&popgate["token_endpoint_requests"]),
        n(&authority["token_requests"]),
        "{json}"
    );
    assert_eq!(n(&authority["token_requests"]), 2, "{json}");
    assert_eq!(n(&popgate["tokens_published"]), 2, "{json}");
    assert!(n(&popgate["upstream_connections_opened"]) >= 1, "{json}");

    let html = std::fs::read_to_string(&report).expect("the report was written");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(html.matches("<svg").count(), 1);
    assert_eq!(html.matches("</svg>").count(), 1);
    for name in ["graph", "graph-bearer"] {
        let line = format!(r#"class="route" data-route="{name}""#);
        assert_eq!(
            html.matches(&line).count(),
            2,
            "p99 and p50 lines of {name}"
        );
    }
    assert!(
        html.contains("measured from here"),
        "the warm-up's end is marked"
    );
    let open = r#"<script type="application/json" id="popgate-bench">"#;
    let start = html.find(open).expect("embedded data") + open.len();
    let len = html[start..].find("</script>").expect("data ends");
    let embedded: serde_json::Value = serde_json::from_str(&html[start..start + len]).unwrap();
    assert_eq!(embedded["routes"], json["routes"]);

    // Tokens never appear in any output (JWTs start with base64url `{"`).
    let stderr = String::from_utf8_lossy(&out.stderr);
    for text in [
        &String::from_utf8_lossy(&out.stdout),
        &stderr,
        &html.as_str().into(),
    ] {
        assert!(!text.contains("eyJ"), "a JWT in the output:\n{text}");
    }
}

#[test]
fn the_svg_report_is_the_plot_alone() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("plot.svg");
    let out = bench(&[
        "--dev",
        "--route",
        "graph",
        "--requests",
        "20",
        "--concurrency",
        "2",
        "--report",
        report.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("closed loop"), "{stdout}");
    assert!(stdout.contains("p99.9"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("requests") && l.trim_end().ends_with("20")),
        "{stdout}"
    );
    let svg = std::fs::read_to_string(&report).unwrap();
    assert!(svg.starts_with("<?xml"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
    assert_eq!(svg.matches(r#"data-route="graph""#).count(), 2);
}

#[test]
fn an_imds_v2_pop_acquisition_is_split_by_step() {
    let out = bench(&[
        "--dev",
        "--route",
        "arm-sami-pop",
        "--requests",
        "5",
        "--concurrency",
        "1",
        "--json",
    ]);
    let json = json_of(&out);
    let r = route(&json, "arm-sami-pop");
    assert_eq!(n(&r["ok"]), 5, "{r}");
    let steps = r["token_steps"].as_object().expect("token steps");
    let mut names: Vec<&String> = steps.keys().collect();
    names.sort();
    assert_eq!(names, ["credential", "csr", "metadata", "token"], "{r}");
    for (name, s) in steps {
        assert_eq!(n(&s["count"]), 1, "{name}: {r}");
        assert_eq!(n(&s["failed"]), 0, "{name}: {r}");
        assert!(f(&s["mean_ms"]) > 0.0, "{name}: {r}");
    }
    // The authority saw the same: getplatformmetadata and issuecredential at IMDS, one token.
    let authority = &json["authority"];
    assert_eq!(n(&authority["imds_requests"]), 2, "{json}");
    assert_eq!(n(&authority["token_requests"]), 1, "{json}");
    let stdout = String::from_utf8_lossy(
        &bench(&["--dev", "--route", "arm-sami-pop", "--requests", "2"]).stdout,
    )
    .to_string();
    for row in [
        "token step: metadata",
        "token step: csr",
        "token step: credential",
        "token step: token",
        "upstream connections",
    ] {
        assert!(stdout.contains(row), "{row}: {stdout}");
    }
}
