//! The HTTP/1.1 upstream pool slot is held until the response body has passed, not only until
//! its head: an h1 connection is busy until then, so `upstream_pool.max_connections_per_host` is
//! a true bound and callers beyond it wait in the pool's timed line.
//!
//! The attack (here just a burst): an upstream that sends its head at once and its body slowly,
//! and more callers than the cap. Before, the slot was freed at the head, so callers beyond the
//! cap were admitted while every connection still streamed; they waited for a dial in the
//! connector instead, and after its connect timeout (shorter than the body) got 503 although the
//! line allowed them 30 s.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use popgate::config::UpstreamPool;
use popgate::net::client::UpstreamSettings;

use crate::kit::dataplane::*;
use crate::kit::raw::{GRAPH, graph_proxy, hardened};

/// Connections the upstream may see at once.
const CAP: usize = 2;
/// Callers, all at once: three times the cap.
const CALLERS: usize = 6;
/// How long each response body takes after its head.
const BODY_MS: u64 = 1_500;
/// Shorter than the body: a caller left to wait for a dial fails after this.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_slot_is_held_until_the_response_body_ends() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("pool-slot-ca");
    let upstream = TestUpstream::start(&pki, &pki, false).await;
    let capped = |s: &mut UpstreamSettings| {
        s.connect_timeout = CONNECT_TIMEOUT;
        s.pool = UpstreamPool {
            max_connections_per_host: CAP,
            max_waiting: CALLERS,
            wait_timeout: Duration::from_secs(30),
        };
    };
    let proxy = graph_proxy(
        &pki,
        dir.path(),
        upstream.addr,
        "pool-slot",
        capped,
        hardened(|_| {}),
    )
    .await;

    let started = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let addr = proxy.addr;
            tokio::spawn(async move {
                bounded(async {
                    let response =
                        h1_send(addr, absolute_get(GRAPH, &format!("/slow-body/{BODY_MS}"))).await;
                    let status = response.status().as_u16();
                    (status, text(response).await)
                })
                .await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for caller in callers {
        statuses.push(caller.await.unwrap());
    }
    let took = started.elapsed();
    let max_open = upstream.state.max_open.load(Ordering::SeqCst);
    println!(
        "{CALLERS} callers, cap {CAP}, body {BODY_MS} ms: {statuses:?} in {took:?}; upstream saw at most {max_open} connections"
    );
    for (status, body) in &statuses {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body, "slow body");
    }
    assert!(
        max_open <= CAP,
        "the upstream saw {max_open} connections at once"
    );
    // Served in turns of CAP: at least CALLERS / CAP bodies one after another.
    let turns = (CALLERS / CAP) as u32;
    assert!(took >= Duration::from_millis(BODY_MS) * turns, "{took:?}");
    assert_eq!(upstream.requests(), CALLERS);
}
