"""Telemetry: batched inserts (COPY on PostgreSQL), queries by topic filter and time, retention.

On PostgreSQL ``messages`` is partitioned by day on ``ts`` (migration 0011): retention
drops whole partitions and creates the coming days' (``maintain_partitions``, the I/O
shell of ``hedgerow.cloud.partition_plan``); on SQLite it is one DELETE."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from hedgerow.cloud import domain, partition_plan
from hedgerow.cloud.domain import (
    Message,
)
from hedgerow.cloud.partition_plan import Partition
from hedgerow.cloud.storage.base import (
    MAX_PAGE,
    QUERY_CHUNK,
    Store,
)
from hedgerow.cloud.storage.changes import MESSAGES, notify_sql
from hedgerow.cloud.storage.locks import lock_key
from hedgerow.cloud.storage.models import (
    CoreRow,
    GroupRow,
    MessageRow,
)

log = logging.getLogger(__name__)
#: How long partition DDL waits for the table before giving up until the next run
#: (meanwhile inserts queue behind it).
LOCK_TIMEOUT = "2s"
#: PostgreSQL's SQLSTATE for a lock not taken within ``lock_timeout``.
LOCK_NOT_AVAILABLE = "55P03"
_COLUMNS = "id, topic, payload, core, ts"


@dataclass(frozen=True)
class PartitionUpkeep:
    """What one ``maintain_partitions`` did."""

    created: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    #: rows in the dropped partitions (the planner's estimate once ANALYZE ran)
    dropped_rows: int = 0
    #: rows deleted from the default partition
    deleted_rows: int = 0
    #: the table was busy past ``LOCK_TIMEOUT``: nothing created or dropped this time
    deferred: bool = False


class MessageStore(Store):
    def insert_messages(self, rows: Sequence[tuple[str, bytes, str, float]]) -> None:
        if not rows:
            return
        if self.dialect == "postgresql":
            self._copy_messages(rows)
            return
        with self.engine.begin() as connection:
            connection.execute(
                sa.insert(MessageRow.__table__),  # type: ignore[arg-type]
                [{"topic": t, "payload": p, "core": c, "ts": ts} for t, p, c, ts in rows],
            )

    def _copy_messages(self, rows: Sequence[tuple[str, bytes, str, float]]) -> None:
        """PostgreSQL's COPY: an order of magnitude faster than INSERTs for telemetry; the
        same transaction notifies the other replicas."""
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            with cursor.copy("COPY messages (topic, payload, core, ts) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for row in rows:
                    copy.write_row(row)
            # delivered with the commit: other replicas' live views wake (storage.changes)
            cursor.execute(notify_sql(MESSAGES))
            raw.commit()
        except Exception:
            raw.rollback()
            raise
        finally:
            raw.close()

    def query_messages(
        self,
        *,
        topic_filter: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after_id: int | None = None,
        up_to_id: int | None = None,
        limit: int = 100,
        newest_first: bool = True,
        group: str | None = None,
    ) -> list[Message]:
        """Stored messages, newest first by default; ``group`` keeps those its core sent."""
        limit = max(1, min(limit, MAX_PAGE))
        exact = topic_filter is not None and "+" not in topic_filter and "#" not in topic_filter
        chunk_size = limit if exact else QUERY_CHUNK
        result: list[Message] = []
        cursor: int | None = None
        with self._tx() as s:
            while len(result) < limit:
                query = message_query(
                    topic_filter=topic_filter,
                    since=since,
                    until=until,
                    after_id=after_id,
                    up_to_id=up_to_id,
                    newest_first=newest_first,
                    group=group,
                    cursor=cursor,
                    limit=chunk_size,
                )
                chunk = s.execute(query).all()
                for mid, topic, payload, core, ts in chunk:
                    if topic_filter is None or exact or domain.topic_matches(topic_filter, topic):
                        result.append(Message(mid, topic, bytes(payload), core, ts))
                        if len(result) >= limit:
                            break
                if len(chunk) < chunk_size or not chunk:
                    break
                cursor = chunk[-1][0]
        return result

    def delete_messages_before(self, ts: float, *, now: float | None = None) -> int:
        """Every row older than ``ts`` goes; returns how many. On a partitioned PostgreSQL
        table: ``maintain_partitions`` (whole partitions dropped), then one DELETE that
        reads only the partition straddling ``ts`` and the default one."""
        if not self._partitioned():
            return self._delete_before(ts)
        upkeep = self.maintain_partitions(time.time() if now is None else now, ts)
        return upkeep.dropped_rows + upkeep.deleted_rows + self._delete_before(ts)

    def expire_messages(self, cutoff: float, *, now: float | None = None) -> int:
        """The retention job's step; returns how many rows went. On a partitioned
        PostgreSQL table: whole partitions older than ``cutoff`` are dropped (no DELETE,
        no bloat; a row stays until its whole day is past retention, so at most one
        partition width longer), the default partition's old rows deleted and the coming
        days' partitions created. Elsewhere: ``delete_messages_before``."""
        if not self._partitioned():
            return self._delete_before(cutoff)
        upkeep = self.maintain_partitions(time.time() if now is None else now, cutoff)
        return upkeep.dropped_rows + upkeep.deleted_rows

    def _delete_before(self, ts: float) -> int:
        with self.engine.begin() as connection:
            result = connection.execute(sa.delete(MessageRow).where(MessageRow.ts < ts))
            return int(result.rowcount or 0)

    def message_partitions(self) -> list[Partition]:
        """The range partitions of ``messages``, oldest first (none when it is not
        partitioned: SQLite, or PostgreSQL before migration 0011)."""
        if not self._partitioned():
            return []
        with self.engine.connect() as connection:
            return _partitions(connection)

    def maintain_partitions(self, now: float, cutoff: float | None = None) -> PartitionUpkeep:
        """Create the partitions ``partition_plan.plan`` asks for (moving rows the default
        partition holds in their range) and drop those wholly older than ``cutoff``, in
        one transaction; then, in another, delete the default partition's rows older than
        ``cutoff``. Idempotent: a process killed in the middle leaves a consistent table
        and the next run finishes the work. Replicas take turns (an advisory lock). The
        DDL waits at most ``LOCK_TIMEOUT`` for the table, else it is left to the next run
        (``deferred``; the default partition takes rows meanwhile)."""
        if not self._partitioned():
            return PartitionUpkeep()
        try:
            steps, counts, moved = self._partition_ddl(now, cutoff)
        except sa.exc.OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            log.warning("storage.partition.deferred error=%r", str(exc.orig))
            steps, counts, moved = partition_plan.Plan((), ()), {}, {}
            deferred = True
        else:
            deferred = False
        for partition in steps.create:
            log.info(
                "storage.partition.created name=%s start=%s end=%s moved_rows=%s",
                partition.name,
                _iso(partition.start),
                _iso(partition.end),
                moved[partition.name],
            )
        for partition in steps.drop:
            rows, how = counts[partition.name]
            log.info(
                "storage.partition.dropped name=%s end=%s rows=%s counted=%s",
                partition.name,
                _iso(partition.end),
                rows,
                how,
            )
        deleted = self._delete_from_default(cutoff) if cutoff is not None else 0
        return PartitionUpkeep(
            tuple(p.name for p in steps.create),
            tuple(p.name for p in steps.drop),
            sum(rows for rows, _ in counts.values()),
            deleted,
            deferred,
        )

    def _partition_ddl(
        self, now: float, cutoff: float | None
    ) -> tuple[partition_plan.Plan, dict[str, tuple[int, str]], dict[str, int]]:
        with self.engine.begin() as connection:
            connection.execute(sa.text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            schema = str(connection.scalar(sa.text("SELECT current_schema()")) or "")
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"),
                {"key": lock_key(schema, "message-partitions")},
            )
            steps = partition_plan.plan(now, _partitions(connection), cutoff=cutoff)
            # counted before any DDL: the DDL holds the table until the commit
            counts = {p.name: _row_count(connection, p.name) for p in steps.drop}
            moved = {p.name: _create_partition(connection, p) for p in steps.create}
            for partition in steps.drop:
                connection.execute(sa.text(f'DROP TABLE "{partition.name}"'))
        return steps, counts, moved

    def _delete_from_default(self, cutoff: float) -> int:
        with self.engine.begin() as connection:
            result = connection.execute(
                sa.text(f"DELETE FROM {partition_plan.DEFAULT_PARTITION} WHERE ts < :cutoff"),
                {"cutoff": cutoff},
            )
            deleted = int(result.rowcount or 0)
        if deleted:
            log.info(
                "storage.partition.deleted name=%s rows=%s before=%s",
                partition_plan.DEFAULT_PARTITION,
                deleted,
                _iso(cutoff),
            )
        return deleted

    def _partitioned(self) -> bool:
        if self.dialect != "postgresql":
            return False
        with self.engine.connect() as connection:
            kind = connection.scalar(
                sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass('messages')")
            )
        return bool(kind == "p")

    def max_message_id(self) -> int:
        with self._tx() as s:
            return int(s.scalar(sa.select(sa.func.max(MessageRow.id))) or 0)

    def count_messages(self) -> int:
        with self._tx() as s:
            return int(s.scalar(sa.select(sa.func.count()).select_from(MessageRow)) or 0)


