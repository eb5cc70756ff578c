//! Route rules: each test writes a config with one mistake and asserts the exact
//! `FILE:LINE:COL: message`. Routes start on line 11 (see `crate::kit::config::head`).

use crate::kit::config::{Fixture, with_routes};
use popgate::config::{Acquire, Flow, HostPattern};
use popgate::identity::token::TokenType;

#[test]
fn a_valid_route_set_loads_with_defaults_and_normalization() {
    let f = Fixture::new();
    let cfg = f
        .load(&with_routes(
            "  - {name: a, match: {host: Graph.Microsoft.com.}, resource: https://graph.microsoft.com/.default, flow: vanilla, identity: app}
  - name: b
    match: {host: '*.vault.azure.net:8443', path_prefix: /kv/}
    strip_prefix: true
    upstream: https://kv.example/base/
    resource: https://vault.azure.net
    flow: fic
    leg1: sami
    leg2: exchange
    token_type: bearer
    acquire: lazy
    timeouts: {request: 500ms}
",
        ))
        .unwrap();
    let a = &cfg.routes[0];
    assert_eq!(
        a.host,
        Some(HostPattern::Exact {
            host: "graph.microsoft.com".into(),
            port: None
        })
    );
    assert_eq!(a.resource, "https://graph.microsoft.com");
    assert_eq!(a.scope(), "https://graph.microsoft.com/.default");
    assert_eq!(a.token_type, TokenType::MtlsPop);
    assert_eq!(a.acquire, Acquire::Eager);
    assert!(a.upstream.is_none());
    assert_eq!(a.upstream_base_path(), "");
    let b = &cfg.routes[1];
    assert_eq!(
        b.host,
        Some(HostPattern::Wildcard {
            suffix: "vault.azure.net".into(),
            port: Some(8443)
        })
    );
    assert_eq!(b.path_prefix.as_deref(), Some("/kv/"));
    assert!(b.strip_prefix);
    assert_eq!(b.upstream_base_path(), "/base");
    assert_eq!(
        b.flow,
        Flow::Fic {
            leg1: "sami".into(),
            leg2: "exchange".into(),
            leg1_token_type: TokenType::MtlsPop
        }
    );
    assert_eq!(b.acquire, Acquire::Lazy);
    assert_eq!(b.timeouts.request, std::time::Duration::from_millis(500));
    assert_eq!(
        b.timeouts.connect,
        popgate::config::limits::DEFAULT_CONNECT_TIMEOUT
    );
}

#[test]
fn managed_identity_as_leg2() {
    let f = Fixture::new();
    f.assert_error(
        &with_routes(
            "  - {name: a, match: {host: a.example}, resource: r, flow: fic, leg1: app, leg2: sami}\n",
        ),
        11,
        82,
        "managed identities have no client-assertion API: FIC leg 2 must be a confidential client",
    );
}

#[test]
fn static_and_workload_identities_as_leg2() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&with_routes(
            "  - {name: a, match: {host: a.example}, resource: r, flow: fic, leg1: sami, leg2: byo}
  - {name: b, match: {host: b.example}, resource: r, flow: fic, leg1: sami, leg2: wi, token_type: bearer}
"
        )),
        vec![
            f.at(11, 83, "FIC leg 2 must be a confidential client: `byo` is a static identity, which cannot present a client assertion"),
            f.at(12, 83, "FIC leg 2 must be a confidential client: `wi` is a workload_identity identity, which cannot present a client assertion"),
        ]
    );
}

#[test]
fn duplicate_route_names() {
    let f = Fixture::new();
    f.assert_error(
        &with_routes(
            "  - {name: a, match: {host: a.example}, resource: r, flow: vanilla, identity: sami}
  - {name: a, match: {host: b.example}, resource: r, flow: vanilla, identity: sami}
",
        ),
        12,
        12,
        "duplicate route name `a` (first defined at line 11)",
    );
}

