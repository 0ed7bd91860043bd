"""The composition root: ``CoreDaemon(config)`` wires every part and runs them in order.

    async with CoreDaemon(config) as core:
        await core.stopped.wait()

The parts are components (``core/lifecycle.py``), started in this order and stopped in
reverse: ``identity`` (the core's files, the cloud API client) → ``spool`` (recovering the
intake log; flushed last at stop) → ``certificate`` (asked from the cloud only when missing)
→ ``broker`` (with admission) → ``streams`` (the stream manager, when ``[streams]
enabled``) → ``functions`` (and the shadow) → ``router`` →
``deployment`` (the last good deployment from disk, verified again) → ``local-endpoint``
(at stop it disconnects every device before the router goes) → ``background`` (one TaskGroup: cloud connector, deployment worker and poll, certificate
renewal, heartbeat, systemd watchdog) → ``metrics``. A part that fails to start stops
those before it. ``health()`` is derived from the components' and functions' states
(``hedgerow.lifecycle.State``). Parts are changed through their methods only
(``admission.set_deployment``, ``router.set_table``, ...). Without the cloud everything
local keeps working: devices are admitted and routed, cloud-bound messages wait in the
spool.

The daemon does not load ``cryptography`` (about 12 MB resident for the whole year):
certificates are read with ``hedgerow.certinfo``, TLS contexts come from
``hedgerow.tlscontext``, and the rare real cryptography (the server key and its CSR, a
deployment's signature) runs in the short-lived ``keytool`` child process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from hedgerow import certinfo
from hedgerow.backoff import BackoffPolicy
from hedgerow.broker import Broker, BrokerConfig
from hedgerow.broker.auth import Identity
from hedgerow.certinfo import CertInfo, CertInfoError
from hedgerow.connectors import ConnectorConfigError, ConnectorSpec
from hedgerow.connectors.host import ConnectorHost
from hedgerow.contract.deployment import DeploymentNotification, DeploymentStatus, StatusReport
from hedgerow.contract.errors import ContractError
from hedgerow.contract.logs import FUNCTION_PREFIX, LEVELS, LogLevels, level_name
from hedgerow.contract.provisioning import Membership
from hedgerow.contract.support import SupportBundleRequest
from hedgerow.contract.topics import CoreLeaf, core_topic
from hedgerow.lifecycle import BROKEN_STATES, HEALTHY_STATES, Health, health_of, parse_state
from hedgerow.mqtt.packets import Publish
from hedgerow.mqtt.topics import matches
from hedgerow.tlscontext import client_context

from . import keytool, service
from .admission import Admission
from .certificates import (
    ServerIdentity,
    advertised_hosts,
    detect_addresses,
    renewal_reason,
    write_atomic,
)
from .cloud_logs import CloudLogHandler, LogGate, LogShipper
from .cloudapi import CloudAPI, HttpCloudAPI
from .config import CORE_CERT, CORE_KEY, DEPLOY_VERIFY, METRICS_AUTO, ROOT_CA, CoreConfig
from .connector import MQTT_VERSIONS, CloudConnector
from .deployment import (
    OFFLINE_INBOX_POLL,
    OFFLINE_SUFFIX,
    DeploymentAgent,
    DeploymentDocument,
    DeploymentStore,
    OfflineFile,
    offline_inbox,
)
from .errors import CertificateError, CloudAPIError, ConfigError, CoreError, DeploymentError
from .host_stats import HostStats
from .lifecycle import Components, Step
from .router import Router, SpoolWriter
from .routing_table import CLOUD, SHADOW, RoutingTable
from .runtime import RuntimeUpdater
from .secrets import CoreSecrets
from .spool import IntakeLog, MemorySpool, Spool, SqliteSpool
from .status import DeviceActivity, HeartbeatPacer, MetricsServer, Snapshot, heartbeat

if TYPE_CHECKING:  # the stream manager is imported only when [streams] is enabled
    from hedgerow.streams.service import StreamService

    from .shadow_sync import ShadowSync

log = logging.getLogger(__name__)
#: the log levels set from the cloud, kept for the next start (``contract.logs.LogLevels``)
LOG_LEVELS_FILE = "log-levels.json"

_HEALTH_ORDER = [Health.BROKEN, Health.PENDING, Health.HEALTHY]  # worst first
#: the group's things as the cloud last announced them (see Admission.members)
MEMBERS_FILE = "members.json"
#: the device CAs and devices' own certificates the cloud said to trust (PEM)
DEVICE_TRUST_FILE = "device-trust.pem"
#: the thing each registered device certificate speaks for ({fingerprint: name})
DEVICE_NAMES_FILE = "device-names.json"
#: the least time between two membership requests one device's connection causes (s)
MEMBERS_REFRESH_S = 2.0
MAX_REFRESH_ENTRIES = 4096


def pem_of(der: bytes) -> str:
    """A DER certificate as PEM text."""
    body = base64.b64encode(der).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n"


class FunctionRuntime(Protocol):
    """What the core needs from ``hedgerow.functions.FunctionHost``."""

    async def apply(self, specs: Sequence[Any], artifacts: Mapping[str, Path]) -> None: ...

    async def deliver(self, name: str, topic: str, payload: bytes, source: str) -> None: ...

    def states(self) -> Mapping[str, str]:
        """Each function's ``hedgerow.lifecycle.State`` by name (its value, e.g. RUNNING)."""
        ...


PublishFn = Callable[[str, str, bytes], None]
#: ``factory(work_dir, publish, shadow, thing_name, shadow_publish=, default_run_as=)``
RuntimeFactory = Callable[..., Any]


class NoFunctions:
    """Used when no function runtime is available: any deployment with functions fails."""

    async def __aenter__(self) -> NoFunctions:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def apply(self, specs: Sequence[Any], artifacts: Mapping[str, Path]) -> None:
        if specs:
            raise CoreError("no function runtime is available on this core")

    async def deliver(self, name: str, topic: str, payload: bytes, source: str) -> None:
        raise CoreError(f"function {name!r} is not deployed")

    def states(self) -> Mapping[str, str]:
        return {}


def default_runtime(
    work_dir: Path, publish: PublishFn, shadow: Any, thing_name: str, **options: Any
) -> Any:
    """``hedgerow.functions.FunctionHost`` (``NoFunctions`` if the runtime cannot load)."""
    try:
        from hedgerow.functions.host import FunctionHost
    except ImportError as exc:
        log.warning(
            "core.functions.unavailable error=%r consequence=%r",
            str(exc),
            "deployments with functions will fail",
        )
        return NoFunctions()
    return FunctionHost(work_dir, publish=publish, shadow=shadow, thing_name=thing_name, **options)


