"""Changes other replicas must hear of at once, through PostgreSQL LISTEN/NOTIFY.

A write that other replicas' live views or caches depend on notifies the schema's channel
(``hedgerow_`` + md5 of the schema: replicas sharing a database in different schemas do
not hear each other) with a topic as payload:

- ``messages`` / ``logs``: inside the ingest's own transaction (``notify_sql``), so the
  notification is delivered exactly when the rows are visible, never for rows rolled back;
- ``routes`` / ``trust`` / ``discovery``: after a registry change other replicas cache (the
  routes the embedded MQTT endpoint enforces, the device CAs the device HTTPS server trusts,
  the discovery answers it keeps), by ``ChangeFeed.announce`` once the change is committed.

``ChangeFeed.run`` keeps one LISTEN connection per replica and calls the handlers of each
topic heard; after every (re)connect it calls every handler once (something may have
changed while it was not listening). Polling stays the fallback: live views still look
every ``STREAM_POLL_SECONDS`` and caches refresh on their timers, so SQLite (one process,
no feed) and a lost LISTEN connection only cost latency.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hedgerow.cloud.storage.locks import connect_args

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

MESSAGES: Final = "messages"
LOGS: Final = "logs"
ROUTES: Final = "routes"
TRUST: Final = "trust"
DISCOVERY: Final = "discovery"
TOPICS: Final = (MESSAGES, LOGS, ROUTES, TRUST, DISCOVERY)

#: The channel of the connection's schema (computed by the server, so writers and
#: listeners agree without passing it around).
CHANNEL_SQL: Final = "'hedgerow_' || md5(current_schema())"
#: Seconds between two tries to listen again after the connection was lost (doubling).
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 5.0


def notify_sql(topic: str) -> str:
    """The statement that notifies ``topic`` (a fixed name from ``TOPICS``) on commit."""
    if topic not in TOPICS:
        raise ValueError(f"unknown change topic {topic!r}")
    return f"SELECT pg_notify({CHANNEL_SQL}, '{topic}')"


Handler = Callable[[], object]


class ChangeFeed:
    """One replica's LISTEN connection and what to wake per topic."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connect_args = connect_args(engine) if engine.dialect.name == "postgresql" else {}
        self._handlers: dict[str, list[Handler]] = {}
        self._announcing: set[asyncio.Task[None]] = set()
        #: notifications heard per topic (``/metrics``)
        self.heard: Counter[str] = Counter()
        self.listening = asyncio.Event()
        self.enabled = engine.dialect.name == "postgresql"

    def on(self, topic: str, handler: Handler) -> None:
        """Call ``handler`` (a plain function; a coroutine it returns is scheduled) when
        ``topic`` is heard."""
        if topic not in TOPICS:
            raise ValueError(f"unknown change topic {topic!r}")
        self._handlers.setdefault(topic, []).append(handler)

    def announce(self, topic: str) -> None:
        """Tell the other replicas ``topic`` changed (committed already); returns at once."""
        if not self.enabled:
            return
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self._notify, topic), name=f"changes-announce-{topic}"
        )
        self._announcing.add(task)
        task.add_done_callback(self._announced)

    def _announced(self, task: asyncio.Task[None]) -> None:
        self._announcing.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("changes.announce_failed error=%s", error)

    def _notify(self, topic: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(sa.text(notify_sql(topic)))

    def _dispatch(self, topic: str) -> None:
        for handler in self._handlers.get(topic, []):
            try:
                result = handler()
            except Exception as exc:
                log.warning("changes.handler_failed topic=%s error=%s", topic, exc)
                continue
            if asyncio.iscoroutine(result):
                task = asyncio.get_running_loop().create_task(result, name=f"changes-{topic}")
                self._announcing.add(task)
                task.add_done_callback(self._announced)

    async def run(self) -> None:
        """Listen forever (PostgreSQL only); reconnect after a loss."""
        if not self.enabled:
            return
        import psycopg  # the postgres extra: only a PostgreSQL cloud gets here

        wait = RECONNECT_MIN_S
        try:
            while True:
                try:
                    await self._listen()
                    error: BaseException | None = None
                except (psycopg.Error, OSError) as exc:
                    error = exc
                if self.listening.is_set():  # it was listening: try again soon
                    wait = RECONNECT_MIN_S
                self.listening.clear()
                log.warning("changes.listen_lost error=%s retry_s=%s", error, wait)
                await asyncio.sleep(wait)
                wait = min(wait * 2, RECONNECT_MAX_S)
        finally:
            for task in list(self._announcing):
                task.cancel()

    async def _listen(self) -> None:
        import psycopg

        connection: psycopg.AsyncConnection[Any] = await psycopg.AsyncConnection.connect(
            **self._connect_args,
            autocommit=True,
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
            application_name="hedgerow-changes",
        )
        async with connection:
            cursor = await connection.execute(f"SELECT {CHANNEL_SQL}")
            row = await cursor.fetchone()
            channel = str(row[0]) if row else ""
            if not channel.startswith("hedgerow_") or not channel[9:].isalnum():
                raise psycopg.OperationalError(f"unexpected channel name {channel!r}")
            await connection.execute(f"LISTEN {channel}")
            log.info("changes.listening channel=%s", channel)
            self.listening.set()
            for topic in TOPICS:  # whatever changed while nobody listened
                self._dispatch(topic)
            async for notice in connection.notifies():
                if notice.payload in TOPICS:
                    self.heard[notice.payload] += 1
                    self._dispatch(notice.payload)
