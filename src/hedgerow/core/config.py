"""The core's configuration: frozen dataclasses loaded once from ``config.toml``.

Only ``[core]`` and ``[cloud]`` are required (the provisioning bundle writes them); every
other section has safe defaults. ``hedgerow.tomlconfig`` reads the file into ``CoreFile``
(one field per table; bounds and checks in the fields' metadata): unknown tables and keys
are refused with the nearest valid name, a wrong value names the field and the expected
type, keys older files have (``MOVED``) say what to write instead. ``ConfigError`` names
the file and every problem (``.field`` is the first), e.g. ``cloud.https: missing``. Relative paths are relative to the data directory, which is
the directory holding ``config.toml`` unless ``core.data_dir`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

from hedgerow import tomlconfig
from hedgerow.contract.logs import LEVELS
from hedgerow.tomlconfig import Moved, check, hint, within

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


def _not_empty(value: str) -> str | None:
    return None if value else "must not be empty (leave the key out for the default)"


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class CloudConfig:
    https: str
    mqtt: Endpoint
    https_endpoint: Endpoint
    #: False for an ``mqtt://`` external broker (a trusted network or a TLS terminator)
    mqtt_tls: bool = True
    #: "5", or "3.1.1" for an external broker with no MQTT 5 (the topic names the core)
    mqtt_protocol: str = "5"
    #: the login at an external broker that asks the cloud (else the certificate is it)
    mqtt_username: str | None = None
    mqtt_password: str | None = None


@dataclass(frozen=True, slots=True)
class LocalConfig:
    host: str = field(default="0.0.0.0", metadata=check(_not_empty))
    port: int = field(default=DEFAULT_LOCAL_PORT, metadata=within(0, 65535))
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
    max_outbound_bytes: int = field(default=DEFAULT_BROKER_CLIENT_BYTES, metadata=within(1024))
    #: bytes held for all devices together
    max_total_outbound_bytes: int = field(default=DEFAULT_BROKER_TOTAL_BYTES, metadata=within(1024))
    #: a device taking nothing for this long while data waits is disconnected
    slow_client_timeout: float = field(default=30.0, metadata=within(0.1))
    max_inflight: int = field(default=1000, metadata=within(1, 65535))
    max_queued_messages: int = field(default=10_000, metadata=within(0))
    #: keep-alive cap (v5: told as Server Keep Alive); None (or 0 in the file) = as the
    #: device asks
    max_keepalive: int | None = field(default=None, metadata=within(0, 65535))


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    backend: Literal["sqlite", "memory"] = "sqlite"
    path: Path | None = None
    max_bytes: int = field(default=64 * 1024 * 1024, metadata=within(1024))
    overflow: Overflow = "drop-oldest"
    #: always = fsync every commit (survives power loss); normal = WAL without fsync per
    #: commit (survives a killed process, may lose the last commits on power loss); off
    fsync: FsyncPolicy = "always"


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    keepalive: int = field(default=300, metadata=within(0, 65535))
    backoff_base: float = field(default=0.5, metadata=within(0.01))
    backoff_cap: float = field(default=30.0, metadata=within(0.01))
    inflight: int = field(default=1000, metadata=within(1, 65535))


@dataclass(frozen=True, slots=True)
class DeploymentConfig:
    poll_interval: float = field(default=900.0, metadata=within(1.0))
    health_timeout: float = field(default=10.0, metadata=within(0.1))
    #: a deployment not finished this long after it started is failed and rolled back
    deadline: float = field(default=300.0, metadata=within(1.0))
    #: seconds a new release of the core has to start, reach the cloud and run the
    #: deployment's functions before it is rolled back (``core/runtime.py``)
    update_timeout: float = field(default=120.0, metadata=within(5.0))
    #: seconds the install of a release (virtual environment + offline pip) may take
    install_timeout: float = field(default=600.0, metadata=within(10.0))


@dataclass(frozen=True, slots=True)
class StatusConfig:
    heartbeat_interval: float = field(default=600.0, metadata=within(1.0))
    metrics_host: str = field(default="127.0.0.1", metadata=check(_not_empty))
    #: Prometheus text on http://metrics_host:metrics_port/metrics; 0 = off; "auto" = a
    #: free port, written to ``<data_dir>/metrics.address`` while the core runs
    metrics_port: int | Literal["auto"] = field(
        default=METRICS_AUTO,
        metadata=within(0, 65535) | hint('use "auto", 0 (off) or a port number'),
    )


@dataclass(frozen=True, slots=True)
class CertificateConfig:
    #: renew when less than this fraction of the lifetime is left
    renew_fraction: float = field(default=0.3, metadata=within(0.01, 0.99))
    check_interval: float = field(default=300.0, metadata=within(1.0))


@dataclass(frozen=True, slots=True)
class FunctionsConfig:
    run_as_user: str | None = None
    run_as_group: str | None = None


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    max_bytes: int = field(default=5 * 1024 * 1024, metadata=within(1024))
    backups: int = field(default=3, metadata=within(0, 100))


def _level_problem(value: str) -> str | None:
    if value.upper() in LEVELS:
        return None
    return f"{value!r} is not a log level: use one of {', '.join(LEVELS)}"


def _function_levels_problem(value: tuple[str, ...]) -> str | None:
    for item in value:
        name, sep, level = item.partition("=")
        if not sep or not name or _level_problem(level):
            return f'{item!r}: write FUNCTION=LEVEL, e.g. "temp-correct=DEBUG"'
    return None


@dataclass(frozen=True, slots=True)
class CloudLogsConfig:
    """``[cloud_logs]``: the core's and its functions' logs streamed to the cloud."""

    enabled: bool = True
    #: the core's own records at or above this level go
    level: str = field(default="INFO", metadata=check(_level_problem))
    #: each function's records at or above this level go ...
    function_level: str = field(default="INFO", metadata=check(_level_problem))
    #: ... unless named here: ``["temp-correct=DEBUG", "noisy=ERROR"]``
    function_levels: tuple[str, ...] = field(default=(), metadata=check(_function_levels_problem))
    #: records a second (all sources together) above which records are dropped and counted
    rate: float = field(default=200.0, metadata=within(1.0))
    burst: int = field(default=1000, metadata=within(1))
    #: the log spool's quota, apart from the telemetry spool's (oldest dropped first)
    spool_bytes: int = field(default=8 * 1024 * 1024, metadata=within(1024))

    def levels(self) -> dict[str, int]:
        """``function_levels`` as name → level number."""
        out: dict[str, int] = {}
        for item in self.function_levels:
            name, _, level = item.partition("=")
            out[name] = LEVELS[level.upper()]
        return out


DEFAULT_STREAMS_PORT = 8088


def _loopback_only(host: str) -> str | None:
    if host in ("127.0.0.1", "::1", "localhost"):
        return None
    return f"{host!r}: the stream manager listens on loopback only (127.0.0.1)"


@dataclass(frozen=True, slots=True)
class StreamsConfig:
    """The stream manager (``hedgerow.streams``): off unless ``[streams] enabled = true``."""

    enabled: bool = False
    #: loopback only: functions reach it as STREAM_MANAGER_SERVER_PORT
    host: str = field(default="127.0.0.1", metadata=check(_loopback_only))
    port: int = field(default=DEFAULT_STREAMS_PORT, metadata=within(0, 65535))
    #: where File streams live (default ``<data dir>/streams``; relative to the data dir)
    dir: Path | None = None
    #: the sum of all streams' maxSize may not exceed this
    max_bytes: int = field(default=1024 * 1024 * 1024, metadata=within(1024))
    #: seconds between fsyncs of streams without flushOnWrite
    fsync_interval: float = field(default=1.0, metadata=within(0.01))


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
    cloud_logs: CloudLogsConfig = field(default_factory=CloudLogsConfig)

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


def _name_problem(value: str) -> str | None:
    if not value.strip():
        return "must be a non-empty string"
    if any(ch in value for ch in "/#+ \t\n"):
        return f"{value!r} must not contain '/', '#', '+' or spaces"
    return None


def _url_problem(schemes: tuple[str, ...], default_port: int) -> Callable[[str], str | None]:
    def problem(value: str) -> str | None:
        try:
            parse_url(value, "", schemes, default_port)
        except ConfigError as exc:
            return exc.message
        return None

    return problem


#: ``mqtt://`` only for an external broker reached over a trusted network
MQTT_SCHEMES: Final = ("mqtts", "ssl", "tls", "mqtt")
MQTT_PROTOCOLS: Final = ("5", "3.1.1")


def _protocol_problem(value: str) -> str | None:
    return None if value in MQTT_PROTOCOLS else f"use one of {', '.join(MQTT_PROTOCOLS)}"


@dataclass(frozen=True, slots=True)
class CoreTable:
    """``[core]``: who this core is (the provisioning bundle writes it)."""

    name: str = field(metadata=check(_name_problem))
    group: str = field(metadata=check(_name_problem))
    #: relative to the directory of ``config.toml``
    data_dir: str | None = None


@dataclass(frozen=True, slots=True)
class CloudTable:
    """``[cloud]``: where the cloud is (the provisioning bundle writes it)."""

    https: str = field(metadata=check(_url_problem(("https",), 8443)))
    mqtt: str = field(metadata=check(_url_problem(MQTT_SCHEMES, 8884)))
    #: "5", or "3.1.1" for an external broker that has no MQTT 5 (RabbitMQ 3.10)
    mqtt_protocol: str = field(default="5", metadata=check(_protocol_problem))
    #: the core's login at an external broker that asks the cloud (the bundle writes it)
    mqtt_username: str = ""
    mqtt_password: str = ""


@dataclass(frozen=True, slots=True)
class CoreFile:
    """``config.toml`` as written: one field per table (``hedgerow.tomlconfig`` reads it)."""

    core: CoreTable
    cloud: CloudTable
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
    cloud_logs: CloudLogsConfig = field(default_factory=CloudLogsConfig)


_FILES_FROM_DATA_DIR: Final = (
    f"dropped: the core reads {ROOT_CA}, {CORE_CERT} and {CORE_KEY} from its data directory "
    "(the directory of config.toml, or [core] data_dir); remove the key"
)

#: Tables and keys older files have that Hedgerow renamed or dropped, with what to write
#: instead: Greengrass V1's ``config.json`` settings as they read in TOML (``coreThing``
#: became ``[core]`` and ``[cloud]``).
MOVED: Final = (
    Moved("core", "thing_name", "renamed: write the core's name as [core] name"),
    Moved(
        "core",
        "thing_arn",
        "dropped: write the core's name as [core] name (Hedgerow builds the ARN itself)",
    ),
    Moved(
        "cloud",
        "iot_host",
        'replaced: write the cloud\'s MQTT endpoint as [cloud] mqtt = "mqtts://HOST:8884" '
        "(the bundle from `hedgerow cloud core create` has it)",
    ),
    Moved(
        "cloud",
        "gg_host",
        'replaced: write the cloud\'s device HTTPS endpoint as [cloud] https = "https://HOST:8443" '
        "(the bundle from `hedgerow cloud core create` has it)",
    ),
    Moved("cloud", "ca_path", _FILES_FROM_DATA_DIR),
    Moved("cloud", "cert_path", _FILES_FROM_DATA_DIR),
    Moved("cloud", "key_path", _FILES_FROM_DATA_DIR),
    Moved(
        "functions",
        "allow_run_as_root",
        "dropped: functions never run as root; name their user with [functions] run_as_user",
    ),
    Moved(
        "runtime",
        None,
        "dropped: Greengrass V1's [runtime] has no counterpart; functions run as "
        "[functions] run_as_user and the spool is [spool]",
    ),
)


def load_config(path: Path) -> CoreConfig:
    """Read and validate ``config.toml``; ``ConfigError`` names the file and every bad
    field (``.field`` is the first)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError("config", f"no config file at {path}") from exc
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from exc
    return parse_config(text, default_data_dir=path.resolve().parent, file=str(path))


