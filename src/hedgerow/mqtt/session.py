"""Pure session state for QoS 1/2 flows, packet identifiers and topic aliases.

Used by both the broker and the client: each side keeps one ``OutboundFlows`` (messages it
sends) and one ``InboundFlows`` (messages it receives) per session.
"""

from __future__ import annotations

from dataclasses import replace

from .errors import LocalProtocolError, ProtocolError
from .packets import PubAck, PubComp, Publish, PubRec, PubRel
from .reasons import ReasonCode

MAX_PACKET_ID = 0xFFFF


class PacketIds:
    """Allocates packet identifiers 1..65535, cycling, never handing out one in use."""

    __slots__ = ("_in_use", "_next")

    def __init__(self) -> None:
        self._in_use: set[int] = set()
        self._next = 1

    def allocate(self) -> int:
        if len(self._in_use) >= MAX_PACKET_ID:
            raise LocalProtocolError(
                "all 65535 packet identifiers are in use", ReasonCode.QUOTA_EXCEEDED
            )
        candidate = self._next
        while candidate in self._in_use:
            candidate = candidate % MAX_PACKET_ID + 1
        self._in_use.add(candidate)
        self._next = candidate % MAX_PACKET_ID + 1
        return candidate

    def claim(self, packet_id: int) -> None:
        """Mark an identifier as used (when restoring a stored session)."""
        if not 1 <= packet_id <= MAX_PACKET_ID:
            raise LocalProtocolError(f"packet identifier {packet_id} is outside 1..65535")
        if packet_id in self._in_use:
            raise LocalProtocolError(
                f"packet identifier {packet_id} is already in use",
                ReasonCode.PACKET_IDENTIFIER_IN_USE,
            )
        self._in_use.add(packet_id)

    def release(self, packet_id: int) -> None:
        self._in_use.discard(packet_id)

    def __contains__(self, packet_id: object) -> bool:
        return packet_id in self._in_use

    def __len__(self) -> int:
        return len(self._in_use)


class OutboundFlows:
    """QoS 1/2 messages this side sent and the peer has not finished acknowledging.

    ``receive_maximum`` is the peer's limit on unacknowledged QoS 1/2 messages; it may be
    changed after CONNACK. QoS 0 messages pass through ``start`` untouched.
    """

    __slots__ = ("_flows", "ids", "receive_maximum")

    def __init__(self, receive_maximum: int = 65535) -> None:
        self.receive_maximum = receive_maximum
        self.ids = PacketIds()
        # packet id -> the PUBLISH awaiting PUBACK/PUBREC, or the PUBREL awaiting PUBCOMP;
        # insertion order is send order (a PUBREL replaces its PUBLISH in place).
        self._flows: dict[int, Publish | PubRel] = {}

    @property
    def inflight(self) -> int:
        return len(self._flows)

    def can_send(self) -> bool:
        """True when one more QoS 1/2 message fits in the peer's receive maximum."""
        return len(self._flows) < self.receive_maximum

    def start(self, publish: Publish) -> Publish:
        """Assign a packet id to a QoS 1/2 message and record it in flight."""
        if publish.qos == 0:
            return publish
        if not self.can_send():
            raise LocalProtocolError(
                f"cannot send: {len(self._flows)} messages in flight reach the peer's "
                f"receive maximum of {self.receive_maximum}",
                ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
            )
        packet_id = self.ids.allocate()
        started = replace(publish, packet_id=packet_id, dup=False)
        self._flows[packet_id] = started
        return started

    def restore(self, packet: Publish | PubRel) -> None:
        """Put back a flow from a stored session (its packet id already assigned)."""
        if packet.packet_id is None:
            raise LocalProtocolError("a stored flow has no packet identifier")
        self.ids.claim(packet.packet_id)
        self._flows[packet.packet_id] = packet

    def _expect(self, packet_id: int, what: str) -> Publish | PubRel:
        flow = self._flows.get(packet_id)
        if flow is None:
            raise ProtocolError(
                f"{what} for packet identifier {packet_id}, which is not in flight",
                ReasonCode.PACKET_IDENTIFIER_NOT_FOUND,
            )
        return flow

    def _finish(self, packet_id: int) -> None:
        del self._flows[packet_id]
        self.ids.release(packet_id)

    def on_puback(self, packet_id: int) -> Publish:
        """The peer acknowledged a QoS 1 message; returns it."""
        flow = self._expect(packet_id, "PUBACK")
        if not isinstance(flow, Publish) or flow.qos != 1:
            raise ProtocolError(f"PUBACK for packet identifier {packet_id}, which is not QoS 1")
        self._finish(packet_id)
        return flow

    def on_pubrec(self, packet_id: int, reason_code: int = 0) -> PubRel | None:
        """The peer received a QoS 2 message: returns the PUBREL to send, or None when the
        peer refused it (reason code 0x80 or above) and the flow is over."""
        flow = self._expect(packet_id, "PUBREC")
        if isinstance(flow, Publish) and flow.qos != 2:
            raise ProtocolError(f"PUBREC for packet identifier {packet_id}, which is not QoS 2")
        if reason_code >= 0x80:
            self._finish(packet_id)
            return None
        release = PubRel(packet_id)
        self._flows[packet_id] = release
        return release

    def on_pubcomp(self, packet_id: int) -> None:
        """The peer completed a QoS 2 flow."""
        flow = self._expect(packet_id, "PUBCOMP")
        if not isinstance(flow, PubRel):
            raise ProtocolError(f"PUBCOMP for packet identifier {packet_id} before PUBREC")
        self._finish(packet_id)

    def resend(self) -> list[Publish | PubRel]:
        """Everything to send again on session resumption, in original order (PUBLISH
        with DUP set)."""
        return [
            replace(flow, dup=True) if isinstance(flow, Publish) else flow
            for flow in self._flows.values()
        ]

    def pending(self) -> list[Publish | PubRel]:
        """The flows in flight as they were sent (for storing a session)."""
        return list(self._flows.values())


