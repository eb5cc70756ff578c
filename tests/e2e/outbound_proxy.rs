//! Behind a corporate proxy (`network.proxy`): popgate in-process against the local authority,
//! with a real CONNECT proxy (the kit's) between them. Token calls and upstream calls tunnel
//! through it, TLS and mTLS end to end (the resource sees the binding certificate, the PoP `cnf`
//! matches it); `no_proxy` hosts and IMDS are reached directly; a proxy refusing CONNECT is a
//! clear error in the route's status and in the caller's answer; the proxy credentials appear in
//! no status, answer or log line. Only loopback addresses are used.

use std::net::SocketAddr;
use std::time::Duration;

use popgate::app::App;
use popgate::config::Config;
use popgate::route::status::RouteStatus;

use crate::kit::app::{Env, Route, check_bearer, check_pop, get};
use crate::kit::authority::{RESOURCE_HOSTS, TOKEN_HOSTS, resolve_yaml};
use crate::kit::connect_proxy::{ConnectProxy, basic};
use crate::kit::guard::LogCapture;

/// Bound on a route reaching a state.
const STATE_BOUND: Duration = Duration::from_secs(60);

const USER: &str = "corp-user";
const PASSWORD: &str = "pa55:w0rd-s3cret";

/// Every token and resource host the authority serves, as the proxy resolves them.
fn authority_map(env: &Env) -> Vec<(String, SocketAddr)> {
    let mut map: Vec<(String, SocketAddr)> = TOKEN_HOSTS
        .iter()
        .map(|h| (format!("{h}:443"), env.authority.token_addr()))
        .collect();
    map.extend(
        RESOURCE_HOSTS
            .iter()
            .map(|h| (format!("{h}:443"), env.authority.resource_addr())),
    );
    map
}

async fn proxy(env: &Env, required: Option<String>, forbidden: &[&str]) -> ConnectProxy {
    let map = authority_map(env);
    let refs: Vec<(&str, SocketAddr)> = map.iter().map(|(h, a)| (h.as_str(), *a)).collect();
    ConnectProxy::start_with(&refs, required, forbidden).await
}

/// routes.yaml with `proxy_yaml` (lines under `network:`), loaded with `env_vars` as the whole
/// environment.
fn config(env: &Env, proxy_yaml: &str, routes: &[Route], env_vars: &[(&str, &str)]) -> Config {
    config_top(env, "", proxy_yaml, routes, env_vars)
}

