"""Logs from cores: batched inserts, queries by group/core/function/level/time, retention."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from hedgerow.cloud.domain import LogEntry
from hedgerow.cloud.storage.base import MAX_PAGE, Store
from hedgerow.cloud.storage.changes import LOGS, notify_sql
from hedgerow.cloud.storage.models import LogRow

#: ``(group, core, source, level, ts, logger, message)``
LogValues = tuple[str, str, str, int, float, str, str]


class LogStore(Store):
    def insert_logs(self, rows: Sequence[LogValues]) -> None:
        if not rows:
            return
        keys = ("group", "core", "source", "level", "ts", "logger", "message")
        with self.engine.begin() as connection:
            connection.execute(
                sa.insert(LogRow.__table__),  # type: ignore[arg-type]
                [dict(zip(keys, row, strict=True)) for row in rows],
            )
            if self.dialect == "postgresql":  # other replicas' live log views wake on commit
                connection.execute(sa.text(notify_sql(LOGS)))

    def query_logs(
        self,
        *,
        group: str | None = None,
        core: str | None = None,
        function: str | None = None,
        min_level: int = 0,
        since: float | None = None,
        after_id: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[LogEntry]:
        """Records in the order the cloud received them (each core's in the order written)."""
        limit = max(1, min(limit, MAX_PAGE))
        t = LogRow
        query = sa.select(t)
        if group is not None:
            query = query.where(t.group == group)
        if core is not None:
            query = query.where(t.core == core)
        if function is not None:
            query = query.where(t.source == f"function:{function}")
        if min_level:
            query = query.where(t.level >= min_level)
        if since is not None:
            query = query.where(t.ts >= since)
        if after_id is not None:
            query = query.where(t.id > after_id)
        query = query.order_by(t.id.desc() if newest_first else t.id.asc()).limit(limit)
        with self._tx() as s:
            rows = s.scalars(query).all()
            return [
                LogEntry(r.id, r.group, r.core, r.source, r.level, r.ts, r.logger, r.message)
                for r in rows
            ]

    def newest_log_id(self) -> int:
        with self._tx() as s:
            return int(s.scalar(sa.select(sa.func.max(LogRow.id))) or 0)

    def count_logs(self) -> int:
        with self._tx() as s:
            return int(s.scalar(sa.select(sa.func.count()).select_from(LogRow)) or 0)

    def delete_logs_before(self, ts: float) -> int:
        with self.engine.begin() as connection:
            result = connection.execute(sa.delete(LogRow).where(LogRow.ts < ts))
            return int(result.rowcount or 0)
