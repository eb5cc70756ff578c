//! Certificate rotation under concurrent load: the credential's binding certificate changes (as an
//! IMDS re-mint or a rotated certificate file would), the driver builds a new client for the new
//! certificate and publishes a snapshot with the token bound to it, and no request fails. The
//! resource refuses any request presenting certificate A with a token bound to B, so zero refusals
//! proves the pairing was never mixed.
//!
//! The credential here is a test source of tokens behind the `Credential` seam (the static
//! identity's certificate cannot change without a config reload); the driver, snapshots, data plane
//! and resource are the real ones.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::kit::signed_tokens::*;
use popgate::engine::cache::CachedToken;
use popgate::engine::credential::{BoxFuture, Credential, CredentialLabels, EngineError};
use popgate::identity::token::{AccessToken, Token, TokenType};
use popgate::route::status::RouteStatus;
use tokio::sync::watch;

/// Concurrent callers during the swap.
const WORKERS: usize = 8;
/// Each caller sends at most this many requests.
const MAX_PER_WORKER: usize = 150;
/// Requests each caller still sends after it has seen the new certificate.
const AFTER_SWAP: usize = 10;
/// Bound on the whole load phase.
const LOAD_BOUND: Duration = Duration::from_secs(120);

/// Serves one token at a time; `rotate` swaps certificate and token and signals the change.
struct Rotating {
    labels: CredentialLabels,
    current: Mutex<CachedToken>,
    changes: watch::Sender<u64>,
}

impl Rotating {
    fn new(token: Token) -> Self {
        Self {
            labels: CredentialLabels {
                identity: "rotating".into(),
                identity_kind: "managed_identity",
                flow: "vanilla",
                token_type: TokenType::MtlsPop,
                leg1: None,
            },
            current: Mutex::new(CachedToken {
                token,
                acquired_at: SystemTime::now(),
                generation: 1,
            }),
            changes: watch::channel(0).0,
        }
    }

    fn rotate(&self, token: Token) {
        {
            let mut current = self.current.lock().unwrap();
            let generation = current.generation + 1;
            *current = CachedToken {
                token,
                acquired_at: SystemTime::now(),
                generation,
            };
        }
        self.changes.send_modify(|n| *n += 1);
    }

    fn cached(&self) -> CachedToken {
        self.current.lock().unwrap().clone()
    }
}

impl Credential for Rotating {
    fn labels(&self) -> &CredentialLabels {
        &self.labels
    }
    fn get(&self) -> BoxFuture<'_, Result<CachedToken, EngineError>> {
        Box::pin(async move { Ok(self.cached()) })
    }
    fn refresh(&self, _seen: u64) -> BoxFuture<'_, Result<CachedToken, EngineError>> {
        Box::pin(async move { Ok(self.cached()) })
    }
    fn invalidate(&self, _generation: u64) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn binding_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

fn pop_token(jwt: String, binding: popgate::certs::binding::BindingCert) -> Token {
    Token {
        access_token: AccessToken::new(TokenType::MtlsPop, jwt),
        token_type: TokenType::MtlsPop,
        expires_at: SystemTime::now() + Duration::from_secs(3600),
        refresh_in: None,
        binding: Some(binding),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_concurrent_load_fails_no_request_and_never_mixes_cert_and_token() {
    let env = Env::start().await;
    let (_, _, cert_b) = issue(&env.authority, env.dir.path(), "rotated");
    let x5t_a = env.binding.x5t_s256().to_string();
    let x5t_b = cert_b.x5t_s256().to_string();
    assert_ne!(x5t_a, x5t_b);
    let credential = Arc::new(Rotating::new(pop_token(
        env.token(&env.binding, Duration::from_secs(3600), "cert-a"),
        env.binding.clone(),
    )));

    let GraphDriver { slot, task: driver } = env.spawn_graph_driver(credential.clone(), "rotating");
    let ready = slot
        .wait_until(Duration::from_secs(30), |s| s.status().is_serving())
        .await;
    assert!(ready, "{:?}", slot.status());
    let (proxy, addr) = serve_graph(slot.clone()).await;

    let failures = Arc::new(AtomicUsize::new(0));
    let successes = Arc::new(AtomicUsize::new(0));
    let on_b = Arc::new(AtomicUsize::new(0));
    let rotated = Arc::new(AtomicBool::new(false));
    let (warm_tx, mut warm_rx) = watch::channel(0usize);
    let warm_tx = Arc::new(warm_tx);
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (failures, successes, on_b, rotated, warm_tx) = (
            failures.clone(),
            successes.clone(),
            on_b.clone(),
            rotated.clone(),
            warm_tx.clone(),
        );
        let (x5t_a, x5t_b) = (x5t_a.clone(), x5t_b.clone());
        workers.push(tokio::spawn(async move {
            let mut after_swap = 0;
            for _ in 0..MAX_PER_WORKER {
                let answer = get(addr, "/v1.0/me").await;
                if answer.status != 200 {
                    failures.fetch_add(1, Ordering::SeqCst);
                    eprintln!("failed: {} {}", answer.status, answer.body);
                    continue;
                }
                let echo = answer.json();
                let presented = echo["presented_x5t"].as_str().unwrap_or("").to_string();
                assert_eq!(echo["cnf_x5t"].as_str(), Some(presented.as_str()), "{echo}");
                assert!(presented == x5t_a || presented == x5t_b, "{echo}");
                successes.fetch_add(1, Ordering::SeqCst);
                warm_tx.send_modify(|n| *n += 1);
                if presented == x5t_b {
                    on_b.fetch_add(1, Ordering::SeqCst);
                }
                if rotated.load(Ordering::SeqCst) {
                    after_swap += 1;
                    if presented == x5t_b && after_swap >= AFTER_SWAP {
                        break;
                    }
                }
            }
        }));
    }
    // Rotate once the load is running on certificate A.
    // `wait_for` hands back a borrow of the channel; drop it at once so workers can keep counting.
    let warmed = tokio::time::timeout(LOAD_BOUND, warm_rx.wait_for(|n| *n >= WORKERS * 3))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(warmed, "load never warmed up");
    credential.rotate(pop_token(
        env.token(&cert_b, Duration::from_secs(3600), "cert-b"),
        cert_b.clone(),
    ));
    rotated.store(true, Ordering::SeqCst);
    for worker in workers {
        tokio::time::timeout(LOAD_BOUND, worker)
            .await
            .expect("load phase exceeded its bound")
            .unwrap();
    }

    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "requests failed during rotation"
    );
    assert!(
        on_b.load(Ordering::SeqCst) >= WORKERS,
        "the new certificate was not used"
    );
    let (total, refused) = env.resource_counts();
    assert_eq!(
        refused, 0,
        "a request mixed a certificate with another's token"
    );
    assert_eq!(total, successes.load(Ordering::SeqCst));
    let published = slot.snapshot.load_full().unwrap();
    assert_eq!(published.x5t_s256.as_deref(), Some(x5t_b.as_str()));
    // The status is set just after the snapshot is published: wait for it, bounded.
    let ready = slot
        .wait_until(LOAD_BOUND, |s| {
            matches!(&*s.status(), RouteStatus::Ready { generation: 2, .. })
        })
        .await;
    assert!(ready, "{:?}", slot.status());

    proxy.shutdown().await;
    slot.demand_stop();
    driver.await.unwrap();
}
