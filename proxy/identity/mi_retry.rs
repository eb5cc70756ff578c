//! MSAL.NET's retry policy for every managed-identity source other than IMDS
//! (`DefaultRetryPolicy` with `RequestType.ManagedIdentityDefault`): App Service, Azure Arc,
//! Service Fabric, Cloud Shell and Machine Learning. Pure: the caller sleeps and counts.

use std::time::{Duration, Instant, SystemTime};

use crate::identity::retry_policy::{Outcome, RetryDecision, retry_after};

/// MSAL's `DefaultManagedIdentityMaxRetries`.
pub const MI_MAX_RETRIES: u32 = 3;
/// MSAL's `DefaultManagedIdentityRetryDelayMs`: the wait, unless `Retry-After` asks for longer.
pub const MI_RETRY_DELAY: Duration = Duration::from_secs(1);
/// A `Retry-After` longer than this is not waited out inline (MSAL would sleep it, holding the
/// identity's turn): the call ends and identical requests are blocked until then instead.
pub const MI_MAX_INLINE_WAIT: Duration = Duration::from_secs(60);

/// The statuses MSAL retries (`HttpRetryConditions.DefaultManagedIdentity`): 404, 408, 429,
/// 500, 503, 504. Not 410, 502 or other 5xx, unlike IMDS.
pub fn retriable_status(status: u16) -> bool {
    matches!(status, 404 | 408 | 429 | 500 | 503 | 504)
}

/// After `retries_done` retries the latest attempt ended in `outcome`: retry after
/// max(1 s, `Retry-After`) up to three times on a retriable status or a timeout.
pub fn managed_identity(
    retries_done: u32,
    outcome: &Outcome<'_>,
    now: Instant,
    wall_now: SystemTime,
) -> RetryDecision {
    let asked = match outcome {
        Outcome::Timeout => None,
        Outcome::Response { status, headers } => {
            if !retriable_status(status.as_u16()) {
                return RetryDecision::GiveUp;
            }
            retry_after(headers, wall_now)
        }
    };
    let wait = asked.map_or(MI_RETRY_DELAY, |a| a.max(MI_RETRY_DELAY));
    if retries_done >= MI_MAX_RETRIES {
        return match asked {
            Some(a) => RetryDecision::BlockedUntil(now + a),
            None => RetryDecision::GiveUp,
        };
    }
    if wait > MI_MAX_INLINE_WAIT {
        return RetryDecision::BlockedUntil(now + wait);
    }
    RetryDecision::Retry(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::RETRY_AFTER;
    use http::{HeaderMap, HeaderValue, StatusCode};

    fn decide(status: u16, retry_after: Option<&'static str>, retries: u32) -> RetryDecision {
        let mut headers = HeaderMap::new();
        if let Some(v) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from_static(v));
        }
        let outcome = Outcome::Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers: &headers,
        };
        managed_identity(retries, &outcome, Instant::now(), SystemTime::now())
    }

    #[test]
    fn msal_table() {
        for status in [404, 408, 429, 500, 503, 504] {
            for retries in 0..3 {
                assert_eq!(
                    decide(status, None, retries),
                    RetryDecision::Retry(MI_RETRY_DELAY)
                );
            }
            assert_eq!(decide(status, None, 3), RetryDecision::GiveUp, "{status}");
        }
        for status in [400, 401, 403, 410, 502, 505] {
            assert_eq!(decide(status, None, 0), RetryDecision::GiveUp, "{status}");
        }
        assert_eq!(
            decide(429, Some("0"), 0),
            RetryDecision::Retry(MI_RETRY_DELAY)
        );
        assert_eq!(
            decide(503, Some("7"), 1),
            RetryDecision::Retry(Duration::from_secs(7))
        );
        assert!(matches!(
            decide(429, Some("600"), 0),
            RetryDecision::BlockedUntil(_)
        ));
        assert!(matches!(
            decide(429, Some("5"), 3),
            RetryDecision::BlockedUntil(_)
        ));
        let t = managed_identity(0, &Outcome::Timeout, Instant::now(), SystemTime::now());
        assert_eq!(t, RetryDecision::Retry(MI_RETRY_DELAY));
    }
}