def message_query(
    *,
    topic_filter: str | None = None,
    since: float | None = None,
    until: float | None = None,
    after_id: int | None = None,
    up_to_id: int | None = None,
    newest_first: bool = True,
    group: str | None = None,
    cursor: int | None = None,
    limit: int = 100,
) -> sa.Select[int, str, bytes, str, float]:
    """One round of ``query_messages``: what the console asks the database (each shape
    has an index on every partition: ``(id, ts)``, ``(topic text_pattern_ops, id)``,
    ``(core, id)``, ``ts``; a time range reads only the partitions it overlaps)."""
    table = MessageRow
    query = sa.select(table.id, table.topic, table.payload, table.core, table.ts)
    exact = topic_filter is not None and "+" not in topic_filter and "#" not in topic_filter
    prefix = _literal_prefix(topic_filter) if topic_filter else ""
    if exact:
        query = query.where(table.topic == topic_filter)
    elif prefix:
        starts = table.topic.startswith(prefix, autoescape=True)
        if topic_filter == prefix + "#" and prefix.endswith("/"):
            # MQTT: "a/b/#" matches "a/b" itself too
            starts = sa.or_(starts, table.topic == prefix[:-1])
        query = query.where(starts)
    if group is not None:
        query = query.where(table.core.in_(_core_of(group)))
    if since is not None:
        query = query.where(table.ts >= since)
    if until is not None:
        query = query.where(table.ts <= until)
    if after_id is not None:
        query = query.where(table.id > after_id)
    if up_to_id is not None:
        query = query.where(table.id <= up_to_id)
    if cursor is not None:
        query = query.where(table.id < cursor if newest_first else table.id > cursor)
    order = table.id.desc() if newest_first else table.id.asc()
    return query.order_by(order).limit(limit)


