"""The cloud's MQTT side: who may connect, where they may publish, and what is stored.

Embedded mode (default): a Hedgerow ``Broker`` with mutual TLS against the root CA.
``CoreAuthenticator`` admits registered, live core identities. ``CoreAuthorizer`` keeps
each core to itself: it may publish its own ``FROM_CORE`` leaves (heartbeat, deployment
status, shadow updates, logs, presence) and the topics
its group routes to ``cloud``; it may subscribe under its own ``$hedgerow/cores/{core}/``
and to filters covered by its group's routes from ``cloud`` (coverage by
``hedgerow.mqtt.topics.filter_covers``: ``#`` never covers a ``$`` topic); and it hears
only what the cloud publishes, never another core's messages. ``CloudInterceptor`` hands
telemetry to ingest and deployment status / heartbeats to the services.

External mode (``--broker mqtts://...``): ``ExternalBrokerLink`` connects to another
broker with the cloud's own identity, subscribes through a shared subscription (so
several ingest workers split the load) and publishes deployment notifications there; the
cores' presence (their retained report and will) says which of them are connected.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import random
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from hedgerow.broker import Action, Broker, ConnectInfo, Identity, Refused
from hedgerow.broker.auth import NOT_AUTHORIZED
from hedgerow.client import Client, ClientError, Message, ProtocolVersion
from hedgerow.cloud.broker_acl import may_publish, may_subscribe
from hedgerow.cloud.broker_credentials import CLOUD_USER
from hedgerow.cloud.domain import CertificateKind
from hedgerow.cloud.errors import CloudError, ConfigError, Unavailable
from hedgerow.cloud.ingest import IngestWorker
from hedgerow.cloud.services import DeploymentService, IdentityService, ShadowService
from hedgerow.cloud.services.cores import ReportedPresence
from hedgerow.contract.errors import ContractError
from hedgerow.contract.heartbeat import Presence
from hedgerow.contract.topics import (
    FROM_CORE,
    CoreLeaf,
    all_cores_filter,
    all_routed_filter,
    parse_core_topic,
    parse_routed_topic,
)
from hedgerow.mqtt.packets import Publish

log = logging.getLogger(__name__)

ROUTES_REFRESH_SECONDS = 1.0
#: Heartbeats recorded in one transaction (the latest of each core waiting).
HEARTBEAT_BATCH = 200
RECONNECT_BASE = 0.5
RECONNECT_MAX = 15.0
#: How long an external broker keeps the cloud's session (and what it did not yet
#: acknowledge) while the process is away: a restarted replica takes it up again.
EXTERNAL_SESSION_EXPIRY_S = 24 * 3600
#: ``[mqtt] broker_protocol`` → the version the cloud's link speaks.
BROKER_VERSIONS: dict[str, ProtocolVersion] = {
    "5": ProtocolVersion.V5,
    "3.1.1": ProtocolVersion.V311,
}
#: How long cutting a core off at an external broker (a client id takeover) may take.
TAKEOVER_TIMEOUT_S = 10.0
#: How long a message that is not a core's state (a command, a shadow answer) waits for an
#: unreachable external broker before the call fails with ``Unavailable``.
PUBLISH_WAIT_S = 3.0


class RouteCache:
    """Per group: topic filters routed to and from the cloud (refreshed from the database)."""

    def __init__(self, load: Callable[[], dict[str, tuple[list[str], list[str]]]]) -> None:
        self._load = load
        self._routes: dict[str, tuple[list[str], list[str]]] = {}
        self.refreshed = asyncio.Event()

    def to_cloud(self, group: str) -> list[str]:
        return self._routes.get(group, ([], []))[0]

    def from_cloud(self, group: str) -> list[str]:
        return self._routes.get(group, ([], []))[1]

    async def refresh(self) -> None:
        self._routes = await asyncio.to_thread(self._load)
        self.refreshed.set()

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("mqtt.routes_refresh_failed error=%s", exc)
            await asyncio.sleep(ROUTES_REFRESH_SECONDS)


class CoreAuthenticator:
    def __init__(self, identities: IdentityService) -> None:
        self.identities = identities

    async def authenticate(self, info: ConnectInfo) -> Identity:
        if info.peer_cert is None:
            raise Refused(NOT_AUTHORIZED, "no client certificate", silent=True)
        try:
            core = await self.identities.check_identity(
                info.peer_cert.fingerprint, CertificateKind.CORE
            )
            group = await self.identities.core_group(core)
        except CloudError as exc:
            log.info("mqtt.refused client_id=%s reason=%s", info.client_id, exc.message)
            raise Refused(NOT_AUTHORIZED, exc.message) from exc
        await self.identities.record_heartbeat(core, b"")  # last seen: now
        log.info("mqtt.core_connected core=%s group=%s", core, group)
        return Identity(
            core,
            kind="core",
            attributes={"group": group, "fingerprint": info.peer_cert.fingerprint},
        )


class CoreAuthorizer:
    """What a core may do at the cloud (the broker asks for every PUBLISH and SUBSCRIBE
    filter, and for every client-to-client delivery)."""

    def __init__(self, routes: RouteCache) -> None:
        self.routes = routes

    def authorize(self, identity: Identity, action: Action, topic: str) -> bool:
        if identity.kind != "core":
            return False
        group = identity.attributes.get("group", "")
        if action is Action.PUBLISH:
            return may_publish(identity.name, self.routes.to_cloud(group), topic)
        return may_subscribe(identity.name, self.routes.from_cloud(group), topic)

    def may_deliver(self, publisher: Identity, subscriber: Identity, topic: str) -> bool:
        """A core hears the cloud, never another core (nor itself): what cores publish
        here is for the cloud's ingest, whatever their subscriptions cover."""
        return False


