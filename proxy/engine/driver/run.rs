//! One task per route: get a token from the route's [`Credential`], publish a [`Snapshot`] for it,
//! sleep until it should be refreshed (or until the binding certificate changes, or the upstream
//! refuses the token), refresh, publish again.
//!
//! Failures never end the loop. While the published token is usable it keeps being served
//! (`Stale`) and the driver retries with [`Backoff`]; once it stops being usable the snapshot is
//! withdrawn (`Failed`, requests get 503) and retries continue until one succeeds.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::backoff::Backoff;
use super::cache::CachedToken;
use super::credential::{BoxFuture, Credential, EngineError};
use super::schedule::{RefreshPolicy, jitter_sample};
use crate::metrics;
use crate::net::client::UpstreamSettings;
use crate::route::slot::{Demand, RouteSlot, Snapshot};
use crate::route::status::RouteStatus;

/// After an upstream `401 invalid_token` forced a new acquisition, further refusals wait at least
/// this long before forcing another: a resource that refuses every token must not turn each
/// request into a token-endpoint call.
pub const MIN_INVALIDATION_INTERVAL: Duration = Duration::from_secs(5);

/// What a driver needs besides its route's credential and slot.
#[derive(Clone, Debug)]
pub struct DriverSettings {
    /// The route's upstream network settings (for the snapshot's client).
    pub upstream: UpstreamSettings,
    /// When tokens stop being usable and when to refresh them.
    pub policy: RefreshPolicy,
}

/// The driver of one route. See the module docs.
pub struct RouteDriver {
    credential: Arc<dyn Credential>,
    slot: Arc<RouteSlot>,
    settings: DriverSettings,
    /// Subscribed at construction, so the slot counts this driver (and the data plane waits for
    /// it) before its task first runs.
    demand: watch::Receiver<Demand>,
}

impl std::fmt::Debug for RouteDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteDriver")
            .field("route", &self.slot.name())
            .field("labels", self.credential.labels())
            .finish_non_exhaustive()
    }
}

/// What to ask the credential for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// A usable token (first acquisition, binding change, or the published one is gone).
    Get,
    /// A newer token than the one of this credential generation.
    Refresh(u64),
    /// Forget the refused token of this credential generation, then get another.
    Invalidate(u64),
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Get => "get",
            Step::Refresh(_) => "refresh",
            Step::Invalidate(_) => "invalidate",
        }
    }
}

/// The token currently published (or last published, once withdrawn).
struct Current {
    snapshot: Arc<Snapshot>,
    token_generation: u64,
    acquired_at: SystemTime,
    usable_until: SystemTime,
    withdrawn: bool,
}

/// The loop's memory between steps.
struct State {
    current: Option<Current>,
    backoff: Backoff,
    failures: u32,
    failing_since: Option<SystemTime>,
    last_error: Option<EngineError>,
    /// Snapshot generation counter for this route.
    generation: u64,
    /// The snapshot generation whose refusal was last acted on.
    handled_invalidation: Option<u64>,
    last_invalidation: Option<SystemTime>,
}

/// Ends when shutdown is signalled or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Sleeps until `at` (wall clock), or forever when `None`.
async fn sleep_until(at: Option<SystemTime>) {
    match at {
        Some(at) => {
            let wait = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
        }
        None => std::future::pending().await,
    }
}

