"""MQTT 5 properties: the ``Properties`` value, and its wire encoding per packet type."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from .errors import LocalProtocolError, MalformedPacket, ProtocolError
from .reasons import ReasonCode

# Packet type numbers (fixed header bits 7-4); WILL is a pseudo type for will properties.
WILL = 0
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
AUTH = 15

PACKET_NAMES = {
    WILL: "will",
    CONNECT: "CONNECT",
    CONNACK: "CONNACK",
    PUBLISH: "PUBLISH",
    PUBACK: "PUBACK",
    PUBREC: "PUBREC",
    PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK",
    PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT",
    AUTH: "AUTH",
}


@dataclass(frozen=True, slots=True, repr=False)
class Properties:
    """MQTT 5 properties; every field is optional (None, or empty for the repeatable ones)."""

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: bool | None = None
    will_delay_interval: int | None = None
    request_response_information: bool | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: bool | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: bool | None = None
    subscription_identifier_available: bool | None = None
    shared_subscription_available: bool | None = None

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={value!r}"
            for name in self.__slots__
            if (value := getattr(self, name)) is not None and value != ()
        )
        return f"Properties({fields})"


NO_PROPERTIES = Properties()

# Wire data types.
BYTE, TWO, FOUR, VARINT, UTF8, BINARY, PAIR, FLAG = range(8)

_ALL_ACKS = frozenset({PUBACK, PUBREC, PUBREL, PUBCOMP})
_EVERY = frozenset(PACKET_NAMES) - {PINGREQ, PINGRESP}
_MESSAGE = frozenset({PUBLISH, WILL})

# identifier -> (field name, wire type, packet types that may carry it)
PROPERTY_TABLE: dict[int, tuple[str, int, frozenset[int]]] = {
    0x01: ("payload_format_indicator", BYTE, _MESSAGE),
    0x02: ("message_expiry_interval", FOUR, _MESSAGE),
    0x03: ("content_type", UTF8, _MESSAGE),
    0x08: ("response_topic", UTF8, _MESSAGE),
    0x09: ("correlation_data", BINARY, _MESSAGE),
    0x0B: ("subscription_identifiers", VARINT, frozenset({PUBLISH, SUBSCRIBE})),
    0x11: ("session_expiry_interval", FOUR, frozenset({CONNECT, CONNACK, DISCONNECT})),
    0x12: ("assigned_client_identifier", UTF8, frozenset({CONNACK})),
    0x13: ("server_keep_alive", TWO, frozenset({CONNACK})),
    0x15: ("authentication_method", UTF8, frozenset({CONNECT, CONNACK, AUTH})),
    0x16: ("authentication_data", BINARY, frozenset({CONNECT, CONNACK, AUTH})),
    0x17: ("request_problem_information", FLAG, frozenset({CONNECT})),
    0x18: ("will_delay_interval", FOUR, frozenset({WILL})),
    0x19: ("request_response_information", FLAG, frozenset({CONNECT})),
    0x1A: ("response_information", UTF8, frozenset({CONNACK})),
    0x1C: ("server_reference", UTF8, frozenset({CONNACK, DISCONNECT})),
    0x1F: (
        "reason_string",
        UTF8,
        _ALL_ACKS | {CONNACK, SUBACK, UNSUBACK, DISCONNECT, AUTH},
    ),
    0x21: ("receive_maximum", TWO, frozenset({CONNECT, CONNACK})),
    0x22: ("topic_alias_maximum", TWO, frozenset({CONNECT, CONNACK})),
    0x23: ("topic_alias", TWO, frozenset({PUBLISH})),
    0x24: ("maximum_qos", BYTE, frozenset({CONNACK})),
    0x25: ("retain_available", FLAG, frozenset({CONNACK})),
    0x26: ("user_properties", PAIR, _EVERY),
    0x27: ("maximum_packet_size", FOUR, frozenset({CONNECT, CONNACK})),
    0x28: ("wildcard_subscription_available", FLAG, frozenset({CONNACK})),
    0x29: ("subscription_identifier_available", FLAG, frozenset({CONNACK})),
    0x2A: ("shared_subscription_available", FLAG, frozenset({CONNACK})),
}

_ORDER = [(ident, name, kind) for ident, (name, kind, _) in PROPERTY_TABLE.items()]
_H = struct.Struct(">H")
_L = struct.Struct(">L")
_FROM = int.from_bytes

# Values that must be 0 or 1, or non-zero.
_ZERO_OR_ONE = frozenset({"payload_format_indicator", "maximum_qos"})
_NON_ZERO = frozenset({"receive_maximum", "maximum_packet_size", "topic_alias"})


def encode_varint(value: int) -> bytes:
    """The variable byte integer encoding (1 to 4 bytes) of 0 <= value <= 268,435,455."""
    if value < 0x80:
        return bytes((value,))
    if value > 268_435_455 or value < 0:
        raise LocalProtocolError(f"variable byte integer {value} is out of range")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read a variable byte integer at ``pos``; return (value, position after it)."""
    value = 0
    shift = 0
    for i in range(4):
        if pos + i >= end:
            raise MalformedPacket("variable byte integer runs past the end of the packet")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + i + 1
        shift += 7
    raise MalformedPacket("variable byte integer is longer than 4 bytes")


