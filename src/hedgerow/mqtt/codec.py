"""Sans-IO MQTT codec: ``Decoder`` turns bytes into packets, ``encode`` turns packets into bytes.

The decoder keeps one buffer and a read position; ``next_packet`` parses one complete packet
(or returns None when more bytes are needed) and never reads past that packet's end.
PUBLISH has a fast path: topic bytes are looked up in a per-connection cache of already
validated topics, and the ``Publish`` object is filled through its slot descriptors.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from .errors import LocalProtocolError, MalformedPacket, PacketTooLarge, ProtocolError
from .packets import (
    NO_PROPERTIES,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
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
    Will,
)
from .properties import (
    AUTH,
    CONNACK,
    CONNECT,
    DISCONNECT,
    PACKET_NAMES,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    WILL,
    check_utf8,
    decode_binary,
    decode_properties,
    decode_string,
    encode_binary,
    encode_properties,
    encode_string,
    encode_varint,
)
from .reasons import ReasonCode, connect_return_code, reason_from_return_code

MAX_PACKET_SIZE = 268_435_455
"""The decoder's default limit: the largest remaining length the protocol can express."""

TOPIC_CACHE_SIZE = 4096
"""Validated PUBLISH topics remembered per decoder (the cache starts over when full)."""

V31 = ProtocolVersion.V31
V311 = ProtocolVersion.V311
V5 = ProtocolVersion.V5

_R = ReasonCode
VALID_REASON_CODES: dict[int, frozenset[int]] = {
    CONNACK: frozenset(
        {0x00, *range(0x80, 0x8B), 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}
    ),
    PUBACK: frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99}),
    PUBREC: frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99}),
    PUBREL: frozenset({0x00, 0x92}),
    PUBCOMP: frozenset({0x00, 0x92}),
    SUBACK: frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2}),
    UNSUBACK: frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91}),
    DISCONNECT: frozenset(
        {0x00, 0x04, *range(0x80, 0x84), 0x87, 0x89, 0x8B, *range(0x8D, 0x91), *range(0x93, 0xA3)}
    ),
    AUTH: frozenset({0x00, 0x18, 0x19}),
}
"""MQTT 5 reason codes each packet type may carry."""

V311_SUBACK_CODES = frozenset({0x00, 0x01, 0x02, 0x80})

_SERVER_RECEIVES = frozenset(
    {CONNECT, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, UNSUBSCRIBE, PINGREQ}
    | {DISCONNECT, AUTH}
)
_CLIENT_RECEIVES = frozenset(
    {CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, PINGRESP}
    | {DISCONNECT, AUTH}
)
# Required low nibble of the fixed header for every type but PUBLISH.
_FIXED_FLAGS = {t: 0 for t in PACKET_NAMES if t} | {PUBREL: 2, SUBSCRIBE: 2, UNSUBSCRIBE: 2}

_H = struct.Struct(">H")
_BBH = struct.Struct(">BBH").pack
_BBBH = struct.Struct(">BBBH").pack
_pack_H = _H.pack
_new = object.__new__
(
    _set_topic,
    _set_payload,
    _set_qos,
    _set_retain,
    _set_dup,
    _set_packet_id,
    _set_properties,
) = (
    getattr(Publish, name).__set__
    for name in ("topic", "payload", "qos", "retain", "dup", "packet_id", "properties")
)