class InboundFlows:
    """QoS 2 messages received and awaiting PUBREL, for exactly-once delivery.

    ``receive_maximum`` is this side's advertised limit on unacknowledged QoS 2 messages.
    """

    __slots__ = ("_awaiting_release", "receive_maximum")

    def __init__(self, receive_maximum: int = 65535) -> None:
        self.receive_maximum = receive_maximum
        self._awaiting_release: set[int] = set()

    @property
    def inflight(self) -> int:
        return len(self._awaiting_release)

    def on_publish(self, publish: Publish) -> tuple[bool, PubAck | PubRec | None]:
        """Returns (deliver to the application?, the acknowledgement to send)."""
        qos = publish.qos
        if qos == 0:
            return True, None
        packet_id = publish.packet_id
        if packet_id is None:
            raise ProtocolError(f"QoS {qos} PUBLISH without a packet identifier")
        if qos == 1:
            return True, PubAck(packet_id)
        if packet_id in self._awaiting_release:
            return False, PubRec(packet_id)
        if len(self._awaiting_release) >= self.receive_maximum:
            raise ProtocolError(
                f"QoS 2 PUBLISH {packet_id} exceeds the receive maximum of {self.receive_maximum}",
                ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
            )
        self._awaiting_release.add(packet_id)
        return True, PubRec(packet_id)

    def on_pubrel(self, packet_id: int) -> PubComp:
        """Release a QoS 2 message; an unknown id gets PUBCOMP 0x92 (as MQTT 5 asks)."""
        if packet_id in self._awaiting_release:
            self._awaiting_release.remove(packet_id)
            return PubComp(packet_id)
        return PubComp(packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND)

    def awaiting_release(self) -> frozenset[int]:
        return frozenset(self._awaiting_release)

    def restore(self, packet_ids: frozenset[int] | set[int]) -> None:
        self._awaiting_release.update(packet_ids)


class InboundAliases:
    """Topic aliases the peer set on PUBLISH packets it sends us (at most ``maximum``)."""

    __slots__ = ("_topics", "maximum")

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._topics: dict[int, str] = {}

    def resolve(self, publish: Publish) -> str:
        """The topic of an incoming PUBLISH, recording or applying its topic alias."""
        alias = publish.properties.topic_alias
        if alias is None:
            if not publish.topic:
                raise ProtocolError(
                    "PUBLISH has an empty topic and no topic alias",
                    ReasonCode.TOPIC_NAME_INVALID,
                )
            return publish.topic
        if not 1 <= alias <= self.maximum:
            raise ProtocolError(
                f"topic alias {alias} is outside 1..{self.maximum}",
                ReasonCode.TOPIC_ALIAS_INVALID,
            )
        if publish.topic:
            self._topics[alias] = publish.topic
            return publish.topic
        topic = self._topics.get(alias)
        if topic is None:
            raise ProtocolError(
                f"topic alias {alias} was never set", ReasonCode.TOPIC_ALIAS_INVALID
            )
        return topic


class OutboundAliases:
    """Topic aliases we assign on PUBLISH packets we send (the peer allows ``maximum``)."""

    __slots__ = ("_aliases", "maximum")

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._aliases: dict[str, int] = {}

    def alias_for(self, topic: str) -> tuple[int | None, bool]:
        """(alias, is new): an existing alias, a newly assigned one, or (None, False) when
        all are taken."""
        alias = self._aliases.get(topic)
        if alias is not None:
            return alias, False
        if len(self._aliases) >= self.maximum:
            return None, False
        alias = len(self._aliases) + 1
        self._aliases[topic] = alias
        return alias, True

    def apply(self, publish: Publish) -> Publish:
        """The PUBLISH to send: with the topic replaced by a known alias, or with a new
        alias set next to the topic, or unchanged when no alias is free."""
        alias, is_new = self.alias_for(publish.topic)
        if alias is None:
            return publish
        props = replace(publish.properties, topic_alias=alias)
        if is_new:
            return replace(publish, properties=props)
        return replace(publish, topic="", properties=props)


__all__ = [
    "InboundAliases",
    "InboundFlows",
    "OutboundAliases",
    "OutboundFlows",
    "PacketIds",
]
