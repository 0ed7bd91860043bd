"""A group's saved dashboards: named lists of charts (the console draws them)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from hedgerow.cloud.errors import NotFound
from hedgerow.cloud.storage.base import Store, now, utc
from hedgerow.cloud.storage.models import DashboardRow


@dataclass(frozen=True)
class Dashboard:
    group: str
    name: str
    charts: Sequence[dict[str, Any]]
    updated_at: dt.datetime


class DashboardStore(Store):
    def list_dashboards(self, group: str) -> list[Dashboard]:
        with self._tx() as s:
            group_row = self._group(s, group)
            rows = s.scalars(
                sa.select(DashboardRow)
                .where(DashboardRow.group_id == group_row.id)
                .order_by(DashboardRow.name)
            )
            return [Dashboard(group, r.name, list(r.charts), utc(r.updated_at)) for r in rows]

    def put_dashboard(self, group: str, name: str, charts: Sequence[dict[str, Any]]) -> Dashboard:
        """Create the dashboard or replace its charts."""
        with self._tx() as s:
            group_row = self._group(s, group)
            row = s.scalar(
                sa.select(DashboardRow).where(
                    DashboardRow.group_id == group_row.id, DashboardRow.name == name
                )
            )
            if row is None:
                row = DashboardRow(group_id=group_row.id, name=name)
                s.add(row)
            row.charts = [dict(c) for c in charts]
            row.updated_at = now()
            return Dashboard(group, name, list(row.charts), utc(row.updated_at))

    def delete_dashboard(self, group: str, name: str) -> None:
        with self._tx() as s:
            group_row = self._group(s, group)
            deleted = s.execute(
                sa.delete(DashboardRow).where(
                    DashboardRow.group_id == group_row.id, DashboardRow.name == name
                )
            )
            if not deleted.rowcount:  # type: ignore[attr-defined]
                raise NotFound("dashboard", name, f"group {group!r} has no dashboard {name!r}")