class Decoder:
    """Parses MQTT packets from bytes received on one connection.

    ``server=True`` decodes what a server receives (client to server packets) and learns
    the protocol version from the first packet, which must be CONNECT, unless ``version``
    is given. ``server=False`` decodes what a client receives; ``version`` None means 3.1.1.
    Errors are ``MalformedPacket``/``PacketTooLarge``/``ProtocolError``; after one, close
    the connection (the decoder has skipped the bad packet but its state is not trusted).
    """

    __slots__ = (
        "_buf",
        "_connect_seen",
        "_mode",
        "_pos",
        "_strict",
        "_topics",
        "_version",
        "max_packet_size",
        "server",
    )

    def __init__(
        self,
        version: ProtocolVersion | None = None,
        max_packet_size: int = MAX_PACKET_SIZE,
        server: bool = True,
    ) -> None:
        self._buf = b""
        self._pos = 0
        self._topics: dict[bytes, str] = {}
        self._connect_seen = False
        self.max_packet_size = max_packet_size
        self.server = server
        self._version: ProtocolVersion | None = None
        self._mode = 0  # 0: unknown (awaiting CONNECT), 4: MQTT 3.1/3.1.1, 5: MQTT 5
        self._strict = True
        self.version = version

    @property
    def version(self) -> ProtocolVersion | None:
        return self._version

    @version.setter
    def version(self, version: ProtocolVersion | None) -> None:
        self._version = version
        self._topics.clear()
        if version is None:
            self._mode = 0 if self.server else 4
            self._strict = True
        else:
            self._mode = 5 if version == V5 else 4
            self._strict = version != V5

    @property
    def buffered(self) -> int:
        """Bytes received but not yet parsed into packets."""
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos >= len(self._buf):
            self._buf = bytes(data)
        else:
            self._buf = self._buf[self._pos :] + data
        self._pos = 0

    def packets(self) -> list[Packet]:
        """Every complete packet in the buffer."""
        out: list[Packet] = []
        append = out.append
        next_packet = self.next_packet
        packet = next_packet()
        while packet is not None:
            append(packet)
            packet = next_packet()
        return out

    def next_packet(self) -> Packet | None:
        """The next complete packet, or None when more data is needed."""
        buf = self._buf
        pos = self._pos
        size = len(buf)
        if size - pos < 2:
            return None
        length = buf[pos + 1]
        if length < 0x80:
            start = pos + 2
        elif size - pos > 2 and buf[pos + 2] < 0x80:
            length = (length & 0x7F) | buf[pos + 2] << 7
            start = pos + 3
        else:
            length, start = self._long_length(buf, pos, size)
            if start < 0:
                return None
        end = start + length
        if end - pos > self.max_packet_size:
            raise PacketTooLarge(end - pos, self.max_packet_size)
        if end > size:
            return None
        self._pos = end
        first = buf[pos]
        if first & 0xF0 == 0x30:
            return self._publish(first, buf, start, end)
        return self._other(first, buf, start, end)

    @staticmethod
    def _long_length(buf: bytes, pos: int, size: int) -> tuple[int, int]:
        value = 0
        for i in range(4):
            at = pos + 1 + i
            if at >= size:
                return 0, -1
            byte = buf[at]
            value |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                return value, at + 1
        raise MalformedPacket("remaining length is longer than 4 bytes")

    # -- PUBLISH --------------------------------------------------------------------------

    def _publish(self, first: int, buf: bytes, pos: int, end: int) -> Publish:
        mode = self._mode
        if not mode:
            raise ProtocolError("PUBLISH before CONNECT")
        qos = (first >> 1) & 3
        tstart = pos + 2
        if tstart > end:
            raise MalformedPacket("PUBLISH: topic length runs past the end of the packet")
        pos = tstart + (buf[tstart - 2] << 8 | buf[tstart - 1])
        if pos > end:
            raise MalformedPacket("PUBLISH: topic runs past the end of the packet")
        raw = buf[tstart:pos]
        topic = self._topics.get(raw)
        if topic is None:
            topic = self._new_topic(raw)
        if qos:
            if qos == 3:
                raise MalformedPacket("PUBLISH: QoS 3 is not a valid QoS")
            if pos + 2 > end:
                raise MalformedPacket("PUBLISH: packet identifier runs past the end of the packet")
            packet_id: int | None = buf[pos] << 8 | buf[pos + 1]
            if not packet_id:
                raise ProtocolError("PUBLISH: packet identifier 0 is not allowed")
            pos += 2
        elif first & 8:
            raise MalformedPacket("PUBLISH: DUP flag set on a QoS 0 message")
        else:
            packet_id = None
        props = NO_PROPERTIES
        if mode == 5:
            if pos < end and buf[pos] == 0:
                pos += 1
            else:
                props, pos = decode_properties(buf, pos, end, PUBLISH)
        if not topic and props.topic_alias is None:
            raise ProtocolError(
                "PUBLISH: empty topic name without a topic alias", _R.TOPIC_NAME_INVALID
            )
        publish = _new(Publish)
        _set_topic(publish, topic)
        _set_payload(publish, buf[pos:end])
        _set_qos(publish, qos)
        _set_retain(publish, bool(first & 1))
        _set_dup(publish, bool(first & 8))
        _set_packet_id(publish, packet_id)
        _set_properties(publish, props)
        return publish

    def _new_topic(self, raw: bytes) -> str:
        if not raw:
            if self._mode == 5:
                return ""
            raise ProtocolError("PUBLISH: topic name is empty", _R.TOPIC_NAME_INVALID)
        try:
            topic = check_utf8(raw, self._strict)
        except MalformedPacket as exc:
            raise MalformedPacket(f"PUBLISH: topic name: {exc.message}") from exc
        if "+" in topic or "#" in topic:
            raise ProtocolError(
                f"PUBLISH: topic name {topic!r} contains a wildcard", _R.TOPIC_NAME_INVALID
            )
        if len(self._topics) >= TOPIC_CACHE_SIZE:
            self._topics.clear()
        self._topics[raw] = topic
        return topic

    # -- every other packet ---------------------------------------------------------------

    def _other(self, first: int, buf: bytes, pos: int, end: int) -> Packet:
        kind = first >> 4
        if kind == 0:
            raise MalformedPacket("packet type 0 is reserved")
        name = PACKET_NAMES[kind]
        if first & 0x0F != _FIXED_FLAGS[kind]:
            raise MalformedPacket(
                f"{name}: reserved fixed header flags are 0x{first & 0x0F:X}, "
                f"must be 0x{_FIXED_FLAGS[kind]:X}"
            )
        if kind not in (_SERVER_RECEIVES if self.server else _CLIENT_RECEIVES):
            side = "server" if self.server else "client"
            raise ProtocolError(f"{name} is not a packet a {side} receives")
        if kind == CONNECT:
            return self._connect(buf, pos, end)
        if not self._mode:
            raise ProtocolError(f"{name} before CONNECT")
        if kind == AUTH and self._mode != 5:
            raise MalformedPacket("AUTH: packet type 15 is reserved before MQTT 5")
        packet: Packet = _DECODERS[kind](self, kind, buf, pos, end)
        return packet

    def _connect(self, buf: bytes, pos: int, end: int) -> Connect:
        if self._connect_seen:
            raise ProtocolError("CONNECT: a second CONNECT on the same connection")
        if buf[pos : min(pos + 6, end)] == b"\x00\x04MQTT":
            pos += 6
            name = "MQTT"
        elif buf[pos : min(pos + 8, end)] == b"\x00\x06MQIsdp":
            pos += 8
            name = "MQIsdp"
        else:
            shown, _ = decode_string(buf, pos, end)
            raise ProtocolError(
                f"CONNECT: unknown protocol name {shown!r}", _R.UNSUPPORTED_PROTOCOL_VERSION
            )
        if pos + 4 > end:
            raise MalformedPacket("CONNECT: variable header runs past the end of the packet")
        level, flags, keepalive = buf[pos], buf[pos + 1], buf[pos + 2] << 8 | buf[pos + 3]
        pos += 4
        if (name, level) not in _PROTOCOLS:
            raise ProtocolError(
                f"CONNECT: protocol {name!r} level {level} is not supported",
                _R.UNSUPPORTED_PROTOCOL_VERSION,
            )
        version = _PROTOCOLS[name, level]
        strict = version != V5
        _check_connect_flags(flags, version)
        props = NO_PROPERTIES
        if version == V5:
            props, pos = decode_properties(buf, pos, end, CONNECT)
        client_id, pos = decode_string(buf, pos, end, strict)
        will = None
        if flags & 0x04:
            will_props = NO_PROPERTIES
            if version == V5:
                will_props, pos = decode_properties(buf, pos, end, WILL)
            will_topic, pos = decode_string(buf, pos, end, strict)
            if not will_topic or "+" in will_topic or "#" in will_topic:
                raise ProtocolError(
                    f"CONNECT: will topic {will_topic!r} is not a valid topic name",
                    _R.TOPIC_NAME_INVALID,
                )
            will_payload, pos = decode_binary(buf, pos, end)
            will = Will(will_topic, will_payload, (flags >> 3) & 3, bool(flags & 0x20), will_props)
        username = password = None
        if flags & 0x80:
            username, pos = decode_string(buf, pos, end, strict)
        if flags & 0x40:
            password, pos = decode_binary(buf, pos, end)
        _expect_end("CONNECT", pos, end)
        self._connect_seen = True
        if self.server:
            self.version = version
        return Connect(
            client_id, version, bool(flags & 0x02), keepalive, username, password, will, props
        )

    def _connack(self, kind: int, buf: bytes, pos: int, end: int) -> ConnAck:
        if pos + 2 > end:
            raise MalformedPacket("CONNACK: shorter than 2 bytes")
        ack_flags, code = buf[pos], buf[pos + 1]
        if ack_flags & 0xFE:
            raise MalformedPacket(f"CONNACK: reserved acknowledge flags 0x{ack_flags:02X} set")
        props = NO_PROPERTIES
        if self._mode == 5:
            _check_reason(CONNACK, code)
            props, pos = decode_properties(buf, pos + 2, end, CONNACK)
        else:
            if code > 5:
                raise MalformedPacket(f"CONNACK: unknown return code {code}")
            code = reason_from_return_code(code)
            pos += 2
        _expect_end("CONNACK", pos, end)
        return ConnAck(bool(ack_flags), code, props)

    def _ack(self, kind: int, buf: bytes, pos: int, end: int) -> Packet:
        name = PACKET_NAMES[kind]
        packet_id = _packet_id(name, buf, pos, end)
        code = 0
        props = NO_PROPERTIES
        if self._mode == 5:
            if pos + 2 < end:
                code = buf[pos + 2]
                _check_reason(kind, code)
                if pos + 3 < end:
                    props, pos = decode_properties(buf, pos + 3, end, kind)
                else:
                    pos = end
            else:
                pos += 2
        else:
            pos += 2
        _expect_end(name, pos, end)
        cls: Any = _ACK_CLASSES[kind]
        ack: Packet = cls(packet_id, code, props)
        return ack

    def _subscribe(self, kind: int, buf: bytes, pos: int, end: int) -> Subscribe:
        packet_id = _packet_id("SUBSCRIBE", buf, pos, end)
        pos += 2
        v5 = self._mode == 5
        props = NO_PROPERTIES
        if v5:
            props, pos = decode_properties(buf, pos, end, SUBSCRIBE)
        subscriptions: list[Subscription] = []
        while pos < end:
            topic_filter, pos = decode_string(buf, pos, end, self._strict)
            if pos >= end:
                raise MalformedPacket(
                    f"SUBSCRIBE: options of {topic_filter!r} run past the end of the packet"
                )
            options = buf[pos]
            pos += 1
            subscriptions.append(_subscription(topic_filter, options, v5))
        if not subscriptions:
            raise ProtocolError("SUBSCRIBE: no topic filters")
        return Subscribe(packet_id, tuple(subscriptions), props)

    def _suback(self, kind: int, buf: bytes, pos: int, end: int) -> SubAck:
        packet_id = _packet_id("SUBACK", buf, pos, end)
        pos += 2
        props = NO_PROPERTIES
        if self._mode == 5:
            props, pos = decode_properties(buf, pos, end, SUBACK)
            valid = VALID_REASON_CODES[SUBACK]
        else:
            valid = V311_SUBACK_CODES
        codes = tuple(buf[pos:end])
        if not codes:
            raise ProtocolError("SUBACK: no reason codes")
        for code in codes:
            if code not in valid:
                raise MalformedPacket(f"SUBACK: reason code 0x{code:02X} is not valid")
        return SubAck(packet_id, codes, props)

    def _unsubscribe(self, kind: int, buf: bytes, pos: int, end: int) -> Unsubscribe:
        packet_id = _packet_id("UNSUBSCRIBE", buf, pos, end)
        pos += 2
        props = NO_PROPERTIES
        if self._mode == 5:
            props, pos = decode_properties(buf, pos, end, UNSUBSCRIBE)
        filters: list[str] = []
        while pos < end:
            topic_filter, pos = decode_string(buf, pos, end, self._strict)
            filters.append(topic_filter)
        if not filters:
            raise ProtocolError("UNSUBSCRIBE: no topic filters")
        return Unsubscribe(packet_id, tuple(filters), props)

    def _unsuback(self, kind: int, buf: bytes, pos: int, end: int) -> UnsubAck:
        packet_id = _packet_id("UNSUBACK", buf, pos, end)
        pos += 2
        if self._mode != 5:
            _expect_end("UNSUBACK", pos, end)
            return UnsubAck(packet_id)
        props, pos = decode_properties(buf, pos, end, UNSUBACK)
        codes = tuple(buf[pos:end])
        if not codes:
            raise ProtocolError("UNSUBACK: no reason codes")
        for code in codes:
            _check_reason(UNSUBACK, code)
        return UnsubAck(packet_id, codes, props)

    def _empty(self, kind: int, buf: bytes, pos: int, end: int) -> Packet:
        _expect_end(PACKET_NAMES[kind], pos, end)
        return PingReq() if kind == PINGREQ else PingResp()

    def _reason_only(self, kind: int, buf: bytes, pos: int, end: int) -> Packet:
        name = PACKET_NAMES[kind]
        code = 0
        props = NO_PROPERTIES
        if self._mode == 5 and pos < end:
            code = buf[pos]
            _check_reason(kind, code)
            if pos + 1 < end:
                props, pos = decode_properties(buf, pos + 1, end, kind)
            else:
                pos = end
        _expect_end(name, pos, end)
        if kind == DISCONNECT:
            return Disconnect(code, props)
        return Auth(code, props)