def function_specs(doc: DeploymentDocument) -> list[Any]:
    from hedgerow.functions.spec import FunctionSpec

    return [FunctionSpec.from_document(entry) for entry in doc.functions]


def _read(config: CoreConfig, name: str) -> bytes:
    path = config.file(name)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(name, f"cannot read {path}: {exc.strerror}") from exc


class CoreApplier:
    """Puts a deployment into effect: routes first (a function may publish as its module is
    imported: the V1 hello-world pattern), then functions, then devices and ACL."""

    def __init__(self, daemon: CoreDaemon) -> None:
        self.d = daemon

    async def apply(self, doc: DeploymentDocument, artifacts: Mapping[str, Path]) -> None:
        d = self.d
        table = RoutingTable(doc.subscriptions, open_broker=doc.open_broker)
        specs = function_specs(doc)
        by_name = {
            str(entry["name"]): artifacts[str(entry["artifact"]["sha256"])]
            for entry in doc.functions
            if entry.get("artifact")
        }
        # Routes before functions: what a function publishes while it starts must find its
        # routes. Events for a function not started yet are counted as unknown (before this
        # deployment they had no route at all); a failure re-applies the previous deployment.
        d.secrets.set_versions(doc.secrets)  # before functions: they may read them at start
        d.table = table
        d.router.set_table(table)
        await d.functions.apply(specs, by_name)
        try:
            await d.connectors.apply([ConnectorSpec.from_json(c) for c in doc.connectors])
        except ConnectorConfigError as exc:
            raise DeploymentError(doc.deployment_id, str(exc)) from exc
        if d.shadow_sync is not None:
            d.shadow_sync.set_things(doc.sync_shadows, connected=d.cloud_connected())
        d.admission.set_deployment(table, doc.things)
        dropped = d.broker.disconnect_where(
            lambda i: not d.admission.still_admitted(i), "no longer admitted"
        )
        if dropped:
            log.info("core.deployment.disconnected count=%d", dropped)
        if d.connector is not None:
            d.spawn(d.connector.resubscribe(), "connector-resubscribe")

    async def health(self, doc: DeploymentDocument, limit_s: float) -> str | None:
        broken_connectors = sorted(
            name for name, state in self.d.connectors.states().items() if state in BROKEN_STATES
        )
        if broken_connectors:
            return f"connectors broken: {broken_connectors}"
        names = [str(entry["name"]) for entry in doc.functions]
        deadline = time.monotonic() + limit_s
        delay = 0.02
        while True:
            reported = self.d.functions.states()
            states = {n: str(reported.get(n, "missing")).lower() for n in names}
            parsed = [parse_state(state) for state in states.values()]
            broken = {n: s for n, s in states.items() if parse_state(s) in BROKEN_STATES}
            if broken:
                return f"functions not healthy: {broken}"
            if all(state in HEALTHY_STATES for state in parsed):
                return None
            if time.monotonic() >= deadline:
                return f"functions not ready within {limit_s:g} s: {states}"
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)


