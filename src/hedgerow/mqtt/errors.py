"""Errors of the MQTT engine.

Exception tree::

    MQTTError                  root; ``.reason_code`` is the MQTT 5 reason code to report
    ├── MalformedPacket        the peer sent bytes that do not parse (0x81)
    │   └── PacketTooLarge     a packet is larger than the maximum packet size (0x95)
    ├── ProtocolError          the peer sent a well-formed packet that breaks a rule (0x82,
    │                          or a more precise code such as TOPIC_NAME_INVALID)
    └── LocalProtocolError     our own side asked for something the protocol forbids
                               (encoding a packet the version cannot carry, no free packet id)
"""

from __future__ import annotations

from .reasons import ReasonCode


class MQTTError(Exception):
    """Root of the MQTT engine's errors; ``reason_code`` is what to send the peer."""

    default_reason: int = ReasonCode.UNSPECIFIED_ERROR

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason_code: int = self.default_reason if reason_code is None else reason_code

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message, self.reason_code))


class MalformedPacket(MQTTError):
    """The bytes received do not form a valid packet."""

    default_reason = ReasonCode.MALFORMED_PACKET


class PacketTooLarge(MalformedPacket):
    """A packet (fixed header included) is larger than the allowed maximum."""

    default_reason = ReasonCode.PACKET_TOO_LARGE

    def __init__(self, size: int, maximum: int) -> None:
        super().__init__(f"packet of {size} bytes exceeds the maximum packet size of {maximum}")
        self.size = size
        self.maximum = maximum

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.size, self.maximum))


class ProtocolError(MQTTError):
    """A well-formed packet that breaks a protocol rule."""

    default_reason = ReasonCode.PROTOCOL_ERROR


class LocalProtocolError(MQTTError):
    """Our own side tried something the protocol forbids (a bug in the caller)."""

    default_reason = ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR
