"""Bad input raises the right typed error with the right reason code; known wire bytes."""

from __future__ import annotations

import pytest

from hedgerow.mqtt import (
    NO_PROPERTIES,
    Auth,
    ConnAck,
    Connect,
    Decoder,
    LocalProtocolError,
    MalformedPacket,
    MQTTError,
    PacketTooLarge,
    PingReq,
    Properties,
    ProtocolError,
    ProtocolVersion,
    PubAck,
    Publish,
    ReasonCode,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    encode,
    encode_publish,
)
from hedgerow.mqtt.properties import encode_varint

V31, V311, V5 = ProtocolVersion.V31, ProtocolVersion.V311, ProtocolVersion.V5


def frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + body


def s(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


def connect_body(name: bytes = b"MQTT", level: int = 4, flags: int = 0x02) -> bytes:
    return s(name) + bytes((level, flags)) + b"\x00\x3c" + (b"\x00" if level == 5 else b"")


def decode(
    wire: bytes, version: ProtocolVersion | None = V311, server: bool = True, **kw: int
) -> list[object]:
    decoder = Decoder(version, server=server, **kw)
    decoder.receive_data(wire)
    return list(decoder.packets())


def raises(
    error: type[MQTTError],
    reason: int,
    wire: bytes,
    version: ProtocolVersion | None = V311,
    server: bool = True,
    match: str | None = None,
) -> MQTTError:
    with pytest.raises(error, match=match) as info:
        decode(wire, version, server)
    assert info.value.reason_code == reason
    return info.value


MALFORMED = ReasonCode.MALFORMED_PACKET
PROTOCOL = ReasonCode.PROTOCOL_ERROR


# -- fixed header ------------------------------------------------------------------------------


def test_remaining_length_of_five_bytes_is_malformed() -> None:
    raises(MalformedPacket, MALFORMED, b"\x30\xff\xff\xff\xff\x01", match="longer than 4 bytes")


def test_packet_too_large_is_refused_before_its_body_arrives() -> None:
    decoder = Decoder(V311, max_packet_size=50)
    decoder.receive_data(b"\x30\x64")  # announces 100 bytes, none have arrived
    with pytest.raises(PacketTooLarge) as info:
        decoder.next_packet()
    assert info.value.reason_code == ReasonCode.PACKET_TOO_LARGE == 0x95
    assert (info.value.size, info.value.maximum) == (102, 50)
    assert isinstance(info.value, MalformedPacket)


def test_packet_exactly_at_the_maximum_is_accepted() -> None:
    wire = encode_publish("t", b"x" * 10)
    assert decode(wire, max_packet_size=len(wire)) == [Publish("t", b"x" * 10)]


@pytest.mark.parametrize(
    "wire",
    [
        b"\x41\x02\x00\x01",  # PUBACK with flags 1
        b"\x60\x02\x00\x01",  # PUBREL needs flags 2
        b"\x80\x06\x00\x01\x00\x01a\x00",  # SUBSCRIBE needs flags 2
        b"\xa0\x05\x00\x01\x00\x01a",  # UNSUBSCRIBE needs flags 2
        b"\xc1\x00",  # PINGREQ with flags
        b"\xe8\x00",  # DISCONNECT with flags
    ],
)
def test_reserved_fixed_header_flags_are_malformed(wire: bytes) -> None:
    raises(MalformedPacket, MALFORMED, wire, match="reserved fixed header flags")


def test_packet_type_zero_is_malformed() -> None:
    raises(MalformedPacket, MALFORMED, b"\x00\x00", match="type 0")


def test_auth_before_mqtt5_is_malformed() -> None:
    raises(MalformedPacket, MALFORMED, b"\xf0\x00", match="AUTH")


def test_trailing_bytes_are_malformed() -> None:
    raises(MalformedPacket, MALFORMED, b"\xc0\x01\x00", match="1 unexpected bytes")
    raises(MalformedPacket, MALFORMED, b"\x40\x03\x00\x01\x00", V311, match="unexpected")


# -- PUBLISH -------------------------------------------------------------------------------


def test_invalid_utf8_topic_is_malformed() -> None:
    raises(MalformedPacket, MALFORMED, frame(0x30, s(b"a\xff") + b"x"), match="not valid UTF-8")


def test_null_character_in_topic_is_malformed() -> None:
    raises(MalformedPacket, MALFORMED, frame(0x30, s(b"a\x00b")), match="U\\+0000")


@pytest.mark.parametrize("char", ["\x01", "\x1f", "\x7f", "\x85", "\ufffe"])
def test_mqtt311_disallowed_code_points_are_malformed(char: str) -> None:
    wire = frame(0x30, s(f"a{char}b".encode()))
    raises(MalformedPacket, MALFORMED, wire, V311, match="disallowed code point")
    assert decode(frame(0x30, s(f"a{char}b".encode()) + b"\x00"), V5) == [Publish(f"a{char}b", b"")]


@pytest.mark.parametrize("topic", [b"a/+", b"#", b"a/#/b", b"+"])
def test_wildcards_in_publish_topic_are_topic_name_invalid(topic: bytes) -> None:
    raises(ProtocolError, ReasonCode.TOPIC_NAME_INVALID, frame(0x30, s(topic)), match="wildcard")


def test_qos_3_publish_is_malformed() -> None:
    raises(MalformedPacket, MALFORMED, frame(0x36, s(b"t") + b"\x00\x01"), match="QoS 3")


def test_qos0_publish_with_dup_is_malformed() -> None:
    raises(MalformedPacket, MALFORMED, frame(0x38, s(b"t")), match="DUP")


def test_packet_id_zero_is_a_protocol_error() -> None:
    raises(ProtocolError, PROTOCOL, frame(0x32, s(b"t") + b"\x00\x00"), match="identifier 0")
    raises(ProtocolError, PROTOCOL, b"\x40\x02\x00\x00", match="identifier 0")
    raises(ProtocolError, PROTOCOL, frame(0x82, b"\x00\x00" + s(b"a") + b"\x00"))


def test_empty_topic_needs_a_topic_alias() -> None:
    raises(ProtocolError, ReasonCode.TOPIC_NAME_INVALID, frame(0x30, s(b"")), V311)
    raises(ProtocolError, ReasonCode.TOPIC_NAME_INVALID, frame(0x30, s(b"") + b"\x00"), V5)
    aliased = decode(frame(0x30, s(b"") + b"\x03\x23\x00\x07" + b"hi"), V5)
    assert aliased == [Publish("", b"hi", properties=Properties(topic_alias=7))]


def test_publish_before_connect_is_a_protocol_error() -> None:
    raises(ProtocolError, PROTOCOL, encode_publish("t", b""), None, match="before CONNECT")


def test_publish_topic_past_the_end_is_malformed() -> None:
    raises(MalformedPacket, MALFORMED, frame(0x30, b"\x00\x09ab"), match="past the end")


# -- CONNECT ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "level"),
    [(b"MQTT", 3), (b"MQIsdp", 4), (b"MQIsdp", 5), (b"MQTT", 6), (b"MQTT", 0), (b"MQTX", 4)],
)
def test_unsupported_protocol_gives_reason_0x84(name: bytes, level: int) -> None:
    wire = frame(0x10, connect_body(name, level) + s(b"c"))
    error = raises(ProtocolError, ReasonCode.UNSUPPORTED_PROTOCOL_VERSION, wire, None)
    assert error.reason_code == 0x84