class CoreDaemon:
    def __init__(
        self,
        config: CoreConfig,
        *,
        api: CloudAPI | None = None,
        runtime_factory: RuntimeFactory = default_runtime,
        shadow: Any = None,
    ) -> None:
        self.config = config
        self._api = api
        self._runtime_factory = runtime_factory
        self._shadow = shadow
        self.started = time.monotonic()
        self.stopped = asyncio.Event()
        self.ready = asyncio.Event()
        #: set when the core switched to another release: exit for the launcher to start it
        self.restart_requested = asyncio.Event()
        self.updater = RuntimeUpdater.from_environ(
            config.data_dir,
            install_timeout=config.deployment.install_timeout,
            update_timeout=config.deployment.update_timeout,
        )
        self.local_address: tuple[str, int] | None = None
        self.metrics_address: tuple[str, int] | None = None
        self.connector: CloudConnector | None = None
        #: shadow sync with the cloud (None when a test hands in its own shadow service)
        self.shadow_sync: ShadowSync | None = None
        self.table = RoutingTable()
        self.components = self._components()
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._certificate_lock = asyncio.Lock()
        #: Wakes the certificate loop early (the cloud announced the group's CAs).
        self._certificate_wake = asyncio.Event()
        #: Wakes the membership loop (the cloud link came up: read the group's things).
        self._members_wake = asyncio.Event()
        #: when each vouched-for certificate last made the core ask the cloud
        self._members_refreshed: dict[str, float] = {}
        self._announced_cas: list[CertInfo] | None = None
        self.streams: StreamService | None = None
        #: periodic heartbeats, and one soon after each change (at most one a second)
        self._pacer = HeartbeatPacer(config.status.heartbeat_interval)
        self._heartbeat_wake = asyncio.Event()
        #: each device's last connect, publish or disconnect (for the heartbeat)
        self.activity = DeviceActivity()
        self._host_stats = HostStats(config.data_dir)
        self.log_shipper: LogShipper | None = None
        self.log_spool: Spool | None = None
        #: support bundle requests being built or uploaded (a retained request comes again
        #: at every connect until the cloud clears it)
        self._support_bundles: set[str] = set()
        #: the cloud log gate (None: ``[cloud_logs]`` off) and the root logger's level
        #: before the cloud lowered it (0: not lowered by us)
        self._log_gate: LogGate | None = None
        self._root_level = 0

    # ---- lifecycle --------------------------------------------------------------------

    def _components(self) -> Components:
        """The core's parts in start order (stopped in reverse)."""
        return Components([
            Step("identity", self._open_identity),
            Step("spool", self._open_spool_and_intake),
            Step("logs", self._open_cloud_logs),
            Step("certificate", self._open_certificate),
            Step("broker", self._open_broker),
            *([Step("streams", self._open_streams)] if self.config.streams.enabled else []),
            Step("functions", self._open_functions),
            Step("connectors", self._open_connectors),
            Step("router", self._open_router),
            Step("deployment", self._open_deployment),
            Step("local-endpoint", self._open_local_endpoint),
            Step("background", self._open_background),
            Step("metrics", self._open_metrics),
        ])  # fmt: skip

    async def __aenter__(self) -> CoreDaemon:
        await self.components.start()
        self.ready.set()
        service.sd_notify("READY=1")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.components.stop()

    def spawn(self, coro: Any, name: str) -> None:
        assert self._tg is not None
        self._tasks.append(self._tg.create_task(coro, name=name))

    def health(self) -> Health:
        """The core's health: its components' and its functions' states (worst wins)."""
        functions = health_of(
            state
            for state in map(parse_state, self.functions_states().values())
            if state is not None
        )
        component = self.components.health()
        host: ConnectorHost | None = getattr(self, "connectors", None)
        connectors = host.health() if host is not None else Health.HEALTHY
        return min(functions, component, connectors, key=_HEALTH_ORDER.index)

    def functions_states(self) -> Mapping[str, str]:
        runtime: FunctionRuntime | None = getattr(self, "functions", None)
        return runtime.states() if runtime is not None else {}

    @contextlib.asynccontextmanager
    async def _open_identity(self) -> AsyncIterator[None]:
        """The core's files, the cloud's root and deployment key, the cloud API client."""
        c = self.config
        for name in (CORE_CERT, CORE_KEY, ROOT_CA, DEPLOY_VERIFY):
            _read(c, name)
        try:
            self.roots = certinfo.all_from_pem(_read(c, ROOT_CA))
        except CertInfoError as exc:
            raise ConfigError(ROOT_CA, f"not a PEM certificate: {exc}") from exc
        try:
            self.verify_key = keytool.ed25519_public_key_from_pem(_read(c, DEPLOY_VERIFY))
        except ValueError as exc:
            raise ConfigError(DEPLOY_VERIFY, f"not an Ed25519 public key: {exc}") from exc
        # resuming: after the first request the core's calls to the cloud skip the
        # certificate exchange (the cloud authorizes each request from the certificate)
        self.cloud_tls = client_context(
            str(c.file(ROOT_CA)), str(c.file(CORE_CERT)), str(c.file(CORE_KEY)), resume=True
        )
        if self._api is not None:
            self.api: CloudAPI = self._api
            yield
            return
        http_api = HttpCloudAPI(c.cloud.https, self.cloud_tls)
        self.api = http_api
        try:
            yield
        finally:
            await http_api.aclose()

    @contextlib.asynccontextmanager
    async def _open_spool_and_intake(self) -> AsyncIterator[None]:
        """The spool, with what a crash left in the intake log."""
        c = self.config
        self.spool = self._open_spool()
        try:
            intake_path = c.data_dir / "intake.log"
            recovered, last = IntakeLog.recover(intake_path, self.spool.mark())
            self.spool.append_many(recovered, last)
            if recovered:
                log.info("core.spool.recovered count=%d", len(recovered))
            self._intake = IntakeLog(intake_path, start=last)
            try:
                self._intake.reset()
                yield
                # stops after the broker (reverse order): what the last devices sent is
                # committed
                self._final_flush()
            finally:
                self._intake.close()
        finally:
            self.spool.close()

    @contextlib.asynccontextmanager
    async def _open_cloud_logs(self) -> AsyncIterator[None]:
        """The log spool and the shipper on the root logger (``[cloud_logs]``): the core's
        and its functions' records go to the cloud beside the telemetry, apart from it."""
        c = self.config
        settings = c.cloud_logs
        if not settings.enabled:
            yield
            return
        if c.spool.backend == "memory":
            self.log_spool = MemorySpool(settings.spool_bytes)
        else:  # a lost acknowledgement resends a batch: no fsync per commit needed
            self.log_spool = SqliteSpool(
                c.data_dir / "logspool.db", settings.spool_bytes, "drop-oldest", "normal"
            )
        gate = LogGate(
            level=LEVELS[settings.level.upper()],
            function_level=LEVELS[settings.function_level.upper()],
            function_levels=settings.levels(),
            rate=settings.rate,
            burst=settings.burst,
        )
        self.log_shipper = shipper = LogShipper(
            c.name, self.log_spool, gate, wake=self._logs_written
        )
        handler = CloudLogHandler(shipper)
        root = logging.getLogger()
        root.addHandler(handler)
        self._log_gate, self._root_level = gate, root.level
        self._apply_log_levels(self._stored_log_levels())  # the cloud's, kept from before
        try:
            yield
        finally:
            self._log_gate = None
            if self._root_level:
                root.setLevel(self._root_level)
            root.removeHandler(handler)
            try:
                shipper.flush()
            except CoreError as exc:
                log.warning("core.cloud_logs.final_flush_failed error=%s", exc)
            self.log_spool.close()

    def _stored_log_levels(self) -> LogLevels:
        try:
            return LogLevels.from_json((self.config.data_dir / LOG_LEVELS_FILE).read_bytes())
        except FileNotFoundError:
            return LogLevels()
        except (OSError, ContractError) as exc:
            log.warning("core.cloud_logs.bad_stored_levels error=%s", exc)
            return LogLevels()

    def _log_levels_from_cloud(self, payload: bytes) -> None:
        """The levels set from the cloud (retained: at every connect too): kept on disk
        for the next start, applied now."""
        try:
            levels = LogLevels.from_json(payload)
        except ContractError as exc:
            log.warning("core.cloud_logs.bad_levels error=%s payload=%r", exc, payload[:200])
            return
        path = self.config.data_dir / LOG_LEVELS_FILE
        if levels == LogLevels():
            path.unlink(missing_ok=True)
        else:
            write_atomic(path, levels.to_json())
        self._apply_log_levels(levels)

    def _apply_log_levels(self, levels: LogLevels) -> None:
        """The cloud's levels over ``[cloud_logs]``': the gate, the root logger (lowered
        when the cloud asks for more than it lets through) and each function's worker."""
        gate = self._log_gate
        if gate is None:
            return
        settings = self.config.cloud_logs
        gate.level = LEVELS[settings.level.upper()] if levels.core is None else levels.core
        gate.function_levels = {**settings.levels(), **levels.functions}
        if self._root_level:
            logging.getLogger().setLevel(min(self._root_level, gate.level))
        functions = getattr(self, "functions", None)
        refresh = getattr(functions, "refresh_log_levels", None)
        if refresh is not None:
            refresh()
        log.info(
            "core.cloud_logs.levels core=%s functions=%s",
            level_name(gate.level),
            {name: level_name(level) for name, level in sorted(gate.function_levels.items())},
        )

    def _function_log_level(self, function: str) -> int:
        """The level a function's worker logs at: low enough for what the cloud wants of
        it, never above INFO (its own log file keeps what it always had)."""
        gate = self._log_gate
        if gate is None:
            return logging.INFO
        return min(logging.INFO, gate.threshold(FUNCTION_PREFIX + function))

    def _logs_written(self) -> None:
        if self.connector is not None:
            self.connector.wake_logs()

    @contextlib.asynccontextmanager
    async def _open_certificate(self) -> AsyncIterator[None]:
        """The server certificate (asked from the cloud only when missing)."""
        c = self.config
        self.server_identity = ServerIdentity(
            c.data_dir / "server", c.file(ROOT_CA), c.data_dir / DEVICE_TRUST_FILE
        )
        await self._ensure_certificate()
        yield

    @contextlib.asynccontextmanager
    async def _open_broker(self) -> AsyncIterator[None]:
        """Admission (who may connect, publish, subscribe) and the local broker."""
        self.admission = Admission(
            self.roots,
            revoked=self._load_revocations(),
            members=self._load_members(),
            trusted=self._load_device_trust(),
            names=self._load_device_names(),
            group=self.config.group,
            on_admitted=self._device_connected,
            refresh=self._refresh_members,
        )
        limits = self.config.broker
        async with Broker(
            BrokerConfig(
                deny_policy=self.config.local.deny_policy,
                max_outbound_bytes=limits.max_outbound_bytes,
                max_total_outbound_bytes=limits.max_total_outbound_bytes,
                slow_client_timeout=limits.slow_client_timeout,
                max_inflight=limits.max_inflight,
                max_queued_messages=limits.max_queued_messages,
                max_keepalive=limits.max_keepalive,
            ),
            authenticator=self.admission,
            authorizer=self.admission,
            # devices' persistent sessions and retained messages survive a restart
            persist=self.config.data_dir / "broker",
        ) as broker:
            self.broker = broker
            removers = (
                broker.add_disconnect_listener(self._device_disconnected),
                broker.add_interceptor(self._device_published),
            )
            try:
                yield
            finally:
                for remove in removers:
                    remove()

    @contextlib.asynccontextmanager
    async def _open_functions(self) -> AsyncIterator[None]:
        """The shadow service and the function runtime (which reaches the shadow through
        its own ``Shadows`` protocol)."""
        c = self.config
        self.secrets = CoreSecrets(c.file(CORE_KEY), c.group, c.name)
        from .shadow import ShadowService
        from .shadow_sync import ShadowSync

        if self._shadow is None:
            self._shadow = ShadowService(c.data_dir / "shadows.json")
        if isinstance(self._shadow, ShadowService):
            self.shadow_sync = ShadowSync(
                self._shadow,
                c.data_dir / "shadow-sync.json",
                self._shadow_send,
                self._shadow_synced,
            )
        run_as = c.functions.run_as_user
        if run_as and c.functions.run_as_group:
            run_as = f"{run_as}:{c.functions.run_as_group}"
        stream_options: dict[str, Any] = {}
        if self.streams is not None:  # functions are given the stream manager's port
            stream_options["stream_manager_port"] = self.streams.port
        async with self._runtime_factory(
            c.data_dir / "functions",
            self._function_publish,
            self._shadow,
            c.name,
            shadow_publish=self._shadow_publish,
            default_run_as=run_as,
            secrets=self.secrets.get,
            **stream_options,
        ) as runtime:
            self.functions: FunctionRuntime = runtime
            watch = getattr(runtime, "watch_changes", None)
            if watch is not None:  # a function started, stopped or failed: tell the cloud
                watch(lambda: self.state_changed("functions"))
            watch_output = getattr(runtime, "watch_output", None)
            if watch_output is not None and self.log_shipper is not None:
                watch_output(self.log_shipper.function_output)
            watch_log_levels = getattr(runtime, "watch_log_levels", None)
            if watch_log_levels is not None:
                watch_log_levels(self._function_log_level)
            yield

    @contextlib.asynccontextmanager
    async def _open_connectors(self) -> AsyncIterator[None]:
        """The industrial connectors a deployment names (none until one does; their
        libraries load only then)."""
        async with ConnectorHost(self._connector_publish) as host:
            self.connectors = host
            yield

    @contextlib.asynccontextmanager
    async def _open_router(self) -> AsyncIterator[None]:
        """The router between devices, functions, the shadow and the cloud's spool."""
        self.spool_writer = SpoolWriter(self.spool, self._intake, self._spool_committed)
        if self.streams is not None:
            from hedgerow.streams.exporters import SpoolSink

            self.streams.connect_cloud(
                SpoolSink(self.spool_writer, self.spool, allows=self._cloud_takes)
            )
        async with Router(
            self.table,
            cloud=self.spool_writer,
            local=_BrokerBus(self.broker),
            functions=self.functions,
            shadow=self._shadow,
            connectors=self.connectors,
        ) as router:
            self.router = router
            remove = self.broker.add_interceptor(self.router.intercept)
            try:
                yield
            finally:
                remove()

    @contextlib.asynccontextmanager
    async def _open_deployment(self) -> AsyncIterator[None]:
        """The deployment agent, and the last good deployment from disk (verified again)."""
        c = self.config
        self.agent = DeploymentAgent(
            api=self.api,
            store=DeploymentStore(c.data_dir / "deployments"),
            applier=CoreApplier(self),
            report=self._report_status,
            verify_key=self.verify_key,
            core=c.name,
            group=c.group,
            health_timeout=c.deployment.health_timeout,
            deadline_s=c.deployment.deadline,
            updater=self.updater,
            restart=self.restart_requested.set,
            cloud_linked=self._wait_cloud_link,
        )
        await self.agent.restore()
        self._resume_update()
        yield

    @contextlib.asynccontextmanager
    async def _open_local_endpoint(self) -> AsyncIterator[None]:
        """The devices' TLS listener. Stopped first (reverse order), with every device
        disconnected: a PUBLISH the broker acknowledges must still find the router, which
        stops after this, so nothing acknowledged during a stop goes unrouted."""
        c = self.config
        self.local_address = await self.broker.listen(
            c.local.host, c.local.port, ssl=self.server_identity.context()
        )
        log.info("core.local.listening address=%s:%s", *self.local_address)
        yield
        await self.broker.shut_out_clients()

    @contextlib.asynccontextmanager
    async def _open_background(self) -> AsyncIterator[None]:
        """The cloud connector and the loops: deployments, certificates, heartbeat,
        systemd watchdog — one TaskGroup, cancelled at stop."""
        c = self.config
        self.connector = CloudConnector(
            core=c.name,
            host=c.cloud.mqtt.host,
            port=c.cloud.mqtt.port,
            ssl_context=self.cloud_tls if c.cloud.mqtt_tls else None,
            version=MQTT_VERSIONS[c.cloud.mqtt_protocol],
            username=c.cloud.mqtt_username,
            password=c.cloud.mqtt_password,
            spool=self.spool,
            on_message=self._cloud_message,
            on_connected=self._cloud_connected,
            filters=lambda: self.table.filters_from(CLOUD),
            keepalive=c.connector.keepalive,
            inflight=c.connector.inflight,
            backoff=BackoffPolicy(c.connector.backoff_base, c.connector.backoff_cap),
            log_spool=self.log_spool,
        )
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self.spawn(self.connector.run(), "cloud-connector")
            self.spawn(self.agent.run(), "deployment-agent")
            self.spawn(self._poll_deployments(), "deployment-poll")
            self.spawn(self._offline_inbox(), "deployment-inbox")
            self.spawn(self._certificate_loop(), "certificate-renewal")
            self.spawn(self._heartbeat_loop(), "heartbeat")
            self.spawn(self._membership_loop(), "membership")
            if self.log_shipper is not None:
                self.spawn(self.log_shipper.run(), "cloud-logs")
            interval = service.watchdog_interval()
            if interval:
                self.spawn(self._watchdog(interval), "systemd-watchdog")
            try:
                yield
            finally:
                for task in self._tasks:
                    task.cancel()

    @contextlib.asynccontextmanager
    async def _open_metrics(self) -> AsyncIterator[None]:
        if not self.config.status.metrics_port:
            yield
            return
        metrics = await self._start_metrics()
        try:
            yield
        finally:
            if metrics is not None:
                await metrics.close()
                if self.config.status.metrics_port == METRICS_AUTO:
                    self.config.metrics_address_file.unlink(missing_ok=True)

    async def _start_metrics(self) -> MetricsServer | None:
        """The metrics listener: on the configured port, or with ``"auto"`` on a free one
        whose ``host:port`` is written to ``metrics.address`` in the data directory (two
        cores on one host never collide; ``core check`` reads the file)."""
        c = self.config
        auto = c.status.metrics_port == METRICS_AUTO
        port = 0 if auto else int(c.status.metrics_port)
        metrics = MetricsServer(self.snapshot)
        try:
            self.metrics_address = await metrics.start(c.status.metrics_host, port)
        except OSError as exc:
            # Metrics are an aid, not a duty: a taken port must not stop the core routing.
            log.warning(
                "core.metrics.unavailable host=%s port=%s error=%r advice=%r",
                c.status.metrics_host,
                port,
                str(exc),
                'set status.metrics_port to "auto" or a free port',
            )
            return None
        host, bound = self.metrics_address
        if auto:
            shown = f"[{host}]" if ":" in host else host
            write_atomic(c.metrics_address_file, f"{shown}:{bound}\n".encode())
        log.info("core.metrics.listening address=%s:%s", host, bound)
        return metrics

    @contextlib.asynccontextmanager
    async def _open_streams(self) -> AsyncIterator[None]:
        """The stream manager (``[streams] enabled``): before the functions, which are given
        its port; its cloud exports join the spool writer when the router starts."""
        from hedgerow.streams.manager import StreamsSettings
        from hedgerow.streams.service import StreamService

        sc = self.config.streams
        settings = StreamsSettings(
            self.config.streams_dir, sc.max_bytes, sc.fsync_interval, core=self.config.name
        )
        streams = StreamService(settings, host=sc.host, port=sc.port, authorize=self._stream_token)
        await streams.start()
        self.streams = streams
        log.info("core.streams.listening port=%s", streams.port)
        try:
            yield
        finally:
            await streams.stop()

    def _cloud_takes(self, topic: str) -> bool:
        """The cloud accepts a core's message only on a topic a subscription to ``cloud``
        covers (its ACL); stream exports wait for one instead of being dropped."""
        return any(s.target == CLOUD and matches(s.topic, topic) for s in self.table)

    def _stream_token(self, token: str | None) -> bool:
        """A stream manager client must present a token the core gave one of its functions."""
        caller_of = getattr(getattr(self, "functions", None), "caller_of", None)
        return token is not None and caller_of is not None and caller_of(token) is not None

    def _final_flush(self) -> None:
        writer: SpoolWriter | None = getattr(self, "spool_writer", None)
        if writer is not None:
            writer.flush()

    def _open_spool(self) -> Spool:
        s = self.config.spool
        if s.backend == "memory":
            return MemorySpool(s.max_bytes, s.overflow)
        return SqliteSpool(self.config.spool_path, s.max_bytes, s.overflow, s.fsync)

    # ---- certificates -------------------------------------------------------------------

    def advertised(self) -> list[str]:
        local = self.config.local
        return advertised_hosts(
            local.hosts, [] if local.hosts else detect_addresses(local.exclude_interfaces)
        )

    async def _renew(self, hosts: list[str]) -> None:
        # connectivity first: the cloud adds the registered endpoints to the SANs
        port = self.local_address[1] if self.local_address else self.config.local.port
        await self.api.connectivity([(h, port) for h in hosts])
        csr = await self.server_identity.csr(self.config.name, hosts)
        signed = await self.api.certificate(csr, hosts)
        self.server_identity.store(signed.certificate, signed.group_cas)

    async def _ensure_certificate(self) -> None:
        cert, cas = self.server_identity.load()
        if cert is not None:
            return  # renewal, if due, happens in the background (the cloud may be away)
        attempt = 0
        backoff = BackoffPolicy(
            self.config.connector.backoff_base, self.config.connector.backoff_cap
        )
        while True:
            try:
                await self._renew(self.advertised())
                return
            except (CloudAPIError, CertificateError) as exc:
                delay = backoff.delay(attempt, random.uniform)
                attempt += 1
                log.warning(
                    "core.certificates.first_issue_failed error=%s retry_in=%.1f", exc, delay
                )
                await asyncio.sleep(delay)

    async def check_certificate(self, group_cas: Sequence[CertInfo] | None = None) -> str | None:
        """Renew the server certificate if due; returns the reason it was renewed.

        ``group_cas`` is the group's CA list as the cloud gave it, newest first; ``None``
        means the list stored with the last renewal. A certificate not signed by the newest
        CA is renewed (and hot-swapped).
        """
        async with self._certificate_lock:
            cert, stored = self.server_identity.load()
            hosts = self.advertised()
            reason = renewal_reason(
                cert,
                stored if group_cas is None else group_cas,
                hosts,
                certinfo.now(),
                renew_fraction=self.config.certificates.renew_fraction,
            )
            if reason is None:
                return None
            log.info("core.certificates.renewing reason=%s", reason)
            await self._renew(hosts)
            self.state_changed("certificate")
            return reason

    async def current_group_cas(self) -> list[CertInfo] | None:
        """The group's CAs as the cloud lists them now (None when it cannot be asked)."""
        try:
            return [certinfo.from_pem(pem) for pem in await self.api.group_cas()]
        except (CloudAPIError, CertInfoError) as exc:
            log.warning("core.certificates.group_cas_unavailable error=%s", exc)
            return None

    def group_cas_announced(self, group_cas: list[CertInfo]) -> None:
        """The cloud published the group's CAs: check the certificate against them now."""
        log.info(
            "core.certificates.group_cas_announced newest=%s fingerprint=%s",
            group_cas[0].subject_cn,
            group_cas[0].fingerprint,
        )
        self._announced_cas = group_cas
        self._certificate_wake.set()

    async def _certificate_loop(self) -> None:
        """Every ``check_interval`` (or at once when the cloud announces the group's CAs):
        compare the certificate with the cloud's CA list and renew it when due."""
        while True:
            self._certificate_wake.clear()
            announced, self._announced_cas = self._announced_cas, None
            try:
                cas = announced if announced is not None else await self.current_group_cas()
                await self.check_certificate(cas)
            except (CloudAPIError, CertificateError) as exc:
                log.warning("core.certificates.renewal_failed error=%s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._certificate_wake.wait(), self.config.certificates.check_interval
                )

    # ---- cloud side ---------------------------------------------------------------------

    def _spool_committed(self) -> None:
        if self.connector is not None:
            self.connector.wake()

    def _resume_update(self) -> None:
        """After a restart: report what the launcher or a trial decided about an update
        (durably, through the spool) and never retry it; a trial of a new release asks
        for its deployment at once."""
        for outcome in self.updater.outcomes():
            deployment_id = str(outcome.get("deployment_id"))
            self.agent.failed.add(deployment_id)
            if not outcome.get("reported"):
                log.warning(
                    "core.update.outcome deployment=%s version=%s status=%s reason=%s",
                    deployment_id,
                    outcome.get("version"),
                    outcome.get("status"),
                    outcome.get("reason"),
                )
                self._report_status(
                    deployment_id, str(outcome.get("status")), str(outcome.get("reason"))
                )
        self.updater.mark_reported()
        trial = self.updater.trial()
        if trial is not None:
            log.info(
                "core.update.trial version=%s deployment=%s", trial.version, trial.deployment_id
            )
            self.agent.request(trial.deployment_id)

    async def _wait_cloud_link(self, limit_s: float) -> bool:
        if self.connector is None:
            return False
        try:
            async with asyncio.timeout(limit_s):
                await self.connector.connected.wait()
        except TimeoutError:
            return False
        return True

    def _report_status(self, deployment_id: str, status: str, detail: str) -> None:
        report = StatusReport(deployment_id, DeploymentStatus(status), detail)
        topic = core_topic(self.config.name, CoreLeaf.DEPLOYMENT_STATUS)
        self.spool_writer.add(topic, report.to_json(), 1)
        self.state_changed("deployment")

    def cloud_connected(self) -> bool:
        return bool(self.connector and self.connector.connected.is_set())

    def _cloud_connected(self) -> None:
        self.agent.request(None)
        self._send_heartbeat()
        self._members_wake.set()
        if self.shadow_sync is not None:
            self.shadow_sync.connected()

    def _support_bundle_asked(self, payload: bytes) -> None:
        """A request from the cloud (retained while it waits: an empty payload is the cloud
        clearing it); each is built once, an expired one not at all."""
        if not payload:
            return
        try:
            ask = SupportBundleRequest.from_json(payload)
        except ContractError as exc:
            log.warning("core.support_bundle.bad_request error=%s", exc)
            return
        if ask.expired(time.time()):
            log.info("core.support_bundle.expired id=%s", ask.request_id)
            return
        if ask.request_id in self._support_bundles:
            return
        self._support_bundles.add(ask.request_id)
        self.spawn(self._support_bundle(ask.request_id), f"support-bundle-{ask.request_id}")

    async def _support_bundle(self, request_id: str) -> None:
        """Build the support bundle the cloud asked for and upload it (``support_bundle.py``)."""
        from . import support_bundle
        from .check import format_results, run_checks

        c = self.config
        started = time.monotonic()
        try:
            check = "\n".join(
                format_results(await run_checks(c, wait_s=3.0, check_local_port=False))
            )
        except Exception as exc:  # the bundle is most wanted when something is wrong
            check = f"core check failed: {type(exc).__name__}: {exc}"
        status = json.loads(heartbeat(self.snapshot()))
        status["cloud_connected"] = self.cloud_connected()
        status["components"] = {n: s.value for n, s in self.components.states().items()}
        if self.shadow_sync is not None:
            status["shadow_sync"] = self.shadow_sync.report()
        config = json.loads(json.dumps(dataclasses.asdict(c), default=str))

        def build() -> bytes:
            return support_bundle.build(
                support_bundle.BundleInputs(
                    core=c.name,
                    group=c.group,
                    config=config,
                    check=check,
                    status=status,
                    logs=support_bundle.newest_logs(
                        {"core": c.log_dir, "functions": c.data_dir / "functions" / "logs"}
                    ),
                    deployments=support_bundle.stored_deployments(c.data_dir / "deployments"),
                )
            )

        try:
            data = await asyncio.to_thread(build)
            await self.api.upload_support_bundle(request_id, data)
        except (CloudAPIError, ValueError, OSError) as exc:
            log.warning("core.support_bundle.failed id=%s error=%s", request_id, exc)
            self._support_bundles.discard(request_id)  # asked again at the next connect
            return
        log.info(
            "core.support_bundle.uploaded id=%s bytes=%d seconds=%.1f",
            request_id,
            len(data),
            time.monotonic() - started,
        )

    def _shadow_send(self, payload: bytes) -> None:
        """A synced shadow changed here: to the cloud through the durable spool."""
        writer: SpoolWriter | None = getattr(self, "spool_writer", None)
        if writer is None:  # before the router: nothing can have changed a shadow yet
            log.warning("core.shadow_sync.not_ready")
            return
        writer.add(core_topic(self.config.name, CoreLeaf.SHADOW_UPDATE), payload, 1)

    def _shadow_synced(self, thing: str, messages: list[tuple[str, bytes]]) -> None:
        """The cloud changed a synced shadow: its device hears the replies (delta...)."""
        self.router.shadow_replies(thing, messages)

    def _cloud_message(self, topic: str, payload: bytes) -> None:
        name = self.config.name
        if topic == core_topic(name, CoreLeaf.DEPLOYMENTS):
            try:
                notice = DeploymentNotification.from_json(payload)
            except ContractError as exc:
                log.warning(
                    "core.deployment.bad_notification error=%s payload=%r", exc, payload[:200]
                )
                return
            self.agent.request(notice.deployment_id)
        elif topic == core_topic(name, CoreLeaf.REVOCATIONS):
            try:
                fingerprints = [str(f) for f in json.loads(payload)["fingerprints"]]
            except (ValueError, KeyError, TypeError):
                log.warning("core.revocations.bad_message")
                return
            self.set_revocations(fingerprints)
        elif topic == core_topic(name, CoreLeaf.THINGS):
            try:
                membership = Membership.from_json(payload)
            except ContractError as exc:
                log.warning("core.membership.bad_message error=%s payload=%r", exc, payload[:200])
                return
            self.set_members(membership)
        elif topic == core_topic(name, CoreLeaf.SUPPORT_BUNDLE):
            self._support_bundle_asked(payload)
        elif topic == core_topic(name, CoreLeaf.LOG_LEVELS):
            self._log_levels_from_cloud(payload)
        elif topic == core_topic(name, CoreLeaf.SHADOW):
            if self.shadow_sync is not None:
                self.shadow_sync.cloud_state(payload)
        elif topic == core_topic(name, CoreLeaf.GROUP_CAS):
            try:
                pems = json.loads(payload)["group_cas"]
                cas = [certinfo.from_pem(str(pem).encode()) for pem in pems]
            except (ValueError, KeyError, TypeError, CertInfoError):
                log.warning("core.certificates.bad_group_cas_message payload=%r", payload[:200])
                return
            if not cas:
                log.warning("core.certificates.empty_group_cas_message")
                return
            self.group_cas_announced(cas)
        else:
            self.router.dispatch(CLOUD, topic, payload, 1)

    def set_revocations(self, fingerprints: Sequence[str]) -> None:
        self.admission.set_revoked(fingerprints)
        write_atomic(
            self.config.data_dir / "revocations.json", json.dumps(sorted(fingerprints)).encode()
        )
        dropped = self.broker.disconnect_where(
            lambda i: not self.admission.still_admitted(i), "certificate revoked"
        )
        log.info("core.revocations.updated count=%d disconnected=%d", len(fingerprints), dropped)

    def set_members(self, membership: Membership) -> None:
        """The cloud's list of this group's things: admit exactly those (no deployment
        needed), trusting the device CAs and devices' own certificates it names."""
        self.set_device_trust(membership.device_trust, membership.certificate_names)
        members = frozenset(membership.things)
        if members == self.admission.members:
            return
        self.admission.set_members(members)
        write_atomic(self.config.data_dir / MEMBERS_FILE, json.dumps(sorted(members)).encode())
        dropped = self.broker.disconnect_where(
            lambda i: not self.admission.still_admitted(i), "no longer a device of this group"
        )
        log.info("core.membership.updated things=%d disconnected=%d", len(members), dropped)

    def set_device_trust(self, pems: Sequence[str], names: Mapping[str, str]) -> None:
        """Trust these certificates (device CAs, devices' own) besides the root CA: in the
        listener's TLS context and in admission. One no longer listed is refused by
        admission at once (OpenSSL cannot forget one already loaded)."""
        try:
            trusted = [certinfo.from_pem(pem.encode()) for pem in pems]
        except CertInfoError as exc:
            log.warning("core.device_trust.bad_certificate error=%s", exc)
            return
        if [t.fingerprint for t in trusted] == [
            t.fingerprint for t in self.admission.trusted
        ] and names == self.admission.names:
            return
        self.admission.set_trusted(trusted, names)
        self.server_identity.add_trust(pems)
        write_atomic(self.config.data_dir / DEVICE_TRUST_FILE, "".join(pems).encode())
        write_atomic(self.config.data_dir / DEVICE_NAMES_FILE, json.dumps(dict(names)).encode())
        dropped = self.broker.disconnect_where(
            lambda i: not self.admission.still_admitted(i), "device certificate no longer trusted"
        )
        log.info("core.device_trust.updated count=%d disconnected=%d", len(trusted), dropped)

    def _load_device_names(self) -> dict[str, str]:
        try:
            names = json.loads((self.config.data_dir / DEVICE_NAMES_FILE).read_text())
            return {str(k): str(v) for k, v in names.items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _load_device_trust(self) -> list[certinfo.CertInfo]:
        try:
            return certinfo.all_from_pem((self.config.data_dir / DEVICE_TRUST_FILE).read_bytes())
        except (OSError, CertInfoError):
            return []

    def _load_members(self) -> list[str] | None:
        try:
            return [str(t) for t in json.loads((self.config.data_dir / MEMBERS_FILE).read_text())]
        except (OSError, ValueError, TypeError):
            return None

    async def _refresh_members(self, cert: CertInfo, by_ca: bool) -> None:
        """A device vouched for by a device CA (``by_ca``) or its own registered certificate
        is not a member: it connected right after its discovery admitted it (read the
        members again), or came without a discovery (ask the cloud to admit it just in
        time). At most once every ``MEMBERS_REFRESH_S`` per certificate."""
        now = time.monotonic()
        if now - self._members_refreshed.get(cert.fingerprint, -MEMBERS_REFRESH_S) < (
            MEMBERS_REFRESH_S
        ):
            return
        if len(self._members_refreshed) > MAX_REFRESH_ENTRIES:
            self._members_refreshed.clear()
        self._members_refreshed[cert.fingerprint] = now
        try:
            if by_ca:
                self.set_members(await self.api.admit(pem_of(cert.der)))
            else:
                self.set_members(await self.api.things())
        except CloudAPIError as exc:
            log.warning("core.membership.admit_failed thing=%s error=%s", cert.subject_cn, exc)

    async def _membership_loop(self) -> None:
        """After each cloud (re)connect: the group's things over HTTPS as well (the retained
        message may be missing, e.g. on an external broker that lost it)."""
        while True:
            await self._members_wake.wait()
            self._members_wake.clear()
            try:
                membership = await self.api.things()
            except CloudAPIError as exc:
                log.warning("core.membership.fetch_failed error=%s", exc)
                continue
            self.set_members(membership)

    def _load_revocations(self) -> list[str]:
        try:
            return [
                str(f) for f in json.loads((self.config.data_dir / "revocations.json").read_text())
            ]
        except (OSError, ValueError, TypeError):
            return []

    async def _poll_deployments(self) -> None:
        while True:
            await asyncio.sleep(self.config.deployment.poll_interval)
            if self.connector is not None and self.connector.connected.is_set():
                self.agent.request(None)

    async def _offline_inbox(self) -> None:
        """Offline deployment files ``hedgerow core deploy --file`` drops in
        ``<data_dir>/deployments/inbox`` (no cloud needed): queued for the agent."""
        inbox = offline_inbox(self.config.data_dir)
        queued: set[Path] = set()
        while True:
            try:
                found = set(inbox.glob("*" + OFFLINE_SUFFIX)) if inbox.is_dir() else set()
            except OSError as exc:
                log.warning("core.deployment.inbox_failed error=%s", exc)
                found = set()
            for path in sorted(found - queued):
                self.agent.request(OfflineFile(path))
            queued = found
            await asyncio.sleep(OFFLINE_INBOX_POLL)

    # ---- status ---------------------------------------------------------------------

    def _function_publish(self, function: str, topic: str, payload: bytes) -> None:
        self.router.dispatch("function:" + function, topic, payload, 1)

    def _device_connected(self, thing: str) -> None:
        self.activity.seen(thing, time.time())
        self.state_changed("devices")

    def _device_disconnected(self, identity: Identity) -> None:
        if identity.kind == "thing":
            self.activity.seen(identity.name, time.time())
            self.state_changed("devices")

    def _device_published(self, identity: Identity, publish: Publish) -> None:
        if identity.kind == "thing" and self.activity.published(identity.name, time.time()):
            self.state_changed("activity")

    def _connector_publish(self, connector: str, topic: str, payload: bytes) -> None:
        self.router.dispatch("connector:" + connector, topic, payload, 1)

    def _shadow_publish(self, topic: str, payload: bytes) -> None:
        """Shadow documents changed by a function: routed like the service's own replies."""
        self.router.dispatch(SHADOW, topic, payload, 0)

    def snapshot(self) -> Snapshot:
        stats = self.spool.stats()
        counters: dict[str, int] = {}
        counters.update(self.router.counters)
        if self.connector is not None:
            counters.update({f"cloud_{k}": v for k, v in self.connector.counters.items()})
        broker = self.broker.stats()
        for name in ("messages_in", "messages_out", "connections_total", "refused", "dropped_qos0",
                     "dropped_queue_full", "protocol_errors"):  # fmt: skip
            counters[f"broker_{name}"] = int(getattr(broker, name))
        counters["spool_write_failed"] = self.spool_writer.failed
        if self.shadow_sync is not None:
            counters.update({f"shadow_sync_{k}": v for k, v in self.shadow_sync.counters.items()})
        if self.log_shipper is not None:
            counters.update(self.log_shipper.counters())
        counters["denied_publish"] = self.admission.denied_publish
        counters["denied_subscribe"] = self.admission.denied_subscribe
        counters.update({f"refused_{k}": v for k, v in self.admission.refused.items()})
        current = self.agent.current
        return Snapshot(
            core=self.config.name,
            uptime=time.monotonic() - self.started,
            devices=broker.clients_connected,
            functions=dict(self.functions.states()),
            function_errors=self._function_errors(),
            spool={
                "depth": stats.depth,
                "bytes": stats.bytes,
                "appended": stats.appended,
                "acked": stats.acked,
                "dropped_oldest": stats.dropped_oldest,
                "dropped_newest": stats.dropped_newest,
                "dropped_disk_full": stats.dropped_disk_full,
            },  # fmt: skip
            counters=counters,
            subscriptions=tuple(
                (s.source, s.topic, s.target, n) for s, n in self.table.counter_items()
            ),
            deployment=current.deployment_id if current else None,
            cloud_connected=self.cloud_connected(),
            refused=tuple(r.as_dict() for r in self.agent.refused),
            health=self.health().value,
            connectors=self.connectors.report(),
            components={name: state.value for name, state in self.components.states().items()},
            streams=self.streams.progress() if self.streams is not None else {},
            things=self.activity.report(
                {identity.name for _, identity in self.broker.clients() if identity.kind == "thing"}
            ),
            host=self._host_stats.sample(),
            spool_age=self.connector.spool_age() if self.connector is not None else 0.0,
            spool_max_bytes=self.spool.max_bytes,
        )

    def _function_errors(self) -> dict[str, Mapping[str, Any]]:
        errors = getattr(self.functions, "errors", None)
        return dict(errors()) if errors is not None else {}

    def state_changed(self, what: str) -> None:
        """Something the cloud shows changed: send a heartbeat soon (debounced)."""
        log.debug("core.status.changed what=%s", what)
        self._pacer.changed(asyncio.get_running_loop().time())
        self._heartbeat_wake.set()

    def _send_heartbeat(self) -> None:
        self._pacer.sent(asyncio.get_running_loop().time())
        if self.connector is not None:
            self.connector.publish_nowait(
                core_topic(self.config.name, CoreLeaf.HEARTBEAT), heartbeat(self.snapshot())
            )

    async def _heartbeat_loop(self) -> None:
        """Every ``heartbeat_interval``, and after changes at most once per
        ``HEARTBEAT_MIN_GAP_S`` (the pacer decides; this loop only waits)."""
        loop = asyncio.get_running_loop()
        if self._pacer.last_sent is None:
            self._pacer.sent(loop.time())  # the connect heartbeat is the first one
        while True:
            delay = self._pacer.delay(loop.time())
            if delay > 0:
                self._heartbeat_wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._heartbeat_wake.wait(), delay)
                continue
            self._send_heartbeat()

    async def _watchdog(self, interval: float) -> None:
        while True:
            service.sd_notify("WATCHDOG=1")
            await asyncio.sleep(interval)


class _BrokerBus:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def publish(self, topic: str, payload: bytes, *, qos: int = 0) -> None:
        await self.broker.publish(topic, payload, qos=qos)
