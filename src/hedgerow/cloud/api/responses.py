"""Response models: the envelopes the API answers with (entities are in ``to_json``
form), serialized by ``respond`` and described in the OpenAPI document."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse

from hedgerow.cloud.api.parsing import UNSET, Unset, described
from hedgerow.cloud.deployment_plan import DeploymentPlan
from hedgerow.cloud.domain import (
    Certificate,
    Core,
    Deployment,
    FunctionVersion,
    Group,
    Message,
    Release,
    Subscription,
    Thing,
)

Entity = dict[str, Any]


#: field names per response model class (``dataclasses.fields`` is slow to ask per object:
#: a rollout of 5,000 groups is 5,000 target views)
_FIELDS: dict[type, tuple[str, ...] | None] = {}


def _field_names(kind: type) -> tuple[str, ...] | None:
    try:
        return _FIELDS[kind]
    except KeyError:
        names = (
            tuple(f.name for f in dataclasses.fields(kind))
            if dataclasses.is_dataclass(kind)
            else None
        )
        _FIELDS[kind] = names
        return names


def plain(value: Any) -> Any:
    """A response model as JSON values (fields left ``UNSET`` are left out)."""
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, (str, int, float, bool, dict)) or value is None:
        return value
    names = _field_names(type(value))
    if names is None:
        return value
    out = {}
    for name in names:
        field = getattr(value, name)
        if field is not UNSET:
            out[name] = plain(field)
    return out


def respond(model: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    """``model`` (a response model) as the JSON response."""
    return JSONResponse(plain(model), status_code=status, headers=headers)


@dataclass(frozen=True)
class Health:
    status: str
    version: str


@dataclass(frozen=True)
class Deleted:
    deleted: str | int = described("the name (or id) of what was deleted")


@dataclass(frozen=True)
class Detached:
    detached: str = described("the thing's name")


@dataclass(frozen=True)
class Revoked:
    revoked: list[str] = described("the fingerprints revoked")


@dataclass(frozen=True)
class GroupCAs:
    """The group's CAs, current first."""

    items: list[Entity]


@dataclass(frozen=True)
class ThingCreated:
    """A thing with its certificate; ``private_key`` is null when the device sent a CSR."""

    thing: Entity
    certificate: str
    private_key: str | None
    root_ca: str


@dataclass(frozen=True)
class CoreCreated:
    """A core and its provisioning bundle (base64 of ``bundle_name``, a tar.gz)."""

    core: Entity
    bundle: str
    bundle_name: str


@dataclass(frozen=True)
class ArtifactStored:
    sha256: str
    size: int


@dataclass(frozen=True)
class Published:
    topic: str
    bytes: int


@dataclass(frozen=True)
class StreamTicket:
    """A single-use ticket: open ``url`` (the live stream) once, within ``expires_in`` s."""

    ticket: str
    purpose: str
    expires_in: float
    url: str


@dataclass(frozen=True)
class FleetApplied:
    groups: list[str]
    functions: int
    subscriptions: int
    deployments: list[Entity] | Unset = described("when deploy was asked", default=UNSET)


# ---- entities, as the API shows them -----------------------------------------------------


@dataclass(frozen=True)
class GroupView:
    name: str
    description: str
    created_at: str | None
    core: str | None
    settings: dict[str, Any]
    ca_rotation_days: int | None
    labels: dict[str, str]

    @classmethod
    def of(cls, group: Group) -> GroupView:
        return cls(**group.to_json())


@dataclass(frozen=True)
class EndpointView:
    host: str
    port: int
    metadata: str


@dataclass(frozen=True)
class CoreView:
    name: str
    group: str
    created_at: str | None
    endpoints: list[EndpointView]
    last_seen: str | None
    heartbeat: dict[str, Any] | None = described("the core's last heartbeat")
    connected: bool | None = described(
        "a live MQTT session at the cloud's endpoint now (null: unknown, external broker)"
    )

    @classmethod
    def of(cls, core: Core) -> CoreView:
        data = core.to_json()
        return cls(**{**data, "endpoints": [EndpointView(**e) for e in data["endpoints"]]})


