"""The cloud connector: one MQTT connection to the cloud with the core's identity.

It drains the durable spool in order with QoS 1 (up to ``inflight`` unacknowledged
publishes pipelined), removes records only after their PUBACK, and starts again from the
oldest unacknowledged record after every reconnect (at-least-once). Each routed message
carries the v5 user property ``core=<name>``; over MQTT 3.1.1 (an external broker with no
5) it goes to ``$hedgerow/cores/<name>/routed/<topic>`` instead. Reconnects follow a
capped exponential backoff with full jitter.

Inbound: the core's topics of ``hedgerow.contract.topics.TO_CORE``
(``$hedgerow/cores/{core}/deployments``, ``/revocations``, ``/group-cas``, ``/things``) plus
every filter of a subscription whose source is ``cloud`` are subscribed on each connect and
handed to ``on_message``; ``on_connected`` runs after each successful (re)connect.

Presence: after each connect the core publishes ``contract.Presence(connected=True)``,
retained, on ``$hedgerow/cores/{core}/presence``, and its MQTT will is the same with
``connected: false``; the link always ends without DISCONNECT (``abort``), so the broker
publishes the will whenever it ends. An external broker's cloud learns from them which
cores are connected (the embedded broker knows its sessions).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

from hedgerow.backoff import BackoffPolicy, Uniform
from hedgerow.client import (
    Client,
    ClientError,
    ConnectionLost,
    Properties,
    ProtocolVersion,
    PublishError,
    Will,
)
from hedgerow.clock import Clock, MonotonicClock
from hedgerow.contract.heartbeat import Presence
from hedgerow.contract.topics import TO_CORE, CoreLeaf, core_topic, parse_core_topic, routed_topic

from .errors import CoreError
from .spool import Spool

log = logging.getLogger(__name__)

#: Reconnect to the cloud: capped exponential backoff with full jitter.
CONNECTOR_BACKOFF = BackoffPolicy(base=0.5, cap=30.0)
#: A session shorter than this does not reset the backoff: a cloud that accepts and then
#: drops the link at once is retried at the backoff's pace, not in a hot loop.
STABLE_SESSION_S = 10.0

ClientFactory = Callable[..., Client]

#: ``[cloud] mqtt_protocol`` → the version the connector speaks.
MQTT_VERSIONS: dict[str, ProtocolVersion] = {"5": ProtocolVersion.V5, "3.1.1": ProtocolVersion.V311}


#: Publishes encoded per event-loop tick before yielding (so writes overlap with encoding).
SEND_SLICE = 200
#: Acknowledged records removed from the spool in one transaction (at least; also when idle).
ACK_BATCH = 500
#: Log batches in flight at once (each up to 500 records): the rest of the client's window
#: stays with the telemetry.
LOG_INFLIGHT = 16


class CloudConnector:
    def __init__(
        self,
        *,
        core: str,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        spool: Spool,
        on_message: Callable[[str, bytes], None],
        on_connected: Callable[[], None],
        filters: Callable[[], Sequence[str]],
        keepalive: int = 300,
        inflight: int = 1000,
        backoff: BackoffPolicy = CONNECTOR_BACKOFF,
        client_factory: ClientFactory = Client,
        clock: Clock | None = None,
        uniform: Uniform = random.uniform,
        log_spool: Spool | None = None,
        version: ProtocolVersion = ProtocolVersion.V5,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.core = core
        #: MQTT 5 (the ``core`` user property names the sender), or 3.1.1 for a broker
        #: with no 5: routed telemetry then goes to ``$hedgerow/cores/{core}/routed/...``
        self.version = version
        self.username = username
        self.password = password
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.spool = spool
        #: the core's and functions' logs, drained beside the telemetry (its own quota)
        self.log_spool = log_spool
        self.on_message = on_message
        self.on_connected = on_connected
        self.filters = filters
        self.keepalive = keepalive
        self.inflight = inflight
        self.backoff = backoff
        self.client_factory = client_factory
        #: Reconnect delays and session lengths are timed on it (tests advance one).
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        #: The backoff's jitter source (tests pass a fixed one).
        self.uniform = uniform
        self.properties = (
            Properties(user_properties=(("core", core),))
            if version == ProtocolVersion.V5
            else Properties()
        )
        self._presence_topic = core_topic(core, CoreLeaf.PRESENCE)
        self.connected = asyncio.Event()
        self._progress = asyncio.Event()
        self._log_progress = asyncio.Event()
        self._client: Client | None = None
        self._subscribed: set[str] = set()
        #: when the telemetry spool was last seen empty (its backlog is at most this old)
        self.drained_at = self.clock.now()
        self.counters: dict[str, int] = {
            "sent": 0,
            "acked": 0,
            "rejected": 0,
            "connects": 0,
            "connect_failures": 0,
            "logs_sent": 0,
            "logs_acked": 0,
            "logs_rejected": 0,
        }

    # ---- used by others ---------------------------------------------------------------

    def wake(self) -> None:
        """New records are in the spool."""
        self._progress.set()

    def wake_logs(self) -> None:
        """New log batches are in the log spool."""
        self._log_progress.set()

    def publish_nowait(self, topic: str, payload: bytes) -> bool:
        """QoS 0 publish (heartbeats) when connected; False when not."""
        client = self._client
        if client is None or not client.is_connected:
            return False
        try:
            client.publish_nowait(topic, payload, 0)
        except ClientError:
            return False
        return True

    async def resubscribe(self) -> None:
        """Subscribe to cloud-source filters added by a new deployment."""
        client = self._client
        if client is None or not client.is_connected:
            return
        new = [f for f in self.filters() if f not in self._subscribed]
        if new:
            try:
                await client.subscribe(*new, qos=1)
            except ClientError as exc:
                log.warning("core.connector.subscribe_failed filters=%s error=%s", new, exc)
                return
            self._subscribed.update(new)

    # ---- the connection loop ---------------------------------------------------------

    async def run(self) -> None:
        attempt = 0
        while True:
            client = self.client_factory(
                self.host,
                self.port,
                client_id=self.core,
                ssl=self.ssl_context,
                version=self.version,
                username=self.username,
                password=self.password,
                keepalive=self.keepalive,
                clean_start=True,
                max_inflight=self.inflight,
                will=Will(self._presence_topic, Presence(False).to_json(), qos=1, retain=True),
            )
            try:
                await client.connect()
            except ClientError as exc:
                self.counters["connect_failures"] += 1
                delay = self.backoff.delay(attempt, self.uniform)
                attempt += 1
                log.info("core.connector.connect_failed error=%s retry_in=%.2f", exc, delay)
                await self.clock.sleep(delay)
                continue
            self.counters["connects"] += 1
            log.info("core.connector.connected host=%s port=%s", self.host, self.port)
            started = self.clock.now()
            try:
                await self._session(client)
            except ClientError as exc:
                log.info("core.connector.disconnected error=%s", exc)
            except CoreError as exc:  # the spool failed: drop the link, try again later
                log.error("core.connector.spool_failed error=%s", exc)
                await self.clock.sleep(self.backoff.cap)
            finally:
                self._client = None
                self.connected.clear()
                client.abort()
            if self.clock.now() - started >= STABLE_SESSION_S:
                attempt = 0  # a stable session: reconnect at once
                continue
            delay = self.backoff.delay(attempt, self.uniform)
            attempt += 1
            log.info("core.connector.short_session retry_in=%.2f", delay)
            await self.clock.sleep(delay)

    async def _session(self, client: Client) -> None:
        base = [core_topic(self.core, leaf) for leaf in TO_CORE]
        filters = list(dict.fromkeys([*base, *self.filters()]))
        await client.subscribe(*filters, qos=1)
        self._subscribed = set(filters)
        # here after the subscriptions: its PUBACK follows theirs, nothing waits for it
        client.publish_nowait(
            self._presence_topic, Presence(True).to_json(), 1, True
        ).add_done_callback(_presence_published)
        self._client = client
        self.connected.set()
        self.on_connected()
        # Two tasks by hand, not a TaskGroup: on Python 3.11 a TaskGroup whose child fails
        # (the link broke) while the core is being stopped raises the child's error and
        # swallows the cancellation, so the connector would reconnect for ever and the core
        # ignore SIGTERM. Here a stop always wins; otherwise the first failure ends the
        # session and is raised as itself.
        tasks = [
            asyncio.create_task(
                self._send(client, self.spool, self._progress, ""), name="connector-send"
            ),
            asyncio.create_task(self._receive(client), name="connector-receive"),
        ]
        if self.log_spool is not None:
            tasks.append(
                asyncio.create_task(
                    self._send(client, self.log_spool, self._log_progress, "logs_"),
                    name="connector-send-logs",
                )
            )
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if task in done and not task.cancelled() and task.exception() is not None:
                raise cast(BaseException, task.exception())

    async def _receive(self, client: Client) -> None:
        async for message in client.messages():
            try:
                self.on_message(message.topic, message.payload)
            except Exception as exc:  # a bad message must not end the session
                log.warning("core.connector.message_failed topic=%s error=%s", message.topic, exc)
        raise ConnectionLost("the cloud closed the connection")

    async def _send(
        self, client: Client, spool: Spool, progress: asyncio.Event, counter_prefix: str
    ) -> None:
        """Drain ``spool`` (telemetry, or the logs: the same rules, their own counters)."""
        pending: deque[tuple[int, asyncio.Future[None]]] = deque()

        def on_done(_: Any) -> None:
            progress.set()

        try:
            await self._send_loop(client, spool, pending, progress, on_done, counter_prefix)
        finally:
            for _, future in pending:
                if future.done():
                    future.exception()
                else:
                    future.add_done_callback(_retrieve)

    async def _send_loop(
        self,
        client: Client,
        spool: Spool,
        pending: deque[tuple[int, asyncio.Future[None]]],
        progress: asyncio.Event,
        on_done: Callable[[Any], None],
        prefix: str,
    ) -> None:
        properties = self.properties
        # over 3.1.1 the topic names the core; log batches already go to its own topic
        prefix_topic = self.version != ProtocolVersion.V5 and not prefix
        after_id = 0
        to_ack: list[int] = []
        try:
            while True:
                progress.clear()
                reaped = 0
                while pending and pending[0][1].done():
                    record_id, future = pending.popleft()
                    try:
                        future.result()
                    except PublishError as exc:
                        self.counters[prefix + "rejected"] += 1
                        log.warning(
                            "core.connector.rejected id=%s reason=0x%02x",
                            record_id,
                            exc.reason_code,
                        )
                    to_ack.append(record_id)
                    reaped += 1
                if len(to_ack) >= ACK_BATCH:
                    self._ack(spool, to_ack, prefix)
                window = LOG_INFLIGHT if prefix else self.inflight
                room = min(window - len(pending), SEND_SLICE)
                records = spool.peek(after_id, room) if room > 0 else []
                for record in records:
                    topic = record.topic
                    if prefix_topic and parse_core_topic(topic) is None:  # not its own status
                        topic = routed_topic(self.core, topic)
                    future = client.publish_nowait(topic, record.payload, 1, False, properties)
                    future.add_done_callback(on_done)
                    pending.append((record.id, future))
                    after_id = record.id
                self.counters[prefix + "sent"] += len(records)
                if records:
                    # let this slice go out before encoding the next: the cloud works on it
                    # while we prepare more (a pipeline, not lock-step windows)
                    await asyncio.sleep(0)
                elif not reaped:
                    self._ack(spool, to_ack, prefix)  # idle: nothing waits to be batched
                    await progress.wait()
        finally:
            self._ack(spool, to_ack, prefix)

    def _ack(self, spool: Spool, ids: list[int], prefix: str) -> None:
        if ids:
            spool.ack(ids)
            self.counters[prefix + "acked"] += len(ids)
            ids.clear()
            if spool is self.spool and spool.stats().depth == 0:
                self.drained_at = self.clock.now()

    def spool_age(self) -> float:
        """Seconds the oldest telemetry record may have waited (0 when the spool is empty)."""
        if self.spool.stats().depth == 0:
            self.drained_at = self.clock.now()
            return 0.0
        return max(0.0, self.clock.now() - self.drained_at)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _presence_published(future: asyncio.Future[None]) -> None:
    """A cloud from before presence refuses it (0x87): harmless, said once at DEBUG."""
    if not future.cancelled() and (error := future.exception()) is not None:
        log.debug("core.connector.presence_refused error=%s", error)
