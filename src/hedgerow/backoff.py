"""Reconnect delay schedules: progressive backoff with full jitter (pure: no I/O, no clock).

Shared by the thing SDK (device -> core) and the core's cloud connector (core -> cloud).

Why jitter: when a few hundred devices on one power supply come back at once, a schedule
without jitter (the V1 SDK's: 1, 2, 4 … 32 s) makes them all retry in the same instants, so
the core sees the same thundering herd on every round. Full jitter draws each delay
uniformly from ``[0, min(cap, base * 2**attempt)]``, which spreads the retries over the whole
window and keeps the total work low (see "Exponential Backoff And Jitter", AWS Architecture
Blog, 2015).

``Backoff`` holds the attempt counter; the caller tells it the time (``connected(now)``,
``disconnected(now)``) so it stays pure and tests need no clock. A connection that stayed up
for ``stable_after`` seconds resets the schedule; one that dropped sooner does not, so a core
that accepts and immediately drops connections still gets backed off from.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

#: A source of uniform floats: ``uniform(low, high)``; ``random.Random().uniform`` by default.
Uniform = Callable[[float, float], float]

#: The V1 SDK's defaults (compat.md §2): 1 s base, 32 s cap, reset after 20 s stable.
V1_BASE = 1.0
V1_CAP = 32.0
V1_STABLE_AFTER = 20.0
#: Exponents above this no longer change anything (2**64 dwarfs any cap) and would overflow.
MAX_EXPONENT = 64


class Jitter(enum.Enum):
    """How a delay is drawn from the exponential ceiling."""

    NONE = "none"  #: exactly the ceiling: the V1 SDK's schedule
    FULL = "full"  #: uniform in [0, ceiling]
    EQUAL = "equal"  #: half the ceiling plus uniform in [0, ceiling / 2]


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Parameters of the schedule (seconds)."""

    base: float = V1_BASE
    cap: float = V1_CAP
    stable_after: float = V1_STABLE_AFTER
    jitter: Jitter = Jitter.FULL
    #: delay before the very first attempt (``initial`` ≤ ``cap``); a power-restore storm is
    #: spread best when this is jittered too: ``first_delay`` draws from ``[0, initial]``
    initial: float = 0.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap <= 0:
            raise ValueError("backoff base and cap must be positive")
        if self.base > self.cap:
            raise ValueError("backoff base must not exceed the cap")
        if self.stable_after < 0 or self.initial < 0:
            raise ValueError("stable_after and initial must not be negative")

    @classmethod
    def v1(cls) -> BackoffPolicy:
        """The AWS V1 SDK's schedule: no jitter, 1 s doubling to 32 s, reset after 20 s."""
        return cls(jitter=Jitter.NONE)

    def ceiling(self, attempt: int) -> float:
        """The largest delay after ``attempt`` failures (0-based): ``min(cap, base * 2**attempt)``."""
        return min(self.cap, self.base * 2.0 ** min(max(attempt, 0), MAX_EXPONENT))

    def delay(self, attempt: int, uniform: Uniform) -> float:
        """The delay after ``attempt`` consecutive failures, drawn with this policy's jitter."""
        ceiling = self.ceiling(attempt)
        if self.jitter is Jitter.NONE:
            return ceiling
        if self.jitter is Jitter.EQUAL:
            return ceiling / 2 + uniform(0.0, ceiling / 2)
        return uniform(0.0, ceiling)

    def first_delay(self, uniform: Uniform) -> float:
        """The delay before the first attempt: 0, or jittered in ``[0, initial]``."""
        if self.initial <= 0:
            return 0.0
        if self.jitter is Jitter.NONE:
            return self.initial
        return uniform(0.0, self.initial)


class Backoff:
    """The schedule's state: how many attempts failed since the last stable connection."""

    def __init__(
        self, policy: BackoffPolicy | None = None, *, uniform: Uniform | None = None
    ) -> None:
        self.policy = policy or BackoffPolicy()
        self._uniform: Uniform = uniform or random.Random().uniform
        self.attempt = 0
        self._connected_at: float | None = None

    def next_delay(self) -> float:
        """The delay to wait before the next attempt; advances the schedule."""
        delay = self.policy.delay(self.attempt, self._uniform)
        self.attempt += 1
        return delay

    def next_delay_after(self, retry_after: float | None) -> float:
        """``next_delay()``, but never sooner than a server's ``Retry-After``: that many
        seconds plus up to half as many again (jittered, so a herd told the same delay
        does not come back in the same instant)."""
        delay = self.next_delay()
        if retry_after is None or retry_after <= 0:
            return delay
        return max(delay, retry_after + self._uniform(0.0, retry_after / 2))

    def first_delay(self) -> float:
        return self.policy.first_delay(self._uniform)

    def reset(self) -> None:
        self.attempt = 0

    def connected(self, now: float) -> None:
        """A connection was established at ``now``."""
        self._connected_at = now

    def disconnected(self, now: float) -> None:
        """The connection dropped at ``now``: reset if it had been stable long enough."""
        if self._connected_at is not None and now - self._connected_at >= self.policy.stable_after:
            self.reset()
        self._connected_at = None

    def check_stable(self, now: float) -> bool:
        """Reset once the current connection has lasted ``stable_after``; True if it has."""
        if self._connected_at is not None and now - self._connected_at >= self.policy.stable_after:
            self.reset()
            return True
        return False
