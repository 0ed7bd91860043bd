"""Telemetry on PostgreSQL: day partitions (migration 0011) against the plain table (0010).

    .venv/bin/python bench/telemetry_partitions.py [--rows 2000000] [--days 10]
                                                   [--queries 40] [--quick]

Three throwaway schemas in the database ``test`` (dropped at the end, also on failure): one
migrated to 0010 (the plain ``messages``: PK id, indexes on ts and topic), one at 0010
with the two indexes 0011 adds (what indexes alone buy), one at the newest revision
(partitioned by day, indexes per partition). The same rows go into each
through ``MessageStore.insert_messages`` (COPY, batches of 50,000, time order over
``--days`` days ending today, 500 topics, 50 cores, 40-byte payloads). Then the console's
queries through ``query_messages`` (p50/p99 over ``--queries`` runs each), then
retention of the oldest day: DROP of its partition against a DELETE of its rows, and
the VACUUM that the DELETE leaves to do.
Bounded: rows, days and runs are fixed by the arguments; every statement is timed.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import random
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig

from hedgerow.cloud.partition_plan import DAY_S
from hedgerow.cloud.storage.database import MIGRATIONS, create_engine, migrate
from hedgerow.cloud.storage.repository import Repository

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BATCH = 50_000
TOPICS = [
    f"site/{s}/line/{line}/sensor/{k}" for s in range(10) for line in range(5) for k in range(10)
]
CORES = [f"core-{c}" for c in range(50)]
INDEXES_0011 = (
    "CREATE INDEX ix_bench_topic_id ON messages (topic text_pattern_ops, id)",
    "CREATE INDEX ix_bench_core_id ON messages (core, id)",
)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} vCPU {cpu}, {platform.system()} {platform.release()}, load {load}"


def schema_url(schema: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"


def upgrade_to(engine: sa.Engine, revision: str) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def batches(
    rows: int, start: float, days: int, seed: int
) -> Iterator[list[tuple[str, bytes, str, float]]]:
    """``rows`` rows in time order over ``days`` days from ``start``, the same for a seed."""
    rng = random.Random(seed)
    step = days * DAY_S / rows
    payload = b'{"v": 21.5, "unit": "C", "seq": 1234567}'[:40]
    for first in range(0, rows, BATCH):
        yield [
            (rng.choice(TOPICS), payload, rng.choice(CORES), start + i * step)
            for i in range(first, min(rows, first + BATCH))
        ]


@dataclass
class Table:
    label: str
    schema: str
    engine: sa.Engine
    repository: Repository


def load(table: Table, rows: int, start: float, days: int) -> float:
    """COPY every row; returns rows per second (generation not counted)."""
    spent = 0.0
    for batch in batches(rows, start, days, seed=7):
        began = time.perf_counter()
        table.repository.insert_messages(batch)
        spent += time.perf_counter() - began
    with table.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("VACUUM ANALYZE messages"))
    return rows / spent


def timed(call: Callable[[], object], runs: int) -> tuple[float, float]:
    call()  # warm the cache
    spent = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        spent.append((time.perf_counter() - began) * 1000)
    return statistics.median(spent), percentile(spent, 99)


def queries(start: float, days: int) -> dict[str, Callable[[Repository], object]]:
    middle = start + (days // 2) * DAY_S + 12 * 3600
    return {
        "latest 100": lambda r: r.query_messages(limit=100),
        "exact topic, latest 100": lambda r: r.query_messages(
            topic_filter="site/3/line/2/sensor/7", limit=100
        ),
        "topic prefix site/3/#, latest 100": lambda r: r.query_messages(
            topic_filter="site/3/#", limit=100
        ),
        "rare prefix site/9/line/4/sensor/9/#": lambda r: r.query_messages(
            topic_filter="site/9/line/4/sensor/9/#", limit=100
        ),
        "1 h window mid-range, up to 1000": lambda r: r.query_messages(
            since=middle, until=middle + 3600, limit=1000
        ),
        "1 h window + exact topic": lambda r: r.query_messages(
            topic_filter="site/3/line/2/sensor/7", since=middle, until=middle + 3600, limit=1000
        ),
    }


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # the schemas are dropped on the way out


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="200,000 rows, 10 runs")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.queries = 200_000, 10
    if not (10_000 <= args.rows <= 10_000_000 and 2 <= args.days <= 60):
        parser.error("--rows between 10,000 and 10,000,000, --days between 2 and 60")
    today = int(time.time() // DAY_S) * DAY_S
    start = today - (args.days - 1) * DAY_S
    admin = sa.create_engine(PG_ADMIN)
    with admin.connect() as connection:
        version = connection.scalar(sa.text("SHOW server_version"))
    print(f"machine: {machine()}; PostgreSQL {version}; Python {sys.version.split()[0]}")
    print(f"{args.rows:,} rows over {args.days} days ({args.rows // args.days:,} a day)\n")
    tag = uuid.uuid4().hex[:8]
    tables: list[Table] = []
    try:
        variants = (
            ("plain (0010)", "0010", False),
            ("plain + 0011's indexes", "0010", True),
            ("partitioned (0011)", "head", False),
        )
        for number, (label, revision, indexed) in enumerate(variants):
            schema = f"bench_partitions_{tag}_{number}"
            with admin.begin() as connection:
                connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            engine = create_engine(schema_url(schema))
            tables.append(Table(label, schema, engine, Repository(engine)))
            if revision == "head":
                migrate(engine)
                for day in range(args.days):  # the days the rows fall on (the cloud makes
                    tables[-1].repository.maintain_partitions(start + day * DAY_S)  # them ahead)
            else:
                upgrade_to(engine, revision)
            if indexed:  # the same indexes as each partition has, on the one table
                with engine.begin() as connection:
                    for sql in INDEXES_0011:
                        connection.execute(sa.text(sql))

        rates = {t.label: load(t, args.rows, start, args.days) for t in tables}
        print("| measurement | " + " | ".join(t.label for t in tables) + " |")
        print("|---|" + "---|" * len(tables))
        print("| COPY rows/s | " + " | ".join(f"{rates[t.label]:,.0f}" for t in tables) + " |")
        for name, query in queries(start, args.days).items():
            cells = []
            for t in tables:
                p50, p99 = timed(functools.partial(query, t.repository), args.queries)
                cells.append(f"{p50:.2f} / {p99:.2f}")
            print(f"| {name}: p50 / p99 ms | " + " | ".join(cells) + " |")
        cutoff = start + DAY_S
        cells, vacuums = [], []
        for t in tables:
            began = time.perf_counter()
            gone = t.repository.expire_messages(cutoff)
            cells.append(f"{(time.perf_counter() - began) * 1000:,.0f} ms ({gone:,} rows)")
            if t is tables[-1]:
                vacuums.append("not needed (no dead rows)")
                continue
            # the DELETE's bill comes later: VACUUM reads the table and every index
            with t.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                began = time.perf_counter()
                c.execute(sa.text("VACUUM messages"))
                vacuums.append(f"{(time.perf_counter() - began) * 1000:,.0f} ms")
        print("| retention of the oldest day | " + " | ".join(cells) + " |")
        print("| VACUUM after it | " + " | ".join(vacuums) + " |")
        with tables[-1].engine.connect() as connection:
            size = connection.scalar(
                sa.text(
                    "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
                    "WHERE inhparent = 'messages'::regclass"
                )
            )
        plain = []
        for t in tables[:-1]:
            with t.engine.connect() as connection:
                plain.append(
                    connection.scalar(sa.text("SELECT pg_total_relation_size('messages')"))
                )
        print(
            f"\nafter retention: partitioned {int(size or 0) / 2**20:,.0f} MiB, plain "
            + ", ".join(f"{int(x or 0) / 2**20:,.0f} MiB" for x in plain)
            + " (tables + indexes; the DELETE's space comes back only to later inserts, "
            "after VACUUM)"
        )
        # the upgrade an operator runs: 0010 → 0011 on the plain table's remaining rows
        with tables[0].engine.connect() as connection:
            remaining = int(connection.scalar(sa.text("SELECT count(*) FROM messages")) or 0)
        began = time.perf_counter()
        migrate(tables[0].engine)
        print(
            f"migration 0011 of {remaining:,} rows: {time.perf_counter() - began:,.1f} s "
            "(copy into day partitions, indexes built after)"
        )
    finally:
        for t in tables:
            t.engine.dispose()
            with admin.begin() as connection:
                connection.execute(sa.text(f'DROP SCHEMA "{t.schema}" CASCADE'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
