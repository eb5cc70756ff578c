//! When a token stops being usable and when to refresh it ahead of that (protocol.md §6).

use std::time::{Duration, SystemTime};

/// A token is usable while it has at least this long to live (MSAL's rule).
pub const DEFAULT_USABLE_MARGIN: Duration = Duration::from_secs(5 * 60);

/// MSAL spreads proactive refreshes by up to this much so a fleet does not refresh in lockstep.
pub const MAX_REFRESH_JITTER: Duration = Duration::from_secs(300);

/// Managed-identity responses without `refresh_in` are refreshed at half-life only when they live
/// longer than this (MSAL's rule); shorter ones are refreshed just before they stop being usable.
pub const HALF_LIFE_MIN_LIFETIME: Duration = Duration::from_secs(2 * 60 * 60);

/// How far before the end of usability a token with no other refresh hint is refreshed, so that
/// one failed attempt and its retry still land before the token stops being usable.
pub const REFRESH_LEAD: Duration = Duration::from_secs(60);

/// The usability and refresh rules, with the margin configurable per deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// A token is usable while `expires_at > now + usable_margin`.
    pub usable_margin: Duration,
    /// Upper bound of the jitter subtracted from `refresh_in`.
    pub max_jitter: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            usable_margin: DEFAULT_USABLE_MARGIN,
            max_jitter: MAX_REFRESH_JITTER,
        }
    }
}

impl RefreshPolicy {
    /// The margin applied to a token of this lifetime. It never exceeds a quarter of the lifetime,
    /// so a token that lives less than the margin (tests, short-lived federated tokens) is still
    /// usable for most of its life instead of being refreshed in a tight loop.
    pub fn margin_for(&self, lifetime: Duration) -> Duration {
        self.usable_margin.min(lifetime / 4)
    }

    /// Whether a token acquired at `acquired_at` and expiring at `expires_at` may still be sent at `now`.
    pub fn is_usable(
        &self,
        acquired_at: SystemTime,
        expires_at: SystemTime,
        now: SystemTime,
    ) -> bool {
        let lifetime = expires_at
            .duration_since(acquired_at)
            .unwrap_or(Duration::ZERO);
        match expires_at.duration_since(now) {
            Ok(left) => left > self.margin_for(lifetime),
            Err(_) => false,
        }
    }

    /// When to start refreshing a token, given its lifetime facts and a jitter sample in `[0, 1)`.
    ///
    /// - `refresh_in` given: `acquired_at + refresh_in - jitter` (jitter at most `max_jitter` and at
    ///   most a tenth of `refresh_in`, so short test lifetimes keep their shape);
    /// - otherwise, lifetime over two hours: half-life;
    /// - otherwise: `REFRESH_LEAD` before the token stops being usable.
    ///
    /// The result is never later than the end of usability, and never before `acquired_at`.
    pub fn refresh_at(
        &self,
        acquired_at: SystemTime,
        expires_at: SystemTime,
        refresh_in: Option<Duration>,
        jitter_sample: f64,
    ) -> SystemTime {
        let lifetime = expires_at
            .duration_since(acquired_at)
            .unwrap_or(Duration::ZERO);
        let usable_until = expires_at - self.margin_for(lifetime);
        let usable_for = usable_until
            .duration_since(acquired_at)
            .unwrap_or(Duration::ZERO);
        let after = match refresh_in {
            Some(refresh_in) => {
                let jitter_cap = self.max_jitter.min(refresh_in / 10);
                refresh_in.saturating_sub(jitter_cap.mul_f64(jitter_sample.clamp(0.0, 1.0)))
            }
            None if lifetime > HALF_LIFE_MIN_LIFETIME => lifetime / 2,
            // Leave room for one retry, but never more than half of the usable window.
            None => usable_for.saturating_sub(REFRESH_LEAD.min(usable_for / 2)),
        };
        acquired_at + after.min(usable_for)
    }
}

/// A uniform sample in `[0, 1)` from the system CSPRNG (falls back to 0.5: jitter only spreads
/// load, so a failed draw must not fail a refresh).
pub fn jitter_sample() -> f64 {
    let mut bytes = [0u8; 8];
    match aws_lc_rs::rand::fill(&mut bytes) {
        // 53 random bits fill an f64 mantissa exactly.
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn usable_until_five_minutes_before_expiry() {
        let p = RefreshPolicy::default();
        let exp = T0 + secs(3600);
        assert!(p.is_usable(T0, exp, T0 + secs(3600 - 301)));
        assert!(!p.is_usable(T0, exp, T0 + secs(3600 - 300)));
        assert!(!p.is_usable(T0, exp, T0 + secs(4000)));
    }

    #[test]
    fn short_lifetimes_keep_three_quarters_usable() {
        let p = RefreshPolicy::default();
        let exp = T0 + secs(60);
        assert!(p.is_usable(T0, exp, T0 + secs(44)));
        assert!(!p.is_usable(T0, exp, T0 + secs(45)));
    }

    #[test]
    fn refresh_in_with_bounded_jitter() {
        let p = RefreshPolicy::default();
        let exp = T0 + secs(86_400);
        assert_eq!(
            p.refresh_at(T0, exp, Some(secs(43_200)), 0.0),
            T0 + secs(43_200)
        );
        // Jitter never exceeds 300 s.
        assert_eq!(
            p.refresh_at(T0, exp, Some(secs(43_200)), 1.0),
            T0 + secs(42_900)
        );
        // Nor a tenth of a short refresh_in.
        assert_eq!(
            p.refresh_at(T0, T0 + secs(120), Some(secs(60)), 1.0),
            T0 + secs(54)
        );
    }

    #[test]
    fn half_life_only_for_long_lifetimes() {
        let p = RefreshPolicy::default();
        assert_eq!(
            p.refresh_at(T0, T0 + secs(86_400), None, 0.3),
            T0 + secs(43_200)
        );
        // One hour: refresh 60 s before the 5-minute margin.
        assert_eq!(
            p.refresh_at(T0, T0 + secs(3600), None, 0.3),
            T0 + secs(3600 - 300 - 60)
        );
    }

    #[test]
    fn never_after_usability_ends_nor_before_acquisition() {
        let p = RefreshPolicy::default();
        // refresh_in larger than the usable window is capped to it.
        assert_eq!(
            p.refresh_at(T0, T0 + secs(3600), Some(secs(3590)), 0.0),
            T0 + secs(3300)
        );
        // An already-expired token refreshes immediately.
        assert_eq!(p.refresh_at(T0, T0, None, 0.0), T0);
    }

    #[test]
    fn jitter_samples_are_in_range() {
        for _ in 0..100 {
            let s = jitter_sample();
            assert!((0.0..1.0).contains(&s), "{s}");
        }
    }
}
