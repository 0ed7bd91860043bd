"""Use cases of the cloud: one async façade the REST API and the device server share.

``CloudServices`` holds the repository, the PKI service and a ``Notifier`` (the MQTT
side: embedded broker or external broker). Every method validates its input, runs the
repository in a worker thread (one transaction per call) and then tells cores what
changed (deployments, revocations, group-CA rotations).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from hedgerow import pki
from hedgerow.cloud import bundle, deployments, discovery, domain, membership
from hedgerow.cloud.artifacts import ArtifactCache
from hedgerow.cloud.domain import (
    Certificate,
    CertificateKind,
    Core,
    Deployment,
    DeploymentKind,
    FunctionSettings,
    FunctionVersion,
    Group,
    Message,
    Subscription,
    Thing,
)
from hedgerow.cloud.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from hedgerow.cloud.pki_service import PKIService, record_of
from hedgerow.cloud.storage.repository import Repository, Snapshot
from hedgerow.contract.errors import ContractError
from hedgerow.contract.heartbeat import Heartbeat
from hedgerow.contract.topics import CoreLeaf, core_topic

log = logging.getLogger(__name__)
T = TypeVar("T")


class Notifier(Protocol):
    """How the cloud reaches cores over MQTT."""

    async def publish(self, topic: str, payload: bytes, *, retain: bool) -> None: ...

    async def disconnect(self, identity: str, reason: str) -> None: ...


class NullNotifier:
    """Records what would have been sent (no MQTT endpoint: tests, `serve --no-mqtt`)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []

    async def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        self.sent.append((topic, payload, retain))

    async def disconnect(self, identity: str, reason: str) -> None:
        self.sent.append((f"disconnect:{identity}", reason.encode(), False))


@dataclass(frozen=True)
class PublicEndpoints:
    """Where cores reach the cloud (written into bundles)."""

    https: str
    mqtt: str


@dataclass(frozen=True)
class CreatedThing:
    thing: Thing
    certificate_pem: str
    private_key_pem: str | None
    root_ca_pem: str


@dataclass(frozen=True)
class CreatedCore:
    core: Core
    bundle: bytes


@dataclass(frozen=True)
class FleetFunction:
    name: str
    settings: FunctionSettings
    artifact_sha256: str


