"""The asyncio MQTT client: MQTT 3.1.1 and 5 over TCP, TLS or mutual TLS; QoS 0, 1 and 2.

``Client`` owns the session (QoS flows that outlive a connection, the inbound message queue)
and opens one ``Connection`` per ``connect()``. Packets are encoded and decoded by the pure
``hedgerow.mqtt`` codec; the QoS bookkeeping is ``hedgerow.mqtt.session``'s. No reconnect
policy lives here: when the connection drops, pending operations fail with ``ConnectionLost``
and the caller decides when to ``connect()`` again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl as ssl_module
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from hedgerow.mqtt import packets
from hedgerow.mqtt.codec import encode_publish
from hedgerow.mqtt.errors import MQTTError
from hedgerow.mqtt.packets import (
    NO_PROPERTIES,
    ConnAck,
    Disconnect,
    PingResp,
    Properties,
    ProtocolVersion,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
)
from hedgerow.mqtt.properties import PUBLISH as PUBLISH_TYPE
from hedgerow.mqtt.properties import encode_properties
from hedgerow.mqtt.reasons import ReasonCode
from hedgerow.mqtt.session import InboundAliases, InboundFlows, OutboundAliases, OutboundFlows
from hedgerow.mqtt.topics import validate_topic_filter, validate_topic_name

from .errors import (
    ClientError,
    ConnectError,
    ConnectionLost,
    ProtocolViolation,
    PublishError,
    SubscribeError,
)
from .inbox import Inbox
from .message import Message, Will
from .transport import Connection

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883
#: largest packet we accept unless told otherwise (the protocol's own limit is 256 MiB)
DEFAULT_MAX_PACKET_SIZE = 16 * 1024 * 1024
#: most QoS 1/2 publishes we accept unacknowledged from the server (MQTT 5 receive maximum)
DEFAULT_RECEIVE_MAXIMUM = 65535
#: most inbound topic aliases we let an MQTT 5 server use
DEFAULT_TOPIC_ALIAS_MAXIMUM = 64
#: the longest default wait for a PINGRESP (``ping_timeout`` overrides it)
MAX_PING_TIMEOUT = 30.0
#: how long ``disconnect()`` waits for the server to close its side
DISCONNECT_TIMEOUT = 5.0

SubscriptionSpec = str | tuple[str, int] | Subscription
DisconnectHook = Callable[[ClientError | None], None]


class Client:
    """An MQTT client; ``async with Client(host, port, ...) as client`` connects and disconnects.

    One connection per ``connect()``. ``session_present`` and ``connack`` describe the last
    successful connect. ``closed`` is a future resolved when that connection ends, with None
    after ``disconnect()`` or with the ``ClientError`` that ended it; ``on_disconnect`` is
    called with the same value.
    """

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        client_id: str = "",
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        version: ProtocolVersion = ProtocolVersion.V5,
        keepalive: int = 60,
        clean_start: bool = True,
        session_expiry: int = 0,
        username: str | None = None,
        password: bytes | str | None = None,
        will: Will | None = None,
        connect_timeout: float = 10.0,
        ping_timeout: float | None = None,
        receive_maximum: int = DEFAULT_RECEIVE_MAXIMUM,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        topic_alias_maximum: int = DEFAULT_TOPIC_ALIAS_MAXIMUM,
        max_inflight: int = 65535,
        topic_aliases: bool = False,
        queue_size: int = 10000,
        properties: Properties = NO_PROPERTIES,
        on_disconnect: DisconnectHook | None = None,
        manual_ack: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.version = ProtocolVersion(version)
        self.keepalive = keepalive
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.username = username
        self.password = password.encode() if isinstance(password, str) else password
        self.will = will
        self.connect_timeout = connect_timeout
        self.ping_timeout = ping_timeout
        self.receive_maximum = receive_maximum
        self.max_packet_size = max_packet_size
        self.topic_alias_maximum = topic_alias_maximum
        self.max_inflight = max_inflight
        self.topic_aliases = topic_aliases
        self.queue_size = queue_size
        self.connect_properties = properties
        self.on_disconnect = on_disconnect
        #: QoS 1 messages are acknowledged by ``ack(message)``, not on receipt: with a
        #: persistent session the server sends what was never acknowledged again.
        self.manual_ack = manual_ack
        #: the last publish properties sized for the server's maximum packet size, and their size
        self._sized_properties: tuple[Properties | None, int] = (None, 0)

        self.connack: ConnAck | None = None
        self.session_present = False
        #: the keepalive in force (the server's, if its CONNACK set one)
        self.effective_keepalive = keepalive

        self._conn: Connection | None = None
        self._connected = False
        self._generation = 0
        self._closed: asyncio.Future[ClientError | None] | None = None
        self._last_error: ClientError | None = None
        self._connack_waiter: asyncio.Future[ConnAck] | None = None
        # session state that outlives a connection (kept when clean_start is False)
        self._outbound = OutboundFlows(receive_maximum=max_inflight)
        self._inbound = InboundFlows()
        self._aliases = InboundAliases(topic_alias_maximum)
        self._out_aliases: OutboundAliases | None = None
        self._alias_properties: dict[int, Properties] = {}
        self._server_max_packet: int | None = None
        # per connection
        self._publish_waiters: dict[int, asyncio.Future[None]] = {}
        self._backlog: deque[tuple[Publish, asyncio.Future[None]]] = deque()
        self._requests: dict[int, asyncio.Future[Any]] = {}
        # inbound application messages
        self._inbox = Inbox(queue_size, self._pause_reading, self._resume_reading)
        self._checked_topics: set[str] = set()
        self._end_errors: dict[int, ClientError | None] = {}

        self._handlers: dict[type[Any], Callable[[Any], None]] = {
            Publish: self._on_publish,
            PubAck: self._on_puback,
            PubRec: self._on_pubrec,
            PubRel: self._on_pubrel,
            PubComp: self._on_pubcomp,
            SubAck: self._on_request_ack,
            UnsubAck: self._on_request_ack,
            PingResp: self._on_pingresp,
            Disconnect: self._on_server_disconnect,
        }

    def __repr__(self) -> str:
        state = "connected" if self._connected else "disconnected"
        return (
            f"<Client {self.host}:{self.port} client_id={self.client_id!r} "
            f"v{int(self.version)} {state}>"
        )

    # ---- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def tls(self) -> ssl_module.SSLObject | None:
        """The current connection's TLS object (``session``, ``session_reused``), if any."""
        conn = self._conn
        transport = getattr(conn, "transport", None) if conn is not None else None
        if conn is None or conn.closed or transport is None:
            return None
        found = transport.get_extra_info("ssl_object")
        return found if isinstance(found, ssl_module.SSLObject) else None

    @property
    def closed(self) -> asyncio.Future[ClientError | None]:
        """Resolved when the current (or last) connection ends: None if we disconnected."""
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
            self._closed.set_result(self._last_error)
        return self._closed

    @property
    def pings(self) -> tuple[int, int]:
        """(PINGREQs sent, PINGRESPs received) on the current connection."""
        conn = self._conn
        return (conn.pings_sent, conn.pongs_received) if conn is not None else (0, 0)

    async def connect(self) -> ConnAck:
        """Open the connection and wait for CONNACK; raises ``ConnectError`` if refused."""
        if self._conn is not None and not self._conn.closed:
            raise ClientError("already connected")
        loop = asyncio.get_running_loop()
        if self.clean_start:
            self._reset_session()
        self._aliases = InboundAliases(self.topic_alias_maximum)
        self._connack_waiter = loop.create_future()
        conn: Connection | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    self._make_connection,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.server_hostname if self.ssl else None,
                )
                self._conn = conn
                conn.send_packet(self._connect_packet())
                connack = await self._connack_waiter
        except TimeoutError as exc:
            self._abandon(conn)
            raise ConnectError(
                f"no CONNACK from {self.host}:{self.port} within {self.connect_timeout:g} s"
            ) from exc
        except ClientError as exc:  # lost or broken before CONNACK
            self._abandon(conn)
            raise ConnectError(f"{self.host}:{self.port} closed the connection: {exc}") from exc
        except OSError as exc:  # refused, unreachable, TLS handshake or certificate failure
            self._abandon(conn)
            raise ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        except BaseException:
            self._abandon(conn)
            raise
        if connack.reason_code != 0:
            self._abandon(conn)
            raise ConnectError(
                f"{self.host}:{self.port} refused the connection (code {connack.reason_code:#04x})",
                connack.reason_code,
            )
        return connack

    async def disconnect(
        self, reason_code: int = 0, properties: Properties = NO_PROPERTIES
    ) -> None:
        """Send DISCONNECT and close; pending operations fail with ``ConnectionLost``."""
        conn = self._conn
        if conn is None or conn.closed:
            return
        if self._connected:
            conn.send_packet(Disconnect(reason_code=reason_code, properties=properties))
        conn.close()
        try:
            async with asyncio.timeout(DISCONNECT_TIMEOUT):
                await asyncio.shield(conn.lost)
        except TimeoutError:
            log.warning("mqtt.client.disconnect_timeout host=%s port=%s", self.host, self.port)
            conn.abort()

    def abort(self) -> None:
        """Drop the connection without DISCONNECT (the server then publishes the will)."""
        if self._conn is not None:
            self._conn.abort(ConnectionLost("connection aborted"))

    # ---- publishing -------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: bytes | str = b"",
        qos: int = 0,
        retain: bool = False,
        properties: Properties = NO_PROPERTIES,
    ) -> None:
        """Publish and return once the QoS flow completes (at once for QoS 0).

        Raises ``PublishError`` if the server refuses it, ``ConnectionLost`` if the
        connection ends first.
        """
        future = self.publish_nowait(topic, payload, qos, retain, properties)
        conn = self._conn
        if qos == 0 and conn is not None and conn.writing_paused:
            await conn.drain()
        await future

    def publish_nowait(
        self,
        topic: str,
        payload: bytes | str = b"",
        qos: int = 0,
        retain: bool = False,
        properties: Properties = NO_PROPERTIES,
    ) -> asyncio.Future[None]:
        """Queue a publish and return a future resolved when its QoS flow completes.

        QoS 0 futures are resolved already. QoS 1/2 publishes beyond the server's receive
        maximum wait in order inside the client and are sent as acknowledgements free slots.
        """
        conn = self._live_connection()
        if isinstance(payload, str):
            payload = payload.encode()
        if self._server_max_packet is not None:
            self._check_size(topic, payload, qos, retain, properties, self._server_max_packet)
        future: asyncio.Future[None] = conn.loop.create_future()
        if qos == 0:
            if topic in self._checked_topics or self._check_topic(topic):
                conn.send(self._encode(topic, payload, 0, retain, None, properties))
            future.set_result(None)
            return future
        if qos not in (1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        if topic not in self._checked_topics:
            self._check_topic(topic)
        publish = Publish(
            topic=topic,
            payload=payload,
            qos=qos,
            retain=retain,
            dup=False,
            packet_id=None,
            properties=properties,
        )
        if self._backlog or not self._outbound.can_send():
            self._backlog.append((publish, future))
        else:
            self._send_qos_publish(conn, publish, future)
        return future

    def _check_size(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: Properties,
        maximum: int,
    ) -> None:
        # A cheap upper bound first (fixed header, topic as at most 4 bytes a character,
        # packet id, properties, payload): encoding every publish twice would cost the
        # core's cloud leg a quarter of its CPU.
        if properties is NO_PROPERTIES:
            props = 1
        elif properties is self._sized_properties[0]:
            props = self._sized_properties[1]
        else:
            props = 5 + len(encode_properties(properties, PUBLISH_TYPE))
            self._sized_properties = (properties, props)
        if 9 + 4 * len(topic) + props + len(payload) <= maximum:
            return
        size = len(
            encode_publish(
                topic, payload, qos, retain, False, 1 if qos else None, self.version, properties
            )
        )
        if size > maximum:
            raise PublishError(
                f"PUBLISH of {size} bytes exceeds the server's maximum packet size of {maximum}",
                ReasonCode.PACKET_TOO_LARGE,
            )

    def _check_topic(self, topic: str) -> bool:
        try:
            validate_topic_name(topic)
        except MQTTError as exc:
            raise ValueError(f"invalid topic name {topic!r}: {exc}") from exc
        if len(self._checked_topics) < 10000:
            self._checked_topics.add(topic)
        return True

    def _send_qos_publish(
        self, conn: Connection, publish: Publish, future: asyncio.Future[None]
    ) -> None:
        publish = self._outbound.start(publish)
        assert publish.packet_id is not None
        self._publish_waiters[publish.packet_id] = future
        conn.send(
            self._encode(
                publish.topic,
                publish.payload,
                publish.qos,
                publish.retain,
                publish.packet_id,
                publish.properties,
            )
        )

    def _encode(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        packet_id: int | None,
        properties: Properties,
    ) -> bytes:
        aliases = self._out_aliases
        if aliases is not None:
            alias, is_new = aliases.alias_for(topic)
            if alias is not None:
                if properties is NO_PROPERTIES:
                    properties = self._alias_properties.get(alias) or self._alias_props(alias)
                else:
                    properties = dataclasses.replace(properties, topic_alias=alias)
                if not is_new:
                    topic = ""
        return encode_publish(
            topic, payload, qos, retain, False, packet_id, self.version, properties
        )

    def _alias_props(self, alias: int) -> Properties:
        props = self._alias_properties[alias] = Properties(topic_alias=alias)
        return props

    def _drain_backlog(self) -> None:
        conn = self._conn
        if conn is None or conn.closed:
            return
        while self._backlog and self._outbound.can_send():
            publish, future = self._backlog.popleft()
            if future.done():  # cancelled by the caller while it waited
                continue
            self._send_qos_publish(conn, publish, future)

    # ---- subscriptions ----------------------------------------------------------------

    async def subscribe(
        self,
        *topics: SubscriptionSpec,
        qos: int = 0,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        properties: Properties = NO_PROPERTIES,
    ) -> tuple[int, ...]:
        """Subscribe to one or more topic filters; returns the granted QoS / reason codes.

        ``subscribe("a/#", qos=1)``, ``subscribe(("a", 1), ("b/#", 0))`` or ``Subscription``
        objects. Raises ``SubscribeError`` if the server refuses any filter.
        """
        if not topics:
            raise ValueError("subscribe() needs at least one topic filter")
        subscriptions = tuple(
            self._subscription(spec, qos, no_local, retain_as_published, retain_handling)
            for spec in topics
        )
        suback: SubAck = await self._request(
            lambda packet_id: Subscribe(packet_id, subscriptions, properties)
        )
        codes = tuple(int(code) for code in suback.reason_codes)
        if any(code >= 0x80 for code in codes):
            raise SubscribeError(f"subscription refused: {codes}", codes)
        return codes

    async def unsubscribe(
        self, *topic_filters: str, properties: Properties = NO_PROPERTIES
    ) -> tuple[int, ...]:
        """Unsubscribe; returns the MQTT 5 reason codes (empty for MQTT 3.1.1)."""
        if not topic_filters:
            raise ValueError("unsubscribe() needs at least one topic filter")
        for topic_filter in topic_filters:
            self._check_filter(topic_filter)
        unsuback: UnsubAck = await self._request(
            lambda packet_id: Unsubscribe(packet_id, tuple(topic_filters), properties)
        )
        codes = tuple(int(code) for code in unsuback.reason_codes)
        if any(code >= 0x80 for code in codes):
            raise SubscribeError(f"unsubscribe refused: {codes}", codes)
        return codes

    def _subscription(
        self,
        spec: SubscriptionSpec,
        qos: int,
        no_local: bool,
        retain_as_published: bool,
        retain_handling: int,
    ) -> Subscription:
        if isinstance(spec, Subscription):
            self._check_filter(spec.topic_filter)
            return spec
        if isinstance(spec, tuple):
            topic_filter, qos = spec
        else:
            topic_filter = spec
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        self._check_filter(topic_filter)
        return Subscription(
            topic_filter=topic_filter,
            qos=qos,
            no_local=no_local,
            retain_as_published=retain_as_published,
            retain_handling=retain_handling,
        )

    @staticmethod
    def _check_filter(topic_filter: str) -> None:
        try:
            validate_topic_filter(topic_filter)
        except MQTTError as exc:
            raise ValueError(f"invalid topic filter {topic_filter!r}: {exc}") from exc

    async def _request(self, make_packet: Callable[[int], Subscribe | Unsubscribe]) -> Any:
        """Send SUBSCRIBE/UNSUBSCRIBE and wait for its acknowledgement.

        The packet id comes from the publish flows' pool and stays taken until the server
        answers (even if the caller gave up waiting) or the connection ends.
        """
        conn = self._live_connection()
        try:
            packet_id = self._outbound.ids.allocate()
        except MQTTError as exc:
            raise ClientError(f"no free packet identifier: {exc}") from exc
        future: asyncio.Future[Any] = conn.loop.create_future()
        self._requests[packet_id] = future
        conn.send_packet(make_packet(packet_id))
        return await future

    # ---- receiving --------------------------------------------------------------------

    def messages(self) -> MessageIterator:
        """Iterate over received messages until the connection ends.

        After ``disconnect()`` the iteration stops; if the connection was lost it raises
        ``ConnectionLost`` (messages already received are handed out first).
        """
        return MessageIterator(self, self._generation)

    async def get_message(self) -> Message:
        """The next received message; raises ``ConnectionLost`` once none can come."""
        message = await self._next_message(None)
        if message is None:
            raise ConnectionLost("disconnected")
        return message

    async def _next_message(self, generation: int | None) -> Message | None:
        """The next message; None when the connection ended by ``disconnect()``; raises
        ``ConnectionLost`` when it was lost. ``generation`` pins one connection."""
        while True:
            message = self._inbox.pop()
            if message is not None:
                return message
            if generation is None:
                if not self._connected:
                    return self._ended(self._last_error)
            elif generation != self._generation or not self._connected:
                return self._ended(self._end_errors.get(generation))
            await self._inbox.wait()

    @staticmethod
    def _ended(error: ClientError | None) -> None:
        if error is None:
            return None
        raise ConnectionLost(str(error), getattr(error, "reason_code", None)) from error

    def _pause_reading(self) -> None:
        if self._conn is not None:
            self._conn.pause_reading()

    def _resume_reading(self) -> None:
        if self._conn is not None:
            self._conn.resume_reading()

    # ---- packets from the server --------------------------------------------------------

    def _make_connection(self) -> Connection:
        return Connection(self.version, self.max_packet_size, self._on_packet, self._on_lost)

    def _on_packet(self, packet: object) -> None:
        if not self._connected:
            if isinstance(packet, ConnAck) and self._connack_waiter is not None:
                # accept it right here: packets behind it in this read belong to the session
                if packet.reason_code == 0 and self._conn is not None:
                    self._on_connected(self._conn, packet)
                if not self._connack_waiter.done():
                    self._connack_waiter.set_result(packet)
                return
            if isinstance(packet, Disconnect):
                self._on_server_disconnect(packet)
                return
            raise ProtocolViolation(f"expected CONNACK, got {type(packet).__name__}")
        handler = self._handlers.get(type(packet))
        if handler is None:
            raise ProtocolViolation(f"unexpected {type(packet).__name__} from the server")
        handler(packet)

    def _on_publish(self, publish: Publish) -> None:
        if publish.properties.topic_alias is not None or not publish.topic:
            try:
                topic = self._aliases.resolve(publish)
            except MQTTError as exc:
                raise ProtocolViolation(str(exc), exc.reason_code) from exc
            publish = dataclasses.replace(publish, topic=topic)
        if publish.qos == 0:
            self._inbox.put(
                Message(publish.topic, publish.payload, 0, publish.retain, publish.properties)
            )
            return
        try:
            deliver, response = self._inbound.on_publish(publish)
        except MQTTError as exc:
            raise ProtocolViolation(str(exc), exc.reason_code) from exc
        if deliver:
            ack_id = None
            if self.manual_ack and isinstance(response, PubAck):
                ack_id, response = (self._generation, response.packet_id), None
            self._inbox.put(
                Message(
                    publish.topic,
                    publish.payload,
                    publish.qos,
                    publish.retain,
                    publish.properties,
                    ack_id,
                )
            )
        if response is not None and self._conn is not None:
            self._conn.send_packet(response)

    def ack(self, message: Message) -> bool:
        """Acknowledge a QoS 1 message received with ``manual_ack``. False when there is
        nothing to acknowledge or its connection has ended (the server, holding a
        persistent session, sends it again on the next one)."""
        if message.ack_id is None:
            return False
        generation, packet_id = message.ack_id
        conn = self._conn
        if generation != self._generation or not self._connected or conn is None:
            return False
        conn.send_packet(PubAck(packet_id))
        return True

    def _on_pubrel(self, pubrel: PubRel) -> None:
        assert self._conn is not None
        self._conn.send_packet(self._inbound.on_pubrel(pubrel.packet_id))

    def _on_puback(self, puback: PubAck) -> None:
        self._outbound.on_puback(puback.packet_id)
        self._complete(puback.packet_id, puback.reason_code)
        self._drain_backlog()

    def _on_pubrec(self, pubrec: PubRec) -> None:
        response = self._outbound.on_pubrec(pubrec.packet_id, pubrec.reason_code)
        if pubrec.reason_code >= 0x80:
            self._complete(pubrec.packet_id, pubrec.reason_code)
            self._drain_backlog()
        elif response is not None and self._conn is not None:
            self._conn.send_packet(response)

    def _on_pubcomp(self, pubcomp: PubComp) -> None:
        self._outbound.on_pubcomp(pubcomp.packet_id)
        self._complete(pubcomp.packet_id, pubcomp.reason_code)
        self._drain_backlog()

    def _complete(self, packet_id: int, reason_code: int) -> None:
        future = self._publish_waiters.pop(packet_id, None)
        if future is None or future.done():
            return
        if reason_code >= 0x80:
            future.set_exception(
                PublishError(f"publish refused (code {reason_code:#04x})", reason_code, packet_id)
            )
        else:
            future.set_result(None)

    def _on_request_ack(self, ack: SubAck | UnsubAck) -> None:
        future = self._requests.pop(ack.packet_id, None)
        if future is None:
            raise ProtocolViolation(f"{type(ack).__name__} for unknown packet id {ack.packet_id}")
        self._outbound.ids.release(ack.packet_id)
        if not future.done():  # else the caller stopped waiting (cancelled)
            future.set_result(ack)

    def _on_pingresp(self, _: PingResp) -> None:
        if self._conn is not None:
            self._conn.on_pingresp()

    def _on_server_disconnect(self, disconnect: Disconnect) -> None:
        code = int(disconnect.reason_code)
        log.info("mqtt.client.server_disconnect code=%#04x", code)
        if self._conn is not None:
            self._conn.close(ConnectionLost(f"server disconnected (code {code:#04x})", code))

    # ---- connection state -------------------------------------------------------------

    def _connect_packet(self) -> packets.Connect:
        properties = self.connect_properties
        if self.version == ProtocolVersion.V5:
            properties = _replace_properties(
                properties,
                session_expiry_interval=self.session_expiry or None,
                receive_maximum=(self.receive_maximum if self.receive_maximum != 65535 else None),
                maximum_packet_size=self.max_packet_size,
                topic_alias_maximum=self.topic_alias_maximum or None,
            )
        return packets.Connect(
            client_id=self.client_id,
            version=self.version,
            clean_start=self.clean_start,
            keepalive=self.keepalive,
            username=self.username,
            password=self.password,
            will=self.will.to_packet() if self.will is not None else None,
            properties=properties,
        )

    def _on_connected(self, conn: Connection, connack: ConnAck) -> None:
        self.connack = connack
        self.session_present = bool(connack.session_present)
        self._connected = True
        self._closed = conn.loop.create_future()
        self._generation += 1
        self._last_error = None
        props = connack.properties
        if props.assigned_client_identifier:
            self.client_id = props.assigned_client_identifier
        self.effective_keepalive = (
            props.server_keep_alive if props.server_keep_alive is not None else self.keepalive
        )
        receive_maximum = min(props.receive_maximum or 65535, self.max_inflight)
        self._server_max_packet = props.maximum_packet_size
        self._out_aliases = (
            OutboundAliases(props.topic_alias_maximum)
            if self.topic_aliases and props.topic_alias_maximum
            else None
        )
        if not self.session_present:
            self._reset_session()
        self._outbound.receive_maximum = receive_maximum
        for packet in self._outbound.resend():
            conn.send_packet(packet)
        ping_timeout = self.ping_timeout or default_ping_timeout(self.effective_keepalive)
        conn.start_keepalive(self.effective_keepalive, ping_timeout)
        log.info(
            "mqtt.client.connected host=%s port=%s client_id=%s session_present=%s",
            self.host,
            self.port,
            self.client_id,
            self.session_present,
        )

    def _on_lost(self, conn: Connection, error: ClientError | None) -> None:
        if conn is not self._conn:
            return  # an abandoned attempt or an older connection
        was_connected = self._connected
        self._connected = False
        self._last_error = error
        if self._connack_waiter is not None and not self._connack_waiter.done():
            self._connack_waiter.set_exception(error or ConnectionLost("closed before CONNACK"))
        self._fail_pending(error)
        self._inbox.wake_all()
        if was_connected:
            self._end_errors[self._generation] = error
            self._end_errors.pop(self._generation - 8, None)
            log.info(
                "mqtt.client.disconnected host=%s port=%s error=%s", self.host, self.port, error
            )
            if self._closed is not None and not self._closed.done():
                self._closed.set_result(error)
            if self.on_disconnect is not None:
                try:
                    self.on_disconnect(error)
                except Exception:  # the application's hook must not break the transport
                    log.exception("mqtt.client.on_disconnect_failed")

    def _fail_pending(self, cause: ClientError | None) -> None:
        def lost() -> ConnectionLost:
            error = ConnectionLost(
                str(cause) if cause else "disconnected", getattr(cause, "reason_code", None)
            )
            error.__cause__ = cause
            return error

        waiters = list(self._publish_waiters.values()) + [f for _, f in self._backlog]
        waiters += self._requests.values()
        for packet_id in self._requests:
            self._outbound.ids.release(packet_id)
        self._requests.clear()
        self._publish_waiters.clear()
        self._backlog.clear()
        for future in waiters:
            if not future.done():
                future.set_exception(lost())

    def _reset_session(self) -> None:
        self._outbound = OutboundFlows(receive_maximum=self.max_inflight)
        self._inbound = InboundFlows()

    def _abandon(self, conn: Connection | None) -> None:
        if conn is not None:
            conn.abort(ConnectionLost("connect failed"))

    def _live_connection(self) -> Connection:
        conn = self._conn
        if conn is None or conn.closed or not self._connected:
            raise ConnectionLost("not connected")
        return conn


def default_ping_timeout(keepalive: float) -> float:
    """How long to wait for PINGRESP: half the keepalive, within 1..MAX_PING_TIMEOUT s."""
    return min(max(keepalive / 2, 1.0), MAX_PING_TIMEOUT)


def _replace_properties(properties: Properties, **values: Any) -> Properties:
    updates = {
        name: value
        for name, value in values.items()
        if value is not None and getattr(properties, name) is None
    }
    return dataclasses.replace(properties, **updates) if updates else properties


class MessageIterator:
    """``async for message in client.messages()``: ends when the connection does."""

    __slots__ = ("_client", "_generation")

    def __init__(self, client: Client, generation: int) -> None:
        self._client = client
        self._generation = generation

    def __aiter__(self) -> MessageIterator:
        return self

    async def __anext__(self) -> Message:
        message = await self._client._next_message(self._generation)
        if message is None:
            raise StopAsyncIteration
        return message
