"""Staged rollouts: each one's whole state (``hedgerow.cloud.rollout_plan``) as JSON, and
what the rollout job observes of its targets in one read."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from hedgerow.cloud.domain import DeploymentStatus
from hedgerow.cloud.errors import NotFound
from hedgerow.cloud.storage.base import MAX_PAGE, Store, now
from hedgerow.cloud.storage.models import CoreRow, DeploymentRow, GroupRow, RolloutRow

ACTIVE = ("running", "paused", "rolling-back")


Stored = tuple[dict[str, Any], int]  # (the plan, its revision)


class RolloutStore(Store):
    def create_rollout(
        self, rollout_id: str, state: str, plan: dict[str, Any], owner: str, lease_s: float
    ) -> None:
        """A new rollout, leased to ``owner`` (the process that drives its first step):
        no other replica's rollout job drives it at the same time."""
        with self._tx() as s:
            at = now()
            s.add(
                RolloutRow(
                    id=rollout_id,
                    state=state,
                    plan=plan,
                    revision=0,
                    created_at=at,
                    updated_at=at,
                    lease_owner=owner,
                    lease_until=at + dt.timedelta(seconds=lease_s),
                )
            )

    def renew_rollout(self, rollout_id: str, owner: str, lease_s: float) -> None:
        """``owner`` still drives the rollout: its lease runs ``lease_s`` from now."""
        with self._tx() as s:
            s.execute(
                sa.update(RolloutRow)
                .where(RolloutRow.id == rollout_id, RolloutRow.lease_owner == owner)
                .values(lease_until=now() + dt.timedelta(seconds=lease_s))
            )

    def release_rollout(self, rollout_id: str, owner: str) -> None:
        """``owner`` no longer drives the rollout: the rollout job (on whichever replica
        holds it) claims it at its next pass."""
        with self._tx() as s:
            s.execute(
                sa.update(RolloutRow)
                .where(RolloutRow.id == rollout_id, RolloutRow.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )

    def save_rollout(
        self, rollout_id: str, state: str, plan: dict[str, Any], revision: int
    ) -> bool:
        """Store the rollout if nobody wrote it since ``revision`` was read (False: it
        changed meanwhile; nothing is written)."""
        with self._tx() as s:
            done = s.execute(
                sa.update(RolloutRow)
                .where(RolloutRow.id == rollout_id, RolloutRow.revision == revision)
                .values(state=state, plan=plan, revision=revision + 1, updated_at=now())
            )
            return bool(getattr(done, "rowcount", 0))

    def get_rollout(self, rollout_id: str) -> Stored:
        with self._tx() as s:
            row = s.get(RolloutRow, rollout_id)
            if row is None:
                raise NotFound("rollout", rollout_id)
            return dict(row.plan), row.revision

    def list_rollouts(self, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        with self._tx() as s:
            query = sa.select(RolloutRow).order_by(RolloutRow.created_at.desc())
            return [dict(r.plan) for r in s.scalars(query.limit(min(limit, MAX_PAGE)))]

    def claim_rollouts(self, owner: str, lease_s: float, *, take_all: bool = False) -> list[Stored]:
        """The active rollouts ``owner`` drives now: those it holds, and those whose lease
        ran out (taken over, e.g. from a cloud process that stopped); ``take_all``: every
        active one (the caller just took the rollout job's lock)."""
        at = now()
        claimable = sa.or_(
            RolloutRow.lease_owner.is_(None),
            RolloutRow.lease_owner == owner,
            RolloutRow.lease_until < at,
        )
        with self._tx() as s:
            s.execute(
                sa.update(RolloutRow)
                .where(RolloutRow.state.in_(ACTIVE), sa.true() if take_all else claimable)
                .values(lease_owner=owner, lease_until=at + dt.timedelta(seconds=lease_s))
            )
            rows = s.scalars(
                sa.select(RolloutRow)
                .where(RolloutRow.state.in_(ACTIVE), RolloutRow.lease_owner == owner)
                .order_by(RolloutRow.created_at)
            )
            return [(dict(r.plan), r.revision) for r in rows]

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
