"""The core's configuration: frozen dataclasses loaded once from ``config.toml``.

Only ``[core]`` and ``[cloud]`` are required (the provisioning bundle writes them); every
other section has safe defaults. Errors name the field (``ConfigError.field``), e.g.
``cloud.https: missing``. Relative paths are relative to the data directory, which is
the directory holding ``config.toml`` unless ``core.data_dir`` says otherwise.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from .errors import ConfigError

Overflow = Literal["drop-oldest", "drop-newest"]
FsyncPolicy = Literal["always", "normal", "off"]
DenyPolicy = Literal["drop", "disconnect"]

#: Files a provisioning bundle holds, next to ``config.toml`` in the data directory.
CORE_CERT = "core.cert.pem"
CORE_KEY = "core.key"
ROOT_CA = "root-ca.pem"
DEPLOY_VERIFY = "deploy-verify.pem"
CONFIG_FILE = "config.toml"

DEFAULT_LOCAL_PORT = 8883
#: The metrics listener's default: a free port chosen at start and written to
#: ``<data_dir>/metrics.address`` (so two cores on one host never collide; ``core check``
#: and scrapers read the file). A number fixes the port; 0 turns the listener off.
METRICS_AUTO: Final = "auto"
METRICS_ADDRESS_FILE = "metrics.address"
DEFAULT_EXCLUDED_INTERFACES = ("lo", "docker*", "veth*", "br-*", "virbr*")


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class CloudConfig:
    https: str
    mqtt: Endpoint
    https_endpoint: Endpoint


@dataclass(frozen=True, slots=True)
class LocalConfig:
    host: str = "0.0.0.0"
    port: int = DEFAULT_LOCAL_PORT
    #: advertised addresses (certificate SANs and connectivity info); empty = detect
    hosts: tuple[str, ...] = ()
    exclude_interfaces: tuple[str, ...] = DEFAULT_EXCLUDED_INTERFACES
    #: what happens to a device publishing where no subscription allows it
    deny_policy: DenyPolicy = "drop"


#: The local broker's outbound memory budget on a gateway (smaller than the standalone
#: broker's: the whole daemon should stay within ~64 MB whatever devices do).
DEFAULT_BROKER_CLIENT_BYTES = 4 * 1024 * 1024
DEFAULT_BROKER_TOTAL_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BrokerLimits:
    """``[broker]``: limits of the local MQTT broker (see hedgerow/broker/budget.py)."""

    #: bytes held for one device (QoS 1/2 in flight and queued, unsent packets)
    max_outbound_bytes: int = DEFAULT_BROKER_CLIENT_BYTES
    #: bytes held for all devices together
    max_total_outbound_bytes: int = DEFAULT_BROKER_TOTAL_BYTES
    #: a device taking nothing for this long while data waits is disconnected
    slow_client_timeout: float = 30.0
    max_inflight: int = 1000
    max_queued_messages: int = 10_000
    #: keep-alive cap (v5: told as Server Keep Alive); None = as the device asks
    max_keepalive: int | None = None


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    backend: Literal["sqlite", "memory"] = "sqlite"
    path: Path | None = None
    max_bytes: int = 64 * 1024 * 1024
    overflow: Overflow = "drop-oldest"
    #: always = fsync every commit (survives power loss); normal = WAL without fsync per
    #: commit (survives a killed process, may lose the last commits on power loss); off
    fsync: FsyncPolicy = "always"


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    keepalive: int = 300
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    inflight: int = 1000


@dataclass(frozen=True, slots=True)
class DeploymentConfig:
    poll_interval: float = 900.0
    health_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class StatusConfig:
    heartbeat_interval: float = 600.0
    metrics_host: str = "127.0.0.1"
    #: Prometheus text on http://metrics_host:metrics_port/metrics; 0 = off; "auto" = a
    #: free port, written to ``<data_dir>/metrics.address`` while the core runs
    metrics_port: int | Literal["auto"] = METRICS_AUTO


@dataclass(frozen=True, slots=True)
class CertificateConfig:
    #: renew when less than this fraction of the lifetime is left
    renew_fraction: float = 0.3
    check_interval: float = 300.0


@dataclass(frozen=True, slots=True)
class FunctionsConfig:
    run_as_user: str | None = None
    run_as_group: str | None = None


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    max_bytes: int = 5 * 1024 * 1024
    backups: int = 3


DEFAULT_STREAMS_PORT = 8088


@dataclass(frozen=True, slots=True)
class StreamsConfig:
    """The stream manager (``hedgerow.streams``): off unless ``[streams] enabled = true``."""

    enabled: bool = False
    #: loopback only: functions reach it as STREAM_MANAGER_SERVER_PORT
    host: str = "127.0.0.1"
    port: int = DEFAULT_STREAMS_PORT
    #: where File streams live (default ``<data dir>/streams``)
    dir: Path | None = None
    #: the sum of all streams' maxSize may not exceed this
    max_bytes: int = 1024 * 1024 * 1024
    #: seconds between fsyncs of streams without flushOnWrite
    fsync_interval: float = 1.0


@dataclass(frozen=True, slots=True)
class CoreConfig:
    name: str
    group: str
    data_dir: Path
    cloud: CloudConfig
    local: LocalConfig = field(default_factory=LocalConfig)
    broker: BrokerLimits = field(default_factory=BrokerLimits)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    deployment: DeploymentConfig = field(default_factory=DeploymentConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    certificates: CertificateConfig = field(default_factory=CertificateConfig)
    functions: FunctionsConfig = field(default_factory=FunctionsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    streams: StreamsConfig = field(default_factory=StreamsConfig)

    def file(self, name: str) -> Path:
        return self.data_dir / name

    @property
    def spool_path(self) -> Path:
        return self.spool.path or self.data_dir / "spool.db"

    @property
    def streams_dir(self) -> Path:
        return self.streams.dir or self.data_dir / "streams"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def metrics_address_file(self) -> Path:
        """Where a running core writes its metrics listener's ``host:port``."""
        return self.data_dir / METRICS_ADDRESS_FILE

    def metrics_endpoint(self) -> tuple[str, int] | None:
        """Where this core's metrics listener is (or would be): the configured port, or
        with ``"auto"`` the address the running core wrote; None when off or not running."""
        port = self.status.metrics_port
        if port == METRICS_AUTO:
            try:
                host, _, number = self.metrics_address_file.read_text().strip().rpartition(":")
                return host.strip("[]"), int(number)
            except (OSError, ValueError):
                return None
        if not port:
            return None
        return self.status.metrics_host, int(port)


