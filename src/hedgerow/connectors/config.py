"""Connector configurations: frozen dataclasses and one pure validation function.

``validate(kind, name, raw)`` turns a connector's raw config (a TOML table as a dict) into a
``ModbusConfig`` or ``OpcUaConfig``, or raises ``ConnectorConfigError`` whose ``field``
names the bad key (``tags[2].type``). It imports no connector library, so the cloud runs it
before a deployment is made and the core runs it again before starting a connector.

Kinds: ``modbus-tcp``, ``modbus-rtu``, ``opcua``. Topics default to
``connectors/{name}/data/{tag}`` for values and ``connectors/{name}/request`` →
``connectors/{name}/response`` for requests; the Modbus connectors also answer the V1
Modbus-RTU Protocol Adapter's ``modbus/adapter/request`` → ``modbus/adapter/response`` when
``v1_adapter = true``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final, TypeVar

from hedgerow.mqtt.topics import validate_topic_filter, validate_topic_name

from .errors import ConnectorConfigError
from .modbus_codec import DataType, Order, register_count

KINDS: Final = ("modbus-tcp", "modbus-rtu", "opcua")
#: the version of each built-in connector (a deployment records it)
VERSIONS: Final = {"modbus-tcp": 1, "modbus-rtu": 1, "opcua": 1}

V1_REQUEST_TOPIC: Final = "modbus/adapter/request"
V1_RESPONSE_TOPIC: Final = "modbus/adapter/response"

#: Modbus limits per request (the protocol's): registers and bits
MAX_READ_REGISTERS: Final = 125
MAX_READ_BITS: Final = 2000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Table(Enum):
    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    HOLDING_REGISTER = "holding_register"
    INPUT_REGISTER = "input_register"

    @property
    def is_bits(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE_INPUT)

    @property
    def writable(self) -> bool:
        return self in (Table.COIL, Table.HOLDING_REGISTER)


class PublishMode(Enum):
    CHANGE = "change"  # only when the value changed by more than the deadband
    EVERY = "every"  # every poll


@dataclass(frozen=True, slots=True)
class ModbusTag:
    name: str
    table: Table
    address: int
    type: DataType = DataType.UINT16
    unit: int = 1
    length: int = 1  # registers, for strings
    bit: int = 0  # for a bit inside a register
    byte_order: Order = Order.BIG
    word_order: Order = Order.BIG
    scale: float = 1.0
    offset: float = 0.0
    interval_s: float = 1.0
    publish: PublishMode = PublishMode.CHANGE
    deadband: float = 0.0

    @property
    def count(self) -> int:
        """Registers (or bits) this tag occupies."""
        return 1 if self.table.is_bits else register_count(self.type, self.length)


@dataclass(frozen=True, slots=True)
class ModbusConfig:
    kind: str
    name: str
    tags: tuple[ModbusTag, ...]
    host: str = "127.0.0.1"
    port: int = 502
    serial_port: str = ""
    baudrate: int = 19200
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8
    timeout_s: float = 1.0
    retries: int = 1
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    max_gap: int = 8  # registers skipped to merge two tags into one request
    max_registers: int = MAX_READ_REGISTERS
    topic_prefix: str = ""
    request_topic: str = ""
    response_topic: str = ""
    v1_adapter: bool = False

    def data_topic(self, tag: str) -> str:
        return f"{self.topic_prefix}/data/{tag}"


class SecurityPolicy(Enum):
    NONE = "None"
    BASIC256SHA256 = "Basic256Sha256"


class SecurityMode(Enum):
    NONE = "None"
    SIGN = "Sign"
    SIGN_AND_ENCRYPT = "SignAndEncrypt"


@dataclass(frozen=True, slots=True)
class OpcUaNode:
    name: str
    node_id: str
    sampling_interval_ms: float = 100.0
    deadband: float = 0.0  # absolute deadband on the server (0 = every change)


@dataclass(frozen=True, slots=True)
class OpcUaConfig:
    kind: str
    name: str
    url: str
    nodes: tuple[OpcUaNode, ...]
    security_policy: SecurityPolicy = SecurityPolicy.NONE
    security_mode: SecurityMode = SecurityMode.NONE
    certificate: str = ""  # our certificate (PEM or DER file), trusted by the server
    private_key: str = ""
    server_certificate: str = ""
    username: str = ""
    password: str = ""
    publishing_interval_ms: float = 100.0
    timeout_s: float = 4.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    topic_prefix: str = ""
    request_topic: str = ""
    response_topic: str = ""

    def data_topic(self, node: str) -> str:
        return f"{self.topic_prefix}/data/{node}"


ConnectorConfig = ModbusConfig | OpcUaConfig


@dataclass(frozen=True, slots=True)
class ConnectorSpec:
    """A connector as a deployment carries it: kind, name, version and its raw config."""

    kind: str
    name: str
    version: int
    config: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "config": dict(self.config),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConnectorSpec:
        return cls(
            kind=str(data["kind"]),
            name=str(data["name"]),
            version=int(data.get("version", 1)),
            config=dict(data.get("config", {})),
        )


def validate(kind: str, name: str, raw: Mapping[str, Any]) -> ConnectorConfig:
    """The validated config of connector ``name`` of ``kind``; ``ConnectorConfigError`` names
    the first bad field."""
    if kind not in KINDS:
        raise ConnectorConfigError(
            "kind", f"unknown connector kind {kind!r}; use one of {', '.join(KINDS)}"
        )
    if not _NAME.match(name):
        raise ConnectorConfigError(
            "name", f"{name!r} is not a connector name (letters, digits, '.', '_', '-'; 64 at most)"
        )
    if not isinstance(raw, Mapping):
        raise ConnectorConfigError("config", "must be a table")
    if kind == "opcua":
        return _opcua(name, raw)
    return _modbus(kind, name, raw)


def spec_of(kind: str, name: str, raw: Mapping[str, Any]) -> ConnectorSpec:
    """Validate, then wrap as the spec a deployment carries."""
    validate(kind, name, raw)
    return ConnectorSpec(kind=kind, name=name, version=VERSIONS[kind], config=dict(raw))


# -- readers: each names the field it reads ---------------------------------------------

T = TypeVar("T")
E = TypeVar("E", bound=Enum)


class _Reader:
    def __init__(self, raw: Mapping[str, Any], prefix: str = "") -> None:
        self._raw = raw
        self._prefix = prefix
        self._used: set[str] = set()

    def field(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def _get(self, key: str, default: Any, required: bool) -> Any:
        self._used.add(key)
        if key not in self._raw:
            if required:
                raise ConnectorConfigError(self.field(key), "is required")
            return default
        return self._raw[key]

    def string(self, key: str, default: str = "", *, required: bool = False) -> str:
        value = self._get(key, default, required)
        if not isinstance(value, str):
            raise ConnectorConfigError(self.field(key), f"must be a string, got {value!r}")
        if required and not value:
            raise ConnectorConfigError(self.field(key), "must not be empty")
        return value

    def integer(
        self, key: str, default: int = 0, *, low: int, high: int, required: bool = False
    ) -> int:
        value = self._get(key, default, required)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConnectorConfigError(self.field(key), f"must be an integer, got {value!r}")
        if not low <= value <= high:
            raise ConnectorConfigError(self.field(key), f"must be in {low}..{high}, got {value}")
        return value

    def number(
        self, key: str, default: float, *, positive: bool = False, non_negative: bool = False
    ) -> float:
        value = self._get(key, default, False)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConnectorConfigError(self.field(key), f"must be a number, got {value!r}")
        if positive and value <= 0:
            raise ConnectorConfigError(self.field(key), f"must be positive, got {value}")
        if non_negative and value < 0:
            raise ConnectorConfigError(self.field(key), f"must not be negative, got {value}")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, default, False)
        if not isinstance(value, bool):
            raise ConnectorConfigError(self.field(key), f"must be true or false, got {value!r}")
        return value

    def choice(self, key: str, enum: type[E], default: E | None = None) -> E:
        value = self._get(key, default.value if default else None, default is None)
        try:
            return enum(value)
        except ValueError:
            allowed = ", ".join(str(m.value) for m in enum)
            raise ConnectorConfigError(
                self.field(key), f"{value!r} is not one of {allowed}"
            ) from None

    def topic(self, key: str, default: str) -> str:
        value = self.string(key, default)
        try:
            validate_topic_name(value)
        except Exception as exc:
            raise ConnectorConfigError(self.field(key), f"is not a topic name: {exc}") from exc
        return value

    def table_list(self, key: str) -> list[Mapping[str, Any]]:
        value = self._get(key, None, True)
        if not isinstance(value, list) or not value:
            raise ConnectorConfigError(self.field(key), "must be a non-empty list of tables")
        for i, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise ConnectorConfigError(f"{self.field(key)}[{i}]", "must be a table")
        return value

    def no_unknown(self) -> None:
        unknown = sorted(set(self._raw) - self._used)
        if unknown:
            raise ConnectorConfigError(self.field(unknown[0]), "is not a known setting (a typo?)")


def _topics(reader: _Reader, name: str) -> tuple[str, str, str]:
    prefix = reader.topic("topic_prefix", f"connectors/{name}")
    request = reader.topic("request_topic", f"{prefix}/request")
    response = reader.topic("response_topic", f"{prefix}/response")
    validate_topic_filter(request)
    return prefix, request, response


def _unique(items: Sequence[T], key: Callable[[T], str], field_name: str) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        value = key(item)
        if value in seen:
            raise ConnectorConfigError(f"{field_name}[{i}].name", f"{value!r} is used twice")
        seen.add(value)


def _modbus(kind: str, name: str, raw: Mapping[str, Any]) -> ModbusConfig:
    r = _Reader(raw)
    if kind == "modbus-tcp":
        host = r.string("host", required=True)
        port = r.integer("port", 502, low=1, high=65535)
        serial: dict[str, Any] = {}
    else:
        host, port = "", 0
        serial = {
            "serial_port": r.string("serial_port", required=True),
            "baudrate": r.integer("baudrate", 19200, low=300, high=4_000_000),
            "parity": r.string("parity", "N"),
            "stopbits": r.integer("stopbits", 1, low=1, high=2),
            "bytesize": r.integer("bytesize", 8, low=5, high=8),
        }
        if serial["parity"] not in ("N", "E", "O"):
            raise ConnectorConfigError("parity", f"must be N, E or O, got {serial['parity']!r}")
    default_unit = r.integer("unit", 1, low=0, high=247)
    timeout = r.number("timeout_s", 1.0, positive=True)
    retries = r.integer("retries", 1, low=0, high=10)
    base = r.number("backoff_base_s", 0.5, positive=True)
    cap = r.number("backoff_cap_s", 30.0, positive=True)
    if base > cap:
        raise ConnectorConfigError("backoff_base_s", "must not exceed backoff_cap_s")
    max_gap = r.integer("max_gap", 8, low=0, high=MAX_READ_REGISTERS)
    max_registers = r.integer("max_registers", MAX_READ_REGISTERS, low=1, high=MAX_READ_REGISTERS)
    default_interval = r.number("interval_s", 1.0, positive=True)
    prefix, request, response = _topics(r, name)
    v1 = r.boolean("v1_adapter", False)
    tags = tuple(
        _modbus_tag(item, f"tags[{i}].", default_unit, default_interval)
        for i, item in enumerate(r.table_list("tags"))
    )
    _unique(tags, lambda t: t.name, "tags")
    r.no_unknown()
    return ModbusConfig(
        kind=kind,
        name=name,
        tags=tags,
        host=host,
        port=port,
        timeout_s=timeout,
        retries=retries,
        backoff_base_s=base,
        backoff_cap_s=cap,
        max_gap=max_gap,
        max_registers=max_registers,
        topic_prefix=prefix,
        request_topic=request,
        response_topic=response,
        v1_adapter=v1,
        **serial,
    )


def _modbus_tag(raw: Mapping[str, Any], prefix: str, unit: int, interval: float) -> ModbusTag:
    r = _Reader(raw, prefix)
    name = r.string("name", required=True)
    if not _NAME.match(name):
        raise ConnectorConfigError(r.field("name"), f"{name!r} is not a tag name (it ends a topic)")
    table = r.choice("table", Table)
    data_type = r.choice("type", DataType, DataType.BIT if table.is_bits else DataType.UINT16)
    if table.is_bits and data_type is not DataType.BIT:
        raise ConnectorConfigError(
            r.field("type"), f"a {table.value} holds a bit, not {data_type.value}"
        )
    length = r.integer("length", 1, low=1, high=MAX_READ_REGISTERS)
    if "length" in raw and data_type is not DataType.STRING:
        raise ConnectorConfigError(r.field("length"), "applies to strings only")
    tag = ModbusTag(
        name=name,
        table=table,
        type=data_type,
        address=r.integer("address", low=0, high=0xFFFF, required=True),
        unit=r.integer("unit", unit, low=0, high=247),
        length=length,
        bit=r.integer("bit", 0, low=0, high=15),
        byte_order=r.choice("byte_order", Order, Order.BIG),
        word_order=r.choice("word_order", Order, Order.BIG),
        scale=r.number("scale", 1.0),
        offset=r.number("offset", 0.0),
        interval_s=r.number("interval_s", interval, positive=True),
        publish=r.choice("publish", PublishMode, PublishMode.CHANGE),
        deadband=r.number("deadband", 0.0, non_negative=True),
    )
    if tag.scale == 0:
        raise ConnectorConfigError(r.field("scale"), "must not be 0")
    if tag.address + tag.count - 1 > 0xFFFF:
        raise ConnectorConfigError(r.field("address"), "the value runs past register 65535")
    r.no_unknown()
    return tag


def _opcua(name: str, raw: Mapping[str, Any]) -> OpcUaConfig:
    r = _Reader(raw)
    url = r.string("url", required=True)
    if not url.startswith("opc.tcp://"):
        raise ConnectorConfigError("url", f"must start with opc.tcp://, got {url!r}")
    policy = r.choice("security_policy", SecurityPolicy, SecurityPolicy.NONE)
    mode = r.choice(
        "security_mode",
        SecurityMode,
        SecurityMode.NONE if policy is SecurityPolicy.NONE else SecurityMode.SIGN_AND_ENCRYPT,
    )
    if (policy is SecurityPolicy.NONE) != (mode is SecurityMode.NONE):
        raise ConnectorConfigError(
            "security_mode", f"{mode.value} does not go with security_policy {policy.value}"
        )
    certificate = r.string("certificate")
    private_key = r.string("private_key")
    if policy is not SecurityPolicy.NONE:
        for key, value in (("certificate", certificate), ("private_key", private_key)):
            if not value:
                raise ConnectorConfigError(key, f"is required with security_policy {policy.value}")
    username = r.string("username")
    password = r.string("password")
    if password and not username:
        raise ConnectorConfigError("username", "is required when a password is set")
    publishing = r.number("publishing_interval_ms", 100.0, positive=True)
    sampling_default = r.number("sampling_interval_ms", publishing, non_negative=True)
    prefix, request, response = _topics(r, name)
    nodes = []
    for i, item in enumerate(r.table_list("nodes")):
        n = _Reader(item, f"nodes[{i}].")
        node_name = n.string("name", required=True)
        if not _NAME.match(node_name):
            raise ConnectorConfigError(n.field("name"), f"{node_name!r} is not a node name")
        node_id = n.string("node_id", required=True)
        if "=" not in node_id:
            raise ConnectorConfigError(
                n.field("node_id"), f"{node_id!r} is not a node id (ns=2;s=Speed, i=2258)"
            )
        nodes.append(
            OpcUaNode(
                name=node_name,
                node_id=node_id,
                sampling_interval_ms=n.number(
                    "sampling_interval_ms", sampling_default, non_negative=True
                ),
                deadband=n.number("deadband", 0.0, non_negative=True),
            )
        )
        n.no_unknown()
    _unique(nodes, lambda node: node.name, "nodes")
    config = OpcUaConfig(
        kind="opcua",
        name=name,
        url=url,
        nodes=tuple(nodes),
        security_policy=policy,
        security_mode=mode,
        certificate=certificate,
        private_key=private_key,
        server_certificate=r.string("server_certificate"),
        username=username,
        password=password,
        publishing_interval_ms=publishing,
        timeout_s=r.number("timeout_s", 4.0, positive=True),
        backoff_base_s=r.number("backoff_base_s", 0.5, positive=True),
        backoff_cap_s=r.number("backoff_cap_s", 30.0, positive=True),
        topic_prefix=prefix,
        request_topic=request,
        response_topic=response,
    )
    r.no_unknown()
    return config
