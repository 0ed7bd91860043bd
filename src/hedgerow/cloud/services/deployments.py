"""Deployments: build and sign the document, notify the core, record its status reports."""

from __future__ import annotations

import asyncio
import functools
import json
import logging

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


class DeploymentService:
    def __init__(
        self,
        store: DeploymentStore,
        pki_service: PKIService,
        notifier: Notifier,
        secrets: SecretService | None = None,
        releases: ReleaseStore | None = None,
    ) -> None:
        """``releases``: where a group's ``core_version`` is looked up (None: no updates
        of the core itself)."""
        self.store = store
        self.pki = pki_service
        self.notifier = notifier
        self.secrets = secrets
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
        core_version: str | None = None,
    ) -> Deployment:
        """A new deployment of ``group``; ``REDEPLOY`` repeats ``deployment_id`` (default: the
        latest), ``RESET`` deploys nothing (the core removes everything). Every kind carries
        the group's core version (``core_version`` sets it first)."""
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
            self.store.create_deployment,
            group,
            kind.value,
            functools.partial(self._build, core_release=core_release),
            document_of=of,
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
        await self.notifier.publish(
            deployments_topic(core), deployments.notification(latest), retain=True
        )

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
