"""telemetry partitioned by day on PostgreSQL

On PostgreSQL ``messages`` becomes a table partitioned by RANGE on ``ts`` (epoch
seconds): one partition per UTC day (``messages_pYYYYMMDD``) for every day of the last
366 that holds rows, today and the next three, plus ``messages_default`` for anything
else, so no insert ever fails for want of a partition. The primary key becomes
``(id, ts)`` (a partitioned table's unique keys include the partition key); ids keep
their values and the sequence carries on. Indexes, on every partition: ``(id, ts)``
(newest first, id cursors), ``ts`` (time ranges), ``(topic text_pattern_ops, id)``
(exact topics and topic prefixes, in id order), ``(core, id)`` (a group's cores).

Rows are copied in this migration's transaction: a database with many millions of rows
takes minutes and twice the table's space meanwhile (docs/scale.md). SQLite: nothing
changes. Downgrade: back to one plain table with the same rows and ids.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 23:30:00
"""

from __future__ import annotations

import datetime as dt
import time

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

DAY_S = 86_400
AHEAD_DAYS = 3
#: Days with rows older than this go to the default partition (retention removes them).
BACKFILL_DAYS = 366
COLUMNS = "id, topic, payload, core, ts"


def _name(day: int) -> str:
    return "messages_p" + dt.datetime.fromtimestamp(day * DAY_S, dt.UTC).strftime("%Y%m%d")


def _sequence(connection: sa.Connection, table: str) -> str:
    sequence = connection.scalar(sa.text(f"SELECT pg_get_serial_sequence('{table}', 'id')"))
    if not sequence:
        raise RuntimeError(f"{table}.id has no sequence: restore the schema of revision 0010")
    return str(sequence)


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE messages RENAME TO messages_unpartitioned")
    op.execute(
        "ALTER TABLE messages_unpartitioned RENAME CONSTRAINT messages_pkey "
        "TO messages_unpartitioned_pkey"
    )
    op.execute("DROP INDEX ix_messages_ts")
    op.execute("DROP INDEX ix_messages_topic")
    sequence = _sequence(connection, "messages_unpartitioned")
    op.execute(
        f"CREATE TABLE messages (id BIGINT NOT NULL DEFAULT nextval('{sequence}'::regclass), "
        "topic TEXT NOT NULL, payload BYTEA NOT NULL, core VARCHAR(128) NOT NULL, "
        "ts DOUBLE PRECISION NOT NULL, CONSTRAINT messages_pkey PRIMARY KEY (id, ts)) "
        "PARTITION BY RANGE (ts)"
    )
    # the sequence follows the new column (dropping the old table would drop it)
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY messages.id")
    op.execute("CREATE TABLE messages_default PARTITION OF messages DEFAULT")
    today = int(time.time() // DAY_S)
    days = {
        int(day)
        for day in connection.scalars(
            sa.text(
                "SELECT DISTINCT floor(ts / :day) FROM messages_unpartitioned "
                "WHERE ts >= :low AND ts < :high"
            ),
            {"day": DAY_S, "low": (today - BACKFILL_DAYS) * DAY_S, "high": today * DAY_S},
        )
    }
    days |= set(range(today, today + AHEAD_DAYS + 1))
    for day in sorted(days):
        op.execute(
            f"CREATE TABLE {_name(day)} PARTITION OF messages "
            f"FOR VALUES FROM ({day * DAY_S}) TO ({(day + 1) * DAY_S})"
        )
    op.execute(f"INSERT INTO messages ({COLUMNS}) SELECT {COLUMNS} FROM messages_unpartitioned")
    op.execute("DROP TABLE messages_unpartitioned")
    # built after the copy (faster than maintaining them row by row); each partition
    # gets its own, and partitions created later get them too
    op.execute("CREATE INDEX ix_messages_ts ON messages (ts)")
    op.execute("CREATE INDEX ix_messages_topic_id ON messages (topic text_pattern_ops, id)")
    op.execute("CREATE INDEX ix_messages_core_id ON messages (core, id)")
    op.execute("ANALYZE messages")


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "postgresql":
        return
    sequence = _sequence(connection, "messages")
    op.execute("ALTER TABLE messages RENAME TO messages_partitioned")
    op.execute(
        "ALTER TABLE messages_partitioned RENAME CONSTRAINT messages_pkey "
        "TO messages_partitioned_pkey"
    )
    for index in ("ix_messages_ts", "ix_messages_topic_id", "ix_messages_core_id"):
        op.execute(f"DROP INDEX {index}")
    op.execute(
        f"CREATE TABLE messages (id BIGINT NOT NULL DEFAULT nextval('{sequence}'::regclass), "
        "topic TEXT NOT NULL, payload BYTEA NOT NULL, core VARCHAR(128) NOT NULL, "
        "ts DOUBLE PRECISION NOT NULL, CONSTRAINT messages_pkey PRIMARY KEY (id))"
    )
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY messages.id")
    op.execute(f"INSERT INTO messages ({COLUMNS}) SELECT {COLUMNS} FROM messages_partitioned")
    op.execute("DROP TABLE messages_partitioned")  # its partitions go with it
    op.execute("CREATE INDEX ix_messages_ts ON messages (ts)")
    op.execute("CREATE INDEX ix_messages_topic ON messages (topic)")