#[test]
fn route_name_charset() {
    let f = Fixture::new();
    f.assert_error(
        &with_routes(
            "  - {name: 'my route', match: {host: a.example}, resource: r, flow: vanilla, identity: sami}\n",
        ),
        11,
        12,
        "route name `my route` may only contain letters, digits, `_`, `.` and `-` (it is used in logs and metric labels)",
    );
}

#[test]
fn unknown_identity_names() {
    let f = Fixture::new();
    f.assert_error(
        &with_routes(
            "  - {name: a, match: {host: a.example}, resource: r, flow: vanilla, identity: nobody}\n",
        ),
        11,
        79,
        "unknown identity `nobody` (defined: sami, app, exchange, wi, byo)",
    );
}

#[test]
fn vanilla_needs_identity_and_no_legs() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&with_routes(
            "  - {name: a, match: {host: a.example}, resource: r, flow: vanilla}
  - {name: b, match: {host: b.example}, resource: r, flow: vanilla, identity: sami, leg1: sami, leg2: exchange, leg1_token_type: bearer}
"
        )),
        vec![
            f.at(11, 60, "flow vanilla needs `identity`"),
            f.at(12, 91, "`leg1` is only for flow: fic"),
            f.at(12, 103, "`leg2` is only for flow: fic"),
            f.at(12, 130, "`leg1_token_type` is only for flow: fic"),
        ]
    );
}

#[test]
fn fic_needs_both_legs_and_no_identity() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&with_routes(
            "  - {name: a, match: {host: a.example}, resource: r, flow: fic, leg1: sami}
  - {name: b, match: {host: b.example}, resource: r, flow: fic, identity: sami, leg1: sami, leg2: exchange}
"
        )),
        vec![
            f.at(11, 60, "flow fic needs `leg1` and `leg2`"),
            f.at(12, 75, "`identity` is only for flow: vanilla"),
        ]
    );
}

#[test]
fn certificate_less_confidential_client_as_vanilla_or_leg1() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&with_routes(
            "  - {name: a, match: {host: a.example}, resource: r, flow: vanilla, identity: exchange}
  - {name: b, match: {host: b.example}, resource: r, flow: fic, leg1: exchange, leg2: exchange}
"
        )),
        vec![
            f.at(11, 79, "identity `exchange` is a confidential client without a certificate, so it cannot be a vanilla identity: it can only be a FIC leg 2 (give it `certificate:` to use it here)"),
            f.at(12, 71, "identity `exchange` is a confidential client without a certificate, so it cannot be FIC leg 1: it can only be a FIC leg 2 (give it `certificate:` to use it here)"),
        ]
    );
}

#[test]
fn static_identity_in_a_fic_flow() {
    let f = Fixture::new();
    f.assert_error(
        &with_routes(
            "  - {name: a, match: {host: a.example}, resource: r, flow: fic, leg1: byo, leg2: exchange}\n",
        ),
        11,
        71,
        "static identity `byo` cannot take part in a FIC flow: its token is fixed, not acquired for api://AzureADTokenExchange",
    );
}

#[test]
fn workload_identity_with_mtls_pop() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&with_routes(
            "  - {name: a, match: {host: a.example}, resource: r, flow: vanilla, identity: wi}
  - {name: b, match: {host: b.example}, resource: r, flow: vanilla, identity: wi, token_type: mtls_pop}
  - {name: c, match: {host: c.example}, resource: r, flow: fic, leg1: wi, leg2: exchange, token_type: bearer}
"
        )),
        vec![
            f.at(11, 79, "workload identity `wi` issues Bearer tokens only: set `token_type: bearer`"),
            f.at(12, 95, "workload identity `wi` issues Bearer tokens only: set `token_type: bearer`"),
            f.at(13, 71, "workload identity `wi` issues Bearer tokens only: set `leg1_token_type: bearer` (and `token_type: bearer`)"),
        ]
    );
}