@dataclass(frozen=True)
class ThingView:
    name: str
    groups: list[str]
    created_at: str | None
    attributes: dict[str, str]

    @classmethod
    def of(cls, thing: Thing) -> ThingView:
        return cls(**thing.to_json())


@dataclass(frozen=True)
class CertificateView:
    fingerprint: str
    kind: str
    owner: str
    serial: str
    issued_at: str | None
    not_after: str | None
    revoked_at: str | None
    status: str = described("active or revoked")
    pem: str | Unset = described("with GET of one certificate", default=UNSET)

    @classmethod
    def of(cls, certificate: Certificate, *, pem: bool = False) -> CertificateView:
        data = certificate.to_json()
        return cls(**data, pem=certificate.pem if pem else UNSET)


@dataclass(frozen=True)
class ArtifactView:
    sha256: str
    size: int


@dataclass(frozen=True)
class FunctionView:
    group: str
    name: str
    version: int
    handler: str
    runtime: str
    pinned: bool
    memory_mb: int
    timeout_s: float
    max_concurrency: int
    environment: dict[str, str]
    encoding: str
    run_as: str | None
    artifact: ArtifactView
    created_at: str | None
    #: only when declared (as in the deployment document)
    resources: list[dict[str, Any]] | Unset = UNSET
    groups: list[str] | Unset = UNSET
    secrets: list[str] | Unset = UNSET

    @classmethod
    def of(cls, function: FunctionVersion) -> FunctionView:
        data = function.to_json()
        return cls(**{**data, "artifact": ArtifactView(**data["artifact"])})


@dataclass(frozen=True)
class SubscriptionView:
    id: int
    group: str
    source: str
    topic: str
    target: str

    @classmethod
    def of(cls, subscription: Subscription) -> SubscriptionView:
        return cls(**subscription.to_json())


@dataclass(frozen=True)
class ConnectorView:
    group: str
    kind: str = described("modbus-tcp, modbus-rtu or opcua")
    name: str = described("the connector's name (connector:NAME in subscriptions)")
    version: int = described("the built-in connector's version")
    config: dict[str, Any] = described("the connector's settings (see the connectors README)")

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> ConnectorView:
        return cls(**entry)


@dataclass(frozen=True)
class DeploymentEventView:
    status: str
    detail: str
    at: str | None


@dataclass(frozen=True)
class DeploymentView:
    deployment_id: str
    group: str
    core: str
    kind: str
    created_at: str | None
    status: str
    detail: str
    updated_at: str | None
    events: list[DeploymentEventView]
    restores: str | None = described("the earlier deployment this redeployment repeats")

    @classmethod
    def of(cls, deployment: Deployment) -> DeploymentView:
        data = deployment.to_json()
        return cls(**{**data, "events": [DeploymentEventView(**e) for e in data["events"]]})


@dataclass(frozen=True)
class DeploymentPlanView:
    """What a deployment would change on the core, against the deployment it runs."""

    running: str | None = described("the deployment the core runs (null: none)")
    empty: bool = described("true when the core already runs this definition")
    lines: list[str] = described("the changes, one line each, as the CLI prints them")
    functions: list[dict[str, Any]] = described(
        "{name, before, after, fields}: versions running and deployed (null: none)"
    )
    routes_added: list[dict[str, str]] = described("subscriptions added")
    routes_removed: list[dict[str, str]] = described("subscriptions removed")
    things_added: list[str] = described("things added")
    things_removed: list[str] = described("things removed")
    settings: list[str] = described("settings that change")
    connectors: list[dict[str, str]] = described(
        "{name, change}: connectors started, stopped, replaced"
    )

    @classmethod
    def of(cls, plan: DeploymentPlan) -> DeploymentPlanView:
        return cls(**plan.to_dict())


