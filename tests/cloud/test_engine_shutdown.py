"""The cloud's engine is disposed only once the connections worker threads hold came back:
a connection still out at ``dispose()`` is never closed (psycopg warns when it is collected,
which failed an unrelated test now and then)."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings

import pytest
import sqlalchemy as sa

from hedgerow.cloud.storage.database import create_engine, dispose_when_returned

from .conftest import pg_url


def _query(engine: sa.Engine, done: threading.Event) -> None:
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT pg_sleep(0.3)"))
    finally:
        done.set()


@pytest.mark.postgres
async def test_a_query_running_at_shutdown_gets_its_connection_closed(pg_schema: str) -> None:
    engine = create_engine(pg_url(pg_schema))
    done = threading.Event()
    running = asyncio.ensure_future(asyncio.to_thread(_query, engine, done))
    async with asyncio.timeout(5):
        while engine.pool.checkedout() == 0:  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
    running.cancel()  # as the server's tasks are at shutdown: the thread runs on
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await dispose_when_returned(engine)
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        del engine
        await asyncio.to_thread(done.wait, 5)  # the thread has given its connection back
        gc.collect()
    leaked = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked, leaked
