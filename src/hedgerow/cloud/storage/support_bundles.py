"""Support bundles asked of cores, and the bundles they uploaded (the newest few per core).

A request waits for its core until ``expires_at``: one waiting request per core at a time
(asking again while one waits gives that one back)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from hedgerow.cloud.errors import NotFound
from hedgerow.cloud.storage.base import Store, now, utc, utc_or_none
from hedgerow.cloud.storage.models import CoreRow, SupportBundleRow

#: bundles kept per core (older ones are deleted when a new one is asked)
KEEP_PER_CORE = 5
#: how long a request waits for its core by default (rows from before expiry existed too)
DEFAULT_WAIT = dt.timedelta(hours=24)


@dataclass(frozen=True)
class SupportBundle:
    request_id: str
    core: str
    requested_at: dt.datetime
    received_at: dt.datetime | None
    size: int | None
    expires_at: dt.datetime

    def expired(self, at: dt.datetime) -> bool:
        """Never uploaded, and no longer waited for."""
        return self.received_at is None and at >= self.expires_at


def _entity(row: SupportBundleRow, core: str) -> SupportBundle:
    requested = utc(row.requested_at)
    return SupportBundle(
        row.request_id,
        core,
        requested,
        utc_or_none(row.received_at),
        row.size,
        utc_or_none(row.expires_at) or requested + DEFAULT_WAIT,
    )


class SupportBundleStore(Store):
    def add_support_bundle(
        self, core: str, request_id: str, expires_at: dt.datetime | None = None
    ) -> SupportBundle:
        """A new request, or the one already waiting for ``core`` (not received, not expired)."""
        with self._tx() as s:
            core_row = self._core(s, core)
            at = now()
            for waiting in s.scalars(
                sa.select(SupportBundleRow)
                .where(
                    SupportBundleRow.core_id == core_row.id,
                    SupportBundleRow.received_at.is_(None),
                )
                .order_by(SupportBundleRow.id.desc())
            ):
                entity = _entity(waiting, core)
                if not entity.expired(at):
                    return entity
            row = SupportBundleRow(
                request_id=request_id,
                core_id=core_row.id,
                requested_at=at,
                expires_at=expires_at or at + DEFAULT_WAIT,
            )
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

    def waiting_support_bundles(self) -> list[SupportBundle]:
        """Every request not received yet and not expired (to announce again at start)."""
        with self._tx() as s:
            rows = s.execute(
                sa.select(SupportBundleRow, CoreRow.name)
                .join(CoreRow, CoreRow.id == SupportBundleRow.core_id)
                .where(SupportBundleRow.received_at.is_(None))
                .order_by(SupportBundleRow.id)
            ).all()
            at = now()
            return [e for row, name in rows if not (e := _entity(row, name)).expired(at)]

    def support_bundles_expired_between(
        self, start: dt.datetime, end: dt.datetime
    ) -> list[SupportBundle]:
        """Requests never received whose wait ended in ``(start, end]``."""
        with self._tx() as s:
            rows = s.execute(
                sa.select(SupportBundleRow, CoreRow.name)
                .join(CoreRow, CoreRow.id == SupportBundleRow.core_id)
                .where(
                    SupportBundleRow.received_at.is_(None),
                    SupportBundleRow.expires_at > start,
                    SupportBundleRow.expires_at <= end,
                )
            ).all()
            return [_entity(row, name) for row, name in rows]

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
