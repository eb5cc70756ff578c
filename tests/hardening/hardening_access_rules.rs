//! Caller authentication per route: `allow` rules on the TCP peer address, the verified caller
//! certificate (subject, DNS SAN, URI SAN) and Unix-socket credentials. A denied caller gets 403
//! `caller_not_allowed` and nothing reaches the upstream (its request count proves it).

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::kit::dataplane::*;
use crate::kit::guard::*;
use http::Request;
use popgate::access::{AllowList, AllowRule};
use popgate::dataplane::unix_listener::{DEFAULT_UNIX_SOCKET_MODE, UnixListenerSpec};
use popgate::route::policy::RoutePolicy;

fn allow(rules: Vec<AllowRule>) -> RoutePolicy {
    RoutePolicy {
        allow: Some(AllowList(rules)),
        max_body_bytes: None,
    }
}

fn get(host: &str) -> Request<TestBody> {
    Request::builder()
        .uri("/v1/x")
        .header("host", host)
        .body(TestBody::Empty)
        .unwrap()
}

async fn denied(resp: http::Response<hyper::body::Incoming>, route: &str) {
    assert_eq!(resp.status(), 403);
    let body = json(resp).await;
    assert_eq!(body["error"], "caller_not_allowed", "{body}");
    assert_eq!(body["route"], route, "{body}");
}

// `Env` (a test PKI, an upstream trusting it, a temp dir) is the kit's; these are this file's uses.
impl Env {
    /// Upstream settings resolving `{name}.svc.example:443` to the test upstream.
    fn settings(&self, names: &[&str]) -> popgate::dataplane::UpstreamSettings {
        let hosts: Vec<String> = names
            .iter()
            .map(|n| format!("{n}.svc.example:443"))
            .collect();
        let resolve: Vec<(&str, std::net::SocketAddr)> = hosts
            .iter()
            .map(|h| (h.as_str(), self.upstream.addr))
            .collect();
        self.pki.upstream_settings(self.dir.path(), &resolve)
    }

    fn route(
        &self,
        name: &str,
        policy: RoutePolicy,
    ) -> (
        popgate::route::table::RouteSpec,
        popgate::identity::token::Token,
        RoutePolicy,
    ) {
        let host = format!("{name}.svc.example");
        let token = pop_token(self.dir.path(), &self.pki.binding("popgate"), name);
        (route(name, Some(&host), None), token, policy)
    }
}

