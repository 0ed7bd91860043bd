"""The group CA key columns as the sealing and ``rotate-kek`` jobs see them.

Separate from ``Repository`` on purpose: these calls read and rewrite secrets in bulk
(once at a migration, or at a KEK rotation), each row with a compare-and-set so that two
processes doing the same job never overwrite each other's work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hedgerow.cloud.storage.models import GroupCARow, GroupRow, SecretVersionRow

log = logging.getLogger(__name__)
_KeyQuery = sa.Select[int, str, int, str, str | None, bytes | None, str | None]


@dataclass(frozen=True)
class GroupCAKeyRow:
    row_id: int
    group: str
    generation: int
    fingerprint: str
    key_pem: str | None = field(repr=False)
    key_sealed: bytes | None = field(repr=False)
    kek_id: str | None


class SealedKeyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _select(self) -> _KeyQuery:
        return (
            sa.select(
                GroupCARow.id,
                GroupRow.name,
                GroupCARow.generation,
                GroupCARow.fingerprint,
                GroupCARow.key_pem,
                GroupCARow.key_sealed,
                GroupCARow.kek_id,
            )
            .join(GroupRow, GroupRow.id == GroupCARow.group_id)
            .order_by(GroupCARow.id)
        )

    def _rows(self, query: _KeyQuery) -> list[GroupCAKeyRow]:
        with self.engine.connect() as connection:
            return [
                GroupCAKeyRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6])
                for r in connection.execute(query)
            ]

    def clear_rows(self) -> list[GroupCAKeyRow]:
        """Rows whose key is still in clear (written before keys were sealed)."""
        return self._rows(self._select().where(GroupCARow.key_sealed.is_(None)))

    def rows_not_under(self, kek_id: str) -> list[GroupCAKeyRow]:
        """Sealed rows whose data key is wrapped by another KEK than ``kek_id``."""
        return self._rows(
            self._select().where(GroupCARow.key_sealed.is_not(None), GroupCARow.kek_id != kek_id)
        )

    def kek_ids_in_use(self) -> set[str]:
        """The KEKs sealed group CA keys and sealed function secrets need."""
        with self.engine.connect() as connection:
            return {
                str(kek_id)
                for kek_id in connection.scalars(
                    sa.select(GroupCARow.kek_id).where(GroupCARow.kek_id.is_not(None)).distinct()
                )
            } | {
                str(kek_id)
                for kek_id in connection.scalars(sa.select(SecretVersionRow.kek_id).distinct())
            }

    def sealed_count(self) -> int:
        """Sealed group CA keys and function secret versions (each needs the keyring)."""
        with self.engine.connect() as connection:
            keys = connection.scalar(
                sa.select(sa.func.count()).where(GroupCARow.key_sealed.is_not(None))
            )
            secrets = connection.scalar(sa.select(sa.func.count()).select_from(SecretVersionRow))
            return int(keys or 0) + int(secrets or 0)

    def store_sealed(self, row: GroupCAKeyRow, sealed: bytes, kek_id: str) -> bool:
        """Replace ``row``'s key by ``sealed`` if nobody changed it since it was read."""
        unchanged = (
            GroupCARow.key_sealed.is_(None)
            if row.key_sealed is None
            else GroupCARow.kek_id == row.kek_id
        )
        with self.engine.begin() as connection:
            result = connection.execute(
                sa.update(GroupCARow)
                .where(GroupCARow.id == row.row_id, unchanged)
                .values(key_sealed=sealed, kek_id=kek_id, key_pem=None)
            )
            return bool(result.rowcount)

    def compact(self) -> None:
        """Rewrite the storage so cleared keys do not linger in free pages or dead rows."""
        dialect = self.engine.dialect.name
        with self.engine.connect() as connection:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            if dialect == "sqlite":
                connection.exec_driver_sql("VACUUM")
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            elif dialect == "postgresql":
                connection.exec_driver_sql("VACUUM FULL group_cas")
        log.info("sealed_keys.compacted dialect=%s", dialect)
