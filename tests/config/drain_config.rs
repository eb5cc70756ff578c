//! `timeouts.drain`: the shutdown drain deadline from routes.yaml. Global only; a route's own
//! `drain` and a bad duration are errors at their position. `drain.delay`: how long the listeners
//! keep accepting after the signal; zero allowed, a bad value an error at its position.

use std::time::Duration;

use popgate::config::limits::DEFAULT_DRAIN_DELAY;
use popgate::config::{self, ConfigErrors};
use popgate::dataplane::server::DEFAULT_DRAIN_TIMEOUT;

fn load(timeouts: &str, route_timeouts: &str) -> Result<config::Config, ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    let yaml = format!(
        "version: 1\nlisteners:\n  - address: 127.0.0.1:0\n{timeouts}identities:\n  sami: {{ kind: managed_identity }}\nroutes:\n  - name: arm\n    match: {{ host: management.azure.com }}\n    resource: https://management.azure.com\n    flow: vanilla\n    identity: sami\n{route_timeouts}"
    );
    std::fs::write(&path, yaml).unwrap();
    config::load_with_env(&path, &|_| None)
}

#[test]
fn drain_defaults_to_the_data_plane_constant_and_is_configurable() {
    let config = load("", "").unwrap();
    assert_eq!(config.timeouts.drain, DEFAULT_DRAIN_TIMEOUT);
    let config = load("timeouts: { drain: 45s }\n", "").unwrap();
    assert_eq!(config.timeouts.drain, Duration::from_secs(45));
}

#[test]
fn a_route_cannot_set_drain() {
    let errors = load("", "    timeouts: { drain: 5s }\n").unwrap_err();
    let e = &errors.errors()[0];
    assert_eq!(errors.errors().len(), 1, "{errors}");
    assert_eq!((e.line, e.col), (12, 24), "{errors}");
    assert!(
        e.message.contains("`drain` is a global timeout"),
        "{errors}"
    );
}

#[test]
fn a_bad_drain_duration_is_an_error_at_its_value() {
    let errors = load("timeouts: { drain: soon }\n", "").unwrap_err();
    let e = &errors.errors()[0];
    assert_eq!(e.line, 4, "{errors}");
    assert_eq!(e.col, 20, "{errors}");
}

#[test]
fn drain_delay_defaults_to_its_constant_accepts_zero_and_is_configurable() {
    assert_eq!(load("", "").unwrap().drain.delay, DEFAULT_DRAIN_DELAY);
    for zero in ["0", "0s", "0ms", "00s"] {
        let config = load(&format!("drain: {{ delay: {zero} }}\n"), "").unwrap();
        assert_eq!(config.drain.delay, Duration::ZERO, "{zero}");
    }
    let config = load("drain: { delay: 1500ms }\n", "").unwrap();
    assert_eq!(config.drain.delay, Duration::from_millis(1500));
    // An empty `drain:` keeps the default.
    let config = load("drain: {}\n", "").unwrap();
    assert_eq!(config.drain.delay, DEFAULT_DRAIN_DELAY);
}

#[test]
fn a_bad_drain_delay_or_unknown_drain_key_is_an_error_at_its_position() {
    for (bad, col) in [("soon", 17), ("-1s", 17), ("ms", 17), ("48h", 17)] {
        let errors = load(&format!("drain: {{ delay: {bad} }}\n"), "").unwrap_err();
        let e = &errors.errors()[0];
        assert_eq!((e.line, e.col), (4, col), "{bad}: {errors}");
        assert!(e.message.contains("drain.delay"), "{bad}: {errors}");
    }
    let errors = load("drain: { timeout: 5s }\n", "").unwrap_err();
    assert_eq!(errors.errors()[0].line, 4, "{errors}");
    assert!(errors.to_string().contains("timeout"), "{errors}");
}