#[tokio::test]
async fn cidr_rules_admit_matching_peers_and_refuse_others_without_forwarding() {
    let env = Env::new().await;
    let settings = env.settings(&["inside", "outside", "open"]);
    let routes = vec![
        env.route(
            "inside",
            allow(vec![AllowRule::Cidr("127.0.0.0/8".parse().unwrap())]),
        ),
        env.route(
            "outside",
            allow(vec![AllowRule::Cidr("10.0.0.0/8".parse().unwrap())]),
        ),
        env.route("open", RoutePolicy::default()),
    ];
    let proxy = start_guarded(routes, &settings, vec![plain_listener()], vec![]).await;
    let addr = proxy.local_addrs()[0];

    let resp = h1_send(addr, get("inside.svc.example")).await;
    assert_eq!(resp.status(), 200);
    denied(h1_send(addr, get("outside.svc.example")).await, "outside").await;
    // Absolute form is checked the same way.
    denied(
        h1_send(addr, absolute_get("outside.svc.example", "/v1/x")).await,
        "outside",
    )
    .await;
    assert_eq!(h1_send(addr, get("open.svc.example")).await.status(), 200);
    assert_eq!(
        env.upstream.requests(),
        2,
        "a denied request reached the upstream"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn certificate_rules_match_subject_dns_san_and_uri_san_of_the_verified_caller() {
    let env = Env::new().await;
    let callers = CallerPki::new();
    let settings = env.settings(&["dns", "uri", "subject", "cidr"]);
    let routes = vec![
        env.route("dns", allow(vec![AllowRule::dns_san("App.Corp.Internal")])),
        env.route(
            "uri",
            allow(vec![AllowRule::UriSan(
                "spiffe://corp/ns/legacy/sa/app".into(),
            )]),
        ),
        env.route(
            "subject",
            allow(vec![AllowRule::Subject("O=corp,CN=app".parse().unwrap())]),
        ),
        // A cert rule and a cidr rule: the cidr admits any loopback peer with a valid cert.
        env.route(
            "cidr",
            allow(vec![AllowRule::Cidr("127.0.0.1".parse().unwrap())]),
        ),
    ];
    let proxy = start_guarded(routes, &settings, vec![callers.mtls_listener()], vec![]).await;
    let addr = proxy.local_addrs()[0];

    let app = callers.client_config(Some(callers.issue(
        "app",
        "corp",
        &["app.corp.internal"],
        &["spiffe://corp/ns/legacy/sa/app"],
        false,
    )));
    let other = callers.client_config(Some(callers.issue(
        "other",
        "corp",
        &["other.corp.internal"],
        &["spiffe://corp/ns/legacy/sa/other"],
        false,
    )));
    // Same CN as `app` but an extra O value: the subject must match as a whole.
    let lookalike = callers.client_config(Some(callers.issue("app", "corp2", &[], &[], false)));

    for name in ["dns", "uri", "subject", "cidr"] {
        let host = format!("{name}.svc.example");
        let resp = h1_send_tls(addr, app.clone(), get(&host)).await.unwrap();
        assert_eq!(resp.status(), 200, "app on {name}");
    }
    for name in ["dns", "uri", "subject"] {
        let host = format!("{name}.svc.example");
        denied(
            h1_send_tls(addr, other.clone(), get(&host)).await.unwrap(),
            name,
        )
        .await;
        denied(
            h1_send_tls(addr, lookalike.clone(), get(&host))
                .await
                .unwrap(),
            name,
        )
        .await;
    }
    assert_eq!(
        env.upstream.requests(),
        4,
        "a denied request reached the upstream"
    );

    // No certificate at all: the mTLS listener refuses the handshake (or the first request).
    let anonymous = callers.client_config(None);
    let outcome = h1_send_tls(addr, anonymous, get("cidr.svc.example")).await;
    assert!(
        outcome.is_err(),
        "a caller without a certificate was served"
    );
    assert_eq!(env.upstream.requests(), 4);
    proxy.shutdown().await;
}

#[tokio::test]
async fn unix_socket_callers_are_admitted_by_uid_or_gid_only() {
    let env = Env::new().await;
    let meta = std::fs::metadata(env.dir.path()).unwrap();
    let (uid, gid) = (meta.uid(), meta.gid());
    let socket = env.dir.path().join("popgate.sock");
    let settings = env.settings(&["byuid", "bygid", "otheruid", "cidr", "open"]);
    let routes = vec![
        env.route("byuid", allow(vec![AllowRule::Uid(uid)])),
        env.route("bygid", allow(vec![AllowRule::Gid(gid)])),
        env.route("otheruid", allow(vec![AllowRule::Uid(uid.wrapping_add(1))])),
        env.route(
            "cidr",
            allow(vec![AllowRule::Cidr("0.0.0.0/0".parse().unwrap())]),
        ),
        env.route("open", RoutePolicy::default()),
    ];
    let unix = UnixListenerSpec {
        path: socket.clone(),
        mode: DEFAULT_UNIX_SOCKET_MODE,
    };
    let proxy = start_guarded(routes, &settings, vec![], vec![unix]).await;
    assert_eq!(proxy.unix_paths(), std::slice::from_ref(&socket));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");

    for name in ["byuid", "bygid", "open"] {
        let resp = h1_send_unix(&socket, get(&format!("{name}.svc.example"))).await;
        assert_eq!(resp.status(), 200, "{name}");
    }
    // Absolute form works over the socket too.
    let resp = h1_send_unix(&socket, absolute_get("byuid.svc.example", "/a")).await;
    assert_eq!(resp.status(), 200);
    denied(
        h1_send_unix(&socket, get("otheruid.svc.example")).await,
        "otheruid",
    )
    .await;
    // A cidr rule never matches a caller without an IP address.
    denied(h1_send_unix(&socket, get("cidr.svc.example")).await, "cidr").await;
    assert_eq!(
        env.upstream.requests(),
        4,
        "a denied request reached the upstream"
    );

    proxy.shutdown().await;
    assert!(!socket.exists(), "the socket file outlived the listener");
}

#[tokio::test]
async fn a_stale_socket_is_replaced_but_a_regular_file_is_not() {
    let env = Env::new().await;
    let settings = env.settings(&["open"]);
    let stale = env.dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let spec = |path: &std::path::Path| UnixListenerSpec {
        path: path.to_owned(),
        mode: 0o600,
    };
    let proxy = start_guarded(
        vec![env.route("open", RoutePolicy::default())],
        &settings,
        vec![],
        vec![spec(&stale)],
    )
    .await;
    let mode = std::fs::metadata(&stale).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        h1_send_unix(&stale, get("open.svc.example")).await.status(),
        200
    );
    proxy.shutdown().await;

    let file = env.dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let table = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(
        popgate::route::table::RouteTable::new(Vec::new()),
    ));
    let err = popgate::dataplane::Proxy::start_with_unix(
        vec![],
        vec![spec(&file)],
        table,
        popgate::dataplane::ProxySettings::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[tokio::test]
async fn a_new_policy_on_a_live_slot_applies_to_the_next_request() {
    let env = Env::new().await;
    let settings = env.settings(&["swap"]);
    let (spec, token, _) = env.route("swap", RoutePolicy::default());
    let snapshot = popgate::route::slot::Snapshot::build(&token, &settings, 1).unwrap();
    let slot = std::sync::Arc::new(popgate::route::slot::RouteSlot::with_snapshot(
        "swap", snapshot,
    ));
    let table = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(
        popgate::route::table::RouteTable::new(vec![(spec, std::sync::Arc::clone(&slot))]),
    ));
    let proxy = popgate::dataplane::Proxy::start(
        vec![plain_listener()],
        table,
        popgate::dataplane::ProxySettings::default(),
    )
    .await
    .unwrap();
    let addr = proxy.local_addrs()[0];
    assert_eq!(h1_send(addr, get("swap.svc.example")).await.status(), 200);
    slot.set_policy(allow(vec![AllowRule::Cidr("10.0.0.0/8".parse().unwrap())]));
    denied(h1_send(addr, get("swap.svc.example")).await, "swap").await;
    slot.set_policy(RoutePolicy::default());
    assert_eq!(h1_send(addr, get("swap.svc.example")).await.status(), 200);
    assert_eq!(env.upstream.requests(), 2);
    proxy.shutdown().await;
}
