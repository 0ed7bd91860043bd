"""The repository: every read and write of the registry, each call one transaction.

One store per resource (``groups``, ``cores``, ``things``, ``certificates``,
``artifacts``, ``functions``, ``subscriptions``, ``fleet``, ``deployments``,
``discovery_queries``, ``messages``, ``rollouts``, ``tokens``, ``shadows``, ``support_bundles``,
``dashboards``, ``claims``, ``releases``, ``exports``), all on ``base.Store`` (the engine, the
``discovery_queries``, ``messages``, ``tokens``, ``logs``, ``alerts``), all on ``base.Store`` (the engine, the
transaction, row lookups); ``Repository`` is all of them over one engine. Methods are
synchronous (SQLAlchemy sessions); the async layers call them through
``asyncio.to_thread``. They return the frozen entities of ``hedgerow.cloud.domain`` and
raise the cloud's errors (``NotFound``, ``Conflict``, ``InvalidInput``); a failed call
leaves nothing half-written.
"""

from __future__ import annotations

from hedgerow.cloud.storage.alerts import AlertStore
from hedgerow.cloud.storage.artifacts import ArtifactStore
from hedgerow.cloud.storage.base import (
    MAX_PAGE,
    QUERY_CHUNK,
    DiscoveryGroup,
    GroupCA,
    NewCertificate,
    Snapshot,
    Store,
    now,
    utc,
    utc_or_none,
)
from hedgerow.cloud.storage.certificates import CertificateStore
from hedgerow.cloud.storage.claims import ClaimStore
from hedgerow.cloud.storage.cores import CoreStore
from hedgerow.cloud.storage.dashboards import DashboardStore
from hedgerow.cloud.storage.deployments import DeploymentStore
from hedgerow.cloud.storage.discovery_queries import DiscoveryStore
from hedgerow.cloud.storage.exports import ExportStore
from hedgerow.cloud.storage.fleet import FleetStore
from hedgerow.cloud.storage.groups import GroupStore
from hedgerow.cloud.storage.logs import LogStore
from hedgerow.cloud.storage.messages import MessageStore
from hedgerow.cloud.storage.releases import ReleaseStore
from hedgerow.cloud.storage.rollouts import RolloutStore
from hedgerow.cloud.storage.shadows import ShadowStore
from hedgerow.cloud.storage.support_bundles import SupportBundleStore
from hedgerow.cloud.storage.things import ThingStore
from hedgerow.cloud.storage.tokens import TokenStore, token_digest

__all__ = [
    "MAX_PAGE",
    "QUERY_CHUNK",
    "DiscoveryGroup",
    "GroupCA",
    "NewCertificate",
    "Repository",
    "Snapshot",
    "Store",
    "now",
    "token_digest",
    "utc",
    "utc_or_none",
]


class Repository(
    GroupStore,
    CoreStore,
    ThingStore,
    CertificateStore,
    ArtifactStore,
    FleetStore,
    DeploymentStore,
    DiscoveryStore,
    MessageStore,
    RolloutStore,
    TokenStore,
    ShadowStore,
    SupportBundleStore,
    DashboardStore,
    ClaimStore,
    ReleaseStore,
    LogStore,
    AlertStore,
    ExportStore,
):
    """Every store over one engine (``Repository(engine)``)."""
