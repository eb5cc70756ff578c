//! Retry spacing after a failed acquisition: exponential with jitter, capped; a short schedule
//! for failures that heal by themselves and a long one for permanent refusals.

use std::time::{Duration, SystemTime};

/// The first retry comes this soon: a transient failure (a dropped connection) heals quickly.
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Retries never wait longer than this, so a route recovers within a minute of its peer.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// After a permanent refusal (`invalid_client`, `unauthorized_client`, `invalid_scope`, …) the
/// first retry waits this long: nothing changes until someone fixes the app registration or the
/// config, and a reload retries at once anyway, so minutes cost nothing while seconds would
/// hammer ESTS (MSAL never retries these at all).
pub(crate) const PERMANENT_INITIAL_BACKOFF: Duration = Duration::from_secs(5 * 60);
/// Permanent refusals are retried at least this often, so a fix made in Entra ID (a consent, a
/// registered certificate) is picked up within half an hour even without a reload.
pub(crate) const PERMANENT_MAX_BACKOFF: Duration = Duration::from_secs(30 * 60);

/// Exponential backoff, each delay drawn from `(base/2, base]` so a fleet does not retry in
/// lockstep: 1 s, 2 s, 4 s, … 60 s after transient failures; 5 min, 10 min, 20 min, 30 min after
/// permanent refusals (each schedule doubles on its own).
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    base: Duration,
    permanent_base: Duration,
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
            permanent_base: PERMANENT_INITIAL_BACKOFF,
        }
    }

    /// Back to the first step of both schedules (after a success, a reload, a new certificate).
    pub(crate) fn reset(&mut self) {
        self.base = INITIAL_BACKOFF;
        self.permanent_base = PERMANENT_INITIAL_BACKOFF;
    }

    /// The next delay after a permanent refusal; doubles that schedule's base.
    pub(crate) fn next_permanent_delay(&mut self, jitter_sample: f64) -> Duration {
        let base = self.permanent_base;
        self.permanent_base = (base * 2).min(PERMANENT_MAX_BACKOFF);
        base - (base / 2).mul_f64(jitter_sample.clamp(0.0, 1.0))
    }

    /// The next delay for a jitter sample in `[0, 1)`; doubles the base for the next call.
    pub(crate) fn next_delay(&mut self, jitter_sample: f64) -> Duration {
        let base = self.base;
        self.base = (base * 2).min(MAX_BACKOFF);
        base - (base / 2).mul_f64(jitter_sample.clamp(0.0, 1.0))
    }

    /// When to try again: after the next delay of the schedule `permanent` picks, and never
    /// before `blocked_until` (a peer's Retry-After).
    pub(crate) fn next_attempt(
        &mut self,
        now: SystemTime,
        jitter_sample: f64,
        blocked_until: Option<SystemTime>,
        permanent: bool,
    ) -> SystemTime {
        let delay = if permanent {
            self.next_permanent_delay(jitter_sample)
        } else {
            self.next_delay(jitter_sample)
        };
        let at = now + delay;
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
        assert_eq!(b.next_attempt(now, 0.0, Some(blocked), false), blocked);
        let early = now + Duration::from_millis(10);
        assert_eq!(
            b.next_attempt(now, 0.0, Some(early), false),
            now + Duration::from_secs(2)
        );
    }

    #[test]
    fn permanent_refusals_wait_minutes_doubling_to_half_an_hour() {
        let mut b = Backoff::new();
        let got: Vec<u64> = (0..5)
            .map(|_| b.next_permanent_delay(0.0).as_secs() / 60)
            .collect();
        assert_eq!(got, [5, 10, 20, 30, 30]);
        // The jitter never brings a permanent retry under half the base.
        let mut b = Backoff::new();
        assert_eq!(b.next_permanent_delay(1.0), Duration::from_secs(150));
        // The two schedules are independent, and a reset restarts both.
        let now = SystemTime::UNIX_EPOCH;
        let mut b = Backoff::new();
        assert_eq!(
            b.next_attempt(now, 0.0, None, true),
            now + PERMANENT_INITIAL_BACKOFF
        );
        assert_eq!(b.next_attempt(now, 0.0, None, false), now + INITIAL_BACKOFF);
        b.reset();
        assert_eq!(
            b.next_attempt(now, 0.0, None, true),
            now + PERMANENT_INITIAL_BACKOFF
        );
    }
}
