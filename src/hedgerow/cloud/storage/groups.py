"""Groups and their CAs."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from hedgerow.cloud.domain import (
    Group,
)
from hedgerow.cloud.envelope import kek_id_of
from hedgerow.cloud.errors import Conflict
from hedgerow.cloud.storage.base import (
    GroupCA,
    Store,
    now,
    utc,
)
from hedgerow.cloud.storage.models import (
    CoreRow,
    DeploymentEventRow,
    DeploymentRow,
    FunctionRow,
    FunctionVersionRow,
    GroupCARow,
    GroupRow,
    GroupThingRow,
    SubscriptionRow,
)

log = logging.getLogger(__name__)


class GroupStore(Store):
    def create_group(
        self,
        name: str,
        description: str = "",
        settings: dict[str, Any] | None = None,
        ca_rotation_days: int | None = None,
        labels: dict[str, str] | None = None,
    ) -> Group:
        with self._tx() as s:
            if s.scalar(sa.select(GroupRow.id).where(GroupRow.name == name)) is not None:
                raise Conflict(f"group {name!r} already exists")
            row = GroupRow(
                name=name,
                description=description,
                settings=settings or {"open_broker": False},
                ca_rotation_days=ca_rotation_days,
                created_at=now(),
                # only when given: the column is left out of the INSERT otherwise (0006)
                **({"labels": labels} if labels else {}),
            )
            s.add(row)
            s.flush()
            return self._group_entity(s, row)

    def list_groups(
        self,
        labels: dict[str, str] | None = None,
        *,
        prefix: str = "",
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Group]:
        """Every group by name, or those carrying all of ``labels`` / named ``prefix``...;
        ``limit`` and ``offset`` page through them (None: all)."""
        with self._tx() as s:
            query = sa.select(GroupRow).order_by(GroupRow.name)
            if prefix:
                query = query.where(GroupRow.name.startswith(prefix, autoescape=True))
            if not labels:  # labels are JSON: matched below, then paged
                query = query.limit(limit).offset(max(offset, 0))
            rows = [
                r
                for r in s.scalars(query)
                if all((r.labels or {}).get(k) == v for k, v in (labels or {}).items())
            ]
            if labels:
                start = max(offset, 0)
                rows = rows[start : None if limit is None else start + limit]
            ids = [r.id for r in rows]
            cores = dict(
                s.execute(
                    sa.select(CoreRow.group_id, CoreRow.name).where(CoreRow.group_id.in_(ids))
                ).all()
            ) if ids else {}  # fmt: skip
            return [
                Group(
                    name=r.name,
                    description=r.description,
                    created_at=utc(r.created_at),
                    core=cores.get(r.id),
                    settings=dict(r.settings or {}),
                    ca_rotation_days=r.ca_rotation_days,
                    labels=dict(r.labels or {}),
                )
                for r in rows
            ]

    def get_group(self, name: str) -> Group:
        with self._tx() as s:
            return self._group_entity(s, self._group(s, name))

    def update_group(
        self,
        name: str,
        *,
        description: str | None = None,
        settings: dict[str, Any] | None = None,
        ca_rotation_days: int | None = None,
        labels: dict[str, str] | None = None,
    ) -> Group:
        """``labels`` are merged in; a label whose value is ``""`` is removed."""
        with self._tx() as s:
            row = self._group(s, name)
            if labels is not None:
                merged = {**(row.labels or {}), **labels}
                row.labels = {k: v for k, v in merged.items() if v}
            if description is not None:
                row.description = description
            if settings is not None:
                row.settings = {**(row.settings or {}), **settings}
            if ca_rotation_days is not None:
                row.ca_rotation_days = ca_rotation_days
            s.flush()
            return self._group_entity(s, row)

    def log_levels(self, group: str) -> dict[str, Any]:
        """The group's log levels set from the cloud: ``{"core": NAME | None, "functions":
        {function: NAME}}`` (both empty when none is set)."""
        with self._tx() as s:
            return _levels(self._group(s, group).log_levels)

    def update_log_levels(
        self, group: str, core: str | None, functions: dict[str, str | None], *, set_core: bool
    ) -> dict[str, Any]:
        """Merge in: ``core`` when ``set_core`` (None: the config file's again); a function
        whose level is None is removed. Returns the result."""
        with self._tx() as s:
            row = self._group(s, group)
            levels = _levels(row.log_levels)
            if set_core:
                levels["core"] = core
            merged = {**levels["functions"], **functions}
            levels["functions"] = {k: v for k, v in sorted(merged.items()) if v is not None}
            row.log_levels = levels
            return _levels(levels)

    def all_log_levels(self) -> dict[str, dict[str, Any]]:
        """Every group with log levels set: group name → levels."""
        with self._tx() as s:
            rows = s.execute(
                sa.select(GroupRow.name, GroupRow.log_levels).where(
                    GroupRow.log_levels.is_not(None)
                )
            ).all()
            return {name: _levels(levels) for name, levels in rows if levels}

    def delete_group(self, name: str) -> list[str]:
        """Delete a group and everything only it owns; returns the certificates it revoked."""
        with self._tx() as s:
            row = self._group(s, name)
            revoked: list[str] = []
            core = s.scalar(sa.select(CoreRow).where(CoreRow.group_id == row.id))
            if core is not None:
                revoked += self._revoke_owner(s, core.name, "core deleted with its group")
                s.delete(core)
            s.execute(sa.delete(GroupThingRow).where(GroupThingRow.group_id == row.id))
            function_ids = s.scalars(
                sa.select(FunctionRow.id).where(FunctionRow.group_id == row.id)
            ).all()
            if function_ids:
                s.execute(
                    sa.delete(FunctionVersionRow).where(
                        FunctionVersionRow.function_id.in_(function_ids)
                    )
                )
            s.execute(sa.delete(FunctionRow).where(FunctionRow.group_id == row.id))
            s.execute(sa.delete(SubscriptionRow).where(SubscriptionRow.group_id == row.id))
            deployment_ids = s.scalars(
                sa.select(DeploymentRow.id).where(DeploymentRow.group_id == row.id)
            ).all()
            if deployment_ids:
                s.execute(
                    sa.delete(DeploymentEventRow).where(
                        DeploymentEventRow.deployment_id.in_(deployment_ids)
                    )
                )
            s.execute(sa.delete(DeploymentRow).where(DeploymentRow.group_id == row.id))
            s.execute(sa.delete(GroupCARow).where(GroupCARow.group_id == row.id))
            s.delete(row)
            return revoked

    def group_cas(self, group: str) -> list[GroupCA]:
        """The group's CAs, newest first."""
        with self._tx() as s:
            row = self._group(s, group)
            rows = s.scalars(
                sa.select(GroupCARow)
                .where(GroupCARow.group_id == row.id)
                .order_by(GroupCARow.generation.desc())
            )
            return [
                GroupCA(
                    group,
                    r.generation,
                    r.fingerprint,
                    r.cert_pem,
                    r.key_pem,
                    utc(r.created_at),
                    utc(r.not_after),
                    r.key_sealed,
                )
                for r in rows
            ]

    def add_group_ca(self, ca: GroupCA) -> None:
        with self._tx() as s:
            row = self._group(s, ca.group)
            s.add(
                GroupCARow(
                    group_id=row.id,
                    generation=ca.generation,
                    fingerprint=ca.fingerprint,
                    cert_pem=ca.cert_pem,
                    key_pem=ca.key_pem,
                    key_sealed=ca.key_sealed,
                    kek_id=kek_id_of(ca.key_sealed) if ca.key_sealed else None,
                    created_at=ca.created_at,
                    not_after=ca.not_after,
                )
            )


def _levels(stored: dict[str, Any] | None) -> dict[str, Any]:
    stored = stored or {}
    return {"core": stored.get("core"), "functions": dict(stored.get("functions") or {})}