#[test]
fn bearer_leg1_needs_a_bearer_final_token_and_a_non_certificate_leg1() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&with_routes(
            "  - {name: a, match: {host: a.example}, resource: r, flow: fic, leg1: sami, leg1_token_type: bearer, leg2: exchange}
  - {name: b, match: {host: b.example}, resource: r, flow: fic, leg1: app, leg1_token_type: bearer, leg2: exchange, token_type: bearer}
"
        )),
        vec![
            f.at(11, 94, "leg1_token_type: bearer gives a Bearer leg 2 only: set `token_type: bearer`"),
            f.at(12, 93, "leg1_token_type: bearer needs a managed identity or workload identity leg 1; certificate app `app` is always mtls_pop as leg 1"),
        ]
    );
    // The valid combinations load.
    f.load(&with_routes(
        "  - {name: a, match: {host: a.example}, resource: r, flow: fic, leg1: sami, leg1_token_type: bearer, leg2: exchange, token_type: bearer}
  - {name: b, match: {host: b.example}, resource: r, flow: fic, leg1: wi, leg1_token_type: bearer, leg2: exchange, token_type: bearer}
",
    ))
    .unwrap();
}

fn sovereign_head(authority_host: &str) -> String {
    format!(
        "version: 1
listeners: [{{address: \"127.0.0.1:3128\"}}]
identities:
  sami: {{kind: managed_identity}}
  gov:
    kind: confidential_client
    tenant_id: {t}
    client_id: {c}
    certificate: {{cert_file: app.pem, key_file: app.key}}
    authority_host: {authority_host}
  ex:
    kind: confidential_client
    tenant_id: {t}
    client_id: {c}
    authority_host: {authority_host}
routes:
",
        t = crate::kit::config::TENANT,
        c = crate::kit::config::CLIENT
    )
}

#[test]
fn authority_hosts_refused_for_mtls_pop() {
    let f = Fixture::new();
    // Vanilla PoP with `gov`, FIC leg 1 `gov`, and FIC leg 2 `ex` (after an mTLS leg 1).
    for route in [
        "  - {name: a, match: {host: a.example}, resource: r, flow: vanilla, identity: gov}\n",
        "  - {name: a, match: {host: a.example}, resource: r, flow: fic, leg1: gov, leg2: gov, token_type: bearer}\n",
    ] {
        f.assert_error(
            &format!("{}{route}", sovereign_head("login.usgovcloudapi.net")),
            10,
            21,
            "authority host `login.usgovcloudapi.net` is refused for mTLS PoP: use `login.microsoftonline.us` (identity `gov` is used with an mtlsauth token host)",
        );
    }
    f.assert_error(
        &format!(
            "{}  - {{name: a, match: {{host: a.example}}, resource: r, flow: fic, leg1: sami, leg2: ex}}\n",
            sovereign_head("login.chinacloudapi.cn")
        ),
        15,
        21,
        "authority host `login.chinacloudapi.cn` is refused for mTLS PoP: use `login.partner.microsoftonline.cn` (identity `ex` is used with an mtlsauth token host)",
    );
    f.assert_error(
        &format!(
            "{}  - {{name: a, match: {{host: a.example}}, resource: r, flow: vanilla, identity: gov}}\n",
            sovereign_head("sts.contoso.com")
        ),
        10,
        21,
        "authority host `sts.contoso.com` is refused for mTLS PoP: only `login.*` hosts have an mtlsauth counterpart (identity `gov` is used with an mtlsauth token host)",
    );
}

#[test]
fn refused_authority_host_is_fine_for_bearer() {
    let f = Fixture::new();
    let cfg = f
        .load(&format!(
            "{}  - {{name: a, match: {{host: a.example}}, resource: r, flow: vanilla, identity: gov, token_type: bearer}}
  - {{name: b, match: {{host: b.example}}, resource: r, flow: fic, leg1: sami, leg1_token_type: bearer, leg2: ex, token_type: bearer}}
",
            sovereign_head("login.usgovcloudapi.net")
        ))
        .unwrap();
    assert_eq!(cfg.routes.len(), 2);
}

#[test]
fn upstream_must_be_https() {
    let f = Fixture::new();
    f.assert_error(
        &with_routes(
            "  - {name: a, match: {host: a.example}, upstream: 'http://a.example', resource: r, flow: vanilla, identity: sami}\n",
        ),
        11,
        51,
        "upstream `http://a.example` must use https: popgate re-originates every request over TLS",
    );
}

#[test]
fn upstream_is_required_without_a_host_match() {
    let f = Fixture::new();
    f.assert_error(
        &with_routes(
            "  - {name: a, match: {path_prefix: /a/}, resource: r, flow: vanilla, identity: sami}\n",
        ),
        11,
        22,
        "route `a` has no `match.host`, so it needs an `upstream` (https://…)",
    );
}

#[test]
fn resource_empty_or_only_default_scope() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&with_routes(
            "  - {name: a, match: {host: a.example}, resource: '', flow: vanilla, identity: sami}
  - {name: b, match: {host: b.example}, resource: /.default, flow: vanilla, identity: sami}
"
        )),
        vec![
            f.at(
                11,
                51,
                "resource is empty (e.g. https://graph.microsoft.com)"
            ),
            f.at(
                12,
                51,
                "resource is empty (e.g. https://graph.microsoft.com)"
            ),
        ]
    );
}

