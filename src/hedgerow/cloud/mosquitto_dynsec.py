"""Mosquitto's dynamic security plugin kept in step with the registry
(``broker_login = "mosquitto-dynsec"``): the thin shell around ``dynsec_plan``.

``DynsecControl`` is one MQTT connection to the broker as the cloud's user (a dynsec
administrator): it publishes command batches on ``$CONTROL/dynamic-security/v1`` and
matches the answers on ``.../response`` by their correlation data (every replica's
administrator hears every answer). ``DynsecSync`` reads the registry and the broker and
sends the plan: ``reconcile`` for the whole fleet (at each connect of the control link,
so a broker that lost its state converges, and as a job once across replicas), and
``sync_core`` for one core at once (revoked, deleted, claimed or re-issued).
``DynsecCutOff`` is the notifier that syncs a core's dynsec client before taking its
client id over: the core's next login is then refused by Mosquitto itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from hedgerow.client import Client, ClientError, ProtocolVersion
from hedgerow.cloud import dynsec_plan
from hedgerow.cloud.broker_acl import CoreStanding, Routes
from hedgerow.cloud.errors import CloudError, Unavailable
from hedgerow.cloud.mqtt_endpoint import ExternalBrokerLink, parse_broker_url

log = logging.getLogger(__name__)

CONTROL_TOPIC: Final = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC: Final = CONTROL_TOPIC + "/response"
#: Commands in one control message. Mosquitto runs the plugin on its one thread and
#: 2.0.11 saves its whole dynsec file at every command (10-25 ms each at 1,000 cores,
#: growing with the fleet): a message of 100 commands stalled every other client up to
#: 2 s there, one of 20 up to 0.65 s; a core synced now (a revocation) waits behind one
#: batch of a running reconcile at most.
BATCH: Final = 20
#: How long one batch's answer may take: this, plus ``ANSWER_PER_COMMAND_S`` a command.
ANSWER_TIMEOUT_S: Final = 10.0
ANSWER_PER_COMMAND_S: Final = 0.2
#: Seconds between two full reconciles (run once across replicas).
RECONCILE_SECONDS: Final = 60.0
RECONNECT_BASE: Final = 0.5
RECONNECT_MAX: Final = 15.0

Command = dict[str, Any]
Answer = dict[str, Any]


class DynsecControl:
    """Commands to the broker's dynamic security plugin, and their answers."""

    def __init__(
        self,
        url: str,
        ssl_context: ssl.SSLContext | None,
        *,
        client_id: str,
        username: str,
        password: str,
        version: ProtocolVersion = ProtocolVersion.V5,
    ) -> None:
        self.host, self.port, tls = parse_broker_url(url)
        self.ssl_context = ssl_context if tls else None
        self.client_id = client_id
        self.username = username
        self.password = password
        self.version = version
        self.connected = asyncio.Event()
        self._client: Client | None = None
        self._waiting: dict[str, asyncio.Future[list[Answer]]] = {}

    async def execute(self, commands: Sequence[Command]) -> list[Answer]:
        """Send ``commands`` (in batches of ``BATCH``): their answers, in order (an answer
        with ``error`` is a command the plugin refused). ``Unavailable`` when the broker
        cannot be reached or does not answer in time."""
        answers: list[Answer] = []
        for start in range(0, len(commands), BATCH):
            answers += await self._batch(commands[start : start + BATCH])
        return answers

    async def _batch(self, commands: Sequence[Command]) -> list[Answer]:
        client = self._client
        if client is None or not client.is_connected:
            raise Unavailable(f"the MQTT broker at {self.host}:{self.port} is unreachable")
        batch = uuid.uuid4().hex
        tagged = [{**c, "correlationData": f"{batch}:{i}"} for i, c in enumerate(commands)]
        answered: asyncio.Future[list[Answer]] = asyncio.get_running_loop().create_future()
        self._waiting[batch] = answered
        try:
            await client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}).encode(), qos=1)
            async with asyncio.timeout(ANSWER_TIMEOUT_S + ANSWER_PER_COMMAND_S * len(commands)):
                return await answered
        except (ClientError, TimeoutError) as exc:
            raise Unavailable(
                f"the dynamic security plugin at {self.host}:{self.port} did not answer: {exc}"
            ) from exc
        finally:
            self._waiting.pop(batch, None)

    def _answer(self, payload: bytes) -> None:
        try:
            responses = json.loads(payload)["responses"]
            batch = str(responses[0].get("correlationData", "")).partition(":")[0]
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            log.warning("dynsec.bad_answer payload=%r", payload[:200])
            return
        waiting = self._waiting.get(batch)  # another replica's otherwise
        if waiting is not None and not waiting.done():
            waiting.set_result(list(responses))

    async def _read(self, client: Client) -> None:
        async for message in client.messages():
            self._answer(message.payload)

    async def run(self, on_connected: Callable[[], Awaitable[object]]) -> None:
        """Forever: connected as the administrator; ``on_connected`` at each connect
        (while the answers are read)."""
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                async with Client(
                    self.host,
                    self.port,
                    client_id=self.client_id,
                    ssl=self.ssl_context,
                    server_hostname=self.host if self.ssl_context else None,
                    keepalive=30,
                    clean_start=True,
                    version=self.version,
                    username=self.username,
                    password=self.password,
                ) as client:
                    await client.subscribe(RESPONSE_TOPIC, qos=1)
                    self._client = client
                    self.connected.set()
                    log.info("dynsec.connected host=%s port=%s", self.host, self.port)
                    reading = asyncio.ensure_future(self._read(client))
                    syncing = asyncio.ensure_future(on_connected())
                    try:
                        await reading  # the connection's end, raised as its error
                    finally:
                        for task in (reading, syncing):
                            task.cancel()
                        await asyncio.gather(reading, syncing, return_exceptions=True)
            except (ClientError, OSError, ssl.SSLError) as exc:
                log.warning("dynsec.lost host=%s port=%s error=%s", self.host, self.port, exc)
            finally:
                self._client = None
                self.connected.clear()
                for waiting in self._waiting.values():
                    if not waiting.done():
                        waiting.set_exception(ClientError("the control connection closed"))
            attempt = 0 if time.monotonic() - started > 20 else attempt + 1
            delay = min(RECONNECT_MAX, RECONNECT_BASE * 2**attempt)
            await asyncio.sleep(random.uniform(delay / 2, delay))