_PROTOCOLS = {("MQIsdp", 3): V31, ("MQTT", 4): V311, ("MQTT", 5): V5}
_ACK_CLASSES = {PUBACK: PubAck, PUBREC: PubRec, PUBREL: PubRel, PUBCOMP: PubComp}
_DECODERS: dict[int, Callable[[Decoder, int, bytes, int, int], Any]] = {
    CONNACK: Decoder._connack,
    PUBACK: Decoder._ack,
    PUBREC: Decoder._ack,
    PUBREL: Decoder._ack,
    PUBCOMP: Decoder._ack,
    SUBSCRIBE: Decoder._subscribe,
    SUBACK: Decoder._suback,
    UNSUBSCRIBE: Decoder._unsubscribe,
    UNSUBACK: Decoder._unsuback,
    PINGREQ: Decoder._empty,
    PINGRESP: Decoder._empty,
    DISCONNECT: Decoder._reason_only,
    AUTH: Decoder._reason_only,
}


def _check_connect_flags(flags: int, version: ProtocolVersion) -> None:
    if flags & 0x01:
        raise MalformedPacket("CONNECT: reserved flag bit 0 is set")
    will_qos = (flags >> 3) & 3
    if flags & 0x04:
        if will_qos == 3:
            raise MalformedPacket("CONNECT: will QoS 3 is not a valid QoS")
    elif will_qos or flags & 0x20:
        raise MalformedPacket("CONNECT: will QoS or will retain set without the will flag")
    if version != V5 and flags & 0x40 and not flags & 0x80:
        raise MalformedPacket("CONNECT: password flag set without the user name flag")


