"""Lifecycle states shared by the core's components and the function runtime (pure, stdlib).

One ``State`` enum: a core component (broker, spool, connector, ...) and a deployed function
(``hedgerow.functions.policy``) go through the same states, so the core derives its health
and a deployment's health check from them without guessing strings:

    STOPPED ──start──▶ STARTING ──ready──▶ RUNNING ──stop──▶ STOPPING ──▶ STOPPED
                          │                  │
                          └──crash──▶ BACKOFF ┘ (retried)   too many crashes ──▶ BROKEN

``health_of(states)`` folds any number of states into one ``Health``. The ``Component``
protocol is what the core's daemon starts in order and stops in reverse
(``hedgerow.core.lifecycle``).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Final, Protocol


class State(Enum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    BROKEN = "BROKEN"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"


class Health(Enum):
    """What a set of states amounts to, worst first."""

    BROKEN = "broken"  # something gave up (or failed to start): an operator must act
    PENDING = "pending"  # starting, stopping or backing off: not settled yet
    HEALTHY = "healthy"  # everything running (or deliberately stopped)


#: Settled and fine: running, or stopped on purpose (an idle on-demand function).
HEALTHY_STATES: Final = frozenset({State.RUNNING, State.STOPPED})
BROKEN_STATES: Final = frozenset({State.BROKEN})


def health_of(states: Iterable[State]) -> Health:
    """BROKEN if any state is; PENDING if any is not settled; else HEALTHY (also for none)."""
    result = Health.HEALTHY
    for state in states:
        if state in BROKEN_STATES:
            return Health.BROKEN
        if state not in HEALTHY_STATES:
            result = Health.PENDING
    return result


def parse_state(value: str) -> State | None:
    """A state from its name in any case (``"running"``, ``"RUNNING"``); None if unknown."""
    try:
        return State(value.upper())
    except ValueError:
        return None


class Component(Protocol):
    """A part of the core with a lifecycle: started once, stopped once, observed between.

    ``start`` either leaves the component RUNNING or raises (having released what it took);
    ``stop`` is safe to call in any state and leaves it STOPPED. Other code changes a
    component only through its methods, never by writing its attributes.
    """

    @property
    def name(self) -> str: ...

    @property
    def state(self) -> State: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> Health: ...
