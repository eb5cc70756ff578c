//! The admin listener (`admin.address`): `/metrics` (Prometheus text), `/healthz` (the process
//! answers), `/readyz` (200 only while every eager route has a usable token and no stop signal
//! came) and `/log-level` (read or replace the log filter). Plain HTTP/1.1, meant for loopback or a
//! pod network; it serves no secret and takes no input but the path and a `/log-level` filter.

mod log_level;
pub(crate) mod scrape;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::limits::{
    ADMIN_FIRST_BYTE_TIMEOUT, ADMIN_KEEP_ALIVE_TIMEOUT, MAX_ADMIN_CONNECTIONS,
};
use crate::dataplane::activity::{Activity, Deadlines, InFlightBody};
use crate::dataplane::opening::Opening;
use crate::dataplane::serve::{self, AtCap, Drain};
use crate::route::slot::RouteSlot;
use crate::route::status::RouteStatus;
use scrape::ScrapeSources;

/// A client must send its request head within this long (probes send it at once).
pub const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// An admin connection is closed after this long whatever it does: longer than any scrape takes,
/// short enough that an idle keep-alive connection does not pin a slot forever.
pub const ADMIN_CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("admin listener {addr}: cannot bind: {source}")]
pub struct AdminError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// The running admin listener.
#[derive(Debug)]
pub struct AdminHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<bool>,
}

impl AdminHandle {
    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes open admin connections.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "admin listener ended abnormally");
        }
    }
}

/// Binds `addr` and serves the admin endpoints from `sources` until [`AdminHandle::shutdown`].
pub async fn start(addr: SocketAddr, sources: ScrapeSources) -> Result<AdminHandle, AdminError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| AdminError { addr, source })?;
    let (stop, stopped) = watch::channel(false);
    let sources = Arc::new(sources);
    let options = serve::Options {
        label: format!("admin {addr}"),
        kind: "admin",
        tls: false,
        deadlines: Deadlines {
            tls_handshake: ADMIN_FIRST_BYTE_TIMEOUT,
            first_byte: ADMIN_FIRST_BYTE_TIMEOUT,
            preface: ADMIN_FIRST_BYTE_TIMEOUT,
            keep_alive: ADMIN_KEEP_ALIVE_TIMEOUT,
        },
        cap: serve::ConnectionCap::new(MAX_ADMIN_CONNECTIONS),
        // Idle sockets are evicted to admit a probe; when every slot is busy answering, probes
        // must not queue behind them either. Nothing admin serves is worth waiting for on
        // shutdown.
        at_cap: AtCap::Close,
        drain: Drain::Abort,
        shutdown: stopped,
        stopped: None,
    };
    let task = tokio::spawn(serve::serve(
        listener,
        options,
        move |stream, _, _, activity| {
            Box::pin(serve_connection(stream, Arc::clone(&sources), activity))
        },
    ));
    tracing::info!(addr = %addr, "admin listening");
    Ok(AdminHandle { addr, stop, task })
}

/// Serves one admin connection: HTTP/1.1, its head within [`ADMIN_HEADER_TIMEOUT`], closed
/// after [`ADMIN_CONNECTION_LIFETIME`] whatever it does (and earlier by the accept loop's phase
/// deadlines, or to admit another client).
async fn serve_connection(stream: TcpStream, sources: Arc<ScrapeSources>, activity: Arc<Activity>) {
    let io = Opening::new(stream, Arc::clone(&activity));
    let service = service_fn(move |req| {
        let in_flight = activity.request();
        let sources = Arc::clone(&sources);
        async move {
            let response = if req.uri().path() == log_level::PATH {
                log_level::answer(req).await
            } else {
                answer(&req, &sources)
            };
            Ok::<_, Infallible>(response.map(|body| InFlightBody::new(body, in_flight)))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(ADMIN_HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    if let Ok(Err(e)) = tokio::time::timeout(ADMIN_CONNECTION_LIFETIME, conn).await {
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}

type AdminResponse = Response<Full<Bytes>>;

fn answer(req: &Request<Incoming>, sources: &ScrapeSources) -> AdminResponse {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let (mut ready, mut body) = readiness(&sources.load().slots, SystemTime::now());
            // A stop signal came: load balancers must stop sending here, whatever the routes say.
            if sources.draining() {
                ready = false;
                body["ready"] = false.into();
                body["draining"] = true.into();
            }
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            respond(status, "application/json", body.to_string().into())
        }
        _ => match scrape::render(sources) {
            Ok(text) => respond(StatusCode::OK, scrape::CONTENT_TYPE, text.into()),
            Err(e) => {
                tracing::error!(error = %e, "metrics scrape failed");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n")
            }
        },
    }
}

fn plain(status: StatusCode, text: &'static str) -> AdminResponse {
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(text.as_bytes()),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> AdminResponse {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

/// Whether popgate is ready, and each route's state. Ready means every eager route has a
/// published token that has not expired (`ready`, or `stale`: refreshing fails but the token is
/// still usable). Lazy routes never hold readiness back.
pub fn readiness(slots: &[Arc<RouteSlot>], now: SystemTime) -> (bool, Value) {
    let mut ready = true;
    let mut routes = Map::new();
    for slot in slots {
        let status = slot.status();
        let lazy = slot.info().lazy;
        let expires_in = slot
            .snapshot
            .load()
            .as_ref()
            .and_then(|s| s.expires_at.duration_since(now).ok())
            .map(|d| d.as_secs());
        let usable = status.is_serving() && expires_in.is_some();
        if !lazy && !usable {
            ready = false;
        }
        let mut entry = Map::new();
        entry.insert("state".into(), status.label().into());
        entry.insert("acquire".into(), if lazy { "lazy" } else { "eager" }.into());
        entry.insert("expires_in_s".into(), expires_in.into());
        let error = status.error().map(|e| {
            json!({
                "identity": e.identity,
                "message": e.message,
                "aadsts": e.aadsts,
                "correlation_id": e.correlation_id,
            })
        });
        entry.insert("error".into(), error.unwrap_or(Value::Null));
        if let RouteStatus::Stale { failures, .. } | RouteStatus::Failed { failures, .. } = &*status
        {
            entry.insert("failures".into(), (*failures).into());
        }
        if let Some(e) = status.error() {
            // `permanent_failure`: a 4xx refusal, retried every 5 to 30 minutes until a reload.
            entry.insert("reason".into(), e.failure_class().into());
        }
        if let Some(at) = status.next_attempt() {
            let secs = at.duration_since(now).map_or(0, |d| d.as_secs());
            entry.insert("next_attempt_in_s".into(), secs.into());
        }
        routes.insert(slot.name().to_string(), Value::Object(entry));
    }
    (ready, json!({ "ready": ready, "routes": routes }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::slot::RouteInfo;

    #[test]
    fn pending_eager_route_is_not_ready_and_lazy_routes_do_not_count() {
        let eager = Arc::new(RouteSlot::new("eager"));
        let lazy = Arc::new(RouteSlot::for_route(
            "lazy",
            RouteInfo {
                lazy: true,
                ..RouteInfo::default()
            },
        ));
        let (ready, body) = readiness(&[Arc::clone(&eager), Arc::clone(&lazy)], SystemTime::now());
        assert!(!ready);
        assert_eq!(body["routes"]["eager"]["state"], "pending");
        assert_eq!(body["routes"]["eager"]["acquire"], "eager");
        assert_eq!(body["routes"]["lazy"]["acquire"], "lazy");
        let (ready, body) = readiness(&[lazy], SystemTime::now());
        assert!(ready, "{body}");
    }
}