def _subscription(topic_filter: str, options: int, v5: bool) -> Subscription:
    qos = options & 3
    if qos == 3:
        raise MalformedPacket(f"SUBSCRIBE: QoS 3 requested for {topic_filter!r}")
    if not v5:
        if options & 0xFC:
            raise MalformedPacket(
                f"SUBSCRIBE: reserved option bits 0x{options & 0xFC:02X} set for {topic_filter!r}"
            )
        return Subscription(topic_filter, qos)
    if options & 0xC0:
        raise MalformedPacket(
            f"SUBSCRIBE: reserved option bits 0x{options & 0xC0:02X} set for {topic_filter!r}"
        )
    retain_handling = (options >> 4) & 3
    if retain_handling == 3:
        raise ProtocolError(f"SUBSCRIBE: retain handling 3 for {topic_filter!r}")
    return Subscription(topic_filter, qos, bool(options & 4), bool(options & 8), retain_handling)


def _packet_id(name: str, buf: bytes, pos: int, end: int) -> int:
    if pos + 2 > end:
        raise MalformedPacket(f"{name}: packet identifier runs past the end of the packet")
    packet_id = buf[pos] << 8 | buf[pos + 1]
    if not packet_id:
        raise ProtocolError(f"{name}: packet identifier 0 is not allowed")
    return packet_id


