"""The composition root: ``async with CloudServer(config) as cloud`` runs everything.

One TaskGroup holds uvicorn (REST API + console), the device HTTPS server, the cloud
MQTT endpoint (embedded broker, or a link to an external broker), the ingest worker
and the small background loops. ``cloud.api_url``, ``cloud.device_url`` and
``cloud.mqtt_url`` say where each endpoint listens (port 0 in the config = any free port).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import uvicorn

from hedgerow import pki
from hedgerow.broker import Broker, BrokerConfig
from hedgerow.cloud.api import ApiContext, create_app
from hedgerow.cloud.api.broker_auth import PREFIX as BROKER_AUTH_PREFIX
from hedgerow.cloud.api.broker_auth import BrokerAuth
from hedgerow.cloud.artifacts import ArtifactCache
from hedgerow.cloud.broker_acl import Routes
from hedgerow.cloud.broker_credentials import CLOUD_USER, BrokerSecret, load_or_create
from hedgerow.cloud.config import CloudConfig, check_modes
from hedgerow.cloud.datadir import read_admin_token
from hedgerow.cloud.device_server import DeviceServer, DeviceTrustStore, device_ssl_context
from hedgerow.cloud.discovery_cache import DiscoveryCache
from hedgerow.cloud.errors import CloudError, ConfigError
from hedgerow.cloud.exporters import EXPORT_INTERVAL_S, TelemetryExports
from hedgerow.cloud.group_ca_keys import GroupCAKeys, prepare_keyring, seal_clear_keys
from hedgerow.cloud.ingest import RETENTION_SWEEP_SECONDS, IngestWorker
from hedgerow.cloud.jobs import Jobs
from hedgerow.cloud.mosquitto_dynsec import DynsecControl, DynsecCutOff, DynsecSync
from hedgerow.cloud.mqtt_endpoint import (
    BROKER_VERSIONS,
    BrokerNotifier,
    CloudInterceptor,
    CoreAuthenticator,
    CoreAuthorizer,
    CoreEvents,
    ExternalBrokerLink,
    RouteCache,
    replica_client_id,
)
from hedgerow.cloud.pki_service import PKIService
from hedgerow.cloud.services import (
    CloudServices,
    IdentityService,
    LogService,
    MessagesWritten,
    Notifier,
    NullNotifier,
    PublicEndpoints,
    RoutesChanged,
    SecretService,
)
from hedgerow.cloud.services.membership import DeviceTrust
from hedgerow.cloud.services.notify import routes_unchanged
from hedgerow.cloud.storage import changes
from hedgerow.cloud.storage.changes import ChangeFeed
from hedgerow.cloud.storage.database import create_engine, dispose_when_returned, migrate
from hedgerow.cloud.storage.locks import job_locks
from hedgerow.cloud.storage.repository import Repository
from hedgerow.cloud.storage.sealed_keys import SealedKeyStore
from hedgerow.cloud.storage.secrets import SecretStore
from hedgerow.cloud.storage.tickets import TicketStore
from hedgerow.cloud.tickets import Tickets

log = logging.getLogger(__name__)
API_BACKLOG = 1024
#: Seconds between two full reconciles of Mosquitto's dynamic security (once across
#: replicas; each replica also reconciles whenever its control link connects).
DYNSEC_RECONCILE_SECONDS = 60.0
#: How long the start waits for the first dynsec reconcile before the link connects.
DYNSEC_FIRST_WAIT_S = 5.0
#: How often due group CAs are rotated in the background.
CA_ROTATION_CHECK_SECONDS = 3600.0
#: How often device CAs registered through another process are loaded (shared database;
#: on PostgreSQL the change feed wakes it at once, this is the fallback).
DEVICE_TRUST_REFRESH_SECONDS = 30.0


class _Uvicorn(uvicorn.Server):
    """uvicorn without its signal handlers: whoever runs the cloud decides when it stops."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()


