"""The pure restart policy: transitions, backoff, BROKEN after N crashes in a window."""

from __future__ import annotations

import pytest

from hedgerow.functions.policy import (
    TRANSITIONS,
    Event,
    Lifecycle,
    RestartPolicy,
    State,
    TransitionError,
    transition,
)


def test_backoff_doubles_and_is_capped() -> None:
    policy = RestartPolicy(backoff_base_s=0.5, backoff_max_s=4.0, backoff_factor=2.0)
    assert [policy.backoff(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_broken_after_max_crashes_within_window() -> None:
    life = Lifecycle(RestartPolicy(max_crashes=3, window_s=10.0, backoff_base_s=1.0))
    life.fire(Event.START)
    life.fire(Event.READY)
    first = life.crash(now=100.0)
    assert first.state is State.BACKOFF and first.delay == 1.0
    life.fire(Event.RETRY)
    life.fire(Event.READY)
    second = life.crash(now=101.0)
    assert second.state is State.BACKOFF and second.delay == 2.0
    life.fire(Event.RETRY)
    third = life.crash(now=102.0)  # crashed while STARTING
    assert third.state is State.BROKEN
    assert life.total_crashes == 3


def test_crashes_outside_the_window_are_forgotten() -> None:
    life = Lifecycle(RestartPolicy(max_crashes=2, window_s=5.0))
    life.fire(Event.START)
    life.fire(Event.READY)
    assert life.crash(now=0.0).state is State.BACKOFF
    life.fire(Event.RETRY)
    life.fire(Event.READY)
    assert life.crash(now=60.0).state is State.BACKOFF  # the first crash aged out
    assert life.recent_crashes(60.0) == 1


def test_stop_from_every_live_state_and_invalid_events() -> None:
    for state in (State.STARTING, State.RUNNING, State.BACKOFF, State.BROKEN):
        assert transition(state, Event.STOP) is State.STOPPING
    assert transition(State.STOPPING, Event.EXITED) is State.STOPPED
    with pytest.raises(TransitionError) as info:
        transition(State.STOPPED, Event.READY)
    assert info.value.state is State.STOPPED and info.value.event is Event.READY
    # every transition lands on a real state, and BROKEN is left only by STOP
    assert all(isinstance(target, State) for target in TRANSITIONS.values())
    assert {e for (s, e) in TRANSITIONS if s is State.BROKEN} == {
        Event.STOP,
        Event.CRASH,
        Event.GIVE_UP,
    }