def _check_reason(kind: int, code: int) -> None:
    if code not in VALID_REASON_CODES[kind]:
        raise MalformedPacket(f"{PACKET_NAMES[kind]}: reason code 0x{code:02X} is not valid")


def _expect_end(name: str, pos: int, end: int) -> None:
    if pos != end:
        raise MalformedPacket(f"{name}: {end - pos} unexpected bytes at the end of the packet")


# -- encoding ---------------------------------------------------------------------------------


def _frame(first: int, body: bytes) -> bytes:
    length = len(body)
    if length < 0x80:
        return bytes((first, length)) + body
    return bytes((first,)) + encode_varint(length) + body


def _props(props: Properties, kind: int, version: ProtocolVersion) -> bytes:
    if version != V5:
        return b""
    return encode_properties(props, kind)


def _check_packet_id(name: str, packet_id: int | None) -> int:
    if packet_id is None or not 0 < packet_id <= 0xFFFF:
        raise LocalProtocolError(f"{name}: packet identifier {packet_id} is outside 1..65535")
    return packet_id


def encode_publish(
    topic: str,
    payload: bytes,
    qos: int = 0,
    retain: bool = False,
    dup: bool = False,
    packet_id: int | None = None,
    version: ProtocolVersion = V311,
    properties: Properties | None = None,
) -> bytes:
    """The bytes of one PUBLISH, built without an intermediate ``Publish`` object."""
    raw = topic.encode()
    tlen = len(raw)
    if version == 5:
        props = (
            b"\x00"
            if properties is None or properties is NO_PROPERTIES
            else encode_properties(properties, PUBLISH)
        )
        length = tlen + len(props) + len(payload)
    else:
        props = b""
        length = tlen + len(payload)
    if qos:
        if packet_id is None or not 0 < packet_id <= 0xFFFF or not 0 < qos < 3:
            raise LocalProtocolError(
                f"PUBLISH: QoS {qos} with packet identifier {packet_id} cannot be encoded"
            )
        length += 4
        first = 0x30 | qos << 1 | (8 if dup else 0) | (1 if retain else 0)
        if length < 0x80:
            return _BBH(first, length, tlen) + raw + _pack_H(packet_id) + props + payload
        return _publish_header(first, length, tlen) + raw + _pack_H(packet_id) + props + payload
    if dup:
        raise LocalProtocolError("PUBLISH: QoS 0 with DUP cannot be encoded")
    length += 2
    first = 0x31 if retain else 0x30
    if length < 0x80:
        return _BBH(first, length, tlen) + raw + props + payload
    return _publish_header(first, length, tlen) + raw + props + payload


