//! A route's token state as the data plane, logs and (later) `/readyz` see it. The driver stores a
//! new value whole; readers `load()` it without locks.

use std::time::SystemTime;

use std::fmt;

/// Where a route's token acquisition stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteStatus {
    /// No token yet: the first acquisition has not finished (or, for a lazy route, not started).
    Pending {
        /// Lazy and still waiting for its first request.
        lazy: bool,
        /// Since when the route has been in this state.
        since: SystemTime,
    },
    /// A usable token is published.
    Ready {
        /// When the published token expires.
        expires_at: SystemTime,
        /// The published snapshot's generation.
        generation: u64,
    },
    /// Refreshing failed, but the published token is still usable and keeps being served.
    Stale {
        /// When the published token expires.
        expires_at: SystemTime,
        /// The published snapshot's generation.
        generation: u64,
        /// The last refresh failure.
        error: EngineError,
        /// Failed attempts since the last success.
        failures: u32,
        /// When the driver tries again.
        next_attempt: SystemTime,
    },
    /// No usable token: requests get 503 naming `error` until an acquisition succeeds.
    Failed {
        /// The failure.
        error: EngineError,
        /// Since when the route has been in this state.
        since: SystemTime,
        /// Failed attempts since the last success.
        failures: u32,
        /// When the driver tries again.
        next_attempt: SystemTime,
    },
}

impl RouteStatus {
    /// A fresh route's status.
    pub fn pending(lazy: bool) -> Self {
        RouteStatus::Pending {
            lazy,
            since: SystemTime::now(),
        }
    }

    /// A short name for logs and metrics: `pending`, `ready`, `stale` or `failed`.
    pub fn label(&self) -> &'static str {
        match self {
            RouteStatus::Pending { .. } => "pending",
            RouteStatus::Ready { .. } => "ready",
            RouteStatus::Stale { .. } => "stale",
            RouteStatus::Failed { .. } => "failed",
        }
    }

    /// True while no acquisition has finished yet.
    pub fn is_pending(&self) -> bool {
        matches!(self, RouteStatus::Pending { .. })
    }

    /// True when a usable token is published (`Ready` or `Stale`).
    pub fn is_serving(&self) -> bool {
        matches!(self, RouteStatus::Ready { .. } | RouteStatus::Stale { .. })
    }

    /// The last failure, when there is one.
    pub fn error(&self) -> Option<&EngineError> {
        match self {
            RouteStatus::Stale { error, .. } | RouteStatus::Failed { error, .. } => Some(error),
            _ => None,
        }
    }

    /// When the driver next tries to acquire, when it is waiting after a failure.
    pub fn next_attempt(&self) -> Option<SystemTime> {
        match self {
            RouteStatus::Stale { next_attempt, .. } | RouteStatus::Failed { next_attempt, .. } => {
                Some(*next_attempt)
            }
            _ => None,
        }
    }

    /// Failed attempts since the last success.
    pub fn failures(&self) -> u32 {
        match self {
            RouteStatus::Stale { failures, .. } | RouteStatus::Failed { failures, .. } => *failures,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn error() -> EngineError {
        EngineError {
            identity: "app".into(),
            message: "token endpoint refused".into(),
            aadsts: Some(7_000_218),
            correlation_id: Some("c0ffee".into()),
            blocked_until: None,
            permanent: false,
        }
    }

    #[test]
    fn accessors_follow_the_variant() {
        let now = SystemTime::now();
        let pending = RouteStatus::pending(true);
        assert!(pending.is_pending() && !pending.is_serving());
        assert_eq!(pending.label(), "pending");
        assert_eq!(pending.error(), None);

        let stale = RouteStatus::Stale {
            expires_at: now,
            generation: 3,
            error: error(),
            failures: 2,
            next_attempt: now + Duration::from_secs(2),
        };
        assert!(stale.is_serving());
        assert_eq!(stale.failures(), 2);
        assert_eq!(stale.error().and_then(|e| e.aadsts), Some(7_000_218));
        assert_eq!(stale.next_attempt(), Some(now + Duration::from_secs(2)));

        let failed = RouteStatus::Failed {
            error: error(),
            since: now,
            failures: 1,
            next_attempt: now,
        };
        assert!(!failed.is_serving() && !failed.is_pending());
        assert_eq!(failed.label(), "failed");

        let ready = RouteStatus::Ready {
            expires_at: now,
            generation: 1,
        };
        assert!(ready.is_serving());
        assert_eq!((ready.failures(), ready.next_attempt()), (0, None));
    }
}

/// Why no token could be had: what a 503 body, `/readyz` and logs show. Never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineError {
    /// The identity whose acquisition failed (for FIC, the leg that failed).
    pub identity: String,
    /// A one-line human explanation naming the peer and what it said, e.g.
    /// `token endpoint westus3.mtlsauth.microsoft.com refused: invalid_client AADSTS7000218 (HTTP 401, correlation id …)`.
    pub message: String,
    /// The AADSTS code, when the peer sent one.
    pub aadsts: Option<u32>,
    /// The peer's correlation id, when it sent one.
    pub correlation_id: Option<String>,
    /// Set while a `Retry-After` keeps identical requests from being sent.
    pub blocked_until: Option<SystemTime>,
    /// The peer refused in a way that retrying the same request cannot fix (a 4xx other than
    /// 408, 410 and 429: `invalid_client`, `unauthorized_client`, `invalid_scope`, …): the
    /// driver retries on its long schedule until a reload.
    pub permanent: bool,
}

impl EngineError {
    /// `permanent_failure` or `transient_failure`: the reason `/readyz` and the metrics show.
    pub fn failure_class(&self) -> &'static str {
        if self.permanent {
            "permanent_failure"
        } else {
            "transient_failure"
        }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "identity {}: {}", self.identity, self.message)
    }
}

impl std::error::Error for EngineError {}
