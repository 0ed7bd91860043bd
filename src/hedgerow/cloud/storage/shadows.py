"""Synced thing shadows (the cloud's copy) and who syncs them.

A change is a pure function of the stored copy (``hedgerow.contract.shadow``'s merge
rules), run inside one transaction with the row locked (``FOR UPDATE`` on PostgreSQL;
SQLite serialises writers), so two changes at once never lose one another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hedgerow.cloud.storage.base import Store, now
from hedgerow.cloud.storage.models import (
    CoreRow,
    GroupRow,
    GroupThingRow,
    ShadowRow,
    ThingRow,
)
from hedgerow.contract.shadow import CloudShadow

T = TypeVar("T")


def _entity(thing: str, row: ShadowRow | None) -> CloudShadow:
    if row is None:
        return CloudShadow(thing)
    return CloudShadow(
        thing,
        dict(row.desired or {}),
        dict(row.reported or {}),
        row.version,
        row.desired_version,
        {str(k): int(v) for k, v in (row.core_seqs or {}).items()},
    )


class ShadowStore(Store):
    def get_shadow(self, thing: str) -> CloudShadow:
        """The cloud's copy (version 0 and empty when none was written yet)."""
        with self._tx() as s:
            row = self._thing(s, thing)
            return _entity(
                thing, s.scalar(sa.select(ShadowRow).where(ShadowRow.thing_id == row.id))
            )

    def change_shadow(
        self, thing: str, change: Callable[[CloudShadow], tuple[CloudShadow, T]]
    ) -> tuple[CloudShadow, T]:
        """Apply ``change`` to the stored copy in one transaction; store what it returns."""
        with self._tx() as s:
            thing_row = self._thing(s, thing)
            query = sa.select(ShadowRow).where(ShadowRow.thing_id == thing_row.id)
            if self.dialect == "postgresql":
                query = query.with_for_update()
            row = s.scalar(query)
            new, extra = change(_entity(thing, row))
            if row is None:
                row = ShadowRow(thing_id=thing_row.id)
                s.add(row)
            row.desired = dict(new.desired)
            row.reported = dict(new.reported)
            row.version = new.version
            row.desired_version = new.desired_version
            row.core_seqs = dict(new.core_seqs)
            row.updated_at = now()
            return new, extra

    def shadow_cores(self, thing: str) -> list[str]:
        """The cores that sync ``thing``'s shadow: its groups' cores, where the group's
        ``sync_shadows`` setting names it."""
        with self._tx() as s:
            return self._shadow_cores(s, self._thing(s, thing).id, thing)

    def core_syncs(self, core: str, thing: str) -> bool:
        with self._tx() as s:
            row = s.scalar(sa.select(ThingRow).where(ThingRow.name == thing))
            return row is not None and core in self._shadow_cores(s, row.id, thing)

    @staticmethod
    def _shadow_cores(s: Session, thing_id: int, thing: str) -> list[str]:
        rows = s.execute(
            sa.select(CoreRow.name, GroupRow.settings)
            .join(GroupRow, GroupRow.id == CoreRow.group_id)
            .join(GroupThingRow, GroupThingRow.group_id == GroupRow.id)
            .where(GroupThingRow.thing_id == thing_id)
            .order_by(CoreRow.name)
        ).all()
        return [
            core for core, settings in rows if thing in (settings or {}).get("sync_shadows", ())
        ]