def _publish_header(first: int, length: int, tlen: int) -> bytes:
    """Fixed header plus topic length of a PUBLISH whose remaining length is 128 or more."""
    if length < 0x4000:
        return _BBBH(first, length & 0x7F | 0x80, length >> 7, tlen)
    if tlen > 0xFFFF:
        raise LocalProtocolError(f"PUBLISH: topic of {tlen} bytes is longer than 65535")
    return bytes((first,)) + encode_varint(length) + _pack_H(tlen)


def _encode_publish(p: Publish, version: ProtocolVersion) -> bytes:
    return encode_publish(
        p.topic, p.payload, p.qos, p.retain, p.dup, p.packet_id, version, p.properties
    )


def _encode_connect(p: Connect, version: ProtocolVersion) -> bytes:
    version = p.version
    flags = 0x02 if p.clean_start else 0
    if p.will is not None:
        if not 0 <= p.will.qos <= 2:
            raise LocalProtocolError(f"CONNECT: will QoS {p.will.qos} is not valid")
        flags |= 0x04 | p.will.qos << 3 | (0x20 if p.will.retain else 0)
    if p.username is not None:
        flags |= 0x80
    if p.password is not None:
        if version != V5 and p.username is None:
            raise LocalProtocolError("CONNECT: MQTT 3.1.1 needs a user name to send a password")
        flags |= 0x40
    name = b"\x00\x06MQIsdp" if version == V31 else b"\x00\x04MQTT"
    parts = [name, bytes((version, flags)), _pack_H(p.keepalive)]
    parts.append(_props(p.properties, CONNECT, version))
    parts.append(encode_string(p.client_id))
    if p.will is not None:
        parts.append(_props(p.will.properties, WILL, version))
        parts.append(encode_string(p.will.topic))
        parts.append(encode_binary(p.will.payload))
    if p.username is not None:
        parts.append(encode_string(p.username))
    if p.password is not None:
        parts.append(encode_binary(p.password))
    return _frame(0x10, b"".join(parts))


