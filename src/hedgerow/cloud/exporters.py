"""Telemetry export: the shell that drives ``telemetry_export`` (database, HTTP, MQTT, AMQP).

``TelemetryExports(targets, repository)`` is an async context manager holding one
``TargetExporter`` per ``[[telemetry.export]]``; the server runs each one's ``tick`` as a
job (``Jobs.run(target.job, ...)``): once across replicas, taken over when the holder dies.

A tick reads the messages after the target's cursor, plans a batch (``plan_batch``),
sends it, and only once the target acknowledged it (a 2xx; a PUBACK for every message; a
publisher confirm for every message: ``amqp_sender.py``, imported only for an AMQP target)
moves the cursor, by compare and set. A failure moves nothing: it is counted in the
database (``hedgerow cloud export status``, ``GET /api/v1/telemetry/exports``), logged
(``telemetry_export.failed``) and retried on a capped, jittered backoff. Ids skipped as
lost (deleted before this target got them) are logged as ``telemetry_export.lost``.

Errors: ``ExportFailed`` (the target did not take a batch; ``target``, ``reason``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol

import httpx

from hedgerow import pki
from hedgerow.backoff import BackoffPolicy, Uniform
from hedgerow.client import Client, ClientError, Properties, ProtocolVersion
from hedgerow.clock import Clock, MonotonicClock
from hedgerow.cloud import webhooks
from hedgerow.cloud.domain import Message
from hedgerow.cloud.storage.exports import ExportCursor, ExportStore
from hedgerow.cloud.telemetry_export import (
    AMQP_EXTRA,
    RETRY,
    ExportConfigError,
    ExportTarget,
    plan_batch,
    render_topic,
    shown_url,
    user_properties,
    webhook_body,
)

log = logging.getLogger(__name__)

#: Seconds between two ticks of a target's job (a tick sends until caught up).
EXPORT_INTERVAL_S: Final = 0.5
#: Bounds of one tick: batches, and seconds (then the job checks its lock again).
MAX_BATCHES_PER_TICK: Final = 50
TICK_BUDGET_S: Final = 5.0
#: Rows read per scan at least (a narrow topic filter skips most of them).
MIN_SCAN: Final = 2_000
#: PostgreSQL: seconds a hole in the ids is left alone before the writes that could
#: fill it are looked for (a writer takes its id a moment before its transaction id).
HOLE_GRACE_S: Final = 1.0
USER_AGENT: Final = "hedgerow-export/1"
EXPORT_HEADER: Final = "X-Hedgerow-Export"
IDS_HEADER: Final = "X-Hedgerow-Ids"


class ExportFailed(Exception):
    """A target did not acknowledge a batch; nothing was moved."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"{target}: {reason}")
        self.target = target
        self.reason = reason


class Sender(Protocol):
    async def send(self, messages: Sequence[Message]) -> None:
        """Return once the target acknowledged every message; else ``ExportFailed``."""
        ...

    async def close(self) -> None: ...


