"""QoS flows, packet ids and topic aliases, with two sides joined directly (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedgerow.mqtt import (
    InboundAliases,
    InboundFlows,
    LocalProtocolError,
    OutboundAliases,
    OutboundFlows,
    PacketIds,
    Properties,
    ProtocolError,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
)


def test_packet_ids_cycle_and_skip_ids_in_use() -> None:
    ids = PacketIds()
    assert [ids.allocate() for _ in range(3)] == [1, 2, 3]
    ids.release(2)
    assert ids.allocate() == 4
    assert 2 not in ids and 3 in ids
    assert len(ids) == 3


def test_packet_ids_wrap_around_and_run_out() -> None:
    ids = PacketIds()
    for expected in range(1, 65536):
        assert ids.allocate() == expected
    with pytest.raises(LocalProtocolError, match="65535"):
        ids.allocate()
    ids.release(7)
    assert ids.allocate() == 7


def test_packet_ids_claim() -> None:
    ids = PacketIds()
    ids.claim(1)
    assert ids.allocate() == 2
    with pytest.raises(LocalProtocolError) as info:
        ids.claim(2)
    assert info.value.reason_code == ReasonCode.PACKET_IDENTIFIER_IN_USE


def test_qos0_passes_through_without_an_id() -> None:
    out = OutboundFlows()
    message = Publish("t", b"x")
    assert out.start(message) is message
    assert out.inflight == 0


def test_qos1_flow() -> None:
    out, inbound = OutboundFlows(), InboundFlows()
    sent = out.start(Publish("t", b"x", 1))
    assert sent.packet_id == 1 and out.inflight == 1
    deliver, ack = inbound.on_publish(sent)
    assert deliver and ack == PubAck(1)
    assert out.on_puback(1) == sent
    assert out.inflight == 0
    with pytest.raises(ProtocolError) as info:
        out.on_puback(1)
    assert info.value.reason_code == ReasonCode.PACKET_IDENTIFIER_NOT_FOUND


def test_qos2_flow_delivers_exactly_once() -> None:
    out, inbound = OutboundFlows(), InboundFlows()
    sent = out.start(Publish("t", b"x", 2))
    assert inbound.on_publish(sent) == (True, PubRec(1))
    # the sender lost the PUBREC and sends again: acknowledged, not delivered again
    assert inbound.on_publish(out.resend()[0]) == (False, PubRec(1))
    release = out.on_pubrec(1)
    assert release == PubRel(1)
    assert out.resend() == [PubRel(1)]
    assert inbound.on_pubrel(1) == PubComp(1)
    assert inbound.on_pubrel(1) == PubComp(1, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND)
    assert out.on_pubcomp(1) is None
    assert out.inflight == 0
    assert inbound.on_publish(sent) == (True, PubRec(1))  # a new message reusing id 1


def test_pubrec_failure_ends_the_flow() -> None:
    out = OutboundFlows()
    out.start(Publish("t", b"x", 2))
    assert out.on_pubrec(1, ReasonCode.QUOTA_EXCEEDED) is None
    assert out.inflight == 0
    assert 1 not in out.ids


def test_acks_of_the_wrong_kind_are_protocol_errors() -> None:
    out = OutboundFlows()
    out.start(Publish("t", b"x", 1))
    out.start(Publish("t", b"x", 2))
    with pytest.raises(ProtocolError, match="not QoS 2"):
        out.on_pubrec(1)
    with pytest.raises(ProtocolError, match="not QoS 1"):
        out.on_puback(2)
    with pytest.raises(ProtocolError, match="before PUBREC"):
        out.on_pubcomp(2)
    with pytest.raises(ProtocolError, match="not in flight"):
        out.on_pubcomp(9)


def test_receive_maximum_limits_sending() -> None:
    out = OutboundFlows(receive_maximum=2)
    out.start(Publish("t", b"1", 1))
    out.start(Publish("t", b"2", 2))
    assert not out.can_send()
    with pytest.raises(LocalProtocolError) as info:
        out.start(Publish("t", b"3", 1))
    assert info.value.reason_code == ReasonCode.RECEIVE_MAXIMUM_EXCEEDED
    out.start(Publish("t", b"qos0"))
    out.on_puback(1)
    assert out.can_send()


def test_inbound_receive_maximum_exceeded() -> None:
    inbound = InboundFlows(receive_maximum=1)
    inbound.on_publish(Publish("t", b"", 2, packet_id=1))
    with pytest.raises(ProtocolError) as info:
        inbound.on_publish(Publish("t", b"", 2, packet_id=2))
    assert info.value.reason_code == ReasonCode.RECEIVE_MAXIMUM_EXCEEDED
    assert inbound.awaiting_release() == frozenset({1})


def test_resend_keeps_original_order_with_dup() -> None:
    out = OutboundFlows()
    first = out.start(Publish("a", b"", 2))
    second = out.start(Publish("b", b"", 1))
    third = out.start(Publish("c", b"", 2))
    out.on_pubrec(first.packet_id or 0)
    resent = out.resend()
    assert resent == [PubRel(1), _dup(second), _dup(third)]


def _dup(p: Publish) -> Publish:
    return Publish(p.topic, p.payload, p.qos, p.retain, True, p.packet_id, p.properties)


def test_restore_a_stored_session() -> None:
    out = OutboundFlows()
    out.restore(Publish("a", b"", 1, packet_id=5))
    out.restore(PubRel(6))
    assert out.start(Publish("b", b"", 1)).packet_id == 1
    assert [getattr(p, "topic", None) for p in out.pending()] == ["a", None, "b"]
    out.on_pubcomp(6)
    assert out.on_puback(5).topic == "a"


@given(st.lists(st.sampled_from(["send1", "send2", "ack"]), max_size=60))
@settings(max_examples=80, deadline=None)
def test_two_sides_joined_deliver_each_message_once(steps: list[str]) -> None:
    """A sender and a receiver exchanging packets in memory; acks delivered in order."""
    out, inbound = OutboundFlows(receive_maximum=5), InboundFlows(receive_maximum=5)
    to_receiver: list[Publish | PubRel] = []
    delivered: list[bytes] = []
    sent: list[bytes] = []
    for number, step in enumerate(steps):
        if step.startswith("send") and out.can_send():
            payload = str(number).encode()
            to_receiver.append(out.start(Publish("t", payload, int(step[-1]))))
            sent.append(payload)
        elif step == "ack" and to_receiver:
            packet = to_receiver.pop(0)
            if isinstance(packet, Publish):
                deliver, ack = inbound.on_publish(packet)
                if deliver:
                    delivered.append(packet.payload)
                if isinstance(ack, PubAck):
                    out.on_puback(ack.packet_id)
                elif isinstance(ack, PubRec):
                    release = out.on_pubrec(ack.packet_id)
                    assert release is not None
                    to_receiver.append(release)
            else:
                out.on_pubcomp(inbound.on_pubrel(packet.packet_id).packet_id)
        assert out.inflight <= 5
    while to_receiver:  # drain: everything completes
        packet = to_receiver.pop(0)
        if isinstance(packet, Publish):
            deliver, ack = inbound.on_publish(packet)
            if deliver:
                delivered.append(packet.payload)
            if isinstance(ack, PubAck):
                out.on_puback(ack.packet_id)
            elif isinstance(ack, PubRec):
                to_receiver.append(out.on_pubrec(ack.packet_id) or PubRel(0))
        else:
            out.on_pubcomp(inbound.on_pubrel(packet.packet_id).packet_id)
    assert delivered == sent
    assert out.inflight == 0 and inbound.inflight == 0


# -- topic aliases ---------------------------------------------------------------------------


def _aliased(topic: str, alias: int | None) -> Publish:
    return Publish(topic, b"", properties=Properties(topic_alias=alias))


def test_inbound_aliases() -> None:
    aliases = InboundAliases(maximum=2)
    assert aliases.resolve(Publish("plain", b"")) == "plain"
    assert aliases.resolve(_aliased("a/b", 1)) == "a/b"
    assert aliases.resolve(_aliased("", 1)) == "a/b"
    assert aliases.resolve(_aliased("c", 1)) == "c"
    assert aliases.resolve(_aliased("", 1)) == "c"
    for bad in (_aliased("", 2), _aliased("x", 3), _aliased("x", 0)):
        with pytest.raises(ProtocolError) as info:
            aliases.resolve(bad)
        assert info.value.reason_code == ReasonCode.TOPIC_ALIAS_INVALID
    with pytest.raises(ProtocolError) as empty:
        aliases.resolve(Publish("", b""))
    assert empty.value.reason_code == ReasonCode.TOPIC_NAME_INVALID


def test_inbound_aliases_disabled_when_maximum_is_zero() -> None:
    with pytest.raises(ProtocolError):
        InboundAliases(0).resolve(_aliased("a", 1))


def test_outbound_aliases_round_trip_through_inbound() -> None:
    out, inbound = OutboundAliases(maximum=2), InboundAliases(maximum=2)
    topics = ["a", "b", "a", "c", "b", "c", "a"]
    sent = [out.apply(Publish(topic, b"")) for topic in topics]
    assert [p.properties.topic_alias for p in sent] == [1, 2, 1, None, 2, None, 1]
    assert [p.topic for p in sent] == ["a", "b", "", "c", "", "c", ""]
    assert [inbound.resolve(p) for p in sent] == topics
