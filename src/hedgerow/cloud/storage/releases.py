"""Releases of Hedgerow cores can be updated to; a group names one in its settings
(``core_version``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hedgerow.cloud.domain import Release
from hedgerow.cloud.errors import Conflict, NotFound
from hedgerow.cloud.storage.base import Store, now, utc
from hedgerow.cloud.storage.models import GroupRow, ReleaseRow


class ReleaseStore(Store):
    def put_release(
        self, version: str, wheels: Sequence[Mapping[str, Any]], manifest: str, signature: str
    ) -> Release:
        with self._tx() as s:
            if s.get(ReleaseRow, version) is not None:
                raise Conflict(
                    f"release {version} exists: remove it first (hedgerow cloud release remove {version})"
                )
            row = ReleaseRow(
                version=version,
                wheels=[dict(w) for w in wheels],
                manifest=manifest,
                signature=signature,
                created_at=now(),
            )
            s.add(row)
            s.flush()
            return _release(row)

    def list_releases(self) -> list[Release]:
        with self._tx() as s:
            rows = s.scalars(sa.select(ReleaseRow).order_by(ReleaseRow.created_at.desc()))
            return [_release(row) for row in rows]

    def get_release(self, version: str) -> Release:
        with self._tx() as s:
            return _release(self._release(s, version))

    def remove_release(self, version: str) -> None:
        """Refused while a group's ``core_version`` names it."""
        with self._tx() as s:
            row = self._release(s, version)
            users = sorted(
                g.name
                for g in s.scalars(sa.select(GroupRow))
                if (g.settings or {}).get("core_version") == version
            )
            if users:
                raise Conflict(
                    f"release {version} is the core version of group(s) {', '.join(users)}: "
                    "deploy them with another --core-version first"
                )
            s.delete(row)

    def set_core_version(self, group: str, version: str) -> None:
        """Make ``version`` (an uploaded release) the group's core version."""
        with self._tx() as s:
            self._release(s, version)
            row = self._group(s, group)
            row.settings = {**(row.settings or {}), "core_version": version}

    def core_version_of(self, group: str) -> Release | None:
        """The release the group's settings name (None: cores keep what they run)."""
        with self._tx() as s:
            version = (self._group(s, group).settings or {}).get("core_version")
            return _release(self._release(s, str(version))) if version else None

    @staticmethod
    def _release(s: Session, version: str) -> ReleaseRow:
        row = s.get(ReleaseRow, version)
        if row is None:
            raise NotFound(
                "release",
                version,
                f"release {version!r} was never uploaded (hedgerow cloud release upload WHEEL)",
            )
        return row


def _release(row: ReleaseRow) -> Release:
    return Release(row.version, list(row.wheels), row.signature, utc(row.created_at))
