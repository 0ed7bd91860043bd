"""The messages of a deployment: the signed document, the notification, the status report.

Wire formats are those of ``docs/architecture.md`` ("Cloud ⇄ core"). Each message has a
``schema`` version (``SCHEMA``); a message without one is version 1, which is what every
cloud and core wrote before the field existed, so old documents still parse. Unknown keys
are ignored; malformed values raise ``InvalidMessage`` naming the field, an unknown
version ``UnsupportedSchema``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from . import _wire
from .errors import ContractError, InvalidMessage
from .functions import FunctionDefinition

#: The version of the deployment messages this release writes and reads.
SCHEMA: Final = 1
#: A status report's detail is cut to this many characters.
MAX_DETAIL: Final = 4096

_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: a release's version (PEP 440 in practice; checked here only as a safe directory name)
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]{0,63}")
#: a wheel's file name (PEP 427): what pip reads the project, version and tags from
_WHEEL = re.compile(r"[A-Za-z0-9_.+!-]{1,200}\.whl")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SPECIAL_ENDPOINTS: Final = ("cloud", "shadow")
_ENDPOINT_KINDS: Final = ("thing:", "function:", "connector:")


class DeploymentStatus(enum.StrEnum):
    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    SUCCESS = "Success"
    FAILURE = "Failure"
    ROLLED_BACK = "RolledBack"
    #: the cloud's own verdict: a newer deployment of the group replaced it unfinished
    SUPERSEDED = "Superseded"

    @property
    def final(self) -> bool:
        return self in (
            DeploymentStatus.SUCCESS,
            DeploymentStatus.FAILURE,
            DeploymentStatus.ROLLED_BACK,
            DeploymentStatus.SUPERSEDED,
        )


def check_deployment_id(value: object, field: str = "deployment_id") -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidMessage(field, f"{value!r}: use 1-128 letters, digits, '.', '_' or '-'")
    return value


@dataclass(frozen=True, slots=True)
class Artifact:
    """A function's code: a zip named by its SHA-256 (``size`` in bytes, when known)."""

    sha256: str
    size: int | None = None

    @classmethod
    def from_json(cls, data: object) -> Artifact:
        if not isinstance(data, Mapping):
            raise InvalidMessage("artifact", "must be an object {sha256, size}")
        sha256 = data.get("sha256")
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise InvalidMessage("artifact.sha256", f"{sha256!r}: 64 lower-case hex digits")
        size = data.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise InvalidMessage("artifact.size", f"{size!r}: a non-negative integer")
        return cls(sha256, size)

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}


@dataclass(frozen=True, slots=True)
class DeployedFunction:
    definition: FunctionDefinition
    artifact: Artifact

    @property
    def name(self) -> str:
        return self.definition.name

    @classmethod
    def from_json(cls, data: object) -> DeployedFunction:
        definition = FunctionDefinition.from_json(data)
        assert isinstance(data, Mapping)  # from_json refused anything else
        return cls(definition, Artifact.from_json(data.get("artifact")))

    def to_json(self) -> dict[str, Any]:
        return {**self.definition.to_json(), "artifact": self.artifact.to_json()}