@pytest.mark.parametrize(
    ("name", "level", "version"), [(b"MQIsdp", 3, V31), (b"MQTT", 4, V311), (b"MQTT", 5, V5)]
)
def test_each_protocol_name_and_level_is_understood(
    name: bytes, level: int, version: ProtocolVersion
) -> None:
    decoder = Decoder()
    decoder.receive_data(frame(0x10, connect_body(name, level) + s(b"client")))
    assert decoder.next_packet() == Connect("client", version, keepalive=60)
    assert decoder.version == version


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (0x03, "reserved flag"),
        (0x08, "without the will flag"),
        (0x20, "without the will flag"),
        (0x1E, "will QoS 3"),
        (0x42, "password flag set without the user name"),
    ],
)
def test_connect_flag_rules(flags: int, message: str) -> None:
    wire = frame(0x10, connect_body(flags=flags) + s(b"c") + s(b"w") + s(b"p") + s(b"x"))
    raises(MalformedPacket, MALFORMED, wire, None, match=message)


def test_mqtt5_allows_a_password_without_a_user_name() -> None:
    packet = Connect("c", V5, password=b"secret")
    assert decode(encode(packet, V5), None) == [packet]


def test_will_topic_with_wildcard_is_topic_name_invalid() -> None:
    wire = frame(0x10, connect_body(flags=0x06) + s(b"c") + s(b"w/#") + s(b"bye"))
    raises(ProtocolError, ReasonCode.TOPIC_NAME_INVALID, wire, None)


def test_second_connect_is_a_protocol_error() -> None:
    wire = encode(Connect("c"), V311)
    raises(ProtocolError, PROTOCOL, wire + wire, None, match="second CONNECT")