@dataclass(frozen=True)
class CoreEvent:
    core: str
    kind: str
    payload: bytes
    #: resolved once recorded: the core's QoS 1 message is acknowledged then
    handled: asyncio.Future[None] | None = None


class CoreEvents:
    """Deployment status, heartbeats and shadow updates from cores, handled off the broker's
    hot path (taken by ``offer``, recorded by ``run`` through the services it is given).

    Nothing a core reports is dropped when recording falls behind (a rollout of thousands
    of groups, a slow database): a deployment status or shadow update waits in order and
    ``offer`` returns a future the broker acknowledges the core's message on, so a core
    with too much unacknowledged waits (its in-flight window) instead of being lost. A
    heartbeat is a snapshot: only the latest per core waits, so a backlog of heartbeats
    costs one record per core, whatever the fleet's rate.
    """

    def __init__(self) -> None:
        self._ordered: collections.deque[CoreEvent] = collections.deque()
        #: per core, its latest heartbeat not yet recorded
        self._beats: dict[str, bytes] = {}
        self._wake = asyncio.Event()
        #: heartbeats replaced by a newer one before being recorded
        self.beats_coalesced = 0

    def pending(self) -> int:
        return len(self._ordered) + len(self._beats)

    def offer(self, core: str, kind: str, payload: bytes) -> asyncio.Future[None] | None:
        """Take one event; a future resolved once it is recorded (None: take it as done)."""
        # logs go to their own ingest; presence is read by the external link only (the
        # embedded broker knows its sessions)
        if kind not in FROM_CORE or kind in (CoreLeaf.LOGS, CoreLeaf.PRESENCE):
            return None
        self._wake.set()
        if kind == CoreLeaf.HEARTBEAT:
            if core in self._beats:  # replaced in its place: every core's turn comes
                self.beats_coalesced += 1
            self._beats[core] = payload
            return None
        handled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handled.add_done_callback(_retrieved)  # a QoS 0 report's failure is logged, not raised
        self._ordered.append(CoreEvent(core, kind, payload, handled))
        return handled

    async def run(
        self,
        deployments: DeploymentService,
        identities: IdentityService,
        shadows: ShadowService,
    ) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # what was reported in order first (a status before the heartbeat that follows
            # it), then the latest heartbeats of up to HEARTBEAT_BATCH cores at a time
            while self._ordered or self._beats:
                if self._ordered:
                    event = self._ordered.popleft()
                    await self._record(event, deployments, shadows)
                    continue
                cores = list(itertools.islice(self._beats, HEARTBEAT_BATCH))
                batch = [(core, self._beats.pop(core)) for core in cores]
                await self._record_beats(batch, deployments, identities)

    @staticmethod
    async def _record_beats(
        batch: list[tuple[str, bytes]],
        deployments: DeploymentService,
        identities: IdentityService,
    ) -> None:
        try:
            for core, heartbeat in await identities.record_heartbeats(batch):
                if heartbeat is not None and heartbeat.refused:
                    await deployments.redeploy_refused(core, heartbeat)
        except Exception:  # snapshots: each core's next heartbeat tells the same again
            log.exception("mqtt.core_heartbeats_failed count=%d", len(batch))

    @staticmethod
    async def _record(
        event: CoreEvent,
        deployments: DeploymentService,
        shadows: ShadowService,
    ) -> None:
        handled = event.handled
        try:
            if event.kind == CoreLeaf.DEPLOYMENT_STATUS:
                await deployments.record_status(event.core, event.payload)
            else:
                await shadows.from_core(event.core, event.payload)
        except CloudError as exc:  # refused for good: sending it again would not help
            log.warning(
                "mqtt.core_event_refused core=%s kind=%s reason=%s",
                event.core,
                event.kind,
                exc.message,
            )
        except Exception as exc:  # e.g. the database is down: not acknowledged, sent again
            log.exception("mqtt.core_event_failed core=%s kind=%s", event.core, event.kind)
            if handled is not None and not handled.done():
                handled.set_exception(exc)
            return
        if handled is not None and not handled.done():
            handled.set_result(None)


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class CloudInterceptor:
    """Called by the broker for every authorized PUBLISH from a core."""

    def __init__(
        self, ingest: IngestWorker, events: CoreEvents, logs: IngestWorker | None = None
    ) -> None:
        self.ingest = ingest
        self.events = events
        self.logs = logs

    def __call__(self, identity: Identity, publish: Publish) -> asyncio.Future[None] | None:
        """Core events go to their handlers; telemetry to the store, and the returned
        future makes the broker acknowledge the core's QoS 1 message only once stored."""
        if identity.kind != "core":
            return None
        topic = publish.topic
        routed = parse_routed_topic(topic)
        if routed is not None:  # an MQTT 3.1.1 core: its telemetry under its own prefix
            if routed.core != identity.name:
                return None
            routed_stored = self.ingest.submit(routed.topic, publish.payload, identity.name)
            return routed_stored if publish.qos else None
        if topic.startswith("$"):
            parsed = parse_core_topic(topic)
            if parsed is None or parsed.core != identity.name:
                return None
            if parsed.leaf == CoreLeaf.LOGS and self.logs is not None:
                # acknowledged once stored, like telemetry: the core keeps it until then
                group = str(identity.attributes.get("group", ""))
                logs_stored = self.logs.submit(group, publish.payload, identity.name)
                return logs_stored if publish.qos else None
            handled = self.events.offer(identity.name, parsed.leaf, publish.payload)
            return handled if publish.qos else None
        stored = self.ingest.submit(topic, publish.payload, identity.name)
        return stored if publish.qos else None


