//! Where popgate's metrics are read from: the popgate this process started (its registry), or
//! another popgate's admin listener (`--admin http://HOST:PORT`, its `GET /metrics`).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::popgate_side::Snapshot;

/// Bound on one scrape (connect, request, whole body): an admin listener on the same host answers
/// in milliseconds; a scrape that takes longer is reported missing rather than stalling the run.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `/metrics` body read: a thousand routes' series take a few MiB; more is not popgate.
const MAX_METRICS_BYTES: usize = 32 << 20;

/// Where the metrics come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// This process's registry (the popgate the bench started).
    InProcess,
    /// Another popgate's admin listener.
    Admin(SocketAddr),
}

impl Source {
    /// Reads the metrics now; `None` when the admin listener could not be scraped (logged).
    pub(crate) async fn take(self) -> Option<Snapshot> {
        match self {
            Source::InProcess => Some(Snapshot::take()),
            Source::Admin(addr) => match tokio::time::timeout(SCRAPE_TIMEOUT, scrape(addr)).await {
                Ok(Ok(text)) => Some(Snapshot::from_text(&text)),
                Ok(Err(why)) => {
                    tracing::warn!(admin = %addr, error = %why, "cannot read popgate's /metrics");
                    None
                }
                Err(_) => {
                    tracing::warn!(admin = %addr, timeout_s = SCRAPE_TIMEOUT.as_secs(), "popgate's /metrics did not answer in time");
                    None
                }
            },
        }
    }
}

/// `GET /metrics` on `addr`: the body, or why not.
pub(crate) async fn scrape(addr: SocketAddr) -> Result<String, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(async move {
        // A broken connection shows up as the request's error.
        let _ = conn.await;
    });
    let request = Request::get("/metrics")
        .header(header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_METRICS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("cannot read the body: {e}"))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8 text".to_string())
    }
    .await;
    driver.abort();
    result
}
