"""Deployments: build and sign the document, notify the core, record its status reports."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from hedgerow import pki
from hedgerow.cloud import deployments
from hedgerow.cloud.deployment_plan import DeploymentPlan, plan_deployment
from hedgerow.cloud.domain import Deployment, DeploymentKind
from hedgerow.cloud.errors import Conflict, NotFound
from hedgerow.cloud.pki_service import PKIService
from hedgerow.cloud.services.notify import Notifier, deployments_topic
from hedgerow.cloud.services.releases import as_core_release
from hedgerow.cloud.services.secrets import SecretService
from hedgerow.cloud.storage.base import Snapshot
from hedgerow.cloud.storage.deployments import DeploymentStore
from hedgerow.cloud.storage.releases import ReleaseStore
from hedgerow.contract.deployment import CoreRelease
from hedgerow.contract.heartbeat import Heartbeat

log = logging.getLogger(__name__)
#: Unfinished after this long, a deployment is failed (``[deployments] deadline_s``).
DEFAULT_DEADLINE_S = 300.0


@dataclass(frozen=True)
class Drift:
    """What the group's core runs against the group's current deployment."""

    group: str
    core: str
    running: str | None
    latest: str | None
    #: the running deployment as this cloud made it (None: unknown here, or none)
    running_deployment: Deployment | None

    @property
    def drifted(self) -> bool:
        return self.running is not None and self.running != self.latest

    def to_json(self) -> dict[str, object]:
        return {
            "group": self.group,
            "core": self.core,
            "running": self.running,
            "latest": self.latest,
            "drift": self.drifted,
            "running_kind": self.running_deployment.kind if self.running_deployment else None,
            "signed_here": self.running_deployment is not None,
        }


@dataclass(frozen=True)
class Exported:
    deployment: Deployment
    document: str
    signature: str
    artifacts: tuple[str, ...]


OFFLINE_KINDS = (DeploymentKind.OFFLINE.value, DeploymentKind.ADOPTED.value)


@dataclass(frozen=True)
class DeploymentContents:
    """A deployment's document, and what it changes against the deployment before it for
    the same core (``previous``) and against what the core runs (``running``); each plan's
    ``running`` is the id compared against (None: there is none)."""

    document: dict[str, Any]
    previous: DeploymentPlan | None
    running: DeploymentPlan | None


class DeploymentService:
    def __init__(
        self,
        store: DeploymentStore,
        pki_service: PKIService,
        notifier: Notifier,
        secrets: SecretService | None = None,
        deadline_s: float = DEFAULT_DEADLINE_S,
        releases: ReleaseStore | None = None,
    ) -> None:
        """``releases``: where a group's ``core_version`` is looked up (None: no updates
        of the core itself)."""
        self.store = store
        self.pki = pki_service
        self.notifier = notifier
        self.secrets = secrets
        self.deadline_s = deadline_s
        self.releases = releases

    async def _core_release(self, group: str, core_version: str | None) -> CoreRelease | None:
        """The release the group's cores should run: ``core_version`` becomes the group's
        setting first (it must be uploaded); None when the group names none."""
        if self.releases is None:
            return None
        if core_version is not None:
            await asyncio.to_thread(self.releases.set_core_version, group, core_version)
            log.info("deployment.core_version group=%s version=%s", group, core_version)
        release = await asyncio.to_thread(self.releases.core_version_of, group)
        return as_core_release(release) if release is not None else None

    def _build(
        self, snapshot: Snapshot, core_release: CoreRelease | None = None
    ) -> tuple[str, str, str]:
        deployment_id = deployments.new_deployment_id()
        declared = {f.name: f.settings.secrets for f in snapshot.functions if f.settings.secrets}
        if declared and self.secrets is None:
            raise Conflict("functions declare secrets but this cloud keeps no secrets")
        sealed = (
            self.secrets.document_entries(snapshot.group.name, snapshot.core, declared)
            if self.secrets is not None and declared
            else []
        )
        document = deployments.build_document(
            snapshot, deployment_id, pki.now(), sealed, core_release
        )
        return deployment_id, document, self.pki.sign(document)

    async def deploy(
        self,
        group: str,
        kind: DeploymentKind = DeploymentKind.NEW,
        deployment_id: str | None = None,
        deadline_s: float | None = None,
        core_version: str | None = None,
    ) -> Deployment:
        """A new deployment of ``group``; ``REDEPLOY`` repeats ``deployment_id`` (default: the
        latest), ``RESET`` deploys nothing (the core removes everything). Unfinished after
        ``deadline_s`` (default: the cloud's) it is failed; the group's unfinished
        deployments are superseded by it. Every kind carries the group's core version
        (``core_version`` sets it first)."""
        core_release = await self._core_release(group, core_version)
        of: str | None = None
        if kind is DeploymentKind.REDEPLOY:
            of = deployment_id
            if of is None:
                history = await asyncio.to_thread(self.store.list_deployments, group, 1)
                if not history:
                    raise Conflict(f"group {group!r} has no deployment to redeploy")
                of = history[0].id
        deployment = await asyncio.to_thread(
            functools.partial(
                self.store.create_deployment,
                group,
                kind.value,
                functools.partial(self._build, core_release=core_release),
                document_of=of,
                deadline_s=deadline_s or self.deadline_s,
            )
        )
        await self.notifier.publish(
            deployments_topic(deployment.core),
            deployments.notification(deployment.id),
            retain=True,
        )
        log.info(
            "deployment.created id=%s group=%s core=%s kind=%s",
            deployment.id,
            group,
            deployment.core,
            kind.value,
        )
        return deployment

    async def plan(
        self,
        group: str,
        kind: DeploymentKind = DeploymentKind.NEW,
        deployment_id: str | None = None,
    ) -> DeploymentPlan:
        """What ``deploy(group, kind, deployment_id)`` would change on the core, against the
        deployment it runs (nothing is stored or sent)."""
        of = deployment_id if kind is DeploymentKind.REDEPLOY else None
        if kind is DeploymentKind.REDEPLOY and of is None:
            history = await asyncio.to_thread(self.store.list_deployments, group, 1)
            if not history:
                raise Conflict(f"group {group!r} has no deployment to redeploy")
            of = history[0].id
        snapshot, _running_id, running = await asyncio.to_thread(
            self.store.plan_inputs, group, kind.value, of
        )
        core_release = await self._core_release_planned(group)
        proposed = json.loads(
            deployments.build_document(snapshot, "(planned)", pki.now(), (), core_release)
        )
        return plan_deployment(json.loads(running) if running else None, proposed)

    async def contents(self, deployment_id: str) -> DeploymentContents:
        """What a deployment holds (sealed secrets left out), and how it differs from the
        deployment before it and from the one its core runs."""
        text, before, running = await asyncio.to_thread(
            self.store.comparison_documents, deployment_id
        )
        document = json.loads(text)

        def against(other: tuple[str, str] | None) -> DeploymentPlan | None:
            if other is None:
                return None
            return replace(plan_deployment(json.loads(other[1]), document), running=other[0])

        for entry in document.get("secrets", ()):
            entry.pop("sealed", None)
        return DeploymentContents(document, against(before), against(running))

    async def _core_release_planned(self, group: str) -> CoreRelease | None:
        if self.releases is None:
            return None
        release = await asyncio.to_thread(self.releases.core_version_of, group)
        return as_core_release(release) if release is not None else None

    async def all(self, group: str, limit: int = 100) -> list[Deployment]:
        return await asyncio.to_thread(self.store.list_deployments, group, limit)

    async def get(self, deployment_id: str) -> Deployment:
        return await asyncio.to_thread(self.store.get_deployment, deployment_id)

    async def record_status(self, core: str, payload: bytes) -> Deployment:
        report = deployments.parse_status_report(payload)
        try:
            result = await asyncio.to_thread(
                self.store.set_deployment_status,
                report.deployment_id,
                core,
                report.status,
                report.detail,
            )
        except Conflict:  # another cloud process recorded the same report at the same moment
            return await self.get(report.deployment_id)
        log.info(
            "deployment.status id=%s core=%s status=%s detail=%s",
            report.deployment_id,
            core,
            report.status.value,
            report.detail,
        )
        return result

    async def redeploy_refused(self, core: str, heartbeat: Heartbeat) -> None:
        """The core refused deployments on its disk at start (they did not verify) and runs
        an older one: send it the latest deployment again. The notification names the same
        id as before; the core, not running it, fetches and verifies it afresh, replacing
        the tampered files."""
        latest = await asyncio.to_thread(self.store.latest_deployment, core)
        log.warning(
            "deployment.redeploy core=%s running=%s refused=%s latest=%s",
            core,
            heartbeat.deployment,
            ",".join(r["deployment_id"] for r in heartbeat.refused),
            latest,
        )
        if latest is None or latest == heartbeat.deployment:
            return
        if heartbeat.deployment and await self._newer_offline(core, heartbeat.deployment, latest):
            log.warning(
                "deployment.drift core=%s running=%s latest=%s action=%r",
                core,
                heartbeat.deployment,
                latest,
                "not redeployed over an offline deployment: adopt or replace it",
            )
            return
        await self.notifier.publish(
            deployments_topic(core), deployments.notification(latest), retain=True
        )

    async def _newer_offline(self, core: str, running: str, latest: str) -> bool:
        """Whether ``running`` is an offline deployment this cloud signed for ``core``,
        newer than the group's latest: the operator's choice, never overwritten here."""
        try:
            ran = await self.get(running)
            last = await self.get(latest)
        except NotFound:
            return False
        return ran.core == core and ran.kind in OFFLINE_KINDS and ran.created_at > last.created_at

    async def fail_overdue(self) -> list[Deployment]:
        """Fail every unfinished deployment past its deadline (the cloud's sweep)."""
        failed = await asyncio.to_thread(self.store.fail_overdue, pki.now())
        for d in failed:
            log.warning("deployment.deadline id=%s group=%s core=%s", d.id, d.group, d.core)
        return failed

    # ---- offline deployments --------------------------------------------------------

    async def export(self, group: str) -> Exported:
        """A signed deployment of ``group`` for ``hedgerow core deploy --file``: stored
        (so the cloud knows it when the core reports it), never sent, supersedes nothing."""
        deployment = await asyncio.to_thread(
            functools.partial(
                self.store.create_deployment,
                group,
                DeploymentKind.OFFLINE.value,
                self._build,
                supersede=False,
            )
        )
        _core, document, signature = await asyncio.to_thread(
            self.store.deployment_document, deployment.id
        )
        artifacts = tuple(
            dict.fromkeys(f["artifact"]["sha256"] for f in json.loads(document)["functions"])
        )
        log.info("deployment.exported id=%s group=%s", deployment.id, group)
        return Exported(deployment, document, signature, artifacts)

    async def drift(self, group: str) -> Drift:
        core, running, known = await asyncio.to_thread(self.store.running_deployment, group)
        latest = await self.latest_for_core(core)
        return Drift(group, core, running, latest, known)

    async def drifting(self) -> list[Drift]:
        """Every core of the fleet running something other than its group's current
        deployment (what ``drift`` says per group, in one read)."""
        found = await asyncio.to_thread(self.store.drifting_cores)
        return [Drift(*entry) for entry in found]

    async def adopt(self, group: str) -> Deployment:
        """The deployment the core runs (signed here, applied offline) becomes the group's
        current one; the core is told so it stays on it."""
        drift = await self.drift(group)
        if drift.running is None:
            raise Conflict(f"core {drift.core!r} has not reported a deployment yet")
        if drift.running_deployment is None:
            raise Conflict(
                f"core {drift.core!r} runs {drift.running!r}, which this cloud did not make "
                f"for group {group!r}: replace it (`hedgerow cloud deployment replace --group {group}`)"
            )
        if not drift.drifted:
            return drift.running_deployment
        adopted = await asyncio.to_thread(self.store.adopt_deployment, drift.running)
        await self.notifier.publish(
            deployments_topic(drift.core), deployments.notification(adopted.id), retain=True
        )
        log.info("deployment.adopted id=%s group=%s", adopted.id, group)
        return adopted

    async def replace(self, group: str) -> Deployment:
        """The group's current deployment again, over whatever the core runs."""
        drift = await self.drift(group)
        if drift.latest is None:
            return await self.deploy(group, DeploymentKind.RESET)
        return await self.deploy(group, DeploymentKind.REDEPLOY, drift.latest)

    async def latest_for_core(self, core: str) -> str | None:
        return await asyncio.to_thread(self.store.latest_deployment, core)

    async def document_for_core(self, core: str, deployment_id: str) -> dict[str, str]:
        owner, document, signature = await asyncio.to_thread(
            self.store.deployment_document, deployment_id
        )
        if owner != core:
            raise NotFound(
                "deployment",
                deployment_id,
                f"deployment {deployment_id!r} is not for core {core!r}",
            )
        return {"document": document, "signature": signature}
