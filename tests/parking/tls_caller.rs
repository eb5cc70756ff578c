//! A TLS caller parks like a plain one: hyper's buffers are dropped, the rustls stream is kept,
//! and the next request after the parking grace is served on the same connection.

use std::time::Duration;

use crate::kit::dataplane::{parked, parked_count_at};
use crate::kit::signed_tokens::*;
use crate::kit::tls_callers::{connector, tls_app};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;

/// An idle TLS caller is parked (hyper's buffers dropped, the rustls stream kept) and its next
/// request, after the parking grace, is served on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_caller_idle_past_the_parking_grace_is_served_again_on_the_same_connection() {
    let _alone = crate::one_at_a_time().await;
    let env = Env::start().await;
    let (app, pki, (caller, caller_key)) = tls_app(&env, "parked-tls").await;
    let addr = app.local_addrs()[0];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector(&pki, Some((&caller, &caller_key)))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let parked_before = parked();
    for round in 0..3 {
        let request = http::Request::builder()
            .uri("/v1.0/me")
            .header("host", GRAPH)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = tokio::time::timeout(REQUEST_BOUND, sender.send_request(request))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: the parked connection failed: {e}"));
        assert_eq!(response.status(), 200, "round {round}");
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap();
        // Past popgate's parking grace (250 ms) the connection leaves hyper, once per idle spell
        // (waited for, not slept past: timers run late on a loaded machine).
        let expected = parked_before + f64::from(round + 1);
        assert_eq!(
            parked_count_at(expected).await,
            expected,
            "round {round}: the idle TLS connection was not parked once"
        );
        // Idle a while longer, parked, before the next request wakes it.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        !conn.is_finished(),
        "popgate closed the idle TLS connection"
    );
    assert_eq!(env.resource_counts().0, 3);
    app.shutdown().await;
}
