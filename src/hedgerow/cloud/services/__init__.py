"""Use cases of the cloud, one module per resource, shared by the REST API, the device
server and the MQTT side.

Each service holds only what it needs (the repository, the PKI service, a ``Notifier``,
a ``RoutesChanged`` callback, the other services it calls) and is built complete by
``CloudServices.build`` at the composition root. Services run the repository in a worker
thread (one transaction per call) and then tell cores what changed (deployments,
revocations, group-CA rotations). They take validated, typed arguments: request bodies
are parsed at the HTTP edge (``hedgerow.cloud.api``).

The pure validation and entities are in ``hedgerow.cloud.domain``; nothing here knows HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hedgerow.cloud.artifacts import ArtifactCache
from hedgerow.cloud.discovery_cache import DiscoveryCache
from hedgerow.cloud.pki_service import PKIService
from hedgerow.cloud.services.alerts import AlertService
from hedgerow.cloud.services.certificates import CertificateService
from hedgerow.cloud.services.claims import ClaimService, CreatedClaim
from hedgerow.cloud.services.connectors import ConnectorService
from hedgerow.cloud.services.cores import (
    CoreService,
    CreatedCore,
    Presence,
    PublicEndpoints,
    presence_unknown,
)
from hedgerow.cloud.services.dashboards import DashboardService
from hedgerow.cloud.services.deployments import DEFAULT_DEADLINE_S, DeploymentService
from hedgerow.cloud.services.devices import DeviceService
from hedgerow.cloud.services.exports import ExportService
from hedgerow.cloud.services.fleet import FleetFunction, FleetService, FleetSubscription
from hedgerow.cloud.services.functions import ArtifactService, FunctionService
from hedgerow.cloud.services.groups import GroupService
from hedgerow.cloud.services.identities import IdentityService
from hedgerow.cloud.services.log_levels import LogLevelService
from hedgerow.cloud.services.logs import LogService
from hedgerow.cloud.services.membership import DeviceTrust, MembershipService, NoDeviceTrust
from hedgerow.cloud.services.notify import (
    CoreAdmitted,
    DiscoveryChanged,
    Notifier,
    NullNotifier,
    RoutesChanged,
    core_admitted_nowhere,
    discovery_unchanged,
    routes_unchanged,
)
from hedgerow.cloud.services.releases import ReleaseService
from hedgerow.cloud.services.rollouts import RolloutRequest, RolloutService
from hedgerow.cloud.services.secrets import SecretService
from hedgerow.cloud.services.shadows import ShadowChange, ShadowService
from hedgerow.cloud.services.subscriptions import SubscriptionService
from hedgerow.cloud.services.support_bundles import SupportBundleService
from hedgerow.cloud.services.telemetry import MessagesWritten, TelemetryService
from hedgerow.cloud.services.things import CreatedThing, ThingService
from hedgerow.cloud.storage.repository import Repository
from hedgerow.cloud.telemetry_export import ExportTarget

__all__ = [
    "AlertService",
    "LogService",
    "ArtifactService",
    "CertificateService",
    "ClaimService",
    "CreatedClaim",
    "DeviceTrust",
    "ConnectorService",
    "CloudServices",
    "CoreService",
    "CreatedCore",
    "CreatedThing",
    "DashboardService",
    "DeploymentService",
    "DeviceService",
    "ExportService",
    "FleetFunction",
    "FleetService",
    "FleetSubscription",
    "FunctionService",
    "GroupService",
    "IdentityService",
    "MembershipService",
    "MessagesWritten",
    "Notifier",
    "NullNotifier",
    "PublicEndpoints",
    "RolloutRequest",
    "RolloutService",
    "ReleaseService",
    "RoutesChanged",
    "SecretService",
    "ShadowChange",
    "ShadowService",
    "SubscriptionService",
    "SupportBundleService",
    "LogLevelService",
    "TelemetryService",
    "ThingService",
]


@dataclass(frozen=True)
class CloudServices:
    """Every service of one cloud process, built together."""

    repository: Repository
    pki: PKIService
    identities: IdentityService
    groups: GroupService
    cores: CoreService
    things: ThingService
    certificates: CertificateService
    artifacts: ArtifactService
    functions: FunctionService
    subscriptions: SubscriptionService
    connectors: ConnectorService
    deployments: DeploymentService
    membership: MembershipService
    fleet: FleetService
    devices: DeviceService
    telemetry: TelemetryService
    rollouts: RolloutService
    shadows: ShadowService
    support_bundles: SupportBundleService
    dashboards: DashboardService
    claims: ClaimService
    releases: ReleaseService
    #: logs from cores (stored by the log ingest worker through ``logs.store_batches``)
    logs: LogService
    #: alert rules, webhooks, history and the evaluation loop (run by the server)
    alerts: AlertService
    #: log levels set from the cloud per group, sent to its core without a deployment
    log_levels: LogLevelService
    #: telemetry export targets' status (the export runs as the server's job)
    exports: ExportService
    #: the secrets functions read (None: this cloud keeps none; deploying a function that
    #: declares one is refused)
    secrets: SecretService | None = None

    @classmethod
    def build(
        cls,
        repository: Repository,
        pki_service: PKIService,
        *,
        notifier: Notifier,
        endpoints: Callable[[], PublicEndpoints],
        artifact_cache: ArtifactCache | None = None,
        routes_changed: RoutesChanged = routes_unchanged,
        messages_written: MessagesWritten | None = None,
        identities: IdentityService | None = None,
        secrets: SecretService | None = None,
        presence: Presence = presence_unknown,
        deadline_s: float = DEFAULT_DEADLINE_S,
        device_trust: DeviceTrust | None = None,
        provisioning_hook: str = "",
        logs: LogService | None = None,
        export_targets: Sequence[ExportTarget] = (),
        discovery_cache: DiscoveryCache | None = None,
        discovery_changed: DiscoveryChanged | None = None,
        core_admitted: CoreAdmitted = core_admitted_nowhere,
    ) -> CloudServices:
        """All services wired to one another; nothing is set on them afterwards.

        ``discovery_cache``: discovery answers kept (None: none); ``discovery_changed``
        what a change of them calls (default: empty ``discovery_cache``)."""
        changed: DiscoveryChanged = discovery_unchanged
        if discovery_changed is not None:
            changed = discovery_changed
        elif discovery_cache is not None:
            changed = discovery_cache.invalidate
        groups = GroupService(repository, pki_service, notifier, routes_changed, changed)
        membership = MembershipService(repository, notifier, changed)
        log_levels = LogLevelService(repository, notifier)
        cores = CoreService(
            repository,
            pki_service,
            notifier,
            endpoints,
            membership,
            presence,
            log_levels,
            changed,
            core_admitted,
        )
        certificates = CertificateService(repository, notifier, changed)
        artifacts = ArtifactService(repository, artifact_cache)
        functions = FunctionService(repository)
        subscriptions = SubscriptionService(repository, routes_changed)
        deployments = DeploymentService(
            repository, pki_service, notifier, secrets, deadline_s, releases=repository
        )
        fleet = FleetService(
            repository, artifacts, functions, subscriptions, deployments, routes_changed
        )
        trust = device_trust or NoDeviceTrust()
        things = ThingService(repository, pki_service, certificates, membership, trust)
        return cls(
            repository=repository,
            pki=pki_service,
            identities=identities or IdentityService(repository, repository),
            groups=groups,
            cores=cores,
            things=things,
            membership=membership,
            certificates=certificates,
            artifacts=artifacts,
            functions=functions,
            subscriptions=subscriptions,
            connectors=ConnectorService(repository),
            deployments=deployments,
            fleet=fleet,
            rollouts=RolloutService(repository, groups, deployments, fleet),
            devices=DeviceService(
                repository, pki_service, groups, cores, artifacts, discovery_cache
            ),
            telemetry=TelemetryService(repository, notifier, messages_written or MessagesWritten()),
            shadows=ShadowService(repository, notifier),
            support_bundles=SupportBundleService(repository, notifier, presence),
            dashboards=DashboardService(repository),
            releases=ReleaseService(repository, repository, pki_service),
            logs=logs or LogService(repository),
            alerts=AlertService(repository, presence),
            log_levels=log_levels,
            exports=ExportService(repository, export_targets),
            secrets=secrets,
            claims=ClaimService(
                repository,
                pki_service,
                groups,
                cores,
                things,
                certificates,
                membership,
                trust,
                provisioning_hook,
            ),
        )
