//! The route driver's decisions, without I/O: given what it knows and an [`Event`] (a token
//! acquired, a failure, a certificate change, demand, a timer), the next state and the
//! [`Action`]s to take. Time and randomness come in with each event ([`Clock`]), so every
//! transition is a plain function call in the unit tests.

use std::time::{Duration, SystemTime};

use crate::engine::backoff::Backoff;
use crate::engine::credential::EngineError;
use crate::engine::schedule::RefreshPolicy;
use crate::route::status::RouteStatus;

use super::events::{Action, Clock, Event, Note, Step, TokenFacts};

mod setbacks;

/// Where the driver is.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Phase {
    /// A lazy route before its first request.
    Dormant,
    /// Waiting for the credential's answer to this step.
    Acquiring(Step),
    /// A token for `step` arrived; its snapshot is being built.
    Building {
        step: Step,
        token: TokenFacts,
        refresh_at: SystemTime,
    },
    /// Waiting until `wake_at`, or an event; a refusal that came too soon after the last one is
    /// looked at again at `recheck_at`.
    Waiting {
        wake_at: SystemTime,
        recheck_at: Option<SystemTime>,
    },
}

/// The token currently published (or last published, once withdrawn).
#[derive(Clone, Debug, PartialEq)]
struct Current {
    /// The snapshot's generation.
    generation: u64,
    token: TokenFacts,
    usable_until: SystemTime,
    withdrawn: bool,
}

/// The driver's memory between events.
#[derive(Clone, Debug)]
pub(super) struct DriverState {
    /// Names errors the driver makes itself.
    identity: String,
    policy: RefreshPolicy,
    phase: Phase,
    current: Option<Current>,
    backoff: Backoff,
    failures: u32,
    failing_since: Option<SystemTime>,
    last_error: Option<EngineError>,
    /// When the last status stored said the next attempt is.
    status_next_attempt: Option<SystemTime>,
    /// The last snapshot generation built.
    generation: u64,
    /// The snapshot generation whose refusal was last acted on, and when.
    handled_invalidation: Option<u64>,
    last_invalidation: Option<SystemTime>,
    /// The last reload retry request ([`Demand::retry`](crate::route::demand::Demand)) seen.
    handled_retry: u64,
}

