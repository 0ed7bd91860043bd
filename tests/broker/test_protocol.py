"""The broker's per-connection protocol rules, without sockets, event loop or sleeps.

``ClientProtocol`` is fed decoded packets, ``now`` and the authenticator's and
authorizer's verdicts; its answers (CONNACK, SUBACK, UNSUBACK, deadlines) are checked
as they would go on the wire: encoded for the client's version and decoded again by a
client-side ``Decoder`` (the two ends of the codec joined).
"""

from __future__ import annotations

from typing import cast

import pytest

from hedgerow.broker.config import BrokerConfig
from hedgerow.broker.protocol import (
    Accepted,
    Authenticate,
    ClientProtocol,
    Phase,
    PhaseError,
    Refusal,
)
from hedgerow.clock import ManualClock
from hedgerow.mqtt.codec import Decoder, encode
from hedgerow.mqtt.errors import ProtocolError
from hedgerow.mqtt.packets import (
    ConnAck,
    Connect,
    Packet,
    Properties,
    ProtocolVersion,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
)
from hedgerow.mqtt.reasons import ReasonCode

V5 = ProtocolVersion.V5
V311 = ProtocolVersion.V311
V31 = ProtocolVersion.V31


def on_the_wire(packet: Packet, version: ProtocolVersion) -> Packet:
    """What the client decodes from the broker's bytes for ``packet``."""
    decoder = Decoder(version=version, server=False)
    decoder.receive_data(encode(packet, version))
    got = decoder.next_packet()
    assert got is not None
    return got


def connected(
    version: ProtocolVersion = V5,
    config: BrokerConfig | None = None,
    now: float = 100.0,
    **connect: object,
) -> tuple[ClientProtocol, Accepted]:
    proto = ClientProtocol(config or BrokerConfig(), now)
    step = proto.receive_connect(Connect("c1", version, **connect), now)  # type: ignore[arg-type]
    assert isinstance(step, Authenticate)
    assert proto.authenticated("alice", None) is None
    return proto, proto.accept(False, step.assigned, now)


def refused_by_authenticator(
    version: ProtocolVersion, code: int, *, silent: bool = False
) -> Refusal:
    proto = ClientProtocol(BrokerConfig(), 0.0)
    assert isinstance(proto.receive_connect(Connect("c1", version), 0.0), Authenticate)
    assert proto.phase is Phase.AUTHENTICATING
    refusal = proto.refuse(code, "because", silent=silent)
    assert proto.phase is Phase.CLOSED
    return refusal


def return_code(ack: ConnAck, version: ProtocolVersion) -> int:
    """The CONNACK's return/reason code byte as sent (3.1.1: the return code)."""
    return encode(ack, version)[3]


# ---- CONNECT refusals: every reason code, 3.1.1 return codes and v5 reason codes ----------

# (v5 reason code, 3.1.1 return code) as the spec pairs them
AUTH_REFUSALS = [
    (ReasonCode.SERVER_UNAVAILABLE, 3),
    (ReasonCode.BAD_USER_NAME_OR_PASSWORD, 4),
    (ReasonCode.NOT_AUTHORIZED, 5),
]


@pytest.mark.parametrize(("code", "v311_code"), AUTH_REFUSALS)
def test_authenticator_refusal_codes_for_3_1_1_and_5(code: int, v311_code: int) -> None:
    v5 = refused_by_authenticator(V5, code)
    assert v5.connack is not None
    assert on_the_wire(v5.connack, V5) == ConnAck(
        False, code, Properties(reason_string="because")
    )  # a v5 client is told why
    old = refused_by_authenticator(V311, code)
    assert old.connack is not None
    assert return_code(old.connack, V311) == v311_code
    assert on_the_wire(old.connack, V311) == ConnAck(False, code)


def test_silent_refusal_sends_nothing_to_3_1_1_but_a_reason_to_v5() -> None:
    assert refused_by_authenticator(V311, ReasonCode.NOT_AUTHORIZED, silent=True).connack is None
    loud = refused_by_authenticator(V5, ReasonCode.NOT_AUTHORIZED, silent=True)
    assert loud.connack is not None and loud.connack.reason_code == ReasonCode.NOT_AUTHORIZED


