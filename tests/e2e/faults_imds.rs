//! IMDS faults under load for a system-assigned managed identity with mTLS PoP (IMDSv2:
//! getplatformmetadata, issuecredential, then the mTLS token endpoint): 410 (IMDS updating:
//! retried 10 s later), 500 (retried at 1 s, 2 s), 500 beyond every retry, and 500 on
//! issuecredential. Callers wait for the first token; nothing is forwarded without one. Each test
//! prints its row of the table in docs/reliability.md.
//!
//! The IMDS v1 (Bearer) rows run against an authority whose resource serves Bearer callers
//! without a client certificate, as Azure resources do.
//!
//! Reproduce: `cargo test --test faults_imds -- --nocapture --test-threads=1`

use crate::kit::scenario::*;
use popgate_authority::{Endpoint, Fault};

fn status(code: u16) -> Fault {
    Fault::Status {
        code,
        retry_after: None,
        body: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imds_v2_platform_metadata_410_once() {
    let authority = authority().await;
    authority
        .faults()
        .push(Endpoint::ImdsPlatformMetadata, status(410), 1);
    let s = Scenario::start(authority, RouteKind::ManagedIdentityPop, "").await;
    // The retry comes 10 s after the 410, inside popgate's 25 s first-token wait.
    let load = s.load("/imds-410").await;
    load.assert_only("IMDS 410", &[ECHO, NO_TOKEN]);
    // The 410 was served (its queue is empty) and callers still got tokens. The observed request
    // count was 2 in one run and 1 in another (unexplained, see docs/reliability.md), so it is
    // not asserted.
    assert!(
        s.authority
            .faults()
            .next(Endpoint::ImdsPlatformMetadata)
            .is_none(),
        "the queued 410 was consumed"
    );
    s.report(
        "IMDS v2 getplatformmetadata 410 once (retried after 10 s), mTLS PoP",
        &load,
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imds_v2_platform_metadata_500_twice() {
    let authority = authority().await;
    authority
        .faults()
        .push(Endpoint::ImdsPlatformMetadata, status(500), 2);
    let s = Scenario::start(authority, RouteKind::ManagedIdentityPop, "").await;
    let load = s.load("/imds-500").await;
    load.assert_only("IMDS 500", &[ECHO, NO_TOKEN]);
    assert_eq!(
        s.count(Endpoint::ImdsPlatformMetadata),
        3,
        "two 500s, then success"
    );
    s.report(
        "IMDS v2 getplatformmetadata 500 ×2 (retried at 1 s, 2 s), mTLS PoP",
        &load,
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imds_v2_platform_metadata_500_persisting_fails_closed() {
    let authority = authority().await;
    // More than the three retries of one acquisition: the route fails, then recovers.
    authority
        .faults()
        .push(Endpoint::ImdsPlatformMetadata, status(500), 4);
    let s = Scenario::start(authority, RouteKind::ManagedIdentityPop, "").await;
    s.wait_failed().await;
    let failing = s.load("/imds-down").await;
    failing.assert_only("IMDS 500 ×4", &[NO_TOKEN, ECHO]);
    let back = s.back("back").await;
    s.report(
        "IMDS v2 getplatformmetadata 500 ×4 (all retries fail) → backoff → back, mTLS PoP",
        &Tally::sum(&[&failing, &back]),
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imds_v2_issuecredential_500_once() {
    let authority = authority().await;
    authority
        .faults()
        .push(Endpoint::ImdsIssueCredential, status(500), 1);
    let s = Scenario::start(authority, RouteKind::ManagedIdentityPop, "").await;
    let load = s.load("/imds-v2-500").await;
    load.assert_only("IMDSv2 issuecredential 500", &[ECHO, NO_TOKEN]);
    s.report("IMDS v2 issuecredential 500 once, mTLS PoP", &load);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imds_v1_token_500_twice() {
    let authority = authority_serving_bearer().await;
    authority
        .faults()
        .push(Endpoint::ImdsV1Token, status(500), 2);
    let s = Scenario::start(authority, RouteKind::ManagedIdentityBearer, "").await;
    let load = s.load("/imds-v1-500").await;
    load.assert_only("IMDS v1 500 x2", &[ECHO, NO_TOKEN]);
    // Two 500s, retried at 1 s and 2 s, then the token: exactly three IMDS v1 calls.
    assert_eq!(s.count(Endpoint::ImdsV1Token), 3);
    s.report("IMDS v1 token 500 ×2 (retried at 1 s, 2 s), Bearer", &load);
    s.shutdown().await;
}
