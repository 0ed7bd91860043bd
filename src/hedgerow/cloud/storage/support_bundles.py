"""Support bundles asked of cores, and the bundles they uploaded (the newest few per core)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from hedgerow.cloud.errors import NotFound
from hedgerow.cloud.storage.base import Store, now, utc, utc_or_none
from hedgerow.cloud.storage.models import CoreRow, SupportBundleRow

#: bundles kept per core (older ones are deleted when a new one is asked)
KEEP_PER_CORE = 5


@dataclass(frozen=True)
class SupportBundle:
    request_id: str
    core: str
    requested_at: dt.datetime
    received_at: dt.datetime | None
    size: int | None


def _entity(row: SupportBundleRow, core: str) -> SupportBundle:
    return SupportBundle(
        row.request_id, core, utc(row.requested_at), utc_or_none(row.received_at), row.size
    )


class SupportBundleStore(Store):
    def add_support_bundle(self, core: str, request_id: str) -> SupportBundle:
        with self._tx() as s:
            core_row = self._core(s, core)
            row = SupportBundleRow(request_id=request_id, core_id=core_row.id, requested_at=now())
            s.add(row)
            s.flush()
            old = s.scalars(
                sa.select(SupportBundleRow.id)
                .where(SupportBundleRow.core_id == core_row.id)
                .order_by(SupportBundleRow.id.desc())
                .offset(KEEP_PER_CORE)
            ).all()
            if old:
                s.execute(sa.delete(SupportBundleRow).where(SupportBundleRow.id.in_(old)))
            return _entity(row, core)

    def _bundle(self, s: sa.orm.Session, core: str, request_id: str) -> SupportBundleRow:
        row = s.scalar(
            sa.select(SupportBundleRow)
            .join(CoreRow, CoreRow.id == SupportBundleRow.core_id)
            .where(SupportBundleRow.request_id == request_id, CoreRow.name == core)
        )
        if row is None:
            raise NotFound(
                "support bundle", request_id, f"core {core!r} has no support bundle {request_id!r}"
            )
        return row

    def receive_support_bundle(self, core: str, request_id: str, data: bytes) -> SupportBundle:
        with self._tx() as s:
            row = self._bundle(s, core, request_id)
            row.data = data
            row.size = len(data)
            row.received_at = now()
            return _entity(row, core)

    def get_support_bundle(self, core: str, request_id: str) -> tuple[SupportBundle, bytes | None]:
        with self._tx() as s:
            row = self._bundle(s, core, request_id)
            return _entity(row, core), row.data
