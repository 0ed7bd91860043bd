"""One client's connection: an asyncio Protocol driving the codec and the shared hub.

The protocol's rules (CONNECT checks and refusals, the CONNACK and its terms, SUBSCRIBE
checks and reason codes, keep-alive deadlines) are decided by ``ClientProtocol``
(``protocol.py``, pure); this module keeps the transport, TLS, the async authenticator
call, the session and table updates, outbound writes, backpressure and pacing. Phases:
CONNECTING (waiting for CONNECT) -> AUTHENTICATING (the authenticator runs, reading is
paused) -> CONNECTED -> CLOSED. Every complete packet in a read burst is decoded and
handled in ``data_received``; replies and deliveries are gathered and written once per
event-loop tick by the hub.

A client that breaks the protocol is closed with a logged reason (v5: a DISCONNECT or
CONNACK with the reason code first); nothing it sends can raise out of this module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, cast

from hedgerow import certinfo
from hedgerow.broker.aliases import OutboundAliases
from hedgerow.broker.auth import Action, ConnectInfo, Identity, Refused
from hedgerow.broker.budget import Verdict
from hedgerow.broker.hub import Hub
from hedgerow.broker.messages import Message
from hedgerow.broker.negotiate import NEVER_EXPIRES
from hedgerow.broker.pacing import NEVER, Pacing
from hedgerow.broker.protocol import Authenticate, ClientProtocol, Phase, Refusal
from hedgerow.broker.sessions import Session
from hedgerow.broker.subscriptions import Subscription, route_for
from hedgerow.broker.tls import ServerTLS
from hedgerow.mqtt.codec import Decoder, encode
from hedgerow.mqtt.errors import MQTTError, ProtocolError
from hedgerow.mqtt.packets import (
    NO_PROPERTIES,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    Properties,
    ProtocolVersion,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscribe,
    Unsubscribe,
    Will,
)
from hedgerow.mqtt.reasons import ReasonCode
from hedgerow.mqtt.session import InboundAliases
from hedgerow.mqtt.topics import validate_topic_name

log = logging.getLogger(__name__)

_PINGRESP = b"\xd0\x00"
#: Seconds a stalled client over its byte budget has its QoS 0 messages dropped without
#: the budget and pacing being asked again: a stalled subscriber then costs its publishers
#: one clock read per message, not the whole check (bench/hostile.py).
QOS0_DROP_RECHECK_S = 0.01


_CONNECTING = Phase.CONNECTING
_AUTHENTICATING = Phase.AUTHENTICATING
_CONNECTED = Phase.CONNECTED
_CLOSED = Phase.CLOSED


class Connection(asyncio.Protocol):
    __slots__ = (
        "hub",
        "transport",
        "decoder",
        "proto",
        "session",
        "identity",
        "version",
        "v5",
        "active",
        "will",
        "out",
        "congested_since",
        "drain_mark",
        "pace_mark",
        "held_bytes",
        "acks",
        "ack_mark",
        "tls",
        "blocked",
        "paused_by",
        "aliases",
        "max_out_packet",
        "clean_disconnect",
        "will_delay",
        "pacing",
        "window_since",
        "overflowed",
        "pacing_timer",
        "out_aliases",
        "drop0_until",
    )

    def __init__(self, hub: Hub[Connection], tls: ssl.SSLContext | None = None) -> None:
        self.hub = hub
        #: TLS done by the connection itself (see ``tls.py``); None on plain TCP.
        self.tls = ServerTLS(tls) if tls is not None else None
        self.transport: asyncio.Transport | None = None
        self.decoder = Decoder(max_packet_size=hub.config.max_packet_size, server=True)
        now = hub.clock.now()
        #: The protocol's state and rules (pure); the phase is ``proto.phase``.
        self.proto = ClientProtocol(hub.config, now)
        self.session: Session | None = None
        self.identity: Identity | None = None
        #: Copied from the CONNECT (fixed from then on): read on every write.
        self.version = ProtocolVersion.V311
        self.v5 = False
        #: Set on every read; the sweep clears it and tells ``proto`` the time.
        self.active = True
        self.will: Message | None = None
        #: Packets waiting for this tick's flush.
        self.out: list[bytes] | None = None
        #: When the transport asked us to stop writing (None = it is not congested).
        self.congested_since: float | None = None
        #: Write-buffer size at the last sweep while congested (to see if it drains).
        self.drain_mark = 0
        #: Write-buffer size when it congested or pacing last saw it drain.
        self.pace_mark = 0
        #: Bytes kept back in ``out`` while the transport is congested.
        self.held_bytes = 0
        #: QoS 1/2 acknowledgements received, and their count at the last sweep.
        self.acks = 0
        self.ack_mark = 0
        #: Publishers paused because of this subscriber.
        self.blocked: set[Connection] | None = None
        #: How many congested subscribers hold this publisher paused.
        self.paused_by = 0
        self.aliases: InboundAliases | None = None
        #: The client's v5 Maximum Packet Size (None = no limit).
        self.max_out_packet: int | None = None
        self.clean_disconnect = False
        self.will_delay = 0
        #: When the client last took data (acknowledged, or drained its socket): only a
        #: client that took data within ``backpressure_timeout`` paces publishers, and
        #: one that never took any is given its byte budget, not the publishers' time.
        self.pacing = Pacing(hub.config.backpressure_timeout)
        #: Since when QoS 1/2 messages wait behind its full in-flight window with no
        #: acknowledgement (None = they do not).
        self.window_since: float | None = None
        #: Its byte budget overflowed: it is being disconnected as a slow consumer.
        self.overflowed = False
        #: Releases the publishers this client paused once it counts as stalled.
        self.pacing_timer: asyncio.TimerHandle | None = None
        #: Topic aliases we use towards a v5 client that allows them (None = none).
        self.out_aliases: OutboundAliases | None = None
        #: Until when QoS 0 is dropped unasked (a stalled client over its budget).
        self.drop0_until = 0.0

    @property
    def peer(self) -> tuple[str, int] | None:
        """The client's address (read from the transport: not kept per connection)."""
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return (str(peer[0]), int(peer[1])) if peer else None

    def _peer_certificate(self) -> certinfo.CertInfo | None:
        """What the client certificate says, or None without a usable one.

        TLS already verified the certificate; one the reader cannot parse is logged with
        the reason and treated like no certificate (the authenticator then refuses).
        """
        assert self.transport is not None
        try:
            if self.tls is not None:
                return self.tls.peer_certificate()
            ssl_object = self.transport.get_extra_info("ssl_object")
            return certinfo.peer_certificate(ssl_object)
        except (ValueError, ssl.SSLError) as exc:  # certinfo.CertInfoError is a ValueError
            log.warning(
                "broker.client.unreadable_certificate peer=%s error=%r", self.peer, str(exc)
            )
            return None

    @property
    def state(self) -> Phase:
        return self.proto.phase

    @property
    def client_id(self) -> str:
        return self.proto.client_id

    @property
    def keepalive(self) -> int:
        return self.proto.keepalive

    def __repr__(self) -> str:
        return f"<Connection {self.client_id or '?'} {self.peer} {self.state.value}>"

    # ---- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(
            asyncio.Transport, transport
        )  # uvloop's are not asyncio.Transport subclasses
        self.transport = transport
        cfg = self.hub.config
        transport.set_write_buffer_limits(cfg.write_high_water, cfg.write_low_water)
        hub = self.hub
        if hub.refusing:
            transport.abort()
            return
        hub.connections.add(self)
        hub.counters.connections_total += 1

    def data_received(self, data: bytes) -> None:
        self.active = True
        self.hub.counters.bytes_in += len(data)
        tls = self.tls
        if tls is not None:
            data = self._decrypt(tls, data)
            if not data:
                return
        try:
            self.decoder.receive_data(data)
        except MQTTError as exc:
            self._violation(exc)
            return
        phase = self.proto.phase
        if phase is _CONNECTED or phase is _CONNECTING:
            self._process()
            self.hub.flush()

    def _decrypt(self, tls: ServerTLS, data: bytes) -> bytes:
        assert self.transport is not None
        try:
            plain, reply, closed = tls.receive(data)
        except ssl.SSLError as exc:
            log.info("broker.client.tls_failed peer=%s error=%r", self.peer, str(exc))
            self.hub.counters.refused += not tls.established
            self.out = None
            alert = tls.pending()
            if alert:
                self.transport.write(alert)
            self.transport.close()
            if self.proto.phase is not _CONNECTED:
                self.proto.close()
            return b""
        if reply:
            self.transport.write(reply)
        if closed:
            self.transport.close()
        return plain

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        hub = self.hub
        hub.connections.discard(self)
        if hub.refusing and not hub.connections:
            hub.drained.set()
        if self.state is _CONNECTED:
            if not self.clean_disconnect:
                log.info(
                    "broker.client.connection_lost client=%s reason=%r",
                    self.client_id,
                    str(exc) if exc else "closed by peer",
                )
            self._detach(publish_will=not self.clean_disconnect)
        self.proto.close()
        self.out = None
        self._set_held(0)
        self._release_publishers()

    def pause_writing(self) -> None:
        self.congested_since = now = self.hub.loop.time()
        self.pacing.busy(now)
        if self.transport is not None:
            self.drain_mark = self.pace_mark = self.transport.get_write_buffer_size()

    def resume_writing(self) -> None:
        self.congested_since = None
        self.drop0_until = 0.0
        if self.session is not None:
            self.session.drop0_until = 0.0
        self.pacing.took(self.hub.loop.time())
        self.flush()
        self._release_publishers()
        session = self.session
        if session is not None and session.queue and session.connection is self:
            session.drain(self.hub.loop.time())

    # ---- decoding ----------------------------------------------------------------------

    def _process(self) -> None:
        decoder = self.decoder
        handlers = _HANDLERS
        proto = self.proto
        try:
            while True:
                packet = decoder.next_packet()
                if packet is None:
                    return
                state = proto.phase
                if state is _CONNECTED:
                    handler = handlers.get(type(packet))
                    if handler is None:
                        raise ProtocolError(f"unexpected {type(packet).__name__} from a client")
                    handler(self, packet)
                    if proto.phase is not _CONNECTED or self.paused_by:
                        return  # paused: the rest waits in the decoder until unblock()
                elif state is _CONNECTING:
                    if not isinstance(packet, Connect):
                        raise ProtocolError(f"{type(packet).__name__} before CONNECT")
                    self._on_connect(packet)
                    return
                else:
                    return
        except MQTTError as exc:
            self._violation(exc)

    # ---- CONNECT -------------------------------------------------------------------------

    def _on_connect(self, c: Connect) -> None:
        assert self.transport is not None
        self.version = c.version
        self.v5 = c.version == ProtocolVersion.V5
        step = self.proto.receive_connect(c, self.hub.clock.now())
        if isinstance(step, Refusal):
            self._refused(step)
            return
        info = ConnectInfo(
            client_id=step.client_id,
            username=c.username,
            password=c.password,
            version=int(c.version),
            peer=self.peer,
            peer_cert=self._peer_certificate(),
            clean_start=c.clean_start,
        )
        self.transport.pause_reading()
        hub = self.hub
        task = hub.loop.create_task(
            self._authenticate(c, info, step), name=f"mqtt-connect-{step.client_id}"
        )
        hub.tasks.add(task)
        task.add_done_callback(hub.tasks.discard)

    async def _authenticate(self, c: Connect, info: ConnectInfo, step: Authenticate) -> None:
        proto = self.proto
        try:
            identity = await self.hub.authenticator.authenticate(info)
        except Refused as exc:
            if proto.phase is _AUTHENTICATING:
                self._refused(proto.refuse(exc.reason_code, exc.message, silent=exc.silent))
            return
        except Exception:
            log.exception("broker.client.authenticator_failed client=%s", info.client_id)
            if proto.phase is _AUTHENTICATING:
                self._refused(proto.refuse(ReasonCode.SERVER_UNAVAILABLE, "authenticator failed"))
            return
        if proto.phase is not _AUTHENTICATING or self.hub.refusing:
            return
        held = self.hub.sessions.get(step.client_id)
        holder = held.owner.name if held is not None and held.owner is not None else None
        refusal = proto.authenticated(identity.name, holder)
        if refusal is not None:
            self._refused(refusal)
            return
        self.identity = identity
        try:
            self._accept(c, step.assigned)
        except MQTTError as exc:
            self._violation(exc)
            return
        assert self.transport is not None
        self.transport.resume_reading()
        self._process()
        if not self.decoder.buffered:
            self.decoder.receive_data(b"")  # drop the CONNECT's bytes: idle clients stay small

    def _accept(self, c: Connect, assigned: str | None) -> None:
        hub = self.hub
        cfg = hub.config
        client_id = self.proto.client_id
        now = hub.clock.now()
        v5 = self.v5
        if c.will is not None:
            self.will = self._will_message(c.will)
            if v5:
                self.will_delay = c.will.properties.will_delay_interval or 0
        session = hub.sessions.get(client_id)
        if session is not None and session.connection is not None:
            session.connection.kick(
                ReasonCode.SESSION_TAKEN_OVER, "session taken over by a new connection"
            )
            session = hub.sessions.get(client_id)  # a clean session ended with its connection
        hub.wills.cancel(client_id)
        present = False
        if session is not None and c.clean_start:
            hub.end_session(session)
            session = None
        if session is None:
            session = hub.sessions.create(client_id)
        else:
            present = True
        accepted = self.proto.accept(present, assigned, now)
        terms = accepted.terms
        self.session = session
        session.connection = self
        session.drop0_until = 0.0
        session.owner = self.identity
        session.expires_at = None
        session.expiry = terms.session_expiry
        session.open_window(terms.window)
        if v5:
            self.max_out_packet = terms.max_out_packet
            if cfg.topic_alias_maximum:
                self.aliases = InboundAliases(cfg.topic_alias_maximum)
            if c.properties.topic_alias_maximum:
                self.out_aliases = OutboundAliases(c.properties.topic_alias_maximum)
        self._send(encode(accepted.connack, self.version))
        log.debug(
            "broker.client.connected client=%s peer=%s version=%d",
            client_id,
            self.peer,
            self.version,
        )
        if present:
            session.redeliver(now)

    def _will_message(self, will: Will) -> Message:
        validate_topic_name(will.topic)
        props: Properties | None = will.properties
        if props is NO_PROPERTIES or not self.v5:
            props = None
        elif props is not None and props.will_delay_interval is not None:
            props = dataclasses.replace(props, will_delay_interval=None)
        msg = Message(will.topic, will.payload, will.qos, will.retain, props)
        return msg

    def _refused(self, refusal: Refusal) -> None:
        self.hub.counters.refused += 1
        log.info(
            "broker.client.refused client=%s peer=%s reason=%r code=0x%02x",
            self.proto.client_id,
            self.peer,
            refusal.message,
            refusal.reason_code,
        )
        if refusal.connack is not None:
            # the codec maps v5 reason codes to 3.1.1 return codes on the wire; a v5 client
            # is also told why (reason string)
            self._send(encode(refusal.connack, self.version))
        self._close()

    # ---- packets of a connected client ---------------------------------------------------

    def _on_publish(self, p: Publish) -> None:
        hub = self.hub
        hub.counters.messages_in += 1
        topic = p.topic
        aliases = self.aliases
        if aliases is not None and (not topic or p.properties.topic_alias is not None):
            topic = aliases.resolve(p)
        identity = self.identity
        assert identity is not None
        if hub.check_publish and not hub.authorizer.authorize(identity, Action.PUBLISH, topic):
            self._denied_publish(p, topic)
            return
        qos = p.qos
        pid: int = p.packet_id  # type: ignore[assignment]  # set for QoS 1/2 by the codec
        inbound: set[int] | None = None
        if qos == 2:
            session = self.session
            assert session is not None
            inbound = session.inbound_qos2
            if inbound is None:
                inbound = session.inbound_qos2 = set()
            if pid in inbound:
                self._send(b"\x50\x02" + pid.to_bytes(2, "big"))
                return  # a resent message already taken: acknowledge only, never twice
            if len(inbound) >= hub.config.receive_maximum:
                raise ProtocolError(
                    "too many QoS 2 messages in flight", ReasonCode.RECEIVE_MAXIMUM_EXCEEDED
                )
            inbound.add(pid)
        waits = None
        if hub.interceptors:
            waits = hub.intercept(
                identity, p if topic == p.topic else dataclasses.replace(p, topic=topic)
            )
        if qos:
            ack = (b"\x40\x02" if qos == 1 else b"\x50\x02") + pid.to_bytes(2, "big")
            if waits:
                forget = (inbound, pid) if inbound is not None else None
                self._ack_when_done(ack, waits, topic, forget=forget)
            else:
                self._send(ack)
        hub.route(Message(topic, p.payload, qos, p.retain, p.properties, self.session), self)

    def _open(self) -> bool:
        transport = self.transport
        return self.state is _CONNECTED and transport is not None and not transport.is_closing()

    def _ack_when_done(
        self,
        ack: bytes,
        waits: list[Awaitable[object]],
        topic: str,
        forget: tuple[set[int], int] | None = None,
    ) -> None:
        """Acknowledge once every interceptor's awaitable completed; on failure, disconnect
        without acknowledging, so the sender keeps the message and sends it again (a QoS 2
        packet id is ``forget``-ten, so the resent message is taken again, not just
        acknowledged as a duplicate)."""
        done = asyncio.ensure_future(asyncio.gather(*waits) if len(waits) > 1 else waits[0])

        def finish(future: asyncio.Future[object]) -> None:
            if future.cancelled() or future.exception() is not None:
                error = "cancelled" if future.cancelled() else future.exception()
                log.warning(
                    "broker.client.publish_not_acknowledged client=%s topic=%s error=%r",
                    self.client_id,
                    topic,
                    str(error),
                )
                if forget is not None:
                    forget[0].discard(forget[1])
                if self._open():
                    self.kick(ReasonCode.UNSPECIFIED_ERROR, f"could not take the message: {error}")
                return
            if self._open():
                self._send(ack)

        done.add_done_callback(finish)

    def _denied_publish(self, p: Publish, topic: str) -> None:
        hub = self.hub
        hub.counters.denied_publish += 1
        log.info("broker.client.publish_denied client=%s topic=%s", self.client_id, topic)
        if hub.config.deny_policy == "disconnect":
            self.kick(ReasonCode.NOT_AUTHORIZED, f"PUBLISH to {topic} not authorized")
            return
        pid = p.packet_id
        if pid is None:
            return
        code = ReasonCode.NOT_AUTHORIZED if self.v5 else 0
        if p.qos == 1:
            self._send(encode(PubAck(pid, code), self.version))
        else:
            self._send(encode(PubRec(pid, code), self.version))

    def _on_puback(self, p: PubAck) -> None:
        session = self.session
        assert session is not None
        self.acks += 1
        self.window_since = None
        session.on_puback(p.packet_id)
        if session.queue:
            session.drain(self.hub.loop.time())

    def _on_pubrec(self, p: PubRec) -> None:
        session = self.session
        assert session is not None
        pid = p.packet_id
        self.acks += 1
        self.window_since = None
        if p.reason_code >= 0x80:
            session.on_pubcomp(pid)  # the receiver refused it: the flow ends here
            if session.queue:
                session.drain(self.hub.loop.time())
            return
        if session.on_pubrec(pid):
            self.write_pubrel(pid)
        elif self.v5:
            self._send(encode(PubRel(pid, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND), self.version))
        else:
            self.write_pubrel(pid)

    def _on_pubrel(self, p: PubRel) -> None:
        session = self.session
        assert session is not None
        pid = p.packet_id
        inbound = session.inbound_qos2
        if inbound is not None and pid in inbound:
            inbound.discard(pid)
            self._send(b"\x70\x02" + pid.to_bytes(2, "big"))
        elif self.v5:
            self._send(encode(PubComp(pid, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND), self.version))
        else:
            self._send(b"\x70\x02" + pid.to_bytes(2, "big"))

    def _on_pubcomp(self, p: PubComp) -> None:
        session = self.session
        assert session is not None
        self.acks += 1
        self.window_since = None
        session.on_pubcomp(p.packet_id)
        if session.queue:
            session.drain(self.hub.loop.time())

    def _on_subscribe(self, p: Subscribe) -> None:
        hub = self.hub
        session = self.session
        identity = self.identity
        assert session is not None and identity is not None
        decision = self.proto.check_subscribe(
            p,
            lambda f: hub.authorizer.authorize(identity, Action.SUBSCRIBE, f),
            session.subscriptions or (),
        )
        for refused in decision.refused:
            hub.counters.denied_subscribe += refused.denied
            log.info(
                "broker.client.subscribe_refused client=%s filter=%r reason=%r",
                self.client_id,
                refused.topic_filter,
                refused.why,
            )
        retained: list[Subscription[Session]] = []
        subscriptions = session.subscriptions
        if subscriptions is None and decision.granted:
            subscriptions = session.subscriptions = {}  # created on first use: idle clients
        for grant in decision.granted:
            assert subscriptions is not None
            s = grant.request
            sub = Subscription(
                session,
                s.topic_filter,
                s.qos,
                no_local=s.no_local,
                retain_as_published=s.retain_as_published,
                retain_handling=s.retain_handling,
                identifier=decision.identifier,
            )
            old = subscriptions.get(s.topic_filter)
            if old is not None:
                hub.table.remove(old)
            subscriptions[s.topic_filter] = sub
            hub.table.add(sub)
            if sub.group is None and (
                sub.retain_handling == 0 or (sub.retain_handling == 1 and old is None)
            ):
                retained.append(sub)
        self._send(encode(decision.suback, self.version))
        if retained and len(hub.retained):
            now = hub.clock.now()
            for sub in retained:
                route = route_for(sub)
                for message in hub.retained.matching(sub.topic_filter, now):
                    if hub.may_read is not None and not hub.readable(session, message.topic):
                        continue
                    if not hub.retained_deliverable(message, session):
                        continue
                    qos = min(sub.qos, message.qos)
                    session.deliver(message, qos, True, route.identifiers)

    def _on_unsubscribe(self, p: Unsubscribe) -> None:
        hub = self.hub
        session = self.session
        assert session is not None
        existed: list[bool] = []
        for topic_filter in p.topic_filters:
            sub = session.subscriptions.pop(topic_filter, None) if session.subscriptions else None
            existed.append(sub is not None)
            if sub is not None:
                hub.table.remove(sub)
        self._send(encode(self.proto.unsuback(p, existed), self.version))

    def _on_pingreq(self, p: PingReq) -> None:
        self._send(_PINGRESP)

    def _on_disconnect(self, p: Disconnect) -> None:
        session = self.session
        assert session is not None
        expiry = p.properties.session_expiry_interval
        if expiry is not None and self.v5:
            if session.expiry == 0 and expiry != 0:
                raise ProtocolError("DISCONNECT sets a session expiry after CONNECT set none")
            session.expiry = None if expiry == NEVER_EXPIRES else expiry
        if p.reason_code == ReasonCode.DISCONNECT_WITH_WILL_MESSAGE:
            log.info("broker.client.disconnected_with_will client=%s", self.client_id)
        else:
            log.debug(
                "broker.client.disconnected client=%s code=0x%02x", self.client_id, p.reason_code
            )
            self.will = None
        self.clean_disconnect = True
        self._detach(publish_will=True)
        self._close()

    # ---- outbound ------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        out = self.out
        if out is None:
            self.out = [data]
            self.hub.want_flush(self)
        else:
            out.append(data)
        if self.congested_since is not None:
            # kept back until the transport drains: counted against the budget right away
            self._set_held(self.held_bytes + len(data))

    def flush(self) -> None:
        out = self.out
        if out is None:
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            self.out = None
            return
        if self.congested_since is not None and self.proto.phase is _CONNECTED:
            # Keep it until the transport drains (resume_writing): writing more into a
            # congested transport only moves the pile, and TLS transports handle huge
            # piles badly. The pile is bounded: QoS 0 is dropped beyond the limit.
            held = sum(map(len, out))
            self._set_held(held)
            if held > self.hub.config.max_outbound_bytes:
                self.block_on(self)  # it reads none of our answers: stop reading its requests
            return
        self.out = None
        if self.held_bytes:
            self._write_held(out, transport)
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        if self.tls is not None:
            data = self.tls.encrypt(data)
        transport.write(data)
        self.hub.counters.bytes_out += len(data)

    def _write_held(self, out: list[bytes], transport: asyncio.Transport) -> None:
        """Write what was kept back while the socket was congested, a high-water mark at a
        time: one join (and one TLS copy) of megabytes would double them in memory. What
        is left when the socket congests again waits for the next ``resume_writing``."""
        limit = self.hub.config.write_high_water
        tls = self.tls
        start, end = 0, len(out)
        while start < end:
            stop, size = start, 0
            while stop < end and size < limit:
                size += len(out[stop])
                stop += 1
            data = out[start] if stop == start + 1 else b"".join(out[start:stop])
            if tls is not None:
                data = tls.encrypt(data)
            transport.write(data)
            self.hub.counters.bytes_out += len(data)
            start = stop
            if self.congested_since is not None and start < end:
                rest = self.out = out[start:]  # _send appends here meanwhile
                self._set_held(sum(map(len, rest)))
                return
        self._set_held(0)

    def _set_held(self, held: int) -> None:
        """Account the bytes kept back in ``out`` against the broker's budget."""
        delta = held - self.held_bytes
        if delta:
            self.held_bytes = held
            budget = self.hub.budget
            if delta > 0:
                budget.add(delta)
            else:
                budget.remove(-delta)

    def outbound_bytes(self) -> int:
        """Bytes waiting for this client's socket (kept back, and in the transport)."""
        transport = self.transport
        waiting = transport.get_write_buffer_size() if transport is not None else 0
        return waiting + self.held_bytes

    def _pace(self) -> None:
        """Pause the publisher being routed while this client is congested but still takes
        data (``pacing.py``); a stalled or not yet proven client pauses no one."""
        hub = self.hub
        publisher = hub.publisher
        if publisher is None or publisher is self or publisher.paused_by_me(self):
            return
        now = hub.loop.time()
        pacing = self.pacing
        if self.acks != self.ack_mark:  # acknowledgements since the last look: progress
            self.ack_mark = self.acks
            pacing.took(now)
        elif self.congested_since is not None and self.transport is not None:
            # nothing is added to a congested transport: if it shrank by the low-water mark
            # (more than the kernel of a peer that never reads still takes), it took data
            size = self.transport.get_write_buffer_size()
            if size + hub.config.write_low_water <= self.pace_mark:
                pacing.took(now)
                self.pace_mark = size
        if not pacing.paces(now):
            return
        if self.pacing_timer is None:
            self.pacing_timer = hub.loop.call_at(pacing.stalled_at(), self._pacing_check)
        publisher.block_on(self)

    def paused_by_me(self, subscriber: Connection) -> bool:
        blocked = subscriber.blocked
        return blocked is not None and self in blocked

    def _pacing_check(self) -> None:
        self.pacing_timer = None
        if not self.blocked:
            return
        hub = self.hub
        now = hub.loop.time()
        pacing = self.pacing
        if self.acks != self.ack_mark:
            self.ack_mark = self.acks
            pacing.took(now)
        if pacing.paces(now):
            self.pacing_timer = hub.loop.call_at(pacing.stalled_at(), self._pacing_check)
        else:
            log.debug("broker.client.stalled client=%s", self.client_id)
            self._release_publishers()

    def write_publish0(self, message: Message, retain: bool, ids: tuple[int, ...]) -> None:
        counters = self.hub.counters
        if self.congested_since is not None:
            now = self.hub.loop.time()
            if now < self.drop0_until:
                counters.dropped_qos0 += 1
                return
            self._pace()
            session = self.session
            held = self.outbound_bytes() + (session.held if session is not None else 0)
            size = message.cost
            if self.hub.budget.check(held, size) is not Verdict.FITS:
                counters.dropped_qos0 += 1
                if not self.pacing.paces(now):  # stalled: it will not make room soon
                    self.drop0_until = now + QOS0_DROP_RECHECK_S
                    if session is not None:
                        session.drop0_until = self.drop0_until
                return
        aliases = self.out_aliases
        if aliases is not None:
            self._write_aliased(message, 0, retain, False, None, ids, aliases)
            return
        data = message.encode0(self.v5, retain, ids)
        if self.max_out_packet is not None and len(data) > self.max_out_packet:
            counters.dropped_qos0 += 1
            return
        self._send(data)
        counters.messages_out += 1

    def _write_aliased(
        self,
        message: Message,
        qos: int,
        retain: bool,
        dup: bool,
        pid: int | None,
        ids: tuple[int, ...],
        aliases: OutboundAliases,
    ) -> None:
        """A PUBLISH to a client that allows topic aliases: the topic is sent once with
        its alias, then only the alias (never more aliases than the client allows)."""
        alias, known = aliases.alias_for(message.topic)
        data = message.encode_aliased(qos, retain, dup, pid, ids, alias, known)
        limit = self.max_out_packet
        if limit is not None and len(data) > limit:
            if alias is not None and not known:
                aliases.forget(message.topic)  # the alias property made it too large
                data = message.encode_aliased(qos, retain, dup, pid, ids, None, False)
            if len(data) > limit:  # QoS 1/2 was checked by fits(): only QoS 0 gets here
                self.hub.counters.dropped_qos0 += 1
                return
        self._send(data)
        self.hub.counters.messages_out += 1

    def fits(self, message: Message, qos: int, retain: bool, ids: tuple[int, ...]) -> bool:
        """Whether the PUBLISH fits the client's v5 Maximum Packet Size."""
        if self.max_out_packet is None:
            return True
        head, tail = message.encode_parts(self.v5, qos, retain, False, ids)
        return len(head) + 2 + len(tail) <= self.max_out_packet

    def write_publish(
        self, message: Message, qos: int, retain: bool, dup: bool, pid: int, ids: tuple[int, ...]
    ) -> None:
        if self.congested_since is not None:
            self._pace()  # QoS 1/2 was admitted by the session's budget: never dropped here
        aliases = self.out_aliases
        if aliases is not None:
            self._write_aliased(message, qos, retain, dup, pid, ids, aliases)
            return
        head, tail = message.encode_parts(self.v5, qos, retain, dup, ids)
        self._send(head + pid.to_bytes(2, "big") + tail)
        self.hub.counters.messages_out += 1

    def write_pubrel(self, pid: int) -> None:
        self._send(b"\x62\x02" + pid.to_bytes(2, "big"))

    # ---- backpressure --------------------------------------------------------------------

    def block_on(self, subscriber: Connection) -> None:
        blocked = subscriber.blocked
        if blocked is None:
            blocked = subscriber.blocked = set()
        elif self in blocked:
            return
        blocked.add(self)
        self.paused_by += 1
        if self.paused_by == 1 and self.transport is not None:
            self.transport.pause_reading()
            self.hub.counters.publishers_paused += 1

    def unblock(self) -> None:
        self.paused_by -= 1
        transport = self.transport
        if self.paused_by == 0 and transport is not None and not transport.is_closing():
            if self.state is _CONNECTED:
                transport.resume_reading()
                if self.decoder.buffered:
                    # packets read before the pause: handled from a fresh loop turn, not
                    # inside the handler of the subscriber that released us
                    self.hub.loop.call_soon(self._resume_processing)

    def _resume_processing(self) -> None:
        if self.state is _CONNECTED and not self.paused_by:
            self._process()
            self.hub.flush()

    def busy(self) -> None:
        """Its first QoS 1/2 message in flight: acknowledgements are due from now."""
        self.pacing.busy(self.hub.loop.time())

    def window_full(self) -> None:
        """A QoS 1/2 message had to queue: pause the publisher until acknowledgements come
        (unless this client is stalled), and note since when the window is full."""
        if self.window_since is None:
            self.window_since = self.hub.loop.time()
        if self.acks == 0 and self.pacing.took_at == NEVER:
            return  # it never took data: it paces no one (a stalled one is asked per message)
        self._pace()

    def overflow(self, reason_code: int, message: str) -> None:
        """Its byte budget is full: disconnect it as a slow consumer (right after the
        current fan-out, which must not see sessions change under it)."""
        if self.overflowed or self.state is not _CONNECTED:
            return
        self.overflowed = True
        self.hub.counters.slow_consumers += 1
        self._release_publishers()
        self.hub.loop.call_soon(self.kick, reason_code, message)

    def release_publishers(self) -> None:
        self._release_publishers()

    def _release_publishers(self) -> None:
        timer = self.pacing_timer
        if timer is not None:
            self.pacing_timer = None
            timer.cancel()
        blocked = self.blocked
        if blocked:
            self.blocked = None
            for publisher in blocked:
                publisher.unblock()

    def sweep(self, now: float) -> None:
        """Periodic checks: CONNECT timeout, keep-alive, slow consumers."""
        hub = self.hub
        cfg = hub.config
        proto = self.proto
        state = proto.phase
        if state is _CONNECTING:
            if proto.overdue(now):  # bytes that are no CONNECT do not move the deadline
                log.info(
                    "broker.client.connect_timeout peer=%s timeout_s=%s",
                    self.peer,
                    cfg.connect_timeout,
                )
                self._close()
        elif state is _CONNECTED:
            if self.active:
                self.active = False
                proto.heard(now)
            elif proto.overdue(now):
                self.kick(
                    ReasonCode.KEEP_ALIVE_TIMEOUT,
                    f"no packet within 1.5 x keep-alive {proto.keepalive}s",
                )
                return
            now = hub.loop.time()  # backpressure and pacing keep the event loop's time
            if self.acks != self.ack_mark:
                self.ack_mark = self.acks
                self.pacing.took(now)
            since = self.congested_since
            if since is not None and self.transport is not None:
                size = self.transport.get_write_buffer_size()
                if size + cfg.write_low_water <= self.drain_mark:
                    # It reads, just slower than they publish: keep pacing the publishers.
                    self.congested_since = since = now
                    self.pacing.took(now)
                self.drain_mark = size
                if now - since >= cfg.slow_client_timeout:
                    self.hub.counters.slow_consumers += 1
                    self.kick(
                        ReasonCode.QUOTA_EXCEEDED,
                        f"not reading for {now - since:.0f}s (slow consumer)",
                    )
                    return
            waiting = self.window_since
            if waiting is not None and now - waiting >= cfg.slow_client_timeout:
                self.hub.counters.slow_consumers += 1
                self.kick(
                    ReasonCode.QUOTA_EXCEEDED,
                    f"no acknowledgement for {now - waiting:.0f}s with its in-flight window"
                    " full (slow consumer)",
                )

    # ---- closing -------------------------------------------------------------------------

    def _violation(self, exc: MQTTError) -> None:
        hub = self.hub
        hub.counters.protocol_errors += 1
        code = exc.reason_code
        log.info(
            "broker.client.protocol_error client=%s peer=%s error=%r code=0x%02x",
            self.client_id,
            self.peer,
            str(exc),
            code,
        )
        if self.state is _CONNECTED:
            if self.v5:
                self._send(encode(Disconnect(code), ProtocolVersion.V5))
            self._detach(publish_will=True)
        elif self.state is _CONNECTING:
            version = self.decoder.version
            if code == ReasonCode.UNSUPPORTED_PROTOCOL_VERSION:
                self._send(b"\x20\x02\x00\x01")
            elif version == ProtocolVersion.V5:
                self._send(encode(ConnAck(False, code), ProtocolVersion.V5))
        self._close()

    def kick(self, reason_code: int, message: str) -> None:
        """Disconnect this client from the broker's side (v5: with a DISCONNECT)."""
        if self.state is _CLOSED:
            return
        log.info(
            "broker.client.disconnecting client=%s peer=%s reason=%r code=0x%02x",
            self.client_id,
            self.peer,
            message,
            reason_code,
        )
        if self.state is _CONNECTED:
            if self.v5:
                self._send(encode(Disconnect(reason_code), ProtocolVersion.V5))
            self._detach(publish_will=True)
        self._close()

    def _detach(self, *, publish_will: bool) -> None:
        """Leave the session (kept or forgotten by its expiry) and send the will if due."""
        if self.state is not _CONNECTED:
            return
        self.proto.close()
        hub = self.hub
        if self.identity is not None:
            hub.disconnected(self.identity)
        session = self.session
        will = self.will
        self.will = None
        if session is None or session.connection is not self:
            return
        session.connection = None
        session.drop0_until = 0.0
        now = hub.clock.now()
        expiry = session.expiry
        if will is not None and publish_will:
            delay = self.will_delay
            if delay and expiry != 0:
                due = now + (delay if expiry is None else min(delay, expiry))
                hub.wills.schedule(session.client_id, due, will)
            else:
                self._publish_will(will)
        if expiry == 0:
            hub.end_session(session)
        else:
            session.expires_at = None if expiry is None else now + expiry

    def _publish_will(self, will: Message) -> None:
        hub = self.hub
        identity = self.identity
        if identity is not None and hub.check_publish:
            if not hub.authorizer.authorize(identity, Action.PUBLISH, will.topic):
                log.info("broker.client.will_denied client=%s topic=%s", self.client_id, will.topic)
                return
        log.debug("broker.client.will client=%s topic=%s", self.client_id, will.topic)
        hub.route(will, None)

    def _close(self) -> None:
        self.flush()
        if self.state is not _CONNECTED:
            self.proto.close()
        transport = self.transport
        if transport is not None:
            if self.congested_since is not None:
                transport.abort()  # it does not read: waiting to flush would never end
            else:
                transport.close()


_HANDLERS: dict[type, Callable[[Connection, Any], None]] = {
    Publish: Connection._on_publish,
    PubAck: Connection._on_puback,
    PubRec: Connection._on_pubrec,
    PubRel: Connection._on_pubrel,
    PubComp: Connection._on_pubcomp,
    Subscribe: Connection._on_subscribe,
    Unsubscribe: Connection._on_unsubscribe,
    PingReq: Connection._on_pingreq,
    Disconnect: Connection._on_disconnect,
}
