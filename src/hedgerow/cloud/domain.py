"""The cloud's entities and the rules their fields follow (pure: no I/O).

Entities are frozen dataclasses returned by the repository; the validators here are the
one place that says what a valid name, subscription endpoint or function setting is.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hedgerow.cloud.errors import InvalidInput
from hedgerow.contract import functions as function_rules
from hedgerow.contract.deployment import DeploymentStatus
from hedgerow.contract.errors import InvalidFunction
from hedgerow.contract.functions import FunctionDefinition
from hedgerow.mqtt.errors import MQTTError
from hedgerow.mqtt.topics import matches as topic_matches
from hedgerow.mqtt.topics import validate_topic_filter

__all__ = ["DeploymentStatus", "topic_matches"]  # the contract's, and the MQTT engine's

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

#: Limits on what one request may create (a function's own limits are the contract's:
#: ``hedgerow.contract.functions``, shared with the core).
MAX_DESCRIPTION = 1024
MAX_CONNECTIVITY_ENTRIES = 32
MAX_ATTRIBUTES = 50
RUNTIMES = function_rules.RUNTIMES
ENCODINGS = function_rules.ENCODINGS
#: Group CA rotation period bounds (days).
MIN_ROTATION_DAYS = 1
MAX_ROTATION_DAYS = 30


class DeploymentKind(enum.StrEnum):
    NEW = "NewDeployment"
    REDEPLOY = "Redeployment"
    RESET = "ResetDeployment"
    #: exported for ``hedgerow core deploy --file``: not sent to the core, not the group's
    #: latest until adopted
    OFFLINE = "OfflineDeployment"
    #: an offline deployment the core runs, made the group's current one by the operator
    ADOPTED = "AdoptedDeployment"


class CertificateKind(enum.StrEnum):
    THING = "thing"
    CORE = "core"
    CORE_SERVER = "core-server"


def validate_name(value: object, kind: str = "name") -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise InvalidInput(
            f"invalid {kind} {value!r}: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
            field=kind,
        )
    return value


MAX_LABELS = 32
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def validate_labels(value: object) -> dict[str, str]:
    """A group's labels: at most 32 ``key: value`` pairs, each 1-63 letters, digits, '_',
    '.' or '-' (what ``--label site=berlin`` selects by)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput("labels must be an object of key: value", field="labels")
    if len(value) > MAX_LABELS:
        raise InvalidInput(f"at most {MAX_LABELS} labels", field="labels")
    for key, item in value.items():
        for part in (key, item):
            if not isinstance(part, str) or not LABEL_PATTERN.fullmatch(part):
                raise InvalidInput(
                    f"invalid label {key!r}: {item!r}: keys and values are 1-63 letters, "
                    "digits, '_', '.' or '-'",
                    field=f"labels.{key}",
                )
    return dict(value)


def validate_label_changes(value: object) -> dict[str, str]:
    """Labels to merge into a group's: as ``validate_labels``, and ``""`` removes one."""
    if isinstance(value, dict):
        removed = {k: v for k, v in value.items() if v == ""}
        kept = validate_labels({k: v for k, v in value.items() if v != ""})
        validate_labels({k: "x" for k in removed})
        return {**kept, **removed}
    return validate_labels(value)


def parse_label_selector(text: str) -> dict[str, str]:
    """``site=berlin,tier=2`` → ``{"site": "berlin", "tier": "2"}`` (every pair must match)."""
    pairs: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        key, sep, item = part.partition("=")
        if not sep:
            raise InvalidInput(f"invalid label {part!r}: write key=value", field="label")
        pairs[key.strip()] = item.strip()
    return validate_labels(pairs)


