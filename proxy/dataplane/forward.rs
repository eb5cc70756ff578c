//! One request: find its route, load the route's snapshot, rewrite, send through the snapshot's
//! client, stream the answer back. Bodies pass through as `Incoming` both ways (hyper polls the
//! source only as fast as the sink accepts), so nothing is buffered whole.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::uri::Scheme;
use http::{Method, Request, Response, Version, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use super::connect::ConnectError;
use super::error_response::Refusal;
use super::headers;
use crate::engine::snapshot::RouteSlot;
use crate::routing::RouteTable;

/// The route table the data plane reads: each route's payload is its snapshot slot.
pub type DataplaneTable = RouteTable<Arc<RouteSlot>>;

/// The body popgate answers with: the upstream's streamed body, or its own JSON.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Default bound from sending a request upstream to receiving its response head: long enough for
/// slow APIs (Graph batch calls), short enough that a hung upstream frees the caller within a minute.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Forwards requests using the current route table. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Forwarder {
    table: Arc<ArcSwap<DataplaneTable>>,
    request_timeout: Duration,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// A forwarder reading `table` on every request.
    pub fn new(table: Arc<ArcSwap<DataplaneTable>>, request_timeout: Duration) -> Self {
        Self {
            table,
            request_timeout,
        }
    }

    /// Handles one caller request. `listener_default_port` is 80 on plain listeners, 443 on TLS.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        listener_default_port: u16,
    ) -> Response<ProxyBody> {
        if request.method() == Method::CONNECT {
            tracing::debug!(target = %request.uri(), "CONNECT refused");
            return refuse(&Refusal::Connect);
        }
        let (host, default_port) = match request_host(&request, listener_default_port) {
            Ok(found) => found,
            Err(reason) => return refuse(&Refusal::BadRequest { reason }),
        };
        let path_and_query = request.uri().path_and_query().map_or("/", |pq| pq.as_str());

        // Resolve everything the table tells us, then drop the table guard before any await.
        let (route, slot, uri) = {
            let table = self.table.load();
            let Some(found) = table.lookup(host, default_port, path_and_query) else {
                tracing::info!(host = host.unwrap_or(""), "no route; request refused");
                return refuse(&Refusal::NoRoute { host });
            };
            let uri = match found.upstream_uri() {
                Ok(uri) => uri,
                Err(_) => {
                    return refuse(&Refusal::BadRequest {
                        reason: "the request target cannot be mapped to an upstream URL",
                    });
                }
            };
            (
                Arc::clone(found.route.name_arc()),
                Arc::clone(found.route.payload()),
                uri,
            )
        };
        let Some(snapshot) = slot.snapshot.load_full() else {
            tracing::warn!(route = %route, "no usable token for route");
            return refuse(&Refusal::NoToken { route: &route });
        };

        // Never inject an expired token, even if the engine failed to replace it in time.
        if snapshot.expires_at <= SystemTime::now() {
            tracing::warn!(route = %route, generation = snapshot.generation, "route token expired");
            return refuse(&Refusal::TokenExpired { route: &route });
        }

        let (mut parts, body) = request.into_parts();
        let received = parts.version;
        headers::rewrite_request(&mut parts.headers, received, &snapshot.authorization);
        if body_needs_chunked(&body) {
            // hyper's h1 client assumes a GET/HEAD of unknown length has no body; say there is one
            // so a caller's chunked GET body is not dropped (hyper removes this header on h2).
            parts.headers.insert(
                header::TRANSFER_ENCODING,
                http::HeaderValue::from_static("chunked"),
            );
        }
        parts.uri = uri;
        // hyper-util picks h1 or h2 by what the connection negotiated; h1 requires this version.
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        let upstream_request = Request::from_parts(parts, body);

        let sent = tokio::time::timeout(
            self.request_timeout,
            snapshot.client.request(upstream_request),
        )
        .await;
        match sent {
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                tracing::debug!(route = %route, status = parts.status.as_u16(), "forwarded");
                let version = parts.version;
                headers::rewrite_response(&mut parts.headers, version);
                // The caller's connection decides its own version.
                parts.version = Version::HTTP_11;
                Response::from_parts(parts, Either::Left(body))
            }
            Ok(Err(error)) => {
                let (cause, timeout) = describe(&error);
                tracing::warn!(route = %route, cause = %cause, "upstream request failed");
                if timeout {
                    refuse(&Refusal::Timeout {
                        route: &route,
                        cause: &cause,
                    })
                } else {
                    refuse(&Refusal::Unreachable {
                        route: &route,
                        cause: &cause,
                    })
                }
            }
            Err(_) => {
                let cause = format!(
                    "no response head within {} ms",
                    self.request_timeout.as_millis()
                );
                tracing::warn!(route = %route, cause = %cause, "upstream timed out");
                refuse(&Refusal::Timeout {
                    route: &route,
                    cause: &cause,
                })
            }
        }
    }
}

/// A body of unknown length that is not already finished.
fn body_needs_chunked(body: &Incoming) -> bool {
    use http_body::Body as _;
    !body.is_end_stream() && body.size_hint().exact().is_none()
}

fn refuse(refusal: &Refusal<'_>) -> Response<ProxyBody> {
    refusal.response().map(Either::Right)
}

/// The host to route on and the default port of the caller's scheme. Absolute-form URIs (and h2's
/// `:authority`) win over the Host header, as RFC 9112 §3.2.2 requires.
fn request_host(
    request: &Request<Incoming>,
    listener_default_port: u16,
) -> Result<(Option<&str>, u16), &'static str> {
    let uri = request.uri();
    if let Some(authority) = uri.authority() {
        if authority.as_str().contains('@') {
            return Err("credentials in the request URL are not forwarded; remove user:password@");
        }
        let port = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => 443,
            Some(s) if *s == Scheme::HTTP => 80,
            _ => listener_default_port,
        };
        return Ok((Some(authority.as_str()), port));
    }
    match request.headers().get(header::HOST) {
        Some(value) => match value.to_str() {
            Ok(host) if !host.contains('@') => Ok((Some(host), listener_default_port)),
            _ => Err("the Host header is not a valid host name"),
        },
        None => Ok((None, listener_default_port)),
    }
}

/// The caller-facing cause of a failed upstream exchange, and whether it was a timeout.
fn describe(error: &hyper_util::client::legacy::Error) -> (String, bool) {
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(e) = source {
        if let Some(connect) = e.downcast_ref::<ConnectError>() {
            return (connect.to_string(), connect.is_timeout());
        }
        source = e.source();
    }
    // Not a connect failure: the upstream broke the exchange (reset, malformed response, ...).
    let mut cause = String::from("upstream exchange failed");
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(e) = source {
        cause.push_str(": ");
        cause.push_str(&e.to_string());
        source = e.source();
    }
    (cause, false)
}