def test_unsupported_protocol_level_is_refused_with_0x84_or_return_code_1() -> None:
    proto = ClientProtocol(BrokerConfig(), 0.0)
    step = proto.receive_connect(Connect("c1", cast(ProtocolVersion, 6)), 0.0)
    assert isinstance(step, Refusal)
    assert step.reason_code == ReasonCode.UNSUPPORTED_PROTOCOL_VERSION
    assert step.connack is not None
    assert return_code(step.connack, V311) == 1
    assert proto.phase is Phase.CLOSED


@pytest.mark.parametrize("version", [V31, V311])
def test_empty_client_id_without_clean_session_is_refused(version: ProtocolVersion) -> None:
    proto = ClientProtocol(BrokerConfig(), 0.0)
    step = proto.receive_connect(Connect("", version, clean_start=False), 0.0)
    assert isinstance(step, Refusal)
    assert step.reason_code == ReasonCode.CLIENT_IDENTIFIER_NOT_VALID
    assert step.connack is not None
    assert return_code(step.connack, version) == 2


def test_empty_client_id_refused_when_the_broker_allows_none() -> None:
    proto = ClientProtocol(BrokerConfig(allow_empty_client_id=False), 0.0)
    step = proto.receive_connect(Connect("", V311, clean_start=True), 0.0)
    assert isinstance(step, Refusal)
    assert step.reason_code == ReasonCode.CLIENT_IDENTIFIER_NOT_VALID


def test_empty_client_id_gets_one_3_1_1_silently_and_v5_told_in_connack() -> None:
    old = ClientProtocol(BrokerConfig(), 0.0)
    step = old.receive_connect(Connect("", V311, clean_start=True), 0.0)
    assert isinstance(step, Authenticate) and step.assigned is None
    assert step.client_id.startswith("hedgerow-") and old.client_id == step.client_id
    new = ClientProtocol(BrokerConfig(), 0.0)
    step = new.receive_connect(Connect("", V5, clean_start=False), 0.0)
    assert isinstance(step, Authenticate) and step.assigned == step.client_id
    assert new.authenticated("anyone", None) is None
    ack = new.accept(False, step.assigned, 0.0).connack
    assert ack.properties.assigned_client_identifier == step.client_id
    assert step.client_id != old.client_id


@pytest.mark.parametrize("version", [V311, V5])
def test_client_id_held_by_another_identity_is_refused_not_authorized(
    version: ProtocolVersion,
) -> None:
    proto = ClientProtocol(BrokerConfig(), 0.0)
    assert isinstance(proto.receive_connect(Connect("shared-id", version), 0.0), Authenticate)
    refusal = proto.authenticated("mallory", "alice")
    assert refusal is not None and refusal.reason_code == ReasonCode.NOT_AUTHORIZED
    assert "alice" in refusal.message and "mallory" in refusal.message
    assert refusal.connack is not None
    expected = 5 if version == V311 else ReasonCode.NOT_AUTHORIZED
    assert return_code(refusal.connack, version) == expected
    # the same identity takes its own session back
    again = ClientProtocol(BrokerConfig(), 0.0)
    assert isinstance(again.receive_connect(Connect("shared-id", version), 0.0), Authenticate)
    assert again.authenticated("alice", "alice") is None


# ---- CONNACK: session present, keep-alive cap, Server Keep Alive ---------------------------------


@pytest.mark.parametrize("version", [V311, V5])
@pytest.mark.parametrize("present", [False, True])
def test_session_present_reaches_the_client(version: ProtocolVersion, present: bool) -> None:
    proto = ClientProtocol(BrokerConfig(), 0.0)
    step = proto.receive_connect(Connect("c1", version, clean_start=False), 0.0)
    assert isinstance(step, Authenticate)
    assert proto.authenticated("alice", "alice") is None
    ack = proto.accept(present, None, 0.0).connack
    got = on_the_wire(ack, version)
    assert isinstance(got, ConnAck) and got.session_present is present and got.reason_code == 0
    assert proto.phase is Phase.CONNECTED


