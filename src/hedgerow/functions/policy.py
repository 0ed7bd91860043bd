"""The restart policy of a function: lifecycle states, transitions, backoff, BROKEN (pure).

A function is STARTING until its worker says READY, then RUNNING. A crash (the worker
process died when it should not have) moves it to BACKOFF for a delay that doubles with
each crash (capped); after ``max_crashes`` crashes within ``window_s`` it is BROKEN and
is not restarted until it is deployed again. ``State`` is the one enum the core's
components share (``hedgerow.lifecycle``). An invocation timeout replaces the worker
without counting as a crash. No clock, no I/O: callers pass ``now``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Final

from hedgerow.functions.errors import FunctionsError
from hedgerow.lifecycle import State as State  # the one state enum, shared with the core


class Event(Enum):
    START = "start"
    READY = "ready"
    CRASH = "crash"
    GIVE_UP = "give_up"
    RETRY = "retry"
    STOP = "stop"
    EXITED = "exited"


TRANSITIONS: Final[dict[tuple[State, Event], State]] = {
    (State.STOPPED, Event.START): State.STARTING,
    (State.STARTING, Event.READY): State.RUNNING,
    (State.STARTING, Event.CRASH): State.BACKOFF,
    (State.STARTING, Event.GIVE_UP): State.BROKEN,
    (State.RUNNING, Event.CRASH): State.BACKOFF,
    (State.RUNNING, Event.GIVE_UP): State.BROKEN,
    (State.RUNNING, Event.READY): State.RUNNING,
    (State.BACKOFF, Event.RETRY): State.STARTING,
    (State.BACKOFF, Event.GIVE_UP): State.BROKEN,
    (State.BACKOFF, Event.CRASH): State.BACKOFF,
    (State.BROKEN, Event.CRASH): State.BROKEN,
    (State.BROKEN, Event.GIVE_UP): State.BROKEN,
    (State.STARTING, Event.STOP): State.STOPPING,
    (State.RUNNING, Event.STOP): State.STOPPING,
    (State.BACKOFF, Event.STOP): State.STOPPING,
    (State.BROKEN, Event.STOP): State.STOPPING,
    (State.STOPPING, Event.EXITED): State.STOPPED,
    (State.STOPPING, Event.STOP): State.STOPPING,
    (State.STOPPED, Event.STOP): State.STOPPED,
}

DEFAULT_MAX_CRASHES: Final = 3
DEFAULT_WINDOW_S: Final = 60.0
DEFAULT_BACKOFF_BASE_S: Final = 0.5
DEFAULT_BACKOFF_MAX_S: Final = 30.0
DEFAULT_BACKOFF_FACTOR: Final = 2.0


class TransitionError(FunctionsError):
    """An event that the current state does not accept (a bug in the caller)."""

    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"{event.value} is not allowed in {state.value}")
        self.state = state
        self.event = event


def transition(state: State, event: Event) -> State:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise TransitionError(state, event) from None


@dataclass(frozen=True)
class RestartPolicy:
    """Named limits of the restart behaviour."""

    max_crashes: int = DEFAULT_MAX_CRASHES
    window_s: float = DEFAULT_WINDOW_S
    backoff_base_s: float = DEFAULT_BACKOFF_BASE_S
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S
    backoff_factor: float = DEFAULT_BACKOFF_FACTOR

    def backoff(self, crashes: int) -> float:
        """The delay before restart number ``crashes`` (1 = after the first crash)."""
        exponent = max(0, crashes - 1)
        return float(min(self.backoff_max_s, self.backoff_base_s * self.backoff_factor**exponent))


@dataclass(frozen=True)
class Decision:
    state: State
    delay: float


class Lifecycle:
    """One function's lifecycle state plus its recent crash history."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.state = State.STOPPED
        self._crashes: deque[float] = deque()
        self.total_crashes = 0

    def fire(self, event: Event) -> State:
        self.state = transition(self.state, event)
        return self.state

    def recent_crashes(self, now: float) -> int:
        while self._crashes and now - self._crashes[0] > self.policy.window_s:
            self._crashes.popleft()
        return len(self._crashes)

    def crash(self, now: float) -> Decision:
        """Record a crash: BACKOFF with a delay, or BROKEN after too many in the window."""
        self._crashes.append(now)
        self.total_crashes += 1
        count = self.recent_crashes(now)
        if count >= self.policy.max_crashes:
            return Decision(self.fire(Event.GIVE_UP), 0.0)
        return Decision(self.fire(Event.CRASH), self.policy.backoff(count))
