"""The cloud's configuration: frozen dataclasses loaded once from ``DATA/config.toml``.

```toml
[cloud]
database = ""                 # SQLAlchemy URL; empty = sqlite in the data directory
advertise = "127.0.0.1"       # host written into provisioning bundles
hosts = []                    # extra names/addresses for the cloud's server certificate
[api]
host = "127.0.0.1"            # HTTPS with the cloud certificate when not loopback
port = 8080
# tls = true                  # force HTTPS (or false: never)
[device]
host = "0.0.0.0"
port = 8443
max_pending = 256             # TLS handshakes + first requests at once (0: no limit)
pending_wait_s = 8.0          # over it: wait this long for a slot, else closed unanswered
discovery_cache_entries = 20000  # discovery answers kept (0: none)
discovery_cache_ttl_s = 60.0  # an answer is served this long at most (changes drop it)
[mqtt]
host = "0.0.0.0"
port = 8884
broker = ""                   # external broker (mqtts://host:port); empty = embedded
broker_protocol = "5"         # "3.1.1" for a broker with no MQTT 5 (RabbitMQ 3.10)
broker_login = "certificate"  # "password": the broker asks the cloud (HTTP auth backend);
                              # "mosquitto-dynsec": the cloud keeps Mosquitto's dynsec in step
broker_ingest = true          # false: this replica takes no telemetry (see the README)
[pki]
group_ca_rotation_days = 7
group_ca_overlap_days = 1
[telemetry]
retention_days = 7.0
[[telemetry.export]]          # any number: where stored telemetry is also sent (docs/operations.md)
name = "lake"
kind = "webhook"              # or "mqtt", or "amqp" (pip install 'hedgerow[amqp]')
url = "https://hooks.example.org/telemetry"   # mqtt(s)://host:port, amqp(s)://user:pass@host/vhost
[limits]
max_upload_bytes = 16777216
[deployments]
deadline_s = 300.0            # unfinished by then, a deployment is failed
[secrets]
kek_file = ""                 # the key-encryption keyring; empty = DATA/pki/keyring.json
```

``hedgerow.tomlconfig`` reads it into ``CloudFile`` (one field per table): an unknown table
or key is refused with the nearest valid name, a wrong value names the field and the
expected type, keys older files have (``MOVED``) say what to write instead; the
``ConfigError`` names the file and every problem.

Secrets at rest: the data directory is 0700 and every file holding a secret (keys, the
admin token, the keyring, ``config.toml``, the SQLite database and its WAL) is 0600 from
its creation. ``check_modes`` is run by ``serve``: a secret file readable or writable by
group or others refuses the start (the message has the ``chmod`` to run); a data
directory wider than 0700 is a warning.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import logging
import os
import shlex
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import tomli_w

from hedgerow import tomlconfig
from hedgerow.cloud.domain import MAX_ROTATION_DAYS, MIN_ROTATION_DAYS
from hedgerow.cloud.errors import ConfigError
from hedgerow.cloud.telemetry_export import (
    AMQP_EXTRA,
    DEFAULT_BATCH,
    DEFAULT_EXCHANGE,
    DEFAULT_TIMEOUT_S,
    ExportConfigError,
    ExportTarget,
    check_unique,
    export_target,
)
from hedgerow.tomlconfig import Moved, check, within

DEFAULT_API_PORT = 8080
DEFAULT_DEVICE_PORT = 8443
DEFAULT_MQTT_PORT = 8884
DEFAULT_MAX_UPLOAD = 16 * 1024 * 1024
#: device HTTPS under a storm (docs/scale.md, "Discovery under a storm")
DEFAULT_MAX_PENDING = 256
#: just under the thing SDK's 10 s discovery timeout: a device is answered or shed in it
DEFAULT_PENDING_WAIT_S = 8.0
DEFAULT_DISCOVERY_CACHE_ENTRIES = 20_000
DEFAULT_DISCOVERY_CACHE_TTL_S = 60.0
BROKER_PROTOCOLS: Final = ("5", "3.1.1")
BROKER_LOGINS: Final = ("certificate", "password", "mosquitto-dynsec")
#: ``broker_login`` values where cores and the cloud log in with a password (derived from
#: ``DATA/broker-auth-secret``, written into each core's bundle).
PASSWORD_LOGINS: Final = ("password", "mosquitto-dynsec")
CONFIG_FILE = "config.toml"
#: Overrides ``[secrets] kek_file`` (the keyring can live outside the data directory).
KEK_FILE_ENV = "HEDGEROW_CLOUD_KEK_FILE"
#: Mode bits a secret file must not have: anything for group or others.
PRIVATE_MASK = 0o077

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class DataPaths:
    """Where things live inside one data directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def database(self) -> Path:
        return self.root / "cloud.db"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def root_ca_cert(self) -> Path:
        return self.pki / "root-ca.pem"

    @property
    def root_ca_key(self) -> Path:
        return self.pki / "root-ca.key"

    @property
    def server_cert(self) -> Path:
        return self.pki / "server.cert.pem"

    @property
    def server_key(self) -> Path:
        return self.pki / "server.key"

    @property
    def signing_key(self) -> Path:
        return self.pki / "deploy-signing.key"

    @property
    def verify_key(self) -> Path:
        return self.pki / "deploy-verify.pem"

    @property
    def claim_ca_cert(self) -> Path:
        """The claim CA: signs claim certificates only (made on first use)."""
        return self.pki / "claim-ca.pem"

    @property
    def claim_ca_key(self) -> Path:
        return self.pki / "claim-ca.key"

    @property
    def cloud_client_cert(self) -> Path:
        """The cloud's own client identity (for an external broker)."""
        return self.pki / "cloud.cert.pem"

    @property
    def cloud_client_key(self) -> Path:
        return self.pki / "cloud.key"

    @property
    def group_cas(self) -> Path:
        return self.pki / "groups"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def admin_token(self) -> Path:
        return self.root / "admin-token"

    @property
    def broker_auth_secret(self) -> Path:
        """What the external broker's logins derive from (``broker_login = "password"``)."""
        return self.root / "broker-auth-secret"

    @property
    def keyring(self) -> Path:
        """The default place of the key-encryption keyring (``[secrets] kek_file``)."""
        return self.pki / "keyring.json"

    @property
    def secret_files(self) -> tuple[Path, ...]:
        """Files that must be owner-only (those that exist are checked at start)."""
        return (
            self.config,
            self.admin_token,
            self.broker_auth_secret,
            self.root_ca_key,
            self.claim_ca_key,
            self.server_key,
            self.cloud_client_key,
            self.signing_key,
            self.database,
            self.root / "cloud.db-wal",
            self.root / "cloud.db-shm",
        )