def parse_config(text: str, *, default_data_dir: Path, file: str | None = None) -> CoreConfig:
    try:
        parsed = tomlconfig.parse(text, CoreFile, file=file or "config.toml", moved=MOVED)
    except tomlconfig.ConfigFileError as exc:
        raise ConfigError(exc.field, exc.describe(), file=file) from exc
    core = parsed.core
    data_dir = default_data_dir if core.data_dir is None else default_data_dir / core.data_dir
    spool = parsed.spool
    if spool.path is not None:
        spool = replace(spool, path=data_dir / spool.path)
    streams = parsed.streams
    if streams.dir is not None:
        streams = replace(streams, dir=data_dir / streams.dir)
    broker = parsed.broker
    if broker.max_keepalive == 0:  # 0 = no cap, as the device asks
        broker = replace(broker, max_keepalive=None)
    return CoreConfig(
        name=core.name,
        group=core.group,
        data_dir=data_dir,
        cloud=_cloud(parsed.cloud),
        local=parsed.local,
        broker=broker,
        spool=spool,
        connector=parsed.connector,
        deployment=parsed.deployment,
        status=parsed.status,
        certificates=parsed.certificates,
        functions=parsed.functions,
        logging=parsed.logging,
        streams=streams,
        cloud_logs=parsed.cloud_logs,
    )


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


def _cloud(table: CloudTable) -> CloudConfig:
    return CloudConfig(
        https=table.https.rstrip("/"),
        https_endpoint=parse_url(table.https, "cloud.https", ("https",), 8443),
        mqtt=parse_url(table.mqtt, "cloud.mqtt", MQTT_SCHEMES, 8884),
        mqtt_tls=not table.mqtt.startswith("mqtt://"),
        mqtt_protocol=table.mqtt_protocol,
        mqtt_username=table.mqtt_username or None,
        mqtt_password=table.mqtt_password or None,
    )