def _partitions(connection: sa.Connection) -> list[Partition]:
    rows = connection.execute(
        sa.text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass('messages')"
        )
    ).all()
    parsed = (partition_plan.parse_bound(str(name), str(bound)) for name, bound in rows)
    return sorted(p for p in parsed if p is not None)


def _create_partition(connection: sa.Connection, partition: Partition) -> int:
    """Create ``partition``; rows the default partition holds in its range move into it
    (PostgreSQL refuses the partition while they are there). Returns how many moved."""
    bounds = {"start": partition.start, "end": partition.end}
    in_range = "ts >= :start AND ts < :end"
    default = partition_plan.DEFAULT_PARTITION
    waiting = connection.scalar(
        sa.text(f"SELECT EXISTS (SELECT 1 FROM {default} WHERE {in_range})"), bounds
    )
    create = sa.text(
        f'CREATE TABLE "{partition.name}" PARTITION OF messages '
        f"FOR VALUES FROM ({partition.start!r}) TO ({partition.end!r})"
    )
    if not waiting:
        connection.execute(create)
        return 0
    connection.execute(
        sa.text("CREATE TEMPORARY TABLE moving_messages (LIKE messages) ON COMMIT DROP")
    )
    moved = connection.execute(
        sa.text(
            f"WITH moved AS (DELETE FROM {default} WHERE {in_range} RETURNING {_COLUMNS}) "
            f"INSERT INTO moving_messages ({_COLUMNS}) SELECT {_COLUMNS} FROM moved"
        ),
        bounds,
    ).rowcount
    connection.execute(create)
    connection.execute(
        sa.text(f"INSERT INTO messages ({_COLUMNS}) SELECT {_COLUMNS} FROM moving_messages")
    )
    connection.execute(sa.text("DROP TABLE moving_messages"))
    return int(moved or 0)


def _row_count(connection: sa.Connection, name: str) -> tuple[int, str]:
    """The planner's estimate when ANALYZE ran (counting a day of rows would read it
    all), else an exact count."""
    estimate = connection.scalar(
        sa.text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:name)"),
        {"name": f'"{name}"'},
    )
    if estimate is not None and estimate >= 0:
        return int(estimate), "estimate"
    return int(connection.scalar(sa.text(f'SELECT count(*) FROM "{name}"')) or 0), "exact"


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def _literal_prefix(topic_filter: str) -> str:
    cut = len(topic_filter)
    for marker in ("+", "#"):
        index = topic_filter.find(marker)
        if index != -1:
            cut = min(cut, index)
    return topic_filter[:cut]


def _core_of(group: str) -> sa.Select[str]:
    return (
        sa.select(CoreRow.name)
        .join(GroupRow, GroupRow.id == CoreRow.group_id)
        .where(GroupRow.name == group)
    )
