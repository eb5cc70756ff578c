//! Upstream (resource) faults and certificate rotation under load: connection resets, slow
//! answers within and beyond the route's request timeout, and a certificate app whose files are
//! swapped while callers keep sending. Each test prints its row of the table in
//! docs/reliability.md and asserts the invariants (see `faults_support`).
//!
//! Reproduce: `cargo test --test faults_upstream -- --nocapture --test-threads=1`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::kit::scenario::*;
use popgate_authority::{Endpoint, Fault};

/// Resets injected into one load phase of `CLIENTS × PER_CLIENT` requests.
const RESETS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_resets() {
    let s = Scenario::start(authority().await, RouteKind::CertAppPop, "").await;
    s.wait_serving().await;
    s.authority
        .faults()
        .push(Endpoint::Resource, Fault::Drop, RESETS);
    let load = s.load("/resets").await;
    // A reset before any answer is popgate's 502 upstream_unreachable; nothing else may fail.
    load.assert_only("resets", &[ECHO, (502, "upstream_unreachable")]);
    let dropped = s
        .authority
        .observations()
        .log()
        .iter()
        .filter(|r| r.endpoint == Endpoint::Resource && r.outcome == "dropped")
        .count();
    assert_eq!(dropped, RESETS, "every queued reset was hit");
    s.report(
        &format!("upstream resets (Drop ×{RESETS} on the resource)"),
        &load,
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_within_timeout() {
    let s = Scenario::start(authority().await, RouteKind::CertAppPop, "").await;
    s.wait_serving().await;
    let load = s.load("/slow?delay_ms=200").await;
    load.assert_only("slow upstream", &[ECHO]);
    s.report("upstream slow (delay_ms=200, timeout 60 s)", &load);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_beyond_request_timeout() {
    let s = Scenario::start(
        authority().await,
        RouteKind::CertAppPop,
        "timeouts: { request: 1s }",
    )
    .await;
    s.wait_serving().await;
    let load = s.load("/slower?delay_ms=1500").await;
    load.assert_only("upstream beyond timeout", &[(504, "upstream_timeout")]);
    s.report(
        "upstream slower than the request timeout (delay_ms=1500, timeout 1 s)",
        &load,
    );
    s.shutdown().await;
}

/// Most requests one caller sends while waiting for the rotation to be published.
const ROTATION_MAX_PER_CLIENT: usize = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load() {
    let s = Scenario::start(authority().await, RouteKind::CertAppPop, "").await;
    s.wait_serving().await;
    let before = s.load("/before").await;
    before.assert_only("before rotation", &[ECHO]);
    let old_certs: Vec<String> = before.presented.keys().cloned().collect();
    assert_eq!(old_certs.len(), 1, "one certificate before rotation");
    let generation = snapshot_generation(&s);

    // A renewed credential for the same app, registered next to the old one (rotation overlap),
    // then written over the watched files while callers keep sending.
    let next = s
        .authority
        .pki()
        .issue_app_credential("faults-app-rotated")
        .expect("rotated credential");
    s.authority
        .directory()
        .add_certificate(&s.client_id, next.cert_der.as_ref())
        .expect("register rotated certificate");
    let rotated = Arc::new(AtomicBool::new(false));
    let during_load = {
        let proxy = s.proxy();
        let rotated = Arc::clone(&rotated);
        tokio::spawn(async move {
            let mut total = Tally::default();
            // Bounded: at most ROTATION_MAX_PER_CLIENT rounds of CLIENTS requests, and the
            // phase cap inside each round; stops as soon as the new snapshot is published.
            for _ in 0..ROTATION_MAX_PER_CLIENT {
                if rotated.load(Ordering::SeqCst) {
                    break;
                }
                let round = load(proxy, "/during", CLIENTS, 1).await;
                total = Tally::sum(&[&total, &round]);
            }
            total
        })
    };
    write_credential(&s.dir(), &next);
    let published = s
        .slot()
        .wait_until(STATE_CAP, |slot| {
            slot.snapshot
                .load()
                .as_ref()
                .is_some_and(|snap| snap.generation > generation)
        })
        .await;
    rotated.store(true, Ordering::SeqCst);
    let during = during_load.await.expect("load during rotation");
    assert!(
        published,
        "the rotated certificate's snapshot was never published"
    );
    during.assert_only("during rotation", &[ECHO]);

    let after = s.load("/after").await;
    after.assert_only("after rotation", &[ECHO]);
    assert_eq!(
        after.presented.keys().cloned().collect::<Vec<_>>(),
        vec![next.x5t_s256.clone()],
        "after rotation only the new certificate is presented"
    );
    for x5t in during.presented.keys() {
        assert!(
            *x5t == next.x5t_s256 || old_certs.contains(x5t),
            "unknown certificate presented during rotation"
        );
    }
    s.report(
        "certificate rotation (cert app files swapped under load)",
        &Tally::sum(&[&before, &during, &after]),
    );
    println!(
        "  phases: before {} ok; during {} ok / {} sent (old cert {}, new cert {}); after {} ok (new cert only)",
        before.ok,
        during.ok,
        during.sent,
        during.presented.get(&old_certs[0]).copied().unwrap_or(0),
        during.presented.get(&next.x5t_s256).copied().unwrap_or(0),
        after.ok,
    );
    s.shutdown().await;
}

fn snapshot_generation(s: &Scenario) -> u64 {
    s.slot()
        .snapshot
        .load()
        .as_ref()
        .map(|snap| snap.generation)
        .expect("a published snapshot")
}
