//! `allow:` rules and `unix:` listeners in routes.yaml: what loads, every error with its
//! FILE:LINE:COL, and the startup warning for a plain listener open beyond loopback.

use crate::kit::config::Fixture;
use crate::kit::guard::LogCapture;
use popgate::access::{AllowList, AllowRule};
use popgate::route::policy::RoutePolicy;

const LISTENERS: &str = "listeners:
  - {address: \"127.0.0.1:3128\"}
  - {address: \"127.0.0.1:3129\", tls: {cert_file: app.pem, key_file: app.key, client_ca_file: app.pem}}
  - {unix: popgate.sock, mode: \"0600\"}
";

fn config(listeners: &str, allow: &str) -> String {
    format!(
        "version: 1
{listeners}identities:
  byo: {{kind: static, token_file: token.jwt, certificate: {{cert_file: app.pem, key_file: app.key}}}}
routes:
  - name: r
    match: {{host: a.example}}
    resource: https://a.example
    flow: vanilla
    identity: byo
{allow}"
    )
}

/// 1-based (line, column) of the first occurrence of `needle` in `text`.
fn pos(text: &str, needle: &str) -> (u32, u32) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in config"));
    let before = &text[..at];
    let line = before.matches('\n').count() as u32 + 1;
    let col = (at - before.rfind('\n').map_or(0, |i| i + 1)) as u32 + 1;
    (line, col)
}

fn assert_error_at(f: &Fixture, yaml: &str, needle: &str, message: &str) {
    let (line, col) = pos(yaml, needle);
    let errors = f.errors(yaml);
    let expected = f.at(line, col, message);
    assert!(
        errors.iter().any(|e| e == &expected),
        "expected {expected}\ngot {errors:#?}"
    );
}

#[test]
fn every_rule_kind_and_a_unix_listener_load() {
    let f = Fixture::new();
    let yaml = config(
        LISTENERS,
        "    allow:
      - {cidr: 10.0.0.0/8}
      - {cidr: \"::1\"}
      - {subject: \"CN=app,O=corp\"}
      - {dns_san: App.Corp.Internal.}
      - {uri_san: \"spiffe://corp/ns/legacy/sa/app\"}
      - {uid: 1000}
      - {gid: 1000}
",
    );
    let cfg = f.load(&yaml).unwrap();
    assert_eq!(cfg.unix_listeners.len(), 1);
    assert_eq!(cfg.unix_listeners[0].path, f.path("popgate.sock"));
    assert_eq!(cfg.unix_listeners[0].mode, 0o600);
    let expected = AllowList(vec![
        AllowRule::Cidr("10.0.0.0/8".parse().unwrap()),
        AllowRule::Cidr("::1".parse().unwrap()),
        AllowRule::Subject("O=corp,CN=app".parse().unwrap()),
        AllowRule::dns_san("app.corp.internal"),
        AllowRule::UriSan("spiffe://corp/ns/legacy/sa/app".into()),
        AllowRule::Uid(1000),
        AllowRule::Gid(1000),
    ]);
    assert_eq!(cfg.routes[0].allow.as_ref(), Some(&expected));
    assert_eq!(RoutePolicy::of(&cfg.routes[0]).allow, Some(expected));

    // No `allow`: anyone; default unix mode 0660.
    let open = config("listeners: [{unix: /tmp/x.sock}]\n", "");
    let cfg = f.load(&open).unwrap();
    assert_eq!(cfg.routes[0].allow, None);
    assert_eq!(cfg.unix_listeners[0].mode, 0o660);
    assert!(cfg.listeners.is_empty());
}

#[test]
fn bad_rules_are_errors_at_their_position() {
    let f = Fixture::new();
    let cases = [
        (
            "      - {cidr: 10.0.0.1/8}\n",
            "10.0.0.1/8",
            "allow cidr: `10.0.0.1/8` has bits set beyond the /8 prefix; write the network address",
        ),
        (
            "      - {cidr: tenish}\n",
            "tenish",
            "allow cidr: `tenish` is not an IP network (e.g. 10.0.0.0/8 or fd00::/8)",
        ),
        (
            "      - {subject: \"CN\"}\n",
            "\"CN\"",
            "allow subject `CN`: `CN` is not TYPE=value (e.g. CN=app,O=corp)",
        ),
        (
            "      - {dns_san: \"a b\"}\n",
            "\"a b\"",
            "allow dns_san `a b` is not a DNS name",
        ),
        (
            "      - {uri_san: app}\n",
            "app}",
            "allow uri_san `app` is not a URI (e.g. spiffe://corp/ns/app/sa/web)",
        ),
        (
            "      - {uid: 4294967296}\n",
            "4294967296",
            "allow uid/gid 4294967296 is beyond 4294967295",
        ),
    ];
    for (rule, needle, message) in cases {
        let yaml = config(LISTENERS, &format!("    allow:\n{rule}"));
        assert_error_at(&f, &yaml, needle, message);
    }
    let two = config(
        LISTENERS,
        "    allow:\n      - {cidr: 10.0.0.0/8, uid: 1}\n",
    );
    let errors = f.errors(&two);
    assert!(
        errors.iter().any(|e| e.contains(
            "an allow rule has exactly one of cidr, subject, dns_san, uri_san, uid or gid"
        )),
        "{errors:#?}"
    );
    let none = config(LISTENERS, "    allow:\n      - {}\n");
    assert!(f.errors(&none)[0].contains("exactly one of"));
    let empty = config(LISTENERS, "    allow: []\n");
    assert_error_at(
        &f,
        &empty,
        "[]",
        "`allow` is empty, so no caller could use the route; remove it to allow anyone, or list rules",
    );
    let unknown = config(LISTENERS, "    allow:\n      - {user: root}\n");
    assert!(
        f.errors(&unknown)[0].contains("user"),
        "{:?}",
        f.errors(&unknown)
    );
}

#[test]
fn rules_the_listeners_can_never_satisfy_are_errors() {
    let f = Fixture::new();
    let plain_only = "listeners: [{address: \"127.0.0.1:3128\"}]\n";
    let yaml = config(plain_only, "    allow:\n      - {dns_san: app.corp}\n");
    assert_error_at(
        &f,
        &yaml,
        "{dns_san",
        "route `r`: a certificate rule needs a listener with `tls.client_ca_file` (inbound mTLS); none is configured",
    );
    let yaml = config(plain_only, "    allow:\n      - {uid: 0}\n");
    assert_error_at(
        &f,
        &yaml,
        "{uid",
        "route `r`: a uid/gid rule needs a `unix` listener; none is configured",
    );
    let unix_only = "listeners: [{unix: popgate.sock}]\n";
    let yaml = config(unix_only, "    allow:\n      - {cidr: 127.0.0.0/8}\n");
    assert_error_at(
        &f,
        &yaml,
        "{cidr",
        "route `r`: a cidr rule needs an `address` listener; only unix listeners are configured",
    );
}

#[test]
fn bad_unix_listeners_are_errors_at_their_position() {
    let f = Fixture::new();
    let cases = [
        (
            "listeners: [{unix: a.sock, mode: \"0999\"}]\n",
            "\"0999\"",
            "mode `0999` is not an octal permission between 0000 and 0777 (e.g. \"0660\")",
        ),
        (
            "listeners: [{unix: a.sock, mode: \"1777\"}]\n",
            "\"1777\"",
            "mode `1777` is not an octal permission between 0000 and 0777 (e.g. \"0660\")",
        ),
        (
            "listeners: [{address: \"127.0.0.1:1\", unix: a.sock}]\n",
            "a.sock",
            "a listener has either `address` or `unix`, not both",
        ),
        (
            "listeners: [{address: \"127.0.0.1:1\", mode: \"0600\"}]\n",
            "\"0600\"",
            "`mode` only applies to `unix` listeners",
        ),
        (
            "listeners: [{unix: \"\"}]\n",
            "\"\"",
            "the unix socket path is empty",
        ),
        (
            "listeners: [{unix: a.sock}, {unix: a.sock}]\n",
            "a.sock}]",
            "duplicate unix listener path a.sock",
        ),
    ];
    for (listeners, needle, message) in cases {
        let yaml = config(listeners, "");
        assert_error_at(&f, &yaml, needle, message);
    }
    let neither = config("listeners: [{}]\n", "");
    assert!(
        f.errors(&neither)[0]
            .contains("a listener needs `address` (ip:port) or `unix` (a socket path)"),
        "{:?}",
        f.errors(&neither)
    );
    let tls = config(
        "listeners: [{unix: a.sock, tls: {cert_file: app.pem, key_file: app.key}}]\n",
        "",
    );
    assert!(f.errors(&tls)[0].contains("`tls` is not available on `unix` listeners"));
}

#[test]
fn a_plain_listener_beyond_loopback_with_open_routes_is_warned_about() {
    let f = Fixture::new();
    let open = config(
        "listeners: [{address: \"0.0.0.0:3128\"}, {address: \"127.0.0.1:3129\"}]\n",
        "",
    );
    let cfg = f.load(&open).unwrap();
    let found = popgate::app::listeners::open_listeners(&cfg);
    assert_eq!(
        found,
        vec![("0.0.0.0:3128".parse().unwrap(), vec!["r".to_string()])]
    );

    let logs = LogCapture::default();
    {
        let _guard = logs.install();
        popgate::app::listeners::warn_open_listeners(&cfg);
    }
    let text = logs.text();
    assert!(text.contains("WARN"), "{text}");
    assert!(text.contains("listener=0.0.0.0:3128"), "{text}");
    assert!(text.contains("routes=[\"r\"]"), "{text}");
    assert!(!text.contains("127.0.0.1:3129"), "{text}");

    // With an allow list on every route (or only loopback listeners): no warning.
    let guarded = config(
        "listeners: [{address: \"0.0.0.0:3128\"}]\n",
        "    allow:\n      - {cidr: 10.0.0.0/8}\n",
    );
    assert!(popgate::app::listeners::open_listeners(&f.load(&guarded).unwrap()).is_empty());
    let loopback = config("listeners: [{address: \"127.0.0.1:3128\"}]\n", "");
    assert!(popgate::app::listeners::open_listeners(&f.load(&loopback).unwrap()).is_empty());
}