def check_route_endpoint(value: object, field: str) -> str:
    """``thing:NAME``, ``function:NAME``, ``connector:NAME``, ``cloud`` or ``shadow``."""
    if isinstance(value, str):
        if value in _SPECIAL_ENDPOINTS:
            return value
        for kind in _ENDPOINT_KINDS:
            if value.startswith(kind) and len(value) > len(kind):
                return value
    raise InvalidMessage(
        field, f"{value!r}: use thing:NAME, function:NAME, connector:NAME, cloud or shadow"
    )


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of the group's subscription table: ``source`` → ``target`` on ``topic``
    (a topic filter, checked by the MQTT rules where it is used)."""

    source: str
    topic: str
    target: str

    @classmethod
    def from_json(cls, data: object) -> Route:
        if not isinstance(data, Mapping):
            raise InvalidMessage("subscription", "must be an object {source, topic, target}")
        topic = data.get("topic")
        if not isinstance(topic, str) or not topic:
            raise InvalidMessage("topic", f"{topic!r}: must be a topic filter")
        return cls(
            check_route_endpoint(data.get("source"), "source"),
            topic,
            check_route_endpoint(data.get("target"), "target"),
        )

    def to_json(self) -> dict[str, str]:
        return {"source": self.source, "topic": self.topic, "target": self.target}


@dataclass(frozen=True, slots=True)
class ConnectorEntry:
    """One industrial connector a deployment runs, checked here for shape only: a ``kind``
    and a ``name`` (non-empty strings), a ``version`` (positive integer, 1 when absent) and
    a ``config`` object. Its config is validated by ``hedgerow.connectors`` (which the
    contract may not import): by the cloud before it is stored and again by the core."""

    kind: str
    name: str
    version: int = 1
    config: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: object) -> ConnectorEntry:
        if not isinstance(data, Mapping):
            raise InvalidMessage("connector", "must be an object {kind, name, version, config}")
        version = data.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise InvalidMessage("version", f"{version!r}: a positive integer")
        config = data.get("config", {})
        if not isinstance(config, Mapping):
            raise InvalidMessage("config", f"{config!r}: must be an object")
        return cls(_wire.text(data, "kind"), _wire.text(data, "name"), version, dict(config))

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "config": dict(self.config),
        }


def check_version(value: object, field: str = "version") -> str:
    """A Hedgerow release version: 1-64 letters, digits, ``.+!_-``, starting with a letter or
    digit (it names a directory on the core)."""
    if not isinstance(value, str) or not _VERSION.fullmatch(value) or ".." in value:
        raise InvalidMessage(field, f"{value!r}: a release version such as 1.2.0")
    return value


@dataclass(frozen=True, slots=True)
class Wheel:
    """One wheel of a release: the file name pip needs, its SHA-256 and size."""

    filename: str
    sha256: str
    size: int

    @classmethod
    def from_json(cls, data: object) -> Wheel:
        if not isinstance(data, Mapping):
            raise InvalidMessage("wheel", "must be an object {filename, sha256, size}")
        filename = data.get("filename")
        if not isinstance(filename, str) or not _WHEEL.fullmatch(filename):
            raise InvalidMessage("filename", f"{filename!r}: a wheel file name (NAME-VER-...whl)")
        sha256 = data.get("sha256")
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise InvalidMessage("sha256", f"{sha256!r}: 64 lower-case hex digits")
        return cls(filename, sha256, _wire.integer(data, "size", -1))

    def to_json(self) -> dict[str, Any]:
        return {"filename": self.filename, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True, slots=True)
class CoreRelease:
    """The Hedgerow version a core should run (``core_version`` of a document): the release's
    own wheel first, then the dependencies it needs (a wheelhouse: the core installs with
    ``pip --no-index``, so a gateway needs no internet). The wheels are artifacts, fetched
    and checked by hash like function code; the document's signature covers the hashes."""

    version: str
    wheels: tuple[Wheel, ...]

    @classmethod
    def from_json(cls, data: object) -> CoreRelease:
        if not isinstance(data, Mapping):
            raise InvalidMessage("core_version", "must be an object {version, wheels}")
        version = check_version(data.get("version"))
        wheels = _each(data, "wheels", Wheel.from_json)
        if not wheels:
            raise InvalidMessage("wheels", "a release has at least its own wheel")
        if len({w.filename for w in wheels}) != len(wheels):
            raise InvalidMessage("wheels", "two wheels have the same file name")
        return cls(version, wheels)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "wheels": [w.to_json() for w in self.wheels]}