/// When a token stops being usable under `policy` (the inverse of `RefreshPolicy::is_usable`).
fn usable_until(policy: &RefreshPolicy, token: &TokenFacts) -> SystemTime {
    let lifetime = token
        .expires_at
        .duration_since(token.acquired_at)
        .unwrap_or(Duration::ZERO);
    token
        .expires_at
        .checked_sub(policy.margin_for(lifetime))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

impl DriverState {
    /// A driver for `identity`'s tokens: a lazy one waits for demand, an eager one acquires now.
    pub(super) fn start(identity: &str, policy: RefreshPolicy, lazy: bool) -> (Self, Vec<Action>) {
        let (phase, action) = if lazy {
            (Phase::Dormant, Action::Log(Note::LazyWaiting))
        } else {
            (Phase::Acquiring(Step::Get), Action::Acquire(Step::Get))
        };
        let state = Self {
            identity: identity.to_string(),
            policy,
            phase,
            current: None,
            backoff: Backoff::new(),
            failures: 0,
            failing_since: None,
            last_error: None,
            status_next_attempt: None,
            generation: 0,
            handled_invalidation: None,
            last_invalidation: None,
            handled_retry: 0,
        };
        (state, vec![action])
    }

    pub(super) fn phase(&self) -> &Phase {
        &self.phase
    }

    /// When a waiting driver acts next.
    pub(super) fn wake_at(&self) -> Option<SystemTime> {
        match self.phase {
            Phase::Waiting { wake_at, .. } => Some(wake_at),
            _ => None,
        }
    }

    /// When a deferred refusal is looked at again.
    pub(super) fn recheck_at(&self) -> Option<SystemTime> {
        match self.phase {
            Phase::Waiting { recheck_at, .. } => recheck_at,
            _ => None,
        }
    }

    /// When the published token stops being usable (`None`: nothing is served).
    pub(super) fn withdraw_at(&self) -> Option<SystemTime> {
        self.serving().map(|c| c.usable_until)
    }

    fn serving(&self) -> Option<&Current> {
        self.current.as_ref().filter(|c| !c.withdrawn)
    }

    /// Handles `event` at `clock`: the state moves on; the returned actions are to be taken in
    /// order. Events that do not apply where the driver is change nothing.
    pub(super) fn handle(&mut self, event: Event, clock: Clock) -> Vec<Action> {
        let mut out = Vec::new();
        match (self.phase.clone(), event) {
            (_, Event::UsableEnded) => self.withdraw(clock.now, &mut out),
            (Phase::Dormant, Event::Demand(demand)) if demand.started => {
                self.acquire(Step::Get, &mut out)
            }
            (Phase::Acquiring(step), Event::Acquired(token)) => {
                self.acquired(step, token, clock, &mut out)
            }
            (Phase::Acquiring(step) | Phase::Building { step, .. }, Event::Failed(error)) => {
                self.failed(step, error, clock, &mut out)
            }
            (
                Phase::Building {
                    step,
                    token,
                    refresh_at,
                },
                Event::Built,
            ) => self.publish(step, token, refresh_at, &mut out),
            (Phase::Waiting { .. }, Event::Timer) => {
                let step = self.timer_step(clock.now);
                self.acquire(step, &mut out)
            }
            (Phase::Waiting { .. }, Event::BindingChanged) => {
                out.push(Action::Log(Note::BindingChanged));
                // Acquired at once, even in a permanent failure's long wait: the new certificate
                // may be what was missing.
                self.acquire(Step::Get, &mut out)
            }
            (Phase::Waiting { wake_at, .. }, Event::Demand(demand)) => {
                self.demand(demand, wake_at, clock.now, &mut out)
            }
            _ => {}
        }
        out
    }

    fn acquire(&mut self, step: Step, out: &mut Vec<Action>) {
        self.phase = Phase::Acquiring(step);
        out.push(Action::Acquire(step));
    }

    fn wait(&mut self, wake_at: SystemTime) {
        self.phase = Phase::Waiting {
            wake_at,
            recheck_at: None,
        };
    }

    fn status(&mut self, status: RouteStatus, out: &mut Vec<Action>) {
        self.status_next_attempt = status.next_attempt();
        out.push(Action::Status(status));
    }

    fn error(&self, message: String) -> EngineError {
        EngineError {
            identity: self.identity.clone(),
            message,
            aadsts: None,
            correlation_id: None,
            blocked_until: None,
            permanent: false,
        }
    }

    /// Whether `token` is the one published (same credential generation, expiry and binding).
    fn is_current(&self, token: &TokenFacts) -> bool {
        self.current.as_ref().is_some_and(|c| {
            c.token.token_generation == token.token_generation
                && c.token.expires_at == token.expires_at
                && c.token.x5t == token.x5t
        })
    }

    /// Refuses tokens that must not be published (unusable ones, and the very token a refresh
    /// or invalidation was meant to replace); otherwise builds, or keeps the unchanged one.
    fn acquired(&mut self, step: Step, token: TokenFacts, clock: Clock, out: &mut Vec<Action>) {
        if !self
            .policy
            .is_usable(token.acquired_at, token.expires_at, clock.now)
        {
            let error = self.error(format!(
                "the credential returned a token that is no longer usable (it expires at {})",
                http_date(token.expires_at)
            ));
            return self.failed(step, error, clock, out);
        }
        let same = self.is_current(&token);
        if step != Step::Get && same {
            let error = self.error(match step {
                Step::Invalidate(_) => {
                    "the credential returned the token the upstream just refused".to_string()
                }
                _ => format!(
                    "no newer token yet; the current one expires at {}",
                    http_date(token.expires_at)
                ),
            });
            return self.failed(step, error, clock, out);
        }
        let refresh_at = self.policy.refresh_at(
            token.acquired_at,
            token.expires_at,
            token.refresh_in,
            clock.jitter,
        );
        if !(same && self.serving().is_some()) {
            let generation = self.generation + 1;
            self.phase = Phase::Building {
                step,
                token,
                refresh_at,
            };
            out.push(Action::Build { generation });
            return;
        }
        out.push(Action::Count {
            step,
            outcome: "unchanged",
        });
        if self.failures > 0 {
            // The same token again (a binding signal with nothing new) is not a recovery: keep
            // the failure streak and its retry schedule.
            return self.wait(self.status_next_attempt.unwrap_or(refresh_at));
        }
        self.recovered();
        self.wait(refresh_at);
    }

    fn publish(
        &mut self,
        step: Step,
        token: TokenFacts,
        refresh_at: SystemTime,
        out: &mut Vec<Action>,
    ) {
        self.generation += 1;
        let generation = self.generation;
        let rotated = self
            .current
            .as_ref()
            .is_some_and(|c| c.token.x5t != token.x5t);
        out.push(Action::Publish);
        self.status(
            RouteStatus::Ready {
                expires_at: token.expires_at,
                generation,
            },
            out,
        );
        self.current = Some(Current {
            generation,
            usable_until: usable_until(&self.policy, &token),
            token: token.clone(),
            withdrawn: false,
        });
        out.push(Action::Log(Note::Published {
            step,
            token,
            generation,
            refresh_at,
            rotated,
        }));
        // Counted once the snapshot is built: a build failure counts as `failed` only.
        out.push(Action::Count {
            step,
            outcome: "published",
        });
        self.recovered();
        self.wait(refresh_at);
    }

    fn recovered(&mut self) {
        self.backoff.reset();
        self.failures = 0;
        self.failing_since = None;
        self.last_error = None;
    }

    /// The step when the timer fires: refresh a still-usable token, otherwise get one.
    fn timer_step(&self, now: SystemTime) -> Step {
        match self.serving() {
            Some(c)
                if self
                    .policy
                    .is_usable(c.token.acquired_at, c.token.expires_at, now) =>
            {
                Step::Refresh(c.token.token_generation)
            }
            _ => Step::Get,
        }
    }
}
