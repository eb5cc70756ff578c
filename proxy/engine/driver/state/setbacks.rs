//! The transitions for what goes wrong: a failed acquisition (served `Stale` while the
//! published token is usable, `Failed` otherwise), a token that stops being usable before its
//! replacement arrives, and an upstream refusing the published token.

use std::time::SystemTime;

use super::super::MIN_INVALIDATION_INTERVAL;
use super::super::events::{Action, Clock, Note, Step};
use super::{DriverState, Phase, http_date};
use crate::engine::credential::EngineError;
use crate::route::demand::Demand;
use crate::route::status::RouteStatus;

impl DriverState {
    pub(super) fn failed(
        &mut self,
        step: Step,
        error: EngineError,
        clock: Clock,
        out: &mut Vec<Action>,
    ) {
        let now = clock.now;
        self.failures = self.failures.saturating_add(1);
        let since = *self.failing_since.get_or_insert(now);
        let next_attempt =
            self.backoff
                .next_attempt(now, clock.jitter, error.blocked_until, error.permanent);
        let serving = self
            .serving()
            .filter(|c| now < c.usable_until)
            .map(|c| (c.token.expires_at, c.generation));
        out.push(Action::Count {
            step,
            outcome: "failed",
        });
        out.push(Action::Log(Note::Failed {
            step,
            failures: self.failures,
            error: error.clone(),
            next_attempt,
        }));
        self.last_error = Some(error.clone());
        let failures = self.failures;
        match serving {
            // A refused token is dropped even though it has time left: that is what the 401 said.
            Some((expires_at, generation)) if !matches!(step, Step::Invalidate(_)) => {
                let stale = RouteStatus::Stale {
                    expires_at,
                    generation,
                    error,
                    failures,
                    next_attempt,
                };
                self.status(stale, out);
            }
            _ => {
                if let Some(current) = self.current.as_mut().filter(|c| !c.withdrawn) {
                    current.withdrawn = true;
                    out.push(Action::Withdraw);
                }
                let failed = RouteStatus::Failed {
                    error,
                    since,
                    failures,
                    next_attempt,
                };
                self.status(failed, out);
            }
        }
        self.wait(next_attempt);
    }

    /// The published token stopped being usable before a replacement arrived.
    pub(super) fn withdraw(&mut self, now: SystemTime, out: &mut Vec<Action>) {
        let Some(current) = self.current.as_mut().filter(|c| !c.withdrawn) else {
            return;
        };
        current.withdrawn = true;
        let (generation, expires_at) = (current.generation, current.token.expires_at);
        out.push(Action::Withdraw);
        let error = self.last_error.clone().unwrap_or_else(|| {
            self.error(format!(
                "the token stopped being usable (it expires at {}) and no new one has been acquired yet",
                http_date(expires_at)
            ))
        });
        out.push(Action::Log(Note::Withdrawn {
            generation,
            expires_at,
            cause: error.message.clone(),
        }));
        let failed = RouteStatus::Failed {
            error,
            since: *self.failing_since.get_or_insert(now),
            failures: self.failures,
            next_attempt: self.status_next_attempt.unwrap_or(now),
        };
        self.status(failed, out);
    }

    /// Acts on a refusal of the published snapshot now, or defers it to [`MIN_INVALIDATION_INTERVAL`]
    /// after the last one.
    pub(super) fn demand(
        &mut self,
        demand: Demand,
        wake_at: SystemTime,
        now: SystemTime,
        out: &mut Vec<Action>,
    ) {
        let mut recheck_at = None;
        if demand.retry != self.handled_retry {
            self.handled_retry = demand.retry;
            // A reload: a failing route tries again now, with its backoff restarted.
            if self.failures > 0 {
                self.backoff.reset();
                out.push(Action::Log(Note::RetryAfterReload));
                let step = self.timer_step(now);
                return self.acquire(step, out);
            }
        }
        if let Some(refused) = demand.invalidated
            && let Some(current) = self.serving()
            && current.generation == refused
            && self.handled_invalidation != Some(refused)
        {
            let earliest = self
                .last_invalidation
                .map(|l| l + MIN_INVALIDATION_INTERVAL);
            match earliest {
                Some(earliest) if now < earliest => recheck_at = Some(earliest),
                _ => {
                    let step = Step::Invalidate(current.token.token_generation);
                    self.handled_invalidation = Some(refused);
                    self.last_invalidation = Some(now);
                    out.push(Action::Log(Note::Invalidated {
                        generation: refused,
                    }));
                    return self.acquire(step, out);
                }
            }
        }
        self.phase = Phase::Waiting {
            wake_at,
            recheck_at,
        };
    }
}
