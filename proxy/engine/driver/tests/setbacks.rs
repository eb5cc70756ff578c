//! What goes wrong: failures (with and without Retry-After), stale serving, withdrawal,
//! upstream refusals and their minimum interval.

use super::*;

#[test]
fn a_first_failure_without_retry_after_backs_off_a_second_and_fails_the_route() {
    let mut state = eager();
    let refused = error("token endpoint refused", None);
    let actions = state.handle(Event::Failed(refused.clone()), at(secs(0)));
    assert_eq!(counted(&actions), ["failed"]);
    assert!(
        !actions.contains(&Action::Withdraw),
        "nothing was published"
    );
    let next_attempt = t0() + secs(1);
    assert_eq!(
        only_status(&actions),
        &RouteStatus::Failed {
            error: refused.clone(),
            since: t0(),
            failures: 1,
            next_attempt,
        }
    );
    assert_eq!(state.wake_at(), Some(next_attempt));
    // The timer retries with a get (nothing usable is published); the second delay doubles.
    assert_eq!(
        state.handle(Event::Timer, at(secs(1))),
        [Action::Acquire(Step::Get)]
    );
    let actions = state.handle(Event::Failed(refused), at(secs(1)));
    match only_status(&actions) {
        RouteStatus::Failed {
            since,
            failures,
            next_attempt,
            ..
        } => {
            assert_eq!((*since, *failures), (t0(), 2));
            assert_eq!(*next_attempt, t0() + secs(3));
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn a_failure_with_retry_after_waits_for_the_peer() {
    let mut state = eager();
    let blocked = t0() + secs(120);
    let actions = state.handle(Event::Failed(error("429", Some(blocked))), at(secs(0)));
    assert_eq!(only_status(&actions).next_attempt(), Some(blocked));
    assert_eq!(state.wake_at(), Some(blocked));
}

#[test]
fn a_failed_refresh_keeps_serving_the_usable_token_as_stale() {
    let mut state = published();
    state.handle(Event::Timer, at(REFRESH_AFTER));
    let refused = error("HTTP 500", None);
    let actions = state.handle(Event::Failed(refused.clone()), at(REFRESH_AFTER));
    assert!(!actions.contains(&Action::Withdraw));
    assert_eq!(
        only_status(&actions),
        &RouteStatus::Stale {
            expires_at: t0() + HOUR,
            generation: 1,
            error: refused,
            failures: 1,
            next_attempt: t0() + REFRESH_AFTER + secs(1),
        }
    );
    assert_eq!(state.withdraw_at(), Some(t0() + USABLE_FOR));
}

#[test]
fn a_refresh_that_brings_back_the_same_token_is_a_failure() {
    let mut state = published();
    state.handle(Event::Timer, at(REFRESH_AFTER));
    let actions = state.handle(Event::Acquired(token(1, secs(0), "a")), at(REFRESH_AFTER));
    let (label, message) = failure(&actions);
    assert_eq!(label, "stale");
    assert!(message.contains("no newer token yet"), "{message}");
}

#[test]
fn an_unusable_token_from_the_credential_is_a_failure() {
    let mut state = eager();
    let actions = state.handle(Event::Acquired(token(1, secs(0), "a")), at(USABLE_FOR));
    let (label, message) = failure(&actions);
    assert_eq!(label, "failed");
    assert!(message.contains("no longer usable"), "{message}");
    let identity = only_status(&actions).error().map(|e| e.identity.as_str());
    assert_eq!(identity, Some("app"));
}

#[test]
fn a_snapshot_that_cannot_be_built_counts_as_a_failure_only() {
    let mut state = eager();
    state.handle(Event::Acquired(token(1, secs(0), "a")), at(secs(0)));
    let actions = state.handle(
        Event::Failed(error("cannot build the upstream client", None)),
        at(secs(0)),
    );
    assert_eq!(counted(&actions), ["failed"]);
    assert!(!actions.contains(&Action::Publish));
    assert!(matches!(only_status(&actions), RouteStatus::Failed { .. }));
    assert_eq!(state.withdraw_at(), None);
}

#[test]
fn the_same_token_during_a_failure_streak_keeps_the_retry_schedule() {
    let mut state = published();
    state.handle(Event::Timer, at(REFRESH_AFTER));
    state.handle(Event::Failed(error("HTTP 500", None)), at(REFRESH_AFTER));
    state.handle(Event::BindingChanged, at(REFRESH_AFTER));
    let actions = state.handle(Event::Acquired(token(1, secs(0), "a")), at(REFRESH_AFTER));
    assert_eq!(counted(&actions), ["unchanged"]);
    assert_eq!(state.wake_at(), Some(t0() + REFRESH_AFTER + secs(1)));
    // Still in the streak: the next failure waits two seconds, not one.
    state.handle(Event::Timer, at(REFRESH_AFTER + secs(1)));
    let actions = state.handle(
        Event::Failed(error("HTTP 500", None)),
        at(REFRESH_AFTER + secs(1)),
    );
    assert_eq!(only_status(&actions).failures(), 2);
    assert_eq!(state.wake_at(), Some(t0() + REFRESH_AFTER + secs(3)));
}

#[test]
fn success_after_failures_resets_the_streak_and_the_backoff() {
    let mut state = eager();
    state.handle(Event::Failed(error("HTTP 500", None)), at(secs(0)));
    state.handle(Event::Timer, at(secs(1)));
    state.handle(Event::Failed(error("HTTP 500", None)), at(secs(1)));
    state.handle(Event::Timer, at(secs(3)));
    state.handle(Event::Acquired(token(1, secs(3), "a")), at(secs(3)));
    let actions = state.handle(Event::Built, at(secs(3)));
    assert!(matches!(only_status(&actions), RouteStatus::Ready { .. }));
    state.handle(Event::Timer, at(secs(3) + REFRESH_AFTER));
    let later = secs(3) + REFRESH_AFTER;
    let actions = state.handle(Event::Failed(error("HTTP 500", None)), at(later));
    assert_eq!(only_status(&actions).failures(), 1);
    assert_eq!(state.wake_at(), Some(t0() + later + secs(1)));
}

#[test]
fn a_token_that_stops_being_usable_is_withdrawn_with_the_last_cause() {
    let mut state = published();
    let actions = state.handle(Event::UsableEnded, at(USABLE_FOR));
    assert_eq!(actions[0], Action::Withdraw);
    match only_status(&actions) {
        RouteStatus::Failed {
            error,
            next_attempt,
            ..
        } => {
            assert!(error.message.contains("stopped being usable"), "{error}");
            assert_eq!(*next_attempt, t0() + USABLE_FOR);
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(state.withdraw_at(), None);
    assert!(state.handle(Event::UsableEnded, at(USABLE_FOR)).is_empty());

    // After a failed refresh the withdrawal names that failure and keeps its retry time.
    let mut state = published();
    state.handle(Event::Timer, at(REFRESH_AFTER));
    let refused = error("token endpoint refused", None);
    state.handle(Event::Failed(refused.clone()), at(REFRESH_AFTER));
    let actions = state.handle(Event::UsableEnded, at(USABLE_FOR));
    assert!(actions.contains(&Action::Log(Note::Withdrawn {
        generation: 1,
        expires_at: t0() + HOUR,
        cause: refused.message.clone(),
    })));
    assert_eq!(
        only_status(&actions),
        &RouteStatus::Failed {
            error: refused,
            since: t0() + REFRESH_AFTER,
            failures: 1,
            next_attempt: t0() + REFRESH_AFTER + secs(1),
        }
    );
}

#[test]
fn a_refusal_of_the_published_token_invalidates_it_once() {
    let mut state = published();
    // A refusal of another snapshot generation is not about the published token.
    assert!(state.handle(refused(7), at(secs(10))).is_empty());
    let actions = state.handle(refused(1), at(secs(10)));
    assert_eq!(
        actions,
        [
            Action::Log(Note::Invalidated { generation: 1 }),
            Action::Acquire(Step::Invalidate(1))
        ]
    );
    // The credential handing back the refused token is a failure, and the route stops serving.
    let actions = state.handle(Event::Acquired(token(1, secs(0), "a")), at(secs(10)));
    assert_eq!(
        actions.iter().filter(|a| **a == Action::Withdraw).count(),
        1
    );
    let (label, message) = failure(&actions);
    assert_eq!(label, "failed");
    assert!(message.contains("just refused"), "{message}");
    // The same refusal read again (the route no longer serves that snapshot) changes nothing.
    assert!(state.handle(refused(1), at(secs(11))).is_empty());
}

#[test]
fn refusals_in_quick_succession_wait_for_the_minimum_interval() {
    let mut state = published();
    state.handle(refused(1), at(secs(10)));
    state.handle(Event::Acquired(token(2, secs(10), "a")), at(secs(10)));
    state.handle(Event::Built, at(secs(10)));
    // Snapshot 2 is refused a second later: not before five seconds after the first refusal.
    let actions = state.handle(refused(2), at(secs(11)));
    assert!(acquires(&actions).is_empty(), "{actions:?}");
    let recheck = t0() + secs(10) + MIN_INVALIDATION_INTERVAL;
    assert_eq!(state.recheck_at(), Some(recheck));
    assert_eq!(state.wake_at(), Some(t0() + secs(10) + REFRESH_AFTER));
    let actions = state.handle(refused(2), at(secs(10) + MIN_INVALIDATION_INTERVAL));
    assert_eq!(acquires(&actions), [Step::Invalidate(2)]);
}

fn permanent(message: &str) -> EngineError {
    EngineError {
        permanent: true,
        ..error(message, None)
    }
}

fn retry(n: u64) -> Event {
    Event::Demand(Demand {
        started: true,
        invalidated: None,
        retry: n,
        stopped: false,
    })
}

#[test]
fn a_permanent_refusal_is_retried_on_the_long_schedule() {
    let mut state = eager();
    let refused = permanent("token endpoint refused: invalid_client AADSTS7000215");
    let actions = state.handle(Event::Failed(refused.clone()), at(secs(0)));
    let status = only_status(&actions);
    assert_eq!(status.next_attempt(), Some(t0() + secs(5 * 60)));
    assert_eq!(
        status.error().map(|e| e.failure_class()),
        Some("permanent_failure")
    );
    assert_eq!(state.wake_at(), Some(t0() + secs(5 * 60)));
    // Demand that is not a reload changes nothing.
    assert!(acquires(&state.handle(retry(0), at(secs(10)))).is_empty());
    // 10 minutes, then 20, then never more than 30.
    let mut now = secs(5 * 60);
    for wait in [10, 20, 30, 30] {
        state.handle(Event::Timer, at(now));
        let actions = state.handle(Event::Failed(refused.clone()), at(now));
        assert_eq!(
            only_status(&actions).next_attempt(),
            Some(t0() + now + secs(wait * 60)),
            "{wait}"
        );
        now += secs(wait * 60);
    }
    // A transient failure in between keeps its own short schedule.
    state.handle(Event::Timer, at(now));
    let actions = state.handle(Event::Failed(error("HTTP 503", None)), at(now));
    assert_eq!(
        only_status(&actions).next_attempt(),
        Some(t0() + now + secs(1))
    );
}

#[test]
fn a_reload_retries_a_failing_route_at_once_and_restarts_its_backoff() {
    let mut state = eager();
    let refused = permanent("invalid_client");
    state.handle(Event::Failed(refused.clone()), at(secs(0)));
    let actions = state.handle(retry(1), at(secs(7)));
    assert_eq!(acquires(&actions), [Step::Get]);
    assert!(actions.contains(&Action::Log(Note::RetryAfterReload)));
    // The same retry request seen again (the driver re-reads demand) is not another retry.
    let actions = state.handle(Event::Failed(refused), at(secs(7)));
    assert_eq!(
        only_status(&actions).next_attempt(),
        Some(t0() + secs(7 + 5 * 60)),
        "the long schedule starts over"
    );
    assert!(acquires(&state.handle(retry(1), at(secs(8)))).is_empty());
}

#[test]
fn a_reload_leaves_a_healthy_route_alone() {
    let mut state = published();
    let actions = state.handle(retry(1), at(secs(10)));
    assert!(acquires(&actions).is_empty(), "{actions:?}");
    assert_eq!(state.wake_at(), Some(t0() + REFRESH_AFTER));
}
