//! Every transition of [`DriverState`], at fixed times with zero jitter (so backoff delays and
//! refresh times are exact).

mod acquiring;
mod setbacks;

use std::time::{Duration, SystemTime};

use super::MIN_INVALIDATION_INTERVAL;
use super::events::{Action, Clock, Event, Note, Step, TokenFacts};
use super::state::{DriverState, Phase};
use crate::engine::credential::EngineError;
use crate::engine::schedule::RefreshPolicy;
use crate::route::demand::Demand;
use crate::route::status::RouteStatus;

const HOUR: Duration = Duration::from_secs(3600);
/// Refresh of a one-hour token without `refresh_in`: 60 s before the five-minute margin.
const REFRESH_AFTER: Duration = Duration::from_secs(3600 - 300 - 60);
/// Usable until five minutes before expiry.
const USABLE_FOR: Duration = Duration::from_secs(3600 - 300);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
}

fn at(after: Duration) -> Clock {
    Clock {
        now: t0() + after,
        jitter: 0.0,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn token(generation: u64, acquired_after: Duration, x5t: &str) -> TokenFacts {
    let acquired_at = t0() + acquired_after;
    TokenFacts {
        token_generation: generation,
        acquired_at,
        expires_at: acquired_at + HOUR,
        refresh_in: None,
        x5t: Some(x5t.to_string()),
    }
}

fn error(message: &str, blocked_until: Option<SystemTime>) -> EngineError {
    EngineError {
        identity: "app".into(),
        message: message.into(),
        aadsts: Some(7_000_218),
        correlation_id: None,
        blocked_until,
        permanent: false,
    }
}

fn eager() -> DriverState {
    let (state, actions) = DriverState::start("app", RefreshPolicy::default(), false);
    assert_eq!(actions, [Action::Acquire(Step::Get)]);
    state
}

/// A driver that published `token(1, 0, "a")` as snapshot generation 1 at t0.
fn published() -> DriverState {
    let mut state = eager();
    let built = state.handle(Event::Acquired(token(1, secs(0), "a")), at(secs(0)));
    assert_eq!(built, [Action::Build { generation: 1 }]);
    state.handle(Event::Built, at(secs(0)));
    state
}

fn statuses(actions: &[Action]) -> Vec<&RouteStatus> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Status(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn only_status(actions: &[Action]) -> &RouteStatus {
    let all = statuses(actions);
    assert_eq!(all.len(), 1, "{actions:?}");
    all[0]
}

fn acquires(actions: &[Action]) -> Vec<Step> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Acquire(step) => Some(*step),
            _ => None,
        })
        .collect()
}

fn counted(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Count { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .collect()
}

fn refused(generation: u64) -> Event {
    Event::Demand(Demand {
        started: true,
        invalidated: Some(generation),
        retry: 0,
        stopped: false,
    })
}

/// The one status among `actions` as (label, error message).
fn failure(actions: &[Action]) -> (&'static str, String) {
    let status = only_status(actions);
    let message = status.error().map(|e| e.message.clone());
    (status.label(), message.unwrap_or_default())
}
