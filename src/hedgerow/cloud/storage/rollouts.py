"""Staged rollouts: each one's whole state (``hedgerow.cloud.rollout_plan``) as JSON, and
what the rollout job observes of its targets in one read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from hedgerow.cloud.domain import DeploymentStatus
from hedgerow.cloud.errors import NotFound
from hedgerow.cloud.storage.base import MAX_PAGE, Store, now
from hedgerow.cloud.storage.models import CoreRow, DeploymentRow, GroupRow, RolloutRow

ACTIVE = ("running", "paused", "rolling-back")


class RolloutStore(Store):
    def create_rollout(self, rollout_id: str, state: str, plan: dict[str, Any]) -> None:
        with self._tx() as s:
            at = now()
            s.add(RolloutRow(id=rollout_id, state=state, plan=plan, created_at=at, updated_at=at))

    def save_rollout(self, rollout_id: str, state: str, plan: dict[str, Any]) -> None:
        with self._tx() as s:
            row = s.get(RolloutRow, rollout_id)
            if row is None:
                raise NotFound("rollout", rollout_id)
            row.state = state
            row.plan = plan
            row.updated_at = now()

    def get_rollout(self, rollout_id: str) -> dict[str, Any]:
        with self._tx() as s:
            row = s.get(RolloutRow, rollout_id)
            if row is None:
                raise NotFound("rollout", rollout_id)
            return dict(row.plan)

    def list_rollouts(self, limit: int = 100, *, active: bool = False) -> list[dict[str, Any]]:
        """Newest first (only the running, paused and rolling-back ones with ``active``)."""
        with self._tx() as s:
            query = sa.select(RolloutRow).order_by(RolloutRow.created_at.desc())
            if active:
                query = query.where(RolloutRow.state.in_(ACTIVE))
            return [dict(r.plan) for r in s.scalars(query.limit(min(limit, MAX_PAGE)))]

    def rollout_inputs(
        self, watched: Mapping[str, str]
    ) -> dict[str, tuple[str | None, str | None, str | None]]:
        """group → (the status of the deployment watched for it, the deployment its core's
        heartbeat names, the core's health)."""
        out: dict[str, tuple[str | None, str | None, str | None]] = {}
        if not watched:
            return out
        with self._tx() as s:
            statuses = dict(
                s.execute(
                    sa.select(DeploymentRow.id, DeploymentRow.status).where(
                        DeploymentRow.id.in_(list(watched.values()))
                    )
                ).all()
            )
            beats: dict[str, Any] = dict(
                s.execute(
                    sa.select(GroupRow.name, CoreRow.heartbeat)
                    .join(CoreRow, CoreRow.group_id == GroupRow.id)
                    .where(GroupRow.name.in_(list(watched)))
                ).all()
            )
        for group, deployment in watched.items():
            beat = beats.get(group)
            beat = beat if isinstance(beat, dict) else {}
            running = beat.get("deployment")
            health = beat.get("health")
            out[group] = (
                statuses.get(deployment),
                running if isinstance(running, str) else None,
                health if isinstance(health, str) else None,
            )
        return out

    def current_deployments(self, groups: list[str]) -> dict[str, str | None]:
        """group → the deployment its core runs (its heartbeat's, else the newest that
        succeeded; None: none): what a rollout restores."""
        out: dict[str, str | None] = {}
        with self._tx() as s:
            for group in groups:
                group_row = self._group(s, group)
                core = s.scalar(sa.select(CoreRow).where(CoreRow.group_id == group_row.id))
                beat = (
                    core.heartbeat if core is not None and isinstance(core.heartbeat, dict) else {}
                )
                named = beat.get("deployment")
                row = s.get(DeploymentRow, named) if isinstance(named, str) else None
                if row is not None and row.group_id == group_row.id:
                    out[group] = row.id
                    continue
                out[group] = s.scalar(
                    sa.select(DeploymentRow.id)
                    .where(
                        DeploymentRow.group_id == group_row.id,
                        DeploymentRow.status == DeploymentStatus.SUCCESS.value,
                    )
                    .order_by(DeploymentRow.created_at.desc(), DeploymentRow.id.desc())
                    .limit(1)
                )
        return out
