//! Retry spacing after a failed acquisition: exponential with jitter, capped.

use std::time::{Duration, SystemTime};

/// The first retry comes this soon: a transient failure (a dropped connection) heals quickly.
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Retries never wait longer than this, so a route recovers within a minute of its peer.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Exponential backoff: 1 s, 2 s, 4 s, … 60 s, each delay drawn from `(base/2, base]` so a fleet
/// does not retry in lockstep.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    base: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// Starts at [`INITIAL_BACKOFF`].
    pub(crate) fn new() -> Self {
        Self {
            base: INITIAL_BACKOFF,
        }
    }

    /// Back to the first step (after a success).
    pub(crate) fn reset(&mut self) {
        self.base = INITIAL_BACKOFF;
    }

    /// The next delay for a jitter sample in `[0, 1)`; doubles the base for the next call.
    pub(crate) fn next_delay(&mut self, jitter_sample: f64) -> Duration {
        let base = self.base;
        self.base = (base * 2).min(MAX_BACKOFF);
        base - (base / 2).mul_f64(jitter_sample.clamp(0.0, 1.0))
    }

    /// When to try again: after the next delay, and never before `blocked_until` (a peer's
    /// Retry-After).
    pub(crate) fn next_attempt(
        &mut self,
        now: SystemTime,
        jitter_sample: f64,
        blocked_until: Option<SystemTime>,
    ) -> SystemTime {
        let at = now + self.next_delay(jitter_sample);
        match blocked_until {
            Some(until) if until > at => until,
            _ => at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let got: Vec<u64> = (0..9).map(|_| b.next_delay(0.0).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.reset();
        assert_eq!(b.next_delay(0.0), INITIAL_BACKOFF);
    }

    #[test]
    fn jitter_stays_within_the_upper_half() {
        let mut b = Backoff::new();
        assert_eq!(b.next_delay(1.0), Duration::from_millis(500));
        let d = b.next_delay(0.5);
        assert_eq!(d, Duration::from_millis(1500));
        // Out-of-range samples are clamped rather than producing zero or negative waits.
        let mut b = Backoff::new();
        assert_eq!(b.next_delay(7.0), Duration::from_millis(500));
    }

    #[test]
    fn retry_after_wins_when_later() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut b = Backoff::new();
        let blocked = now + Duration::from_secs(120);
        assert_eq!(b.next_attempt(now, 0.0, Some(blocked)), blocked);
        let early = now + Duration::from_millis(10);
        assert_eq!(
            b.next_attempt(now, 0.0, Some(early)),
            now + Duration::from_secs(2)
        );
    }
}
