//! The upstream's counters and its plain-HTTP stats endpoint (`GET /stats`, `POST /reset`).
//! Counters are relaxed atomics: the hot path never takes a lock. The thumbprint list is touched
//! once per TLS connection, never per request.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// At most this many distinct thumbprints are kept: the harness only needs to see that the one
/// (or, during certificate rotation, two) client certificates were presented; a bound keeps a
/// misbehaving client from growing the list.
pub const MAX_THUMBPRINTS: usize = 16;

#[derive(Default)]
pub struct Stats {
    pub tls_handshakes: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    pub connections_open: AtomicU64,
    pub requests: AtomicU64,
    pub unauthorized: AtomicU64,
    thumbprints: Mutex<Vec<String>>,
}

impl Stats {
    /// Records a client certificate thumbprint seen on a new connection (once per connection).
    pub fn saw_thumbprint(&self, thumb: &str) {
        let mut list = self
            .thumbprints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if list.len() < MAX_THUMBPRINTS && !list.iter().any(|t| t == thumb) {
            list.push(thumb.to_owned());
        }
    }

    /// Zeroes the counters and the thumbprint list; `connections_open` is a gauge, left as is.
    pub fn reset(&self) {
        self.tls_handshakes.store(0, Relaxed);
        self.tls_handshake_failures.store(0, Relaxed);
        self.requests.store(0, Relaxed);
        self.unauthorized.store(0, Relaxed);
        self.thumbprints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    pub fn to_json(&self) -> String {
        let thumbprints = self
            .thumbprints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        serde_json::json!({
            "tls_handshakes": self.tls_handshakes.load(Relaxed),
            "tls_handshake_failures": self.tls_handshake_failures.load(Relaxed),
            "connections_open": self.connections_open.load(Relaxed),
            "requests": self.requests.load(Relaxed),
            "unauthorized": self.unauthorized.load(Relaxed),
            "thumbprints": thumbprints,
        })
        .to_string()
    }
}

/// Decrements `connections_open` when a connection's task ends, however it ends.
pub struct OpenGuard(pub Arc<Stats>);

impl OpenGuard {
    pub fn new(stats: Arc<Stats>) -> Self {
        stats.connections_open.fetch_add(1, Relaxed);
        Self(stats)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Relaxed);
    }
}

fn respond(stats: &Stats, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/stats") => (StatusCode::OK, stats.to_json()),
        (&Method::POST, "/reset") => {
            stats.reset();
            (StatusCode::OK, stats.to_json())
        }
        _ => (
            StatusCode::NOT_FOUND,
            "{\"error\":\"GET /stats or POST /reset\"}".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Serves the stats endpoint forever (HTTP/1.1, plain).
pub async fn serve(listener: TcpListener, stats: Arc<Stats>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(super::ACCEPT_ERROR_PAUSE).await;
            continue;
        };
        let stats = stats.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let resp = respond(&stats, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            // A stats client that goes away mid-request is not worth reporting.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
