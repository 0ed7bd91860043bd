"""Deployments: the group's snapshot, the signed document, status events."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hedgerow.cloud import domain
from hedgerow.cloud.domain import (
    Deployment,
    DeploymentEvent,
    DeploymentStatus,
    FunctionSettings,
    FunctionVersion,
    Subscription,
)
from hedgerow.cloud.errors import Conflict, NotFound
from hedgerow.cloud.storage.base import (
    MAX_PAGE,
    Snapshot,
    now,
    utc,
)
from hedgerow.cloud.storage.functions import FunctionStore
from hedgerow.cloud.storage.models import (
    CoreRow,
    DeploymentEventRow,
    DeploymentRow,
    FunctionRow,
    FunctionVersionRow,
    GroupRow,
    GroupThingRow,
    ReleaseRow,
    ThingRow,
)
from hedgerow.cloud.storage.subscriptions import SubscriptionStore

log = logging.getLogger(__name__)
#: Statuses a deployment can still leave (a newer one supersedes it, its deadline fails it).
UNFINISHED = (DeploymentStatus.PENDING.value, DeploymentStatus.IN_PROGRESS.value)


class DeploymentStore(FunctionStore, SubscriptionStore):
    def _snapshot(self, s: Session, group_row: GroupRow, *, empty: bool) -> Snapshot:
        core = s.scalar(sa.select(CoreRow.name).where(CoreRow.group_id == group_row.id))
        if core is None:
            raise Conflict(
                f"group {group_row.name!r} has no core: create one with `hedgerow cloud core create`"
            )
        things = s.scalars(
            sa.select(ThingRow.name)
            .join(GroupThingRow, GroupThingRow.thing_id == ThingRow.id)
            .where(GroupThingRow.group_id == group_row.id)
            .order_by(ThingRow.name)
        ).all()
        return Snapshot(
            group=self._group_entity(s, group_row),
            core=core,
            things=list(things),
            functions=[] if empty else self._functions(s, group_row),
            subscriptions=[] if empty else self._subscriptions(s, group_row),
            connectors=[]
            if empty
            else list((group_row.settings or {}).get("connectors", {}).values()),
        )

    def create_deployment(
        self,
        group: str,
        kind: str,
        build: Callable[[Snapshot], tuple[str, str, str]],
        *,
        document_of: str | None = None,
        deadline_s: float | None = None,
        supersede: bool = True,
    ) -> Deployment:
        """Freeze the group and store the deployment ``build(snapshot) -> (id, document, signature)``.

        With ``document_of`` the snapshot is that earlier deployment's (a redeployment).
        Unfinished after ``deadline_s`` it is failed (``fail_overdue``); with ``supersede``
        the group's unfinished deployments become ``Superseded``: a stuck one never
        blocks this one.
        """
        with self._tx() as s:
            group_row = self._group(s, group)
            snapshot = self._proposed(s, group_row, kind, document_of)
            deployment_id, document, signature = build(snapshot)
            at = now()
            if supersede:
                self._supersede(s, group_row.id, deployment_id, at)
            row = DeploymentRow(
                id=deployment_id,
                group_id=group_row.id,
                core=snapshot.core,
                kind=kind,
                document=document,
                signature=signature,
                status=DeploymentStatus.PENDING.value,
                detail="",
                created_at=at,
                updated_at=at,
                restores=document_of,
                deadline_at=at + dt.timedelta(seconds=deadline_s) if deadline_s else None,
            )
            s.add(row)
            s.flush()
            s.add(
                DeploymentEventRow(
                    deployment_id=deployment_id, status=row.status, detail="created", at=at
                )
            )
            s.flush()
            return self._deployment_entity(s, row, group)

    @staticmethod
    def _revert_core_version(
        s: Session, row: DeploymentRow, status: DeploymentStatus
    ) -> domain.CoreVersionRevert | None:
        """After a failed update, the group's ``core_version`` back to what its core runs
        (``domain.core_version_after_failure`` decides), in the status report's transaction:
        whoever reads the failed status reads the group's version put back."""
        if status not in domain.FAILED_UPDATE_STATUSES:
            return None
        group = s.get(GroupRow, row.group_id)
        assert group is not None
        newest = s.scalar(
            sa.select(DeploymentRow.id)
            .where(DeploymentRow.group_id == row.group_id)
            .order_by(DeploymentRow.created_at.desc(), DeploymentRow.id.desc())
            .limit(1)
        )
        last_good = s.scalar(
            sa.select(DeploymentRow.document)
            .where(
                DeploymentRow.group_id == row.group_id,
                DeploymentRow.status == DeploymentStatus.SUCCESS.value,
            )
            .order_by(DeploymentRow.created_at.desc())
            .limit(1)
        )
        last_version = _carried_version(last_good) if last_good is not None else None
        setting = (group.settings or {}).get("core_version")
        revert = domain.core_version_after_failure(
            group.name,
            status=status,
            carried=_carried_version(row.document),
            setting=setting if isinstance(setting, str) else None,
            last_good=last_version,
            last_good_stored=last_version is not None
            and s.get(ReleaseRow, last_version) is not None,
            newest=newest == row.id,
        )
        if revert is None:
            return None
        settings = {k: v for k, v in (group.settings or {}).items() if k != "core_version"}
        if revert.restored is not None:
            settings["core_version"] = revert.restored
        group.settings = settings
        log.warning(
            "deployment.core_version_reverted group=%s deployment=%s failed=%s restored=%s",
            group.name,
            row.id,
            revert.failed,
            revert.restored,
        )
        return revert

    @staticmethod
    def _supersede(s: Session, group_id: int, newer: str, at: dt.datetime) -> None:
        for old in s.scalars(
            sa.select(DeploymentRow).where(
                DeploymentRow.group_id == group_id, DeploymentRow.status.in_(UNFINISHED)
            )
        ):
            _conclude(s, old, DeploymentStatus.SUPERSEDED, f"superseded by {newer}", at)
            log.info("deployment.superseded id=%s by=%s", old.id, newer)

    def fail_overdue(self, at: dt.datetime) -> list[Deployment]:
        """Fail every unfinished deployment past its deadline (returns them)."""
        failed: list[Deployment] = []
        with self._tx() as s:
            rows = s.scalars(
                sa.select(DeploymentRow).where(
                    DeploymentRow.status.in_(UNFINISHED),
                    DeploymentRow.deadline_at.is_not(None),
                    DeploymentRow.deadline_at <= at,
                )
            ).all()
            for row in rows:
                limit = (utc(row.deadline_at) - utc(row.created_at)).total_seconds()  # type: ignore[arg-type]
                detail = f"deadline exceeded: not finished within {limit:g} s"
                _conclude(s, row, DeploymentStatus.FAILURE, detail, at)
                s.flush()
                group = s.scalar(sa.select(GroupRow.name).where(GroupRow.id == row.group_id))
                failed.append(self._deployment_entity(s, row, str(group), events=False))
        return failed

    def _proposed(
        self, s: Session, group_row: GroupRow, kind: str, document_of: str | None
    ) -> Snapshot:
        snapshot = self._snapshot(s, group_row, empty=kind == domain.DeploymentKind.RESET)
        if document_of is not None:
            old = s.get(DeploymentRow, document_of)
            if old is None or old.group_id != group_row.id:
                raise NotFound(
                    "deployment",
                    document_of,
                    f"deployment {document_of!r} does not exist in group {group_row.name!r}",
                )
            snapshot = _snapshot_from_document(snapshot, old.document)
        return snapshot

    def plan_inputs(
        self, group: str, kind: str, document_of: str | None
    ) -> tuple[Snapshot, str | None, str | None]:
        """What a deployment would freeze, and the deployment the core runs (its id and
        document): the one its last heartbeat names, else its latest successful one."""
        with self._tx() as s:
            group_row = self._group(s, group)
            snapshot = self._proposed(s, group_row, kind, document_of)
            core = s.scalar(sa.select(CoreRow).where(CoreRow.group_id == group_row.id))
            running = self._running(s, core) if core is not None else None
            if running is None:
                return snapshot, None, None
            return snapshot, running.id, running.document

    @staticmethod
    def _running(s: Session, core: CoreRow) -> DeploymentRow | None:
        """The deployment the core runs: the one its last heartbeat names, else its latest
        successful one."""
        beat = core.heartbeat
        named = beat.get("deployment") if isinstance(beat, dict) else None
        if isinstance(named, str):
            running = s.get(DeploymentRow, named)
            if running is not None:
                return running
        return s.scalar(
            sa.select(DeploymentRow)
            .where(
                DeploymentRow.core == core.name,
                DeploymentRow.status == DeploymentStatus.SUCCESS.value,
            )
            .order_by(DeploymentRow.created_at.desc(), DeploymentRow.id.desc())
            .limit(1)
        )

    def _deployment_entity(
        self, s: Session, row: DeploymentRow, group: str, *, events: bool = True
    ) -> Deployment:
        event_list: list[DeploymentEvent] = []
        if events:
            event_list = [
                DeploymentEvent(e.status, e.detail, utc(e.at))
                for e in s.scalars(
                    sa.select(DeploymentEventRow)
                    .where(DeploymentEventRow.deployment_id == row.id)
                    .order_by(DeploymentEventRow.id)
                )
            ]
        return Deployment(
            id=row.id,
            group=group,
            core=row.core,
            kind=row.kind,
            created_at=utc(row.created_at),
            status=row.status,
            detail=row.detail,
            updated_at=utc(row.updated_at),
            events=event_list,
            restores=row.restores,
        )

    def get_deployment(self, deployment_id: str) -> Deployment:
        with self._tx() as s:
            row = s.get(DeploymentRow, deployment_id)
            if row is None:
                raise NotFound("deployment", deployment_id)
            group = s.scalar(sa.select(GroupRow.name).where(GroupRow.id == row.group_id))
            return self._deployment_entity(s, row, str(group))

    def deployment_document(self, deployment_id: str) -> tuple[str, str, str]:
        """(core, document, signature)."""
        with self._tx() as s:
            row = s.get(DeploymentRow, deployment_id)
            if row is None:
                raise NotFound("deployment", deployment_id)
            return row.core, row.document, row.signature

    def comparison_documents(
        self, deployment_id: str
    ) -> tuple[str, tuple[str, str] | None, tuple[str, str] | None]:
        """A deployment's document, and (id, document) of the one before it for the same
        core and of the one the core runs (its heartbeat's, else its latest successful)."""
        with self._tx() as s:
            row = s.get(DeploymentRow, deployment_id)
            if row is None:
                raise NotFound("deployment", deployment_id)
            before = s.scalar(
                sa.select(DeploymentRow)
                .where(
                    DeploymentRow.core == row.core,
                    DeploymentRow.id != row.id,
                    sa.or_(
                        DeploymentRow.created_at < row.created_at,
                        sa.and_(
                            DeploymentRow.created_at == row.created_at, DeploymentRow.id < row.id
                        ),
                    ),
                )
                .order_by(DeploymentRow.created_at.desc(), DeploymentRow.id.desc())
                .limit(1)
            )
            core = s.scalar(sa.select(CoreRow).where(CoreRow.name == row.core))
            running = self._running(s, core) if core is not None else None
            return (
                row.document,
                (before.id, before.document) if before is not None else None,
                (running.id, running.document) if running is not None else None,
            )

    def list_deployments(self, group: str, limit: int = 100) -> list[Deployment]:
        with self._tx() as s:
            group_row = self._group(s, group)
            rows = s.scalars(
                sa.select(DeploymentRow)
                .where(DeploymentRow.group_id == group_row.id)
                .order_by(DeploymentRow.created_at.desc(), DeploymentRow.id.desc())
                .limit(min(limit, MAX_PAGE))
            )
            return [self._deployment_entity(s, r, group, events=False) for r in rows]

    def latest_deployment(self, core: str) -> str | None:
        """The group's current deployment: its newest, offline exports not adopted left out."""
        with self._tx() as s:
            row = self._core(s, core)
            return s.scalar(
                sa.select(DeploymentRow.id)
                .where(
                    DeploymentRow.group_id == row.group_id,
                    DeploymentRow.core == core,
                    DeploymentRow.kind != domain.DeploymentKind.OFFLINE.value,
                )
                .order_by(DeploymentRow.created_at.desc(), DeploymentRow.id.desc())
                .limit(1)
            )

    def running_deployment(self, group: str) -> tuple[str, str | None, Deployment | None]:
        """(core, the deployment id its last heartbeat names, that deployment when this
        cloud made it for this group)."""
        with self._tx() as s:
            group_row = self._group(s, group)
            core = s.scalar(sa.select(CoreRow).where(CoreRow.group_id == group_row.id))
            if core is None:
                raise Conflict(f"group {group!r} has no core")
            beat = core.heartbeat if isinstance(core.heartbeat, dict) else {}
            named = beat.get("deployment")
            running = named if isinstance(named, str) else None
            row = s.get(DeploymentRow, running) if running else None
            if row is None or row.group_id != group_row.id:
                return core.name, running, None
            return core.name, running, self._deployment_entity(s, row, group, events=False)

    def drifting_cores(self) -> list[tuple[str, str, str, str | None, Deployment | None]]:
        """Every core whose heartbeat names a deployment other than its group's current one:
        (group, core, the named deployment, the group's current deployment, the named one
        when this cloud made it for that group), by group name; one transaction."""
        with self._tx() as s:
            reporting: dict[str, tuple[str, int, str]] = {}
            for core, group in s.execute(
                sa.select(CoreRow, GroupRow.name)
                .join(GroupRow, GroupRow.id == CoreRow.group_id)
                .order_by(GroupRow.name)
            ):
                beat = core.heartbeat if isinstance(core.heartbeat, dict) else {}
                named = beat.get("deployment")
                if isinstance(named, str):
                    reporting[core.name] = (group, core.group_id, named)
            if not reporting:
                return []
            newest = (
                sa.func.row_number()
                .over(
                    partition_by=DeploymentRow.core,
                    order_by=(DeploymentRow.created_at.desc(), DeploymentRow.id.desc()),
                )
                .label("newest")
            )
            ranked = (
                sa.select(DeploymentRow.core, DeploymentRow.id, DeploymentRow.group_id, newest)
                .join(
                    CoreRow,
                    sa.and_(
                        CoreRow.name == DeploymentRow.core,
                        CoreRow.group_id == DeploymentRow.group_id,
                    ),
                )
                .where(
                    DeploymentRow.core.in_(list(reporting)),
                    DeploymentRow.kind != domain.DeploymentKind.OFFLINE.value,
                )
                .subquery()
            )
            latest: dict[str, str] = {
                core: deployment_id
                for core, deployment_id in s.execute(
                    sa.select(ranked.c.core, ranked.c.id).where(ranked.c.newest == 1)
                )
            }
            found: list[tuple[str, str, str, str | None, Deployment | None]] = []
            for core_name, (group, group_id, named) in reporting.items():
                if named == latest.get(core_name):
                    continue
                row = s.get(DeploymentRow, named)
                known = (
                    self._deployment_entity(s, row, group, events=False)
                    if row is not None and row.group_id == group_id
                    else None
                )
                found.append((group, core_name, named, latest.get(core_name), known))
            return found

    def adopt_deployment(self, deployment_id: str) -> Deployment:
        """The offline deployment ``deployment_id`` becomes the group's current one."""
        with self._tx() as s:
            row = s.get(DeploymentRow, deployment_id)
            if row is None:
                raise NotFound("deployment", deployment_id)
            at = now()
            row.kind = domain.DeploymentKind.ADOPTED.value
            row.status = DeploymentStatus.SUCCESS.value
            row.detail = "adopted: the core runs it (applied offline)"
            row.updated_at = at
            s.add(
                DeploymentEventRow(deployment_id=row.id, status="Adopted", detail=row.detail, at=at)
            )
            s.flush()
            group = s.scalar(sa.select(GroupRow.name).where(GroupRow.id == row.group_id))
            return self._deployment_entity(s, row, str(group))

    def artifact_in_core_deployments(self, core: str, sha256: str) -> bool:
        with self._tx() as s:
            row = self._core(s, core)
            exists = s.scalar(
                sa.select(FunctionVersionRow.id)
                .join(FunctionRow, FunctionRow.id == FunctionVersionRow.function_id)
                .where(
                    FunctionRow.group_id == row.group_id,
                    FunctionVersionRow.artifact_sha256 == sha256,
                )
                .limit(1)
            )
            if exists is not None:
                return True
            documents = s.scalars(
                sa.select(DeploymentRow.document).where(DeploymentRow.group_id == row.group_id)
            )
            return any(sha256 in d for d in documents)

    def set_deployment_status(
        self, deployment_id: str, core: str, status: DeploymentStatus, detail: str
    ) -> Deployment:
        with self._tx() as s:
            row = s.get(DeploymentRow, deployment_id)
            if row is None or row.core != core:
                raise NotFound(
                    "deployment", deployment_id, f"deployment {deployment_id!r} is not {core!r}'s"
                )
            group = s.scalar(sa.select(GroupRow.name).where(GroupRow.id == row.group_id))
            seen = s.scalar(
                sa.select(DeploymentEventRow).where(
                    DeploymentEventRow.deployment_id == deployment_id,
                    DeploymentEventRow.status == status.value,
                )
            )
            if seen is not None:  # the same report again (several cloud processes, a resend)
                if status is DeploymentStatus.SUPERSEDED and detail and seen.detail != detail:
                    # the cloud said "superseded by X" when X was made; the core's report
                    # says what it cancelled and undid: that account replaces it
                    seen.detail = row.detail = detail
                    row.updated_at = now()
                    s.flush()
                return self._deployment_entity(s, row, str(group))
            at = now()
            if row.status != DeploymentStatus.SUPERSEDED.value:  # a late report: an event
                row.status = status.value
                row.detail = detail
                revert = self._revert_core_version(s, row, status)
                if revert is not None:
                    row.detail = f"{detail}; {revert.note()}" if detail else revert.note()
            row.updated_at = at
            s.add(
                DeploymentEventRow(
                    deployment_id=deployment_id, status=status.value, detail=detail, at=at
                )
            )
            s.flush()
            group = s.scalar(sa.select(GroupRow.name).where(GroupRow.id == row.group_id))
            return self._deployment_entity(s, row, str(group))


