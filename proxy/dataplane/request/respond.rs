//! Step 7, pass back: the upstream's answer rewritten for the caller, and popgate's own answers
//! (refusals) in the same body type.

use http::{Response, Version};
use http_body::Body as _;
use http_body_util::Either;

use super::ProxyBody;
use crate::dataplane::error_response::Refusal;
use crate::dataplane::headers;
use crate::dataplane::limits::LimitRefusal;
use crate::metrics::RouteMetrics;
use crate::metrics::request::AccessLine;
use crate::net::held_body::HeldBody;

/// The upstream's answer, rewritten for the caller: hop-by-hop headers dropped, `Via` added; its
/// body bytes counted in `route`'s metrics as they pass.
pub(super) fn pass_back(response: Response<HeldBody>, route: &RouteMetrics) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    tracing::debug!(status = parts.status.as_u16(), "forwarded");
    let version = parts.version;
    headers::rewrite_response(&mut parts.headers, version);
    // The caller's connection decides its own version.
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, Either::Left(route.count_response_body(body)))
}

/// popgate's own answer for `refusal`.
pub(super) fn refuse(refusal: &Refusal<'_>) -> Response<ProxyBody> {
    refusal.response().map(Either::Right)
}

/// popgate's own answer for a request over a limit (sent with `Connection: close`).
pub(super) fn refuse_limit(refusal: &LimitRefusal) -> Response<ProxyBody> {
    refusal.response().map(Either::Right)
}

/// The answer as it goes back, with its access-log line (when the log is on) written when its
/// body ends: the upstream's streamed body carries the line and counts the bytes it passes;
/// popgate's own answer is one buffer, logged as it is handed back.
pub(super) fn logged(
    response: Response<ProxyBody>,
    line: Option<AccessLine>,
) -> Response<ProxyBody> {
    let Some(mut line) = line else {
        return response;
    };
    line.status(response.status());
    response.map(|body| match body {
        Either::Left(streamed) => Either::Left(streamed.logged(line)),
        Either::Right(own) => {
            line.write_whole(own.size_hint().lower());
            Either::Right(own)
        }
    })
}
