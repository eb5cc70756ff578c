//! A credential whose token endpoint refuses: the route answers 503 naming route, identity, the
//! AADSTS code, correlation id and when it retries; the driver honours the peer's Retry-After,
//! keeps retrying after every failure, and serves as soon as an attempt succeeds. Also: errors a
//! user can hit when starting popgate.
//!
//! The credential is a test source behind the `Credential` seam that fails a set number of times
//! (the real token sources are built elsewhere); driver, data plane and resource are the real ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use crate::kit::signed_tokens::*;
use popgate::app::{App, RunError};
use popgate::certs::binding::BindingCert;
use popgate::engine::cache::CachedToken;
use popgate::engine::credential::{BoxFuture, Credential, CredentialLabels, EngineError};
use popgate::identity::token::{AccessToken, Token, TokenType};
use popgate::route::status::RouteStatus;
use tokio::sync::watch;

const STATE_BOUND: Duration = Duration::from_secs(60);
/// How long the first refusal blocks identical requests (a Retry-After).
const BLOCKED_FOR: Duration = Duration::from_secs(2);

/// Fails its first `fail` attempts like ESTS refusing a client, then serves `token`.
struct Flaky {
    labels: CredentialLabels,
    fail: u32,
    attempts: AtomicU32,
    token: String,
    binding: BindingCert,
    changes: watch::Sender<u64>,
}

impl Flaky {
    fn attempt(&self) -> Result<CachedToken, EngineError> {
        let n = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= self.fail {
            return Err(EngineError {
                identity: "leg1-mi".into(),
                message: "token endpoint westus3.mtlsauth.microsoft.com refused: invalid_client AADSTS7000218 (HTTP 400, correlation id 6f2d0c1e)".into(),
                aadsts: Some(7_000_218),
                correlation_id: Some("6f2d0c1e".into()),
                blocked_until: (n == 1).then(|| SystemTime::now() + BLOCKED_FOR),
                permanent: false,
            });
        }
        Ok(CachedToken {
            token: Token {
                access_token: AccessToken::new(TokenType::MtlsPop, self.token.clone()),
                token_type: TokenType::MtlsPop,
                expires_at: SystemTime::now() + Duration::from_secs(3600),
                refresh_in: None,
                binding: Some(self.binding.clone()),
            },
            acquired_at: SystemTime::now(),
            generation: 1,
        })
    }
}

impl Credential for Flaky {
    fn labels(&self) -> &CredentialLabels {
        &self.labels
    }
    fn get(&self) -> BoxFuture<'_, Result<CachedToken, EngineError>> {
        Box::pin(async move { self.attempt() })
    }
    fn refresh(&self, _seen: u64) -> BoxFuture<'_, Result<CachedToken, EngineError>> {
        Box::pin(async move { self.attempt() })
    }
    fn invalidate(&self, _generation: u64) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn binding_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_give_503_with_the_aadsts_code_and_the_driver_retries_until_it_serves() {
    let env = Env::start().await;
    let credential = Arc::new(Flaky {
        labels: CredentialLabels {
            identity: "exchange-app".into(),
            identity_kind: "confidential_client",
            flow: "fic",
            token_type: TokenType::MtlsPop,
            leg1: Some("leg1-mi".into()),
        },
        fail: 2,
        attempts: AtomicU32::new(0),
        token: env.token(&env.binding, Duration::from_secs(3600), "recovered"),
        binding: env.binding.clone(),
        changes: watch::channel(0).0,
    });
    let GraphDriver { slot, task: driver } =
        env.spawn_graph_driver(credential.clone(), "exchange-app");
    let (proxy, addr) = serve_graph(slot.clone()).await;

    let failed = slot
        .wait_until(STATE_BOUND, |s| {
            matches!(&*s.status(), RouteStatus::Failed { .. })
        })
        .await;
    assert!(failed, "{:?}", slot.status());
    let status = slot.status();
    // The peer's Retry-After (2 s) holds the next attempt back beyond the first backoff step
    // (at most 1 s after the failure).
    let RouteStatus::Failed {
        since,
        next_attempt,
        ..
    } = &*status
    else {
        unreachable!()
    };
    assert!(
        next_attempt.duration_since(*since).unwrap() > Duration::from_secs(1),
        "{status:?}"
    );

    let answer = get(addr, "/v1.0/me").await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["error"], "no_token");
    assert_eq!(body["route"], "graph");
    assert_eq!(body["identity"], "exchange-app");
    assert_eq!(body["failed_identity"], "leg1-mi");
    assert_eq!(body["aadsts"], 7_000_218);
    assert_eq!(body["correlation_id"], "6f2d0c1e");
    assert!(body["cause"].as_str().unwrap().contains("AADSTS7000218"));
    assert!(body["retry_after"].as_u64().is_some(), "{body}");
    assert_eq!(env.resource_counts().0, 0, "forwarded without a token");

    // Failures do not end the loop: the third attempt succeeds and the route serves.
    let ready = slot
        .wait_until(STATE_BOUND, |s| s.status().is_serving())
        .await;
    assert!(ready, "{:?}", slot.status());
    assert_eq!(credential.attempts.load(Ordering::SeqCst), 3);
    assert_eq!(check_echo(&get(addr, "/v1.0/me").await), "recovered");

    proxy.shutdown().await;
    slot.demand_stop();
    driver.await.unwrap();
}

#[tokio::test]
async fn a_listener_address_in_use_is_named_at_start() {
    let env = Env::start().await;
    env.write_token(&env.token(&env.binding, Duration::from_secs(3600), "x"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let path = env.config("");
    let yaml = std::fs::read_to_string(&path)
        .unwrap()
        .replace("127.0.0.1:0", &addr.to_string());
    std::fs::write(&path, yaml).unwrap();
    let err = App::start(env.load(&path)).await.unwrap_err();
    assert!(matches!(err, RunError::Start(_)), "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

/// Never answers: an acquisition that hangs (a token endpoint that accepted and went silent).
struct Hung {
    labels: CredentialLabels,
    asked: AtomicU32,
    changes: watch::Sender<u64>,
}

impl Credential for Hung {
    fn labels(&self) -> &CredentialLabels {
        &self.labels
    }
    fn get(&self) -> BoxFuture<'_, Result<CachedToken, EngineError>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::pending())
    }
    fn refresh(&self, _seen: u64) -> BoxFuture<'_, Result<CachedToken, EngineError>> {
        self.get()
    }
    fn invalidate(&self, _generation: u64) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn binding_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// A retired route's driver stops even while its acquisition hangs (a reload must not keep
/// drivers of removed routes, and their tokens, alive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_route_stops_its_driver_during_a_hung_acquisition() {
    let env = Env::start().await;
    let credential = Arc::new(Hung {
        labels: CredentialLabels {
            identity: "app".into(),
            identity_kind: "confidential_client",
            flow: "vanilla",
            token_type: TokenType::MtlsPop,
            leg1: None,
        },
        asked: AtomicU32::new(0),
        changes: watch::channel(0).0,
    });
    let GraphDriver { slot, task } = env.spawn_graph_driver(credential.clone(), "app");
    let asked = async {
        while credential.asked.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(STATE_BOUND, asked)
        .await
        .expect("the driver started acquiring");
    assert!(!task.is_finished());
    slot.demand_stop();
    tokio::time::timeout(STATE_BOUND, task)
        .await
        .expect("the driver stopped")
        .unwrap();
}
