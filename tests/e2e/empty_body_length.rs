//! What frames an empty request body upstream, the same over both upstream protocols: through
//! the real proxy to the local authority's resource (HTTP/2, and HTTP/1.1 only, where popgate's
//! own codec writes the head), whose echo lists the fields it received.
//!
//! - Methods that define no meaning for content (RFC 9110 §8.6: `GET`, `HEAD`, `DELETE`,
//!   `OPTIONS`, `TRACE`) go without `content-length`; every other method, an extension method
//!   included, gets `content-length: 0`, so an upstream never waits for a body that is not coming.
//! - A caller's own `content-length: 0` is kept, whatever the method.
//!
//! Before one rule served both protocols, an empty `OPTIONS` or `TRACE` carried
//! `content-length: 0` over HTTP/2 and none over HTTP/1.1, and a `GET` with the caller's
//! `content-length: 0` kept it over HTTP/2 and lost it over HTTP/1.1.
//!
//! Reproduce: `cargo test --test e2e empty_body_length:: -- --nocapture`

use crate::kit::raw::exchange;
use crate::kit::scenario::*;
use crate::upstream_pool::http1_only_authority;

/// Methods whose empty request goes without a length field.
const NO_LENGTH: [&str; 5] = ["GET", "HEAD", "DELETE", "OPTIONS", "TRACE"];
/// Methods whose empty request is declared `content-length: 0`.
const LENGTH_ZERO: [&str; 4] = ["POST", "PUT", "PATCH", "REPORT"];

/// The `content-length` the resource received for an empty `method` request carrying `extra`
/// header lines, and the protocol it came over (both from the echo the resource puts in its
/// `x-echo` field, which a `HEAD` answer carries too).
async fn seen_length(s: &Scenario, method: &str, extra: &str) -> (Option<String>, String) {
    let head = format!(
        "{method} http://{GRAPH}/v1.0/me?size=0 HTTP/1.1\r\nHost: {GRAPH}\r\n{extra}Connection: close\r\n\r\n"
    );
    let answer = exchange(s.proxy(), head.as_bytes()).await;
    assert_eq!(answer.status(), 200, "{method}: {}", answer.text);
    let echo = answer
        .text
        .lines()
        .find_map(|line| line.strip_prefix("x-echo: "))
        .unwrap_or_else(|| panic!("{method}: no echo in {}", answer.text));
    let echo: serde_json::Value = serde_json::from_str(echo).expect("the echo is JSON");
    assert_eq!(echo["method"], method, "{echo}");
    let length = echo["headers"]["content-length"]
        .as_str()
        .map(str::to_owned);
    let version = echo["http_version"].as_str().unwrap_or_default().to_owned();
    (length, version)
}

/// Checks every method's framing on `s`, whose resource speaks `version`.
async fn check(s: &Scenario, version: &str) {
    for method in NO_LENGTH {
        let (length, seen) = seen_length(s, method, "").await;
        assert_eq!(seen, version);
        assert_eq!(
            length, None,
            "{version}: an empty {method} got a length field"
        );
    }
    for method in LENGTH_ZERO {
        let (length, seen) = seen_length(s, method, "").await;
        assert_eq!(seen, version);
        assert_eq!(
            length.as_deref(),
            Some("0"),
            "{version}: an empty {method} went without content-length: 0"
        );
    }
    for method in ["GET", "DELETE"] {
        let (length, _) = seen_length(s, method, "Content-Length: 0\r\n").await;
        assert_eq!(
            length.as_deref(),
            Some("0"),
            "{version}: the caller's content-length: 0 on {method} was dropped"
        );
    }
}

#[tokio::test]
async fn an_empty_body_is_framed_by_one_rule_over_http2() {
    let s = Scenario::start(authority().await, RouteKind::CertAppPop, "").await;
    s.wait_serving().await;
    check(&s, "HTTP/2.0").await;
    s.shutdown().await;
}

#[tokio::test]
async fn an_empty_body_is_framed_by_one_rule_over_http1() {
    let s = Scenario::start(http1_only_authority().await, RouteKind::CertAppPop, "").await;
    s.wait_serving().await;
    check(&s, "HTTP/1.1").await;
    s.shutdown().await;
}
