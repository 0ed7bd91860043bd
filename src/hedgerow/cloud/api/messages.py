"""``/api/v1/messages``: stored telemetry, the live stream (server-sent events), and
publishing from the cloud to cores."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from hedgerow.cloud.api.edge import (
    TICKETS_PATH,
    ApiContext,
    Operation,
    Query,
    int_param,
    optional_id_param,
    time_param,
)
from hedgerow.cloud.api.parsing import checked, described
from hedgerow.cloud.api.responses import MessageList, Published, StreamTicket, respond
from hedgerow.cloud.errors import CloudError, InvalidInput
from hedgerow.cloud.services import MessagesWritten, TelemetryService
from hedgerow.cloud.services.telemetry import payload_text
from hedgerow.cloud.tickets import TicketPurpose

#: Seconds between polls of the database by a live stream (other processes' ingest).
STREAM_POLL_SECONDS = 0.5
STREAM_KEEPALIVE_SECONDS = 15.0
STREAM_BATCH = 500


def publish_topic(value: object) -> str:
    if (
        not isinstance(value, str)
        or not value
        or value.startswith("$")
        or any(c in value for c in "+#")
    ):
        raise InvalidInput(
            "topic must be a topic name without wildcards or a leading '$'", field="topic"
        )
    return value


def retain_flag(value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput("retain must be true or false", field="retain")
    return value


@dataclass(frozen=True)
class Publish:
    """A message from the cloud (cores whose group routes it from ``cloud`` get it)."""

    topic: str = checked(publish_topic, doc="a topic name (no wildcards, no leading $)")
    payload: Any = described("a string as is, any other JSON value as JSON", default="")
    retain: bool = checked(retain_flag, default=False)


async def query_messages(ctx: ApiContext, request: Request) -> Response:
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidInput("order must be asc or desc", field="order")
    group = request.query_params.get("group") or None
    if group is not None:
        await ctx.services.groups.get(group)  # an unknown group is a 404, not an empty list
    found = await ctx.services.telemetry.query(
        topic_filter=request.query_params.get("filter") or None,
        since=time_param(request, "since"),
        until=time_param(request, "until"),
        limit=int_param(request, "limit", 100, 1),
        after_id=optional_id_param(request, "after_id"),
        newest_first=order == "desc",
        group=group,
    )
    return respond(MessageList.of(found))


async def publish(ctx: ApiContext, request: Request, body: Publish) -> Response:
    sent = await ctx.services.telemetry.publish(body.topic, payload_text(body.payload), body.retain)
    return respond(Published(body.topic, sent))


async def stream(ctx: ApiContext, request: Request) -> Response:
    telemetry = ctx.services.telemetry
    topic_filter = request.query_params.get("filter") or None
    if topic_filter:
        await telemetry.query(topic_filter=topic_filter, since=None, until=None, limit=1)
    return event_stream(
        live_events(telemetry, topic_filter, optional_id_param(request, "after_id"))
    )


def event_stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    """A live view's server-sent events (not cached, not buffered by proxies)."""
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


class Quiet:
    """A live view between batches: it waits for the next write (or a poll's worth of
    time: other processes write too) and says when a keepalive comment is due."""

    def __init__(self, written: MessagesWritten) -> None:
        self.written = written
        self.idle = 0.0
        self.seen = written.generation

    def looking(self) -> None:
        """Called before each look at the store: a write after this wakes the next wait
        at once (it may not be in what the look found)."""
        self.seen = self.written.generation

    def busy(self) -> None:
        self.idle = 0.0

    async def wait(self) -> bytes:
        """``b": keepalive\\n\\n"`` when one is due, else b"" (after the wait)."""
        if self.idle >= STREAM_KEEPALIVE_SECONDS:
            self.idle = 0.0
            return b": keepalive\n\n"
        try:
            await asyncio.wait_for(self.written.wait_since(self.seen), STREAM_POLL_SECONDS)
        except TimeoutError:
            self.idle += STREAM_POLL_SECONDS
        return b""


async def stream_ticket(ctx: ApiContext, request: Request) -> Response:
    if ctx.tickets is None:
        raise CloudError("tickets are not available on this server")
    issued = await asyncio.to_thread(ctx.tickets.issue, TicketPurpose.LIVE_STREAM)
    return respond(
        StreamTicket(
            ticket=issued.value,
            purpose=issued.purpose.value,
            expires_in=issued.expires_in,
            url=f"/api/v1/messages/stream?ticket={issued.value}",
        ),
        201,
        headers={"cache-control": "no-store"},
    )


async def live_events(
    telemetry: TelemetryService, topic_filter: str | None, after_id: int | None
) -> AsyncIterator[bytes]:
    """Server-sent events for messages newer than ``after_id`` (default: from now on)."""
    if after_id is None:
        after_id = await telemetry.newest_id()
    yield b": hedgerow live telemetry\n\n"
    quiet = Quiet(telemetry.written)
    while True:
        quiet.looking()
        top = await telemetry.newest_id()
        if top > after_id:
            batch = await telemetry.query(
                topic_filter=topic_filter,
                since=None,
                until=None,
                limit=STREAM_BATCH,
                after_id=after_id,
                up_to_id=top,
                newest_first=False,
            )
            if batch:
                quiet.busy()
                yield b"".join(
                    f"id: {m.id}\nevent: message\ndata: {json.dumps(m.to_json())}\n\n".encode()
                    for m in batch
                )
            if len(batch) == STREAM_BATCH:
                after_id = batch[-1].id
                continue
            after_id = top  # everything up to ``top`` was looked at
        if keepalive := await quiet.wait():
            yield keepalive


OPERATIONS = [
    Operation(
        "GET",
        "/api/v1/messages",
        "Stored telemetry",
        query_messages,
        query=(
            Query("filter", description="an MQTT topic filter"),
            Query("since", description="epoch seconds or ISO-8601"),
            Query("until", description="epoch seconds or ISO-8601"),
            Query("limit", "integer"),
            Query("order", description="asc or desc"),
            Query("after_id", "integer"),
            Query("group", description="only what this group's core sent"),
        ),
        response=MessageList,
    ),
    Operation(
        "POST",
        "/api/v1/messages/publish",
        "Publish from the cloud (to cores routed from `cloud`)",
        publish,
        body=Publish,
        response=Published,
    ),
    Operation(
        "GET",
        "/api/v1/messages/stream",
        "Live telemetry as server-sent events (EventSource clients: ?ticket=)",
        stream,
        ticket=TicketPurpose.LIVE_STREAM,
        query=(Query("filter"), Query("after_id", "integer")),
        produces="text/event-stream",
    ),
    Operation(
        "POST",
        TICKETS_PATH,
        "A single-use ticket opening the live stream once within 60 s (for EventSource)",
        stream_ticket,
        status=201,
        response=StreamTicket,
    ),
]
