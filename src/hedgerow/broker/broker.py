"""The broker: listeners plus the shared hub, with the API the core and the cloud use.

    async with Broker(BrokerConfig(), authenticator=..., authorizer=...) as broker:
        host, port = await broker.listen("127.0.0.1", 0)
        await broker.publish("status", b"up", retain=True)
        remove = broker.add_interceptor(lambda identity, publish: ...)

Leaving the ``async with`` block shuts down gracefully: listeners stop accepting, v5
clients get DISCONNECT (Server shutting down), buffered data is flushed, and connections
that linger past ``shutdown_grace`` are aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from hedgerow.broker.auth import AllowAll, Authenticator, Authorizer, Identity
from hedgerow.broker.client_io import Connection
from hedgerow.broker.config import LISTEN_BACKLOG, BrokerConfig
from hedgerow.broker.errors import BrokerClosed
from hedgerow.broker.hub import Hub, Interceptor
from hedgerow.broker.messages import Message
from hedgerow.broker.protocol import Phase
from hedgerow.broker.stats import BrokerStats, snapshot, sys_topics
from hedgerow.clock import Clock, MonotonicClock
from hedgerow.mqtt.packets import Properties
from hedgerow.mqtt.reasons import ReasonCode
from hedgerow.mqtt.topics import validate_topic_name

if TYPE_CHECKING:
    from hedgerow.broker.persistence import Persister

log = logging.getLogger(__name__)

T = TypeVar("T")


class Broker:
    def __init__(
        self,
        config: BrokerConfig = BrokerConfig(),
        *,
        authenticator: Authenticator | None = None,
        authorizer: Authorizer | None = None,
        persist: Path | None = None,
        persist_interval: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        #: Time for keep-alive, timeouts, expiry and the sweep (tests pass a ManualClock).
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        #: Directory sessions and retained messages are kept in (None: memory only).
        self.persist = persist
        self.persist_interval = persist_interval
        self._persister: Persister | None = None
        self._persist_task: asyncio.Task[None] | None = None
        allow = AllowAll()
        self._authenticator: Authenticator = authenticator or allow
        self._authorizer: Authorizer = authorizer or allow
        self._hub: Hub[Connection] | None = None
        self._servers: list[asyncio.Server] = []
        self._sweeper: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def hub(self) -> Hub[Connection]:
        if self._hub is None or self._hub.closing:
            raise BrokerClosed("the broker is not running (use it as an async context manager)")
        return self._hub

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._hub = Hub(self.config, self._authenticator, self._authorizer, loop, self.clock)
        if self.persist is not None:
            self._start_persistence(self.persist)
        self._sweeper = loop.create_task(self._sweep(), name="mqtt-broker-sweep")

    def _start_persistence(self, directory: Path) -> None:
        """Restore what the directory holds, then keep it up to date (persistence.py)."""
        from hedgerow.broker.persistence import Persister

        hub = self.hub
        persister = self._persister = Persister(hub, directory, self.persist_interval)
        persister.restore()
        hub.interceptors.append(persister.intercept)
        self._persist_task = hub.loop.create_task(persister.run(), name="mqtt-broker-persist")

    async def listen(
        self, host: str, port: int, ssl: ssl_module.SSLContext | None = None
    ) -> tuple[str, int]:
        """Accept MQTT clients on ``host:port`` (0 = any free port); TLS when ``ssl`` is given."""
        hub = self.hub
        # TLS is done by each connection over memory BIOs (see tls.py), not by the loop.
        return await self._serve(lambda: Connection(hub, ssl), host, port, "MQTT", ssl)

    async def listen_websocket(
        self, host: str, port: int, ssl: ssl_module.SSLContext | None = None
    ) -> tuple[str, int]:
        """Accept MQTT over WebSocket (paths ``/`` and ``/mqtt``, subprotocol ``mqtt``) on
        ``host:port``; TLS (wss) when ``ssl`` is given. Same auth, ACLs and limits as TCP."""
        from hedgerow.broker.websocket import WebSocketProtocol

        hub = self.hub
        return await self._serve(lambda: WebSocketProtocol(hub, ssl), host, port, "WebSocket", ssl)

    async def _serve(
        self,
        factory: Callable[[], asyncio.BaseProtocol],
        host: str,
        port: int,
        kind: str,
        ssl: ssl_module.SSLContext | None,
    ) -> tuple[str, int]:
        server = await self.hub.loop.create_server(
            factory, host, port, backlog=LISTEN_BACKLOG, reuse_address=True
        )
        self._servers.append(server)
        name = server.sockets[0].getsockname()
        log.info(
            "broker.listening kind=%s host=%s port=%s tls=%s",
            kind,
            name[0],
            name[1],
            ssl is not None,
        )
        return str(name[0]), int(name[1])

    async def publish(
        self,
        topic: str,
        payload: bytes | bytearray | memoryview | str,
        *,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """Publish from inside the process: delivered to matching subscribers, retained if asked."""
        validate_topic_name(topic)
        if qos not in (0, 1, 2):
            raise ValueError(f"QoS must be 0, 1 or 2, not {qos}")
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        hub = self.hub
        hub.route(Message(topic, data, qos, retain, properties, now=hub.clock.now()), None)

    def add_interceptor(self, fn: Interceptor) -> Callable[[], None]:
        """Call ``fn(identity, publish)`` for every authorized client PUBLISH; returns a remover."""
        return _registered(self.hub.interceptors, fn)

    def add_disconnect_listener(self, fn: Callable[[Identity], None]) -> Callable[[], None]:
        """Call ``fn(identity)`` whenever a connected client's connection ends (whatever
        the cause: DISCONNECT, a lost link, a kick, a takeover); returns a remover."""
        return _registered(self.hub.disconnect_listeners, fn)

    def disconnect_where(self, predicate: Callable[[Identity], bool], reason: str) -> int:
        """Disconnect every connected client whose identity matches; returns how many."""
        count = 0
        for conn in list(self.hub.connections):
            if (
                conn.state is Phase.CONNECTED
                and conn.identity is not None
                and predicate(conn.identity)
            ):
                conn.kick(ReasonCode.ADMINISTRATIVE_ACTION, reason)
                count += 1
        return count

    def clients(self) -> list[tuple[str, Identity]]:
        """(client id, identity) of every connected client."""
        return [
            (c.client_id, c.identity)
            for c in self.hub.connections
            if c.state is Phase.CONNECTED and c.identity is not None
        ]

    def stats(self) -> BrokerStats:
        hub = self._hub
        if hub is None:
            raise BrokerClosed("the broker was never started")
        return snapshot(
            hub.counters,
            clients_connected=sum(1 for c in hub.connections if c.state is Phase.CONNECTED),
            sessions=len(hub.sessions),
            subscriptions=hub.table.count,
            retained=len(hub.retained),
            queued_messages=hub.sessions.queued_messages,
            outbound_bytes=hub.budget.total,
            outbound_bytes_peak=hub.budget.peak,
        )

    async def shut_out_clients(self) -> None:
        """Stop taking clients and disconnect every one (v5: SERVER_SHUTTING_DOWN), waiting up
        to ``shutdown_grace`` for them to go. When this returns no client PUBLISH can reach
        the interceptors any more; in-process ``publish`` still works until ``close``."""
        hub = self.hub
        if hub.refusing:
            return
        hub.refusing = True
        for server in self._servers:
            server.close()
        for task in list(hub.tasks):
            task.cancel()
        if hub.tasks:
            await asyncio.gather(*hub.tasks, return_exceptions=True)
        hub.flush()
        for conn in list(hub.connections):
            conn.kick(ReasonCode.SERVER_SHUTTING_DOWN, "broker shutting down")
        if hub.connections:
            try:
                await asyncio.wait_for(hub.drained.wait(), self.config.shutdown_grace)
            except TimeoutError:
                log.warning(
                    "broker.shutdown_aborting connections=%d reason=%r",
                    len(hub.connections),
                    "did not close in time",
                )
        for conn in list(hub.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def close(self) -> None:
        hub = self._hub
        if hub is None or hub.closing:
            return
        await self.shut_out_clients()
        hub.closing = True
        if self._persister is not None and self._persist_task is not None:
            self._persister.stop()  # not cancelled: a commit in a worker thread finishes
            with contextlib.suppress(asyncio.CancelledError):
                await self._persist_task
            self._persister.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
        log.info("broker.closed")

    async def _sweep(self) -> None:
        """Housekeeping: keep-alive, CONNECT timeouts, slow consumers, expiry, $SYS."""
        hub = self._hub  # not self.hub: a broker closed before this task ran is closing
        assert hub is not None
        interval = self.config.sweep_interval
        sys_interval = self.config.sys_interval
        clock = hub.clock
        next_sys = clock.now() + sys_interval
        while True:
            await clock.sleep(interval)
            now = clock.now()
            try:
                for conn in list(hub.connections):
                    conn.sweep(now)
                hub.sweep_sessions(now)
                if sys_interval and now >= next_sys:
                    next_sys = now + sys_interval
                    for topic, payload in sys_topics(self.stats()):
                        hub.route(Message(topic, payload, 0, True), None)
            except Exception:
                log.exception("broker.sweep_failed")


def _registered(hooks: list[T], fn: T) -> Callable[[], None]:
    """Append ``fn`` to ``hooks``; the function that removes it again."""
    hooks.append(fn)

    def remove() -> None:
        if fn in hooks:
            hooks.remove(fn)

    return remove