/// [`config`] with `top` (top-level keys, e.g. `admin:`) too.
fn config_top(
    env: &Env,
    top: &str,
    proxy_yaml: &str,
    routes: &[Route],
    env_vars: &[(&str, &str)],
) -> Config {
    let resolve = format!("{}{proxy_yaml}", resolve_yaml(&env.authority, &[], &[]));
    let routes_yaml: String = routes.iter().map(route_yaml).collect();
    let path = env.write_routes_yaml(
        top,
        &resolve,
        &env.identities("app.pem", "app.key"),
        &routes_yaml,
    );
    let vars: Vec<(String, String)> = env_vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    popgate::config::load_with_env(&path, &|name| {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn route_yaml(r: &Route) -> String {
    let mut out = format!(
        "  - name: {name}\n    match: {{ path_prefix: /{name}/ }}\n    upstream: {upstream}\n    resource: {resource}\n",
        name = r.name,
        upstream = r.upstream,
        resource = r.resource,
    );
    for line in &r.flow {
        out.push_str(&format!("    {line}\n"));
    }
    out
}

async fn failed_error(app: &App, route: &str) -> String {
    let slot = app.route(route).expect("route");
    let failed = slot
        .wait_until(STATE_BOUND, |s| {
            matches!(*s.status(), RouteStatus::Failed { .. })
        })
        .await;
    assert!(failed, "{route} never failed: {:?}", slot.status().label());
    match &*slot.status() {
        RouteStatus::Failed { error, .. } => error.to_string(),
        other => panic!("{other:?}"),
    }
}

/// The process-wide `popgate_proxy_tunnels_total{peer, outcome}` (other tests only add to it).
fn tunnels(peer: &str, outcome: &str) -> u64 {
    use prometheus::Encoder as _;
    let mut text = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&popgate::metrics::global().registry().gather(), &mut text)
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    let labels = [format!("peer=\"{peer}\""), format!("outcome=\"{outcome}\"")];
    text.lines()
        .find(|l| {
            l.starts_with("popgate_proxy_tunnels_total{") && labels.iter().all(|w| l.contains(w))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no popgate_proxy_tunnels_total{{{peer},{outcome}}} in\n{text}"))
}

fn assert_no_secret(what: &str, text: &str) {
    let encoded = basic(USER, PASSWORD);
    let encoded = encoded.trim_start_matches("Basic ");
    assert!(
        !text.contains(PASSWORD),
        "{what} shows the password: {text}"
    );
    assert!(
        !text.contains(encoded),
        "{what} shows the credentials: {text}"
    );
}

#[tokio::test]
async fn token_and_upstream_calls_tunnel_through_the_proxy_with_the_binding_certificate_end_to_end()
{
    let env = Env::start().await;
    let corp = proxy(&env, Some(basic(USER, PASSWORD)), &[]).await;
    let proxy_yaml = format!(
        "  proxy:\n    url: {}\n    no_proxy: [management.azure.com]\n    credentials_env: CORP_PROXY_AUTH\n",
        corp.url()
    );
    let routes = [
        Route::vanilla("graph", "https://graph.microsoft.com", "app", "mtls_pop"),
        Route::vanilla("mipop", "https://graph.microsoft.com", "sami", "mtls_pop"),
        Route::vanilla("arm", "https://management.azure.com", "sami", "bearer"),
    ];
    let auth = format!("{USER}:{PASSWORD}");
    let cfg = config(&env, &proxy_yaml, &routes, &[("CORP_PROXY_AUTH", &auth)]);
    assert_no_secret("the config's Debug", &format!("{cfg:?}"));
    let (upstream_ok, token_ok) = (tunnels("upstream", "ok"), tunnels("token", "ok"));
    let app = env.popgate(cfg).await;
    let addr = app.local_addrs()[0];

    // The resource saw the certificate app's own certificate, and the token is bound to it.
    let presented = check_pop(&get(addr, "/graph/v1.0/me").await, "graph");
    assert_eq!(
        presented, env.app_credential.x5t_s256,
        "the binding certificate"
    );
    // IMDS-issued binding certificate: bound and presented through the tunnel too.
    check_pop(&get(addr, "/mipop/v1.0/me").await, "mipop");
    // management.azure.com is in no_proxy: reached directly.
    check_bearer(&get(addr, "/arm/subscriptions").await, "arm");

    let tunnelled = corp.tunnelled();
    assert!(
        tunnelled.contains(&"graph.microsoft.com:443".to_string()),
        "upstream calls tunnel: {tunnelled:?}"
    );
    assert!(
        tunnelled
            .iter()
            .any(|t| t.contains("mtlsauth.microsoft.com:443")),
        "token calls tunnel: {tunnelled:?}"
    );
    assert!(
        !tunnelled
            .iter()
            .any(|t| t.starts_with("management.azure.com")),
        "no_proxy host went through the proxy: {tunnelled:?}"
    );
    let imds = env.authority.imds_addr().to_string();
    for seen in corp.seen() {
        assert!(
            !seen.target.contains(&imds) && !seen.target.starts_with("169.254."),
            "IMDS went through the proxy: {seen:?}"
        );
        assert_eq!(seen.authorization, Some(basic(USER, PASSWORD)), "{seen:?}");
        assert_eq!(seen.status, 200, "{seen:?}");
    }
    assert!(
        tunnels("upstream", "ok") > upstream_ok,
        "upstream tunnels counted"
    );
    assert!(tunnels("token", "ok") > token_ok, "token tunnels counted");
    app.shutdown().await;
}

#[tokio::test]
async fn a_proxy_refusing_connect_is_a_clear_error_without_the_credentials() {
    let (token_refused, upstream_refused) =
        (tunnels("token", "refused"), tunnels("upstream", "refused"));
    let logs = LogCapture::default();
    let _logging = logs.install();
    let env = Env::start().await;
    let corp = proxy(
        &env,
        Some(basic(USER, "r1ght-pw")),
        &["graph.microsoft.com:443"],
    )
    .await;
    let wrong = format!("http://{USER}:{}@{}", urlencode(PASSWORD), corp.addr());
    // Wrong credentials (407) for the token calls of `pop`.
    let cfg = config(
        &env,
        &format!("  proxy: {wrong}\n"),
        &[Route::vanilla(
            "pop",
            "https://graph.microsoft.com",
            "app",
            "mtls_pop",
        )],
        &[],
    );
    let app = env.popgate(cfg).await;
    let error = failed_error(&app, "pop").await;
    let shown = format!("http://***@{}", corp.addr());
    assert!(error.contains("407"), "{error}");
    assert!(error.contains(&shown), "{error}");
    assert_no_secret("the route status", &error);
    let answer = get(app.local_addrs()[0], "/pop/v1.0/me").await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(answer.body.contains("407"), "{}", answer.body);
    assert_no_secret("the caller's answer", &answer.body);
    app.shutdown().await;

    // Right credentials from credentials_env, but the proxy forbids the upstream (403): the
    // token arrives, the caller gets 502 naming the proxy's refusal.
    let cfg = config(
        &env,
        &format!(
            "  proxy:\n    url: {}\n    credentials_env: AUTH\n",
            corp.url()
        ),
        &[Route::vanilla(
            "pop2",
            "https://graph.microsoft.com",
            "app",
            "mtls_pop",
        )],
        &[("AUTH", &format!("{USER}:r1ght-pw"))],
    );
    let app = env.popgate(cfg).await;
    let answer = get(app.local_addrs()[0], "/pop2/v1.0/me").await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["error"], "upstream_unreachable", "{body}");
    let cause = body["cause"].as_str().unwrap_or_default();
    assert!(
        cause.contains(&format!(
            "proxy http://***@{} refused CONNECT graph.microsoft.com:443: 403 Forbidden",
            corp.addr()
        )),
        "{cause}"
    );
    app.shutdown().await;

    assert!(tunnels("token", "refused") > token_refused);
    assert!(tunnels("upstream", "refused") > upstream_refused);
    let seen = corp.seen();
    assert!(seen.iter().any(|s| s.status == 407), "{seen:?}");
    assert!(seen.iter().any(|s| s.status == 403), "{seen:?}");
    let text = logs.text();
    assert!(text.contains("407"), "the failure is logged: {text}");
    assert_no_secret("the log", &text);
    assert!(
        !text.contains("r1ght-pw"),
        "the log shows the password: {text}"
    );
}

/// The proxy refusing the credentials (407) on a token call will not heal by itself: the route
/// fails permanently (the 5 to 30 minute schedule, `permanent_failure` in `/readyz` and
/// `popgate_route_failure`), with an error naming the proxy (credentials redacted) and saying
/// the credentials were refused; the right password, at a reload, works at once. Neither
/// password shows in the config's Debug, the error, the caller's answer or the log.
// One thread: the log capture sees what the engine logs on this test's runtime.
#[tokio::test]
async fn wrong_proxy_credentials_are_a_permanent_failure_and_the_right_ones_work() {
    const WRONG: &str = "wr0ng-pa55-s3cret";
    /// The short schedule (1 s, 2 s, …) would have retried twice within this.
    const QUIET: Duration = Duration::from_secs(4);
    /// The long schedule's first wait is 5 minutes, jittered to no less than half of it.
    const LONG_FIRST_WAIT_AT_LEAST: u64 = 150;
    let logs = LogCapture::default();
    let _logging = logs.install();
    let env = Env::start().await;
    let corp = proxy(&env, Some(basic(USER, PASSWORD)), &[]).await;
    // 127.0.0.2: the config refuses an admin address equal to a listener's, even with port 0.
    let top = "admin:\n  address: 127.0.0.2:0\n";
    let proxy_yaml = format!(
        "  proxy:\n    url: {}\n    credentials_env: CORP_PROXY_AUTH\n",
        corp.url()
    );
    let routes = [Route::vanilla(
        "pop",
        "https://graph.microsoft.com",
        "app",
        "mtls_pop",
    )];
    let wrong = format!("{USER}:{WRONG}");
    let cfg = config_top(
        &env,
        top,
        &proxy_yaml,
        &routes,
        &[("CORP_PROXY_AUTH", &wrong)],
    );
    let debug = format!("{cfg:?}");
    assert!(!debug.contains(WRONG), "the config's Debug: {debug}");
    let mut app = env.popgate(cfg).await;
    let admin = app.admin_addr().expect("admin configured");

    let error = failed_error(&app, "pop").await;
    let shown = format!("http://***@{}", corp.addr());
    assert!(
        error.contains(&format!(
            "the outbound proxy {shown} refused the proxy credentials (407 Proxy Authentication Required)"
        )),
        "{error}"
    );
    assert!(!error.contains(WRONG) && !error.contains(USER), "{error}");
    let readyz = crate::kit::admin::admin_get(admin, "/readyz").await.json();
    let pop = &readyz["routes"]["pop"];
    assert_eq!(pop["reason"], "permanent_failure", "{readyz}");
    let next = pop["next_attempt_in_s"].as_u64().expect("next attempt");
    assert!(
        (LONG_FIRST_WAIT_AT_LEAST - 5..=300).contains(&next),
        "next attempt in {next} s: {readyz}"
    );
    let metrics = crate::kit::admin::scrape(admin).await;
    let failure = |class| {
        crate::kit::admin::sum(
            &metrics,
            "popgate_route_failure",
            &[("route", "pop"), ("class", class)],
        )
    };
    assert_eq!(failure("permanent_failure"), 1.0);
    assert_eq!(failure("transient_failure"), 0.0);
    let answer = get(app.local_addrs()[0], "/pop/v1.0/me").await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(
        answer.body.contains("refused the proxy credentials"),
        "{}",
        answer.body
    );
    assert!(!answer.body.contains(WRONG), "{}", answer.body);

    // Not retried within seconds: one refused CONNECT, and no more.
    let refused = || corp.seen().iter().filter(|s| s.status == 407).count();
    assert_eq!(refused(), 1, "{:?}", corp.seen());
    tokio::time::sleep(QUIET).await;
    assert_eq!(refused(), 1, "retried within {QUIET:?}: {:?}", corp.seen());

    // The right password, at a reload: tried at once, and it works.
    let right = format!("{USER}:{PASSWORD}");
    let cfg = config_top(
        &env,
        top,
        &proxy_yaml,
        &routes,
        &[("CORP_PROXY_AUTH", &right)],
    );
    app.reload(cfg).await.expect("reload");
    let slot = app.route("pop").expect("route");
    assert!(
        slot.wait_until(STATE_BOUND, |s| s.status().label() == "ready")
            .await,
        "never ready: {}",
        slot.status().label()
    );
    let presented = check_pop(&get(app.local_addrs()[0], "/pop/v1.0/me").await, "pop");
    assert_eq!(presented, env.app_credential.x5t_s256);
    app.shutdown().await;
    let text = logs.text();
    assert!(
        text.contains("refused the proxy credentials"),
        "the failure is logged: {text}"
    );
    assert!(!text.contains(WRONG), "the log shows the password: {text}");
    assert_no_secret("the log", &text);
}

/// `%`-escapes `:` so a password with one fits in a URL's userinfo.
fn urlencode(s: &str) -> String {
    s.replace(':', "%3A")
}