@dataclass(frozen=True)
class CloudConfig:
    data_dir: Path
    database: str = ""
    advertise: str = "127.0.0.1"
    hosts: tuple[str, ...] = ()
    api: Listen = field(default_factory=lambda: Listen("127.0.0.1", DEFAULT_API_PORT))
    device: Listen = field(default_factory=lambda: Listen("0.0.0.0", DEFAULT_DEVICE_PORT))
    mqtt: Listen = field(default_factory=lambda: Listen("0.0.0.0", DEFAULT_MQTT_PORT))
    broker: str = ""
    group_ca_rotation_days: int = 7
    group_ca_overlap_days: int = 1
    retention_days: float = 7.0
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    #: HTTPS for the API: None = whenever it listens beyond loopback.
    api_tls: bool | None = None
    #: The external broker's MQTT version: "5", or "3.1.1" where it offers no 5 (cores
    #: then name themselves in the topic, and there are no shared subscriptions).
    broker_protocol: str = "5"
    #: How the cloud and cores log in to the external broker: "certificate" (TLS client
    #: certificates), "password" (the broker asks ``/api/v1/broker-auth/``), or
    #: "mosquitto-dynsec" (passwords too; the cloud keeps Mosquitto's dynamic security
    #: clients and roles in step with the registry, ``hedgerow.cloud.mosquitto_dynsec``).
    broker_login: str = "certificate"
    #: Whether this replica ingests telemetry from the external broker.
    broker_ingest: bool = True
    #: Share name the ingest workers use on an external broker.
    ingest_share: str = "hedgerow-ingest"
    #: This replica's name at an external broker (its persistent session); empty = the
    #: host name and API port.
    replica_id: str = ""
    #: The key-encryption keyring; empty = ``DATA/pki/keyring.json``.
    kek_file: str = ""
    #: Unfinished this long after it was made, a deployment is failed.
    deployment_deadline_s: float = 300.0
    #: The pre-provisioning hook: a command (split like a shell would, run without one)
    #: asked before a claim registers a device; empty = every serial is allowed.
    provisioning_hook: str = ""
    #: where stored telemetry is exported (``[[telemetry.export]]``)
    exports: tuple[ExportTarget, ...] = ()
    #: Device HTTPS under a storm: connections in their TLS handshake or first request at
    #: once (0: no limit) and how long one over it waits before it is closed unanswered.
    device_max_pending: int = DEFAULT_MAX_PENDING
    device_pending_wait_s: float = DEFAULT_PENDING_WAIT_S
    #: Discovery answers kept per thing (0: none) and the longest one is served.
    discovery_cache_entries: int = DEFAULT_DISCOVERY_CACHE_ENTRIES
    discovery_cache_ttl_s: float = DEFAULT_DISCOVERY_CACHE_TTL_S

    def __post_init__(self) -> None:
        if not MIN_ROTATION_DAYS <= self.group_ca_rotation_days <= MAX_ROTATION_DAYS:
            raise ConfigError(
                f"group_ca_rotation_days must be within {MIN_ROTATION_DAYS}..{MAX_ROTATION_DAYS}"
            )
        if not 0 <= self.group_ca_overlap_days <= self.group_ca_rotation_days:
            raise ConfigError("group_ca_overlap_days must be within 0..group_ca_rotation_days")
        if self.retention_days <= 0:
            raise ConfigError("retention_days must be positive")
        if self.deployment_deadline_s <= 0:
            raise ConfigError("deployments.deadline_s must be positive")
        if self.broker_protocol not in BROKER_PROTOCOLS:
            raise ConfigError(
                f"broker_protocol {self.broker_protocol!r}: use one of {', '.join(BROKER_PROTOCOLS)}"
            )
        if self.broker_login not in BROKER_LOGINS:
            raise ConfigError(
                f"broker_login {self.broker_login!r}: use one of {', '.join(BROKER_LOGINS)}"
            )
        if self.device_max_pending < 0 or self.discovery_cache_entries < 0:
            raise ConfigError("device.max_pending and discovery_cache_entries must be 0 or more")
        if self.device_pending_wait_s <= 0 or self.discovery_cache_ttl_s <= 0:
            raise ConfigError("device.pending_wait_s and discovery_cache_ttl_s must be positive")
        for listen in (self.api, self.device, self.mqtt):
            if not 0 <= listen.port <= 65535:
                raise ConfigError(f"port {listen.port} is out of range")

    @property
    def paths(self) -> DataPaths:
        return DataPaths(self.data_dir)

    @property
    def kek_path(self) -> Path:
        if not self.kek_file:
            return self.paths.keyring
        path = Path(self.kek_file).expanduser()
        return path if path.is_absolute() else self.data_dir / path

    @property
    def password_login(self) -> bool:
        """Cores and the cloud log in to the external broker with derived passwords."""
        return bool(self.broker) and self.broker_login in PASSWORD_LOGINS

    @property
    def database_url(self) -> str:
        return normalise_database_url(self.database or f"sqlite:///{self.paths.database}")

    def replace(self, **changes: Any) -> CloudConfig:
        return dataclasses.replace(self, **changes)

    def to_toml(self) -> dict[str, Any]:
        return {
            "cloud": {
                "database": self.database,
                "advertise": self.advertise,
                "hosts": list(self.hosts),
            },
            "api": {
                "host": self.api.host,
                "port": self.api.port,
                **({"tls": self.api_tls} if self.api_tls is not None else {}),
            },
            "device": {
                "host": self.device.host,
                "port": self.device.port,
                "max_pending": self.device_max_pending,
                "pending_wait_s": self.device_pending_wait_s,
                "discovery_cache_entries": self.discovery_cache_entries,
                "discovery_cache_ttl_s": self.discovery_cache_ttl_s,
            },
            "mqtt": {
                "host": self.mqtt.host,
                "port": self.mqtt.port,
                "broker": self.broker,
                "broker_protocol": self.broker_protocol,
                "broker_login": self.broker_login,
                "broker_ingest": self.broker_ingest,
            },
            "pki": {
                "group_ca_rotation_days": self.group_ca_rotation_days,
                "group_ca_overlap_days": self.group_ca_overlap_days,
            },
            "telemetry": {
                "retention_days": self.retention_days,
                **({"export": [t.to_toml() for t in self.exports]} if self.exports else {}),
            },
            "limits": {"max_upload_bytes": self.max_upload_bytes},
            "secrets": {"kek_file": self.kek_file},
            "deployments": {"deadline_s": self.deployment_deadline_s},
            **(
                {"provisioning": {"hook": self.provisioning_hook}} if self.provisioning_hook else {}
            ),
        }


