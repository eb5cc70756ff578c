//! When to retry a failed credential call (protocol.md §7). Pure functions: the caller sleeps,
//! counts and remembers blocks.

use std::time::{Duration, Instant, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, StatusCode};

/// Longest `Retry-After` honoured. ESTS asks for seconds to minutes; an hour bounds a hostile or
/// broken value while still respecting any real throttling window.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// The token endpoint's single retry waits this long (MSAL's value).
pub const TOKEN_ENDPOINT_RETRY_DELAY: Duration = Duration::from_secs(1);
/// The token endpoint is retried at most once: ESTS failures rarely clear faster, and the engine
/// keeps serving the cached token meanwhile.
pub const TOKEN_ENDPOINT_MAX_RETRIES: u32 = 1;
/// IMDS answered 410 first (it is being upgraded): retry this often…
pub const IMDS_GONE_MAX_RETRIES: u32 = 7;
/// …this far apart (MSAL's values; the upgrade takes up to about 70 s).
pub const IMDS_GONE_RETRY_DELAY: Duration = Duration::from_secs(10);
/// Otherwise IMDS is retried with these waits (exponential, MSAL's values).
pub const IMDS_BACKOFF: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// Whether a refusal with `status` is permanent: retrying the same request cannot succeed until
/// something changes (the app registration, the config, the certificate). That is every 4xx
/// except 408 (timeout), 410 (IMDS upgrading) and 429 (throttled); from IMDS also except 404,
/// which IMDS answers while an identity is being assigned (MSAL retries it). A 404 from the
/// IMDSv2 probe (`imds_probe`) means "no IMDSv2 on this host", which is permanent.
pub fn is_permanent_refusal(status: StatusCode, imds: bool, imds_probe: bool) -> bool {
    let transient_4xx = match status.as_u16() {
        408 | 410 | 429 => true,
        404 => imds && !imds_probe,
        _ => false,
    };
    status.is_client_error() && !transient_4xx
}

/// What happened to an attempt.
#[derive(Clone, Copy, Debug)]
pub enum Outcome<'a> {
    /// The peer answered.
    Response {
        /// The status.
        status: StatusCode,
        /// The headers (for `Retry-After`).
        headers: &'a HeaderMap,
    },
    /// No answer within the call's timeout.
    Timeout,
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Send the same request again after this wait.
    Retry(Duration),
    /// Stop; report the failure.
    GiveUp,
    /// Stop, and send no identical request before this instant (the peer sent `Retry-After`).
    BlockedUntil(Instant),
}