#[test]
fn unreachable_route_with_identical_normalized_match() {
    let f = Fixture::new();
    f.assert_error(
        &with_routes(
            "  - {name: a, match: {host: a.example, path_prefix: /x}, resource: r, flow: vanilla, identity: sami}
  - {name: b, match: {host: A.Example., path_prefix: /x}, resource: r, flow: vanilla, identity: sami}
",
        ),
        12,
        22,
        "route `b` is unreachable: route `a` (line 11) has the same match",
    );
    // A different prefix or port is a different match.
    f.load(&with_routes(
        "  - {name: a, match: {host: a.example, path_prefix: /x}, resource: r, flow: vanilla, identity: sami}
  - {name: b, match: {host: a.example, path_prefix: /x/}, resource: r, flow: vanilla, identity: sami}
  - {name: c, match: {host: 'a.example:8443', path_prefix: /x}, resource: r, flow: vanilla, identity: sami}
",
    ))
    .unwrap();
}

#[test]
fn match_needs_host_or_prefix() {
    let f = Fixture::new();
    f.assert_error(
        &with_routes(
            "  - {name: a, match: {}, upstream: 'https://u.example', resource: r, flow: vanilla, identity: sami}\n",
        ),
        11,
        22,
        "a match needs `host` and/or `path_prefix`",
    );
}

#[test]
fn bad_host_pattern_path_prefix_and_strip_prefix() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&with_routes(
            "  - {name: a, match: {host: 'a.*.example'}, resource: r, flow: vanilla, identity: sami}
  - {name: b, match: {host: 'b.example:443'}, resource: r, flow: vanilla, identity: sami}
  - {name: c, match: {host: c.example, path_prefix: c/}, resource: r, flow: vanilla, identity: sami}
  - {name: d, match: {host: d.example}, strip_prefix: true, resource: r, flow: vanilla, identity: sami}
"
        )),
        vec![
            f.at(11, 29, "host pattern `a.*.example`: a wildcard is only allowed as a leading `*.` (e.g. *.vault.azure.net)"),
            f.at(12, 29, "host pattern `b.example:443`: port 443 is a default port and is folded away before matching; leave it out"),
            f.at(13, 53, "path_prefix `c/` must start with `/`"),
            f.at(14, 55, "strip_prefix needs a `match.path_prefix` to strip"),
        ]
    );
}

