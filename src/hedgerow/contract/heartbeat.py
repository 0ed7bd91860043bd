"""The heartbeat: core → cloud on ``$hedgerow/cores/{core}/heartbeat`` (QoS 0).

Small on purpose (it is sent every ``status.heartbeat_interval`` over a metered link):
counters that are zero are left out. A heartbeat without ``schema`` is version 1.

``Presence``: core → cloud on ``$hedgerow/cores/{core}/presence`` (QoS 1, retained): the
core says ``connected: true`` after each connect and leaves ``connected: false`` as its
MQTT will, which the broker publishes the moment the link ends without a DISCONNECT (a
killed core, a cut link at its keepalive; the core's connector always ends that way). An
external broker's cloud reads it to know which cores are connected; the embedded broker
knows its sessions and ignores it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from . import _wire
from .errors import InvalidMessage

#: The version of the heartbeat this release writes and reads.
SCHEMA: Final = 1


@dataclass(frozen=True, slots=True)
class Heartbeat:
    version: str = ""  # the core's Hedgerow version
    uptime: int = 0  # seconds
    devices: int = 0  # clients connected to the core's broker
    functions: Mapping[str, str] = field(default_factory=dict)  # name → state
    spool: int = 0  # records waiting for the cloud
    deployment: str | None = None  # the current deployment id
    #: the core's own health (``hedgerow.lifecycle.Health``); None from cores before it
    health: str | None = None
    counters: Mapping[str, int] = field(default_factory=dict)  # non-zero counters
    #: deployments on the core's disk that did not verify at its last start: each
    #: ``{"deployment_id", "file", "reason"}`` (the cloud then redeploys); sent when any
    refused: tuple[Mapping[str, str], ...] = ()
    #: the core's streams: name → ``{"newest": sequence number, "backlog": records}``
    streams: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    #: the core's industrial connectors: name → ``{"kind", "version", "state", "polls",
    #: "values", "errors", "reconnects", "requests", "latency", ...}`` (values as reported)
    connectors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: functions that failed: name → ``{"failed", "crashes", "timeouts", "last_error"}``
    #: (counts, and the last error's text or null); sent when any
    function_errors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: the group's things seen by the core since it started: name → ``{"connected": bool,
    #: "last_activity": seconds since the epoch}`` (the last connect, publish or
    #: disconnect); sent when any
    things: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: the gateway's use in percent: ``{"cpu", "memory", "disk"}`` (each when known)
    host: Mapping[str, float] = field(default_factory=dict)
    #: seconds the oldest record in the spool may have waited (0: empty)
    spool_age: int = 0
    #: the spool's quota in bytes and its use (for "spool above a fraction" alerts)
    spool_bytes: int = 0
    spool_max_bytes: int = 0
    schema: int = SCHEMA

    @classmethod
    def from_json(cls, payload: str | bytes) -> Heartbeat:
        data = _wire.load_object(payload, "heartbeat")
        schema = _wire.check_schema(data, SCHEMA)
        deployment = data.get("deployment")
        if deployment is not None and not isinstance(deployment, str):
            raise InvalidMessage("deployment", f"{deployment!r}: must be a deployment id or null")
        health = data.get("health")
        if health is not None and not isinstance(health, str):
            raise InvalidMessage("health", f"{health!r}: must be a string or null")
        return cls(
            version=_wire.text(data, "version", required=False),
            uptime=round(_wire.number(data, "uptime")),
            devices=_wire.integer(data, "devices"),
            functions=_mapping(data, "functions", str),
            spool=_wire.integer(data, "spool"),
            deployment=deployment,
            health=health,
            counters=_mapping(data, "counters", int),
            refused=_refusals(data),
            streams=_streams(data),
            connectors=_connectors(data),
            function_errors=_function_errors(data),
            things=_things(data),
            host=_host(data),
            spool_age=round(_wire.number(data, "spool_age")),
            spool_bytes=_wire.integer(data, "spool_bytes"),
            spool_max_bytes=_wire.integer(data, "spool_max_bytes"),
            schema=schema,
        )

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schema": self.schema,
            "version": self.version,
            "uptime": self.uptime,
            "devices": self.devices,
            "functions": dict(self.functions),
            "spool": self.spool,
            "deployment": self.deployment,
            "health": self.health,
            "counters": {k: v for k, v in self.counters.items() if v},
        }
        if self.host:
            body["host"] = dict(self.host)
        if self.spool_age:
            body["spool_age"] = self.spool_age
        if self.spool_max_bytes:
            body["spool_bytes"] = self.spool_bytes
            body["spool_max_bytes"] = self.spool_max_bytes
        if self.refused:
            body["refused"] = [dict(r) for r in self.refused]
        if self.function_errors:
            body["function_errors"] = {n: dict(e) for n, e in self.function_errors.items()}
        if self.streams:
            body["streams"] = {name: dict(p) for name, p in self.streams.items()}
        if self.connectors:
            body["connectors"] = {name: dict(c) for name, c in self.connectors.items()}
        if self.things:
            body["things"] = {name: dict(t) for name, t in self.things.items()}
        return body

    def to_json(self) -> bytes:
        return _wire.dumps(self.to_dict()).encode()


def _mapping(data: Mapping[str, Any], key: str, kind: type) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, kind) and not isinstance(v, bool)
        for k, v in value.items()
    ):
        raise InvalidMessage(key, f"must be an object of {kind.__name__} values")
    return dict(value)


def _host(data: Mapping[str, Any]) -> dict[str, float]:
    value = data.get("host") or {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
        for k, v in value.items()
    ):
        raise InvalidMessage("host", "must be an object of numbers (cpu, memory, disk)")
    return {k: float(v) for k, v in value.items()}


_REFUSAL_KEYS = ("deployment_id", "file", "reason")


def _refusals(data: Mapping[str, Any]) -> tuple[Mapping[str, str], ...]:
    value = data.get("refused") or []
    if not isinstance(value, list) or not all(
        isinstance(item, Mapping) and all(isinstance(item.get(k), str) for k in _REFUSAL_KEYS)
        for item in value
    ):
        raise InvalidMessage("refused", "must be a list of {deployment_id, file, reason}")
    return tuple({k: item[k] for k in _REFUSAL_KEYS} for item in value)


def _streams(data: Mapping[str, Any]) -> dict[str, Mapping[str, int]]:
    value = data.get("streams") or {}
    if not isinstance(value, Mapping) or not all(
        isinstance(name, str)
        and isinstance(p, Mapping)
        and all(isinstance(p.get(k), int) and not isinstance(p.get(k), bool) for k in _STREAM_KEYS)
        for name, p in value.items()
    ):
        raise InvalidMessage("streams", "must be an object of {newest, backlog} integers")
    return {name: {k: p[k] for k in _STREAM_KEYS} for name, p in value.items()}


_STREAM_KEYS = ("newest", "backlog")


def _connectors(data: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    value = data.get("connectors") or {}
    if not isinstance(value, Mapping) or not all(
        isinstance(name, str) and isinstance(c, Mapping) and isinstance(c.get("kind", ""), str)
        for name, c in value.items()
    ):
        raise InvalidMessage("connectors", "must be an object of {kind, state, ...} objects")
    return {name: dict(c) for name, c in value.items()}


def _function_errors(data: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    value = data.get("function_errors") or {}
    if not isinstance(value, Mapping) or not all(
        isinstance(name, str)
        and isinstance(e, Mapping)
        and isinstance(e.get("last_error"), str | None)
        and all(
            isinstance(e.get(k, 0), int) and not isinstance(e.get(k, 0), bool)
            for k in ("failed", "crashes", "timeouts")
        )
        for name, e in value.items()
    ):
        raise InvalidMessage(
            "function_errors", "must be an object of {failed, crashes, timeouts, last_error}"
        )
    return {name: dict(e) for name, e in value.items()}


def _things(data: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    value = data.get("things") or {}
    if not isinstance(value, Mapping) or not all(
        isinstance(name, str)
        and isinstance(t, Mapping)
        and isinstance(t.get("connected"), bool)
        and isinstance(t.get("last_activity"), int | float)
        and not isinstance(t.get("last_activity"), bool)
        for name, t in value.items()
    ):
        raise InvalidMessage("things", "must be an object of {connected, last_activity} objects")
    return {
        name: {"connected": t["connected"], "last_activity": t["last_activity"]}
        for name, t in value.items()
    }


@dataclass(frozen=True, slots=True)
class Presence:
    connected: bool
    schema: int = SCHEMA

    @classmethod
    def from_json(cls, payload: str | bytes) -> Presence:
        data = _wire.load_object(payload, "presence")
        schema = _wire.check_schema(data, SCHEMA)
        connected = data.get("connected")
        if not isinstance(connected, bool):
            raise InvalidMessage("connected", f"{connected!r}: must be true or false")
        return cls(connected, schema)

    def to_json(self) -> bytes:
        return _wire.dumps({"schema": self.schema, "connected": self.connected}).encode()