@pytest.mark.parametrize(
    ("asked", "in_force", "told"),
    [(120, 60, 60), (0, 60, 60), (60, 60, None), (30, 30, None)],
)
def test_keepalive_cap_and_server_keep_alive(asked: int, in_force: int, told: int | None) -> None:
    config = BrokerConfig(max_keepalive=60)
    proto, accepted = connected(V5, config, keepalive=asked)
    assert proto.keepalive == accepted.terms.keepalive == in_force
    got = on_the_wire(accepted.connack, V5)
    assert isinstance(got, ConnAck) and got.properties.server_keep_alive == told
    old, accepted = connected(V311, config, keepalive=asked)
    assert old.keepalive == in_force  # 3.1.1 cannot be told: the cap still holds
    assert encode(accepted.connack, V311) == b"\x20\x02\x00\x00"


def test_keepalive_uncapped_by_default() -> None:
    proto, accepted = connected(V5, keepalive=3600)
    assert proto.keepalive == 3600 and accepted.connack.properties.server_keep_alive is None


def test_connack_properties_tell_the_broker_limits() -> None:
    config = BrokerConfig(receive_maximum=50, topic_alias_maximum=7, max_packet_size=4096)
    _, accepted = connected(V5, config, properties=Properties(session_expiry_interval=0xFFFFFFFF))
    got = on_the_wire(accepted.connack, V5)
    assert isinstance(got, ConnAck)
    p = got.properties
    assert (p.receive_maximum, p.topic_alias_maximum, p.maximum_packet_size) == (50, 7, 4096)
    assert p.shared_subscription_available and p.wildcard_subscription_available


# ---- SUBSCRIBE / UNSUBSCRIBE --------------------------------------------------------------


def subscribe(
    proto: ClientProtocol,
    *filters: Subscription,
    allowed: set[str] | None = None,
    held: tuple[str, ...] = (),
    props: Properties | None = None,
) -> tuple[tuple[int, ...], list[str]]:
    asked: list[str] = []

    def authorize(topic_filter: str) -> bool:
        asked.append(topic_filter)
        return allowed is None or topic_filter in allowed

    decision = proto.check_subscribe(Subscribe(1, filters, props or Properties()), authorize, held)
    got = on_the_wire(decision.suback, proto.version)
    assert isinstance(got, SubAck) and got.packet_id == 1
    assert len(decision.granted) + len(decision.refused) == len(filters)
    return got.reason_codes, asked


def test_subscribe_grants_the_asked_qos() -> None:
    proto, _ = connected(V5)
    codes, _ = subscribe(
        proto, Subscription("a/+", 0), Subscription("b/#", 1), Subscription("c", 2)
    )
    assert codes == (0, 1, 2)


@pytest.mark.parametrize(("version", "code"), [(V5, 0x8F), (V311, 0x80)])
def test_invalid_filters_refused_and_never_shown_to_the_authorizer(
    version: ProtocolVersion, code: int
) -> None:
    proto, _ = connected(version)
    codes, asked = subscribe(
        proto,
        Subscription("a/#/b", 1),
        Subscription("a+", 1),
        Subscription("$share/g", 1),
        Subscription("$share/g+/x", 1),
        Subscription("ok", 1),
    )
    assert codes == (code, code, code, code, 1)
    assert asked == ["ok"]


@pytest.mark.parametrize(("version", "code"), [(V5, 0x87), (V311, 0x80)])
def test_authorizer_verdicts_become_reason_codes(version: ProtocolVersion, code: int) -> None:
    proto, _ = connected(version)
    decision = proto.check_subscribe(
        Subscribe(3, (Subscription("mine/#", 1), Subscription("theirs/#", 1))),
        lambda f: f.startswith("mine/"),
        (),
    )
    assert decision.suback.reason_codes == (1, code)
    assert [r.denied for r in decision.refused] == [True]


def test_shared_and_dollar_subscriptions() -> None:
    proto, _ = connected(V5)
    decision = proto.check_subscribe(
        Subscribe(
            1,
            (
                Subscription("$share/workers/jobs/#", 1),
                Subscription("$SYS/broker/#", 0),
                Subscription("$share/ops/$SYS/#", 0),
            ),
        ),
        lambda f: True,
        (),
    )
    assert decision.suback.reason_codes == (1, 0, 0)
    assert [g.group for g in decision.granted] == ["workers", None, "ops"]


