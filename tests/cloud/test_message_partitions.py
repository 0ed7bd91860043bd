"""Telemetry partitioned by day on the real PostgreSQL: migration 0011 there and back,
COPY into day partitions, retention by DROP, the default partition, EXPLAIN pruning."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine

from hedgerow.cloud import partition_plan as pp
from hedgerow.cloud.config import normalise_database_url
from hedgerow.cloud.partition_plan import DAY_S
from hedgerow.cloud.server import CloudServer
from hedgerow.cloud.storage.database import MIGRATIONS, create_engine, migrate
from hedgerow.cloud.storage.messages import message_query
from hedgerow.cloud.storage.repository import Repository
from tests.cloud.conftest import clone_config, pg_url

pytestmark = pytest.mark.postgres

TODAY = int(time.time() // DAY_S) * DAY_S


@pytest.fixture
def engine(pg_schema: str) -> Iterator[Engine]:
    engine = create_engine(normalise_database_url(pg_url(pg_schema)))
    yield engine
    engine.dispose()


def alembic(engine: Engine, revision: str, *, down: bool = False) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(cfg, revision)


def scalar(engine: Engine, sql: str, **params: object) -> object:
    with engine.connect() as connection:
        return connection.scalar(sa.text(sql), params)


def homes(engine: Engine) -> dict[str, str]:
    """Each message's topic → the partition that holds it."""
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT topic, tableoid::regclass::text FROM messages"))
        return {str(topic): str(table).rsplit(".", 1)[-1] for topic, table in rows}


def exists(engine: Engine, table: str) -> bool:
    return scalar(engine, "SELECT to_regclass(:t) IS NOT NULL", t=table) is True


def test_migration_keeps_every_row_and_the_ids_carry_on_and_downgrade_restores(
    engine: Engine,
) -> None:
    alembic(engine, "0010")
    old = [
        ("ten-days-ago", TODAY - 10 * DAY_S + 5),
        ("yesterday", TODAY - DAY_S + 7),
        ("now", time.time()),
        ("epoch", 1000.0),  # older than the backfill window: the default partition
        ("far-future", TODAY + 1000 * DAY_S),
    ]
    with engine.begin() as connection:
        for topic, ts in old:
            connection.execute(
                sa.text(
                    "INSERT INTO messages (topic, payload, core, ts) VALUES (:t, 'x', 'c', :ts)"
                ),
                {"t": topic, "ts": ts},
            )
    before = _rows(engine)
    alembic(engine, "0011")
    assert scalar(engine, "SELECT relkind FROM pg_class WHERE oid = 'messages'::regclass") == "p"
    assert _rows(engine) == before, "every row, id and value kept"
    assert homes(engine) == {
        "ten-days-ago": pp.partition_for(TODAY - 10 * DAY_S).name,
        "yesterday": pp.partition_for(TODAY - DAY_S).name,
        "now": pp.partition_for(time.time()).name,
        "epoch": pp.DEFAULT_PARTITION,
        "far-future": pp.DEFAULT_PARTITION,
    }
    repository = Repository(engine)
    names = [p.name for p in repository.message_partitions()]
    assert [pp.partition_for(TODAY + d * DAY_S).name for d in range(4)] == names[-4:]
    repository.insert_messages([("after", b"y", "c", time.time())])  # COPY
    new_id = scalar(engine, "SELECT id FROM messages WHERE topic = 'after'")
    assert isinstance(new_id, int) and new_id == max(r[0] for r in before) + 1

    alembic(engine, "0010", down=True)
    assert scalar(engine, "SELECT relkind FROM pg_class WHERE oid = 'messages'::regclass") == "r"
    assert not exists(engine, pp.DEFAULT_PARTITION)
    assert len(_rows(engine)) == len(before) + 1
    with engine.begin() as connection:
        again = connection.scalar(
            sa.text(
                "INSERT INTO messages (topic, payload, core, ts) "
                "VALUES ('down', 'z', 'c', 1) RETURNING id"
            )
        )
    assert again == new_id + 1, "the sequence carries on after a downgrade too"
    alembic(engine, "0011")
    assert len(_rows(engine)) == len(before) + 2


