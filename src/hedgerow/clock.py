"""Time as a dependency: a monotonic ``now()`` and a ``sleep`` that tests can drive.

Parts that wait or keep deadlines (the broker's sweep and keep-alive, the core's cloud
connector) take a ``Clock``. In production it is ``MonotonicClock`` (``time.monotonic``
and ``asyncio.sleep``); tests pass a ``ManualClock`` and ``advance`` it, so a timing test
states exactly how much time passes instead of sleeping and hoping. Standard library only.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol

#: Real seconds ``ManualClock.wait_sleepers`` waits at most.
WAIT_LIMIT = 5.0


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds (only differences mean anything)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock."""
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic`` (the asyncio loop's time base) and ``asyncio.sleep``."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told (``advance``); sleepers wake when their time comes.

    ``sleeping`` counts the tasks waiting in ``sleep``, so a test can wait until the code
    under test is parked before it moves time (``await clock.wait_sleepers(1)``).
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._changed: asyncio.Event | None = None

    def now(self) -> float:
        return self._now

    @property
    def sleeping(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        self._notify()
        await future

    def next_due(self) -> float | None:
        """When the earliest sleeper wakes (None: nobody sleeps)."""
        due = [when for when, _, f in self._sleepers if not f.done()]
        return min(due) if due else None

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose time has come."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds}s)")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
        self._notify()

    async def wait_sleepers(self, count: int) -> None:
        """Wait (at most ``WAIT_LIMIT`` real seconds) until ``count`` tasks sleep here."""

        async def parked() -> None:
            while self.sleeping < count:
                if self._changed is None:
                    self._changed = asyncio.Event()
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(parked(), WAIT_LIMIT)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
