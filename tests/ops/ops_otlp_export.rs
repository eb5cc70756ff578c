//! Where the real binary's spans go: an `https://` collector with a test CA, trusted through
//! `network.extra_ca_files` or `OTEL_EXPORTER_OTLP_CERTIFICATE`; a binary configured by the
//! `OTEL_EXPORTER_OTLP_*` variables alone, the traces one winning and used as is; and what an
//! unusable collector or variable does: one line naming it, and requests still served.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use crate::kit::admin::*;
use crate::kit::dataplane::{TestPki, dead_addr};
use crate::ops_telemetry::{Popgate, Receiver, get_with, one_route_config};

/// Spans leave 200 ms after they end rather than 5 s.
const FAST_BATCH: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "200");

/// A TLS acceptor for a collector on 127.0.0.1 with a certificate from `pki`.
fn collector_tls(pki: &TestPki) -> TlsAcceptor {
    let (chain, key) = pki.server_cert(&["127.0.0.1", "localhost"]);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// popgate on `config` with `vars`: one request (200), then SIGTERM; everything it wrote.
async fn one_request(config: &Path, vars: &[(&str, &str)]) -> Vec<String> {
    let mut vars = vars.to_vec();
    vars.push(FAST_BATCH);
    let mut popgate = Popgate::start(config, "info", &vars);
    let (proxy, _admin) = tokio::task::block_in_place(|| popgate.wait_serving());
    get_with(proxy, &[]).await;
    tokio::task::block_in_place(|| popgate.terminate())
}

/// `receiver` got the spans of one request, posted to `path`.
fn assert_received(receiver: &Receiver, path: &str, output: &[String]) {
    let names: Vec<String> = receiver.spans().into_iter().map(|(_, s)| s.name).collect();
    assert!(
        names.iter().any(|n| n == "request") && names.iter().any(|n| n == "token_acquisition"),
        "spans {names:?}; popgate's output:\n{}",
        output.join("\n")
    );
    let paths = receiver.paths();
    assert!(paths.iter().all(|p| p == path), "{paths:?}");
    assert!(
        output
            .iter()
            .any(|l| l.contains("exporting OpenTelemetry traces")),
        "the export is announced"
    );
    assert!(
        !output.iter().any(|l| l.contains("OTLP span export failed")),
        "{}",
        output.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_collector_with_a_test_ca_gets_the_spans_through_either_ca_setting() {
    let pki = TestPki::new("otlp collector CA");
    let receiver = Receiver::start_with(Some(collector_tls(&pki))).await;
    let env = start_env().await;

    // The config's `network.extra_ca_files` (the test config lists ca.pem; the collector's CA is
    // added to it) and `telemetry.otlp_endpoint`.
    let listed = env.path("ca.pem");
    let mut pem = std::fs::read_to_string(&listed).unwrap();
    pem.push_str(&pki.ca_pem());
    std::fs::write(&listed, pem).unwrap();
    let config = one_route_config(
        &env,
        &format!(
            "telemetry:\n  otlp_endpoint: https://127.0.0.1:{}\n",
            receiver.addr.port()
        ),
    );
    let output = one_request(&config, &[]).await;
    assert_received(&receiver, "/v1/traces", &output);

    // The variables alone: a base endpoint (trailing slash) and the CA in its own file.
    let receiver = Receiver::start_with(Some(collector_tls(&pki))).await;
    let ca_file = env.path("otlp-ca.pem");
    std::fs::write(&ca_file, pki.ca_pem()).unwrap();
    let config = one_route_config(&env, "");
    let endpoint = format!("https://127.0.0.1:{}/", receiver.addr.port());
    let output = one_request(
        &config,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_file.to_str().unwrap()),
        ],
    )
    .await;
    assert_received(&receiver, "/v1/traces", &output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_traces_endpoint_variable_wins_over_the_base_one_and_is_used_as_is() {
    let base = Receiver::start().await;
    let traces = Receiver::start().await;
    let env = start_env().await;
    let config = one_route_config(&env, "");
    let output = one_request(
        &config,
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                &format!("http://{}", base.addr),
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                &format!("http://{}/custom/traces", traces.addr),
            ),
        ],
    )
    .await;
    assert_received(&traces, "/custom/traces", &output);
    assert!(base.paths().is_empty(), "{:?}", base.paths());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_collector_or_variable_is_named_and_requests_are_still_served() {
    let env = start_env().await;
    let config = one_route_config(&env, "");

    // A collector whose certificate no configured CA signed, and one that is not there: each
    // export fails with a warning naming the step and the collector; the next request is served.
    let untrusted = Receiver::start_with(Some(collector_tls(&TestPki::new("unknown CA")))).await;
    let dead = dead_addr();
    for (endpoint, expected) in [
        (
            format!("https://127.0.0.1:{}", untrusted.addr.port()),
            format!(
                "TLS handshake with the OTLP collector 127.0.0.1:{} failed",
                untrusted.addr.port()
            ),
        ),
        (
            format!("http://{dead}"),
            format!("cannot connect to the OTLP collector {dead}"),
        ),
    ] {
        let mut popgate = Popgate::start(
            &config,
            "info",
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), FAST_BATCH],
        );
        let (proxy, _admin) = tokio::task::block_in_place(|| popgate.wait_serving());
        get_with(proxy, &[]).await;
        let warning = tokio::task::block_in_place(|| {
            popgate.wait_for("the export failure", |e| {
                e["message"] == "OTLP span export failed"
            })
        });
        let error = warning["error"].as_str().unwrap_or_default();
        assert!(error.contains(&expected), "{warning}");
        assert_eq!(warning["level"], "WARN", "{warning}");
        get_with(proxy, &[]).await;
        tokio::task::block_in_place(|| popgate.terminate());
    }
    assert!(untrusted.paths().is_empty());

    // A variable that is no URL, and a CA file that is not there: an error line naming the
    // variable, no export, and popgate serves.
    for (vars, named) in [
        (
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
            "OTEL_EXPORTER_OTLP_ENDPOINT: `collector:4318` must start with http:// or https://",
        ),
        (
            vec![
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "https://127.0.0.1:4318/v1/traces",
                ),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/otlp-ca.pem"),
            ],
            "OTEL_EXPORTER_OTLP_CERTIFICATE: cannot read",
        ),
    ] {
        let output = one_request(&config, &vars).await;
        let off = output
            .iter()
            .filter_map(|l| crate::kit::process::fields(l))
            .find(|e| e["message"] == "OpenTelemetry trace export is off; serving without it")
            .unwrap_or_else(|| panic!("no error line:\n{}", output.join("\n")));
        assert_eq!(off["level"], "ERROR", "{off}");
        assert!(
            off["error"].as_str().unwrap_or_default().contains(named),
            "{off}"
        );
        assert!(
            !output
                .iter()
                .any(|l| l.contains("exporting OpenTelemetry traces"))
        );
    }
}