def encode_string(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 0xFFFF:
        raise LocalProtocolError(f"string of {len(raw)} bytes is longer than 65535")
    return _H.pack(len(raw)) + raw


def encode_binary(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise LocalProtocolError(f"binary data of {len(value)} bytes is longer than 65535")
    return _H.pack(len(value)) + value


def _encode_value(kind: int, value: Any) -> bytes:
    if kind == BYTE or kind == FLAG:
        return bytes((int(value),))
    if kind == TWO:
        return _H.pack(value)
    if kind == FOUR:
        return _L.pack(value)
    if kind == UTF8:
        return encode_string(value)
    if kind == BINARY:
        return encode_binary(value)
    raise AssertionError(kind)  # pragma: no cover


def encode_properties(props: Properties, packet_type: int) -> bytes:
    """The property length plus the properties, as sent in an MQTT 5 packet."""
    if props is NO_PROPERTIES:
        return b"\x00"
    parts: list[bytes] = []
    for ident, name, kind in _ORDER:
        value = getattr(props, name)
        if value is None or value == ():
            continue
        if packet_type not in PROPERTY_TABLE[ident][2]:
            raise LocalProtocolError(
                f"property {name} is not allowed in {PACKET_NAMES[packet_type]}"
            )
        if kind == PAIR:
            for key, val in value:
                parts.append(b"\x26" + encode_string(key) + encode_string(val))
        elif kind == VARINT:
            for sub_id in value:
                parts.append(b"\x0b" + encode_varint(sub_id))
        else:
            try:
                parts.append(bytes((ident,)) + _encode_value(kind, value))
            except struct.error as exc:
                raise LocalProtocolError(
                    f"property {name} value {value!r} is out of range"
                ) from exc
    body = b"".join(parts)
    return encode_varint(len(body)) + body


def decode_string(buf: bytes, pos: int, end: int, strict: bool = False) -> tuple[str, int]:
    """Read a UTF-8 string with its 2-byte length prefix; return (text, position after it)."""
    if pos + 2 > end:
        raise MalformedPacket("string length runs past the end of the packet")
    stop = pos + 2 + (buf[pos] << 8 | buf[pos + 1])
    if stop > end:
        raise MalformedPacket("string runs past the end of the packet")
    return check_utf8(buf[pos + 2 : stop], strict), stop


def decode_binary(buf: bytes, pos: int, end: int) -> tuple[bytes, int]:
    if pos + 2 > end:
        raise MalformedPacket("binary data length runs past the end of the packet")
    stop = pos + 2 + (buf[pos] << 8 | buf[pos + 1])
    if stop > end:
        raise MalformedPacket("binary data runs past the end of the packet")
    return bytes(buf[pos + 2 : stop]), stop


def check_utf8(raw: bytes, strict: bool = False) -> str:
    """Decode an MQTT UTF-8 string: valid UTF-8 and no U+0000; ``strict`` also refuses
    the control characters and non-characters MQTT 3.1.1 disallows."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise MalformedPacket(
            f"string is not valid UTF-8: {exc.reason} at byte {exc.start}"
        ) from exc
    if "\x00" in text:
        raise MalformedPacket("string contains the null character U+0000")
    if strict:
        bad = _disallowed(text)
        if bad is not None:
            raise MalformedPacket(f"string contains the disallowed code point U+{ord(bad):04X}")
    return text


def _disallowed(text: str) -> str | None:
    if text.isascii() and text.isprintable():
        return None
    for ch in text:
        code = ord(ch)
        if (
            code < 0x20
            or 0x7F <= code <= 0x9F
            or 0xFDD0 <= code <= 0xFDEF
            or (code & 0xFFFE) == 0xFFFE
        ):
            return ch
    return None


def decode_properties(
    buf: bytes, pos: int, end: int, packet_type: int, strict: bool = False
) -> tuple[Properties, int]:
    """Read a property length and the properties after it; return (properties, next position)."""
    length, pos = decode_varint(buf, pos, end)
    if length == 0:
        return NO_PROPERTIES, pos
    stop = pos + length
    if stop > end:
        raise MalformedPacket("properties run past the end of the packet")
    where = PACKET_NAMES[packet_type]
    values: dict[str, Any] = {}
    pairs: list[tuple[str, str]] = []
    sub_ids: list[int] = []
    while pos < stop:
        ident, pos = decode_varint(buf, pos, stop)
        entry = PROPERTY_TABLE.get(ident)
        if entry is None:
            raise MalformedPacket(f"unknown property identifier 0x{ident:02X} in {where}")
        name, kind, allowed = entry
        if packet_type not in allowed:
            raise MalformedPacket(f"property {name} (0x{ident:02X}) is not allowed in {where}")
        value: Any
        if kind == PAIR:
            key, pos = decode_string(buf, pos, stop, strict)
            val, pos = decode_string(buf, pos, stop, strict)
            pairs.append((key, val))
            continue
        if kind == VARINT:
            value, pos = decode_varint(buf, pos, stop)
            if value == 0:
                raise ProtocolError(f"subscription identifier 0 in {where}")
            if sub_ids and packet_type != PUBLISH:
                raise ProtocolError(f"property {name} appears more than once in {where}")
            sub_ids.append(value)
            continue
        if name in values:
            raise ProtocolError(f"property {name} appears more than once in {where}")
        if kind == BYTE or kind == FLAG:
            if pos + 1 > stop:
                raise MalformedPacket(f"property {name} runs past the end of the properties")
            value = buf[pos]
            pos += 1
            if kind == FLAG or name in _ZERO_OR_ONE:
                if value > 1:
                    raise ProtocolError(f"property {name} must be 0 or 1, got {value}")
                if kind == FLAG:
                    value = bool(value)
        elif kind == TWO or kind == FOUR:
            size = 2 if kind == TWO else 4
            if pos + size > stop:
                raise MalformedPacket(f"property {name} runs past the end of the properties")
            value = _FROM(buf[pos : pos + size], "big")
            pos += size
            if value == 0 and name in _NON_ZERO:
                raise ProtocolError(
                    f"property {name} must not be 0",
                    ReasonCode.TOPIC_ALIAS_INVALID if name == "topic_alias" else None,
                )
        elif kind == UTF8:
            value, pos = decode_string(buf, pos, stop, strict)
        else:
            value, pos = decode_binary(buf, pos, stop)
        values[name] = value
    if pairs:
        values["user_properties"] = tuple(pairs)
    if sub_ids:
        values["subscription_identifiers"] = tuple(sub_ids)
    return Properties(**values), stop
