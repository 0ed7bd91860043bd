"""Job locks on the real PostgreSQL: one holder per job, freed when its connection dies;
``Jobs.run`` ticks only while holding and hands over when the holder goes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import sqlalchemy as sa

from hedgerow.cloud.jobs import Jobs
from hedgerow.cloud.storage.database import create_engine
from hedgerow.cloud.storage.locks import AdvisoryLocks, LocalLocks, job_locks, lock_key

from .conftest import PG_ADMIN_URL, pg_url

WAIT = 10.0


def test_lock_ids_are_stable_and_differ_per_job_and_schema() -> None:
    # the same id in every process and every release: replicas of different versions agree
    assert lock_key("public", "rollouts") == 8850154370145736955
    keys = {lock_key(s, j) for s in ("public", "other") for j in ("rollouts", "alerts")}
    assert len(keys) == 4
    assert all(-(2**63) <= k < 2**63 for k in keys)


async def test_a_single_process_holds_every_lock() -> None:
    engine = create_engine("sqlite://")
    try:
        locks = job_locks(engine)
        assert isinstance(locks, LocalLocks)
        assert await locks.held("rollouts") and await locks.held("alerts")
    finally:
        engine.dispose()


@pytest.fixture
def pg_engine(pg_schema: str) -> Iterator[sa.Engine]:
    engine = create_engine(pg_url(pg_schema))
    yield engine
    engine.dispose()


@pytest.fixture
async def two(pg_engine: sa.Engine) -> AsyncIterator[tuple[AdvisoryLocks, AdvisoryLocks]]:
    first, second = AdvisoryLocks(pg_engine), AdvisoryLocks(pg_engine)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


def _terminate(locks: AdvisoryLocks) -> None:
    """The server ends the holder's session, as when its process is killed."""
    assert locks._connection is not None
    pid = locks._connection.info.backend_pid
    admin = sa.create_engine(PG_ADMIN_URL)
    try:
        with admin.connect() as connection:
            assert connection.scalar(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        admin.dispose()


@pytest.mark.postgres
async def test_one_holder_per_job_until_its_session_ends(
    two: tuple[AdvisoryLocks, AdvisoryLocks],
) -> None:
    first, second = two
    assert await first.held("rollouts")
    assert not await second.held("rollouts")
    assert await first.held("rollouts")  # still: held until given back
    assert await second.held("alerts")  # another job: another lock
    assert not await first.held("alerts")

    await asyncio.to_thread(_terminate, first)
    assert not await first.held("rollouts")  # its connection is gone: so is the lock
    assert await second.held("rollouts")
    assert not await first.held("rollouts")  # reconnected, the other holds it now

    await second.close()
    assert await first.held("rollouts") and await first.held("alerts")


@pytest.mark.postgres
async def test_schemas_sharing_a_database_do_not_exclude_each_other(
    pg_engine: sa.Engine,
) -> None:
    other = f"hedgerow_cloud_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{other}"'))
    other_engine = create_engine(pg_url(other))
    here, there = AdvisoryLocks(pg_engine), AdvisoryLocks(other_engine)
    try:
        assert await here.held("retention")
        assert await there.held("retention")
    finally:
        await here.close()
        await there.close()
        other_engine.dispose()
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{other}" CASCADE'))
        admin.dispose()


@pytest.mark.postgres
async def test_jobs_tick_on_the_holder_only_and_hand_over_when_it_dies(
    two: tuple[AdvisoryLocks, AdvisoryLocks],
) -> None:
    first, second = two
    jobs = {"first": Jobs(first, check_s=0.05), "second": Jobs(second, check_s=0.05)}
    ticks = {"first": 0, "second": 0}
    taken: list[str] = []
    second_ticked = asyncio.Event()

    async def run(name: str) -> None:
        async def tick() -> None:
            ticks[name] += 1
            if name == "second":
                second_ticked.set()

        await jobs[name].run("sweep", tick, 0.05, taken_over=lambda: taken.append(name))

    async with asyncio.TaskGroup() as tg:
        running_first = tg.create_task(run("first"))
        async with asyncio.timeout(WAIT):
            while ticks["first"] < 3:
                await asyncio.sleep(0.01)
        running_second = tg.create_task(run("second"))
        async with asyncio.timeout(WAIT):
            while ticks["first"] < 10:
                await asyncio.sleep(0.01)
        assert ticks["second"] == 0 and not jobs["second"].states["sweep"].held

        await asyncio.to_thread(_terminate, first)
        async with asyncio.timeout(WAIT):
            await second_ticked.wait()
            while jobs["first"].states["sweep"].held:  # it finds out at its next check
                await asyncio.sleep(0.01)
        stopped_at, handed_over_at = ticks["first"], ticks["second"]
        async with asyncio.timeout(WAIT):
            while ticks["second"] < handed_over_at + 10:
                await asyncio.sleep(0.01)
        running_first.cancel()
        running_second.cancel()
    assert ticks["first"] == stopped_at  # reconnected, it does not take the job back
    assert jobs["second"].states["sweep"].held and jobs["second"].states["sweep"].taken == 1
    assert jobs["first"].states["sweep"].taken == 1
    assert taken == ["first", "second"]