def test_packets_in_the_wrong_direction_are_protocol_errors() -> None:
    raises(ProtocolError, PROTOCOL, encode(ConnAck(), V311), V311, server=True, match="server")
    raises(ProtocolError, PROTOCOL, encode(PingReq(), V311), V311, server=False, match="client")


# -- properties ------------------------------------------------------------------------------


def test_duplicate_property_is_a_protocol_error() -> None:
    props = b"\x04\x01\x01\x01\x00"  # payload format indicator twice
    raises(ProtocolError, PROTOCOL, frame(0x30, s(b"t") + props), V5, match="more than once")


def test_repeated_user_properties_and_subscription_ids_in_publish_are_fine() -> None:
    props = Properties(user_properties=(("a", "1"), ("a", "2")), subscription_identifiers=(1, 9))
    packet = Publish("t", b"", properties=props)
    assert decode(encode(packet, V5), V5, server=False) == [packet]


def test_two_subscription_ids_in_subscribe_are_a_protocol_error() -> None:
    body = b"\x00\x01" + b"\x04\x0b\x01\x0b\x02" + s(b"a") + b"\x00"
    raises(ProtocolError, PROTOCOL, frame(0x82, body), V5, match="more than once")


def test_property_not_allowed_in_packet_is_malformed() -> None:
    props = b"\x03\x23\x00\x01"  # topic alias in SUBSCRIBE
    raises(MalformedPacket, MALFORMED, frame(0x82, b"\x00\x01" + props + s(b"a") + b"\x00"), V5)


def test_unknown_property_is_malformed() -> None:
    raises(MalformedPacket, MALFORMED, frame(0x30, s(b"t") + b"\x02\x7f\x00"), V5, match="unknown")


def test_out_of_range_property_values_are_protocol_errors() -> None:
    raises(ProtocolError, PROTOCOL, frame(0x30, s(b"t") + b"\x02\x01\x02"), V5, match="0 or 1")
    raises(ProtocolError, PROTOCOL, frame(0x30, s(b"t") + b"\x02\x0b\x00"), V5, match="0")
    raises(
        ProtocolError,
        ReasonCode.TOPIC_ALIAS_INVALID,
        frame(0x30, s(b"t") + b"\x03\x23\x00\x00"),
        V5,
    )
    connect = s(b"MQTT") + b"\x05\x02\x00\x3c" + b"\x03\x21\x00\x00" + s(b"c")
    raises(ProtocolError, PROTOCOL, frame(0x10, connect), None, match="receive_maximum")


def test_properties_running_past_the_packet_are_malformed() -> None:
    raises(MalformedPacket, MALFORMED, frame(0x30, s(b"t") + b"\x09\x02\x00"), V5)


# -- SUBSCRIBE / UNSUBSCRIBE / acks ------------------------------------------------------------


def test_empty_subscribe_is_a_protocol_error() -> None:
    raises(ProtocolError, PROTOCOL, frame(0x82, b"\x00\x01"), V311, match="no topic filters")
    raises(ProtocolError, PROTOCOL, frame(0x82, b"\x00\x01\x00"), V5, match="no topic filters")


def test_empty_unsubscribe_is_a_protocol_error() -> None:
    raises(ProtocolError, PROTOCOL, frame(0xA2, b"\x00\x01"), V311, match="no topic filters")


def test_subscribe_option_rules() -> None:
    raises(MalformedPacket, MALFORMED, frame(0x82, b"\x00\x01" + s(b"a") + b"\x03"), V311)
    raises(MalformedPacket, MALFORMED, frame(0x82, b"\x00\x01" + s(b"a") + b"\x04"), V311)
    raises(ProtocolError, PROTOCOL, frame(0x82, b"\x00\x01\x00" + s(b"a") + b"\x30"), V5)
    raises(MalformedPacket, MALFORMED, frame(0x82, b"\x00\x01\x00" + s(b"a") + b"\x40"), V5)


def test_invalid_reason_codes_are_malformed() -> None:
    raises(MalformedPacket, MALFORMED, b"\x40\x03\x00\x01\x05", V5, match="reason code 0x05")
    raises(MalformedPacket, MALFORMED, b"\x90\x03\x00\x01\x03", V311, server=False)


def test_v5_ack_short_forms() -> None:
    assert decode(b"\x40\x02\x00\x07", V5) == [PubAck(7)]
    assert decode(b"\x40\x03\x00\x07\x10", V5) == [PubAck(7, 0x10)]
    assert decode(b"\xe0\x00\xe0\x01\x04", V5) == [
        decode(b"\xe0\x00", V5)[0],
        decode(b"\xe0\x01\x04", V5)[0],
    ]


# -- encoding --------------------------------------------------------------------------------


