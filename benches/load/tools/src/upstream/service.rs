//! One TLS connection of the upstream: the token-binding check with a per-connection cache, and
//! the fixed responses. Steady state is one byte comparison per request.

use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::stats::Stats;
use crate::token;

/// What every connection shares: the counters and the pre-built 200 body.
pub struct Shared {
    pub stats: Arc<Stats>,
    pub ok_body: Bytes,
    pub accept_any_token: bool,
}

/// Per-connection state: the peer's thumbprint (computed once at handshake) and the last
/// Authorization value that validated. The mutex is per connection and only ever contended by
/// concurrent HTTP/2 streams of that one connection; it is not a global lock.
struct Conn {
    shared: Arc<Shared>,
    thumbprint: Option<String>,
    last_valid: Mutex<Option<HeaderValue>>,
}

impl Conn {
    fn authorized(&self, req: &Request<Incoming>) -> bool {
        if self.shared.accept_any_token {
            return true;
        }
        let (Some(auth), Some(thumb)) =
            (req.headers().get(header::AUTHORIZATION), &self.thumbprint)
        else {
            return false;
        };
        let mut last = self
            .last_valid
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last
            .as_ref()
            .is_some_and(|v| v.as_bytes() == auth.as_bytes())
        {
            return true;
        }
        let ok = token::binding_matches(auth.as_bytes(), thumb);
        if ok {
            *last = Some(auth.clone());
        }
        ok
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        self.shared.stats.requests.fetch_add(1, Relaxed);
        let (status, body) = if self.authorized(req) {
            (StatusCode::OK, self.shared.ok_body.clone())
        } else {
            self.shared.stats.unauthorized.fetch_add(1, Relaxed);
            (
                StatusCode::UNAUTHORIZED,
                Bytes::from_static(b"unauthorized\n"),
            )
        };
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        resp
    }
}

/// Serves HTTP/1.1 or h2 (by ALPN, hyper-util's auto builder) on an established TLS connection.
pub async fn serve_connection(tls: TlsStream<TcpStream>, shared: Arc<Shared>) {
    let thumbprint = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| token::thumbprint(leaf.as_ref()));
    if let Some(thumb) = &thumbprint {
        shared.stats.saw_thumbprint(thumb);
    }
    let conn = Arc::new(Conn {
        shared,
        thumbprint,
        last_valid: Mutex::new(None),
    });
    let service = service_fn(move |req: Request<Incoming>| {
        let resp = conn.respond(&req);
        async move {
            // A request with a body (`bench-load --body-bytes`) is read to its end before the
            // answer, as a real service would; a GET's is at its end already.
            if !hyper::body::Body::is_end_stream(req.body()) {
                let _ = req.into_body().collect().await;
            }
            Ok::<_, Infallible>(resp)
        }
    });
    // A client closing or resetting its connection is normal at the end of every load run.
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), service)
        .await;
}
