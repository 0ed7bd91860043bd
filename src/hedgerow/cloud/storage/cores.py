"""Cores: identity, connectivity, heartbeats."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from hedgerow.cloud.domain import (
    Core,
    Endpoint,
)
from hedgerow.cloud.errors import Conflict, NotFound
from hedgerow.cloud.storage.base import (
    NewCertificate,
    Store,
    now,
)
from hedgerow.cloud.storage.models import (
    CertificateRow,
    CoreRow,
    GroupRow,
)

log = logging.getLogger(__name__)


class CoreStore(Store):
    def create_core(self, name: str, group: str, certificate: Callable[[], NewCertificate]) -> Core:
        with self._tx() as s:
            group_row = self._group(s, group)
            taken = self._identity_taken(s, name)
            if taken:
                raise Conflict(f"the name {name!r} is already used by a {taken}")
            existing = s.scalar(sa.select(CoreRow.name).where(CoreRow.group_id == group_row.id))
            if existing:
                raise Conflict(
                    f"group {group!r} already has a core ({existing!r}); a group has one core"
                )
            row = CoreRow(name=name, group_id=group_row.id, endpoints=[], created_at=now())
            s.add(row)
            s.flush()
            self._add_certificate(s, certificate())
            return self._core_entity(row, group)

    def get_core(self, name: str) -> Core:
        with self._tx() as s:
            row = self._core(s, name)
            group = s.scalar(sa.select(GroupRow.name).where(GroupRow.id == row.group_id))
            return self._core_entity(row, str(group))

    def list_cores(
        self, *, prefix: str = "", limit: int | None = None, offset: int = 0
    ) -> list[Core]:
        """Cores by name (named ``prefix``...); ``limit`` and ``offset`` page (None: all)."""
        with self._tx() as s:
            query = (
                sa.select(CoreRow, GroupRow.name)
                .join(GroupRow, GroupRow.id == CoreRow.group_id)
                .order_by(CoreRow.name)
            )
            if prefix:
                query = query.where(CoreRow.name.startswith(prefix, autoescape=True))
            query = query.limit(limit).offset(max(offset, 0))
            return [self._core_entity(row, group) for row, group in s.execute(query)]

    def live_core_identities(self) -> list[tuple[str, str, str]]:
        """Every core with a live identity (registered, not revoked, not expired): its
        name, group and that certificate's fingerprint (the newest, when it has several).
        One query for the whole fleet (an external broker's full reconcile)."""
        with self._tx() as s:
            query = (
                sa.select(CoreRow.name, GroupRow.name, CertificateRow.fingerprint)
                .join(GroupRow, GroupRow.id == CoreRow.group_id)
                .join(CertificateRow, CertificateRow.owner == CoreRow.name)
                .where(
                    CertificateRow.kind == "core",
                    CertificateRow.revoked_at.is_(None),
                    CertificateRow.not_after > now(),
                )
                .order_by(CertificateRow.issued_at)
            )
            newest = {core: (core, group, fp) for core, group, fp in s.execute(query)}
            return sorted(newest.values())

    def delete_core(self, name: str) -> list[str]:
        with self._tx() as s:
            row = self._core(s, name)
            revoked = self._revoke_owner(s, name, "core deleted")
            s.delete(row)
            return revoked

    def set_endpoints(self, core: str, endpoints: Sequence[Endpoint]) -> Core:
        with self._tx() as s:
            row = self._core(s, core)
            row.endpoints = [e.to_json() for e in endpoints]
            group = s.scalar(sa.select(GroupRow.name).where(GroupRow.id == row.group_id))
            s.flush()
            return self._core_entity(row, str(group))

    def record_heartbeat(self, core: str, heartbeat: dict[str, Any] | None) -> None:
        if self.record_heartbeats([(core, heartbeat)]):
            raise NotFound("core", core)

    def record_heartbeats(self, beats: Sequence[tuple[str, dict[str, Any] | None]]) -> list[str]:
        """Last seen (and the heartbeat, when given) of many cores in one transaction: a
        fleet's heartbeats cost a transaction per batch, not per core. The cores not found."""
        with self._tx() as s:
            names = list(dict.fromkeys(core for core, _ in beats))
            rows = {
                row.name: row
                for row in s.scalars(sa.select(CoreRow).where(CoreRow.name.in_(names)))
            }
            seen = now()
            for core, heartbeat in beats:
                row = rows.get(core)
                if row is None:
                    continue
                row.last_seen = seen
                if heartbeat is not None:
                    row.heartbeat = heartbeat
            return [core for core in names if core not in rows]

    def add_core_certificate(self, core: str, certificate: NewCertificate) -> None:
        with self._tx() as s:
            self._core(s, core)
            self._add_certificate(s, certificate)

    def replace_core_identity(
        self, core: str, certificate: NewCertificate, reason: str
    ) -> list[str]:
        """Revoke every certificate of ``core`` and record its new one, in one transaction:
        the fingerprints revoked."""
        with self._tx() as s:
            self._core(s, core)
            revoked = self._revoke_owner(s, core, reason)
            self._add_certificate(s, certificate)
            return revoked