@dataclass(frozen=True, slots=True)
class DeploymentDocument:
    """What one core runs: its group's things, functions and subscriptions. The cloud
    signs the exact text of ``to_json()``; the core keeps that text beside the parsed value."""

    deployment_id: str
    group: str
    core: str
    created_at: str
    things: tuple[str, ...] = ()
    functions: tuple[DeployedFunction, ...] = ()
    subscriptions: tuple[Route, ...] = ()
    open_broker: bool = False
    #: industrial connectors, sorted by name by the cloud; left out of the text when none
    connectors: tuple[ConnectorEntry, ...] = ()
    #: the secret versions its functions declare, each sealed to the core's key:
    #: ``{name, version_id, stages, created_ms, binary, sealed}``, checked here for shape
    #: (objects); the core reads them (``core/secrets.py``); left out of the text when none
    secrets: tuple[Mapping[str, Any], ...] = ()
    #: the things whose shadows the core syncs with the cloud (``contract.shadow``): the
    #: group setting ``sync_shadows``; in ``settings`` only when any
    sync_shadows: tuple[str, ...] = ()
    #: the Hedgerow release the core should run; None: keep what it runs (left out of the
    #: text then, so documents without it read and sign as before)
    core_version: CoreRelease | None = None
    schema: int = SCHEMA

    @classmethod
    def from_json(cls, text: str | bytes) -> DeploymentDocument:
        data = _wire.load_object(text, "document")
        schema = _wire.check_schema(data, SCHEMA)
        deployment_id = check_deployment_id(data.get("deployment_id"))
        settings = data.get("settings") or {}
        if not isinstance(settings, Mapping):
            raise InvalidMessage("settings", "must be an object")
        open_broker = settings.get("open_broker", False)
        if not isinstance(open_broker, bool):
            raise InvalidMessage("settings.open_broker", "must be true or false")
        try:
            sync_shadows = _wire.strings(settings, "sync_shadows")
        except InvalidMessage as exc:
            raise exc.within("settings") from exc
        return cls(
            deployment_id=deployment_id,
            group=_wire.text(data, "group"),
            core=_wire.text(data, "core"),
            created_at=_wire.text(data, "created_at", required=False),
            things=_wire.strings(data, "things"),
            functions=_each(data, "functions", DeployedFunction.from_json),
            subscriptions=_each(data, "subscriptions", Route.from_json),
            open_broker=open_broker,
            connectors=_each(data, "connectors", ConnectorEntry.from_json),
            secrets=_each(data, "secrets", _sealed_secret),
            sync_shadows=sync_shadows,
            core_version=_core_version(data),
            schema=schema,
        )

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "schema": self.schema,
            "deployment_id": self.deployment_id,
            "group": self.group,
            "core": self.core,
            "created_at": self.created_at,
            "things": list(self.things),
            "functions": [f.to_json() for f in self.functions],
            "subscriptions": [s.to_json() for s in self.subscriptions],
            "settings": {"open_broker": self.open_broker},
        }
        if self.sync_shadows:
            body["settings"]["sync_shadows"] = list(self.sync_shadows)
        if self.connectors:
            body["connectors"] = [c.to_json() for c in self.connectors]
        if self.secrets:
            body["secrets"] = [dict(entry) for entry in self.secrets]
        if self.core_version is not None:
            body["core_version"] = self.core_version.to_json()
        return _wire.dumps(body)


def _core_version(data: Mapping[str, Any]) -> CoreRelease | None:
    value = data.get("core_version")
    if value is None:
        return None
    try:
        return CoreRelease.from_json(value)
    except ContractError as exc:
        if exc.field == "core_version":
            raise
        raise exc.within("core_version") from exc


def _sealed_secret(data: object) -> Mapping[str, Any]:
    if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
        raise InvalidMessage("secret", "must be an object {name, version_id, stages, sealed, ...}")
    return dict(data)


def _each(data: Mapping[str, Any], key: str, parse: Any) -> tuple[Any, ...]:
    items = _wire.objects(data, key)
    out = []
    for index, item in enumerate(items):
        try:
            out.append(parse(item))
        except ContractError as exc:
            raise exc.within(f"{key}[{index}]") from exc
    names = [getattr(item, "name", None) for item in out]
    if key in ("functions", "connectors") and len(set(names)) != len(names):
        raise InvalidMessage(key, f"two {key} have the same name")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class DeploymentNotification:
    """cloud → core on ``$hedgerow/cores/{core}/deployments``: "fetch this deployment"."""

    deployment_id: str
    schema: int = SCHEMA

    @classmethod
    def from_json(cls, payload: str | bytes) -> DeploymentNotification:
        data = _wire.load_object(payload, "notification")
        schema = _wire.check_schema(data, SCHEMA)
        return cls(check_deployment_id(data.get("deployment_id")), schema)

    def to_json(self) -> bytes:
        return _wire.dumps({"schema": self.schema, "deployment_id": self.deployment_id}).encode()


@dataclass(frozen=True, slots=True)
class StatusReport:
    """core → cloud on ``$hedgerow/cores/{core}/deployment-status``."""

    deployment_id: str
    status: DeploymentStatus
    detail: str = ""
    schema: int = SCHEMA

    @classmethod
    def from_json(cls, payload: str | bytes) -> StatusReport:
        data = _wire.load_object(payload, "status report")
        schema = _wire.check_schema(data, SCHEMA)
        deployment_id = check_deployment_id(data.get("deployment_id"))
        raw = data.get("status")
        try:
            status = DeploymentStatus(str(raw))
        except ValueError as exc:
            allowed = ", ".join(s.value for s in DeploymentStatus)
            raise InvalidMessage("status", f"unknown status {raw!r}: use {allowed}") from exc
        detail = data.get("detail") or ""
        if not isinstance(detail, str):
            detail = _wire.dumps(detail)
        return cls(deployment_id, status, detail[:MAX_DETAIL], schema)

    def to_json(self) -> bytes:
        return _wire.dumps(
            {
                "schema": self.schema,
                "deployment_id": self.deployment_id,
                "status": self.status.value,
                "detail": self.detail,
            }
        ).encode()
