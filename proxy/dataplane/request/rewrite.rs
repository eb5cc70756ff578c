//! Step 5, rewrite: the caller's request as the upstream gets it. The head gets the route's
//! `Authorization`, the upstream URL and HTTP/1.1; the body is read ahead when small (so a
//! request whose token the upstream refuses can be replayed) and cut off past the route's limit.

use std::time::Duration;

use http::{HeaderValue, Request, Uri, Version, header};
use hyper::body::{Body as _, Incoming};

use super::Step;
use super::respond::{refuse, refuse_limit};
use crate::dataplane::error_response::Refusal;
use crate::dataplane::headers;
use crate::dataplane::limits::LimitRefusal;
use crate::net::kept_head::HeaderNames;
use crate::net::stall_body::StallFlag;
use crate::net::upstream_body::{UpstreamBody, read_ahead};
use crate::route::slot::Snapshot;

/// A request ready to send upstream. Its `Debug` leaves the headers out: they hold the token
/// without its sensitive mark ([`headers::upstream_authorization`]).
pub(super) struct Outgoing {
    /// The rewritten request.
    pub request: Request<UpstreamBody>,
    /// A copy of the body for a replay, when it was read whole (the chunks are shared). The
    /// head is kept by the upstream client as it sends it ([`crate::net::kept_head`]).
    pub replay: Option<UpstreamBody>,
    /// The route's body limit, which a streamed body is cut off at.
    pub max_body: Option<u64>,
    /// Set when a streamed HTTP/2 body was cut off for making no progress.
    pub stalled: Option<StallFlag>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("method", self.request.method())
            .field("uri", self.request.uri())
            .field("headers", &HeaderNames(self.request.headers()))
            .field("replayable", &self.replay.is_some())
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

/// Rewrites `request` for `uri` with `snapshot`'s token. The body is read ahead within `timeout`
/// (400 if it cannot be read); a body over `max_body` is refused (413) or cut off as it streams;
/// one still streaming after the read-ahead is cut off once it stalls for `stall`, when given.
/// The request path sends a request whose body has ended (most) through [`bodiless`] instead.
pub(super) async fn outgoing(
    request: Request<Incoming>,
    uri: Uri,
    snapshot: &Snapshot,
    max_body: Option<u64>,
    timeout: Duration,
    stall: Option<Duration>,
) -> Step<Outgoing> {
    let (mut parts, body) = request.into_parts();
    let chunked = body_needs_chunked(&body);
    upstream_head(&mut parts, &snapshot.authorization, uri, chunked);
    // An ended body reads as empty here too (`read_ahead`); the request path sends those
    // through `bodiless`, which sets no timer.
    let body = match tokio::time::timeout(timeout, read_ahead(body)).await {
        Ok(Ok(body)) => body,
        Ok(Err(error)) => {
            tracing::info!(error = %error, "caller body unreadable");
            return Err(refuse(&Refusal::BadRequest {
                reason: "the request body could not be read",
            }));
        }
        Err(_) => {
            return Err(refuse(&Refusal::BadRequest {
                reason: "the request body did not arrive within the request timeout",
            }));
        }
    };
    ready(parts, body, max_body, stall)
}

/// [`outgoing`] without a future, for a request whose body has ended already (most); a request
/// with a body comes back (`Err`) for [`outgoing`]. The request path awaits [`outgoing`] only
/// for a body, boxed, so the room for its read stays out of every request's future (issue 13:
/// that future is copied whole as it is created and boxed).
pub(super) fn bodiless(
    request: Request<Incoming>,
    uri: Uri,
    snapshot: &Snapshot,
    max_body: Option<u64>,
    stall: Option<Duration>,
) -> Result<Step<Outgoing>, (Request<Incoming>, Uri)> {
    if !request.body().is_end_stream() {
        return Err((request, uri));
    }
    let (mut parts, _) = request.into_parts();
    upstream_head(&mut parts, &snapshot.authorization, uri, false);
    Ok(ready(parts, UpstreamBody::empty(), max_body, stall))
}

/// The rewritten head with its body, as read ahead (or empty): the route's body limit and the
/// stall deadline applied, the replay copy taken.
fn ready(
    parts: http::request::Parts,
    body: UpstreamBody,
    max_body: Option<u64>,
    stall: Option<Duration>,
) -> Step<Outgoing> {
    // A body read whole is refused here; one still streaming is cut off past the limit.
    let body = match max_body {
        Some(max) if body.buffered_len().is_some_and(|n| n > max) => {
            tracing::info!(max, "body over the route's limit");
            return Err(refuse_limit(&LimitRefusal::BodyTooLarge { max }));
        }
        Some(max) if body.buffered_len().is_none() => body.limited(max),
        _ => body,
    };
    // A body still streaming holds its stream (and its upstream exchange) while it waits for the
    // caller: bounded per stream on HTTP/2.
    let (body, stalled) = match stall {
        Some(limit) if body.buffered_len().is_none() => {
            let (body, flag) = body.stall_timed(limit);
            (body, Some(flag))
        }
        _ => (body, None),
    };
    // Streams larger than the replay limit keep nothing for a replay.
    let replay = body.replayable();
    Ok(Outgoing {
        request: Request::from_parts(parts, body),
        replay,
        max_body,
        stalled,
    })
}

/// Turns a caller's request head into the one sent upstream: headers rewritten with the
/// snapshot's `authorization`, the upstream `uri`, HTTP/1.1, no extensions. `chunked`: the
/// caller's body has an unknown length.
///
/// Public because it is the whole per-request head rewrite in one call, which is what
/// `benches/hot_path.rs` measures.
pub fn upstream_head(
    parts: &mut http::request::Parts,
    authorization: &HeaderValue,
    uri: Uri,
    chunked: bool,
) {
    headers::rewrite_request(&mut parts.headers, parts.version, authorization);
    if chunked {
        // hyper's h1 client assumes a GET/HEAD of unknown length has no body; say there is one
        // so a caller's chunked GET body is not dropped (removed again on h2: `h2_stream.rs`).
        parts.headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    parts.uri = uri;
    // The lane picks HTTP/1.1 or h2 by what the host negotiated; hyper's HTTP/1.1 client
    // requires this version, h2 does not read it.
    parts.version = Version::HTTP_11;
    parts.extensions = http::Extensions::new();
}

/// A body of unknown length that is not already finished.
fn body_needs_chunked(body: &Incoming) -> bool {
    use http_body::Body as _;
    !body.is_end_stream() && body.size_hint().exact().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "mtls_pop eyJ0eXAiOiJwb3AifQ.c2VjcmV0LXBheWxvYWQ.c2ln";

    fn token() -> HeaderValue {
        let mut value = HeaderValue::from_static(TOKEN);
        value.set_sensitive(true);
        value
    }

    #[test]
    fn the_upstream_copy_is_the_same_token_without_the_sensitive_mark() {
        let token = token();
        let copy = headers::upstream_authorization(&token);
        assert_eq!(copy, token);
        assert!(!copy.is_sensitive(), "HPACK would never index it");
        assert!(token.is_sensitive(), "the snapshot's value stays sensitive");
    }

    #[test]
    fn debug_of_an_outgoing_request_names_its_headers_but_never_shows_the_token() {
        let mut request = Request::new(UpstreamBody::empty());
        *request.uri_mut() = Uri::from_static("https://graph.microsoft.com/v1.0/me");
        request.headers_mut().insert(
            header::AUTHORIZATION,
            headers::upstream_authorization(&token()),
        );
        let outgoing = Outgoing {
            request,
            replay: Some(UpstreamBody::empty()),
            max_body: None,
            stalled: None,
        };
        let shown = format!("{outgoing:?}");
        assert!(shown.contains("authorization"), "{shown}");
        assert!(shown.contains("replayable: true"), "{shown}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
    }
}
