//! Acquiring and publishing: start, build, publish, refresh ahead, certificate changes, and
//! events that do not apply where the driver is.

use super::*;

#[test]
fn an_eager_route_acquires_at_once_and_a_lazy_one_on_its_first_request() {
    assert_eq!(eager().phase(), &Phase::Acquiring(Step::Get));
    let (mut lazy, actions) = DriverState::start("app", RefreshPolicy::default(), true);
    assert_eq!(actions, [Action::Log(Note::LazyWaiting)]);
    assert!(
        lazy.handle(Event::Demand(Demand::default()), at(secs(1)))
            .is_empty()
    );
    // Nothing but a first request wakes it: not a timer, not a certificate change.
    assert!(lazy.handle(Event::BindingChanged, at(secs(1))).is_empty());
    assert!(lazy.handle(Event::Timer, at(secs(1))).is_empty());
    assert_eq!(lazy.phase(), &Phase::Dormant);
    let started = Demand {
        started: true,
        invalidated: None,
        retry: 0,
        stopped: false,
    };
    let actions = lazy.handle(Event::Demand(started), at(secs(2)));
    assert_eq!(actions, [Action::Acquire(Step::Get)]);
}

#[test]
fn a_new_token_is_built_then_published_ready_and_refreshed_ahead() {
    let mut state = eager();
    let first = token(1, secs(0), "a");
    let actions = state.handle(Event::Acquired(first.clone()), at(secs(0)));
    assert_eq!(actions, [Action::Build { generation: 1 }]);
    assert!(matches!(state.phase(), Phase::Building { .. }));
    let actions = state.handle(Event::Built, at(secs(0)));
    assert_eq!(actions[0], Action::Publish);
    assert_eq!(
        only_status(&actions),
        &RouteStatus::Ready {
            expires_at: first.expires_at,
            generation: 1
        }
    );
    assert!(actions.contains(&Action::Log(Note::Published {
        step: Step::Get,
        token: first,
        generation: 1,
        refresh_at: t0() + REFRESH_AFTER,
        rotated: false,
    })));
    assert_eq!(counted(&actions), ["published"]);
    assert_eq!(state.wake_at(), Some(t0() + REFRESH_AFTER));
    assert_eq!(state.withdraw_at(), Some(t0() + USABLE_FOR));
}

#[test]
fn the_timer_refreshes_a_usable_token_and_gets_one_when_it_is_not() {
    let mut state = published();
    let actions = state.handle(Event::Timer, at(REFRESH_AFTER));
    assert_eq!(actions, [Action::Acquire(Step::Refresh(1))]);

    let mut state = published();
    let actions = state.handle(Event::Timer, at(USABLE_FOR));
    assert_eq!(actions, [Action::Acquire(Step::Get)]);
}

#[test]
fn a_refreshed_token_is_published_as_the_next_generation_and_a_new_certificate_is_a_rotation() {
    let mut state = published();
    state.handle(Event::Timer, at(REFRESH_AFTER));
    let renewed = token(2, REFRESH_AFTER, "b");
    let actions = state.handle(Event::Acquired(renewed.clone()), at(REFRESH_AFTER));
    assert_eq!(actions, [Action::Build { generation: 2 }]);
    let actions = state.handle(Event::Built, at(REFRESH_AFTER));
    assert!(actions.contains(&Action::Log(Note::Published {
        step: Step::Refresh(1),
        token: renewed,
        generation: 2,
        refresh_at: t0() + REFRESH_AFTER + REFRESH_AFTER,
        rotated: true,
    })));
}

#[test]
fn a_certificate_change_gets_a_token_and_the_same_one_again_changes_nothing() {
    let mut state = published();
    let actions = state.handle(Event::BindingChanged, at(secs(10)));
    assert_eq!(
        actions,
        [
            Action::Log(Note::BindingChanged),
            Action::Acquire(Step::Get)
        ]
    );
    let actions = state.handle(Event::Acquired(token(1, secs(0), "a")), at(secs(10)));
    assert_eq!(
        actions,
        [Action::Count {
            step: Step::Get,
            outcome: "unchanged"
        }]
    );
    assert_eq!(state.wake_at(), Some(t0() + REFRESH_AFTER));
}

#[test]
fn events_that_do_not_apply_change_nothing() {
    let mut state = eager();
    for event in [
        Event::Built,
        Event::Timer,
        Event::BindingChanged,
        refused(1),
        Event::UsableEnded,
    ] {
        assert!(state.handle(event, at(secs(0))).is_empty());
    }
    assert_eq!(state.phase(), &Phase::Acquiring(Step::Get));
    let mut state = published();
    assert!(
        state
            .handle(Event::Acquired(token(2, secs(0), "a")), at(secs(1)))
            .is_empty()
    );
    assert!(
        state
            .handle(Event::Failed(error("late", None)), at(secs(1)))
            .is_empty()
    );
}