def _carried_version(document: str) -> str | None:
    """The release a deployment document carries (``core_version.version``), if any."""
    try:
        value = json.loads(document).get("core_version")
    except (ValueError, AttributeError):
        return None
    version = value.get("version") if isinstance(value, dict) else None
    return version if isinstance(version, str) else None


def _conclude(
    s: Session, row: DeploymentRow, status: DeploymentStatus, detail: str, at: dt.datetime
) -> None:
    """The cloud's own verdict on an unfinished deployment, with its event."""
    row.status = status.value
    row.detail = detail
    row.updated_at = at
    s.add(DeploymentEventRow(deployment_id=row.id, status=status.value, detail=detail, at=at))


def _snapshot_from_document(current: Snapshot, document: str) -> Snapshot:
    """The functions and subscriptions an earlier document froze (for a redeployment)."""
    data = json.loads(document)
    functions = [
        FunctionVersion(
            group=current.group.name,
            name=f["name"],
            version=f["version"],
            settings=FunctionSettings(
                **{k: f[k] for k in FunctionSettings.__dataclass_fields__ if k in f}
            ),
            artifact_sha256=f["artifact"]["sha256"],
            artifact_size=f["artifact"]["size"],
            created_at=now(),
        )
        for f in data.get("functions", [])
    ]
    subscriptions = [
        Subscription(0, current.group.name, sub["source"], sub["topic"], sub["target"])
        for sub in data.get("subscriptions", [])
    ]
    connectors = [dict(c) for c in data.get("connectors", [])]
    return Snapshot(
        current.group, current.core, current.things, functions, subscriptions, connectors
    )
