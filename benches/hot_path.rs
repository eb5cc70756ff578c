//! Criterion micro-benchmarks of popgate's per-request work, through the real APIs:
//!
//! - `route_lookup/{10,1000,10000}/{hit_first,hit_wildcard,hit_last,miss}`: `RouteTable::lookup`
//!   plus `Match::upstream_uri` on a realistic mix of exact hosts (some with path prefixes),
//!   `*.suffix` wildcards and host-less path-prefix routes, in configuration order;
//! - `request_head/*`: what the data plane does per request between parsing and sending: load
//!   the table, look the route up, load the route's snapshot, and build the upstream head
//!   (`request::rewrite::upstream_head`: hop-by-hop stripping, the caller's `Authorization` replaced by
//!   the snapshot's, `Via`, upstream URI).
//!
//! Run: `cargo bench --bench hot_path -- --warm-up-time 1 --measurement-time 3` (benches/MICRO.md).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Request};

use popgate::certs::binding::BindingCert;
use popgate::config::canonical_path;
use popgate::dataplane::request::rewrite::upstream_head;
use popgate::dataplane::{DataplaneTable, UpstreamSettings};
use popgate::identity::static_token;
use popgate::identity::token::TokenType;
use popgate::route::slot::{RouteSlot, Snapshot};
use popgate::route::table::{RouteSpec, RouteTable};

/// Table sizes the issue asks for.
const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// Route `i` of a table: a quarter each of exact hosts, exact hosts with a path prefix,
/// `*.suffix` wildcards and host-less path-prefix routes (which need an explicit upstream).
fn spec(i: usize) -> RouteSpec {
    let (host, path_prefix, upstream) = match i % 4 {
        0 => (Some(format!("svc{i}.example.com")), None, None),
        1 => (
            Some(format!("api{i}.example.com")),
            Some(format!("/v{}/", i % 3)),
            None,
        ),
        2 => (Some(format!("*.tenant{i}.example.net")), None, None),
        _ => (
            None,
            Some(format!("/legacy{i}/")),
            Some(format!("https://backend{i}.example.org/base")),
        ),
    };
    RouteSpec {
        name: format!("r{i}"),
        host: host.map(valid),
        path_prefix,
        strip_prefix: i % 4 == 3,
        upstream: upstream.map(valid),
    }
}

/// A validated host pattern or upstream from `text`, which the bench writes correctly.
fn valid<T: std::str::FromStr<Err = String>>(text: String) -> T {
    text.parse()
        .unwrap_or_else(|e| panic!("bench routes are valid: {e}"))
}

/// The request (host, path) that reaches route `i`.
fn request_for(i: usize) -> (String, String) {
    match i % 4 {
        0 => (format!("svc{i}.example.com"), "/v1.0/me".into()),
        1 => (format!("api{i}.example.com"), format!("/v{}/items", i % 3)),
        2 => (format!("a.b.tenant{i}.example.net"), "/v1.0/me".into()),
        _ => ("legacy.internal".into(), format!("/legacy{i}/v1.0/me?x=1")),
    }
}

fn table<R>(n: usize, payload: impl Fn(&RouteSpec) -> R) -> RouteTable<R> {
    let routes = (0..n)
        .map(|i| {
            let s = spec(i);
            let p = payload(&s);
            (s, p)
        })
        .collect();
    RouteTable::new(routes)
}

fn route_lookup(c: &mut Criterion) {
    for n in SIZES {
        let t = table(n, |_| ());
        let mut group = c.benchmark_group(format!("route_lookup/{n}"));
        let last_wildcard = (0..n).rev().find(|i| i % 4 == 2).unwrap_or(2);
        let cases = [
            ("hit_first", request_for(0)),
            ("hit_wildcard", request_for(last_wildcard)),
            ("hit_last", request_for(n - 1)),
            ("miss", ("nothing.example.com".into(), "/nowhere".into())),
        ];
        for (name, (host, path)) in cases {
            let expect_hit = name != "miss";
            assert_eq!(t.lookup(Some(&host), 80, &path).is_some(), expect_hit);
            group.bench_function(name, |b| {
                b.iter(|| {
                    let found = t.lookup(black_box(Some(&host)), 80, black_box(&path));
                    found.map(|m| m.upstream_uri())
                })
            });
        }
        group.finish();
    }
}