/// `Retry-After` as delta-seconds or an HTTP-date, capped at [`MAX_RETRY_AFTER`]. A date in the
/// past is zero; a malformed value counts as absent.
pub fn retry_after(headers: &HeaderMap, wall_now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Digits too long for u64 are still "a very long time".
        Duration::from_secs(value.parse().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(wall_now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The token endpoint: after `retries_done` retries, the latest attempt ended in `outcome`.
///
/// - Any `Retry-After` blocks identical requests until then; never retried now.
/// - A 5xx without `Retry-After`, or a timeout: one retry after one second.
/// - Everything else (4xx including 429, a second failure): give up.
pub fn token_endpoint(
    retries_done: u32,
    outcome: &Outcome<'_>,
    now: Instant,
    wall_now: SystemTime,
) -> RetryDecision {
    let retriable = match outcome {
        Outcome::Timeout => true,
        Outcome::Response { status, headers } => {
            if status.is_success() {
                return RetryDecision::GiveUp;
            }
            if let Some(wait) = retry_after(headers, wall_now) {
                return RetryDecision::BlockedUntil(now + wait);
            }
            status.is_server_error()
        }
    };
    if retriable && retries_done < TOKEN_ENDPOINT_MAX_RETRIES {
        RetryDecision::Retry(TOKEN_ENDPOINT_RETRY_DELAY)
    } else {
        RetryDecision::GiveUp
    }
}

/// Which IMDS retry schedule a call is on, fixed by its first failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImdsSchedule {
    /// The first failure was 410 Gone: up to 7 retries, 10 s apart.
    Gone,
    /// Anything else: up to 3 retries after 1 s, 2 s, 4 s.
    Standard,
}

impl ImdsSchedule {
    /// The schedule for a call whose first failed attempt ended in `first_failure`.
    pub fn for_first_failure(first_failure: &Outcome<'_>) -> Self {
        match first_failure {
            Outcome::Response { status, .. } if *status == StatusCode::GONE => ImdsSchedule::Gone,
            _ => ImdsSchedule::Standard,
        }
    }
}

/// IMDS: after `retries_done` retries on `schedule`, the latest attempt ended in `outcome`.
/// Retried: 404, 408, 410, 429, 5xx and timeouts. IMDS's `Retry-After` is not used (MSAL ignores
/// it too; the schedule is already short and bounded).
///
/// Not for the IMDSv2 probe: a 404 from `getplatformmetadata` is a definite "no IMDSv2".
pub fn imds(schedule: ImdsSchedule, retries_done: u32, outcome: &Outcome<'_>) -> RetryDecision {
    let retriable = match outcome {
        Outcome::Timeout => true,
        Outcome::Response { status, .. } => {
            matches!(status.as_u16(), 404 | 408 | 410 | 429) || status.is_server_error()
        }
    };
    if !retriable {
        return RetryDecision::GiveUp;
    }
    match schedule {
        ImdsSchedule::Gone if retries_done < IMDS_GONE_MAX_RETRIES => {
            RetryDecision::Retry(IMDS_GONE_RETRY_DELAY)
        }
        ImdsSchedule::Standard => usize::try_from(retries_done)
            .ok()
            .and_then(|i| IMDS_BACKOFF.get(i))
            .map_or(RetryDecision::GiveUp, |wait| RetryDecision::Retry(*wait)),
        ImdsSchedule::Gone => RetryDecision::GiveUp,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn permanent_refusals_are_4xx_but_timeouts_gone_and_throttling() {
        let p = |code: u16, imds, probe| {
            is_permanent_refusal(StatusCode::from_u16(code).unwrap(), imds, probe)
        };
        for code in [400, 401, 403, 404, 405, 409, 413, 422] {
            assert!(p(code, false, false), "{code}");
        }
        for code in [200, 408, 410, 429, 500, 502, 503, 504] {
            assert!(!p(code, false, false), "{code}");
            assert!(!p(code, true, false), "{code}");
        }
        // IMDS answers 404 while an identity is being assigned; the v2 probe's 404 is final.
        assert!(!p(404, true, false));
        assert!(p(404, true, true));
        assert!(p(400, true, false));
    }
    use super::*;
    use http::HeaderValue;

    fn headers(retry_after: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = retry_after {
            h.insert(RETRY_AFTER, HeaderValue::from_static(v));
        }
        h
    }

    const WALL: u64 = 1_800_000_000; // 2027-01-15T08:00:00Z

    fn wall() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(WALL)
    }

    #[test]
    fn retry_after_forms() {
        let cases: [(Option<&'static str>, Option<u64>); 9] = [
            (None, None),
            (Some("120"), Some(120)),
            (Some("0"), Some(0)),
            (Some("7200"), Some(3600)),
            (Some("99999999999999999999999"), Some(3600)),
            (Some("Fri, 15 Jan 2027 08:01:00 GMT"), Some(60)),
            (Some("Fri, 15 Jan 2027 07:00:00 GMT"), Some(0)),
            (Some("soon"), None),
            (Some("-5"), None),
        ];
        for (value, expected) in cases {
            assert_eq!(
                retry_after(&headers(value), wall()),
                expected.map(Duration::from_secs),
                "{value:?}"
            );
        }
    }

    #[test]
    fn token_endpoint_table() {
        let now = Instant::now();
        let retry = RetryDecision::Retry(TOKEN_ENDPOINT_RETRY_DELAY);
        let blocked = |s| RetryDecision::BlockedUntil(now + Duration::from_secs(s));
        let cases: Vec<(u32, u16, Option<&'static str>, RetryDecision)> = vec![
            (0, 500, None, retry),
            (0, 503, None, retry),
            (1, 503, None, RetryDecision::GiveUp),
            (0, 503, Some("30"), blocked(30)),
            (0, 429, None, RetryDecision::GiveUp),
            (0, 429, Some("120"), blocked(120)),
            (0, 429, Some("86400"), blocked(3600)),
            (0, 400, None, RetryDecision::GiveUp),
            (0, 401, None, RetryDecision::GiveUp),
            (0, 400, Some("5"), blocked(5)),
            (0, 404, None, RetryDecision::GiveUp),
            (0, 200, Some("5"), RetryDecision::GiveUp),
        ];
        for (retries, status, ra, expected) in cases {
            let h = headers(ra);
            let outcome = Outcome::Response {
                status: StatusCode::from_u16(status).unwrap(),
                headers: &h,
            };
            assert_eq!(
                token_endpoint(retries, &outcome, now, wall()),
                expected,
                "{retries} {status} {ra:?}"
            );
        }
        assert_eq!(token_endpoint(0, &Outcome::Timeout, now, wall()), retry);
        assert_eq!(
            token_endpoint(1, &Outcome::Timeout, now, wall()),
            RetryDecision::GiveUp
        );
    }

    #[test]
    fn imds_table() {
        let empty = HeaderMap::new();
        let resp = |s| Outcome::Response {
            status: StatusCode::from_u16(s).unwrap(),
            headers: &empty,
        };
        assert_eq!(
            ImdsSchedule::for_first_failure(&resp(410)),
            ImdsSchedule::Gone
        );
        assert_eq!(
            ImdsSchedule::for_first_failure(&resp(500)),
            ImdsSchedule::Standard
        );
        assert_eq!(
            ImdsSchedule::for_first_failure(&Outcome::Timeout),
            ImdsSchedule::Standard
        );
        for status in [404, 408, 410, 429, 500, 502, 503, 504] {
            let o = resp(status);
            assert_eq!(
                imds(ImdsSchedule::Standard, 0, &o),
                RetryDecision::Retry(Duration::from_secs(1)),
                "{status}"
            );
            assert_eq!(
                imds(ImdsSchedule::Standard, 1, &o),
                RetryDecision::Retry(Duration::from_secs(2)),
                "{status}"
            );
            assert_eq!(
                imds(ImdsSchedule::Standard, 2, &o),
                RetryDecision::Retry(Duration::from_secs(4)),
                "{status}"
            );
            assert_eq!(
                imds(ImdsSchedule::Standard, 3, &o),
                RetryDecision::GiveUp,
                "{status}"
            );
        }
        for status in [400, 401, 403, 200] {
            assert_eq!(
                imds(ImdsSchedule::Standard, 0, &resp(status)),
                RetryDecision::GiveUp,
                "{status}"
            );
            assert_eq!(
                imds(ImdsSchedule::Gone, 0, &resp(status)),
                RetryDecision::GiveUp,
                "{status}"
            );
        }
        // First failure 410: seven retries ten seconds apart, whatever the later statuses are.
        for retries in 0..7 {
            assert_eq!(
                imds(
                    ImdsSchedule::Gone,
                    retries,
                    &resp(if retries % 2 == 0 { 410 } else { 503 })
                ),
                RetryDecision::Retry(Duration::from_secs(10))
            );
        }
        assert_eq!(
            imds(ImdsSchedule::Gone, 7, &resp(410)),
            RetryDecision::GiveUp
        );
        assert_eq!(
            imds(ImdsSchedule::Standard, 0, &Outcome::Timeout),
            RetryDecision::Retry(Duration::from_secs(1))
        );
        // IMDS's Retry-After does not change the schedule.
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("600"));
        let o = Outcome::Response {
            status: StatusCode::TOO_MANY_REQUESTS,
            headers: &h,
        };
        assert_eq!(
            imds(ImdsSchedule::Standard, 0, &o),
            RetryDecision::Retry(Duration::from_secs(1))
        );
    }
}