def normalise_database_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 (the driver Hedgerow ships with)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _positive(value: float) -> str | None:
    return None if value > 0 else f"{value} must be positive"


@dataclass(frozen=True, slots=True)
class CloudTable:
    database: str = ""
    advertise: str = "127.0.0.1"
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ApiTable:
    host: str = "127.0.0.1"
    port: int = field(default=DEFAULT_API_PORT, metadata=within(0, 65535))
    tls: bool | None = None


@dataclass(frozen=True, slots=True)
class DeviceTable:
    host: str = "0.0.0.0"
    port: int = field(default=DEFAULT_DEVICE_PORT, metadata=within(0, 65535))
    max_pending: int = field(default=DEFAULT_MAX_PENDING, metadata=within(0))
    pending_wait_s: float = field(default=DEFAULT_PENDING_WAIT_S, metadata=check(_positive))
    discovery_cache_entries: int = field(
        default=DEFAULT_DISCOVERY_CACHE_ENTRIES, metadata=within(0)
    )
    discovery_cache_ttl_s: float = field(
        default=DEFAULT_DISCOVERY_CACHE_TTL_S, metadata=check(_positive)
    )


@dataclass(frozen=True, slots=True)
class MqttTable:
    host: str = "0.0.0.0"
    port: int = field(default=DEFAULT_MQTT_PORT, metadata=within(0, 65535))
    broker: str = ""
    broker_protocol: str = "5"
    broker_login: str = "certificate"
    broker_ingest: bool = True


