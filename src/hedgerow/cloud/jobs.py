"""Background jobs that run once across replicas.

``Jobs.run(job, tick, interval_s)`` runs ``tick`` every ``interval_s`` while this process
holds the job's lock (``hedgerow.cloud.storage.locks``), and asks for the lock every
``check_s`` meanwhile: when the holder dies, another replica takes the job over within
``check_s`` (plus the time the database takes to see the holder's connection close). A
replica that takes a job over runs its tick at once — the previous holder may have died
before finishing its last one — after calling ``taken_over`` (a job forgets what it
remembered of the state it does not own any more).

Every tick must leave the database consistent when the process is killed in its middle:
each job writes in transactions (see docs/operations.md, "Several replicas").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from hedgerow.cloud.storage.locks import JobLocks, LocalLocks

log = logging.getLogger(__name__)

#: Seconds between two tries of a lock another replica holds (and between two checks
#: that the holder still holds it).
CHECK_SECONDS = 1.0

Tick = Callable[[], Awaitable[None]]


class Schedule(Protocol):
    """How a service's background job is run (``Jobs.run``)."""

    async def __call__(
        self,
        job: str,
        tick: Tick,
        interval_s: float,
        *,
        taken_over: Callable[[], None] | None = None,
    ) -> None: ...


@dataclass
class JobState:
    held: bool = False
    #: ticks run by this process
    ticks: int = 0
    #: times this process took the lock
    taken: int = 0
    failures: int = 0

    def to_json(self) -> dict[str, int | bool]:
        return {
            "held": self.held,
            "ticks": self.ticks,
            "taken": self.taken,
            "failures": self.failures,
        }


class Jobs:
    def __init__(self, locks: JobLocks | None = None, *, check_s: float = CHECK_SECONDS) -> None:
        self.locks = locks or LocalLocks()
        self.check_s = check_s
        self.states: dict[str, JobState] = {}

    def to_json(self) -> dict[str, dict[str, int | bool]]:
        return {name: state.to_json() for name, state in sorted(self.states.items())}

    async def run(
        self,
        job: str,
        tick: Tick,
        interval_s: float,
        *,
        taken_over: Callable[[], None] | None = None,
    ) -> None:
        """Forever: ``tick`` every ``interval_s`` while holding ``job``'s lock."""
        state = self.states.setdefault(job, JobState())
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            holding = await self.locks.held(job)
            if holding and not state.held:
                state.taken += 1
                log.info("job.taken job=%s times=%s", job, state.taken)
                if taken_over is not None:
                    taken_over()
                due = loop.time()
            elif state.held and not holding:
                log.warning("job.lost job=%s", job)
            state.held = holding
            if holding and loop.time() >= due:
                try:
                    await tick()
                except Exception:  # the job outlives any one bad tick; the next one retries
                    state.failures += 1
                    log.exception("job.failed job=%s", job)
                state.ticks += 1
                due = loop.time() + interval_s
            wait = self.check_s
            if holding:
                wait = min(wait, max(0.0, due - loop.time()))
            await asyncio.sleep(wait)