def _rows(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        return [
            tuple(r)
            for r in connection.execute(
                sa.text("SELECT id, topic, payload, core, ts FROM messages ORDER BY id")
            )
        ]


@pytest.fixture
def repository(engine: Engine) -> Repository:
    migrate(engine)
    return Repository(engine)


def test_copy_lands_in_the_partition_of_each_row_day(
    engine: Engine, repository: Repository
) -> None:
    repository.insert_messages(
        [
            ("today", b"1", "c", TODAY + 60.0),
            ("tomorrow", b"2", "c", TODAY + DAY_S + 60.0),
            ("day-after-midnight", b"3", "c", TODAY + 2 * DAY_S),
        ]
    )
    assert homes(engine) == {
        "today": pp.partition_for(TODAY).name,
        "tomorrow": pp.partition_for(TODAY + DAY_S).name,
        "day-after-midnight": pp.partition_for(TODAY + 2 * DAY_S).name,
    }
    assert scalar(engine, f"SELECT count(*) FROM {pp.DEFAULT_PARTITION}") == 0


def test_retention_drops_whole_old_partitions_and_keeps_newer_rows(
    engine: Engine, repository: Repository
) -> None:
    ten_days_ago = TODAY - 10 * DAY_S
    created = repository.maintain_partitions(ten_days_ago + 60)  # days -10 … -7
    assert len(created.created) == 4
    rows = [
        (f"d{d}/{i}", b"x", "c", TODAY + d * DAY_S + i * 600.0)
        for d in range(-10, 1)
        for i in range(5)
    ]
    repository.insert_messages(rows)
    assert scalar(engine, f"SELECT count(*) FROM {pp.DEFAULT_PARTITION}") == 5 * 6  # days -6 … -1
    cutoff = TODAY - 8 * DAY_S + 1200  # inside day -8: it straddles, it stays
    expired = repository.expire_messages(cutoff)
    gone = [pp.partition_for(TODAY + d * DAY_S).name for d in (-10, -9)]
    for name in gone:
        assert not exists(engine, name), f"{name} dropped"
    assert exists(engine, pp.partition_for(TODAY - 8 * DAY_S).name)
    assert expired == 10
    left = {m.topic for m in repository.query_messages(limit=1000)}
    assert left == {t for t, _, _, ts in rows if ts >= TODAY - 8 * DAY_S}
    # the exact call also deletes the straddling day's older rows, and only those
    assert repository.delete_messages_before(cutoff) == 2
    assert {m.topic for m in repository.query_messages(limit=1000)} == {
        t for t, _, _, ts in rows if ts >= cutoff
    }


def test_maintenance_run_twice_leaves_the_same_state(
    engine: Engine, repository: Repository
) -> None:
    now = time.time()
    first = repository.maintain_partitions(now, now - 7 * DAY_S)
    after_first = repository.message_partitions()
    second = repository.maintain_partitions(now, now - 7 * DAY_S)
    assert first.created == () and second.created == () and second.dropped == ()
    assert repository.message_partitions() == after_first
    # a partition lost (e.g. dropped by hand) is made again by the next run
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP TABLE {after_first[-1].name}"))
    assert repository.maintain_partitions(now).created == (after_first[-1].name,)
    assert repository.message_partitions() == after_first


def test_rows_outside_every_partition_go_to_the_default_one_and_move_out_later(
    engine: Engine, repository: Repository
) -> None:
    far = TODAY + 400 * DAY_S + 30.0
    repository.insert_messages([("far/future", b"f", "c", far), ("far/past", b"p", "c", 5.0)])
    assert homes(engine) == {"far/future": pp.DEFAULT_PARTITION, "far/past": pp.DEFAULT_PARTITION}
    [found] = repository.query_messages(topic_filter="far/#", since=far - 1, until=far + 1)
    assert found.topic == "far/future" and found.payload == b"f"
    assert [m.topic for m in repository.query_messages(topic_filter="far/past")] == ["far/past"]
    # time passes: the day of that row gets its partition, the row moves there, same id
    upkeep = repository.maintain_partitions(far)
    assert upkeep.created[0] == pp.partition_for(far).name
    assert homes(engine)["far/future"] == pp.partition_for(far).name
    [moved] = repository.query_messages(topic_filter="far/future")
    assert moved.id == found.id
    # retention deletes old rows of the default partition row by row
    assert repository.expire_messages(TODAY) == 1
    assert repository.query_messages(topic_filter="far/past") == []


def _explain(engine: Engine, query: sa.Select[int, str, bytes, str, float]) -> str:
    sql = str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    with engine.begin() as connection:
        return "\n".join(str(r[0]) for r in connection.execute(sa.text("EXPLAIN " + sql)))


def test_a_time_bounded_query_reads_only_the_partitions_in_range(
    engine: Engine, repository: Repository
) -> None:
    days = [pp.partition_for(TODAY + d * DAY_S).name for d in range(4)]
    plan = _explain(engine, message_query(since=TODAY + DAY_S + 10, until=TODAY + 2 * DAY_S - 10))
    assert days[1] in plan
    for other in [days[0], days[2], days[3], pp.DEFAULT_PARTITION]:
        assert other not in plan, f"{other} pruned:\n{plan}"
    wide = _explain(engine, message_query(since=TODAY + DAY_S + 10, until=TODAY + 3 * DAY_S - 10))
    assert days[1] in wide and days[2] in wide and days[0] not in wide


@pytest.fixture
def filled(engine: Engine, repository: Repository) -> Repository:
    """40,000 rows over today and the next three days (200 topics, 20 cores), analysed:
    the planner then costs each query as it would on a real table."""
    rows = [
        (f"plant/{i % 200}/temp", b"x", f"core-{i % 20}", TODAY + i * (4 * DAY_S / 40_000))
        for i in range(40_000)
    ]
    repository.insert_messages(rows)
    with engine.begin() as connection:
        connection.execute(sa.text("ANALYZE messages"))
    return repository


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (message_query(limit=100), "_pkey"),
        (message_query(topic_filter="plant/7/temp"), "_topic_id_idx"),
        (message_query(topic_filter="plant/7/#"), "_topic_id_idx"),
        (message_query(group="line-1"), "_core_id_idx"),
        (message_query(since=TODAY + 10, until=TODAY + 20), "_ts_idx"),
    ],
    ids=["latest", "exact-topic", "topic-prefix", "group", "time-range"],
)
def test_each_console_query_uses_a_partition_local_index(
    engine: Engine,
    filled: Repository,
    query: sa.Select[int, str, bytes, str, float],
    index: str,
) -> None:
    plan = _explain(engine, query)
    assert "Seq Scan on messages_p" not in plan, plan  # the empty default: any scan is free
    assert index in plan, f"{index} not used:\n{plan}"


