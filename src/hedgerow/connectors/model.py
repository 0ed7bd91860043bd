"""What every connector is: a core component with counters that publishes through a callback.

A connector is a ``hedgerow.lifecycle.Component``: ``start()`` starts its one supervising
task and returns at once (the device may be away; the connector keeps trying), ``stop()``
cancels it and leaves it STOPPED. Its state says how the device link is::

    STOPPED ──start──▶ STARTING ──connected──▶ RUNNING ──link lost──▶ BACKOFF ──▶ RUNNING ...
                                                                       stop (any) ──▶ STOPPED

Values and answers leave through ``publish(topic, payload)`` (the core routes them by the
group's subscription table like anything a function publishes); requests arrive through
``await handle(topic, payload)`` for the topics ``request_topics`` lists.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from hedgerow.lifecycle import Health, State, health_of

log = logging.getLogger(__name__)

#: How often, and how long each time, ``stop()`` cancels and waits for a connector's task.
STOP_ATTEMPTS: Final = 10
STOP_WAIT_S: Final = 0.5

#: How a connector hands a message to the core: ``await publish(topic, payload)``.
Publish = Callable[[str, bytes], Awaitable[None]]


@dataclass(slots=True)
class Counters:
    """What a connector did since it started (reported in the heartbeat)."""

    polls: int = 0  # completed poll rounds (Modbus) or notifications (OPC UA)
    values: int = 0  # values published
    errors: int = 0  # failed requests, failed connects, exception responses
    reconnects: int = 0  # links re-established after a loss
    requests: int = 0  # requests handled from the request topics
    latency_total_s: float = 0.0
    latency_count: int = 0
    latency_last_s: float = 0.0
    connected: bool = False
    last_error: str = field(default="")

    def record_latency(self, seconds: float) -> None:
        self.latency_last_s = seconds
        self.latency_total_s += seconds
        self.latency_count += 1

    def as_dict(self) -> dict[str, object]:
        mean = self.latency_total_s / self.latency_count if self.latency_count else 0.0
        return {
            "polls": self.polls,
            "values": self.values,
            "errors": self.errors,
            "reconnects": self.reconnects,
            "requests": self.requests,
            "latency_ms": round(mean * 1000, 3),
            "last_latency_ms": round(self.latency_last_s * 1000, 3),
            "connected": self.connected,
            "last_error": self.last_error,
        }


class ConnectorBase:
    """The lifecycle shared by every connector; subclasses implement ``_run`` and ``handle``."""

    kind = "connector"

    def __init__(self, name: str, publish: Publish) -> None:
        self._name = name
        self._publish = publish
        self._state = State.STOPPED
        self._task: asyncio.Task[None] | None = None
        #: set by ``stop()``: a library may lose the cancel on the way (``asyncio.wait_for``
        #: in Python 3.11 returns the result instead when the awaited future completes in the
        #: same loop step, as a fast Modbus poll's often does), so the loops check this
        #: before going round again
        self.stopping = False
        self._waiters: list[tuple[frozenset[State], asyncio.Future[State]]] = []
        self.counters = Counters()

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> State:
        return self._state

    def health(self) -> Health:
        return health_of([self._state])

    def _set_state(self, state: State) -> None:
        self._state = state
        for states, future in list(self._waiters):
            if state in states and not future.done():
                future.set_result(state)

    async def wait_for_state(self, *states: State) -> State:
        """Return once the connector is in one of ``states`` (the caller bounds the wait)."""
        if self._state in states:
            return self._state
        future: asyncio.Future[State] = asyncio.get_running_loop().create_future()
        entry = (frozenset(states), future)
        self._waiters.append(entry)
        try:
            return await future
        finally:
            self._waiters.remove(entry)

    @property
    def request_topics(self) -> tuple[str, ...]:
        return ()

    async def start(self) -> None:
        if self._task is not None:
            return
        self._set_state(State.STARTING)
        self.stopping = False
        self._task = asyncio.create_task(self._supervise(), name=f"connector:{self._name}")
        log.info("connectors.started name=%s kind=%s", self._name, self.kind)

    async def stop(self) -> None:
        task, self._task = self._task, None
        self.stopping = True
        if task is not None:
            self._set_state(State.STOPPING)
            try:
                await self._cancel(task)
            finally:
                self.counters.connected = False
                self._set_state(State.STOPPED)
            log.info("connectors.stopped name=%s", self._name)
        self._set_state(State.STOPPED)

    async def _cancel(self, task: asyncio.Task[None]) -> None:
        """Cancel the connector's task and wait for it, cancelling again when a library
        swallowed the cancellation (bounded: ``STOP_ATTEMPTS`` × ``STOP_WAIT_S``)."""
        for _ in range(STOP_ATTEMPTS):
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=STOP_WAIT_S)
            if done:
                if not task.cancelled() and task.exception() is not None:
                    log.error(
                        "connectors.stop_failed name=%s error=%r", self._name, task.exception()
                    )
                return
        log.error("connectors.stop_timeout name=%s reason=task_did_not_end", self._name)

    async def _supervise(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: report BROKEN rather than die silently
            log.exception("connectors.broken name=%s error=%s", self._name, exc)
            self._set_state(State.BROKEN)

    async def _run(self) -> None:
        raise NotImplementedError

    async def handle(self, topic: str, payload: bytes) -> None:
        """A message on one of ``request_topics``."""
        raise NotImplementedError

    def _linked(self) -> None:
        self.counters.connected = True
        self._set_state(State.RUNNING)

    def _unlinked(self, error: str) -> None:
        self.counters.connected = False
        self.counters.last_error = error
        if self._state is not State.STOPPING:
            self._set_state(State.BACKOFF)