def validate_description(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise InvalidInput(f"description must be a string of at most {MAX_DESCRIPTION} characters")
    return value


def validate_rotation_days(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput("ca_rotation_days must be an integer")
    if not MIN_ROTATION_DAYS <= value <= MAX_ROTATION_DAYS:
        raise InvalidInput(
            f"ca_rotation_days must be within {MIN_ROTATION_DAYS}..{MAX_ROTATION_DAYS}"
        )
    return value


def validate_topic_filter_text(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInput("topic must be a string", field="topic")
    try:
        validate_topic_filter(value)
    except MQTTError as exc:
        raise InvalidInput(f"invalid topic filter {value!r}: {exc}", field="topic") from exc
    if value.startswith("$share/"):
        raise InvalidInput("a subscription's topic cannot be a shared subscription", field="topic")
    return value


@dataclass(frozen=True)
class Endpoint:
    """A place a core can be reached (connectivity info)."""

    host: str
    port: int
    metadata: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "metadata": self.metadata}


def validate_endpoints(value: object) -> list[Endpoint]:
    if not isinstance(value, list):
        raise InvalidInput("endpoints must be a list of {host, port}", field="endpoints")
    if len(value) > MAX_CONNECTIVITY_ENTRIES:
        raise InvalidInput(f"at most {MAX_CONNECTIVITY_ENTRIES} endpoints", field="endpoints")
    result: list[Endpoint] = []
    for item in value:
        if not isinstance(item, dict):
            raise InvalidInput("each endpoint must be an object {host, port}", field="endpoints")
        host, port, meta = item.get("host"), item.get("port"), item.get("metadata", "")
        if (
            not isinstance(host, str)
            or not host
            or len(host) > 253
            or any(c.isspace() for c in host)
        ):
            raise InvalidInput(f"invalid endpoint host {host!r}", field="endpoints")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise InvalidInput(f"invalid endpoint port {port!r}: use 1..65535", field="endpoints")
        if not isinstance(meta, str) or len(meta) > MAX_DESCRIPTION:
            raise InvalidInput("endpoint metadata must be a short string", field="endpoints")
        result.append(Endpoint(host, port, meta))
    return result


def validate_hosts(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(h, str) and h for h in value):
        raise InvalidInput("hosts must be a list of host names or addresses", field="hosts")
    if len(value) > MAX_CONNECTIVITY_ENTRIES:
        raise InvalidInput(f"at most {MAX_CONNECTIVITY_ENTRIES} hosts", field="hosts")
    return list(value)


def validate_attributes(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_ATTRIBUTES:
        raise InvalidInput(f"attributes must be an object of at most {MAX_ATTRIBUTES} strings")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str) or len(item) > MAX_DESCRIPTION:
            raise InvalidInput("attributes must map strings to short strings", field="attributes")
    return dict(value)


# ---- subscriptions ---------------------------------------------------------------------

SOURCE_KINDS = ("thing", "function", "connector")
SPECIAL_ENDPOINTS = ("cloud", "shadow")


@dataclass(frozen=True)
class EndpointRef:
    """``thing:<name>``, ``function:<name>``, ``connector:<name>``, ``cloud`` or ``shadow``."""

    kind: str
    name: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else self.kind


def parse_endpoint_ref(value: object, field_name: str) -> EndpointRef:
    if not isinstance(value, str):
        raise InvalidInput(f"{field_name} must be a string", field=field_name)
    if value in SPECIAL_ENDPOINTS:
        return EndpointRef(value)
    kind, sep, name = value.partition(":")
    if not sep or kind not in SOURCE_KINDS:
        raise InvalidInput(
            f"invalid {field_name} {value!r}: use thing:<name>, function:<name>, "
            "connector:<name>, cloud or shadow",
            field=field_name,
        )
    validate_name(name, f"{kind} name")
    return EndpointRef(kind, name)


# ---- functions -------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionSettings:
    """The settings of one function version (everything but the code)."""

    handler: str
    runtime: str = "python"
    pinned: bool = False
    memory_mb: int = 128
    timeout_s: float = 3.0
    max_concurrency: int = 1
    environment: Mapping[str, str] = field(default_factory=dict)
    encoding: str = "json"
    run_as: str | None = None
    #: V1 local resources: {kind, source, destination, access, auto_add_group_owner}
    resources: tuple[Mapping[str, Any], ...] = ()
    #: OS groups the function's process needs on the gateway
    groups: tuple[str, ...] = ()
    #: names of the group's secrets the function may read
    secrets: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        document = {
            "handler": self.handler,
            "runtime": self.runtime,
            "pinned": self.pinned,
            "memory_mb": self.memory_mb,
            "timeout_s": self.timeout_s,
            "max_concurrency": self.max_concurrency,
            "environment": dict(self.environment),
            "encoding": self.encoding,
            "run_as": self.run_as,
        }
        # only when declared: documents of functions without them stay as they were
        if self.resources:
            document["resources"] = [dict(r) for r in self.resources]
        if self.groups:
            document["groups"] = list(self.groups)
        if self.secrets:
            document["secrets"] = list(self.secrets)
        return document


RESOURCE_KINDS = ("device", "volume")
MAX_RESOURCES = 32
MAX_OS_GROUPS = 16
OS_GROUP_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")


def _local_path(value: object, what: str) -> str:
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or ":" in value
        or "\0" in value
        or len(value) > 4096
        or any(part in (".", "..") for part in value.split("/"))
    ):
        raise InvalidInput(
            f"invalid {what} {value!r}: an absolute path without ':', '.' or '..'",
            field="resources",
        )
    return value


def local_resources_from_json(value: object) -> tuple[dict[str, Any], ...]:
    """Validated V1 local resources (device files and volumes) of a function."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or len(value) > MAX_RESOURCES:
        raise InvalidInput(
            f"resources must be a list of at most {MAX_RESOURCES}", field="resources"
        )
    result: list[dict[str, Any]] = []
    for entry in value:
        if not isinstance(entry, Mapping) or entry.get("kind") not in RESOURCE_KINDS:
            raise InvalidInput("each resource needs kind device or volume", field="resources")
        source = _local_path(entry.get("source"), "source")
        destination = _local_path(entry.get("destination", source), "destination")
        if entry["kind"] == "device" and destination != source:
            raise InvalidInput(f"device {source} is seen at its own path", field="resources")
        access = entry.get("access", "rw")
        auto = entry.get("auto_add_group_owner", True)
        if access not in ("ro", "rw") or not isinstance(auto, bool):
            raise InvalidInput(
                f"{source}: access must be ro or rw, auto_add_group_owner true or false",
                field="resources",
            )
        if any(r["destination"] == destination for r in result):
            raise InvalidInput(f"{destination} is declared twice", field="resources")
        result.append({"kind": entry["kind"], "source": source, "destination": destination,
                       "access": access, "auto_add_group_owner": auto})  # fmt: skip
    return tuple(result)


def os_groups_from_json(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or len(value) > MAX_OS_GROUPS:
        raise InvalidInput(f"groups must be a list of at most {MAX_OS_GROUPS}", field="groups")
    for name in value:
        if not isinstance(name, str) or not OS_GROUP_PATTERN.fullmatch(name):
            raise InvalidInput(f"invalid OS group name {name!r}", field="groups")
    return tuple(dict.fromkeys(value))


SECRET_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-+=@]{1,128}")
MAX_FUNCTION_SECRETS = 32


def secret_names_from_json(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or len(value) > MAX_FUNCTION_SECRETS:
        raise InvalidInput(
            f"secrets must be a list of at most {MAX_FUNCTION_SECRETS} names", field="secrets"
        )
    for name in value:
        if not isinstance(name, str) or not SECRET_NAME_PATTERN.fullmatch(name):
            raise InvalidInput(f"invalid secret name {name!r}", field="secrets")
    return tuple(dict.fromkeys(value))


def validate_function_name(value: object) -> str:
    """A function's name, by the contract's rule (the core refuses any other)."""
    try:
        return function_rules.check_function_name(value)
    except InvalidFunction as exc:
        raise InvalidInput(exc.reason, field="name") from exc


def function_settings_from_json(
    body: Mapping[str, Any], base: FunctionSettings | None = None
) -> FunctionSettings:
    """Validated settings from a request body; missing fields come from ``base``.

    The rules are the contract's (``hedgerow.contract.functions``), the ones the core
    applies to the deployment: what is refused here would be refused there."""
    current = base.to_json() if base else {}
    merged = {
        **current,
        **{k: v for k, v in body.items() if k in FunctionSettings.__dataclass_fields__},
    }
    if merged.get("environment") is None:
        merged["environment"] = {}
    # local resources, OS groups and secrets: the cloud's own messages first
    resources = local_resources_from_json(merged.get("resources"))
    groups = os_groups_from_json(merged.get("groups"))
    secrets = secret_names_from_json(merged.get("secrets"))
    merged |= {"resources": list(resources), "groups": list(groups), "secrets": list(secrets)}
    try:
        # the name and version are checked on their own: here only the settings count
        definition = FunctionDefinition.from_json({**merged, "name": "f", "version": 1})
    except InvalidFunction as exc:
        raise InvalidInput(str(exc), field=exc.field) from exc
    return FunctionSettings(
        handler=definition.handler,
        runtime=definition.runtime,
        pinned=definition.pinned,
        memory_mb=definition.memory_mb,
        timeout_s=definition.timeout_s,
        max_concurrency=definition.max_concurrency,
        environment=dict(definition.environment),
        encoding=definition.encoding,
        run_as=definition.run_as,
        resources=resources,
        groups=groups,
        secrets=secrets,
    )


def validate_sha256(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise InvalidInput(f"invalid sha256 {value!r}: 64 lower-case hex digits", field="sha256")
    return value


# ---- entities --------------------------------------------------------------------------


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True)
class Group:
    name: str
    description: str
    created_at: dt.datetime
    core: str | None
    settings: Mapping[str, Any]
    ca_rotation_days: int | None
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "created_at": iso(self.created_at),
            "core": self.core,
            "settings": dict(self.settings),
            "ca_rotation_days": self.ca_rotation_days,
            "labels": dict(self.labels),
        }


@dataclass(frozen=True)
class Core:
    name: str
    group: str
    created_at: dt.datetime
    endpoints: Sequence[Endpoint]
    last_seen: dt.datetime | None
    heartbeat: Mapping[str, Any] | None
    #: a live MQTT session at the cloud's endpoint now (None: this process cannot tell,
    #: e.g. with an external broker)
    connected: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "created_at": iso(self.created_at),
            "endpoints": [e.to_json() for e in self.endpoints],
            "last_seen": iso(self.last_seen),
            "heartbeat": dict(self.heartbeat) if self.heartbeat else None,
            "connected": self.connected,
        }


@dataclass(frozen=True)
class Thing:
    name: str
    groups: Sequence[str]
    created_at: dt.datetime
    attributes: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "groups": list(self.groups),
            "created_at": iso(self.created_at),
            "attributes": dict(self.attributes),
        }


@dataclass(frozen=True)
class Certificate:
    fingerprint: str
    kind: str
    owner: str
    serial: str
    issued_at: dt.datetime
    not_after: dt.datetime
    revoked_at: dt.datetime | None
    pem: str

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "kind": self.kind,
            "owner": self.owner,
            "serial": self.serial,
            "issued_at": iso(self.issued_at),
            "not_after": iso(self.not_after),
            "revoked_at": iso(self.revoked_at),
            "status": "revoked" if self.revoked_at else "active",
        }


@dataclass(frozen=True)
class FunctionVersion:
    group: str
    name: str
    version: int
    settings: FunctionSettings
    artifact_sha256: str
    artifact_size: int
    created_at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "name": self.name,
            "version": self.version,
            **self.settings.to_json(),
            "artifact": {"sha256": self.artifact_sha256, "size": self.artifact_size},
            "created_at": iso(self.created_at),
        }

    def to_document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            **self.settings.to_json(),
            "artifact": {"sha256": self.artifact_sha256, "size": self.artifact_size},
        }


@dataclass(frozen=True)
class Subscription:
    id: int
    group: str
    source: str
    topic: str
    target: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "source": self.source,
            "topic": self.topic,
            "target": self.target,
        }


@dataclass(frozen=True)
class DeploymentEvent:
    status: str
    detail: str
    at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, "at": iso(self.at)}


@dataclass(frozen=True)
class Deployment:
    id: str
    group: str
    core: str
    kind: str
    created_at: dt.datetime
    status: str
    detail: str
    updated_at: dt.datetime
    events: Sequence[DeploymentEvent] = ()
    restores: str | None = None  # the earlier deployment a redeployment repeats

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment_id": self.id,
            "group": self.group,
            "core": self.core,
            "kind": self.kind,
            "restores": self.restores,
            "created_at": iso(self.created_at),
            "status": self.status,
            "detail": self.detail,
            "updated_at": iso(self.updated_at),
            "events": [e.to_json() for e in self.events],
        }


@dataclass(frozen=True)
class Release:
    """A Hedgerow release the cloud holds for cores: ``wheels`` (the release's own first,
    then its dependencies: ``{filename, sha256, size}``) and the signed manifest."""

    version: str
    wheels: Sequence[Mapping[str, Any]]
    signature: str
    created_at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "wheels": [dict(w) for w in self.wheels],
            "size": sum(int(w["size"]) for w in self.wheels),
            "signature": self.signature,
            "created_at": iso(self.created_at),
        }


#: A deployment's outcomes after which the core does not run the release it carried.
FAILED_UPDATE_STATUSES = (DeploymentStatus.FAILURE, DeploymentStatus.ROLLED_BACK)


@dataclass(frozen=True)
class CoreVersionRevert:
    """A group's ``core_version`` put back after an update that did not take: ``failed``
    is the release the failed deployment carried, ``restored`` the one of the group's last
    successful deployment (None: the group names none, its core keeps what it runs)."""

    group: str
    failed: str
    restored: str | None

    def note(self) -> str:
        """What the deployment's detail tells the operator."""
        back = self.restored or "none (the core keeps the version it runs)"
        return (
            f"group {self.group}'s core version is back to {back}; "
            f"deploy --core-version {self.failed} to try {self.failed} again"
        )


def core_version_after_failure(
    group: str,
    *,
    status: DeploymentStatus,
    carried: str | None,
    setting: str | None,
    last_good: str | None,
    last_good_stored: bool,
    newest: bool,
) -> CoreVersionRevert | None:
    """Whether a deployment's final ``status`` puts its group's ``core_version`` back
    (pure). Only when it failed, was the group's newest deployment (a later one is the
    operator's newer word), carried the release the group still names, and that release is
    not what the group's last successful deployment ran (then the failure was something
    else: the core runs that release). It goes back to the last successful deployment's
    release, or to none when that carried none or was removed since."""
    if status not in FAILED_UPDATE_STATUSES or not newest:
        return None
    if carried is None or setting != carried or last_good == carried:
        return None
    return CoreVersionRevert(group, carried, last_good if last_good_stored else None)


@dataclass(frozen=True)
class Message:
    id: int
    topic: str
    payload: bytes
    core: str
    ts: float

    def to_json(self) -> dict[str, Any]:
        try:
            text: str | None = self.payload.decode()
        except UnicodeDecodeError:
            text = None
        result: dict[str, Any] = {
            "id": self.id,
            "topic": self.topic,
            "core": self.core,
            "ts": self.ts,
            "time": dt.datetime.fromtimestamp(self.ts, dt.UTC).isoformat(),
        }
        if text is not None:
            result["payload"] = text
        else:
            result["payload_base64"] = base64.b64encode(self.payload).decode()
        return result


@dataclass(frozen=True)
class LogEntry:
    """One log record a core sent: its own (``source`` ``core``) or a function's."""

    id: int
    group: str
    core: str
    source: str
    level: int
    ts: float
    logger: str
    message: str

    @property
    def function(self) -> str | None:
        return self.source.partition(":")[2] or None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "core": self.core,
            "source": self.source,
            "function": self.function,
            "level": _LEVEL_NAMES.get(self.level, str(self.level)),
            "levelno": self.level,
            "ts": self.ts,
            "time": dt.datetime.fromtimestamp(self.ts, dt.UTC).isoformat(),
            "logger": self.logger,
            "message": self.message,
        }


_LEVEL_NAMES = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}