def test_no_local_on_a_shared_subscription_breaks_the_protocol() -> None:
    proto, _ = connected(V5)
    with pytest.raises(ProtocolError):
        proto.check_subscribe(
            Subscribe(1, (Subscription("$share/g/t", 0, no_local=True),)), lambda f: True, ()
        )


@pytest.mark.parametrize(("version", "code"), [(V5, 0x97), (V311, 0x80)])
def test_subscription_quota(version: ProtocolVersion, code: int) -> None:
    proto, _ = connected(version, BrokerConfig(max_subscriptions=3))
    codes, _ = subscribe(
        proto,
        Subscription("held", 1),  # replaces one the session has: not counted again
        Subscription("new/1", 1),
        Subscription("new/1", 2),  # the same filter twice in one packet counts once
        Subscription("new/2", 1),
        held=("held", "old"),
    )
    assert codes == (1, 1, 2, code)


def test_subscription_identifier_is_carried_to_the_grants() -> None:
    proto, _ = connected(V5)
    decision = proto.check_subscribe(
        Subscribe(1, (Subscription("a", 0),), Properties(subscription_identifiers=(42,))),
        lambda f: True,
        (),
    )
    assert decision.identifier == 42


def test_unsuback_codes_v5_and_none_for_3_1_1() -> None:
    proto, _ = connected(V5)
    ack = proto.unsuback(Unsubscribe(9, ("a", "b")), [True, False])
    assert on_the_wire(ack, V5) == UnsubAck(9, (0x00, 0x11))
    old, _ = connected(V311)
    assert on_the_wire(old.unsuback(Unsubscribe(9, ("a", "b")), [True, False]), V311) == UnsubAck(
        9, ()
    )


# ---- phases ------------------------------------------------------------------------------


def test_packets_out_of_phase_are_refused() -> None:
    proto = ClientProtocol(BrokerConfig(), 0.0)
    with pytest.raises(PhaseError):
        proto.check_subscribe(Subscribe(1, (Subscription("a", 0),)), lambda f: True, ())
    with pytest.raises(PhaseError):
        proto.accept(False, None, 0.0)
    proto.receive_connect(Connect("c1", V311), 0.0)
    with pytest.raises(PhaseError):
        proto.receive_connect(Connect("c1", V311), 0.0)
    proto.close()
    with pytest.raises(PhaseError):
        proto.authenticated("alice", None)
    assert proto.phase is Phase.CLOSED


# ---- deadlines, with a clock that is advanced, not waited for ---------------------------------


@pytest.mark.parametrize("keepalive", [1, 10, 60])
def test_keepalive_expires_at_exactly_one_and_a_half_times(keepalive: int) -> None:
    clock = ManualClock(start=1000.0)
    proto, _ = connected(V5, now=clock.now(), keepalive=keepalive)
    clock.advance(keepalive * 1.5 - 0.001)
    assert not proto.overdue(clock.now())
    clock.advance(0.001)
    assert proto.deadline() == 1000.0 + keepalive * 1.5
    assert proto.overdue(clock.now())


def test_hearing_from_the_client_moves_the_keepalive_deadline() -> None:
    clock = ManualClock()
    proto, _ = connected(V311, now=clock.now(), keepalive=10)
    clock.advance(14)
    proto.heard(clock.now())
    clock.advance(14)
    assert not proto.overdue(clock.now())
    clock.advance(1)
    assert proto.overdue(clock.now())


def test_keepalive_zero_never_expires() -> None:
    proto, _ = connected(V5, keepalive=0)
    assert proto.deadline() is None and not proto.overdue(1e12)


def test_connect_timeout_counts_from_opening() -> None:
    clock = ManualClock()
    proto = ClientProtocol(BrokerConfig(connect_timeout=10.0), clock.now())
    clock.advance(9.999)
    assert not proto.overdue(clock.now())
    clock.advance(0.001)
    assert proto.overdue(clock.now())
    proto.receive_connect(Connect("c1", V5), clock.now())
    assert proto.deadline() is None  # authenticating: the authenticator has its own limits
