"""Certificates: lookup, revocation, owners' groups."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa

from hedgerow.cloud.domain import (
    Certificate,
)
from hedgerow.cloud.errors import Conflict, NotFound
from hedgerow.cloud.storage.base import (
    MAX_PAGE,
    Store,
    now,
    utc,
    utc_or_none,
)
from hedgerow.cloud.storage.models import (
    CertificateRow,
    CoreRow,
    GroupRow,
    ThingRow,
)

log = logging.getLogger(__name__)


class CertificateStore(Store):
    @staticmethod
    def _certificate_entity(r: CertificateRow) -> Certificate:
        return Certificate(
            fingerprint=r.fingerprint,
            kind=r.kind,
            owner=r.owner,
            serial=r.serial,
            issued_at=utc(r.issued_at),
            not_after=utc(r.not_after),
            revoked_at=utc_or_none(r.revoked_at),
            pem=r.pem,
        )

    def get_certificate(self, fingerprint: str) -> Certificate:
        with self._tx() as s:
            row = s.get(CertificateRow, fingerprint)
            if row is None:
                raise NotFound("certificate", fingerprint)
            return self._certificate_entity(row)

    def find_certificate(self, fingerprint: str) -> Certificate | None:
        with self._tx() as s:
            row = s.get(CertificateRow, fingerprint)
            return self._certificate_entity(row) if row else None

    def list_certificates(
        self, *, owner: str | None = None, kind: str | None = None, limit: int = 1000
    ) -> list[Certificate]:
        with self._tx() as s:
            query = (
                sa.select(CertificateRow)
                .order_by(CertificateRow.issued_at.desc())
                .limit(min(limit, MAX_PAGE))
            )
            if owner:
                query = query.where(CertificateRow.owner == owner)
            if kind:
                query = query.where(CertificateRow.kind == kind)
            return [self._certificate_entity(r) for r in s.scalars(query)]

    def revoke_certificate(self, fingerprint: str, reason: str = "revoked") -> Certificate:
        with self._tx() as s:
            row = s.get(CertificateRow, fingerprint)
            if row is None:
                raise NotFound("certificate", fingerprint)
            if row.revoked_at is not None:
                raise Conflict(f"certificate {fingerprint} is already revoked")
            row.revoked_at = now()
            row.revoke_reason = reason
            s.flush()
            return self._certificate_entity(row)

    def revoke_owner(self, owner: str, reason: str = "revoked") -> list[str]:
        with self._tx() as s:
            if self._identity_taken(s, owner) is None:
                raise NotFound("thing", owner)
            return self._revoke_owner(s, owner, reason)

    def revoked_fingerprints(self) -> list[str]:
        """Revoked certificates that have not expired yet (expired ones fail on their own)."""
        with self._tx() as s:
            query = sa.select(CertificateRow.fingerprint).where(
                CertificateRow.revoked_at.is_not(None), CertificateRow.not_after > now()
            )
            return sorted(s.scalars(query))

    def cores_of_groups(self, groups: Sequence[str]) -> list[str]:
        """The cores of those of ``groups`` that exist and have one."""
        if not groups:
            return []
        with self._tx() as s:
            return [
                str(name)
                for name in s.scalars(
                    sa.select(CoreRow.name)
                    .join(GroupRow, GroupRow.id == CoreRow.group_id)
                    .where(GroupRow.name.in_(list(groups)))
                )
            ]

    def groups_of_owner(self, owner: str) -> list[str]:
        with self._tx() as s:
            core = s.scalar(sa.select(CoreRow).where(CoreRow.name == owner))
            if core is not None:
                return [str(s.scalar(sa.select(GroupRow.name).where(GroupRow.id == core.group_id)))]
            thing = s.scalar(sa.select(ThingRow).where(ThingRow.name == owner))
            if thing is None:
                return []
            return self._thing_groups(s, [thing.id]).get(thing.id, [])
