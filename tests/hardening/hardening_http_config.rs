//! The `limits:` section and a route's `max_body_bytes`: accepted values reach the listener
//! settings; out-of-range values are errors at their `FILE:LINE:COL`.

use std::time::Duration;

use crate::kit::config::Fixture;
use popgate::dataplane::limits::RequestLimits;
use popgate::dataplane::listener::ConnectionSettings;

fn config(limits: &str, route_extra: &str) -> String {
    format!(
        "version: 1
listeners: [{{address: '127.0.0.1:3128'}}]
{limits}identities:
  sami: {{kind: managed_identity}}
routes:
  - {{name: a, match: {{host: a.example}}, resource: r, flow: vanilla, identity: sami{route_extra}}}
  - {{name: b, match: {{host: b.example}}, resource: r, flow: vanilla, identity: sami}}
"
    )
}

#[test]
fn limits_are_optional_and_default() {
    let cfg = Fixture::new().load(&config("", "")).unwrap();
    assert_eq!(cfg.limits, Default::default());
    assert_eq!(cfg.routes[0].max_body_bytes, None);
    let settings = ConnectionSettings::with_limits(&cfg.limits);
    assert_eq!(settings.limits, RequestLimits::default());
}

#[test]
fn limits_reach_the_listener_settings_and_routes_override_the_body_limit() {
    let cfg = Fixture::new()
        .load(&config(
            "limits:
  max_headers: 50
  max_header_bytes: 16384
  max_uri_bytes: 2048
  max_body_bytes: 1000000
  max_connections: 10
  header_read_timeout: 5s
  h2_max_concurrent_streams: 16
",
            ", max_body_bytes: 10",
        ))
        .unwrap();
    assert_eq!(cfg.routes[0].max_body_bytes, Some(10));
    assert_eq!(cfg.routes[1].max_body_bytes, Some(1_000_000));
    let s = ConnectionSettings::with_limits(&cfg.limits);
    assert_eq!(
        s.limits,
        RequestLimits {
            max_headers: 50,
            max_header_bytes: 16384,
            max_uri_bytes: 2048,
            max_body_bytes: Some(1_000_000),
        }
    );
    assert_eq!(s.max_connections, 10);
    assert_eq!(s.header_read_timeout, Duration::from_secs(5));
    assert_eq!(s.h2.max_concurrent_streams, 16);
}

#[test]
fn out_of_range_limits_are_errors_at_their_position() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&config(
            "limits:
  max_headers: 0
  max_header_bytes: 100
  max_uri_bytes: 70000
  max_body_bytes: 0
  max_connections: 0
  header_read_timeout: soon
  h2_max_concurrent_streams: 100000
",
            ", max_body_bytes: 0",
        )),
        vec![
            f.at(4, 16, "max_headers must be between 1 and 10000; got 0"),
            f.at(5, 21, "max_header_bytes must be between 8192 and 1048576; got 100"),
            f.at(6, 18, "max_uri_bytes must be between 1 and 65534; got 70000"),
            f.at(7, 19, "max_body_bytes must be at least 1; got 0"),
            f.at(8, 20, "max_connections must be between 1 and 1000000; got 0"),
            f.at(9, 24, "header_read_timeout: `soon` is not a duration: write a whole number followed by ms, s, m or h (e.g. 500ms, 5s, 2m)"),
            f.at(10, 30, "h2_max_concurrent_streams must be between 1 and 10000; got 100000"),
            f.at(14, 101, "max_body_bytes must be at least 1; got 0"),
        ]
    );
}

#[test]
fn unknown_limit_keys_and_non_numbers_are_refused() {
    let f = Fixture::new();
    let errors = f.errors(&config("limits: {max_hedaers: 5}\n", ""));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("max_hedaers"), "{errors:?}");
    let errors = f.errors(&config("limits: {max_body_bytes: -1}\n", ""));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains(":3:"), "{errors:?}");
}

#[test]
fn body_deadlines_reach_the_listener_settings_and_bad_ones_are_errors_at_their_value() {
    let f = Fixture::new();
    let cfg = f
        .load(&config(
            "limits:\n  request_body_timeout: 5s\n  response_body_timeout: 750ms\n",
            "",
        ))
        .unwrap();
    let s = ConnectionSettings::with_limits(&cfg.limits);
    assert_eq!(s.request_body_timeout, Duration::from_secs(5));
    assert_eq!(s.response_body_timeout, Duration::from_millis(750));
    let defaults = ConnectionSettings::default();
    assert_eq!(
        defaults.request_body_timeout,
        popgate::config::limits::DEFAULT_REQUEST_BODY_TIMEOUT
    );
    assert_eq!(
        defaults.response_body_timeout,
        popgate::config::limits::DEFAULT_RESPONSE_BODY_TIMEOUT
    );
    assert_eq!(
        f.errors(&config(
            "limits:\n  request_body_timeout: never\n  response_body_timeout: 5x\n",
            "",
        )),
        vec![
            f.at(4, 25, "request_body_timeout: `never` is not a duration: write a whole number followed by ms, s, m or h (e.g. 500ms, 5s, 2m)"),
            f.at(5, 26, "response_body_timeout: `5x` is not a duration: write a whole number followed by ms, s, m or h (e.g. 500ms, 5s, 2m)"),
        ]
    );
}

#[test]
fn workers_is_read_and_out_of_range_counts_are_errors_at_their_position() {
    let f = Fixture::new();
    let cfg = f.load(&config("workers: 4\n", "")).unwrap();
    assert_eq!(cfg.workers, Some(4));
    assert_eq!(f.load(&config("", "")).unwrap().workers, None);
    assert_eq!(
        f.errors(&config("workers: 0\n", "")),
        vec![f.at(3, 10, "workers must be between 1 and 256; got 0")]
    );
    assert_eq!(
        f.errors(&config("workers: 1000\n", "")),
        vec![f.at(3, 10, "workers must be between 1 and 256; got 1000")]
    );
}
