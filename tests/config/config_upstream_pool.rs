//! `upstream_pool:` (global, and per route key by key): the defaults, overrides reaching each
//! route, and every bad value an error at its `FILE:LINE:COL`.

use std::time::Duration;

use crate::kit::config::Fixture;
use popgate::config::UpstreamPool;

fn config(global: &str, route_a: &str) -> String {
    format!(
        "version: 1
listeners: [{{address: '127.0.0.1:3128'}}]
{global}identities:
  sami: {{kind: managed_identity}}
routes:
  - name: a
    match: {{host: a.example}}
    resource: r
    flow: vanilla
    identity: sami
{route_a}  - {{name: b, match: {{host: b.example}}, resource: r, flow: vanilla, identity: sami}}
"
    )
}

#[test]
fn the_defaults_serve_a_burst_and_apply_to_every_route() {
    let cfg = Fixture::new().load(&config("", "")).unwrap();
    let defaults = UpstreamPool {
        max_connections_per_host: 128,
        max_waiting: 1024,
        wait_timeout: Duration::from_secs(10),
    };
    assert_eq!(UpstreamPool::default(), defaults);
    assert_eq!(cfg.upstream_pool, defaults);
    assert!(cfg.routes.iter().all(|r| r.upstream_pool == defaults));
}

#[test]
fn a_route_overrides_the_global_pool_key_by_key() {
    let cfg = Fixture::new()
        .load(&config(
            "upstream_pool:\n  max_connections_per_host: 16\n  max_waiting: 100\n  wait_timeout: 2s\n",
            "    upstream_pool: {max_waiting: 0, wait_timeout: 500ms}\n",
        ))
        .unwrap();
    assert_eq!(
        cfg.routes[0].upstream_pool,
        UpstreamPool {
            max_connections_per_host: 16,
            max_waiting: 0,
            wait_timeout: Duration::from_millis(500),
        }
    );
    assert_eq!(
        cfg.routes[1].upstream_pool,
        UpstreamPool {
            max_connections_per_host: 16,
            max_waiting: 100,
            wait_timeout: Duration::from_secs(2),
        }
    );
}

#[test]
fn bad_pool_values_are_errors_at_their_position() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&config(
            "upstream_pool:\n  max_connections_per_host: 0\n  max_waiting: 2000000\n  wait_timeout: soon\n",
            "    upstream_pool: {max_connections_per_host: 10001, wait_timeout: 0s}\n",
        )),
        vec![
            f.at(
                4,
                29,
                "upstream_pool.max_connections_per_host must be between 1 and 10000; got 0"
            ),
            f.at(
                5,
                16,
                "upstream_pool.max_waiting must be between 0 and 1000000; got 2000000"
            ),
            f.at(
                6,
                17,
                "upstream_pool.wait_timeout: `soon` is not a duration: write a whole number followed by ms, s, m or h (e.g. 500ms, 5s, 2m)"
            ),
            f.at(
                15,
                47,
                "upstream_pool.max_connections_per_host must be between 1 and 10000; got 10001"
            ),
            f.at(
                15,
                68,
                "upstream_pool.wait_timeout: `0s`: a timeout must be greater than zero"
            ),
        ]
    );
}

#[test]
fn unknown_pool_keys_and_non_numbers_are_refused_at_their_line() {
    let f = Fixture::new();
    let errors = f.errors(&config("upstream_pool: {max_conections: 5}\n", ""));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("max_conections"), "{errors:?}");
    assert!(errors[0].contains(":3:"), "{errors:?}");
    let errors = f.errors(&config("", "    upstream_pool: {max_waiting: -1}\n"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains(":11:"), "{errors:?}");
}