@dataclass(frozen=True, slots=True)
class PkiTable:
    group_ca_rotation_days: int = field(
        default=7, metadata=within(MIN_ROTATION_DAYS, MAX_ROTATION_DAYS)
    )
    group_ca_overlap_days: int = field(default=1, metadata=within(0, MAX_ROTATION_DAYS))


@dataclass(frozen=True, slots=True)
class ExportTable:
    """One ``[[telemetry.export]]``: checked as a whole by ``telemetry_export.export_target``."""

    name: str
    kind: str
    url: str
    topic_filter: str = "#"
    batch_size: int = DEFAULT_BATCH
    start: str = "oldest"
    timeout_s: float = DEFAULT_TIMEOUT_S
    secret: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    topic: str = "{topic}"
    protocol: str = "5"
    client_id: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    username: str = ""
    password: str = ""
    exchange: str = DEFAULT_EXCHANGE
    mandatory: bool = True


@dataclass(frozen=True, slots=True)
class TelemetryTable:
    retention_days: float = field(default=7.0, metadata=check(_positive))
    export: tuple[ExportTable, ...] = ()


@dataclass(frozen=True, slots=True)
class LimitsTable:
    max_upload_bytes: int = field(default=DEFAULT_MAX_UPLOAD, metadata=within(1))


@dataclass(frozen=True, slots=True)
class SecretsTable:
    kek_file: str = ""


