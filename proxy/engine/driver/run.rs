//! The driver task: waits for what [`DriverState`] asks it to wait for (a timer, demand, a
//! certificate change, the end of the published token's usability), runs the acquisitions it
//! asks for, and performs its actions — building and publishing snapshots, storing the route's
//! status, counting outcomes and logging them — inside one span per route.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use super::events::{Action, Clock, Event, Step, TokenFacts};
use super::log::log;
use super::state::{DriverState, Phase};
use super::waits::{binding_changed, sleep_until};
use crate::engine::cache::CachedToken;
use crate::engine::credential::{BoxFuture, Credential, EngineError};
use crate::engine::schedule::{RefreshPolicy, jitter_sample};
use crate::metrics;
use crate::net::client::UpstreamSettings;
use crate::route::demand::DemandReader;
use crate::route::slot::{RouteSlot, Snapshot};

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
    demand: DemandReader<RouteSlot>,
}

impl std::fmt::Debug for RouteDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteDriver")
            .field("route", &self.slot.name())
            .field("labels", self.credential.labels())
            .finish_non_exhaustive()
    }
}

fn clock() -> Clock {
    Clock {
        now: SystemTime::now(),
        jitter: jitter_sample(),
    }
}

/// Which of the state's times a waiting driver sleeps until: one timer for the earliest, not one
/// per kind (each `Sleep` is over 100 B of every route's task, kept while it waits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    /// The published token stops being usable.
    Withdraw,
    /// The state's next step (acquire, refresh, retry).
    Wake,
    /// A deferred refusal is looked at again.
    Recheck,
}

impl Due {
    /// The earliest of `state`'s times and what it is for; on a tie the withdrawal comes first,
    /// then the wake, then the recheck (each is handled in turn: the loop asks again).
    fn next(state: &DriverState) -> Option<(SystemTime, Due)> {
        [
            (state.withdraw_at(), Due::Withdraw),
            (state.wake_at(), Due::Wake),
            (state.recheck_at(), Due::Recheck),
        ]
        .into_iter()
        .filter_map(|(at, due)| Some((at?, due)))
        .min_by_key(|&(at, _)| at)
    }
}

/// What the running task holds besides the state: the I/O ends.
struct Task {
    credential: Arc<dyn Credential>,
    slot: Arc<RouteSlot>,
    settings: DriverSettings,
    state: DriverState,
    /// The token just acquired, while the state decides on it and its snapshot is built.
    acquired: Option<CachedToken>,
    /// The snapshot built and not yet published.
    built: Option<Arc<Snapshot>>,
    /// The snapshot published last (its client is reused for the same certificate).
    published: Option<Arc<Snapshot>>,
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

    /// Runs the driver on the current runtime until its slot asks it to stop
    /// ([`RouteSlot::demand_stop`]) or is dropped.
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// The driver loop. Returns only once stopped.
    pub fn run(self) -> impl Future<Output = ()> + Send {
        let labels = self.credential.labels();
        let span = tracing::info_span!(
            "route_driver",
            route = %self.slot.name(),
            identity = %labels.identity,
            flow = labels.flow,
            token_type = %labels.token_type,
        );
        let (state, actions) = DriverState::start(
            &labels.identity,
            self.settings.policy,
            self.slot.info().lazy,
        );
        let mut task = Task {
            credential: self.credential,
            slot: self.slot,
            settings: self.settings,
            state,
            acquired: None,
            built: None,
            published: None,
        };
        let demand = self.demand;
        // Built before the task's future, which then holds the task once: an `async fn` would
        // also keep `self` (the driver's fields, moved into the task) for its whole life, ~1 KB
        // more per route with 1,000 routes (benches/README.md, memory).
        async move {
            let first = task.perform(actions);
            task.drive(first, demand).await;
        }
        .instrument(span)
    }
}

impl Task {
    async fn drive(&mut self, mut next: Option<Step>, demand: DemandReader<RouteSlot>) {
        let mut bindings = Some(self.credential.binding_changes());
        loop {
            let step = match next.take() {
                Some(step) => step,
                None => match self.wait(&demand, &mut bindings).await {
                    Some(step) => step,
                    None => return,
                },
            };
            let Some(result) = self.acquire(step, &demand).await else {
                return;
            };
            next = match result {
                Ok(cached) => {
                    let facts = TokenFacts::of(&cached);
                    self.acquired = Some(cached);
                    let next = self.feed(Event::Acquired(facts));
                    // Kept only while its snapshot is built: the snapshot holds what requests need.
                    self.acquired = None;
                    next
                }
                Err(error) => self.feed(Event::Failed(error)),
            };
        }
    }

