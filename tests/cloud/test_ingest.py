"""The ingest worker and the telemetry store, on SQLite and PostgreSQL, without a server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hedgerow.cloud.config import normalise_database_url
from hedgerow.cloud.ingest import IngestWorker
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
    assert repository.delete_messages_before(now + 1.0) == 1000
    assert repository.count_messages() == 1000


async def test_a_full_queue_drops_and_counts(repository: Repository) -> None:
    async with IngestWorker(repository, max_pending=10) as ingest:
        accepted = [ingest.submit("t", b"x", "c") for _ in range(25)]
        assert accepted.count(True) == 10 and ingest.stats.dropped == 15
        await ingest.flushed()
    assert repository.count_messages() == 10


async def test_retention_deletes_old_messages(repository: Repository) -> None:
    repository.insert_messages(
        [("old", b"1", "c", time.time() - 3 * 86400), ("new", b"2", "c", time.time())]
    )
    async with IngestWorker(repository, retention_days=1) as ingest:
        assert await ingest.sweep() == 1
    assert [m.topic for m in repository.query_messages(limit=10)] == ["new"]