@dataclass(frozen=True, slots=True)
class DeploymentsTable:
    deadline_s: float = field(default=300.0, metadata=check(_positive))


@dataclass(frozen=True, slots=True)
class ProvisioningTable:
    hook: str = ""


@dataclass(frozen=True, slots=True)
class CloudFile:
    """``config.toml`` as written: one field per table (``hedgerow.tomlconfig`` reads it)."""

    cloud: CloudTable = field(default_factory=CloudTable)
    api: ApiTable = field(default_factory=ApiTable)
    device: DeviceTable = field(default_factory=DeviceTable)
    mqtt: MqttTable = field(default_factory=MqttTable)
    pki: PkiTable = field(default_factory=PkiTable)
    telemetry: TelemetryTable = field(default_factory=TelemetryTable)
    limits: LimitsTable = field(default_factory=LimitsTable)
    secrets: SecretsTable = field(default_factory=SecretsTable)
    deployments: DeploymentsTable = field(default_factory=DeploymentsTable)
    provisioning: ProvisioningTable = field(default_factory=ProvisioningTable)


#: Tables and keys older files have that Hedgerow renamed or dropped, with what to write.
MOVED: Final = (
    Moved(
        "database",
        None,
        'moved: write the database URL as [cloud] database = "postgresql://..." '
        "(empty = SQLite in the data directory)",
    ),
    Moved(
        "api",
        "token",
        "dropped: the admin token lives in DATA/admin-token (`hedgerow cloud init` writes it; "
        "clients send it in the Authorization header)",
    ),
    Moved(
        "secrets",
        "kek",
        "renamed: write the keyring's path as [secrets] kek_file (never the key itself)",
    ),
)


def from_toml(data_dir: Path, data: dict[str, Any]) -> CloudConfig:
    """A parsed ``config.toml`` as a ``CloudConfig``; ``ConfigError`` names the file and
    every bad field."""
    file = str(data_dir / CONFIG_FILE)
    try:
        parsed = tomlconfig.build(data, CloudFile, file=file, moved=MOVED)
    except tomlconfig.ConfigFileError as exc:
        raise ConfigError(str(exc), field=exc.field) from exc
    exports = _export_targets(parsed.telemetry.export, file)
    try:
        return CloudConfig(
            data_dir=data_dir,
            database=parsed.cloud.database,
            advertise=parsed.cloud.advertise,
            hosts=parsed.cloud.hosts,
            api=Listen(parsed.api.host, parsed.api.port),
            api_tls=parsed.api.tls,
            device=Listen(parsed.device.host, parsed.device.port),
            device_max_pending=parsed.device.max_pending,
            device_pending_wait_s=parsed.device.pending_wait_s,
            discovery_cache_entries=parsed.device.discovery_cache_entries,
            discovery_cache_ttl_s=parsed.device.discovery_cache_ttl_s,
            mqtt=Listen(parsed.mqtt.host, parsed.mqtt.port),
            broker=parsed.mqtt.broker,
            broker_protocol=parsed.mqtt.broker_protocol,
            broker_login=parsed.mqtt.broker_login,
            broker_ingest=parsed.mqtt.broker_ingest,
            group_ca_rotation_days=parsed.pki.group_ca_rotation_days,
            group_ca_overlap_days=parsed.pki.group_ca_overlap_days,
            retention_days=parsed.telemetry.retention_days,
            max_upload_bytes=parsed.limits.max_upload_bytes,
            kek_file=parsed.secrets.kek_file,
            deployment_deadline_s=parsed.deployments.deadline_s,
            provisioning_hook=parsed.provisioning.hook,
            exports=exports,
        )
    except ConfigError as exc:  # a rule across fields (the overlap within the rotation)
        raise ConfigError(f"{file}: {exc.message}", field=exc.field) from exc


