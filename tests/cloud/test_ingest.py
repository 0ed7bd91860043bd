"""The ingest worker and the telemetry store, on SQLite and PostgreSQL, without a server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hedgerow.cloud.config import normalise_database_url
from hedgerow.cloud.ingest import IngestBehind, IngestWorker
from hedgerow.cloud.storage.database import create_engine, migrate
from hedgerow.cloud.storage.repository import Repository


@pytest.fixture
def repository(tmp_path: Path, database_url: str) -> Iterator[Repository]:
    engine = create_engine(
        normalise_database_url(database_url or f"sqlite:///{tmp_path / 'cloud.db'}")
    )
    migrate(engine)
    migrate(engine)  # idempotent
    yield Repository(engine)
    engine.dispose()


async def test_batched_writes_and_queries(repository: Repository) -> None:
    async with IngestWorker(repository, max_batch=500) as ingest:
        now = time.time()
        for index in range(2000):
            ingest.submit(
                f"plant/{index % 4}/temp",
                b'{"v": %d}' % index,
                f"core-{index % 2}",
                now + index / 1000,
            )
        await ingest.flushed()
        assert ingest.stats.stored == 2000
        assert 4 <= ingest.stats.batches < 2000, "messages are written in batches"
    assert repository.count_messages() == 2000
    newest = repository.query_messages(topic_filter="plant/+/temp", limit=3)
    assert [m.payload for m in newest] == [b'{"v": 1999}', b'{"v": 1998}', b'{"v": 1997}']
    only_two = repository.query_messages(topic_filter="plant/2/#", limit=5000)
    assert len(only_two) == 500 and {m.topic for m in only_two} == {"plant/2/temp"}
    window = repository.query_messages(since=now + 0.1, until=now + 0.2, limit=5000)
    assert len(window) == 101
    oldest = repository.query_messages(limit=2, newest_first=False)
    assert [m.payload for m in oldest] == [b'{"v": 0}', b'{"v": 1}']
    assert repository.query_messages(topic_filter="plant_2/#", limit=5) == []
    # MQTT: "a/#" matches "a" itself
    parent = repository.query_messages(topic_filter="plant/2/temp/#", limit=5000)
    assert len(parent) == 500 and {m.topic for m in parent} == {"plant/2/temp"}
    assert repository.delete_messages_before(now + 1.0) == 1000
    assert repository.count_messages() == 1000


async def test_a_full_queue_refuses_and_counts(repository: Repository) -> None:
    async with IngestWorker(repository, max_pending=10) as ingest:
        futures = [ingest.submit("t", b"x", "c") for _ in range(25)]
        refused = [f for f in futures if f.done() and f.exception() is not None]
        assert len(refused) == 15 and ingest.stats.dropped == 15
        assert all(isinstance(f.exception(), IngestBehind) for f in refused)
        accepted = [f for f in futures if f not in refused]
        await asyncio.gather(*accepted)  # completes only once the rows are stored
        assert repository.count_messages() == 10
    assert repository.count_messages() == 10


async def test_the_future_completes_only_when_the_rows_are_stored(repository: Repository) -> None:
    async with IngestWorker(repository, max_batch=7) as ingest:
        futures = [ingest.submit("t/x", b"%d" % i, "c") for i in range(20)]
        last = futures[-1]
        assert not last.done()  # nothing is written synchronously
        await last
        assert repository.count_messages() == 20  # the last batch of the rows is written
        assert all(f.done() and f.exception() is None for f in futures)


async def test_retention_deletes_old_messages(repository: Repository) -> None:
    repository.insert_messages(
        [("old", b"1", "c", time.time() - 3 * 86400), ("new", b"2", "c", time.time())]
    )
    async with IngestWorker(repository, retention_days=1) as ingest:
        assert await ingest.sweep() == 1
    assert [m.topic for m in repository.query_messages(limit=10)] == ["new"]