#[test]
fn path_prefixes_and_base_paths_must_be_canonical() {
    // Requests are matched on their canonical path (docs/config.md, Paths): a prefix in another
    // form could never match, and a base path with `..` would send requests elsewhere.
    let f = Fixture::new();
    assert_eq!(
        f.errors(&with_routes(
            "  - {name: a, match: {host: a.example, path_prefix: /x/../admin/}, resource: r, flow: vanilla, identity: sami}
  - {name: b, match: {host: b.example, path_prefix: '//%61dmin'}, resource: r, flow: vanilla, identity: sami}
  - {name: c, match: {host: c.example, path_prefix: /../c}, resource: r, flow: vanilla, identity: sami}
  - {name: d, match: {host: d.example}, upstream: 'https://d.example/v1.0/../beta', resource: r, flow: vanilla, identity: sami}
"
        )),
        vec![
            f.at(11, 53, "path_prefix `/x/../admin/` is not in canonical form and would never match: requests are matched on their canonical path (docs/config.md, Paths); write `/admin/`"),
            f.at(12, 53, "path_prefix `//%61dmin` is not in canonical form and would never match: requests are matched on their canonical path (docs/config.md, Paths); write `/admin`"),
            f.at(13, 53, "path_prefix `/../c` has no canonical form: the path has a `..` segment that climbs above the root"),
            f.at(14, 51, "upstream `https://d.example/v1.0/../beta` has a path that is not in canonical form (no `.` or `..` segments, no `//`, no encoded unreserved characters, upper-case `%XX`)"),
        ]
    );
}

#[test]
fn bad_route_timeouts() {
    let f = Fixture::new();
    f.assert_error(
        &with_routes(
            "  - {name: a, match: {host: a.example}, resource: r, flow: vanilla, identity: sami, timeouts: {connect: 5x}}\n",
        ),
        11,
        105,
        "`5x` is not a duration: write a whole number followed by ms, s, m or h (e.g. 500ms, 5s, 2m)",
    );
}

#[test]
fn bad_enum_values_are_parse_errors() {
    let f = Fixture::new();
    let errors = f.errors(&with_routes(
        "  - {name: a, match: {host: a.example}, resource: r, flow: vanilla, identity: sami, token_type: pop}\n",
    ));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with(&f.at(11, 97, "unknown variant `pop`")),
        "{errors:?}"
    );
}

#[test]
fn malformed_upstreams() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&with_routes(
            "  - {name: a, match: {host: a.example}, upstream: 'https://', resource: r, flow: vanilla, identity: sami}
  - {name: b, match: {host: b.example}, upstream: 'https://b.example/x?y=1', resource: r, flow: vanilla, identity: sami}
  - {name: c, match: {host: c.example}, upstream: 'https://u@c.example', resource: r, flow: vanilla, identity: sami}
  - {name: d, match: {host: d.example}, upstream: 'not a url', resource: r, flow: vanilla, identity: sami}
"
        )),
        vec![
            f.at(11, 51, "upstream `https://` is not a URL (e.g. https://graph.microsoft.com)"),
            f.at(12, 51, "upstream `https://b.example/x?y=1` may not carry a query"),
            f.at(13, 51, "upstream `https://u@c.example` may not carry user info"),
            f.at(14, 51, "upstream `not a url` is not a URL (e.g. https://graph.microsoft.com)"),
        ]
    );
}

#[test]
fn resource_with_whitespace() {
    let f = Fixture::new();
    f.assert_error(
        &with_routes(
            "  - {name: a, match: {host: a.example}, resource: 'https://x y', flow: vanilla, identity: sami}\n",
        ),
        11,
        51,
        "resource `https://x y` may not contain whitespace",
    );
}

#[test]
fn more_bad_host_patterns_and_prefixes() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&with_routes(
            "  - {name: a, match: {host: '*.10.0.0.1'}, resource: r, flow: vanilla, identity: sami}
  - {name: b, match: {host: 'b example'}, resource: r, flow: vanilla, identity: sami}
  - {name: c, match: {host: c.example, path_prefix: '/a b'}, resource: r, flow: vanilla, identity: sami}
"
        )),
        vec![
            f.at(11, 29, "host pattern `*.10.0.0.1`: a wildcard needs a DNS suffix, not an IP address"),
            f.at(12, 29, "host pattern `b example` is not a host name, `*.suffix` or IP address with an optional :port"),
            f.at(13, 53, "path_prefix `/a b` may not contain whitespace, control characters, `?` or `#`"),
        ]
    );
}
