"""The change feed on the real PostgreSQL: what one replica commits wakes the others."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
import sqlalchemy as sa

from hedgerow.cloud.services.telemetry import MessagesWritten
from hedgerow.cloud.storage import changes
from hedgerow.cloud.storage.changes import ChangeFeed, notify_sql
from hedgerow.cloud.storage.database import create_engine, migrate
from hedgerow.cloud.storage.repository import Repository

from .conftest import PG_ADMIN_URL, pg_url

WAIT = 10.0


def test_only_known_topics_are_notified() -> None:
    assert notify_sql(changes.MESSAGES).endswith("'messages')")
    with pytest.raises(ValueError, match="unknown change topic"):
        notify_sql("messages'); DROP TABLE messages; --")


async def test_sqlite_has_no_feed_and_polling_stays() -> None:
    engine = create_engine("sqlite://")
    try:
        feed = ChangeFeed(engine)
        assert not feed.enabled
        async with asyncio.timeout(1):
            await feed.run()  # returns at once
        feed.announce(changes.ROUTES)  # nothing to tell
    finally:
        engine.dispose()


async def test_a_write_while_a_live_view_looks_is_not_missed() -> None:
    """A live view notes the generation, queries (a write lands meanwhile), then waits:
    it returns at once instead of sleeping a poll's worth."""
    written = MessagesWritten()
    seen = written.generation
    written.set()  # heard while the view was querying
    async with asyncio.timeout(0.2):
        await written.wait_since(seen)
    waiting = asyncio.create_task(written.wait_since(written.generation))
    await asyncio.sleep(0)
    assert not waiting.done()  # nothing new: it waits
    written.set()
    async with asyncio.timeout(0.2):
        await waiting


@pytest.fixture
def pg_engine(pg_schema: str) -> Iterator[sa.Engine]:
    engine = create_engine(pg_url(pg_schema))
    migrate(engine)
    yield engine
    engine.dispose()


class Heard:
    """What one replica's feed heard, per topic, with an event to wait on."""

    def __init__(self, feed: ChangeFeed) -> None:
        self.counts: Counter[str] = Counter()
        self.changed = asyncio.Event()
        for topic in changes.TOPICS:
            feed.on(topic, lambda topic=topic: self._heard(topic))  # type: ignore[misc]

    def _heard(self, topic: str) -> None:
        self.counts[topic] += 1
        self.changed.set()

    async def wait_for(self, topic: str, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while self.counts[topic] < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def listening(pg_engine: sa.Engine) -> AsyncIterator[tuple[ChangeFeed, Heard]]:
    feed = ChangeFeed(pg_engine)
    heard = Heard(feed)
    task = asyncio.create_task(feed.run())
    try:
        async with asyncio.timeout(WAIT):
            await feed.listening.wait()
        await heard.wait_for(changes.ROUTES, 1)  # every handler once after connecting
        yield feed, heard
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.postgres
async def test_ingest_commits_and_announcements_wake_another_replica(
    pg_engine: sa.Engine, listening: tuple[ChangeFeed, Heard]
) -> None:
    feed, heard = listening
    writer = Repository(pg_engine)  # another replica's writes, through its own pool
    before = heard.counts.copy()
    started = time.monotonic()
    await asyncio.to_thread(writer.insert_messages, [("t/1", b"1", "pi-1", time.time())])
    await heard.wait_for(changes.MESSAGES, before[changes.MESSAGES] + 1)
    latency = time.monotonic() - started
    await asyncio.to_thread(
        writer.insert_logs, [("g", "pi-1", "core", 20, time.time(), "hedgerow", "hello")]
    )
    await heard.wait_for(changes.LOGS, before[changes.LOGS] + 1)

    other = ChangeFeed(pg_engine)
    other.announce(changes.ROUTES)
    other.announce(changes.TRUST)
    await heard.wait_for(changes.ROUTES, before[changes.ROUTES] + 1)
    await heard.wait_for(changes.TRUST, before[changes.TRUST] + 1)
    assert feed.heard[changes.MESSAGES] == 1 and feed.heard[changes.ROUTES] == 1
    assert latency < 1.0, latency


@pytest.mark.postgres
async def test_another_schema_in_the_same_database_is_not_heard(
    listening: tuple[ChangeFeed, Heard],
) -> None:
    feed, heard = listening
    other = f"hedgerow_cloud_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{other}"'))
    elsewhere = create_engine(pg_url(other))
    try:
        await asyncio.to_thread(migrate, elsewhere)
        await asyncio.to_thread(
            Repository(elsewhere).insert_messages, [("t/1", b"1", "pi-1", time.time())]
        )
        # then one here: heard, and the other schema's was not
        ours = ChangeFeed(feed.engine)
        ours.announce(changes.TRUST)
        await heard.wait_for(changes.TRUST, 2)
        assert feed.heard[changes.MESSAGES] == 0
    finally:
        elsewhere.dispose()
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{other}" CASCADE'))
        admin.dispose()


@pytest.mark.postgres
async def test_a_lost_listen_connection_comes_back_and_wakes_everything_once(
    pg_schema: str, listening: tuple[ChangeFeed, Heard]
) -> None:
    feed, heard = listening
    channel = "hedgerow_" + hashlib.md5(pg_schema.encode()).hexdigest()
    admin = sa.create_engine(PG_ADMIN_URL)
    try:
        with admin.connect() as connection:
            ended = connection.scalar(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'hedgerow-changes' AND query = :listen"
                ),
                {"listen": f"LISTEN {channel}"},
            )
    finally:
        admin.dispose()
    assert ended == 1
    # listening again, it wakes every view and cache once (it may have missed something)
    await heard.wait_for(changes.MESSAGES, 2)
    await heard.wait_for(changes.ROUTES, 2)
    assert feed.listening.is_set()
