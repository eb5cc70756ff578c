//! The bench's side of one keep-alive HTTP/1.1 connection to popgate's listener, and how each
//! answer is classified: OK, popgate's own refusal (with its cause), an upstream status, or no
//! answer at all.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::target::Target;

/// Most bytes of a non-2xx body read to find popgate's cause: its refusals are a few hundred
/// bytes; anything larger is an upstream's page and only its status matters.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// `error` values of popgate's own JSON refusals (dataplane::error_response and limits).
const POPGATE_ERRORS: &[&str] = &[
    "no_route",
    "no_token",
    "upstream_unreachable",
    "upstream_timeout",
    "bad_request",
    "connect_not_supported",
    "payload_too_large",
    "request_header_fields_too_large",
    "uri_too_long",
];

/// Why a request got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The connection to popgate could not be opened.
    Connect,
    /// The connection broke during the exchange.
    Io,
    /// No whole answer within `--timeout`.
    Timeout,
}

impl Failure {
    /// Every kind, in report order.
    pub(crate) const ALL: [Failure; 3] = [Failure::Connect, Failure::Io, Failure::Timeout];

    /// The JSON / table name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Io => "io",
            Failure::Timeout => "timeout",
        }
    }
}

/// What an answer was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// 2xx.
    Ok(u16),
    /// popgate answered itself: status and its `error` (e.g. `no_token`).
    Popgate(u16, String),
    /// Any other status, as the upstream sent it.
    Upstream(u16),
}

/// One open connection.
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Conn {
    /// Opens a connection to `addr`.
    pub(crate) async fn open(addr: SocketAddr) -> Result<Conn, Failure> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|_| Failure::Connect)?;
        // Latency figures must not include Nagle's delay on small requests.
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|_| Failure::Connect)?;
        let driver = tokio::spawn(async move {
            // A broken connection shows up as the next send's error.
            let _ = conn.await;
        });
        Ok(Conn { sender, driver })
    }

    /// Whether another request can be sent on it.
    pub(crate) fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Sends one request for `target` and reads the whole answer.
    pub(crate) async fn exchange(
        &mut self,
        target: &Target,
        listener: SocketAddr,
    ) -> Result<Answer, Failure> {
        let request = build(target, listener)?;
        self.sender.ready().await.map_err(|_| Failure::Io)?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|_| Failure::Io)?;
        classify(response).await
    }
}

fn build(target: &Target, listener: SocketAddr) -> Result<Request<Full<Bytes>>, Failure> {
    let host = match &target.host {
        Some(h) => HeaderValue::from_str(h),
        None => HeaderValue::from_str(&listener.to_string()),
    }
    // Route hosts were validated by the config loader; a failure here is never a network one,
    // but it must not be a panic either.
    .map_err(|_| Failure::Io)?;
    let mut request = Request::builder()
        .method(target.method.clone())
        .uri(target.path.as_str())
        .header(header::HOST, host)
        .body(Full::new(target.body.clone()))
        .map_err(|_| Failure::Io)?;
    let headers = request.headers_mut();
    for (name, value) in &target.headers {
        headers.append(name.clone(), value.clone());
    }
    Ok(request)
}

async fn classify(response: Response<Incoming>) -> Result<Answer, Failure> {
    let status = response.status().as_u16();
    let from_popgate = response
        .headers()
        .get(header::VIA)
        .is_some_and(|v| v.as_bytes() == b"1.1 popgate");
    if response.status().is_success() {
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            frame.map_err(|_| Failure::Io)?;
        }
        return Ok(Answer::Ok(status));
    }
    let bytes = Limited::new(response.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let cause = from_popgate
        .then(|| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .flatten()
        .and_then(|v| v.get("error")?.as_str().map(str::to_string))
        .filter(|e| POPGATE_ERRORS.contains(&e.as_str()));
    Ok(match cause {
        Some(cause) => Answer::Popgate(status, cause),
        None => Answer::Upstream(status),
    })
}

/// [`Conn::open`] bounded by `limit`.
pub(crate) async fn open_within(addr: SocketAddr, limit: Duration) -> Result<Conn, Failure> {
    tokio::time::timeout(limit, Conn::open(addr))
        .await
        .unwrap_or(Err(Failure::Timeout))
}
