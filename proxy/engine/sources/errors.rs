//! Turning transport, parse and cache failures into [`EngineError`]s that name the peer and what
//! it said (ESTS `error`, AADSTS code, correlation id, IMDS hints), never a secret.

use std::time::{Duration, SystemTime};

use crate::identity::response_json::ResponseError;
use crate::net::token_transport::TransportError;

use crate::engine::cache::{CacheError, Failure};
use crate::engine::credential::EngineError;

/// A failure with no peer answer behind it (bad input, local error).
pub(crate) fn local(identity: &str, message: impl Into<String>) -> EngineError {
    EngineError {
        identity: identity.to_string(),
        message: message.into(),
        aadsts: None,
        correlation_id: None,
        blocked_until: None,
        permanent: false,
    }
}

/// The peer could not be reached or did not answer.
pub(crate) fn transport(identity: &str, peer: &str, error: &TransportError) -> EngineError {
    local(identity, format!("{peer}: {error}"))
}

/// The peer answered, but not with something usable. `host` names it.
pub(crate) fn response(
    identity: &str,
    peer: &str,
    host: &str,
    error: &ResponseError,
) -> EngineError {
    match error.ests() {
        Some(ests) => EngineError {
            identity: identity.to_string(),
            message: format!("{peer} {host} refused: {ests}"),
            aadsts: ests.aadsts,
            correlation_id: ests.correlation_id.clone(),
            blocked_until: None,
            permanent: false,
        },
        None => local(identity, format!("{peer} {host}: {error}")),
    }
}

/// A failure for the cache, blocking identical requests for `retry_after` when the peer asked.
pub(crate) fn failure(
    mut error: EngineError,
    retry_after: Option<Duration>,
) -> Failure<EngineError> {
    if let Some(wait) = retry_after {
        error.blocked_until =
            Some(SystemTime::now() + wait.min(crate::engine::cache::MAX_RETRY_AFTER));
    }
    Failure { error, retry_after }
}

/// What the cache said, as the engine's error.
pub(crate) fn from_cache(error: CacheError<EngineError>) -> EngineError {
    match error {
        CacheError::Acquire(e) => e,
        CacheError::Blocked { until, mut last } => {
            last.blocked_until = Some(until);
            if !last.message.contains("blocked until") {
                last.message = format!(
                    "{} (blocked until {} as the peer asked with Retry-After)",
                    last.message,
                    httpdate::fmt_http_date(until)
                );
            }
            last
        }
    }
}
