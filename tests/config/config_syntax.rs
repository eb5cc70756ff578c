//! Parsing rules: YAML syntax, unknown keys, wrong types, version, required sections, parser
//! limits, file-level errors, and that every error is reported (not just the first).

use crate::kit::config::{Fixture, with_routes};

const ROUTE: &str =
    "  - {name: r, match: {host: a.example}, resource: r, flow: vanilla, identity: sami}\n";

#[test]
fn yaml_syntax_error() {
    let f = Fixture::new();
    let errors = f.errors("version: 1\nlisteners: [{address: 127.0.0.1:3128}\nroutes: []\n");
    // The unclosed `[` on line 2 is noticed where the next key starts.
    assert_eq!(
        errors,
        vec![f.at(3, 7, "illegal placement of ':' indicator")]
    );
}

#[test]
fn unknown_top_level_key() {
    let f = Fixture::new();
    f.assert_error(
        &format!("{}routes:\n{ROUTE}listners: []\n", crate::kit::config::head()),
        12,
        1,
        "unknown field `listners`, expected one of version, listeners, admin, network, timeouts, drain, limits, upstream_pool, identities, routes, telemetry, workers",
    );
}

#[test]
fn unknown_nested_keys() {
    let f = Fixture::new();
    f.assert_error(
        &with_routes(
            "  - {name: r, match: {hostname: a.example}, resource: r, flow: vanilla, identity: sami}\n",
        ),
        11,
        23,
        "unknown field `hostname`, expected one of host, path_prefix",
    );
    f.assert_error(
        "version: 1\nlisteners: [{address: \"127.0.0.1:3128\"}]\nidentities:\n  x: {kind: managed_identity, clientid: a}\nroutes: []\n",
        4,
        31,
        "unknown field `clientid`, expected one of kind, client_id, resource_id, object_id, attestation_command, source, tenant_id, certificate, region, authority_host, token_file, allow_insecure_key_permissions, send_x5c",
    );
}

#[test]
fn wrong_types() {
    let f = Fixture::new();
    let errors = f.errors(&with_routes(
        "  - {name: r, match: {host: a.example}, strip_prefix: maybe, resource: r, flow: vanilla, identity: sami}\n",
    ));
    assert_eq!(errors, vec![f.at(11, 55, "invalid boolean")]);

    let errors = f.errors(&format!(
        "version: 1\nlisteners: {{address: \"127.0.0.1:3128\"}}\nroutes:\n{ROUTE}"
    ));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with(&f.at(2, 12, "")), "{errors:?}");
}

#[test]
fn version_must_be_one() {
    let f = Fixture::new();
    f.assert_error(
        &with_routes(ROUTE).replacen("version: 1", "version: 2", 1),
        1,
        10,
        "unsupported config version 2: this popgate reads version 1",
    );
}

#[test]
fn missing_required_sections() {
    let f = Fixture::new();
    f.assert_error(
        "version: 1\nlisteners: [{address: \"127.0.0.1:3128\"}]\n",
        2,
        1,
        "missing field `routes`",
    );
}

#[test]
fn at_least_one_listener_and_one_route() {
    let f = Fixture::new();
    assert_eq!(
        f.errors("version: 1\nlisteners: []\nroutes: []\n"),
        vec![
            f.at(2, 12, "at least one listener is required"),
            f.at(3, 9, "at least one route is required"),
        ]
    );
}

#[test]
fn every_error_is_reported_in_file_order() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&with_routes(
            "  - {name: a, match: {host: a.example}, resource: r, flow: vanilla, identity: x}
  - {name: b, match: {host: b.example}, upstream: 'http://b', resource: r, flow: vanilla, identity: sami}
  - {name: a, match: {host: c.example}, resource: r, flow: fic, leg1: sami, leg2: sami}
"
        )),
        vec![
            f.at(11, 79, "unknown identity `x` (defined: sami, app, exchange, wi, byo)"),
            f.at(12, 51, "upstream `http://b` must use https: popgate re-originates every request over TLS"),
            f.at(13, 12, "duplicate route name `a` (first defined at line 11)"),
            f.at(13, 83, "managed identities have no client-assertion API: FIC leg 2 must be a confidential client"),
        ]
    );
}

