"""What the client hands to and receives from the application: ``Message`` and ``Will``."""

from __future__ import annotations

from dataclasses import dataclass, field

from hedgerow.mqtt import packets
from hedgerow.mqtt.packets import NO_PROPERTIES, Properties

#: payload bytes shown by ``repr(message)``
REPR_PAYLOAD = 64


@dataclass(frozen=True, slots=True, repr=False)
class Message:
    """An application message received on a subscription."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = NO_PROPERTIES
    #: (connection, packet id) of a QoS 1 message the application acknowledges itself
    #: (``Client(manual_ack=True)`` and ``Client.ack``); None when acknowledged on receipt.
    ack_id: tuple[int, int] | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        payload = self.payload if len(self.payload) <= REPR_PAYLOAD else self.payload[:REPR_PAYLOAD]
        more = "" if payload is self.payload else f"...({len(self.payload)} bytes)"
        props = "" if self.properties == NO_PROPERTIES else f", properties={self.properties!r}"
        return (
            f"Message(topic={self.topic!r}, payload={payload!r}{more}, qos={self.qos}, "
            f"retain={self.retain}{props})"
        )


@dataclass(frozen=True, slots=True)
class Will:
    """The message the server publishes for us if the connection ends without DISCONNECT."""

    topic: str
    payload: bytes | str = b""
    qos: int = 0
    retain: bool = False
    properties: Properties = NO_PROPERTIES

    def to_packet(self) -> packets.Will:
        payload = self.payload.encode() if isinstance(self.payload, str) else self.payload
        return packets.Will(
            topic=self.topic,
            payload=payload,
            qos=self.qos,
            retain=self.retain,
            properties=self.properties,
        )