def _url_host(host: str) -> str:
    """A host for a URL: a wildcard address becomes loopback (it is in the certificate)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class Endpoints:
    api: tuple[str, int]
    device: tuple[str, int]
    mqtt: tuple[str, int] | None
    api_tls: bool


class CloudServer:
    def __init__(self, config: CloudConfig, *, enable_mqtt: bool = True) -> None:
        self.config = config
        self.enable_mqtt = enable_mqtt
        self._stack = contextlib.AsyncExitStack()
        self._tasks: asyncio.TaskGroup | None = None
        self._background: list[asyncio.Task[None]] = []
        self._uvicorn: _Uvicorn | None = None
        self.endpoints: Endpoints | None = None
        self.services: CloudServices
        self.ingest: IngestWorker
        self.log_ingest: IngestWorker
        self.broker: Broker | None = None
        self.link: ExternalBrokerLink | None = None
        #: what the external broker's logins derive from (``broker_login = "password"``)
        self.broker_secret: BrokerSecret | None = None
        #: Mosquitto's dynamic security kept in step (``broker_login = "mosquitto-dynsec"``)
        self.dynsec: DynsecSync | None = None
        self.routes: RouteCache
        self.tickets: Tickets
        #: the background jobs that run once across replicas (``hedgerow.cloud.jobs``)
        self.jobs: Jobs
        #: what other replicas changed (PostgreSQL LISTEN/NOTIFY; idle on SQLite)
        self.changes: ChangeFeed
        #: discovery answers kept per thing (emptied on change, here and by the feed)
        self.discovery_cache: DiscoveryCache
        self.device: DeviceServer

    # ---- where things are --------------------------------------------------------------

    @property
    def _ep(self) -> Endpoints:
        if self.endpoints is None:
            raise RuntimeError("the cloud server is not running")
        return self.endpoints

    @property
    def api_url(self) -> str:
        host, port = self._ep.api
        scheme = "https" if self._ep.api_tls else "http"
        return f"{scheme}://{_url_host(host)}:{port}"

    @property
    def device_url(self) -> str:
        return f"https://{_url_host(self.config.advertise)}:{self._ep.device[1]}"

    @property
    def mqtt_url(self) -> str:
        if self.config.broker:
            return self.config.broker
        if self._ep.mqtt is None:
            return ""
        return f"mqtts://{_url_host(self.config.advertise)}:{self._ep.mqtt[1]}"

    @property
    def admin_token(self) -> str | None:
        return read_admin_token(self.config.data_dir)

    def connected_cores(self) -> Collection[str] | None:
        """The cores with a live session at the embedded MQTT endpoint (set on CONNECT,
        gone at disconnect or keepalive expiry); with an external broker, what the cores
        report there (``ReportedPresence``: their retained presence and will)."""
        if self.link is not None:
            return self.link.presence()
        if self.broker is None:
            return None
        return {i.name for _, i in self.broker.clients() if i.kind == "core"}

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "api": self.api_url,
            "device": self.device_url,
            "mqtt": self.mqtt_url,
            "database": self.services.repository.dialect,
            "ingest": self.ingest.stats.to_json(),
            "log_ingest": self.log_ingest.stats.to_json(),
            "logs": {
                "stored": self.services.logs.stored,
                "refused": self.services.logs.refused,
                "dropped_at_cores": self.services.logs.dropped_at_cores,
            },
            "external_broker": bool(self.config.broker),
            **(
                {
                    "dynsec": {
                        "reconciles": self.dynsec.reconciles,
                        "refused": self.dynsec.refused,
                    }
                }
                if self.dynsec is not None
                else {}
            ),
            "jobs": self.jobs.to_json(),
            "changes_heard": dict(self.changes.heard),
            "device_server": {
                **self.device.stats.to_json(),
                "discovery_cache": {
                    "entries": len(self.discovery_cache),
                    **self.discovery_cache.stats.to_json(),
                },
            },
        }
        live = self.connected_cores()
        if live is not None:
            result["connected_cores"] = sorted(live)
        return result

    # ---- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> CloudServer:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        try:
            await self._stack.aclose()
        finally:
            self.endpoints = None

    async def _start(self) -> None:
        """Build every part complete, in dependency order: storage, PKI, the MQTT side
        (which needs only the repository to admit cores), then the services with the
        notifier that MQTT side provides, then the device server and the API."""
        cfg = self.config
        paths = cfg.paths
        check_modes(cfg)  # refuses secrets others can read before anything else
        engine = create_engine(cfg.database_url)
        self._stack.push_async_callback(dispose_when_returned, engine)
        await asyncio.to_thread(migrate, engine)
        locks = job_locks(engine)
        self._stack.push_async_callback(locks.close)  # after the jobs stopped
        self.jobs = Jobs(locks)
        self.changes = ChangeFeed(engine)
        repository = Repository(engine)
        # today's and the coming days' telemetry partitions (PostgreSQL), before ingest;
        # the retention job keeps them coming and drops the old ones
        await asyncio.to_thread(repository.maintain_partitions, time.time())
        sealed_store = SealedKeyStore(engine)
        keyring = await asyncio.to_thread(prepare_keyring, cfg.kek_path, sealed_store)
        group_ca_keys = GroupCAKeys(keyring)
        await asyncio.to_thread(seal_clear_keys, sealed_store, group_ca_keys)
        pki_service = PKIService(
            paths,
            repository,
            rotation_days=cfg.group_ca_rotation_days,
            overlap_days=cfg.group_ca_overlap_days,
            keys=group_ca_keys,
        )
        identities = IdentityService(repository, repository)
        written = MessagesWritten()
        self.ingest = await self._stack.enter_async_context(
            IngestWorker(
                repository,
                retention_days=cfg.retention_days,
                on_written=written.set,
                sweep_in_background=False,
            )
        )
        # logs: their own worker and table, the same batching, acknowledgement and retention
        log_service = LogService(repository, MessagesWritten())
        self.log_ingest = await self._stack.enter_async_context(
            IngestWorker(
                repository,
                retention_days=cfg.retention_days,
                on_written=log_service.written.set,
                write=log_service.store_batches,
                delete_before=log_service.delete_before,
                name="log-ingest",
                sweep_in_background=False,
            )
        )
        # closed after the jobs that use them stopped (the stack unwinds in reverse)
        exports = await self._stack.enter_async_context(TelemetryExports(cfg.exports, repository))
        self._tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._stack.push_async_callback(self._stop_tasks)
        self.routes = RouteCache(repository.all_cloud_routes)
        events = CoreEvents()

        notifier: Notifier
        routes_changed: RoutesChanged = routes_unchanged
        mqtt_bound: tuple[str, int] | None = None
        if cfg.broker:
            client_ssl = pki.client_context(
                str(paths.root_ca_cert), str(paths.cloud_client_cert), str(paths.cloud_client_key)
            )
            if cfg.password_login:
                self.broker_secret = load_or_create(paths.broker_auth_secret)
                await self.routes.refresh()  # the broker asks for cores' routes
                self._spawn(self.routes.run(), "cloud-routes")
            self.link = notifier = ExternalBrokerLink(
                cfg.broker,
                client_ssl,
                self.ingest,
                events,
                share=cfg.ingest_share,
                client_id=replica_client_id(cfg.replica_id, cfg.api.port),
                logs=self.log_ingest,
                version=BROKER_VERSIONS[cfg.broker_protocol],
                password=self.broker_secret.cloud_password() if self.broker_secret else None,
                ingest_telemetry=cfg.broker_ingest,
            )
            if cfg.broker_login == "mosquitto-dynsec" and self.broker_secret is not None:
                self.dynsec = self._dynsec(self.broker_secret, client_ssl, identities)
                notifier = DynsecCutOff(self.link, self.dynsec)
                routes_changed = self._dynsec_routes_changed
                self._spawn(self.dynsec.control.run(self.dynsec.on_connected), "cloud-dynsec")
                self._spawn(
                    self.jobs.run("mosquitto-dynsec", self.dynsec.tick, DYNSEC_RECONCILE_SECONDS),
                    "cloud-dynsec-reconcile",
                )
        elif self.enable_mqtt:
            await self.routes.refresh()
            routes_changed = self.routes.refresh
            self.changes.on(changes.ROUTES, self.routes.refresh)
            self._spawn(self.routes.run(), "cloud-routes")
            broker = Broker(
                BrokerConfig(deny_policy="drop"),
                authenticator=CoreAuthenticator(identities),
                authorizer=CoreAuthorizer(self.routes),
            )
            self.broker = await self._stack.enter_async_context(broker)
            self.broker.add_interceptor(CloudInterceptor(self.ingest, events, self.log_ingest))
            notifier = BrokerNotifier(broker)
            mqtt_ssl = pki.server_context(
                str(paths.server_cert),
                str(paths.server_key),
                str(paths.root_ca_cert),
                require_client_cert=True,
            )
            mqtt_bound = await broker.listen(cfg.mqtt.host, cfg.mqtt.port, ssl=mqtt_ssl)
        else:
            notifier = NullNotifier()
            log.info("cloud.no_mqtt notifications=dropped")

        device_ssl = device_ssl_context(
            str(paths.server_cert), str(paths.server_key), str(paths.root_ca_cert)
        )
        device_trust = DeviceTrustStore(device_ssl)
        self.discovery_cache = DiscoveryCache(
            cfg.discovery_cache_entries, cfg.discovery_cache_ttl_s
        )
        self.changes.on(changes.DISCOVERY, functools.partial(_forget_discovery, self, pki_service))
        self.changes.on(changes.MESSAGES, written.set)
        self.changes.on(changes.LOGS, log_service.written.set)
        self.changes.on(changes.TRUST, lambda: self._reload_device_trust(device_trust))
        self.services = services = CloudServices.build(
            repository,
            pki_service,
            notifier=notifier,
            endpoints=self.public_endpoints,
            artifact_cache=ArtifactCache(paths.artifacts),
            routes_changed=_announced_routes(routes_changed, self.changes),
            messages_written=written,
            identities=identities,
            secrets=SecretService(SecretStore(engine), keyring),
            presence=self.connected_cores,
            deadline_s=cfg.deployment_deadline_s,
            device_trust=_AnnouncedTrust(device_trust, self.changes),
            provisioning_hook=cfg.provisioning_hook,
            logs=log_service,
            export_targets=cfg.exports,
            discovery_cache=self.discovery_cache,
            discovery_changed=_announced_discovery(self.discovery_cache, self.changes),
            core_admitted=self._dynsec_core_admitted,
        )
        device_trust.add(await services.claims.trusted_pems())
        self._spawn(
            events.run(services.deployments, identities, services.shadows), "cloud-core-events"
        )
        self._spawn(self.changes.run(), "cloud-changes")
        self._spawn(self._refresh_device_trust(device_trust), "cloud-device-trust")
        # the jobs: each runs on one replica at a time (advisory locks on PostgreSQL)
        self._spawn(services.rollouts.run(self.jobs.run), "cloud-rollouts")
        self._spawn(services.alerts.run(self.jobs.run), "cloud-alerts")
        self._spawn(
            self.jobs.run(
                "ca-rotation",
                services.groups.ca_job,
                CA_ROTATION_CHECK_SECONDS,
                # a holder killed mid-tick may have stored a CA it never announced
                taken_over=functools.partial(
                    services.groups.take_over_ca_job, 2 * CA_ROTATION_CHECK_SECONDS
                ),
            ),
            "cloud-ca-rotation",
        )
        for worker, job in ((self.ingest, "retention"), (self.log_ingest, "log-retention")):
            self._spawn(
                self.jobs.run(job, _sweeper(worker), RETENTION_SWEEP_SECONDS), f"cloud-{job}"
            )
        for (
            exporter
        ) in exports.exporters:  # each target its own job: one slow target stalls no other
            self._spawn(
                self.jobs.run(
                    exporter.target.job,
                    exporter.tick,
                    EXPORT_INTERVAL_S,
                    taken_over=exporter.taken_over,
                ),
                f"cloud-export-{exporter.target.name}",
            )
        self._spawn(services.support_bundles.run(), "cloud-support-bundles")
        self._spawn(self._announce_log_levels(services), "cloud-log-levels")

        self.device = device = await self._stack.enter_async_context(
            DeviceServer(
                services,
                device_ssl,
                max_pending=cfg.device_max_pending,
                pending_wait=cfg.device_pending_wait_s,
            )
        )
        device_bound = await device.start(cfg.device.host, cfg.device.port)

        api_tls = cfg.api_tls if cfg.api_tls is not None else not cfg.api.loopback
        sock = _bind(cfg.api.host, cfg.api.port)
        api_bound = sock.getsockname()[:2]
        self.endpoints = Endpoints(
            (str(api_bound[0]), int(api_bound[1])), device_bound, mqtt_bound, api_tls
        )

        tokens = [t for t in [self.admin_token] if t]
        self.tickets = Tickets(TicketStore(engine))
        app = create_app(
            ApiContext(
                services,
                tokens,
                cfg.max_upload_bytes,
                self.status,
                tickets=self.tickets,
                broker_auth=self._broker_auth(identities),
            )
        )
        uv_config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            ssl_certfile=str(paths.server_cert) if api_tls else None,
            ssl_keyfile=str(paths.server_key) if api_tls else None,
            timeout_graceful_shutdown=2,
        )
        self._uvicorn = _Uvicorn(uv_config)
        started = asyncio.Event()
        api_task = self._tasks.create_task(self._serve_api(sock, started), name="cloud-api")
        await started.wait()
        if not self._uvicorn.started:
            await api_task
            raise ConfigError(f"the API could not start on {cfg.api.host}:{cfg.api.port}")
        if self.dynsec is not None:
            # the first reconcile gives the cloud's user its role, which makes Mosquitto
            # close that user's connections: before the link connects, if it can
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dynsec.reconciled.wait(), DYNSEC_FIRST_WAIT_S)
        if self.link is not None:  # once the API answers: the broker may ask it who we are
            self._spawn(self.link.run(), "cloud-external-broker")
        log.info(
            "cloud.started api=%s device=%s mqtt=%s", self.api_url, self.device_url, self.mqtt_url
        )

    def public_endpoints(self) -> PublicEndpoints:
        """Where cores reach this cloud (for bundles), once the listeners are bound."""
        secret = self.broker_secret
        return PublicEndpoints(
            self.device_url,
            self.mqtt_url,
            mqtt_protocol=self.config.broker_protocol if self.config.broker else "5",
            mqtt_password=secret.core_password if secret is not None else None,
        )

    def _dynsec(
        self, secret: BrokerSecret, client_ssl: ssl.SSLContext, identities: IdentityService
    ) -> DynsecSync:
        """Mosquitto's dynamic security kept in step (``broker_login = "mosquitto-dynsec"``)."""
        cfg = self.config
        control = DynsecControl(
            cfg.broker,
            client_ssl,
            client_id=replica_client_id(cfg.replica_id, cfg.api.port) + "-dynsec",
            username=CLOUD_USER,
            password=secret.cloud_password(),
            version=BROKER_VERSIONS[cfg.broker_protocol],
        )
        routes = self.routes
        return DynsecSync(
            control,
            standings=identities.core_standings,
            standing=identities.core_standing,
            routes=lambda group: Routes(routes.to_cloud(group), routes.from_cloud(group)),
            password=secret.core_password,
            cloud_user=CLOUD_USER,
            refresh_routes=routes.refresh,
        )

    async def _dynsec_core_admitted(self, core: str) -> None:
        """A new core's dynsec client made at once (none without dynsec)."""
        if self.dynsec is None:
            return
        try:
            await self.dynsec.sync_core(core)
        except CloudError as exc:  # the next reconcile does it
            log.warning("dynsec.core_sync_failed core=%s error=%s", core, exc.message)

    async def _dynsec_routes_changed(self) -> None:
        """Routes changed here: the cores' dynsec roles follow at once."""
        if self.dynsec is None:
            return
        try:
            await self.dynsec.reconcile()
        except CloudError as exc:  # the next reconcile does it
            log.warning("dynsec.routes_reconcile_failed error=%s", exc.message)

    def _broker_auth(self, identities: IdentityService) -> BrokerAuth | None:
        """The external broker's questions (``broker_login = "password"``), or None."""
        if self.broker_secret is None:
            return None
        routes = self.routes
        return BrokerAuth(
            self.broker_secret,
            identities.core_standing,
            lambda group: Routes(routes.to_cloud(group), routes.from_cloud(group)),
        )

    @property
    def broker_auth_url(self) -> str | None:
        """Where the external broker asks who logs in (its four paths end this URL)."""
        if self.broker_secret is None:
            return None
        return f"{self.api_url}{BROKER_AUTH_PREFIX}/{self.broker_secret.path_token()}/"

    async def _serve_api(self, sock: socket.socket, started: asyncio.Event) -> None:
        assert self._uvicorn is not None
        server = self._uvicorn
        server.ready = started
        try:
            await server.serve(sockets=[sock])
        finally:
            started.set()
            sock.close()

    async def _stop_tasks(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        for task in self._background:
            task.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        assert self._tasks is not None
        self._background.append(self._tasks.create_task(coro, name=name))

    @staticmethod
    async def _announce_log_levels(services: CloudServices) -> None:
        """The log levels set from the cloud, retained for the cores again (the embedded
        broker starts with no retained message; an external one may have lost them)."""
        try:
            await services.log_levels.announce_all()
        except Exception as exc:
            log.warning("cloud.log_levels.announce_failed error=%s", exc)

    async def _refresh_device_trust(self, trust: DeviceTrustStore) -> None:
        """Device CAs and certificates another process sharing the database registered
        (the fallback of the change feed's ``trust``)."""
        while True:
            await asyncio.sleep(DEVICE_TRUST_REFRESH_SECONDS)
            await self._reload_device_trust(trust)

    async def _reload_device_trust(self, trust: DeviceTrustStore) -> None:
        try:
            trust.add(await self.services.claims.trusted_pems())
        except Exception as exc:
            log.warning("cloud.device_trust_refresh_failed error=%s", exc)

    async def serve_forever(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set."""
        await stop.wait()


def _sweeper(worker: IngestWorker) -> Callable[[], Awaitable[None]]:
    async def sweep() -> None:
        await worker.sweep()

    return sweep


def _announced_routes(local: RoutesChanged, feed: ChangeFeed) -> RoutesChanged:
    """Reload this process's routes, then tell the other replicas to reload theirs."""

    async def routes_changed() -> None:
        await local()
        feed.announce(changes.ROUTES)

    return routes_changed


def _announced_discovery(cache: DiscoveryCache, feed: ChangeFeed) -> Callable[[], None]:
    """Forget this process's discovery answers, then tell the other replicas to."""

    def discovery_changed() -> None:
        cache.invalidate()
        feed.announce(changes.DISCOVERY)

    return discovery_changed


def _forget_discovery(server: CloudServer, pki_service: PKIService) -> None:
    """Another replica changed what discovery answers (or the feed just reconnected)."""
    server.discovery_cache.invalidate()
    pki_service.forget_all()  # its new group CA is not in this process's CA cache


class _AnnouncedTrust:
    """Trust a certificate here at once, and tell the other replicas to load it too."""

    def __init__(self, trust: DeviceTrust, feed: ChangeFeed) -> None:
        self.trust = trust
        self.feed = feed

    def add(self, pems: Sequence[str]) -> None:
        self.trust.add(pems)
        self.feed.announce(changes.TRUST)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets that say so
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(API_BACKLOG)
    sock.setblocking(False)
    return sock
