"""Claim templates, claims and their uses (the audit), device CAs and registered device
certificates.

A use is reserved atomically (``reserve_use``: one conditional ``UPDATE`` that counts it
only while the claim is unrevoked, unexpired and under its limit), so concurrent devices
never exceed a claim's limit on SQLite or PostgreSQL; a registration that then fails gives
the use back (``release_use``).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hedgerow.cloud.claim_rules import Claim, ClaimTemplate, ClaimUse, DeviceCA
from hedgerow.cloud.errors import Conflict, NotFound
from hedgerow.cloud.storage.base import Store, now, utc, utc_or_none
from hedgerow.cloud.storage.models import (
    CertificateRow,
    ClaimRow,
    ClaimTemplateRow,
    ClaimUseRow,
    DeviceCARow,
    ExternalCertificateRow,
    GroupThingRow,
    ThingRow,
)
from hedgerow.contract.provisioning import ClaimKind

#: the newest uses ``get_claim`` returns with a claim
MAX_USES_SHOWN = 1000


def _template(row: ClaimTemplateRow) -> ClaimTemplate:
    return ClaimTemplate(
        name=row.name,
        kind=ClaimKind(row.kind),
        group=row.group_pattern,
        name_pattern=row.name_pattern,
        attributes=dict(row.attributes or {}),
        created_at=utc(row.created_at),
    )


def _claim(row: ClaimRow, template: ClaimTemplateRow, uses: list[ClaimUse] | None = None) -> Claim:
    return Claim(
        id=row.id,
        template=template.name,
        kind=ClaimKind(template.kind),
        fingerprint=row.fingerprint,
        max_uses=row.max_uses,
        used=row.used,
        expires_at=utc(row.expires_at),
        revoked_at=utc_or_none(row.revoked_at),
        created_at=utc(row.created_at),
        uses=uses or [],
    )


def _use(row: ClaimUseRow) -> ClaimUse:
    return ClaimUse(
        at=utc(row.at),
        serial=row.serial,
        outcome=row.outcome,
        reason=row.reason,
        name=row.name,
        fingerprint=row.fingerprint,
        peer=row.peer,
    )


class ClaimStore(Store):
    # ---- templates -------------------------------------------------------------------

    @staticmethod
    def _template_row(s: Session, name: str) -> ClaimTemplateRow:
        row = s.scalar(sa.select(ClaimTemplateRow).where(ClaimTemplateRow.name == name))
        if row is None:
            raise NotFound("template", name, f"claim template {name!r} does not exist")
        return row

    def create_template(self, template: ClaimTemplate) -> ClaimTemplate:
        with self._tx() as s:
            taken = s.scalar(
                sa.select(ClaimTemplateRow.id).where(ClaimTemplateRow.name == template.name)
            )
            if taken is not None:
                raise Conflict(f"claim template {template.name!r} already exists")
            row = ClaimTemplateRow(
                name=template.name,
                kind=template.kind.value,
                group_pattern=template.group,
                name_pattern=template.name_pattern,
                attributes=dict(template.attributes),
                next_seq=1,
                created_at=template.created_at,
            )
            s.add(row)
            s.flush()
            return _template(row)

    def get_template(self, name: str) -> ClaimTemplate:
        with self._tx() as s:
            return _template(self._template_row(s, name))

    def list_templates(self) -> list[ClaimTemplate]:
        with self._tx() as s:
            rows = s.scalars(sa.select(ClaimTemplateRow).order_by(ClaimTemplateRow.name))
            return [_template(r) for r in rows]

    def delete_template(self, name: str) -> None:
        with self._tx() as s:
            row = self._template_row(s, name)
            in_use = s.scalar(sa.select(ClaimRow.id).where(ClaimRow.template_id == row.id))
            ca = s.scalar(
                sa.select(DeviceCARow.fingerprint).where(DeviceCARow.template_id == row.id)
            )
            if in_use is not None or ca is not None:
                raise Conflict(
                    f"claim template {name!r} is used by claims or device CAs: revoke and "
                    "delete those first"
                )
            s.delete(row)

    # ---- claims ----------------------------------------------------------------------

    def create_claim(
        self,
        claim_id: str,
        template: str,
        fingerprint: str,
        cert_pem: str,
        max_uses: int,
        expires_at: dt.datetime,
    ) -> Claim:
        with self._tx() as s:
            template_row = self._template_row(s, template)
            row = ClaimRow(
                id=claim_id,
                template_id=template_row.id,
                fingerprint=fingerprint,
                cert_pem=cert_pem,
                max_uses=max_uses,
                used=0,
                expires_at=expires_at,
                revoked_at=None,
                created_at=now(),
            )
            s.add(row)
            s.flush()
            return _claim(row, template_row)

    def _claim_rows(self, s: Session, claim_id: str) -> tuple[ClaimRow, ClaimTemplateRow]:
        row = s.get(ClaimRow, claim_id)
        if row is None:
            raise NotFound("claim", claim_id, f"claim {claim_id!r} does not exist")
        template = s.get(ClaimTemplateRow, row.template_id)
        assert template is not None  # the foreign key
        return row, template

    def get_claim(self, claim_id: str, *, with_uses: bool = True) -> Claim:
        with self._tx() as s:
            row, template = self._claim_rows(s, claim_id)
            uses: list[ClaimUse] = []
            if with_uses:
                use_rows = s.scalars(
                    sa.select(ClaimUseRow)
                    .where(ClaimUseRow.claim_id == claim_id)
                    .order_by(ClaimUseRow.id.desc())
                    .limit(MAX_USES_SHOWN)
                )
                uses = [_use(u) for u in reversed(list(use_rows))]
            return _claim(row, template, uses)

    def claim_template(self, claim_id: str) -> tuple[Claim, ClaimTemplate]:
        with self._tx() as s:
            row, template = self._claim_rows(s, claim_id)
            return _claim(row, template), _template(template)

    def list_claims(self) -> list[Claim]:
        with self._tx() as s:
            rows = s.execute(
                sa.select(ClaimRow, ClaimTemplateRow)
                .join(ClaimTemplateRow, ClaimTemplateRow.id == ClaimRow.template_id)
                .order_by(ClaimRow.created_at, ClaimRow.id)
            ).all()
            return [_claim(r, t) for r, t in rows]

    def revoke_claim(self, claim_id: str) -> Claim:
        with self._tx() as s:
            row, template = self._claim_rows(s, claim_id)
            if row.revoked_at is None:
                row.revoked_at = now()
            return _claim(row, template)

    def reserve_use(self, claim_id: str, at: dt.datetime) -> int | None:
        """Count one use of the claim if it may still be used at ``at``: the template's next
        ``{seq}``, or None (revoked, expired or used up: ``get_claim`` tells which)."""
        with self._tx() as s:
            counted = s.execute(
                sa.update(ClaimRow)
                .where(
                    ClaimRow.id == claim_id,
                    ClaimRow.used < ClaimRow.max_uses,
                    ClaimRow.revoked_at.is_(None),
                    ClaimRow.expires_at > at,
                )
                .values(used=ClaimRow.used + 1)
                .execution_options(synchronize_session=False)
            )
            if counted.rowcount != 1:  # type: ignore[attr-defined]
                return None
            template_id = s.scalar(sa.select(ClaimRow.template_id).where(ClaimRow.id == claim_id))
            s.execute(
                sa.update(ClaimTemplateRow)
                .where(ClaimTemplateRow.id == template_id)
                .values(next_seq=ClaimTemplateRow.next_seq + 1)
                .execution_options(synchronize_session=False)
            )
            seq = s.scalar(
                sa.select(ClaimTemplateRow.next_seq).where(ClaimTemplateRow.id == template_id)
            )
            return int(seq or 1) - 1

    def release_use(self, claim_id: str) -> None:
        with self._tx() as s:
            s.execute(
                sa.update(ClaimRow)
                .where(ClaimRow.id == claim_id, ClaimRow.used > 0)
                .values(used=ClaimRow.used - 1)
                .execution_options(synchronize_session=False)
            )

    def provisioned_name(self, claim_id: str, serial: str) -> str | None:
        """The name this claim registered for ``serial`` earlier, if it did."""
        with self._tx() as s:
            return s.scalar(
                sa.select(ClaimUseRow.name)
                .where(
                    ClaimUseRow.claim_id == claim_id,
                    ClaimUseRow.serial == serial,
                    ClaimUseRow.outcome == "ok",
                )
                .order_by(ClaimUseRow.id.desc())
                .limit(1)
            )

    def record_use(self, claim_id: str, use: ClaimUse) -> None:
        with self._tx() as s:
            s.add(
                ClaimUseRow(
                    claim_id=claim_id,
                    at=use.at,
                    serial=use.serial,
                    outcome=use.outcome,
                    reason=use.reason,
                    name=use.name,
                    fingerprint=use.fingerprint,
                    peer=use.peer,
                )
            )

    # ---- device CAs and registered certificates --------------------------------------

    @staticmethod
    def _device_ca(row: DeviceCARow, template: ClaimTemplateRow) -> DeviceCA:
        return DeviceCA(
            fingerprint=row.fingerprint,
            subject=row.subject,
            template=template.name,
            group=template.group_pattern,
            cert_pem=row.cert_pem,
            created_at=utc(row.created_at),
            revoked_at=utc_or_none(row.revoked_at),
        )

    def add_device_ca(self, fingerprint: str, subject: str, pem: str, template: str) -> DeviceCA:
        with self._tx() as s:
            template_row = self._template_row(s, template)
            if s.get(DeviceCARow, fingerprint) is not None:
                raise Conflict(f"device CA {fingerprint[:16]}… is already registered")
            row = DeviceCARow(
                fingerprint=fingerprint,
                subject=subject,
                cert_pem=pem,
                template_id=template_row.id,
                created_at=now(),
                revoked_at=None,
            )
            s.add(row)
            s.flush()
            return self._device_ca(row, template_row)

    def list_device_cas(self, *, live_only: bool = False) -> list[DeviceCA]:
        with self._tx() as s:
            query = sa.select(DeviceCARow, ClaimTemplateRow).join(
                ClaimTemplateRow, ClaimTemplateRow.id == DeviceCARow.template_id
            )
            if live_only:
                query = query.where(DeviceCARow.revoked_at.is_(None))
            rows = s.execute(query.order_by(DeviceCARow.created_at)).all()
            return [self._device_ca(r, t) for r, t in rows]

    def revoke_device_ca(self, fingerprint: str) -> DeviceCA:
        with self._tx() as s:
            row = s.get(DeviceCARow, fingerprint)
            if row is None:
                raise NotFound("device CA", fingerprint)
            if row.revoked_at is None:
                row.revoked_at = now()
            template = s.get(ClaimTemplateRow, row.template_id)
            assert template is not None
            return self._device_ca(row, template)

    def external_certificates_of_group(self, group: str) -> list[tuple[str, str, str]]:
        """``(pem, fingerprint, thing)`` of the unrevoked registered device certificates of
        ``group``'s things."""
        with self._tx() as s:
            group_row = self._group(s, group)
            rows = s.execute(
                sa.select(CertificateRow.pem, CertificateRow.fingerprint, CertificateRow.owner)
                .join(
                    ExternalCertificateRow,
                    ExternalCertificateRow.fingerprint == CertificateRow.fingerprint,
                )
                .join(ThingRow, ThingRow.name == CertificateRow.owner)
                .join(GroupThingRow, GroupThingRow.thing_id == ThingRow.id)
                .where(
                    GroupThingRow.group_id == group_row.id,
                    CertificateRow.revoked_at.is_(None),
                )
                .order_by(CertificateRow.fingerprint)
            )
            return [(pem, fingerprint, owner) for pem, fingerprint, owner in rows]

    def external_certificates(self) -> list[str]:
        """PEMs of every unrevoked registered device certificate (the device server's trust)."""
        with self._tx() as s:
            return list(
                s.scalars(
                    sa.select(CertificateRow.pem)
                    .join(
                        ExternalCertificateRow,
                        ExternalCertificateRow.fingerprint == CertificateRow.fingerprint,
                    )
                    .where(CertificateRow.revoked_at.is_(None))
                )
            )