class BrokerNotifier:
    """Notifications through the embedded broker (QoS 1, retained)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        await self.broker.publish(topic, payload, qos=1, retain=retain)

    async def disconnect(self, identity: str, reason: str) -> None:
        count = self.broker.disconnect_where(lambda i: i.name == identity, reason)
        if count:
            log.info("mqtt.disconnected identity=%s count=%s reason=%s", identity, count, reason)


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(f"invalid broker URL {url!r}: use mqtts://host:port (or mqtt://)")
    tls = parts.scheme == "mqtts"
    return parts.hostname, parts.port or (8883 if tls else 1883), tls


class ExternalBrokerLink:
    """The cloud as a client of an external broker (EMQX, VerneMQ, Mosquitto, ...).

    Its session is persistent and its client id stable (one per replica): a core's QoS 1
    message is acknowledged to the broker only once stored, so what a replica had not
    stored when it died is sent to it again when it comes back.
    """

    def __init__(
        self,
        url: str,
        ssl_context: ssl.SSLContext | None,
        ingest: IngestWorker,
        events: CoreEvents,
        *,
        share: str,
        client_id: str,
        logs: IngestWorker | None = None,
        session_expiry: int = EXTERNAL_SESSION_EXPIRY_S,
        version: ProtocolVersion = ProtocolVersion.V5,
        password: str | None = None,
        ingest_telemetry: bool = True,
    ) -> None:
        self.host, self.port, tls = parse_broker_url(url)
        #: MQTT 5, or 3.1.1 where the broker offers no 5 (RabbitMQ 3.10): then no shared
        #: subscription either, and cores' telemetry arrives under their ``routed/`` prefix
        self.version = version
        #: with a password the link logs in as ``hedgerow-cloud`` (a broker that asks the
        #: cloud over HTTP); without, the TLS client certificate is the identity
        self.username = CLOUD_USER if password is not None else None
        self.password = password
        #: False: this replica takes core events only (a broker without shared
        #: subscriptions gives every subscriber everything: one replica ingests)
        self.ingest_telemetry = ingest_telemetry
        self.logs = logs
        self.ssl_context = ssl_context if tls else None
        self.ingest = ingest
        self.events = events
        self.share = share
        self.client_id = client_id
        self.session_expiry = session_expiry
        self.client: Client | None = None
        self.connected = asyncio.Event()
        #: set when a message could not be stored: reconnect, so the broker sends it again
        self._refused = asyncio.Event()
        #: per core, its last presence report (retained at the broker: read at each connect)
        self._reported: dict[str, bool] = {}
        #: retained messages (cores' state) published while the broker was unreachable:
        #: the latest per topic, sent when the link is back (insertion order kept)
        self.deferred: dict[str, bytes] = {}

    def presence(self) -> ReportedPresence:
        """The cores connected to the external broker, as they report it."""
        reported = self._reported
        return ReportedPresence(
            frozenset(core for core, up in reported.items() if up), frozenset(reported)
        )

    def filters(self) -> list[str]:
        """Telemetry through the shared subscription; core events to every process (some
        brokers, Mosquitto 2.0 among them, never deliver ``$`` topics to shared
        subscriptions; recording a status twice is harmless). Over MQTT 3.1.1 telemetry
        comes under each core's ``routed/`` prefix, to this replica's own session."""
        if not self.ingest_telemetry:
            telemetry = []
        elif self.version == ProtocolVersion.V5:
            telemetry = [f"$share/{self.share}/#"]
        else:
            telemetry = [all_routed_filter()]
        return [
            *telemetry,
            all_cores_filter(CoreLeaf.DEPLOYMENT_STATUS),
            all_cores_filter(CoreLeaf.HEARTBEAT),
            all_cores_filter(CoreLeaf.SHADOW_UPDATE),
            all_cores_filter(CoreLeaf.LOGS),
            all_cores_filter(CoreLeaf.PRESENCE),
        ]

    async def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """Send to cores through the broker. A retained message is a core's state (its
        deployment, revocations, CAs, log levels, a support bundle request): while the
        broker is unreachable the latest one per topic waits here, the call returns at
        once, and it is sent as soon as the link is back. Any other message (a command, a
        shadow answer) waits ``PUBLISH_WAIT_S`` for the link, then fails with
        ``Unavailable``."""
        client = self.client
        if client is not None and client.is_connected:
            try:
                await client.publish(topic, payload, qos=1, retain=retain)
                return
            except ClientError as exc:
                if not retain:
                    raise self._unavailable(topic) from exc
        if retain:
            self.deferred.pop(topic, None)  # the latest wins, and goes last
            self.deferred[topic] = payload
            log.info(
                "mqtt.external_deferred topic=%s pending=%d reason=%r",
                topic,
                len(self.deferred),
                "broker unreachable",
            )
            return
        try:
            await asyncio.wait_for(self.connected.wait(), PUBLISH_WAIT_S)
        except TimeoutError:
            raise self._unavailable(topic) from None
        client = self.client
        if client is None:
            raise self._unavailable(topic)
        try:
            await client.publish(topic, payload, qos=1, retain=False)
        except ClientError as exc:
            raise self._unavailable(topic) from exc

    def _unavailable(self, topic: str) -> Unavailable:
        return Unavailable(
            f"the MQTT broker at {self.host}:{self.port} is unreachable: {topic!r} was not "
            "sent; try again once it is back (the cloud reconnects by itself)"
        )

    async def _send_deferred(self, client: Client) -> None:
        """Send what waited for the link, before anything newer can overtake it."""
        sent = 0
        while self.deferred:
            topic = next(iter(self.deferred))
            payload = self.deferred.pop(topic)
            try:
                await client.publish(topic, payload, qos=1, retain=True)
            except ClientError:
                self.deferred.setdefault(topic, payload)  # unless a newer one came meanwhile
                raise
            sent += 1
        if sent:
            log.info("mqtt.external_deferred_sent count=%d", sent)

    async def disconnect(self, identity: str, reason: str) -> None:
        """Cut a core off at the broker: connect once with its client id (every MQTT broker
        closes the older connection of a client id taken over) and leave at once. A broker
        that asks the cloud refuses the core's own reconnect; its client id is its name."""
        try:
            async with asyncio.timeout(TAKEOVER_TIMEOUT_S):
                async with Client(
                    self.host,
                    self.port,
                    client_id=identity,
                    ssl=self.ssl_context,
                    server_hostname=self.host if self.ssl_context else None,
                    version=self.version,
                    clean_start=True,
                    username=self.username,
                    password=self.password,
                ):
                    pass
        except (ClientError, OSError, ssl.SSLError, TimeoutError) as exc:
            log.warning(
                "mqtt.external_disconnect_failed identity=%s reason=%s error=%s",
                identity,
                reason,
                exc,
            )
            return
        log.info("mqtt.external_disconnected identity=%s reason=%s", identity, reason)

    def _handle(self, client: Client, message: Message) -> None:
        stored: asyncio.Future[None]
        routed = parse_routed_topic(message.topic)
        if routed is not None:  # a 3.1.1 core: the topic names it
            stored = self.ingest.submit(routed.topic, message.payload, routed.core)
            stored.add_done_callback(lambda done: self._stored(client, message, done))
            return
        parsed = parse_core_topic(message.topic)
        if parsed is not None:
            if parsed.leaf == CoreLeaf.PRESENCE:
                self._presence(parsed.core, message.payload)
                client.ack(message)
                return
            if parsed.leaf != CoreLeaf.LOGS or self.logs is None:
                handled = self.events.offer(parsed.core, parsed.leaf, message.payload)
                if handled is None:
                    client.ack(message)
                else:
                    handled.add_done_callback(lambda done: self._stored(client, message, done))
                return
            stored = self.logs.submit("", message.payload, parsed.core)
        else:
            user = message.properties.user_properties
            core = next((v for k, v in user if k == "core"), "")
            stored = self.ingest.submit(message.topic, message.payload, core)
        stored.add_done_callback(lambda done: self._stored(client, message, done))

    def _stored(self, client: Client, message: Message, done: asyncio.Future[None]) -> None:
        if not done.cancelled() and done.exception() is None:
            client.ack(message)
            return
        error = "cancelled" if done.cancelled() else done.exception()
        log.warning("ingest.refused_external topic=%s error=%s", message.topic, error)
        self._refused.set()  # not acknowledged: the broker sends it again after a reconnect

    async def _receive(self, client: Client) -> None:
        async for message in client.messages():
            self._handle(client, message)

    def _presence(self, core: str, payload: bytes) -> None:
        if not payload:  # a retained message cleared
            self._reported.pop(core, None)
            return
        try:
            connected = Presence.from_json(payload).connected
        except ContractError as exc:
            log.warning("mqtt.bad_presence core=%s error=%s", core, exc)
            return
        if self._reported.get(core) != connected:
            log.info("mqtt.core_presence core=%s connected=%s", core, connected)
        self._reported[core] = connected

    async def run(self) -> None:
        attempt = 0
        while True:
            started = time.monotonic()
            self._refused.clear()
            try:
                async with Client(
                    self.host,
                    self.port,
                    client_id=self.client_id,
                    ssl=self.ssl_context,
                    server_hostname=self.host if self.ssl_context else None,
                    keepalive=30,
                    queue_size=100_000,
                    clean_start=False,
                    session_expiry=self.session_expiry,
                    manual_ack=True,
                    version=self.version,
                    username=self.username,
                    password=self.password,
                ) as client:
                    # ``connected`` is set once the broker acknowledged the subscriptions:
                    # from then on this replica's session holds what cores send
                    await client.subscribe(*self.filters(), qos=1)
                    await self._send_deferred(client)
                    self.client = client
                    self.connected.set()
                    log.info(
                        "mqtt.external_connected host=%s port=%s share=%s client=%s "
                        "resumed=%s version=%s ingest=%s",
                        self.host,
                        self.port,
                        self.share,
                        self.client_id,
                        client.session_present,
                        self.version.name,
                        self.ingest_telemetry,
                    )
                    receiving = asyncio.ensure_future(self._receive(client))
                    refused = asyncio.ensure_future(self._refused.wait())
                    try:
                        await asyncio.wait(
                            {receiving, refused}, return_when=asyncio.FIRST_COMPLETED
                        )
                    finally:
                        for task in (receiving, refused):
                            task.cancel()
                        await asyncio.gather(receiving, refused, return_exceptions=True)
                    if self._refused.is_set():
                        log.warning("mqtt.external_reconnect reason=%r", "a message not stored")
                    elif not receiving.cancelled():
                        receiving.result()  # the connection's end, raised as its error
            except (ClientError, OSError, ssl.SSLError) as exc:
                log.warning(
                    "mqtt.external_lost host=%s port=%s error=%s", self.host, self.port, exc
                )
            finally:
                self.client = None
                self.connected.clear()
            attempt = 0 if time.monotonic() - started > 20 else attempt + 1
            delay = min(RECONNECT_MAX, RECONNECT_BASE * 2**attempt)
            await asyncio.sleep(random.uniform(delay / 2, delay))


def replica_client_id(replica_id: str, api_port: int) -> str:
    """The cloud's client id at an external broker: the same across restarts of one
    replica (its persistent session holds what it had not stored), distinct between
    replicas (the API port tells replicas on one host apart; none fixed: a random id)."""
    if replica_id:
        return f"hedgerow-cloud-{replica_id}"
    if api_port:
        return f"hedgerow-cloud-{socket.gethostname()}-{api_port}"
    return f"hedgerow-cloud-{uuid.uuid4().hex[:12]}"