@dataclass(frozen=True)
class DeploymentContentsView:
    """What a deployment holds, and its difference from the deployment before it and from
    what its core runs (each a plan: ``running`` names the deployment compared against)."""

    deployment_id: str
    document: dict[str, Any] = described("the deployment document (sealed secrets left out)")
    previous: DeploymentPlanView | None = described(
        "this deployment against the one before it for the same core (null: the first)"
    )
    running: DeploymentPlanView | None = described(
        "what deploying this would change on what the core runs (null: it runs nothing)"
    )


@dataclass(frozen=True)
class MessageView:
    id: int
    topic: str
    core: str
    ts: float
    time: str
    payload: str | Unset = described("the payload, when it is UTF-8", default=UNSET)
    payload_base64: str | Unset = described("the payload, when it is not UTF-8", default=UNSET)

    @classmethod
    def of(cls, message: Message) -> MessageView:
        return cls(**message.to_json())


# ---- lists of entities ------------------------------------------------------------------


@dataclass(frozen=True)
class GroupList:
    items: list[GroupView]
    count: int

    @classmethod
    def of(cls, values: Sequence[Any]) -> GroupList:
        return cls([GroupView.of(v) for v in values], len(values))


@dataclass(frozen=True)
class CoreList:
    items: list[CoreView]
    count: int

    @classmethod
    def of(cls, values: Sequence[Any]) -> CoreList:
        return cls([CoreView.of(v) for v in values], len(values))


@dataclass(frozen=True)
class ThingList:
    items: list[ThingView]
    count: int

    @classmethod
    def of(cls, values: Sequence[Any]) -> ThingList:
        return cls([ThingView.of(v) for v in values], len(values))


@dataclass(frozen=True)
class CertificateList:
    items: list[CertificateView]
    count: int

    @classmethod
    def of(cls, values: Sequence[Any]) -> CertificateList:
        return cls([CertificateView.of(v) for v in values], len(values))


@dataclass(frozen=True)
class FunctionList:
    items: list[FunctionView]
    count: int

    @classmethod
    def of(cls, values: Sequence[Any]) -> FunctionList:
        return cls([FunctionView.of(v) for v in values], len(values))


@dataclass(frozen=True)
class SubscriptionList:
    items: list[SubscriptionView]
    count: int

    @classmethod
    def of(cls, values: Sequence[Any]) -> SubscriptionList:
        return cls([SubscriptionView.of(v) for v in values], len(values))


@dataclass(frozen=True)
class ConnectorList:
    items: list[ConnectorView]
    count: int

    @classmethod
    def of(cls, values: Sequence[Mapping[str, Any]]) -> ConnectorList:
        return cls([ConnectorView.of(v) for v in values], len(values))


@dataclass(frozen=True)
class DeploymentList:
    items: list[DeploymentView]
    count: int

    @classmethod
    def of(cls, values: Sequence[Any]) -> DeploymentList:
        return cls([DeploymentView.of(v) for v in values], len(values))


@dataclass(frozen=True)
class ReleaseView:
    """A Hedgerow release cores can run (``core_version`` of a deployment)."""

    version: str
    wheels: list[Entity] = described("the release's own wheel first: {filename, sha256, size}")
    size: int = described("bytes of all wheels")
    signature: str = described("Ed25519 over the manifest {version, wheels}, base64")
    created_at: str | None = None

    @classmethod
    def of(cls, release: Release) -> ReleaseView:
        return cls(**release.to_json())


@dataclass(frozen=True)
class ReleaseList:
    items: list[ReleaseView]
    count: int

    @classmethod
    def of(cls, values: Sequence[Release]) -> ReleaseList:
        return cls([ReleaseView.of(v) for v in values], len(values))


@dataclass(frozen=True)
class MessageList:
    items: list[MessageView]
    count: int

    @classmethod
    def of(cls, values: Sequence[Any]) -> MessageList:
        return cls([MessageView.of(v) for v in values], len(values))