def test_known_wire_bytes() -> None:
    assert encode(PingReq(), V311) == b"\xc0\x00"
    assert encode_publish("a/b", b"hi") == b"\x30\x07\x00\x03a/bhi"
    assert encode_publish("a", b"", 1, True, True, 258) == b"\x3b\x05\x00\x01a\x01\x02"
    assert encode(Connect("c", keepalive=10), V311) == (
        b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x0a\x00\x01c"
    )
    assert encode(Connect("c", V31, clean_start=False), V31)[:12] == (
        b"\x10\x0f\x00\x06MQIsdp\x03\x00"
    )
    assert encode(ConnAck(True), V311) == b"\x20\x02\x01\x00"
    assert encode(PubAck(5), V5) == b"\x40\x02\x00\x05"


def test_long_remaining_lengths() -> None:
    for size in (120, 200, 20_000, 3_000_000):
        packet = Publish("t", b"x" * size, 1, packet_id=3)
        for version in (V311, V5):
            assert decode(encode(packet, version), version) == [packet]


def test_encoding_drops_what_mqtt311_cannot_carry() -> None:
    assert encode(PubAck(1, 0x80, Properties(reason_string="no")), V311) == b"\x40\x02\x00\x01"
    assert encode(ConnAck(False, ReasonCode.BAD_USER_NAME_OR_PASSWORD), V311) == (
        b"\x20\x02\x00\x04"
    )
    assert encode(ConnAck(False, ReasonCode.UNSUPPORTED_PROTOCOL_VERSION), V311)[-1] == 1
    assert encode(SubAck(1, (1, 0x87)), V311) == b"\x90\x04\x00\x01\x01\x80"
    assert encode(UnsubAck(1, (0x11,)), V311) == b"\xb0\x02\x00\x01"


def test_connack_return_codes_decode_to_v5_reason_codes() -> None:
    assert decode(b"\x20\x02\x00\x05", V311, server=False) == [
        ConnAck(False, ReasonCode.NOT_AUTHORIZED)
    ]


@pytest.mark.parametrize(
    ("packet", "version", "message"),
    [
        (Auth(), V311, "AUTH"),
        (Publish("t", b"", 1), V311, "packet identifier None"),
        (Publish("t", b"", 0, dup=True), V311, "DUP"),
        (PubAck(0), V5, "outside"),
        (Subscribe(1, ()), V311, "no topic filters"),
        (Connect("c", password=b"p"), V311, "user name"),
        (Publish("t", b"", properties=Properties(session_expiry_interval=1)), V5, "not allowed"),
        (
            Subscribe(1, (Subscription("a", 1),), Properties(message_expiry_interval=1)),
            V5,
            "in SUBSCRIBE",
        ),
        (Publish("t", b"", properties=Properties(topic_alias=70_000)), V5, "out of range"),
    ],
)
def test_unencodable_packets_raise_local_protocol_error(
    packet: object, version: ProtocolVersion, message: str
) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        encode(packet, version)  # type: ignore[arg-type]


def test_no_properties_is_the_shared_empty_value() -> None:
    assert NO_PROPERTIES == Properties()
    assert repr(Properties(topic_alias=3)) == "Properties(topic_alias=3)"


@pytest.mark.parametrize(
    "packet",
    [
        ConnAck(False, 300),
        PubAck(1, 256, Properties(reason_string="x")),
        SubAck(1, (999,)),
        Publish("bad\ud800", b""),
        Connect("c", keepalive=70_000),
    ],
)
def test_out_of_range_fields_raise_local_protocol_error(packet: object) -> None:
    with pytest.raises(LocalProtocolError, match="out of range"):
        encode(packet, V5)  # type: ignore[arg-type]


def test_changing_the_version_forgets_topics_validated_under_the_old_rules() -> None:
    wire = frame(0x30, s(b"a\x01") + b"\x00")
    decoder = Decoder(V5)
    decoder.receive_data(wire)
    assert decoder.next_packet() == Publish("a\x01", b"")
    decoder.version = V311
    decoder.receive_data(frame(0x30, s(b"a\x01")))
    with pytest.raises(MalformedPacket, match="U\\+0001"):
        decoder.next_packet()


def test_errors_keep_their_data_through_pickling() -> None:
    import pickle

    error = ProtocolError("topic alias 9 was never set", ReasonCode.TOPIC_ALIAS_INVALID)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.message, copy.reason_code) == (error.message, 0x94)
    too_large = pickle.loads(pickle.dumps(PacketTooLarge(10, 5)))
    assert (too_large.size, too_large.maximum, too_large.reason_code) == (10, 5, 0x95)
    assert str(too_large) == "packet of 10 bytes exceeds the maximum packet size of 5"
