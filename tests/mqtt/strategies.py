"""Hypothesis strategies for MQTT packets that a given protocol version can carry."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from hedgerow.mqtt import packets as p
from hedgerow.mqtt.codec import VALID_REASON_CODES
from hedgerow.mqtt.properties import AUTH as T_AUTH
from hedgerow.mqtt.properties import (
    BINARY,
    BYTE,
    FLAG,
    FOUR,
    PAIR,
    PROPERTY_TABLE,
    PUBLISH,
    TWO,
    UTF8,
    VARINT,
)
from hedgerow.mqtt.properties import CONNACK as T_CONNACK
from hedgerow.mqtt.properties import CONNECT as T_CONNECT
from hedgerow.mqtt.properties import DISCONNECT as T_DISCONNECT
from hedgerow.mqtt.properties import PUBACK as T_PUBACK
from hedgerow.mqtt.properties import PUBCOMP as T_PUBCOMP
from hedgerow.mqtt.properties import PUBREC as T_PUBREC
from hedgerow.mqtt.properties import PUBREL as T_PUBREL
from hedgerow.mqtt.properties import SUBACK as T_SUBACK
from hedgerow.mqtt.properties import SUBSCRIBE as T_SUBSCRIBE
from hedgerow.mqtt.properties import UNSUBACK as T_UNSUBACK
from hedgerow.mqtt.properties import UNSUBSCRIBE as T_UNSUBSCRIBE
from hedgerow.mqtt.properties import WILL as T_WILL

V31, V311, V5 = p.ProtocolVersion.V31, p.ProtocolVersion.V311, p.ProtocolVersion.V5
VERSIONS = (V31, V311, V5)

# Text any MQTT version accepts: no controls, surrogates or unassigned code points.
text = st.text(st.characters(exclude_categories=("Cc", "Cs", "Cn", "Co")), max_size=12)
level = st.text(
    st.characters(exclude_categories=("Cc", "Cs", "Cn", "Co"), exclude_characters="/+#"),
    max_size=5,
)
topic_names = st.lists(level, min_size=1, max_size=4).map("/".join).filter(bool)
topic_filters = (
    st.lists(st.one_of(level, st.just("+")), min_size=1, max_size=4)
    .flatmap(lambda levels: st.sampled_from(["/".join(levels), "/".join([*levels, "#"])]))
    .filter(bool)
)
blobs = st.binary(max_size=20)
packet_ids = st.integers(1, 0xFFFF)


def _value(name: str, kind: int, packet_type: int) -> st.SearchStrategy[Any]:
    if kind == BYTE:
        return st.integers(0, 1)
    if kind == FLAG:
        return st.booleans()
    if kind == TWO:
        return st.integers(1, 0xFFFF)
    if kind == FOUR:
        return st.integers(1, 0xFFFFFFFF)
    if kind == VARINT:
        most = 3 if packet_type == PUBLISH else 1
        return st.lists(st.integers(1, 268_435_455), min_size=1, max_size=most).map(tuple)
    if kind == UTF8:
        return text
    if kind == BINARY:
        return blobs
    assert kind == PAIR
    return st.lists(st.tuples(text, text), min_size=1, max_size=3).map(tuple)


def properties(packet_type: int) -> st.SearchStrategy[p.Properties]:
    optional = {
        name: _value(name, kind, packet_type)
        for name, kind, allowed in PROPERTY_TABLE.values()
        if packet_type in allowed
    }
    return st.fixed_dictionaries({}, optional=optional).map(lambda d: p.Properties(**d))


def _props(version: p.ProtocolVersion, packet_type: int) -> st.SearchStrategy[p.Properties]:
    return properties(packet_type) if version == V5 else st.just(p.NO_PROPERTIES)


def _codes(version: p.ProtocolVersion, packet_type: int) -> st.SearchStrategy[int]:
    if version == V5:
        return st.sampled_from(sorted(VALID_REASON_CODES[packet_type]))
    return st.just(0)


def wills(version: p.ProtocolVersion) -> st.SearchStrategy[p.Will]:
    return st.builds(
        p.Will, topic_names, blobs, st.integers(0, 2), st.booleans(), _props(version, T_WILL)
    )


def connects(version: p.ProtocolVersion) -> st.SearchStrategy[p.Connect]:
    def build(draw: Any) -> p.Connect:
        username = draw(st.none() | text)
        password = draw(st.none() | blobs)
        if version != V5 and username is None:
            password = None
        return p.Connect(
            client_id=draw(text),
            version=version,
            clean_start=draw(st.booleans()),
            keepalive=draw(st.integers(0, 0xFFFF)),
            username=username,
            password=password,
            will=draw(st.none() | wills(version)),
            properties=draw(_props(version, T_CONNECT)),
        )

    return st.composite(lambda draw: build(draw))()


def connacks(version: p.ProtocolVersion) -> st.SearchStrategy[p.ConnAck]:
    codes = (
        _codes(version, T_CONNACK)
        if version == V5
        else st.sampled_from([0x00, 0x84, 0x85, 0x88, 0x86, 0x87])
    )
    present = st.just(False) if version == V31 else st.booleans()
    return st.builds(p.ConnAck, present, codes, _props(version, T_CONNACK))


def publishes(version: p.ProtocolVersion) -> st.SearchStrategy[p.Publish]:
    def build(qos: int, dup: bool, **kw: Any) -> p.Publish:
        packet_id = kw.pop("packet_id")
        return p.Publish(qos=qos, dup=dup and qos > 0, packet_id=packet_id if qos else None, **kw)

    return st.builds(
        build,
        qos=st.integers(0, 2),
        dup=st.booleans(),
        topic=topic_names,
        payload=st.binary(max_size=200),
        retain=st.booleans(),
        packet_id=packet_ids,
        properties=_props(version, PUBLISH),
    )


def _ack(cls: Any, version: p.ProtocolVersion, kind: int) -> st.SearchStrategy[Any]:
    return st.builds(cls, packet_ids, _codes(version, kind), _props(version, kind))


subscriptions_v5 = st.builds(
    p.Subscription,
    topic_filters,
    st.integers(0, 2),
    st.booleans(),
    st.booleans(),
    st.integers(0, 2),
)
subscriptions_v3 = st.builds(p.Subscription, topic_filters, st.integers(0, 2))


def server_bound(version: p.ProtocolVersion) -> st.SearchStrategy[p.Packet]:
    """Packets a client sends (a server decodes), CONNECT excluded."""
    subs = subscriptions_v5 if version == V5 else subscriptions_v3
    choices: list[st.SearchStrategy[Any]] = [
        publishes(version),
        _ack(p.PubAck, version, T_PUBACK),
        _ack(p.PubRec, version, T_PUBREC),
        _ack(p.PubRel, version, T_PUBREL),
        _ack(p.PubComp, version, T_PUBCOMP),
        st.builds(
            p.Subscribe,
            packet_ids,
            st.lists(subs, min_size=1, max_size=3).map(tuple),
            _props(version, T_SUBSCRIBE),
        ),
        st.builds(
            p.Unsubscribe,
            packet_ids,
            st.lists(topic_filters, min_size=1, max_size=3).map(tuple),
            _props(version, T_UNSUBSCRIBE),
        ),
        st.just(p.PingReq()),
        st.builds(p.Disconnect, _codes(version, T_DISCONNECT), _props(version, T_DISCONNECT)),
    ]
    if version == V5:
        choices.append(st.builds(p.Auth, _codes(version, T_AUTH), _props(version, T_AUTH)))
    return st.one_of(choices)


def client_bound(version: p.ProtocolVersion) -> st.SearchStrategy[p.Packet]:
    """Packets a server sends (a client decodes)."""
    suback_codes = (
        st.sampled_from(sorted(VALID_REASON_CODES[T_SUBACK]))
        if version == V5
        else st.sampled_from([0, 1, 2, 0x80])
    )
    unsuback = (
        st.builds(
            p.UnsubAck,
            packet_ids,
            st.lists(_codes(version, T_UNSUBACK), min_size=1, max_size=3).map(tuple),
            _props(version, T_UNSUBACK),
        )
        if version == V5
        else st.builds(p.UnsubAck, packet_ids)
    )
    return st.one_of(
        connacks(version),
        publishes(version),
        _ack(p.PubAck, version, T_PUBACK),
        _ack(p.PubRec, version, T_PUBREC),
        _ack(p.PubRel, version, T_PUBREL),
        _ack(p.PubComp, version, T_PUBCOMP),
        st.builds(
            p.SubAck,
            packet_ids,
            st.lists(suback_codes, min_size=1, max_size=4).map(tuple),
            _props(version, T_SUBACK),
        ),
        unsuback,
        st.just(p.PingResp()),
    )