    /// Runs one step until the credential answers; `None` once stopped. Withdraws the published
    /// token meanwhile if it stops being usable.
    async fn acquire(
        &mut self,
        step: Step,
        demand: &DemandReader<RouteSlot>,
    ) -> Option<Result<CachedToken, EngineError>> {
        let credential = Arc::clone(&self.credential);
        let span = acquisition_span(&*credential, self.slot.name(), &step);
        let acquisition: BoxFuture<'_, Result<CachedToken, EngineError>> = match step {
            Step::Get => credential.get(),
            Step::Refresh(seen) => credential.refresh(seen),
            Step::Invalidate(generation) => Box::pin(async move {
                credential.invalidate(generation).await;
                credential.get().await
            }),
        };
        let mut acquisition = Box::pin(acquisition.instrument(span.clone()));
        let result = loop {
            let withdraw_at = self.state.withdraw_at();
            tokio::select! {
                result = &mut acquisition => break result,
                _ = sleep_until(withdraw_at), if withdraw_at.is_some() => {
                    // The acquisition outlived the published token: stop serving it meanwhile.
                    self.feed(Event::UsableEnded);
                }
                () = demand.stopped() => return None,
            }
        };
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        Some(result)
    }

    /// Waits until the state asks for a step; `None` once stopped or when the route is gone.
    async fn wait(
        &mut self,
        demand: &DemandReader<RouteSlot>,
        bindings: &mut Option<watch::Receiver<u64>>,
    ) -> Option<Step> {
        loop {
            let current = demand.now();
            if current.stopped {
                return None;
            }
            if let Some(step) = self.feed(Event::Demand(current)) {
                return Some(step);
            }
            let due = Due::next(&self.state);
            // A lazy route does not watch its certificate until it has started.
            let watching = matches!(self.state.phase(), Phase::Waiting { .. });
            let event = tokio::select! {
                _ = sleep_until(due.map(|(at, _)| at)) => match due.map(|(_, what)| what) {
                    Some(Due::Wake) => Event::Timer,
                    Some(Due::Withdraw) => Event::UsableEnded,
                    // The recheck (a deferred refusal) feeds the current demand again.
                    Some(Due::Recheck) | None => continue,
                },
                () = demand.changed() => continue,
                changed = binding_changed(bindings.as_mut()), if watching => {
                    if !changed {
                        *bindings = None;
                        continue;
                    }
                    Event::BindingChanged
                }
            };
            if let Some(step) = self.feed(event) {
                return Some(step);
            }
        }
    }

    /// Hands `event` to the state and performs what it asks; returns the step to run next, if
    /// any.
    fn feed(&mut self, event: Event) -> Option<Step> {
        let actions = self.state.handle(event, clock());
        self.perform(actions)
    }

    fn perform(&mut self, actions: Vec<Action>) -> Option<Step> {
        let mut next = None;
        for action in actions {
            match action {
                Action::Acquire(step) => next = Some(step),
                Action::Build { generation } => {
                    let built = self.build(generation);
                    next = self.feed(built).or(next);
                }
                Action::Publish => self.publish(),
                Action::Withdraw => self.slot.withdraw(),
                Action::Status(status) => self.slot.set_status(status),
                Action::Count { step, outcome } => {
                    metrics::token_acquisition(self.credential.labels(), step.name(), outcome);
                }
                Action::Log(note) => log(note),
            }
        }
        next
    }

    /// Builds the snapshot for the token just acquired: `Built`, or `Failed` naming why.
    fn build(&mut self, generation: u64) -> Event {
        let Some(cached) = self.acquired.as_ref() else {
            return Event::Failed(self.error("no acquired token to build a snapshot from".into()));
        };
        let upstream = &self.settings.upstream;
        let previous = self.published.as_deref();
        match Snapshot::build_reusing(&cached.token, upstream, generation, previous) {
            Ok(snapshot) => {
                self.built = Some(Arc::new(snapshot));
                Event::Built
            }
            Err(e) => Event::Failed(self.error(format!(
                "cannot build the upstream client for the new token: {e}"
            ))),
        }
    }

    fn publish(&mut self) {
        let Some(snapshot) = self.built.take() else {
            return;
        };
        self.slot.publish_arc(Arc::clone(&snapshot));
        self.published = Some(snapshot);
        if let Some(cached) = &self.acquired {
            metrics::binding_not_after(
                self.slot.name(),
                cached.token.binding.as_ref().map(|b| b.not_after()),
            );
        }
    }

    fn error(&self, message: String) -> EngineError {
        EngineError {
            identity: self.credential.labels().identity.clone(),
            message,
            aadsts: None,
            correlation_id: None,
            blocked_until: None,
            permanent: false,
        }
    }
}

/// The span of one token acquisition: a trace of its own (the driver's span lasts as long as the
/// route, too long to export), naming the route, identity and flow but never a token or key.
fn acquisition_span(credential: &dyn Credential, route: &str, step: &Step) -> tracing::Span {
    let labels = credential.labels();
    tracing::info_span!(
        parent: None,
        "token_acquisition",
        route,
        identity = %labels.identity,
        flow = labels.flow,
        token_type = %labels.token_type,
        step = match step {
            Step::Get => "get",
            Step::Refresh(_) => "refresh",
            Step::Invalidate(_) => "invalidate",
        },
        otel.status_code = tracing::field::Empty,
    )
}
