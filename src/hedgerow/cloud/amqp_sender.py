"""Telemetry export to an AMQP 0-9-1 broker (RabbitMQ, LavinMQ…): the ``kind = "amqp"`` sender.

The client, ``aiormq``, is an optional dependency (``pip install 'hedgerow[amqp]'``):
``exporters.sender_for`` imports this module only for an AMQP target, and the config
refuses such a target when the client is not installed.

One connection and one channel in confirm mode (``confirm.select``) per target. A batch
is published in id order (``telemetry_export.amqp_publish``: persistent, ``mandatory``
as the target says) and counts as sent only once the broker confirmed every message with
``basic.ack``. A ``basic.nack``, a message returned unroutable (``mandatory``), a closed
channel or connection, or no confirm within ``timeout_s`` is ``ExportFailed``: the cursor
stays, the connection is dropped and the next attempt (the exporter's backoff) publishes
the whole batch again on a new one. The exchange must exist: it is checked (passively
declared) on each new channel, never created.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any, Final

import aiormq
from pamqp import commands as spec

from hedgerow.cloud.domain import Message
from hedgerow.cloud.exporters import ExportFailed, broker_ssl
from hedgerow.cloud.telemetry_export import (
    AmqpPublish,
    ExportTarget,
    amqp_login_url,
    amqp_publish,
    shown_url,
)

log = logging.getLogger(__name__)

#: AMQP delivery mode of a message the broker writes to disk (on a durable queue)
PERSISTENT: Final = 2
APP_ID: Final = "hedgerow"
#: seconds a connection may take to close before it is left to the broker
CLOSE_TIMEOUT_S: Final = 2.0
#: what is caught at the boundary and told as ``ExportFailed``
_FAILURES: Final = (aiormq.exceptions.AMQPError, OSError, TimeoutError, RuntimeError, ValueError)


def properties(publish: AmqpPublish) -> spec.Basic.Properties:
    return spec.Basic.Properties(
        content_type=publish.content_type,
        delivery_mode=PERSISTENT,
        message_id=publish.message_id,
        timestamp=dt.datetime.fromtimestamp(int(publish.timestamp), dt.UTC),
        app_id=APP_ID,
        headers=dict(publish.headers),
    )


def failure_reason(publish: AmqpPublish, error: BaseException) -> str:
    """What the broker's refusal of ``publish`` was, in one line."""
    frame = getattr(error, "frame", None)
    if isinstance(frame, spec.Basic.Return):
        return (
            f"message {publish.message_id} returned: {frame.reply_code} {frame.reply_text} "
            f"(exchange {frame.exchange!r}, routing key {frame.routing_key!r}: "
            "no queue is bound for it)"
        )
    if isinstance(frame, spec.Basic.Nack):
        return f"message {publish.message_id} nacked by the broker (basic.nack)"
    return f"message {publish.message_id}: {type(error).__name__}: {error}"


class AmqpSender:
    """Persistent publishes with publisher confirms, on one connection kept between batches."""

    def __init__(self, target: ExportTarget) -> None:
        self.target = target
        self.connection: aiormq.Connection | None = None
        self.channel: aiormq.Channel | None = None

    @property
    def _open(self) -> bool:
        return (
            self.connection is not None
            and not self.connection.is_closed
            and self.channel is not None
            and not self.channel.is_closed
        )

    async def _connected(self) -> aiormq.Channel:
        if self._open:
            assert self.channel is not None
            return self.channel
        await self.close()
        target = self.target
        connection: aiormq.Connection | None = None
        try:
            async with asyncio.timeout(target.timeout_s):
                connection = await aiormq.connect(
                    amqp_login_url(target),
                    context=broker_ssl(target),
                    client_properties={"connection_name": f"hedgerow-export-{target.name}"},
                )
                channel = await connection.channel(publisher_confirms=True)
                assert isinstance(channel, aiormq.Channel)  # (typed as its abstract base)
                if target.exchange:
                    await channel.exchange_declare(target.exchange, passive=True)
        except _FAILURES as exc:
            if connection is not None:
                await _close_quietly(connection)
            reason = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
            raise ExportFailed(
                target.name,
                f"cannot connect to {shown_url(target.url)}: {type(exc).__name__}: {reason}",
            ) from exc
        log.info(
            "telemetry_export.connected target=%s broker=%s", target.name, shown_url(target.url)
        )
        self.connection, self.channel = connection, channel
        return channel

    async def send(self, messages: Sequence[Message]) -> None:
        target = self.target
        publishes = [amqp_publish(target, m) for m in messages]
        for publish in publishes:
            if not publish.key_fits:
                raise ExportFailed(
                    target.name,
                    f"message {publish.message_id}: its routing key is over 255 bytes "
                    f"({publish.routing_key[:40]!r}…): shorten the target's topic template",
                )
        channel = await self._connected()
        # one task per publish, started in id order: each takes the channel's lock in turn
        # (FIFO) and writes its frames before the next one, then waits for its confirm
        pending = [
            asyncio.ensure_future(
                channel.basic_publish(
                    p.body,
                    exchange=p.exchange,
                    routing_key=p.routing_key,
                    properties=properties(p),
                    mandatory=target.mandatory,
                    wait=False,
                )
            )
            for p in publishes
        ]
        try:
            async with asyncio.timeout(target.timeout_s):
                results = await asyncio.gather(*pending, return_exceptions=True)
        except TimeoutError as exc:
            await self._abandon(pending)
            raise ExportFailed(target.name, "not every message confirmed in time") from exc
        except BaseException:  # cancelled (shutdown): nobody waits for these any more
            for future in pending:
                future.cancel()
            raise
        for publish, result in zip(publishes, results, strict=True):
            if isinstance(result, BaseException):
                await self.close()  # the next attempt starts on a new connection
                raise ExportFailed(target.name, failure_reason(publish, result)) from result
            if not isinstance(result, spec.Basic.Ack):
                await self.close()
                raise ExportFailed(
                    target.name, f"message {publish.message_id}: not confirmed ({result!r})"
                )

    async def _abandon(self, pending: Sequence[asyncio.Future[Any]]) -> None:
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.close()

    async def close(self) -> None:
        connection, self.connection, self.channel = self.connection, None, None
        if connection is not None:
            await _close_quietly(connection)


async def _close_quietly(connection: aiormq.Connection) -> None:
    with contextlib.suppress(*_FAILURES):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await connection.close()
