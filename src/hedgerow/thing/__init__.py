"""The device SDK: discovery, connection to the core, backoff, cache, offline queue, sensors.

``from hedgerow.thing import Thing, thing_config`` — see ``README.md`` in this package.
numpy is optional (the vibration simulator uses it when present).
"""

from hedgerow.backoff import Backoff, BackoffPolicy, Jitter

from .cache import CachedInfo, ConnInfoCache
from .core_link import Thing, ThingConfig, ThingStats, connect, thing_config
from .credentials import Credentials
from .discovery import Candidate, Core, DiscoveryInfo, Endpoint, Group, discover, parse_discovery
from .errors import (
    CoreConnectError,
    CredentialsError,
    DiscoveryError,
    DiscoveryRefused,
    DiscoveryTLSError,
    DiscoveryUnavailable,
    NotInGroupError,
    ProvisioningError,
    SensorError,
    ThingClosed,
    ThingError,
)
from .provision import ClaimedIdentity, load_identity, provision_thing
from .queue import DropPolicy, MemoryQueue, OfflineQueue, QueueCounters, QueuedMessage, SqliteQueue
from .readings import reading_document, reading_payload
from .sync import SyncThing

__all__ = [
    "Backoff",
    "BackoffPolicy",
    "CachedInfo",
    "ClaimedIdentity",
    "Candidate",
    "ConnInfoCache",
    "Core",
    "CoreConnectError",
    "Credentials",
    "CredentialsError",
    "DiscoveryError",
    "DiscoveryInfo",
    "DiscoveryRefused",
    "DiscoveryTLSError",
    "DiscoveryUnavailable",
    "DropPolicy",
    "Endpoint",
    "Group",
    "Jitter",
    "MemoryQueue",
    "NotInGroupError",
    "OfflineQueue",
    "ProvisioningError",
    "QueueCounters",
    "QueuedMessage",
    "SensorError",
    "SqliteQueue",
    "SyncThing",
    "Thing",
    "ThingClosed",
    "ThingConfig",
    "ThingError",
    "ThingStats",
    "connect",
    "discover",
    "load_identity",
    "parse_discovery",
    "provision_thing",
    "reading_document",
    "reading_payload",
    "thing_config",
]
