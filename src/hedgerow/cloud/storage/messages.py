"""Telemetry: batched inserts (COPY on PostgreSQL), queries by topic filter and time, retention."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa

from hedgerow.cloud import domain
from hedgerow.cloud.domain import (
    Message,
)
from hedgerow.cloud.storage.base import (
    MAX_PAGE,
    QUERY_CHUNK,
    Store,
)
from hedgerow.cloud.storage.changes import MESSAGES, notify_sql
from hedgerow.cloud.storage.models import (
    CoreRow,
    GroupRow,
    MessageRow,
)

log = logging.getLogger(__name__)


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
        prefix = _literal_prefix(topic_filter) if topic_filter else ""
        exact = topic_filter is not None and "+" not in topic_filter and "#" not in topic_filter
        table = MessageRow
        result: list[Message] = []
        cursor: int | None = None
        with self._tx() as s:
            while len(result) < limit:
                query = sa.select(table.id, table.topic, table.payload, table.core, table.ts)
                if exact:
                    query = query.where(table.topic == topic_filter)
                elif prefix:
                    query = query.where(table.topic.startswith(prefix, autoescape=True))
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
                chunk = s.execute(
                    query.order_by(order).limit(QUERY_CHUNK if not exact else limit)
                ).all()
                for mid, topic, payload, core, ts in chunk:
                    if topic_filter is None or exact or domain.topic_matches(topic_filter, topic):
                        result.append(Message(mid, topic, bytes(payload), core, ts))
                        if len(result) >= limit:
                            break
                if len(chunk) < (QUERY_CHUNK if not exact else limit) or not chunk:
                    break
                cursor = chunk[-1][0]
        return result

    def delete_messages_before(self, ts: float) -> int:
        with self.engine.begin() as connection:
            result = connection.execute(sa.delete(MessageRow).where(MessageRow.ts < ts))
            return int(result.rowcount or 0)

    def max_message_id(self) -> int:
        with self._tx() as s:
            return int(s.scalar(sa.select(sa.func.max(MessageRow.id))) or 0)

    def count_messages(self) -> int:
        with self._tx() as s:
            return int(s.scalar(sa.select(sa.func.count()).select_from(MessageRow)) or 0)


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
