"""Telemetry: the stored messages, their live signal, and publishing from the cloud."""

from __future__ import annotations

import asyncio
import json
import logging

from hedgerow.cloud import domain
from hedgerow.cloud.domain import Message
from hedgerow.cloud.services.notify import Notifier
from hedgerow.cloud.storage.messages import MessageStore

log = logging.getLogger(__name__)


class MessagesWritten:
    """Wakes live views whenever telemetry was stored (``set`` by this process's ingest, and
    by the change feed for other replicas' writes).

    ``generation`` counts the writes: a view notes it before it looks at the store and
    waits with ``wait_since``, so a write that lands while it looks is not missed."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.generation = 0

    def set(self) -> None:
        self.generation += 1
        self._event.set()
        self._event.clear()

    async def wait_since(self, generation: int) -> None:
        """Return once there was a write after ``generation`` (at once if there was)."""
        while self.generation == generation:
            await self._event.wait()


class TelemetryService:
    def __init__(self, store: MessageStore, notifier: Notifier, written: MessagesWritten) -> None:
        self.store = store
        self.notifier = notifier
        self.written = written

    async def publish(self, topic: str, payload: str, retain: bool) -> int:
        """Publish a message from the cloud (cores subscribed by a ``cloud`` route get it):
        the bytes sent."""
        data = payload.encode()
        await self.notifier.publish(topic, data, retain=retain)
        log.info("cloud.published topic=%s bytes=%s", topic, len(data))
        return len(data)

    async def query(
        self,
        *,
        topic_filter: str | None,
        since: float | None,
        until: float | None,
        limit: int,
        after_id: int | None = None,
        up_to_id: int | None = None,
        newest_first: bool = True,
        group: str | None = None,
    ) -> list[Message]:
        if topic_filter is not None:
            domain.validate_topic_filter_text(topic_filter)
        return await asyncio.to_thread(
            self.store.query_messages,
            topic_filter=topic_filter,
            since=since,
            until=until,
            limit=limit,
            after_id=after_id,
            up_to_id=up_to_id,
            newest_first=newest_first,
            group=group,
        )

    async def newest_id(self) -> int:
        return await asyncio.to_thread(self.store.max_message_id)


def payload_text(value: object) -> str:
    """A publish body's payload: a string as is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)