# ---- parsing -------------------------------------------------------------------------


def load_config(path: Path) -> CoreConfig:
    """Read and validate ``config.toml``; ``ConfigError`` names the first bad field."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError("config", f"no config file at {path}") from exc
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from exc
    return parse_config(text, default_data_dir=path.resolve().parent)


def parse_config(text: str, *, default_data_dir: Path) -> CoreConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"not valid TOML: {exc}") from exc
    core = _section(raw, "core", required=True)
    data_dir_value = _opt_str(core, "core.data_dir")
    data_dir = default_data_dir if data_dir_value is None else default_data_dir / data_dir_value
    return CoreConfig(
        name=_name(core, "core.name"),
        group=_name(core, "core.group"),
        data_dir=data_dir,
        cloud=_cloud(_section(raw, "cloud", required=True)),
        local=_local(_section(raw, "local")),
        broker=_broker(_section(raw, "broker")),
        spool=_spool(_section(raw, "spool"), data_dir),
        connector=ConnectorConfig(
            keepalive=_int(c := _section(raw, "connector"), "connector.keepalive", 300, 0, 65535),
            backoff_base=_float(c, "connector.backoff_base", 0.5, 0.01),
            backoff_cap=_float(c, "connector.backoff_cap", 30.0, 0.01),
            inflight=_int(c, "connector.inflight", 1000, 1, 65535),
        ),
        deployment=DeploymentConfig(
            poll_interval=_float(
                d := _section(raw, "deployment"), "deployment.poll_interval", 900.0, 1.0
            ),
            health_timeout=_float(d, "deployment.health_timeout", 10.0, 0.1),
        ),
        status=StatusConfig(
            heartbeat_interval=_float(
                s := _section(raw, "status"), "status.heartbeat_interval", 600.0, 1.0
            ),
            metrics_host=_opt_str(s, "status.metrics_host") or "127.0.0.1",
            metrics_port=_metrics_port(s),
        ),
        certificates=CertificateConfig(
            renew_fraction=_float(
                cc := _section(raw, "certificates"), "certificates.renew_fraction", 0.3, 0.01, 0.99
            ),
            check_interval=_float(cc, "certificates.check_interval", 300.0, 1.0),
        ),
        functions=FunctionsConfig(
            run_as_user=_opt_str(f := _section(raw, "functions"), "functions.run_as_user"),
            run_as_group=_opt_str(f, "functions.run_as_group"),
        ),
        logging=LoggingConfig(
            max_bytes=_int(
                lg := _section(raw, "logging"), "logging.max_bytes", 5 * 1024 * 1024, 1024
            ),
            backups=_int(lg, "logging.backups", 3, 0, 100),
        ),
        streams=_streams(_section(raw, "streams"), data_dir),
    )


def _section(raw: Mapping[str, Any], name: str, *, required: bool = False) -> Mapping[str, Any]:
    value = raw.get(name)
    if value is None:
        if required:
            raise ConfigError(name, "missing section")
        return {}
    if not isinstance(value, dict):
        raise ConfigError(name, "must be a table")
    return value


def _key(section: Mapping[str, Any], field_name: str) -> Any:
    return section.get(field_name.rsplit(".", 1)[1])


def _name(section: Mapping[str, Any], field_name: str) -> str:
    value = _key(section, field_name)
    if value is None:
        raise ConfigError(field_name, "missing")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(field_name, "must be a non-empty string")
    if any(ch in value for ch in "/#+ \t\n"):
        raise ConfigError(field_name, f"{value!r} must not contain '/', '#', '+' or spaces")
    return value


def _opt_str(section: Mapping[str, Any], field_name: str) -> str | None:
    value = _key(section, field_name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(field_name, "must be a string")
    return value


def _choice(
    section: Mapping[str, Any], field_name: str, default: str, choices: tuple[str, ...]
) -> Any:
    value = _key(section, field_name)
    if value is None:
        return default
    if value not in choices:
        raise ConfigError(field_name, f"{value!r} is not one of {', '.join(choices)}")
    return value


def _metrics_port(section: Mapping[str, Any]) -> int | Literal["auto"]:
    value = _key(section, "status.metrics_port")
    if value is None or value == METRICS_AUTO:
        return METRICS_AUTO
    try:
        return _int(section, "status.metrics_port", 0, 0, 65535)
    except ConfigError as exc:
        raise ConfigError(
            "status.metrics_port", f'{exc.message}: use "auto", 0 (off) or a port number'
        ) from exc


def _int(
    section: Mapping[str, Any], field_name: str, default: int, low: int, high: int | None = None
) -> int:
    value = _key(section, field_name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field_name, "must be an integer")
    if value < low or (high is not None and value > high):
        raise ConfigError(
            field_name, f"{value} is out of range {low}..{high if high is not None else ''}"
        )
    return value


def _float(
    section: Mapping[str, Any],
    field_name: str,
    default: float,
    low: float,
    high: float | None = None,
) -> float:
    value = _key(section, field_name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(field_name, "must be a number")
    if value < low or (high is not None and value > high):
        raise ConfigError(
            field_name, f"{value} is out of range {low}..{high if high is not None else ''}"
        )
    return float(value)


def _str_list(
    section: Mapping[str, Any], field_name: str, default: tuple[str, ...]
) -> tuple[str, ...]:
    value = _key(section, field_name)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(field_name, "must be a list of non-empty strings")
    return tuple(value)


def parse_url(value: str, field_name: str, schemes: tuple[str, ...], default_port: int) -> Endpoint:
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ConfigError(
            field_name, f"{value!r} must start with {' or '.join(s + '://' for s in schemes)}"
        )
    try:
        port = parts.port or default_port
    except ValueError as exc:
        raise ConfigError(field_name, f"{value!r} has a bad port") from exc
    if not parts.hostname:
        raise ConfigError(field_name, f"{value!r} has no host")
    return Endpoint(parts.hostname, port)


def _cloud(section: Mapping[str, Any]) -> CloudConfig:
    https = _opt_str(section, "cloud.https")
    mqtt = _opt_str(section, "cloud.mqtt")
    if not https:
        raise ConfigError("cloud.https", "missing")
    if not mqtt:
        raise ConfigError("cloud.mqtt", "missing")
    https_endpoint = parse_url(https, "cloud.https", ("https",), 8443)
    return CloudConfig(
        https=https.rstrip("/"),
        https_endpoint=https_endpoint,
        mqtt=parse_url(mqtt, "cloud.mqtt", ("mqtts", "ssl", "tls"), 8884),
    )


def _broker(section: Mapping[str, Any]) -> BrokerLimits:
    keepalive = _int(section, "broker.max_keepalive", 0, 0, 65535)
    return BrokerLimits(
        max_outbound_bytes=_int(
            section, "broker.max_outbound_bytes", DEFAULT_BROKER_CLIENT_BYTES, 1024
        ),
        max_total_outbound_bytes=_int(
            section, "broker.max_total_outbound_bytes", DEFAULT_BROKER_TOTAL_BYTES, 1024
        ),
        slow_client_timeout=_float(section, "broker.slow_client_timeout", 30.0, 0.1),
        max_inflight=_int(section, "broker.max_inflight", 1000, 1, 65535),
        max_queued_messages=_int(section, "broker.max_queued_messages", 10_000, 0),
        max_keepalive=keepalive or None,
    )


def _local(section: Mapping[str, Any]) -> LocalConfig:
    return LocalConfig(
        host=_opt_str(section, "local.host") or "0.0.0.0",
        port=_int(section, "local.port", DEFAULT_LOCAL_PORT, 0, 65535),
        hosts=_str_list(section, "local.hosts", ()),
        exclude_interfaces=_str_list(
            section, "local.exclude_interfaces", DEFAULT_EXCLUDED_INTERFACES
        ),
        deny_policy=_choice(section, "local.deny_policy", "drop", ("drop", "disconnect")),
    )


def _streams(section: Mapping[str, Any], data_dir: Path) -> StreamsConfig:
    enabled = section.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError("streams.enabled", f"must be true or false, got {enabled!r}")
    host = _opt_str(section, "streams.host") or "127.0.0.1"
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError(
            "streams.host", f"{host!r}: the stream manager listens on loopback only (127.0.0.1)"
        )
    path = _opt_str(section, "streams.dir")
    return StreamsConfig(
        enabled=enabled,
        host=host,
        port=_int(section, "streams.port", DEFAULT_STREAMS_PORT, 0, 65535),
        dir=None if path is None else data_dir / path,
        max_bytes=_int(section, "streams.max_bytes", 1024 * 1024 * 1024, 1024),
        fsync_interval=_float(section, "streams.fsync_interval", 1.0, 0.01),
    )


def _spool(section: Mapping[str, Any], data_dir: Path) -> SpoolConfig:
    path = _opt_str(section, "spool.path")
    return SpoolConfig(
        backend=_choice(section, "spool.backend", "sqlite", ("sqlite", "memory")),
        path=None if path is None else data_dir / path,
        max_bytes=_int(section, "spool.max_bytes", 64 * 1024 * 1024, 1024),
        overflow=_choice(section, "spool.overflow", "drop-oldest", ("drop-oldest", "drop-newest")),
        fsync=_choice(section, "spool.fsync", "always", ("always", "normal", "off")),
    )
