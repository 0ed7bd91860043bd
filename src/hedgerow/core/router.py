"""The router: takes every message entering the core and hands it to its targets.

Sources: devices (the broker's interceptor), functions (the function host's ``publish``),
the cloud (cloud-to-edge subscriptions) and the shadow service (its replies). The pure
``RoutingTable`` says where a message goes; this module moves it:

* ``cloud``       → ``SpoolWriter``: intake log at once, spool commit once per loop tick;
* ``function:N``  → that function's bounded queue, drained by its own task into the host;
* ``shadow``      → the shadow queue; replies are routed again with source ``shadow``;
* ``thing:N``     → a device message already reached subscribed devices through the broker;
  a message from any other source is published on the local broker (the ACL decides who
  may subscribe).

Full queues drop the message and count it (``dropped_<target>``); nothing blocks the broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from hedgerow.broker.auth import Identity
from hedgerow.mqtt.packets import Publish

from .errors import SpoolError
from .routing_table import CLOUD, SHADOW, RoutingTable
from .shadow import parse_topic
from .spool import IntakeLog, Spool

log = logging.getLogger(__name__)

#: Messages waiting per function / for the shadow service / for local delivery.
DEFAULT_QUEUE_SIZE = 1000


class LocalBus(Protocol):
    async def publish(self, topic: str, payload: bytes, *, qos: int = 0) -> None: ...


class FunctionSink(Protocol):
    async def deliver(self, name: str, topic: str, payload: bytes, source: str) -> None: ...


class ConnectorSink(Protocol):
    async def deliver(self, name: str, topic: str, payload: bytes) -> None: ...


class ShadowHandler(Protocol):
    def handle(self, thing: str, operation: str, payload: bytes) -> list[tuple[str, bytes]]: ...


@dataclass(frozen=True, slots=True)
class Routed:
    source: str
    topic: str
    payload: bytes
    qos: int


class SpoolWriter:
    """Appends to the intake log at once and to the spool once per loop tick (group commit)."""

    def __init__(
        self, spool: Spool, intake: IntakeLog | None, on_commit: Callable[[], None]
    ) -> None:
        self.spool = spool
        self.intake = intake
        self.on_commit = on_commit
        self._buffer: list[tuple[str, bytes, int]] = []
        self._scheduled = False
        self._mark: int | None = None
        self.failed = 0
        self._loop = asyncio.get_running_loop()

    def add(self, topic: str, payload: bytes, qos: int = 1) -> None:
        if self.intake is not None:
            self._mark = self.intake.write(topic, payload, qos)
        self._buffer.append((topic, payload, qos))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        buffer, self._buffer = self._buffer, []
        if not buffer:
            return
        try:
            accepted = self.spool.append_many(buffer, self._mark)
        except SpoolError as exc:  # keep routing: this batch is dropped and counted
            self.failed += len(buffer)
            log.error("core.spool.append_failed count=%d error=%s", len(buffer), exc)
            return
        if accepted < len(buffer):
            log.warning("core.spool.overflow dropped=%d", len(buffer) - accepted)
        if self.intake is not None:
            self.intake.clear()
        self.on_commit()


class Router:
    """Dispatches messages by the routing table; owns the per-target queues and their tasks."""

    def __init__(
        self,
        table: RoutingTable,
        *,
        cloud: SpoolWriter,
        local: LocalBus,
        functions: FunctionSink,
        shadow: ShadowHandler | None,
        connectors: ConnectorSink | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        self.table = table
        self.cloud = cloud
        self.local = local
        self.functions = functions
        self.shadow = shadow
        self.connectors = connectors
        self.queue_size = queue_size
        self.counters: dict[str, int] = {}
        self._queues: dict[str, asyncio.Queue[Routed]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tg: asyncio.TaskGroup | None = None

    async def __aenter__(self) -> Router:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._ensure("local")
        self._ensure(SHADOW)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks.values():
            task.cancel()
        assert self._tg is not None
        await self._tg.__aexit__(exc_type, exc, tb)

    def _count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def _ensure(self, target: str) -> asyncio.Queue[Routed]:
        queue = self._queues.get(target)
        if queue is None:
            queue = self._queues[target] = asyncio.Queue(self.queue_size)
            assert self._tg is not None
            self._tasks[target] = self._tg.create_task(
                self._drain(target, queue), name=f"router-{target}"
            )
        return queue

    def set_table(self, table: RoutingTable) -> None:
        """Install a new table (a deployment); queues of vanished functions are retired."""
        self.table = table
        wanted = {s.target for s in table if s.target.startswith(("function:", "connector:"))}
        for target in list(self._queues):
            if target.startswith(("function:", "connector:")) and target not in wanted:
                self._tasks.pop(target).cancel()
                del self._queues[target]

    def queue_depths(self) -> Mapping[str, int]:
        return {k: q.qsize() for k, q in self._queues.items()}

    # ---- entry points ---------------------------------------------------------------

    def intercept(self, identity: Identity, publish: Publish) -> None:
        """The broker's interceptor: every authorized device PUBLISH."""
        source = "thing:" + identity.name
        topic = publish.topic
        if topic.startswith("$aws/things/"):
            parsed = parse_topic(topic)
            if parsed is not None and parsed[0] == identity.name:
                # a device's own shadow needs no subscription (see admission.py)
                targets = self.table.route(source, topic)
                if SHADOW not in targets:
                    targets.append(SHADOW)
                self._send(source, topic, publish.payload, publish.qos, targets, True)
                return
        self.dispatch(source, topic, publish.payload, publish.qos)

    def dispatch(
        self,
        source: str,
        topic: str,
        payload: bytes,
        qos: int = 1,
        *,
        local_done: bool | None = None,
    ) -> int:
        """Route one message; returns how many targets took it. ``local_done``: the message
        already reached the local broker (a device's own publish), so ``thing:`` targets
        need nothing more."""
        targets = self.table.route(source, topic)
        if local_done is None:
            local_done = source.startswith("thing:")
        return self._send(source, topic, payload, qos, targets, local_done)

    def _send(
        self,
        source: str,
        topic: str,
        payload: bytes,
        qos: int,
        targets: list[str],
        local_done: bool,
    ) -> int:
        if not targets:
            self._count("unrouted")
            return 0
        taken = 0
        for target in targets:
            if target == CLOUD:
                self.cloud.add(topic, payload, 1)
                self._count("to_cloud")
                taken += 1
            elif target.startswith("thing:"):
                if not local_done:
                    local_done = True
                    taken += self._put("local", Routed(source, topic, payload, qos))
                else:
                    taken += 1
            else:
                taken += self._put(target, Routed(source, topic, payload, qos))
        return taken

    def _put(self, target: str, item: Routed) -> int:
        if target == SHADOW and self.shadow is None:
            self._count("dropped_shadow")
            return 0
        queue = self._ensure(target)
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            self._count(f"dropped_{target}")
            return 0
        return 1

    # ---- per-target tasks -------------------------------------------------------------

    async def _drain(self, target: str, queue: asyncio.Queue[Routed]) -> None:
        while True:
            item = await queue.get()
            try:
                await self._deliver(target, item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad delivery must not stop the target's queue
                self._count(f"failed_{target}")
                log.warning(
                    "core.router.delivery_failed target=%s topic=%s error=%s",
                    target,
                    item.topic,
                    exc,
                )

    async def _deliver(self, target: str, item: Routed) -> None:
        if target == "local":
            await self.local.publish(item.topic, item.payload, qos=min(item.qos, 1))
            self._count("to_local")
        elif target == SHADOW:
            await self._shadow(item)
        elif target.startswith("connector:"):
            if self.connectors is None:
                self._count("dropped_connectors")
                return
            await self.connectors.deliver(
                target.removeprefix("connector:"), item.topic, item.payload
            )
            self._count("to_connectors")
        else:
            await self.functions.deliver(
                target.removeprefix("function:"), item.topic, item.payload, item.source
            )
            self._count("to_functions")

    def shadow_replies(self, thing: str, messages: Sequence[tuple[str, bytes]]) -> None:
        """Replies of a change the cloud made to ``thing``'s shadow (shadow sync): the
        device hears them on its own shadow topics, other targets by the table."""
        for topic, payload in messages:
            self._put("local", Routed(SHADOW, topic, payload, 0))
            self.dispatch(SHADOW, topic, payload, 0, local_done=True)

    async def _shadow(self, item: Routed) -> None:
        assert self.shadow is not None
        parsed = parse_topic(item.topic)
        if parsed is None:
            self._count("dropped_shadow")
            return
        own = item.source == "thing:" + parsed[0]
        for topic, payload in self.shadow.handle(parsed[0], parsed[1], item.payload):
            if own:  # the requesting device gets its replies (it may subscribe to its shadow)
                await self.local.publish(topic, payload, qos=0)
            self.dispatch(SHADOW, topic, payload, 0, local_done=own)
        self._count("to_shadow")
