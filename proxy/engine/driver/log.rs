//! The driver's log events. The route, identity, flow and token type are fields of the
//! driver's span, so each event carries only what is its own; never a token.

use std::time::SystemTime;

use super::events::Note;

fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// Writes one log event; the route, identity, flow and token type are the span's.
pub(super) fn log(note: Note) {
    match note {
        Note::LazyWaiting => tracing::info!("lazy route: waiting for its first request"),
        Note::Published {
            step,
            token,
            generation,
            refresh_at,
            rotated,
        } => tracing::info!(
            step = step.name(),
            generation,
            token_generation = token.token_generation,
            expires_at = %http_date(token.expires_at),
            refresh_at = %http_date(refresh_at),
            x5t = token.x5t.as_deref(),
            rotated,
            outcome = "published",
            "route token published"
        ),
        Note::Failed {
            step,
            failures,
            error,
            next_attempt,
        } => tracing::warn!(
            step = step.name(),
            outcome = "failed",
            class = error.failure_class(),
            failures,
            failed_identity = %error.identity,
            cause = %error.message,
            aadsts = error.aadsts,
            correlation_id = error.correlation_id.as_deref(),
            next_attempt = %http_date(next_attempt),
            "token acquisition failed"
        ),
        Note::Withdrawn {
            generation,
            expires_at,
            cause,
        } => tracing::warn!(
            generation,
            expires_at = %http_date(expires_at),
            outcome = "withdrawn",
            cause = %cause,
            "route token no longer usable; requests get 503 until a new token is acquired"
        ),
        Note::Invalidated { generation } => tracing::info!(
            generation,
            outcome = "invalidated",
            "upstream refused the token (401 invalid_token); acquiring another"
        ),
        Note::BindingChanged => tracing::info!(
            outcome = "binding_changed",
            "binding certificate changed; fetching a token for the new one"
        ),
        Note::RetryAfterReload => tracing::info!(
            outcome = "retry_after_reload",
            "config reloaded; retrying the failing acquisition now"
        ),
    }
}
