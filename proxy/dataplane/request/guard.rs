//! Step 1, guard: refuse what must never be forwarded, before any route or token work.
//!
//! Two halves. [`ConnectionGuard::admit`] runs as each request arrives on a connection: the
//! listener's head limits and the HTTP/1 framing guard's verdict (which saw the raw bytes hyper
//! parsed). Its refusals are answered before the request is counted in any route's metrics.
//! [`target`] then checks the request target: no CONNECT, one plain host, the same in URL and
//! Host header.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::uri::Scheme;
use http::{Method, Request, Response, header};

use super::respond::{refuse, refuse_limit};
use super::{ProxyBody, Step};
use crate::dataplane::error_response::Refusal;
use crate::dataplane::framing_guard::Verdict;
use crate::dataplane::limits::{RequestLimits, check_request};
use crate::dataplane::request_target;

/// The per-connection half of the guard.
#[derive(Debug)]
pub(super) struct ConnectionGuard {
    verdict: Arc<Verdict>,
    /// Requests seen on the connection so far.
    requests: AtomicU64,
}

/// A request the guard let through: its place on the connection, to ask the framing guard again
/// once the answer is ready.
#[derive(Clone, Copy, Debug)]
pub(super) struct Admitted {
    index: u64,
}

impl ConnectionGuard {
    /// A guard for one connection, reading what `verdict`'s framing guard found.
    pub(super) fn new(verdict: Arc<Verdict>) -> Self {
        Self {
            verdict,
            requests: AtomicU64::new(0),
        }
    }

    /// Call as the request arrives, in arrival order: HTTP/1 requests arrive one at a time, so
    /// this count matches the framing guard's. `limits`: the listener's head limits.
    pub(super) fn admit<B>(&self, request: &Request<B>, limits: &RequestLimits) -> Step<Admitted> {
        let index = self.requests.fetch_add(1, Ordering::Relaxed);
        let refused = self
            .verdict
            .refusal(index)
            .map_or_else(|| check_request(request, limits), Err);
        match refused {
            Ok(()) => Ok(Admitted { index }),
            Err(refusal) => {
                tracing::info!(
                    status = refusal.status().as_u16(),
                    reason = %refusal,
                    "request refused before forwarding"
                );
                Err(refuse_limit(&refusal))
            }
        }
    }

    /// The framing guard may have cut the body off while it was being forwarded: the caller then
    /// learns why (413) rather than seeing the upstream's reaction to a truncated body.
    pub(super) fn cut_off(&self, admitted: Admitted) -> Option<Response<ProxyBody>> {
        let refusal = self.verdict.refusal(admitted.index)?;
        tracing::info!(
            status = refusal.status().as_u16(),
            reason = %refusal,
            "request cut off while forwarding"
        );
        Some(refuse_limit(&refusal))
    }
}

/// Where the request is going, as the caller named it.
#[derive(Debug)]
pub(super) struct Target<'a> {
    /// The authority to route on (absolute-form URI, h2 `:authority`, or Host header).
    pub host: Option<&'a str>,
    /// The default port of the scheme the caller used.
    pub default_port: u16,
    /// The path and query (`/` when empty).
    pub path_and_query: &'a str,
}

/// The request target's checks: CONNECT is refused (405), an ambiguous target or a host with
/// credentials is refused (400).
pub(super) fn target<B>(request: &Request<B>, listener_default_port: u16) -> Step<Target<'_>> {
    if request.method() == Method::CONNECT {
        tracing::debug!(target = %request.uri(), "CONNECT refused");
        return Err(refuse(&Refusal::Connect));
    }
    if let Err(reason) =
        request_target::check(request.uri(), request.headers(), listener_default_port)
    {
        tracing::info!(reason, "ambiguous request target refused");
        return Err(refuse(&Refusal::BadRequest { reason }));
    }
    let (host, default_port) = request_host(request, listener_default_port)
        .map_err(|reason| refuse(&Refusal::BadRequest { reason }))?;
    let path_and_query = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    Ok(Target {
        host,
        default_port,
        path_and_query,
    })
}

/// The host to route on and the default port of the caller's scheme. Absolute-form URIs (and h2's
/// `:authority`) win over the Host header, as RFC 9112 §3.2.2 requires.
fn request_host<B>(
    request: &Request<B>,
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
