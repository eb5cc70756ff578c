//! `401 invalid_token` from the upstream: the token is dropped, a new one is fetched and a request
//! whose body was at most 64 KiB is replayed once; larger bodies stream and the 401 goes back.
//! The "refused" token is signed with a key the resource does not trust, so the resource itself
//! answers `401` with `WWW-Authenticate: mtls_pop error="invalid_token"`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::kit::signed_tokens::*;
use bytes::Bytes;
use http_body::{Body, Frame};
use popgate::app::App;
use popgate::route::status::RouteStatus;
use popgate_authority::{AuthorityConfig, SigningKeys};

const STATE_BOUND: Duration = Duration::from_secs(60);

/// A body of several chunks and no declared length (sent chunked).
struct Chunks(VecDeque<Bytes>);

impl Chunks {
    fn new(chunk: usize, count: usize) -> Self {
        Chunks(
            (0..count)
                .map(|i| Bytes::from(vec![b'a' + (i % 26) as u8; chunk]))
                .collect(),
        )
    }

    fn sha256(&self) -> String {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for c in &self.0 {
            ctx.update(c);
        }
        ctx.finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(|c| Ok(Frame::data(c))))
    }
}

/// The local authority, its resource offering `h2` and `http/1.1` by ALPN, or `http/1.1` only:
/// popgate's HTTP/1.1 codec keeps a bodiless request's own head for the replay, where h2 and a
/// request with a body keep a copy.
async fn env_for(http1_only: bool) -> Env {
    Env::start_with(AuthorityConfig {
        resource_http1_only: http1_only,
        ..Default::default()
    })
    .await
}

/// The `http_version` the resource's echo names for each kind of resource.
fn version_seen(http1_only: bool) -> &'static str {
    if http1_only { "HTTP/1.1" } else { "HTTP/2.0" }
}

/// Popgate, after its initial round, serving a token signed by keys the authority does not
/// know, so the resource refuses it.
async fn serving_a_refused_token(env: &Env) -> App {
    let untrusted = SigningKeys::generate().unwrap();
    env.write_token(&sign(
        &untrusted,
        &env.binding,
        Duration::from_secs(3600),
        "untrusted",
    ));
    let app = App::start(env.load(&env.config(""))).await.unwrap();
    app.initial_round(STATE_BOUND).await;
    app
}

/// Popgate serving a token the resource refuses; the token file already holds a good one.
async fn refused_then_good(env: &Env) -> App {
    let app = serving_a_refused_token(env).await;
    assert!(matches!(
        &*app.route("graph").unwrap().status(),
        RouteStatus::Ready { generation: 1, .. }
    ));
    env.write_token(&env.token(&env.binding, Duration::from_secs(3600), "good"));
    app
}

/// The replayed request as the resource echoed it: the caller's target and the fields popgate
/// adds, each once (a replay rebuilt from the head as sent must not carry the first attempt's
/// `Host` or `Via` twice).
fn check_replayed_head(answer: &Answer, path: &str, query: Option<&str>, http1_only: bool) {
    let echo = answer.json();
    assert_eq!(echo["path"], path, "{echo}");
    assert_eq!(echo["query"].as_str(), query, "{echo}");
    assert_eq!(echo["http_version"], version_seen(http1_only), "{echo}");
    let headers = &echo["headers"];
    for once in ["host", "via", "x-request-id"] {
        let value = headers[once].as_str().unwrap_or_default();
        assert!(!value.contains(", "), "{once} sent more than once: {echo}");
    }
    if http1_only {
        assert_eq!(headers["host"], GRAPH, "{echo}");
    }
}

async fn a_refused_get_is_replayed_once(http1_only: bool) {
    let env = env_for(http1_only).await;
    let app = refused_then_good(&env).await;
    let answer = get(app.local_addrs()[0], "/v1.0/me?select=id").await;
    assert_eq!(check_echo(&answer), "good");
    check_replayed_head(&answer, "/v1.0/me", Some("select=id"), http1_only);
    // The resource saw the refused request and the replay; the caller saw only the 200.
    assert_eq!(env.resource_counts(), (2, 1));
    // The engine publishes the snapshot (which lets the replay go) before it sets the status.
    let slot = app.route("graph").unwrap();
    let ready = slot
        .wait_until(STATE_BOUND, |s| {
            matches!(&*s.status(), RouteStatus::Ready { generation: 2, .. })
        })
        .await;
    assert!(ready, "{:?}", slot.status());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_get_is_replayed_once_with_a_new_token() {
    a_refused_get_is_replayed_once(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_get_is_replayed_once_with_a_new_token_over_http1() {
    a_refused_get_is_replayed_once(true).await;
}

async fn a_small_chunked_body_is_replayed_intact(http1_only: bool) {
    let env = env_for(http1_only).await;
    let app = refused_then_good(&env).await;
    let body = Chunks::new(4096, 8); // 32 KiB, no declared length
    let sha = body.sha256();
    let answer = send(app.local_addrs()[0], "POST", GRAPH, "/v1.0/upload", body).await;
    assert_eq!(check_echo(&answer), "good");
    check_replayed_head(&answer, "/v1.0/upload", None, http1_only);
    let echo = answer.json();
    assert_eq!(echo["request_body_bytes"], 32 * 1024);
    assert_eq!(echo["request_body_sha256"], sha.as_str());
    assert_eq!(env.resource_counts(), (2, 1));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_chunked_body_is_read_ahead_and_replayed_intact() {
    a_small_chunked_body_is_replayed_intact(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_chunked_body_is_read_ahead_and_replayed_intact_over_http1() {
    a_small_chunked_body_is_replayed_intact(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_64_kib_is_not_replayed_but_the_token_is_still_dropped() {
    let env = Env::start().await;
    let app = serving_a_refused_token(&env).await;
    let addr = app.local_addrs()[0];

    let big = http_body_util::Full::new(Bytes::from(vec![b'x'; 100 * 1024]));
    let answer = send(addr, "POST", GRAPH, "/v1.0/upload", big).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    let challenge = answer.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert_eq!(
        env.resource_counts(),
        (1, 1),
        "a large body must not be replayed"
    );

    // The refusal still reached the driver: the token was dropped, and the file still holds it,
    // so the route now fails naming why, instead of sending a token known to be refused.
    let slot = app.route("graph").unwrap();
    let failed = slot
        .wait_until(STATE_BOUND, |s| {
            matches!(&*s.status(), RouteStatus::Failed { .. })
        })
        .await;
    assert!(failed, "{:?}", slot.status());
    let answer = get(addr, "/v1.0/me").await;
    assert_eq!(answer.status, 503);
    let cause = answer.json()["cause"].as_str().unwrap().to_string();
    assert!(cause.contains("refused by the resource"), "{cause}");
    assert_eq!(env.resource_counts(), (1, 1));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_64_kib_streams_through_intact() {
    let env = Env::start().await;
    env.write_token(&env.token(&env.binding, Duration::from_secs(3600), "good"));
    let app = App::start(env.load(&env.config(""))).await.unwrap();
    app.initial_round(STATE_BOUND).await;
    let body = Chunks::new(16 * 1024, 20); // 320 KiB: read ahead past the limit, then streamed
    let sha = body.sha256();
    let answer = send(app.local_addrs()[0], "PUT", GRAPH, "/v1.0/big", body).await;
    assert_eq!(check_echo(&answer), "good");
    let echo = answer.json();
    assert_eq!(echo["request_body_bytes"], 320 * 1024);
    assert_eq!(echo["request_body_sha256"], sha.as_str());
    assert_eq!(env.resource_counts(), (1, 0));
    app.shutdown().await;
}