def test_a_busy_table_defers_the_ddl_to_the_next_run_instead_of_failing(
    engine: Engine, repository: Repository
) -> None:
    last = repository.message_partitions()[-1]
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP TABLE {last.name}"))
    blocker = engine.connect()
    blocker.begin()
    blocker.execute(sa.text("LOCK TABLE messages IN ACCESS SHARE MODE"))  # a long read
    try:
        began = time.monotonic()
        busy = repository.maintain_partitions(time.time())
        assert busy.deferred and busy.created == ()
        assert time.monotonic() - began < 10, "gave up after the lock timeout"
    finally:
        blocker.rollback()
        blocker.close()
    assert not exists(engine, last.name)
    upkeep = repository.maintain_partitions(time.time())
    assert not upkeep.deferred and upkeep.created == (last.name,)


async def test_the_cloud_keeps_partitions_at_start_and_its_retention_job_drops_old_days(
    tmp_path: Path, pg_schema: str, cloud_template: Path
) -> None:
    """A real ``CloudServer`` on PostgreSQL: a missing day ahead is created at start, the
    retention job (7 days) drops a 10-day-old partition, and the API still answers."""
    config = await asyncio.to_thread(
        clone_config, cloud_template, tmp_path / "c", pg_url(pg_schema)
    )
    engine = create_engine(config.database_url)
    try:
        repository = Repository(engine)
        old = repository.maintain_partitions(TODAY - 10 * DAY_S + 60).created[0]
        repository.insert_messages(
            [("old/1", b"o", "c", TODAY - 10 * DAY_S + 90), ("new/1", b"n", "c", time.time())]
        )
        ahead = repository.message_partitions()[-1].name
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE {ahead}"))
        async with CloudServer(config) as server:
            assert exists(engine, ahead), "created at start"
            async with asyncio.timeout(30):
                while exists(engine, old):
                    await asyncio.sleep(0.05)
            async with httpx.AsyncClient(
                base_url=server.api_url,
                headers={"authorization": f"Bearer {server.admin_token}"},
            ) as api:
                answer = (await api.get("/api/v1/messages", params={"limit": 10})).json()
        assert [m["topic"] for m in answer["items"]] == ["new/1"]
    finally:
        engine.dispose()


