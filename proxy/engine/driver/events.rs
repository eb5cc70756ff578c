//! What goes into the driver's state machine and what comes out: [`Event`]s in (with the
//! [`Clock`] they happen at), [`Action`]s out. Plain data, so transitions can be checked by value.

use std::time::{Duration, SystemTime};

use crate::engine::cache::CachedToken;
use crate::engine::credential::EngineError;
use crate::route::demand::Demand;
use crate::route::status::RouteStatus;

/// What to ask the credential for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// A usable token (first acquisition, binding change, or the published one is gone).
    Get,
    /// A newer token than the one of this credential generation.
    Refresh(u64),
    /// Forget the refused token of this credential generation, then get another.
    Invalidate(u64),
}

impl Step {
    /// The `step` label in logs and metrics.
    pub(super) fn name(self) -> &'static str {
        match self {
            Step::Get => "get",
            Step::Refresh(_) => "refresh",
            Step::Invalidate(_) => "invalidate",
        }
    }
}

/// What the decisions need of an acquired token: never the token itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TokenFacts {
    /// The credential's generation for it (what `refresh` and `invalidate` name).
    pub token_generation: u64,
    pub acquired_at: SystemTime,
    pub expires_at: SystemTime,
    pub refresh_in: Option<Duration>,
    /// The binding certificate's x5t#S256, if any.
    pub x5t: Option<String>,
}

impl TokenFacts {
    pub(super) fn of(cached: &CachedToken) -> Self {
        Self {
            token_generation: cached.generation,
            acquired_at: cached.acquired_at,
            expires_at: cached.token.expires_at,
            refresh_in: cached.token.refresh_in,
            x5t: cached
                .token
                .binding
                .as_ref()
                .map(|b| b.x5t_s256().to_string()),
        }
    }
}

/// The moment an event is handled: the wall clock and a jitter sample in `[0, 1)`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Clock {
    pub now: SystemTime,
    pub jitter: f64,
}

/// Something that happened to the driver.
#[derive(Clone, Debug)]
pub(super) enum Event {
    /// The route's demand as it stands (read on entering a wait and whenever it changes).
    Demand(Demand),
    /// The credential answered the step in flight with a token.
    Acquired(TokenFacts),
    /// The step in flight failed (or the snapshot for its token could not be built).
    Failed(EngineError),
    /// The snapshot for the acquired token is built.
    Built,
    /// The binding certificate changed.
    BindingChanged,
    /// The time to act ([`DriverState::wake_at`]) came.
    Timer,
    /// The published token stopped being usable ([`DriverState::withdraw_at`]).
    UsableEnded,
}

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Action {
    /// Ask the credential for this step.
    Acquire(Step),
    /// Build the snapshot of this generation for the token just acquired; report `Built` or
    /// `Failed`.
    Build { generation: u64 },
    /// Publish the snapshot just built.
    Publish,
    /// Stop serving the published snapshot (requests get 503).
    Withdraw,
    /// Store this status in the route's slot.
    Status(RouteStatus),
    /// Count an acquisition's outcome (`published`, `unchanged`, `failed`).
    Count { step: Step, outcome: &'static str },
    /// Write this log event.
    Log(Note),
}

/// The log events the driver writes.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Note {
    LazyWaiting,
    Published {
        step: Step,
        token: TokenFacts,
        generation: u64,
        refresh_at: SystemTime,
        rotated: bool,
    },
    Failed {
        step: Step,
        failures: u32,
        error: EngineError,
        next_attempt: SystemTime,
    },
    Withdrawn {
        generation: u64,
        expires_at: SystemTime,
        cause: String,
    },
    Invalidated {
        generation: u64,
    },
    BindingChanged,
    /// A reload asked a failing route to retry now.
    RetryAfterReload,
}