#[test]
fn too_many_aliases_are_refused() {
    let f = Fixture::new();
    let aliases = vec!["*a"; popgate::config::load::MAX_YAML_ALIASES + 1].join(", ");
    let yaml = format!(
        "version: 1\nlisteners: [{{address: \"127.0.0.1:3128\"}}]\nidentities:\n  m: {{kind: managed_identity, attestation_command: [&a x, {aliases}]}}\nroutes: []\n"
    );
    let errors = f.errors(&yaml);
    assert_eq!(
        errors,
        vec![f.at(
            4,
            1083,
            "YAML document exceeds popgate's parser limits: more than 256 aliases"
        )]
    );
}

#[test]
fn alias_expansion_bomb_is_refused() {
    let f = Fixture::new();
    // One anchored list replayed by many aliases: the expansion outgrows the replay limit long
    // before memory or CPU suffer ("billion laughs" in a shape the schema accepts).
    let big = vec!["s"; 2_000].join(", ");
    let mut yaml = format!(
        "version: 1\nlisteners: [{{address: \"127.0.0.1:3128\"}}]\nidentities:\n  m0: {{kind: managed_identity, attestation_command: &big [{big}]}}\n"
    );
    for i in 1..=10 {
        yaml.push_str(&format!(
            "  m{i}: {{kind: managed_identity, attestation_command: *big}}\n"
        ));
    }
    yaml.push_str("routes: []\n");
    // m1..m5 replay 5 × 2,000 events; the next event crosses the limit inside m5's alias.
    f.assert_error(
        &yaml,
        9,
        53,
        "YAML document too large or too complex: total_replayed_events=10001 > 10000",
    );
}

#[test]
fn oversized_file_is_refused() {
    let f = Fixture::new();
    let big = format!(
        "# {}\n",
        "x".repeat(popgate::config::load::MAX_CONFIG_BYTES as usize)
    );
    f.assert_error(
        &big,
        1,
        1,
        &format!(
            "config file is larger than {} bytes",
            popgate::config::load::MAX_CONFIG_BYTES
        ),
    );
}

#[test]
fn unreadable_config_file() {
    let f = Fixture::new();
    let missing = f.path("missing.yaml");
    let err = popgate::config::load(&missing).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:1:1: cannot read config file: No such file or directory (os error 2)",
            missing.display()
        )
    );
}

#[test]
fn multiple_documents_are_refused() {
    let f = Fixture::new();
    let yaml = format!("{}---\nversion: 1\n", with_routes(ROUTE));
    f.assert_error(
        &yaml,
        12,
        1,
        "YAML document exceeds popgate's parser limits: more than one YAML document",
    );
}

#[test]
fn non_utf8_file() {
    let f = Fixture::new();
    let path = f.config_path();
    std::fs::write(&path, b"version: 1\n\xff\xfe\n").unwrap();
    let err = popgate::config::load(&path).unwrap_err();
    assert_eq!(err.errors().len(), 1);
    assert!(
        err.to_string().starts_with(&format!(
            "{}:1:1: config file is not UTF-8: ",
            path.display()
        )),
        "{err}"
    );
}

#[test]
fn duplicate_keys_are_refused() {
    let f = Fixture::new();
    let dup_identity = "version: 1
listeners: [{address: \"127.0.0.1:3128\"}]
identities:
  sami: {kind: managed_identity}
  sami: {kind: managed_identity}
routes: []
";
    let dup_field = with_routes(
        "  - {name: a, name: b, match: {host: a.example}, resource: r, flow: vanilla, identity: sami}\n",
    );
    assert_eq!(
        f.errors(dup_identity),
        vec![f.at(5, 3, "duplicate mapping key `sami` is not allowed here")]
    );
    assert_eq!(
        f.errors(&dup_field),
        vec![f.at(11, 15, "duplicate mapping key `name` is not allowed here")]
    );
}