MAINTAIN = """
import sys, time
from hedgerow.cloud.storage.database import create_engine
from hedgerow.cloud.storage.repository import Repository
Repository(create_engine(sys.argv[1])).maintain_partitions(time.time(), float(sys.argv[2]))
"""


def test_maintenance_killed_mid_ddl_leaves_the_table_as_it_was_and_the_next_run_finishes(
    engine: Engine, repository: Repository, pg_schema: str
) -> None:
    """kill -9 of a process whose maintenance waits inside its transaction (on a lock the
    test holds): nothing of it stays; the next run does all of it."""
    repository.maintain_partitions(TODAY - 10 * DAY_S + 60)  # days -10 … -7
    repository.insert_messages(
        [(f"d{d}", b"x", "c", TODAY + d * DAY_S + 60) for d in range(-10, 1)]
    )
    ahead = repository.message_partitions()[-1].name
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP TABLE {ahead}"))
    before, rows = repository.message_partitions(), _rows(engine)
    cutoff = TODAY - 8 * DAY_S
    url = normalise_database_url(pg_url(pg_schema)) + "&application_name=hedgerow-maint-kill"
    blocker = engine.connect()
    blocker.begin()
    blocker.execute(sa.text("LOCK TABLE messages IN ACCESS SHARE MODE"))
    child = subprocess.Popen([sys.executable, "-c", MAINTAIN, url, str(cutoff)])
    try:
        deadline = time.monotonic() + 30
        while scalar(engine, WAITING) != 1:
            assert child.poll() is None and time.monotonic() < deadline, "never waited"
            time.sleep(0.01)
        child.kill()
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        blocker.rollback()
        blocker.close()
    deadline = time.monotonic() + 30
    while scalar(engine, GONE) != 0:  # the server ends the orphaned session
        assert time.monotonic() < deadline, "the killed session stayed"
        time.sleep(0.05)
    assert repository.message_partitions() == before
    assert _rows(engine) == rows
    upkeep = repository.maintain_partitions(time.time(), cutoff)
    assert upkeep.created == (ahead,)
    assert set(upkeep.dropped) == {pp.partition_for(TODAY + d * DAY_S).name for d in (-10, -9)}
    assert {m.topic for m in repository.query_messages(limit=100)} == {
        f"d{d}" for d in range(-8, 1)
    }


WAITING = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hedgerow-maint-kill' "
    "AND wait_event_type = 'Lock'"
)
GONE = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hedgerow-maint-kill'"


def test_queries_answer_exactly_as_the_plain_sqlite_table_does(
    tmp_path: Path, repository: Repository
) -> None:
    """The same rows (over six days, some in the default partition) into SQLite's plain
    table and the partitioned one: every console query gives the same messages, ids
    included, in the same order."""
    sqlite_engine = create_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    migrate(sqlite_engine)
    plain = Repository(sqlite_engine)
    rng = random.Random(5)
    rows = [
        (
            f"site/{rng.randrange(3)}/{rng.choice(['temp', 'hum', 'a_b', 'x%y'])}",
            b"%d" % i,
            f"core-{rng.randrange(4)}",
            TODAY + rng.uniform(-3 * DAY_S, 3 * DAY_S) if i % 50 else 1000.0 + i,
        )
        for i in range(3000)
    ]
    for batch in (rows[:1000], rows[1000:]):
        plain.insert_messages(batch)
        repository.insert_messages(batch)
    assert scalar(repository.engine, f"SELECT count(*) FROM {pp.DEFAULT_PARTITION}") > 0
    asks: list[dict[str, Any]] = [
        {"limit": 50},
        {"limit": 50, "newest_first": False},
        {"topic_filter": "site/1/temp", "limit": 500},
        {"topic_filter": "site/+/hum", "limit": 500},
        {"topic_filter": "site/2/#", "limit": 10_000},
        {"topic_filter": "site/0/x%y", "limit": 100},
        {"topic_filter": "site/0/a_b/#", "limit": 100},
        {"since": TODAY - DAY_S, "until": TODAY + 3600, "limit": 10_000},
        {"since": 0.0, "until": 5000.0, "limit": 10_000},
        {"after_id": 1500, "up_to_id": 2100, "newest_first": False, "limit": 10_000},
        {"topic_filter": "site/1/#", "since": TODAY, "limit": 10_000},
    ]
    try:
        for ask in asks:
            expected = plain.query_messages(**ask)
            assert expected, ask
            assert repository.query_messages(**ask) == expected, ask
    finally:
        sqlite_engine.dispose()