/// A certificate and an `mtls_pop` token bound to it, as the static identity loads them.
fn snapshot(dir: &Path) -> Snapshot {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let binding = BindingCert::from_der(
        vec![cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .expect("binding");
    let exp = (SystemTime::now() + Duration::from_secs(24 * 3600))
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({ "exp": exp, "cnf": { "x5t#S256": binding.x5t_s256() } });
    let jwt = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        // A realistic signature length (RS256: 256 bytes), not verified by anyone here.
        URL_SAFE_NO_PAD.encode([7u8; 256]),
    );
    let path = dir.join("token.jwt");
    std::fs::write(&path, jwt).expect("token file");
    let token = static_token::load(&path, Some(binding), TokenType::MtlsPop).expect("token");
    Snapshot::build(&token, &UpstreamSettings::default(), 1).expect("snapshot")
}

/// A legacy app's request as popgate receives it (absolute form, as an `HTTP_PROXY` client).
fn caller_request(host: &str, path: &str) -> http::request::Parts {
    let request = Request::get(format!("http://{host}{path}"))
        .header("host", host)
        .header("user-agent", "legacy-app/4.2 (+https://example.com)")
        .header("accept", "application/json")
        .header("accept-encoding", "gzip, deflate")
        .header("authorization", "Basic bGVnYWN5OmFwcA==")
        .header("proxy-connection", "keep-alive")
        .header("connection", "keep-alive")
        .header("x-request-id", "8b1f7f1e-3c0e-4b8e-9b5a-0c1d2e3f4a5b")
        .body(())
        .expect("request");
    request.into_parts().0
}

fn request_head(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let snap = Arc::new(snapshot(dir.path()));
    let mut group = c.benchmark_group("request_head");
    for n in SIZES {
        let t: DataplaneTable = table(n, |s| {
            Arc::new(RouteSlot::with_snapshot(s.name.as_str(), clone_of(&snap)))
        });
        let table = Arc::new(ArcSwap::from_pointee(t));
        let (host, path) = request_for(n - 1);
        // Everything `Forwarder::forward` does between parsing and sending, on the success path.
        group.bench_function(format!("lookup_load_rewrite/{n}"), |b| {
            b.iter_batched(
                || caller_request(&host, &path),
                |mut parts| {
                    let (slot, uri) = {
                        let guard = table.load();
                        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                        let pq = canonical_path::canonical_target(pq).expect("canonical");
                        let found = guard.lookup(Some(&host), 80, &pq).expect("route");
                        let uri = found.upstream_uri().expect("uri");
                        assert!(canonical_path::is_canonical(uri.path()));
                        (Arc::clone(found.route.payload()), uri)
                    };
                    let admitted = slot.policy().max_body_bytes;
                    let snapshot = slot.snapshot.load_full().expect("snapshot");
                    assert!(snapshot.expires_at > SystemTime::now());
                    upstream_head(&mut parts, &snapshot.authorization, uri, false);
                    (parts, admitted)
                },
                BatchSize::SmallInput,
            )
        });
    }
    // The head rewrite alone (no lookup, no loads).
    let authorization: HeaderValue = snap.authorization.clone();
    let uri: http::Uri = "https://svc0.example.com/v1.0/me".parse().expect("uri");
    group.bench_function("rewrite_only", |b| {
        b.iter_batched(
            || (caller_request("svc0.example.com", "/v1.0/me"), uri.clone()),
            |(mut parts, uri)| {
                upstream_head(&mut parts, &authorization, uri, false);
                parts
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// A snapshot sharing `snap`'s header and client (building one client per route at 10k routes
/// would cost seconds and change nothing measured).
fn clone_of(snap: &Snapshot) -> Snapshot {
    Snapshot {
        authorization: snap.authorization.clone(),
        x5t_s256: snap.x5t_s256.clone(),
        expires_at: snap.expires_at,
        generation: snap.generation,
        client: snap.client.clone(),
    }
}

criterion_group!(benches, route_lookup, request_head);
criterion_main!(benches);