def _encode_connack(p: ConnAck, version: ProtocolVersion) -> bytes:
    present = 1 if p.session_present and version != V31 else 0
    if version == V5:
        body = bytes((present, p.reason_code)) + encode_properties(p.properties, CONNACK)
        return _frame(0x20, body)
    return bytes((0x20, 2, present, connect_return_code(p.reason_code)))


def _ack_encoder(first: int, kind: int) -> Callable[[Any, ProtocolVersion], bytes]:
    name = PACKET_NAMES[kind]

    def encode_ack(p: PubAck | PubRec | PubRel | PubComp, version: ProtocolVersion) -> bytes:
        packet_id = _check_packet_id(name, p.packet_id)
        if version != V5 or (p.reason_code == 0 and p.properties is NO_PROPERTIES):
            return bytes((first, 2)) + _pack_H(packet_id)
        if p.properties is NO_PROPERTIES or p.properties == NO_PROPERTIES:
            return bytes((first, 3)) + _pack_H(packet_id) + bytes((p.reason_code,))
        body = _pack_H(packet_id) + bytes((p.reason_code,)) + encode_properties(p.properties, kind)
        return _frame(first, body)

    return encode_ack


def _encode_subscribe(p: Subscribe, version: ProtocolVersion) -> bytes:
    packet_id = _check_packet_id("SUBSCRIBE", p.packet_id)
    if not p.subscriptions:
        raise LocalProtocolError("SUBSCRIBE: no topic filters")
    parts = [_pack_H(packet_id), _props(p.properties, SUBSCRIBE, version)]
    for sub in p.subscriptions:
        options = sub.qos
        if version == V5:
            options |= (
                (4 if sub.no_local else 0)
                | (8 if sub.retain_as_published else 0)
                | sub.retain_handling << 4
            )
        parts.append(encode_string(sub.topic_filter) + bytes((options,)))
    return _frame(0x82, b"".join(parts))


