"""Functions and their versions."""

from __future__ import annotations

import logging
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hedgerow.cloud.domain import (
    FunctionSettings,
    FunctionVersion,
)
from hedgerow.cloud.errors import Conflict, InvalidInput, NotFound
from hedgerow.cloud.storage.base import (
    Store,
    now,
    utc,
)
from hedgerow.cloud.storage.models import (
    ArtifactRow,
    FunctionRow,
    FunctionVersionRow,
    GroupRow,
    SubscriptionRow,
)

log = logging.getLogger(__name__)


class FunctionStore(Store):
    @staticmethod
    def _version_entity(group: str, name: str, r: FunctionVersionRow) -> FunctionVersion:
        return FunctionVersion(
            group=group,
            name=name,
            version=r.version,
            settings=FunctionSettings(**r.settings),
            artifact_sha256=r.artifact_sha256,
            artifact_size=r.artifact_size,
            created_at=utc(r.created_at),
        )

    def _put_function(
        self,
        s: Session,
        group_row: GroupRow,
        name: str,
        settings: FunctionSettings,
        sha256: str,
        *,
        create: bool,
    ) -> FunctionVersion:
        size = s.scalar(sa.select(ArtifactRow.size).where(ArtifactRow.sha256 == sha256))
        if size is None:
            raise InvalidInput(
                f"artifact {sha256} was never uploaded: upload the code first", field="artifact"
            )
        row = s.scalar(
            sa.select(FunctionRow).where(
                FunctionRow.group_id == group_row.id, FunctionRow.name == name
            )
        )
        if row is None and not create:
            raise NotFound(
                "function", name, f"function {name!r} does not exist in group {group_row.name!r}"
            )
        if row is not None and create:
            raise Conflict(f"function {name!r} already exists in group {group_row.name!r}")
        if row is None:
            row = FunctionRow(group_id=group_row.id, name=name, latest_version=1, created_at=now())
            s.add(row)
            s.flush()
            version = 1
        else:
            version = row.latest_version + 1
            row.latest_version = version
        version_row = FunctionVersionRow(
            function_id=row.id,
            version=version,
            settings=settings.to_json(),
            artifact_sha256=sha256,
            artifact_size=int(size),
            created_at=now(),
        )
        s.add(version_row)
        s.flush()
        return self._version_entity(group_row.name, name, version_row)

    def create_function(
        self, group: str, name: str, settings: FunctionSettings, sha256: str
    ) -> FunctionVersion:
        with self._tx() as s:
            return self._put_function(s, self._group(s, group), name, settings, sha256, create=True)

    def update_function(
        self,
        group: str,
        name: str,
        update: Callable[[FunctionVersion], tuple[FunctionSettings, str]],
    ) -> FunctionVersion:
        """A new version from the latest one: ``update(latest) -> (settings, sha256)``."""
        with self._tx() as s:
            group_row = self._group(s, group)
            latest = self._latest_version(s, group_row, self._function(s, group_row, name))
            settings, sha256 = update(latest)
            return self._put_function(s, group_row, name, settings, sha256, create=False)

    def _latest_version(self, s: Session, group_row: GroupRow, row: FunctionRow) -> FunctionVersion:
        version_row = s.scalar(
            sa.select(FunctionVersionRow).where(
                FunctionVersionRow.function_id == row.id,
                FunctionVersionRow.version == row.latest_version,
            )
        )
        assert version_row is not None
        return self._version_entity(group_row.name, row.name, version_row)

    def get_function(self, group: str, name: str, version: int | None = None) -> FunctionVersion:
        with self._tx() as s:
            group_row = self._group(s, group)
            row = self._function(s, group_row, name)
            if version is None:
                return self._latest_version(s, group_row, row)
            version_row = s.scalar(
                sa.select(FunctionVersionRow).where(
                    FunctionVersionRow.function_id == row.id, FunctionVersionRow.version == version
                )
            )
            if version_row is None:
                raise NotFound("function version", f"{name}:{version}")
            return self._version_entity(group, name, version_row)

    def list_function_versions(self, group: str, name: str) -> list[FunctionVersion]:
        with self._tx() as s:
            group_row = self._group(s, group)
            row = self._function(s, group_row, name)
            rows = s.scalars(
                sa.select(FunctionVersionRow)
                .where(FunctionVersionRow.function_id == row.id)
                .order_by(FunctionVersionRow.version)
            )
            return [self._version_entity(group, name, r) for r in rows]

    def _functions(self, s: Session, group_row: GroupRow) -> list[FunctionVersion]:
        query = (
            sa.select(FunctionRow.name, FunctionVersionRow)
            .join(FunctionVersionRow, FunctionVersionRow.function_id == FunctionRow.id)
            .where(
                FunctionRow.group_id == group_row.id,
                FunctionVersionRow.version == FunctionRow.latest_version,
            )
            .order_by(FunctionRow.name)
        )
        return [self._version_entity(group_row.name, name, r) for name, r in s.execute(query)]

    def list_functions(self, group: str) -> list[FunctionVersion]:
        with self._tx() as s:
            return self._functions(s, self._group(s, group))

    def delete_function(self, group: str, name: str) -> None:
        with self._tx() as s:
            group_row = self._group(s, group)
            row = self._function(s, group_row, name)
            ref = f"function:{name}"
            used = s.execute(
                sa.select(
                    SubscriptionRow.id,
                    SubscriptionRow.source,
                    SubscriptionRow.topic,
                    SubscriptionRow.target,
                )
                .where(
                    SubscriptionRow.group_id == group_row.id,
                    sa.or_(SubscriptionRow.source == ref, SubscriptionRow.target == ref),
                )
                .order_by(SubscriptionRow.id)
            ).all()
            if used:
                named = "; ".join(f"{u.id}: {u.source} {u.topic} -> {u.target}" for u in used)
                raise Conflict(
                    f"function {name!r} is used by subscriptions of group {group!r} ({named}):"
                    f" remove them first (hedgerow cloud subscription remove --group {group} ID)"
                )
            s.execute(sa.delete(FunctionVersionRow).where(FunctionVersionRow.function_id == row.id))
            s.delete(row)