class CloudServices:
    def __init__(
        self,
        repository: Repository,
        pki_service: PKIService,
        notifier: Notifier,
        endpoints: PublicEndpoints,
    ) -> None:
        self.repository = repository
        self.pki = pki_service
        self.notifier = notifier
        self.endpoints = endpoints
        #: Set whenever telemetry was written by this process (live views wake on it).
        self.messages_written = asyncio.Event()
        #: Content-addressed copies of artifacts on local disk (None: database only).
        self.artifacts: ArtifactCache | None = None
        #: Called after subscriptions change (the MQTT endpoint reloads its routes).
        self.on_routes_changed: Callable[[], Awaitable[None]] | None = None

    async def _routes_changed(self) -> None:
        if self.on_routes_changed is not None:
            await self.on_routes_changed()

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # ---- groups ------------------------------------------------------------------------

    async def create_group(self, body: Mapping[str, Any]) -> Group:
        name = domain.validate_name(body.get("name"), "group name")
        description = domain.validate_description(body.get("description"))
        rotation = body.get("ca_rotation_days")
        if rotation is not None:
            rotation = domain.validate_rotation_days(rotation)
        settings = _settings(body.get("settings"))
        group = await self._run(
            self.repository.create_group,
            name,
            description,
            {"open_broker": False, **settings},
            rotation,
        )
        log.info("group.created name=%s", name)
        return group

    async def list_groups(self) -> list[Group]:
        return await self._run(self.repository.list_groups)

    async def get_group(self, name: str) -> Group:
        return await self._run(self.repository.get_group, name)

    async def update_group(self, name: str, body: Mapping[str, Any]) -> Group:
        _only(body, {"description", "settings", "ca_rotation_days"})
        description = (
            domain.validate_description(body["description"]) if "description" in body else None
        )
        rotation = (
            domain.validate_rotation_days(body["ca_rotation_days"])
            if "ca_rotation_days" in body
            else None
        )
        settings = _settings(body["settings"]) if "settings" in body else None
        group = await self._run(
            self.repository.update_group,
            name,
            description=description,
            settings=settings,
            ca_rotation_days=rotation,
        )
        self.pki.forget(name)
        return group

    async def delete_group(self, name: str) -> None:
        group = await self.get_group(name)
        revoked = await self._run(self.repository.delete_group, name)
        await self._routes_changed()
        if group.core and revoked:
            await self.notifier.disconnect(group.core, "core deleted")
        log.info("group.deleted name=%s", name)

    async def group_cas(self, name: str) -> list[dict[str, Any]]:
        group = await self.get_group(name)
        cas = await self._run(self.pki.group_cas, name, group.ca_rotation_days)
        await self._announce_rotations()
        return [_ca_json(c) for c in cas]

    async def rotate_group_ca(self, name: str) -> list[dict[str, Any]]:
        group = await self.get_group(name)
        cas = await self._run(self.pki.rotate, name, group.ca_rotation_days)
        await self._announce_rotations()
        return [_ca_json(c) for c in cas]

    async def rotate_due_group_cas(self) -> None:
        """Make a new CA for every group whose current one is due (and tell their cores)."""
        for group in await self.list_groups():
            await self._run(self.pki.group_cas, group.name, group.ca_rotation_days)
        await self._announce_rotations()

    async def _announce_rotations(self) -> None:
        """Tell the cores of the groups this process rotated (on demand, due or lazily)."""
        for name in self.pki.take_rotated():
            await self.announce_group_cas(name)

    async def announce_group_cas(self, name: str) -> None:
        """Publish the group's CAs (newest first, retained) to its core.

        A core whose server certificate is not signed by the newest CA renews it; a core
        that misses this (offline, or the publish failed) catches up when it polls
        ``GET /core/v1/group-cas``, so a failed publish is logged, not raised.
        """
        try:
            group = await self.get_group(name)
        except NotFound:
            return
        if not group.core:
            return
        cas = await self._run(self.pki.group_cas, name, group.ca_rotation_days)
        payload = json.dumps({"group_cas": [c.cert_pem for c in cas]}).encode()
        try:
            await self.notifier.publish(
                core_topic(group.core, CoreLeaf.GROUP_CAS), payload, retain=True
            )
        except Exception as exc:
            log.warning(
                "group.cas_announce_failed group=%s core=%s error=%r", name, group.core, exc
            )
            return
        log.info(
            "group.cas_announced group=%s core=%s generation=%s",
            name,
            group.core,
            cas[0].generation,
        )

    async def core_group_cas(self, core_name: str) -> dict[str, Any]:
        """``GET /core/v1/group-cas``: the CAs of the core's group, newest first."""
        core = await self.get_core(core_name)
        group = await self.get_group(core.group)
        cas = await self._run(self.pki.group_cas, core.group, group.ca_rotation_days)
        await self._announce_rotations()
        return {"group_cas": [c.cert_pem for c in cas]}

    # ---- cores -------------------------------------------------------------------------

    def _bundle(self, core: str, group: str, cert_pem: str, key_pem: str) -> bytes:
        return bundle.build_bundle(
            {
                bundle.CONFIG: bundle.core_config(
                    core, group, self.endpoints.https, self.endpoints.mqtt
                ).encode(),
                bundle.CORE_CERT: cert_pem.encode(),
                bundle.CORE_KEY: key_pem.encode(),
                bundle.ROOT_CA: self.pki.root_ca_pem.encode(),
                bundle.VERIFY_KEY: self.pki.verify_key_pem.encode(),
            }
        )

    async def create_core(self, body: Mapping[str, Any]) -> CreatedCore:
        name = domain.validate_name(body.get("name"), "core name")
        group = domain.validate_name(body.get("group"), "group name")
        identity = await self._run(self.pki.issue_identity, name, CertificateKind.CORE)
        core = await self._run(self.repository.create_core, name, group, lambda: identity.record)
        assert identity.private_key_pem is not None
        log.info("core.created name=%s group=%s", name, group)
        await membership.announce_membership(self, [group])
        return CreatedCore(
            core, self._bundle(name, group, identity.certificate_pem, identity.private_key_pem)
        )

    async def reissue_core_bundle(self, name: str) -> CreatedCore:
        """A new identity for the core (the old certificates are revoked) in a new bundle."""
        core = await self.get_core(name)
        identity = await self._run(self.pki.issue_identity, name, CertificateKind.CORE)
        await self._run(self.repository.revoke_owner, name, "identity reissued")
        await self._run(self.repository.add_core_certificate, name, identity.record)
        await self.notifier.disconnect(name, "identity reissued")
        assert identity.private_key_pem is not None
        return CreatedCore(
            core, self._bundle(name, core.group, identity.certificate_pem, identity.private_key_pem)
        )

    async def list_cores(self) -> list[Core]:
        return await self._run(self.repository.list_cores)

    async def get_core(self, name: str) -> Core:
        return await self._run(self.repository.get_core, name)

    async def delete_core(self, name: str) -> None:
        await self._run(self.repository.delete_core, name)
        await self.notifier.disconnect(name, "core deleted")
        log.info("core.deleted name=%s", name)

    async def set_connectivity(self, core: str, body: Mapping[str, Any]) -> Core:
        endpoints = domain.validate_endpoints(body.get("endpoints"))
        result = await self._run(self.repository.set_endpoints, core, endpoints)
        log.info("core.connectivity core=%s endpoints=%s", core, len(endpoints))
        return result

    async def record_heartbeat(self, core: str, payload: bytes) -> None:
        """Record that ``core`` is alive and, when ``payload`` is a heartbeat, its state
        (an empty payload only updates "last seen"; a malformed one is logged, not kept).
        A heartbeat naming deployments the core refused at start brings the latest again."""
        beat = None
        if payload:
            try:
                beat = Heartbeat.from_json(payload)
            except ContractError as exc:
                log.warning("core.heartbeat_refused core=%s error=%s", core, exc)
        data = beat.to_dict() if beat is not None else None
        await self._run(self.repository.record_heartbeat, core, data)
        if beat is not None and data is not None and beat.refused:
            await self._redeploy_refused(core, data)

    async def _redeploy_refused(self, core: str, heartbeat: Mapping[str, Any]) -> None:
        """The core refused deployments on its disk at start (they did not verify) and runs
        an older one: send it the latest deployment again. The notification names the same
        id as before; the core, not running it, fetches and verifies it afresh, replacing
        the tampered files."""
        latest = await self._run(self.repository.latest_deployment, core)
        refused = heartbeat.get("refused")
        ids = (
            [str(r.get("deployment_id")) for r in refused if isinstance(r, dict)]
            if isinstance(refused, list)
            else []
        )
        log.warning(
            "deployment.redeploy core=%s running=%s refused=%s latest=%s",
            core,
            heartbeat.get("deployment"),
            ",".join(ids),
            latest,
        )
        if latest is None or latest == heartbeat.get("deployment"):
            return
        await self.notifier.publish(
            core_topic(core, CoreLeaf.DEPLOYMENTS),
            deployments.notification(latest),
            retain=True,
        )

    # ---- things ------------------------------------------------------------------------

    async def create_thing(self, body: Mapping[str, Any]) -> CreatedThing:
        name = domain.validate_name(body.get("name"), "thing name")
        groups = body.get("groups", [])
        if isinstance(body.get("group"), str):
            groups = [body["group"], *groups]
        if not isinstance(groups, list):
            raise InvalidInput("groups must be a list of group names", field="groups")
        groups = [domain.validate_name(g, "group name") for g in groups]
        attributes = domain.validate_attributes(body.get("attributes"))
        csr = body.get("csr")
        if csr is not None and not isinstance(csr, str):
            raise InvalidInput("csr must be a PEM string", field="csr")
        identity = await self._run(self.pki.issue_identity, name, CertificateKind.THING, csr)
        thing = await self._run(
            self.repository.create_thing, name, groups, attributes, lambda: identity.record
        )
        log.info("thing.created name=%s groups=%s csr=%s", name, ",".join(groups), csr is not None)
        await membership.announce_membership(self, groups)
        return CreatedThing(
            thing, identity.certificate_pem, identity.private_key_pem, self.pki.root_ca_pem
        )

    async def new_thing_certificate(self, name: str, body: Mapping[str, Any]) -> CreatedThing:
        csr = body.get("csr")
        if csr is not None and not isinstance(csr, str):
            raise InvalidInput("csr must be a PEM string", field="csr")
        thing = await self.get_thing(name)
        identity = await self._run(self.pki.issue_identity, name, CertificateKind.THING, csr)
        await self._run(self.repository.add_thing_certificate, name, identity.record)
        return CreatedThing(
            thing, identity.certificate_pem, identity.private_key_pem, self.pki.root_ca_pem
        )

    async def list_things(
        self, *, group: str | None, prefix: str, limit: int, offset: int
    ) -> list[Thing]:
        return await self._run(
            self.repository.list_things, group=group, prefix=prefix, limit=limit, offset=offset
        )

    async def get_thing(self, name: str) -> Thing:
        return await self._run(self.repository.get_thing, name)

    async def update_thing(self, name: str, body: Mapping[str, Any]) -> Thing:
        _only(body, {"attributes"})
        return await self._run(
            self.repository.update_thing, name, domain.validate_attributes(body.get("attributes"))
        )

    async def delete_thing(self, name: str) -> None:
        revoked, groups = await self._run(self.repository.delete_thing, name)
        if revoked:
            await self._announce_revocations(groups)
        await membership.announce_membership(self, groups)
        log.info("thing.deleted name=%s revoked=%s", name, len(revoked))

    async def attach_thing(self, group: str, body: Mapping[str, Any]) -> Thing:
        thing = domain.validate_name(body.get("thing") or body.get("name"), "thing name")
        attached = await self._run(self.repository.attach_thing, group, thing)
        await membership.announce_membership(self, [group])
        return attached

    async def detach_thing(self, group: str, thing: str) -> None:
        await self._run(self.repository.detach_thing, group, thing)
        await membership.announce_membership(self, [group])

    async def revoke_thing(self, name: str) -> list[str]:
        revoked = await self._run(self.repository.revoke_owner, name, "revoked by an administrator")
        groups = await self._run(self.repository.groups_of_owner, name)
        await self._after_revocation(name, groups)
        log.info("certificates.revoked owner=%s count=%s", name, len(revoked))
        return revoked

    # ---- certificates ------------------------------------------------------------------

    async def list_certificates(self, owner: str | None, kind: str | None) -> list[Certificate]:
        return await self._run(self.repository.list_certificates, owner=owner, kind=kind)

    async def get_certificate(self, fingerprint: str) -> Certificate:
        return await self._run(self.repository.get_certificate, fingerprint)

    async def revoke_certificate(self, fingerprint: str) -> Certificate:
        cert = await self._run(
            self.repository.revoke_certificate, fingerprint, "revoked by an administrator"
        )
        groups = await self._run(self.repository.groups_of_owner, cert.owner)
        await self._after_revocation(cert.owner, groups)
        log.info("certificate.revoked fingerprint=%s owner=%s", fingerprint, cert.owner)
        return cert

    async def _after_revocation(self, owner: str, groups: Sequence[str]) -> None:
        await self._announce_revocations(groups)
        await self.notifier.disconnect(owner, "certificate revoked")

    async def _announce_revocations(self, groups: Sequence[str]) -> None:
        """Tell the cores of ``groups`` the revoked fingerprints (retained: no deployment needed)."""
        fingerprints = await self.revocations()
        payload = json.dumps({"fingerprints": fingerprints}).encode()
        for name in groups:
            try:
                group = await self.get_group(name)
            except NotFound:
                continue
            if group.core:
                await self.notifier.publish(
                    core_topic(group.core, CoreLeaf.REVOCATIONS), payload, retain=True
                )

    async def revocations(self) -> list[str]:
        return await self._run(self.repository.revoked_fingerprints)

    def _check_identity(self, fingerprint: str, kind: CertificateKind) -> str:
        return _verify_record(self.repository.find_certificate(fingerprint), kind)

    async def check_identity(self, fingerprint: str, kind: CertificateKind) -> str:
        """The name a verified client certificate (by its SHA-256 ``fingerprint``) speaks for,
        if it is ours, live and of ``kind``."""
        return await self._run(self._check_identity, fingerprint, kind)

    # ---- artifacts and functions -------------------------------------------------------

    async def put_artifact(self, data: bytes) -> tuple[str, int]:
        sha, size = await self._run(self.repository.put_artifact, data)
        if self.artifacts is not None:
            await self._run(self.artifacts.write, sha, data)
        log.info("artifact.stored sha256=%s size=%s", sha, size)
        return sha, size

    async def get_artifact(self, sha256: str) -> bytes:
        sha256 = domain.validate_sha256(sha256)
        if self.artifacts is not None:
            cached = await self._run(self.artifacts.read, sha256)
            if cached is not None:
                return cached
        data = await self._run(self.repository.get_artifact, sha256)
        if self.artifacts is not None:
            await self._run(self.artifacts.write, sha256, data)
        return data

    async def create_function(self, group: str, body: Mapping[str, Any]) -> FunctionVersion:
        name = domain.validate_function_name(body.get("name"))
        settings = domain.function_settings_from_json(body)
        sha = domain.validate_sha256(_artifact_sha(body))
        result = await self._run(self.repository.create_function, group, name, settings, sha)
        log.info("function.created group=%s name=%s", group, name)
        return result

    async def update_function(
        self, group: str, name: str, body: Mapping[str, Any]
    ) -> FunctionVersion:
        new_sha: str | None = None
        if "artifact" in body or "artifact_sha256" in body:
            new_sha = domain.validate_sha256(_artifact_sha(body))

        def update(latest: FunctionVersion) -> tuple[FunctionSettings, str]:
            return domain.function_settings_from_json(
                body, latest.settings
            ), new_sha or latest.artifact_sha256

        return await self._run(self.repository.update_function, group, name, update)

    async def list_functions(self, group: str) -> list[FunctionVersion]:
        return await self._run(self.repository.list_functions, group)

    async def get_function(
        self, group: str, name: str, version: int | None = None
    ) -> FunctionVersion:
        return await self._run(self.repository.get_function, group, name, version)

    async def function_versions(self, group: str, name: str) -> list[FunctionVersion]:
        return await self._run(self.repository.list_function_versions, group, name)

    async def delete_function(self, group: str, name: str) -> None:
        await self._run(self.repository.delete_function, group, name)

    # ---- subscriptions -----------------------------------------------------------------

    async def add_subscription(self, group: str, body: Mapping[str, Any]) -> Subscription:
        sub = await self._run(
            self.repository.add_subscription,
            group,
            body.get("source"),
            body.get("topic"),
            body.get("target"),
        )
        await self._routes_changed()
        log.info(
            "subscription.added group=%s source=%s topic=%s target=%s",
            group,
            sub.source,
            sub.topic,
            sub.target,
        )
        return sub

    async def list_subscriptions(self, group: str) -> list[Subscription]:
        return await self._run(self.repository.list_subscriptions, group)

    async def get_subscription(self, group: str, subscription_id: int) -> Subscription:
        return await self._run(self.repository.get_subscription, group, subscription_id)

    async def update_subscription(
        self, group: str, subscription_id: int, body: Mapping[str, Any]
    ) -> Subscription:
        _only(body, {"source", "topic", "target"})
        result = await self._run(
            self.repository.update_subscription, group, subscription_id, dict(body)
        )
        await self._routes_changed()
        return result

    async def delete_subscription(self, group: str, subscription_id: int) -> None:
        await self._run(self.repository.delete_subscription, group, subscription_id)
        await self._routes_changed()

    # ---- deployments -------------------------------------------------------------------

    def _build(self, snapshot: Snapshot) -> tuple[str, str, str]:
        deployment_id = deployments.new_deployment_id()
        document = deployments.build_document(snapshot, deployment_id, pki.now())
        return deployment_id, document, self.pki.sign(document)

    async def deploy(self, group: str, body: Mapping[str, Any] | None = None) -> Deployment:
        body = body or {}
        kind_text = body.get("kind", "new")
        kinds = {
            "new": DeploymentKind.NEW,
            "redeploy": DeploymentKind.REDEPLOY,
            "reset": DeploymentKind.RESET,
        }
        if kind_text not in kinds:
            raise InvalidInput(
                f"invalid deployment kind {kind_text!r}: use new, redeploy or reset", field="kind"
            )
        kind = kinds[kind_text]
        of = body.get("deployment_id")
        if kind is DeploymentKind.REDEPLOY:
            if of is None:
                history = await self._run(self.repository.list_deployments, group, 1)
                if not history:
                    raise Conflict(f"group {group!r} has no deployment to redeploy")
                of = history[0].id
            if not isinstance(of, str):
                raise InvalidInput("deployment_id must be a string", field="deployment_id")
        else:
            of = None
        deployment = await self._run(
            self.repository.create_deployment, group, kind.value, self._build, document_of=of
        )
        await self.notifier.publish(
            core_topic(deployment.core, CoreLeaf.DEPLOYMENTS),
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

    async def list_deployments(self, group: str, limit: int = 100) -> list[Deployment]:
        return await self._run(self.repository.list_deployments, group, limit)

    async def get_deployment(self, deployment_id: str) -> Deployment:
        return await self._run(self.repository.get_deployment, deployment_id)

    async def record_status(self, core: str, payload: bytes) -> Deployment:
        report = deployments.parse_status_report(payload)
        try:
            result = await self._run(
                self.repository.set_deployment_status,
                report.deployment_id,
                core,
                report.status,
                report.detail,
            )
        except Conflict:  # another cloud process recorded the same report at the same moment
            return await self.get_deployment(report.deployment_id)
        log.info(
            "deployment.status id=%s core=%s status=%s detail=%s",
            report.deployment_id,
            core,
            report.status.value,
            report.detail,
        )
        return result

    async def fleet_apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        groups = body.get("groups")
        if not isinstance(groups, list) or not groups:
            raise InvalidInput("groups must be a non-empty list of group names", field="groups")
        groups = [domain.validate_name(g, "group name") for g in dict.fromkeys(groups)]
        functions: list[FleetFunction] = []
        template = body.get("from_group")
        subs_in = body.get("subscriptions", [])
        funcs_in = body.get("functions", [])
        if template is not None:
            template = domain.validate_name(template, "group name")
            functions = [
                FleetFunction(f.name, f.settings, f.artifact_sha256)
                for f in await self.list_functions(template)
            ]
            subscriptions = [
                (s.source, s.topic, s.target) for s in await self.list_subscriptions(template)
            ]
        else:
            if not isinstance(funcs_in, list) or not isinstance(subs_in, list):
                raise InvalidInput("functions and subscriptions must be lists")
            for item in funcs_in:
                if not isinstance(item, dict):
                    raise InvalidInput("each function must be an object", field="functions")
                functions.append(
                    FleetFunction(
                        domain.validate_function_name(item.get("name")),
                        domain.function_settings_from_json(item),
                        domain.validate_sha256(_artifact_sha(item)),
                    )
                )
            subscriptions = []
            for item in subs_in:
                if not isinstance(item, dict):
                    raise InvalidInput("each subscription must be an object", field="subscriptions")
                subscriptions.append(
                    (str(item.get("source")), str(item.get("topic")), str(item.get("target")))
                )
        if len({f.name for f in functions}) != len(functions):
            raise InvalidInput("function names must be unique", field="functions")
        for f in functions:
            await self._run(self.repository.artifact_size, f.artifact_sha256)
        await self._run(
            self.repository.apply_to_groups,
            groups,
            [(f.name, f.settings, f.artifact_sha256) for f in functions],
            subscriptions,  # type: ignore[arg-type]
        )
        await self._routes_changed()
        result: dict[str, Any] = {
            "groups": groups,
            "functions": len(functions),
            "subscriptions": len(subscriptions),
        }
        if body.get("deploy"):
            result["deployments"] = [(await self.deploy(g)).to_json() for g in groups]
        log.info("fleet.applied groups=%s functions=%s", len(groups), len(functions))
        return result

    # ---- device side -------------------------------------------------------------------

    def _discover(self, thing: str) -> dict[str, Any]:
        groups = self.repository.discovery_groups(thing)
        return discovery.discovery_body(
            [
                (
                    group,
                    [c.cert_pem for c in self.pki.group_cas(group.group, group.ca_rotation_days)],
                )
                for group in groups
            ]
        )

    async def discover(self, thing: str) -> dict[str, Any]:
        body = await self._run(self._discover, thing)
        await self._announce_rotations()
        return body

    def _discover_as(self, cert: Any, thing: str) -> dict[str, Any]:
        record, groups = self.repository.identity_and_groups(pki.fingerprint(cert), thing)
        owner = _verify_record(record, CertificateKind.THING)
        if owner != thing:
            raise Unauthorized(f"the certificate belongs to {owner!r}, not to {thing!r}")
        if not groups:
            raise NotFound("group", thing, f"thing {thing!r} is in no group with a core")
        return discovery.discovery_body(
            [
                (
                    group,
                    [c.cert_pem for c in self.pki.group_cas(group.group, group.ca_rotation_days)],
                )
                for group in groups
            ]
        )

    async def discover_as(self, cert: Any, thing: str) -> dict[str, Any]:
        """Discovery for the thing ``cert`` belongs to (one trip to a worker thread)."""
        body = await self._run(self._discover_as, cert, thing)
        await self._announce_rotations()
        return body

    async def sign_core_certificate(
        self, core_name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        csr = body.get("csr")
        if not isinstance(csr, str):
            raise InvalidInput("csr must be a PEM string", field="csr")
        hosts = domain.validate_hosts(body.get("hosts"))
        core = await self.get_core(core_name)
        group = await self.get_group(core.group)
        all_hosts = list(dict.fromkeys([*hosts, *(e.host for e in core.endpoints)]))
        cert_pem, cas = await self._run(
            self.pki.sign_core_server, core_name, core.group, csr, all_hosts, group.ca_rotation_days
        )
        record = record_of(
            pki.cert_from_pem(cert_pem.encode()), CertificateKind.CORE_SERVER.value, core_name
        )
        await self._run(self.repository.add_core_certificate, core_name, record)
        log.info("core.server_certificate core=%s hosts=%s", core_name, ",".join(all_hosts))
        await self._announce_rotations()
        return {"certificate": cert_pem, "group_cas": cas}

    async def latest_deployment(self, core: str) -> str | None:
        return await self._run(self.repository.latest_deployment, core)

    async def deployment_document(self, core: str, deployment_id: str) -> dict[str, str]:
        owner, document, signature = await self._run(
            self.repository.deployment_document, deployment_id
        )
        if owner != core:
            raise NotFound(
                "deployment",
                deployment_id,
                f"deployment {deployment_id!r} is not for core {core!r}",
            )
        return {"document": document, "signature": signature}

    async def core_artifact(self, core: str, sha256: str) -> bytes:
        sha256 = domain.validate_sha256(sha256)
        if not await self._run(self.repository.artifact_in_core_deployments, core, sha256):
            raise NotFound(
                "artifact", sha256, f"artifact {sha256} is not part of core {core!r}'s group"
            )
        return await self.get_artifact(sha256)

    # ---- telemetry ---------------------------------------------------------------------

    async def publish_to_cores(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Publish a message from the cloud (cores subscribed by a ``cloud`` route get it)."""
        topic = body.get("topic")
        payload = body.get("payload", "")
        retain = body.get("retain", False)
        if (
            not isinstance(topic, str)
            or not topic
            or topic.startswith("$")
            or any(c in topic for c in "+#")
        ):
            raise InvalidInput(
                "topic must be a topic name without wildcards or a leading '$'", field="topic"
            )
        if not isinstance(payload, str):
            payload = json.dumps(payload)
        if not isinstance(retain, bool):
            raise InvalidInput("retain must be true or false", field="retain")
        await self.notifier.publish(topic, payload.encode(), retain=retain)
        log.info("cloud.published topic=%s bytes=%s", topic, len(payload))
        return {"topic": topic, "bytes": len(payload.encode())}

    async def query_messages(
        self,
        *,
        topic_filter: str | None,
        since: float | None,
        until: float | None,
        limit: int,
        after_id: int | None = None,
        up_to_id: int | None = None,
        newest_first: bool = True,
    ) -> list[Message]:
        if topic_filter is not None:
            domain.validate_topic_filter_text(topic_filter)
        return await self._run(
            self.repository.query_messages,
            topic_filter=topic_filter,
            since=since,
            until=until,
            limit=limit,
            after_id=after_id,
            up_to_id=up_to_id,
            newest_first=newest_first,
        )

    async def newest_message_id(self) -> int:
        return await self._run(self.repository.max_message_id)


def _verify_record(record: Certificate | None, kind: CertificateKind) -> str:
    """The owner of a live, registered certificate of ``kind``; ``Forbidden`` otherwise."""
    if record is None:
        raise Forbidden("certificate is not registered with this cloud")
    if record.revoked:
        raise Forbidden(f"certificate of {record.owner!r} is revoked")
    if record.not_after.timestamp() <= time.time():
        raise Forbidden(
            f"certificate of {record.owner!r} expired at {record.not_after.isoformat()}"
        )
    if record.kind != kind.value:
        raise Forbidden(f"a {record.kind} certificate cannot be used here (needs a {kind.value})")
    return record.owner


def _ca_json(ca: Any) -> dict[str, Any]:
    return {
        "generation": ca.generation,
        "fingerprint": ca.fingerprint,
        "certificate": ca.cert_pem,
        "created_at": ca.created_at.isoformat(),
        "not_after": ca.not_after.isoformat(),
    }


def _settings(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput("settings must be an object", field="settings")
    unknown = set(value) - {"open_broker"}
    if unknown:
        raise InvalidInput(
            f"unknown group settings: {', '.join(sorted(unknown))}", field="settings"
        )
    if "open_broker" in value and not isinstance(value["open_broker"], bool):
        raise InvalidInput("settings.open_broker must be true or false", field="settings")
    return dict(value)


def _only(body: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(body) - allowed
    if unknown:
        raise InvalidInput(
            f"unknown fields: {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}"
        )


def _artifact_sha(body: Mapping[str, Any]) -> object:
    artifact = body.get("artifact")
    if isinstance(artifact, dict):
        return artifact.get("sha256")
    if isinstance(artifact, str):
        return artifact
    return body.get("artifact_sha256")
