"""Telemetry export status: each configured target's cursor, lag, losses and failures.

The export itself is the server's job (``hedgerow.cloud.exporters``, once across
replicas); what it did is in the database, so every replica answers the same status.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

from hedgerow.cloud.storage.exports import ExportCursor, ExportStore
from hedgerow.cloud.telemetry_export import ExportTarget, shown_url


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


class ExportService:
    def __init__(self, store: ExportStore, targets: Sequence[ExportTarget] = ()) -> None:
        self.store = store
        self.targets = tuple(targets)

    async def status(self) -> list[dict[str, Any]]:
        """One entry per configured target (and per cursor left by a removed one)."""
        return await asyncio.to_thread(self._status)

    def _status(self) -> list[dict[str, Any]]:
        cursors = {c.name: c for c in self.store.export_cursors()}
        out = [self._entry(t, cursors.pop(t.name, None)) for t in self.targets]
        out += [self._entry(None, c) for c in cursors.values()]
        return out

    def _entry(self, target: ExportTarget | None, cursor: ExportCursor | None) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": target.name if target else cursor.name if cursor else "",
            "configured": target is not None,
            "kind": target.kind if target else None,
            "url": shown_url(target.url) if target else None,
            "topic_filter": target.topic_filter if target else None,
            "started": cursor is not None,
        }
        if cursor is None:  # configured, not run yet
            entry.update(cursor=None, lag=None, exported=0, lost=0, failures=0, failing=0,
                         last_error=None, last_error_at=None, last_success_at=None)  # fmt: skip
            return entry
        entry.update(
            cursor=cursor.cursor,
            lag=self.store.messages_after_count(cursor.cursor),
            exported=cursor.exported,
            lost=cursor.lost,
            failures=cursor.failures,
            failing=cursor.failing,
            last_error=cursor.last_error,
            last_error_at=_iso(cursor.last_error_at),
            last_success_at=_iso(cursor.last_success_at),
        )
        return entry