Standings = Callable[[], Awaitable[list[CoreStanding]]]
Standing = Callable[[str], Awaitable[CoreStanding | None]]


class DynsecSync:
    """The registry's cores as dynsec clients and roles (``dynsec_plan``'s plan, sent)."""

    def __init__(
        self,
        control: DynsecControl,
        *,
        standings: Standings,
        standing: Standing,
        routes: Callable[[str], Routes],
        password: Callable[[str, str], str],
        cloud_user: str,
        refresh_routes: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``routes`` reads a group's routes from a cache ``refresh_routes`` reloads
        before each plan (another replica may have changed them a moment ago)."""
        self.control = control
        self._refresh = refresh_routes
        self._standings = standings
        self._standing = standing
        self._routes = routes
        self._password = password
        self.cloud_user = cloud_user
        #: full reconciles done, and commands the plugin refused
        self.reconciles = 0
        self.refused = 0
        #: set after each full reconcile that completed
        self.reconciled = asyncio.Event()
        self._reconciling = asyncio.Lock()

    async def _refresh_routes(self) -> None:
        if self._refresh is not None:
            await self._refresh()

    def _desired(self, standing: CoreStanding) -> dynsec_plan.DesiredCore:
        password = self._password(standing.name, standing.fingerprint)
        return dynsec_plan.desired_core(standing.name, password, self._routes(standing.group))

    async def reconcile(self) -> int:
        """The whole broker in step with the registry: the commands sent.

        The broker is read before the registry: what another replica changed meanwhile
        is then in the registry read, so this plan can at worst repeat that replica's
        commands (refused as done already), never undo them. One at a time here."""
        async with self._reconciling:
            return await self._reconcile()

    async def _reconcile(self) -> int:
        clients, roles, access = await self.control.execute(
            [
                {"command": "listClients", "verbose": True, "count": -1},
                {"command": "listRoles", "verbose": True, "count": -1},
                {"command": "getDefaultACLAccess"},
            ]
        )
        for answer in (clients, roles, access):
            if "error" in answer:
                raise Unavailable(f"dynsec {answer.get('command')}: {answer['error']}")
        observed = dynsec_plan.observed_from(
            clients["data"]["clients"], roles["data"]["roles"], access["data"]["acls"]
        )
        await self._refresh_routes()
        desired = {s.name: self._desired(s) for s in await self._standings()}
        commands = dynsec_plan.plan(desired, observed, cloud_user=self.cloud_user)
        if not await self._send(commands):
            return len(commands)  # done again at the reconnect: then ``reconciled``
        self.reconciles += 1
        self.reconciled.set()
        if commands:
            log.info("dynsec.reconciled cores=%d commands=%d", len(desired), len(commands))
        return len(commands)

    async def sync_core(self, core: str) -> int:
        """One core in step at once (the broker read first, as ``reconcile`` does): the
        commands sent."""
        client, role = await self.control.execute(
            [
                {"command": "getClient", "username": core},
                {"command": "getRole", "rolename": dynsec_plan.core_role(core)},
            ]
        )
        observed = dynsec_plan.observed_from(
            [client["data"]["client"]] if "error" not in client else [],
            [role["data"]["role"]] if "error" not in role else [],
        )
        await self._refresh_routes()
        standing = await self._standing(core)
        desired = {} if standing is None else {core: self._desired(standing)}
        commands = dynsec_plan.plan(desired, observed, cloud_user=self.cloud_user, scope=[core])
        await self._send(commands)
        log.info(
            "dynsec.core_synced core=%s live=%s commands=%d", core, bool(desired), len(commands)
        )
        return len(commands)

    async def _send(self, commands: Sequence[Command]) -> bool:
        """Send ``commands``; False when they ended by giving the cloud's user its role
        (the plugin then closes that user's connections, this one included)."""
        if not commands:
            return True
        try:
            answers = await self.control.execute(commands)
        except Unavailable:
            if commands[-1].get("command") == "addClientRole":
                log.info("dynsec.cloud_role_added user=%s", self.cloud_user)
                return False
            raise
        for answer in answers:
            if "error" in answer:
                self.refused += 1
                log.warning(
                    "dynsec.refused command=%s error=%s", answer.get("command"), answer["error"]
                )
        return commands[-1].get("command") != "addClientRole"

    async def tick(self) -> None:
        """The periodic job's reconcile (none while the control link is down: it runs
        at its next connect anyway)."""
        if self.control.connected.is_set():
            await self.reconcile()

    async def on_connected(self) -> None:
        """At each connect of the control link: the broker may have lost its state."""
        try:
            await self.reconcile()
        except CloudError as exc:
            log.warning("dynsec.reconcile_failed error=%s", exc.message)
        except Exception:  # e.g. the database is down: the job's next tick tries again
            log.exception("dynsec.reconcile_failed")


class DynsecCutOff:
    """The external broker's notifier, syncing a core's dynsec client before cutting it
    off (``disconnect`` is called when a core is revoked, deleted, claimed or re-issued):
    Mosquitto then refuses the core's next login, and the takeover closes any session
    the plugin left open."""

    def __init__(self, link: ExternalBrokerLink, sync: DynsecSync) -> None:
        self.link = link
        self.sync = sync

    async def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        await self.link.publish(topic, payload, retain=retain)

    async def disconnect(self, identity: str, reason: str) -> None:
        try:
            await self.sync.sync_core(identity)
        except CloudError as exc:  # the next reconcile (at the broker's return) does it
            log.warning(
                "dynsec.sync_failed core=%s reason=%s error=%s", identity, reason, exc.message
            )
        await self.link.disconnect(identity, reason)