def _export_targets(tables: tuple[ExportTable, ...], file: str) -> tuple[ExportTarget, ...]:
    """Each ``[[telemetry.export]]`` checked; the error names the file, the entry and the key."""
    targets: list[ExportTarget] = []
    for index, table in enumerate(tables):
        try:
            targets.append(
                export_target(**{f.name: getattr(table, f.name) for f in dataclasses.fields(table)})
            )
        except ExportConfigError as exc:
            where = f"telemetry.export[{index}].{exc.field}"
            raise ConfigError(f"{file}: {where}: {exc.message}", field=where) from exc
        if table.kind == "amqp" and importlib.util.find_spec("aiormq") is None:
            where = f"telemetry.export[{index}].kind"
            raise ConfigError(
                f"{file}: {where}: an AMQP target needs the AMQP client, not installed here: "
                f"pip install '{AMQP_EXTRA}'",
                field=where,
            )
    try:
        check_unique(targets)
    except ExportConfigError as exc:
        raise ConfigError(
            f"{file}: telemetry.export: {exc.message}", field="telemetry.export"
        ) from exc
    root = Path(file).parent
    return tuple(_relative_to(root, t) for t in targets)


def _relative_to(root: Path, target: ExportTarget) -> ExportTarget:
    """TLS files named relative to the data directory (as ``kek_file``)."""
    paths: dict[str, Any] = {}
    for key in ("ca_file", "cert_file", "key_file"):
        value = getattr(target, key)
        if value and not Path(value).expanduser().is_absolute():
            paths[key] = str(root / value)
    return dataclasses.replace(target, **paths)


def load(data_dir: Path) -> CloudConfig:
    path = data_dir / CONFIG_FILE
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path} not found: run `hedgerow cloud init --data {data_dir}` first"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    return from_toml(data_dir, data)


def save(config: CloudConfig) -> None:
    """Write ``config.toml`` (owner-only: a database URL may carry a password)."""
    write_private(config.paths.config, tomli_w.dumps(config.to_toml()).encode())


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file that is 0600 from its creation (never at the umask's mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as stream:
        os.fchmod(stream.fileno(), 0o600)
        stream.write(data)


def create_private(path: Path) -> None:
    """Create ``path`` empty and 0600 if it does not exist (SQLite then keeps the mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def mode_problems(
    modes: dict[Path, int], private_dirs: dict[Path, int]
) -> tuple[list[str], list[str]]:
    """Pure: refusals for secret files with group/other bits, warnings for wide directories.

    ``modes`` maps each existing secret file to its permission bits, ``private_dirs`` each
    directory that should be 0700. Returns ``(refusals, warnings)``."""
    refusals = [
        f"{path} is {mode:04o}" for path, mode in sorted(modes.items()) if mode & PRIVATE_MASK
    ]
    warnings = [
        f"{path} is {mode:04o}: run `chmod 700 {shlex.quote(str(path))}` (only its owner needs it)"
        for path, mode in sorted(private_dirs.items())
        if mode & PRIVATE_MASK
    ]
    return refusals, warnings


def check_modes(config: CloudConfig) -> list[str]:
    """Refuse a data directory whose secrets others can read; returns the warnings.

    Raises ``ConfigError`` naming every file readable or writable beyond its owner and the
    ``chmod`` command that fixes them all; a data or ``pki`` directory wider than 0700 is
    only a warning (the files inside are what must be private)."""
    paths = config.paths
    files = list(paths.secret_files)
    if config.database:  # PostgreSQL: no database file here
        files = [f for f in files if not f.name.startswith("cloud.db")]
    files.append(config.kek_path)
    modes: dict[Path, int] = {}
    for path in files:
        try:
            modes[path] = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
    dirs: dict[Path, int] = {}
    for directory in (paths.root, paths.pki):
        try:
            dirs[directory] = stat.S_IMODE(directory.stat().st_mode)
        except FileNotFoundError:
            continue
    refusals, warnings = mode_problems(modes, dirs)
    if refusals:
        wide = [shlex.quote(str(p)) for p, m in sorted(modes.items()) if m & PRIVATE_MASK]
        raise ConfigError(
            "secret files are readable or writable beyond their owner ("
            + "; ".join(refusals)
            + f"): run `chmod 600 {' '.join(wide)}` and start again"
        )
    for warning in warnings:
        log.warning("cloud.data_dir_mode detail=%r", warning)
    return warnings