class WebhookSender:
    """One signed POST per batch (``telemetry_export.webhook_body``)."""

    def __init__(
        self,
        target: ExportTarget,
        client: httpx.AsyncClient | None = None,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.target = target
        verify: ssl.SSLContext | bool = True
        if target.ca_file:
            verify = pki.client_context(target.ca_file)
        self.client = client or httpx.AsyncClient(verify=verify)
        self.wall = wall

    async def send(self, messages: Sequence[Message]) -> None:
        target = self.target
        data = webhook_body(target.name, messages)
        extra = dict(target.headers)
        extra[EXPORT_HEADER] = target.name
        extra[IDS_HEADER] = f"{messages[0].id}-{messages[-1].id}"
        headers = webhooks.signed_headers(
            target.secret, data, self.wall(), user_agent=USER_AGENT, extra=extra
        )
        failed = await webhooks.post(self.client, target.url, data, headers, target.timeout_s)
        if failed is not None:
            raise ExportFailed(target.name, failed)

    async def close(self) -> None:
        await self.client.aclose()


def broker_ssl(target: ExportTarget) -> ssl.SSLContext | None:
    """A broker target's TLS (``mqtts://``, ``amqps://``): its CA, else the system's."""
    if not target.tls:
        return None
    if target.ca_file:
        return pki.client_context(target.ca_file, target.cert_file or None, target.key_file or None)
    context = ssl.create_default_context()
    if target.cert_file:
        context.load_cert_chain(target.cert_file, target.key_file)
    return context


class MqttSender:
    """QoS 1 PUBLISH of each message to ``render_topic(target.topic, …)``, in id order on
    one connection; the batch is acknowledged when every PUBACK arrived."""

    def __init__(self, target: ExportTarget) -> None:
        self.target = target
        self.client: Client | None = None

    async def _connected(self) -> Client:
        if self.client is not None and self.client.is_connected:
            return self.client
        target = self.target
        client = Client(
            target.host,
            target.port,
            client_id=target.mqtt_client_id,
            ssl=broker_ssl(target),
            username=target.username or None,
            password=target.password or None,
            connect_timeout=target.timeout_s,
            version=ProtocolVersion.V5 if target.protocol == "5" else ProtocolVersion.V311,
        )
        try:
            await client.connect()
        except ClientError as exc:
            raise ExportFailed(target.name, f"{type(exc).__name__}: {exc}") from exc
        log.info(
            "telemetry_export.connected target=%s broker=%s", target.name, shown_url(target.url)
        )
        self.client = client
        return client

    async def send(self, messages: Sequence[Message]) -> None:
        client = await self._connected()
        target = self.target
        v5 = target.protocol == "5"
        pending: list[asyncio.Future[None]] = []
        try:
            for m in messages:
                topic = render_topic(target.topic, m.topic, m.core)
                props = Properties(user_properties=user_properties(m)) if v5 else Properties()
                pending.append(client.publish_nowait(topic, m.payload, qos=1, properties=props))
            async with asyncio.timeout(target.timeout_s):
                results = await asyncio.gather(*pending, return_exceptions=True)
        except (ClientError, TimeoutError) as exc:
            client.abort()  # the next batch starts on a new connection
            await _settle(pending)
            reason = "no PUBACK in time" if isinstance(exc, TimeoutError) else str(exc)
            raise ExportFailed(target.name, reason) from exc
        except BaseException:  # cancelled (shutdown): nobody waits for these any more
            for future in pending:
                future.cancel()
            raise
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            client.abort()
            raise ExportFailed(target.name, f"{type(failures[0]).__name__}: {failures[0]}")

    async def close(self) -> None:
        if self.client is not None and self.client.is_connected:
            with contextlib.suppress(ClientError, OSError):
                await self.client.disconnect()


async def _settle(futures: Sequence[asyncio.Future[None]]) -> None:
    """Collect what the abandoned publishes end with (so no error goes unread)."""
    for future in futures:
        if not future.done():
            future.cancel()
    await asyncio.gather(*futures, return_exceptions=True)


def sender_for(target: ExportTarget) -> Sender:
    if target.kind == "amqp":
        try:
            from hedgerow.cloud.amqp_sender import AmqpSender
        except ImportError as exc:  # the config refuses this first; a caller may not have
            raise ExportConfigError(
                f"target {target.name!r}: an AMQP target needs the AMQP client: "
                f"pip install '{AMQP_EXTRA}'",
                "kind",
            ) from exc
        return AmqpSender(target)
    return WebhookSender(target) if target.kind == "webhook" else MqttSender(target)


class TargetExporter:
    """One target's job: ``tick`` exports what is stored after its cursor."""

    def __init__(
        self,
        target: ExportTarget,
        store: ExportStore,
        sender: Sender,
        *,
        clock: Clock | None = None,
        uniform: Uniform = random.uniform,
        retry: BackoffPolicy = RETRY,
        hole_grace_s: float = 0.0,
        max_batches: int = MAX_BATCHES_PER_TICK,
        budget_s: float = TICK_BUDGET_S,
    ) -> None:
        self.target = target
        self.store = store
        self.sender = sender
        self.clock = clock or MonotonicClock()
        self.uniform = uniform
        self.retry = retry
        self.hole_grace_s = hole_grace_s
        self.max_batches = max_batches
        self.budget_s = budget_s
        #: when the next attempt may be made after a failure
        self.retry_at = 0.0
        #: the hole the export waits at: (first id, first seen, the write horizon or None)
        self.hole: tuple[int, float, int | None] | None = None
        self.failing = 0

    def taken_over(self) -> None:
        """This replica just took the job: forget what it knew (the holder may have moved on)."""
        self.retry_at = 0.0
        self.hole = None

    async def tick(self) -> None:
        if self.clock.now() < self.retry_at:
            return
        target = self.target
        state = await asyncio.to_thread(
            self.store.open_export, target.name, newest=target.start == "newest"
        )
        cursor = state.cursor
        deadline = self.clock.now() + self.budget_s
        # every row is sent unless a filter skips some: then read more per round
        scan = target.batch_size if target.topic_filter == "#" else max(MIN_SCAN, target.batch_size)
        for _ in range(self.max_batches):
            rows = await asyncio.to_thread(self.store.messages_after, cursor, scan)
            batch = plan_batch(cursor, rows, target)
            if batch.hole is not None and not batch.moves and batch.cursor == cursor:
                if not await self._hole_settled(batch.hole):
                    return
                batch = plan_batch(cursor, rows, target, settled_hole=batch.hole)
            if batch.cursor == cursor and not batch.moves:
                return  # caught up
            if batch.messages:
                try:
                    await self.sender.send(batch.messages)
                except ExportFailed as exc:
                    await self._failed(exc.reason, state)
                    return
            moved = await asyncio.to_thread(
                self.store.advance_export,
                target.name,
                cursor,
                batch.cursor,
                len(batch.messages),
                batch.lost,
            )
            if not moved:  # another replica moved it (this one lost the lock meanwhile)
                log.warning(
                    "telemetry_export.cursor_moved target=%s expected=%s", target.name, cursor
                )
                return
            if batch.lost:
                log.warning(
                    "telemetry_export.lost target=%s count=%s after_id=%s reason=%s",
                    target.name, batch.lost, cursor, "deleted_before_export",
                )  # fmt: skip
            if self.failing:
                log.info("telemetry_export.recovered target=%s after_failures=%s",
                         target.name, self.failing)  # fmt: skip
                self.failing = 0
            log.debug("telemetry_export.sent target=%s messages=%s cursor=%s",
                      target.name, len(batch.messages), batch.cursor)  # fmt: skip
            cursor = batch.cursor
            if self.clock.now() >= deadline:
                return

    async def _hole_settled(self, first: int) -> bool:
        """Whether no write in progress can still fill the hole starting at ``first``."""
        now = self.clock.now()
        if self.hole is None or self.hole[0] != first:
            self.hole = (first, now, None)
        _, seen, horizon = self.hole
        if horizon is None:
            if now - seen < self.hole_grace_s:
                return False
            horizon = await asyncio.to_thread(self.store.write_horizon)
            self.hole = (first, seen, horizon)
        settled = await asyncio.to_thread(self.store.writes_done_before, horizon)
        if settled:
            self.hole = None
        return settled

    async def _failed(self, reason: str, state: ExportCursor) -> None:
        self.failing = await asyncio.to_thread(
            self.store.record_export_failure, self.target.name, reason
        )
        delay = self.retry.delay(self.failing - 1, self.uniform)
        self.retry_at = self.clock.now() + delay
        log.warning(
            "telemetry_export.failed target=%s error=%r failures=%s cursor=%s retry_in=%.2f",
            self.target.name, reason, self.failing, state.cursor, delay,
        )  # fmt: skip


class TelemetryExports:
    """Every target's exporter; ``async with`` closes their connections at the end."""

    def __init__(
        self,
        targets: Sequence[ExportTarget],
        store: ExportStore,
        *,
        senders: Callable[[ExportTarget], Sender] = sender_for,
    ) -> None:
        grace = HOLE_GRACE_S if store.dialect == "postgresql" else 0.0
        for target in targets:
            if not target.tls and target.host not in ("localhost", "127.0.0.1", "::1"):
                log.warning(
                    "telemetry_export.no_tls target=%s host=%s detail=%r", target.name, target.host,
                    "telemetry leaves this host in clear: use https://, mqtts:// or amqps://",
                )  # fmt: skip
        self.exporters = [TargetExporter(t, store, senders(t), hole_grace_s=grace) for t in targets]

    async def __aenter__(self) -> TelemetryExports:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for exporter in self.exporters:
            try:
                await exporter.sender.close()
            except Exception as error:  # closing one must not keep the others open
                log.warning("telemetry_export.close_failed target=%s error=%s",
                            exporter.target.name, error)  # fmt: skip