def _encode_suback(p: SubAck, version: ProtocolVersion) -> bytes:
    packet_id = _check_packet_id("SUBACK", p.packet_id)
    codes = p.reason_codes
    if version != V5:
        codes = tuple(code if code < 0x80 else 0x80 for code in codes)
    body = _pack_H(packet_id) + _props(p.properties, SUBACK, version) + bytes(codes)
    return _frame(0x90, body)


def _encode_unsubscribe(p: Unsubscribe, version: ProtocolVersion) -> bytes:
    packet_id = _check_packet_id("UNSUBSCRIBE", p.packet_id)
    if not p.topic_filters:
        raise LocalProtocolError("UNSUBSCRIBE: no topic filters")
    parts = [_pack_H(packet_id), _props(p.properties, UNSUBSCRIBE, version)]
    parts.extend(encode_string(topic_filter) for topic_filter in p.topic_filters)
    return _frame(0xA2, b"".join(parts))


def _encode_unsuback(p: UnsubAck, version: ProtocolVersion) -> bytes:
    packet_id = _check_packet_id("UNSUBACK", p.packet_id)
    if version != V5:
        return b"\xb0\x02" + _pack_H(packet_id)
    body = _pack_H(packet_id) + encode_properties(p.properties, UNSUBACK) + bytes(p.reason_codes)
    return _frame(0xB0, body)


def _reason_encoder(first: int, kind: int) -> Callable[[Any, ProtocolVersion], bytes]:
    def encode_reason(p: Disconnect | Auth, version: ProtocolVersion) -> bytes:
        if version != V5:
            if kind == AUTH:
                raise LocalProtocolError("AUTH exists only in MQTT 5")
            return bytes((first, 0))
        if p.properties is NO_PROPERTIES or p.properties == NO_PROPERTIES:
            if p.reason_code == 0:
                return bytes((first, 0))
            return bytes((first, 1, p.reason_code))
        return _frame(first, bytes((p.reason_code,)) + encode_properties(p.properties, kind))

    return encode_reason


_ENCODERS: dict[type, Callable[[Any, ProtocolVersion], bytes]] = {
    Publish: _encode_publish,
    Connect: _encode_connect,
    ConnAck: _encode_connack,
    PubAck: _ack_encoder(0x40, PUBACK),
    PubRec: _ack_encoder(0x50, PUBREC),
    PubRel: _ack_encoder(0x62, PUBREL),
    PubComp: _ack_encoder(0x70, PUBCOMP),
    Subscribe: _encode_subscribe,
    SubAck: _encode_suback,
    Unsubscribe: _encode_unsubscribe,
    UnsubAck: _encode_unsuback,
    PingReq: lambda p, v: b"\xc0\x00",
    PingResp: lambda p, v: b"\xd0\x00",
    Disconnect: _reason_encoder(0xE0, DISCONNECT),
    Auth: _reason_encoder(0xF0, AUTH),
}


def encode(packet: Packet, version: ProtocolVersion) -> bytes:
    """The wire bytes of ``packet`` for a connection speaking ``version``.

    Fields the version cannot carry are dropped (properties and most reason codes before
    MQTT 5); CONNACK reason codes become 3.1.1 return codes. ``LocalProtocolError`` when the
    packet cannot be sent at all (AUTH before MQTT 5, a missing packet identifier, a value
    out of range, ...). Topic names are not validated here: check them where they enter.
    """
    try:
        return _ENCODERS[type(packet)](packet, version)
    except (struct.error, ValueError, OverflowError) as exc:
        raise LocalProtocolError(
            f"{type(packet).__name__}: a field is out of range: {exc}"
        ) from exc
