"""Telemetry export cursors: per target, the last message id it acknowledged.

The cursor moves by compare and set (``advance_export``): a replica that lost the job's
lock while a batch was out cannot move it back or past what the new holder did. Reading
after the cursor is ``messages_after``; whether a hole in the ids may still be filled by
a write in progress is ``write_horizon`` / ``writes_done_before`` (PostgreSQL: the
transaction ids of the snapshot; SQLite has one writer, so a visible row means every
lower id was written or never will be).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from hedgerow.cloud.domain import Message
from hedgerow.cloud.storage.base import Store, now, utc, utc_or_none
from hedgerow.cloud.storage.models import MessageRow, TelemetryExportRow

#: How long an error text is kept (the rest is cut).
MAX_ERROR = 1000


@dataclass(frozen=True)
class ExportCursor:
    name: str
    #: the last message id the target acknowledged (None: nothing was stored when it came)
    cursor: int | None
    exported: int
    lost: int
    failures: int
    failing: int
    last_error: str | None
    last_error_at: dt.datetime | None
    last_success_at: dt.datetime | None
    created_at: dt.datetime


def _cursor(r: TelemetryExportRow) -> ExportCursor:
    return ExportCursor(
        r.name, r.cursor, r.exported, r.lost, r.failures, r.failing, r.last_error,
        utc_or_none(r.last_error_at), utc_or_none(r.last_success_at), utc(r.created_at),
    )  # fmt: skip


class ExportStore(Store):
    def open_export(self, name: str, *, newest: bool) -> ExportCursor:
        """The target's cursor, made on first use: before the oldest stored message (or
        after the newest, ``newest``); None when nothing is stored."""
        with self._tx() as s:
            row = s.get(TelemetryExportRow, name)
            if row is None:
                edge = sa.func.max(MessageRow.id) if newest else sa.func.min(MessageRow.id) - 1
                start = s.scalar(sa.select(edge))
                row = TelemetryExportRow(
                    name=name,
                    cursor=None if start is None else int(start),
                    exported=0,
                    lost=0,
                    failures=0,
                    failing=0,
                )
                s.add(row)
                s.flush()
            return _cursor(row)

    def export_cursors(self) -> list[ExportCursor]:
        with self._tx() as s:
            rows = s.scalars(sa.select(TelemetryExportRow).order_by(TelemetryExportRow.name))
            return [_cursor(r) for r in rows]

    def messages_after(self, cursor: int | None, limit: int) -> list[Message]:
        """Stored messages with ids above ``cursor``, ascending, at most ``limit``."""
        m = MessageRow
        query = sa.select(m.id, m.topic, m.payload, m.core, m.ts).order_by(m.id).limit(limit)
        if cursor is not None:
            query = query.where(m.id > cursor)
        with self._tx() as s:
            return [Message(i, t, bytes(p), c, ts) for i, t, p, c, ts in s.execute(query)]

    def messages_after_count(self, cursor: int | None) -> int:
        query = sa.select(sa.func.count()).select_from(MessageRow)
        if cursor is not None:
            query = query.where(MessageRow.id > cursor)
        with self._tx() as s:
            return int(s.scalar(query) or 0)

    def advance_export(
        self, name: str, expected: int | None, cursor: int | None, exported: int, lost: int
    ) -> bool:
        """Move the cursor from ``expected`` to ``cursor`` and count what was sent and
        lost; False (nothing changed) when the cursor is not ``expected`` any more."""
        t = TelemetryExportRow
        same = t.cursor.is_(None) if expected is None else t.cursor == expected
        values: dict[str, object] = {
            "cursor": cursor,
            "exported": t.exported + exported,
            "lost": t.lost + lost,
        }
        if exported:
            values.update(failing=0, last_success_at=now())
        with self.engine.begin() as connection:
            done = connection.execute(sa.update(t).where(t.name == name, same).values(**values))
            return bool(done.rowcount)

    def record_export_failure(self, name: str, error: str) -> int:
        """Count a failure; returns the failures since the last success."""
        t = TelemetryExportRow
        with self.engine.begin() as connection:
            connection.execute(
                sa.update(t)
                .where(t.name == name)
                .values(
                    failures=t.failures + 1,
                    failing=t.failing + 1,
                    last_error=error[:MAX_ERROR],
                    last_error_at=now(),
                )
            )
            return int(connection.scalar(sa.select(t.failing).where(t.name == name)) or 0)

    def write_horizon(self) -> int:
        """A mark after every write in progress now (PostgreSQL: the snapshot's xmax)."""
        if self.dialect != "postgresql":
            return 0
        with self.engine.connect() as connection:
            return int(connection.scalar(sa.text("SELECT pg_snapshot_xmax(pg_current_snapshot())")))

    def writes_done_before(self, horizon: int) -> bool:
        """Whether every write in progress when ``horizon`` was taken has ended."""
        if self.dialect != "postgresql":
            return True
        with self.engine.connect() as connection:
            oldest = connection.scalar(sa.text("SELECT pg_snapshot_xmin(pg_current_snapshot())"))
            return int(oldest) >= horizon