/// Resolves when the binding changes; `false` when the credential dropped its sender (then the
/// caller stops watching, instead of spinning on a closed channel).
async fn binding_changed(rx: Option<&mut watch::Receiver<u64>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// When a token stops being usable under `policy` (the inverse of `RefreshPolicy::is_usable`).
fn usable_until(
    policy: &RefreshPolicy,
    acquired_at: SystemTime,
    expires_at: SystemTime,
) -> SystemTime {
    let lifetime = expires_at
        .duration_since(acquired_at)
        .unwrap_or(Duration::ZERO);
    expires_at
        .checked_sub(policy.margin_for(lifetime))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

impl RouteDriver {
    /// A driver publishing `credential`'s tokens into `slot`.
    pub fn new(
        credential: Arc<dyn Credential>,
        slot: Arc<RouteSlot>,
        settings: DriverSettings,
    ) -> Self {
        let demand = slot.demand();
        Self {
            credential,
            slot,
            settings,
            demand,
        }
    }

    /// Runs the driver on the current runtime until `shutdown` turns true (or its sender drops).
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    /// The driver loop. Returns only on shutdown.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut demand = self.demand.clone();
        let mut bindings = Some(self.credential.binding_changes());
        if self.slot.info().lazy {
            tracing::info!(route = %self.slot.name(), "lazy route: waiting for its first request");
            tokio::select! {
                started = demand.wait_for(|d| d.started) => if started.is_err() { return },
                _ = stopped(&mut shutdown) => return,
            }
        }
        let mut state = State {
            current: None,
            backoff: Backoff::new(),
            failures: 0,
            failing_since: None,
            last_error: None,
            generation: 0,
            handled_invalidation: None,
            last_invalidation: None,
        };
        let mut step = Step::Get;
        loop {
            let Some(wake_at) = self.attempt(step, &mut state, &mut shutdown).await else {
                return;
            };
            let next = self
                .wait(
                    wake_at,
                    &mut state,
                    &mut demand,
                    &mut bindings,
                    &mut shutdown,
                )
                .await;
            match next {
                Some(s) => step = s,
                None => return,
            }
        }
    }

    /// Runs one step; returns when to act next (`None` on shutdown).
    async fn attempt(
        &self,
        step: Step,
        st: &mut State,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<SystemTime> {
        let credential = &self.credential;
        let mut acquisition: BoxFuture<'_, Result<CachedToken, EngineError>> = match step {
            Step::Get => credential.get(),
            Step::Refresh(seen) => credential.refresh(seen),
            Step::Invalidate(generation) => Box::pin(async move {
                credential.invalidate(generation).await;
                credential.get().await
            }),
        };
        let result = loop {
            let withdraw_at = st
                .current
                .as_ref()
                .filter(|c| !c.withdrawn)
                .map(|c| c.usable_until);
            tokio::select! {
                result = &mut acquisition => break result,
                _ = sleep_until(withdraw_at), if withdraw_at.is_some() => {
                    // The acquisition outlived the published token: stop serving it meanwhile.
                    self.withdraw(st, SystemTime::now());
                }
                _ = stopped(shutdown) => return None,
            }
        };
        let now = SystemTime::now();
        match result.and_then(|cached| self.check(step, &cached, st, now).map(|()| cached)) {
            Ok(cached) => Some(self.on_success(step, cached, st, now)),
            Err(error) => Some(self.on_failure(step, error, st, now)),
        }
    }

    /// Refuses tokens that must not be published: unusable ones, and the very token a refresh or
    /// invalidation was meant to replace.
    fn check(
        &self,
        step: Step,
        cached: &CachedToken,
        st: &State,
        now: SystemTime,
    ) -> Result<(), EngineError> {
        let token = &cached.token;
        if !self
            .settings
            .policy
            .is_usable(cached.acquired_at, token.expires_at, now)
        {
            return Err(self.error(format!(
                "the credential returned a token that is no longer usable (it expires at {})",
                http_date(token.expires_at)
            )));
        }
        if step != Step::Get && self.is_current(cached, st) {
            return Err(self.error(match step {
                Step::Invalidate(_) => {
                    "the credential returned the token the upstream just refused".to_string()
                }
                _ => format!(
                    "no newer token yet; the current one expires at {}",
                    http_date(token.expires_at)
                ),
            }));
        }
        Ok(())
    }

    fn is_current(&self, cached: &CachedToken, st: &State) -> bool {
        st.current.as_ref().is_some_and(|c| {
            c.token_generation == cached.generation
                && c.snapshot.expires_at == cached.token.expires_at
                && c.snapshot.x5t_s256.as_deref()
                    == cached.token.binding.as_ref().map(|b| b.x5t_s256())
        })
    }

    fn error(&self, message: String) -> EngineError {
        EngineError {
            identity: self.credential.labels().identity.clone(),
            message,
            aadsts: None,
            correlation_id: None,
            blocked_until: None,
        }
    }

    fn on_success(
        &self,
        step: Step,
        cached: CachedToken,
        st: &mut State,
        now: SystemTime,
    ) -> SystemTime {
        let policy = &self.settings.policy;
        let token = &cached.token;
        let refresh_at = policy.refresh_at(
            cached.acquired_at,
            token.expires_at,
            token.refresh_in,
            jitter_sample(),
        );
        let unchanged =
            self.is_current(&cached, st) && st.current.as_ref().is_some_and(|c| !c.withdrawn);
        if unchanged && st.failures > 0 {
            // The same token again (a binding signal with nothing new) is not a recovery: keep the
            // failure streak and its retry schedule.
            metrics::token_acquisition(self.credential.labels(), step.name(), "unchanged");
            return self.slot.status().next_attempt().unwrap_or(refresh_at);
        }
        if !unchanged {
            let generation = st.generation + 1;
            let previous = st.current.as_ref().map(|c| c.snapshot.as_ref());
            let snapshot =
                match Snapshot::build_reusing(token, &self.settings.upstream, generation, previous)
                {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        let error = self.error(format!(
                            "cannot build the upstream client for the new token: {e}"
                        ));
                        return self.on_failure(step, error, st, now);
                    }
                };
            st.generation = generation;
            self.slot.publish_arc(Arc::clone(&snapshot));
            self.slot.set_status(RouteStatus::Ready {
                expires_at: token.expires_at,
                generation,
            });
            let rotated = st
                .current
                .as_ref()
                .is_some_and(|c| c.snapshot.x5t_s256 != snapshot.x5t_s256);
            st.current = Some(Current {
                snapshot,
                token_generation: cached.generation,
                acquired_at: cached.acquired_at,
                usable_until: usable_until(policy, cached.acquired_at, token.expires_at),
                withdrawn: false,
            });
            self.log_published(step, &cached, generation, refresh_at, rotated);
            metrics::binding_not_after(
                self.slot.name(),
                token.binding.as_ref().map(|b| b.not_after()),
            );
        }
        // Counted here, after a new snapshot was built: a build failure counts as `failed` only.
        let outcome = if unchanged { "unchanged" } else { "published" };
        metrics::token_acquisition(self.credential.labels(), step.name(), outcome);
        st.backoff.reset();
        st.failures = 0;
        st.failing_since = None;
        st.last_error = None;
        refresh_at
    }

    fn on_failure(
        &self,
        step: Step,
        error: EngineError,
        st: &mut State,
        now: SystemTime,
    ) -> SystemTime {
        st.failures = st.failures.saturating_add(1);
        let since = *st.failing_since.get_or_insert(now);
        let next_attempt = st
            .backoff
            .next_attempt(now, jitter_sample(), error.blocked_until);
        let serving = st
            .current
            .as_ref()
            .filter(|c| !c.withdrawn && now < c.usable_until)
            .map(|c| (c.snapshot.expires_at, c.snapshot.generation));
        let labels = self.credential.labels();
        metrics::token_acquisition(labels, step.name(), "failed");
        tracing::warn!(
            route = %self.slot.name(),
            identity = %labels.identity,
            flow = labels.flow,
            token_type = %labels.token_type,
            step = step.name(),
            outcome = "failed",
            failures = st.failures,
            failed_identity = %error.identity,
            cause = %error.message,
            aadsts = error.aadsts,
            correlation_id = error.correlation_id.as_deref(),
            next_attempt = %http_date(next_attempt),
            "token acquisition failed"
        );
        st.last_error = Some(error.clone());
        match serving {
            // A refused token is dropped even though it has time left: that is what the 401 said.
            Some((expires_at, generation)) if !matches!(step, Step::Invalidate(_)) => {
                self.slot.set_status(RouteStatus::Stale {
                    expires_at,
                    generation,
                    error,
                    failures: st.failures,
                    next_attempt,
                });
            }
            _ => {
                if st.current.as_ref().is_some_and(|c| !c.withdrawn) {
                    self.slot.withdraw();
                    if let Some(c) = st.current.as_mut() {
                        c.withdrawn = true;
                    }
                }
                self.slot.set_status(RouteStatus::Failed {
                    error,
                    since,
                    failures: st.failures,
                    next_attempt,
                });
            }
        }
        next_attempt
    }

    /// The published token stopped being usable before a replacement arrived.
    fn withdraw(&self, st: &mut State, now: SystemTime) {
        let Some(current) = st.current.as_mut() else {
            return;
        };
        current.withdrawn = true;
        self.slot.withdraw();
        let error = st.last_error.clone().unwrap_or_else(|| {
            self.error(format!(
                "the token stopped being usable (it expires at {}) and no new one has been acquired yet",
                http_date(current.snapshot.expires_at)
            ))
        });
        let next_attempt = self.slot.status().next_attempt().unwrap_or(now);
        let labels = self.credential.labels();
        tracing::warn!(
            route = %self.slot.name(),
            identity = %labels.identity,
            generation = current.snapshot.generation,
            expires_at = %http_date(current.snapshot.expires_at),
            outcome = "withdrawn",
            cause = %error.message,
            "route token no longer usable; requests get 503 until a new token is acquired"
        );
        self.slot.set_status(RouteStatus::Failed {
            error,
            since: *st.failing_since.get_or_insert(now),
            failures: st.failures,
            next_attempt,
        });
    }

    /// Sleeps until `wake_at` or an event; returns the next step (`None` on shutdown).
    async fn wait(
        &self,
        wake_at: SystemTime,
        st: &mut State,
        demand: &mut watch::Receiver<Demand>,
        bindings: &mut Option<watch::Receiver<u64>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Step> {
        loop {
            let now = SystemTime::now();
            let mut deferred_invalidation = None;
            if let Some(step) = self.pending_invalidation(st, *demand.borrow_and_update(), now) {
                match step {
                    Ok(step) => return Some(step),
                    Err(at) => deferred_invalidation = Some(at),
                }
            }
            let withdraw_at = st
                .current
                .as_ref()
                .filter(|c| !c.withdrawn)
                .map(|c| c.usable_until);
            tokio::select! {
                _ = sleep_until(Some(wake_at)) => return Some(self.timer_step(st)),
                _ = sleep_until(withdraw_at), if withdraw_at.is_some() => {
                    self.withdraw(st, SystemTime::now());
                }
                _ = sleep_until(deferred_invalidation), if deferred_invalidation.is_some() => {}
                changed = demand.changed() => {
                    // The slot owns the sender and outlives this task; a closed channel means the
                    // route is gone.
                    if changed.is_err() {
                        return None;
                    }
                }
                changed = binding_changed(bindings.as_mut()) => {
                    if changed {
                        let labels = self.credential.labels();
                        tracing::info!(
                            route = %self.slot.name(),
                            identity = %labels.identity,
                            outcome = "binding_changed",
                            "binding certificate changed; fetching a token for the new one"
                        );
                        return Some(Step::Get);
                    }
                    *bindings = None;
                }
                _ = stopped(shutdown) => return None,
            }
        }
    }

    /// `Ok(step)`: act on a refusal of the published snapshot now; `Err(at)`: not before `at`.
    fn pending_invalidation(
        &self,
        st: &mut State,
        demand: Demand,
        now: SystemTime,
    ) -> Option<Result<Step, SystemTime>> {
        let refused = demand.invalidated?;
        let current = st.current.as_ref().filter(|c| !c.withdrawn)?;
        if current.snapshot.generation != refused || st.handled_invalidation == Some(refused) {
            return None;
        }
        if let Some(last) = st.last_invalidation {
            let earliest = last + MIN_INVALIDATION_INTERVAL;
            if now < earliest {
                return Some(Err(earliest));
            }
        }
        let labels = self.credential.labels();
        tracing::info!(
            route = %self.slot.name(),
            identity = %labels.identity,
            generation = refused,
            outcome = "invalidated",
            "upstream refused the token (401 invalid_token); acquiring another"
        );
        st.handled_invalidation = Some(refused);
        st.last_invalidation = Some(now);
        Some(Ok(Step::Invalidate(current.token_generation)))
    }

    /// The step when the timer fires: refresh a still-usable token, otherwise get one.
    fn timer_step(&self, st: &State) -> Step {
        let now = SystemTime::now();
        match st.current.as_ref() {
            Some(c)
                if !c.withdrawn
                    && self.settings.policy.is_usable(
                        c.acquired_at,
                        c.snapshot.expires_at,
                        now,
                    ) =>
            {
                Step::Refresh(c.token_generation)
            }
            _ => Step::Get,
        }
    }

    fn log_published(
        &self,
        step: Step,
        cached: &CachedToken,
        generation: u64,
        refresh_at: SystemTime,
        rotated: bool,
    ) {
        let labels = self.credential.labels();
        tracing::info!(
            route = %self.slot.name(),
            identity = %labels.identity,
            flow = labels.flow,
            token_type = %labels.token_type,
            step = step.name(),
            generation,
            token_generation = cached.generation,
            expires_at = %http_date(cached.token.expires_at),
            refresh_at = %http_date(refresh_at),
            x5t = cached.token.binding.as_ref().map(|b| b.x5t_s256()),
            rotated,
            outcome = "published",
            "route token published"
        );
    }
}
