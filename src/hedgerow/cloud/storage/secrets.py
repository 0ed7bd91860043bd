"""A group's secrets and their sealed versions in the database.

Values arrive already sealed (``cloud.function_secrets.new_version``) and leave sealed:
nothing here sees a value in clear. Putting a new version moves the labels in one
transaction (``function_secrets.next_versions``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hedgerow.cloud import envelope
from hedgerow.cloud.errors import Conflict, NotFound
from hedgerow.cloud.function_secrets import SecretVersionRecord, next_versions, record_aad
from hedgerow.cloud.keyring import KeyringFile
from hedgerow.cloud.storage.models import CertificateRow, GroupRow, SecretRow, SecretVersionRow


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _record(row: SecretVersionRow) -> SecretVersionRecord:
    return SecretVersionRecord(
        row.version_id, tuple(row.stages), _utc(row.created_at), row.binary, row.sealed
    )


class SecretStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @staticmethod
    def _group_id(s: Session, group: str) -> int:
        group_id = s.scalar(sa.select(GroupRow.id).where(GroupRow.name == group))
        if group_id is None:
            raise NotFound("group", group)
        return group_id

    @classmethod
    def _secret(cls, s: Session, group: str, name: str) -> SecretRow:
        row = s.scalar(
            sa.select(SecretRow).where(
                SecretRow.group_id == cls._group_id(s, group), SecretRow.name == name
            )
        )
        if row is None:
            raise NotFound("secret", name, f"secret {name!r} does not exist in group {group!r}")
        return row

    @staticmethod
    def _versions(s: Session, secret_id: int) -> list[SecretVersionRow]:
        return list(
            s.scalars(
                sa.select(SecretVersionRow)
                .where(SecretVersionRow.secret_id == secret_id)
                .order_by(SecretVersionRow.id.desc())
            )
        )

    def create(self, group: str, name: str, first: SecretVersionRecord) -> None:
        try:
            with Session(self.engine) as s, s.begin():
                secret = SecretRow(group_id=self._group_id(s, group), name=name)
                s.add(secret)
                s.flush()
                s.add(self._row(secret.id, first))
        except IntegrityError as exc:
            raise Conflict(
                f"secret {name!r} already exists in group {group!r}: use secret update"
            ) from exc

    @staticmethod
    def _row(secret_id: int, v: SecretVersionRecord) -> SecretVersionRow:
        return SecretVersionRow(
            secret_id=secret_id,
            version_id=v.version_id,
            stages=list(v.stages),
            binary=v.binary,
            sealed=v.sealed,
            kek_id=envelope.kek_id_of(v.sealed),
            created_at=v.created_at,
        )

    def put_version(self, group: str, name: str, new: SecretVersionRecord) -> None:
        """``new`` becomes AWSCURRENT; the current one AWSPREVIOUS; others are dropped."""
        with Session(self.engine) as s, s.begin():
            secret = self._secret(s, group, name)
            rows = self._versions(s, secret.id)
            kept = {v.version_id: v for v in next_versions([_record(r) for r in rows], new)}
            for row in rows:
                if row.version_id in kept:
                    row.stages = list(kept[row.version_id].stages)
                else:
                    s.delete(row)
            s.add(self._row(secret.id, new))

    def versions(self, group: str, name: str) -> list[SecretVersionRecord]:
        with Session(self.engine) as s:
            return [_record(r) for r in self._versions(s, self._secret(s, group, name).id)]

    def names(self, group: str) -> list[str]:
        with Session(self.engine) as s:
            return list(
                s.scalars(
                    sa.select(SecretRow.name)
                    .where(SecretRow.group_id == self._group_id(s, group))
                    .order_by(SecretRow.name)
                )
            )

    def delete(self, group: str, name: str) -> None:
        with Session(self.engine) as s, s.begin():
            secret = self._secret(s, group, name)
            s.execute(sa.delete(SecretVersionRow).where(SecretVersionRow.secret_id == secret.id))
            s.execute(sa.delete(SecretRow).where(SecretRow.id == secret.id))

    def for_deployment(
        self, group: str, names: Iterable[str]
    ) -> dict[str, list[SecretVersionRecord]]:
        """The labelled versions of the named secrets (absent names are left out)."""
        wanted = sorted(set(names))
        if not wanted:
            return {}
        with Session(self.engine) as s:
            group_id = self._group_id(s, group)
            secrets = s.scalars(
                sa.select(SecretRow).where(
                    SecretRow.group_id == group_id, SecretRow.name.in_(wanted)
                )
            )
            return {
                secret.name: [_record(r) for r in self._versions(s, secret.id)]
                for secret in secrets
            }

    def core_certificate(self, core: str) -> str | None:
        """The PEM of the core's newest unrevoked identity certificate (its key seals)."""
        with Session(self.engine) as s:
            return s.scalar(
                sa.select(CertificateRow.pem)
                .where(
                    CertificateRow.owner == core,
                    CertificateRow.kind == "core",
                    CertificateRow.revoked_at.is_(None),
                )
                .order_by(CertificateRow.issued_at.desc())
                .limit(1)
            )

    def rewrap(self, keyring: KeyringFile, new: envelope.Kek) -> int:
        """Re-wrap every version not under ``new`` (``rotate-kek``); each row is replaced
        only if nobody changed it since it was read. Returns how many were re-wrapped."""
        query = (
            sa.select(SecretVersionRow.id, SecretVersionRow.version_id, SecretVersionRow.kek_id,
                      SecretVersionRow.sealed, SecretRow.name, GroupRow.name)
            .join(SecretRow, SecretRow.id == SecretVersionRow.secret_id)
            .join(GroupRow, GroupRow.id == SecretRow.group_id)
            .where(SecretVersionRow.kek_id != new.id)
        )  # fmt: skip
        with self.engine.connect() as connection:
            rows = list(connection.execute(query))
        done = 0
        for row_id, version_id, kek_id, sealed, name, group in rows:
            aad = record_aad(group, name, version_id)
            blob = envelope.rewrap(keyring.get(kek_id), new, sealed, aad)
            with self.engine.begin() as connection:
                result = connection.execute(
                    sa.update(SecretVersionRow)
                    .where(SecretVersionRow.id == row_id, SecretVersionRow.kek_id == kek_id)
                    .values(sealed=blob, kek_id=new.id)
                )
                done += result.rowcount
        return done
