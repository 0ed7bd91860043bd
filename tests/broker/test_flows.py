"""Core MQTT flows through the broker, driven by a raw client (exact packets on the wire)."""

from __future__ import annotations

import asyncio
import time

import pytest

from hedgerow.broker import Action, Broker, BrokerConfig, ConnectInfo, Identity, Refused
from hedgerow.clock import ManualClock
from hedgerow.mqtt.errors import ProtocolError
from hedgerow.mqtt.packets import (
    ConnAck,
    Connect,
    Disconnect,
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
from hedgerow.mqtt.reasons import ReasonCode

from .conftest import RawClient, Running, eventually

V5 = ProtocolVersion.V5
V311 = ProtocolVersion.V311


async def subscribe(
    client: RawClient, *subs: Subscription, pid: int = 1, props: Properties | None = None
) -> SubAck:
    await client.send(Subscribe(pid, subs, props or Properties()))
    ack = await client.recv()
    assert isinstance(ack, SubAck) and ack.packet_id == pid
    return ack


async def test_qos_0_1_2_in_both_directions(running: Running) -> None:
    sub = await RawClient.connected(running.port, "sub")
    ack = await subscribe(sub, Subscription("t/#", 2))
    assert ack.reason_codes == (2,)
    pub = await RawClient.connected(running.port, "pub")
    await pub.send(Publish("t/0", b"zero"))
    await pub.send(Publish("t/1", b"one", qos=1, packet_id=7))
    assert await pub.recv() == PubAck(7)
    await pub.send(Publish("t/2", b"two", qos=2, packet_id=8))
    assert await pub.recv() == PubRec(8)
    await pub.send(PubRel(8))
    assert await pub.recv() == PubComp(8)
    m0 = await sub.recv()
    assert isinstance(m0, Publish) and (m0.topic, m0.payload, m0.qos) == ("t/0", b"zero", 0)
    m1 = await sub.recv()
    assert isinstance(m1, Publish) and (m1.payload, m1.qos) == (b"one", 1) and m1.packet_id
    await sub.send(PubAck(m1.packet_id))
    m2 = await sub.recv()
    assert isinstance(m2, Publish) and (m2.payload, m2.qos) == (b"two", 2) and m2.packet_id
    await sub.send(PubRec(m2.packet_id))
    assert await sub.recv() == PubRel(m2.packet_id)
    await sub.send(PubComp(m2.packet_id))
    await sub.send(PingReq())
    assert await sub.recv() == PingResp()
    stats = running.broker.stats()
    assert stats.messages_in == 3 and stats.messages_out == 3 and stats.clients_connected == 2
    await sub.close()
    await pub.close()


async def test_qos2_duplicate_is_delivered_once(running: Running) -> None:
    sub = await RawClient.connected(running.port, "sub")
    await subscribe(sub, Subscription("d", 0))
    pub = await RawClient.connected(running.port, "pub")
    for dup in (False, True):
        await pub.send(Publish("d", b"x", qos=2, packet_id=5, dup=dup))
        assert await pub.recv() == PubRec(5)
    await pub.send(PubRel(5))
    assert await pub.recv() == PubComp(5)
    await pub.send(Publish("d", b"end"))
    first = await sub.recv()
    second = await sub.recv()
    assert isinstance(first, Publish) and first.payload == b"x"
    assert isinstance(second, Publish) and second.payload == b"end"


async def test_unsubscribe_and_overlapping_filters_deliver_once(running: Running) -> None:
    sub = await RawClient.connected(running.port, "sub", V5)
    await subscribe(sub, Subscription("a/+", 0), Subscription("a/#", 1))
    pub = await RawClient.connected(running.port, "pub")
    await pub.send(Publish("a/b", b"1"))
    got = await sub.recv()
    assert isinstance(got, Publish) and got.payload == b"1"
    await sub.send(Unsubscribe(3, ("a/+", "a/#", "nope")))
    ack = await sub.recv()
    assert isinstance(ack, UnsubAck) and ack.reason_codes == (
        0,
        0,
        ReasonCode.NO_SUBSCRIPTION_EXISTED,
    )
    await pub.send(Publish("a/b", b"2"))
    await sub.send(PingReq())
    assert await sub.recv() == PingResp()  # nothing arrived before the PINGRESP


async def test_retained_messages(running: Running) -> None:
    pub = await RawClient.connected(running.port, "pub")
    await pub.send(Publish("r/1", b"kept", retain=True, qos=1, packet_id=1))
    assert await pub.recv() == PubAck(1)
    await running.broker.publish("r/2", b"inproc", retain=True)
    assert running.broker.stats().retained == 2
    sub = await RawClient.connected(running.port, "sub")
    await subscribe(sub, Subscription("r/#", 1))
    got = {}
    for _ in range(2):
        m = await sub.recv()
        assert isinstance(m, Publish) and m.retain
        got[m.topic] = m.payload
        if m.qos:
            assert m.packet_id is not None
            await sub.send(PubAck(m.packet_id))
    assert got == {"r/1": b"kept", "r/2": b"inproc"}
    await pub.send(Publish("r/1", b"", retain=True))  # clears it
    m = await sub.recv()
    assert isinstance(m, Publish) and m.payload == b"" and not m.retain  # live: retain flag cleared
    assert running.broker.stats().retained == 1


async def test_will_on_abrupt_close_not_on_disconnect(running: Running) -> None:
    sub = await RawClient.connected(running.port, "sub")
    await subscribe(sub, Subscription("will/#", 0))
    dying = await RawClient.connected(running.port, "dying", will=Will("will/dying", b"gone"))
    dying.writer.transport.abort()
    m = await sub.recv()
    assert isinstance(m, Publish) and (m.topic, m.payload) == ("will/dying", b"gone")
    polite = await RawClient.connected(running.port, "polite", will=Will("will/polite", b"never"))
    await polite.close()
    await sub.send(PingReq())
    assert await sub.recv() == PingResp()


async def test_disconnect_listeners_hear_every_end_of_a_connected_client(
    running: Running,
) -> None:
    gone: list[str] = []
    remove = running.broker.add_disconnect_listener(lambda identity: gone.append(identity.name))
    polite = await RawClient.connected(running.port, "polite")
    await polite.close()
    await eventually(lambda: gone == ["polite"])
    abrupt = await RawClient.connected(running.port, "abrupt")
    abrupt.writer.transport.abort()
    await eventually(lambda: gone == ["polite", "abrupt"])
    first = await RawClient.connected(running.port, "twice")
    await RawClient.connected(running.port, "twice")  # takes the session over
    assert await first.closed() is not None
    await eventually(lambda: gone == ["polite", "abrupt", "twice"])
    remove()
    kicked = await RawClient.connected(running.port, "kicked")
    assert running.broker.disconnect_where(lambda i: i.name == "kicked", "test") == 1
    await kicked.closed()
    assert gone == ["polite", "abrupt", "twice"]  # removed: no longer told


async def test_v5_will_delay_cancelled_by_reconnect_and_sent_after_delay(running: Running) -> None:
    sub = await RawClient.connected(running.port, "sub")
    await subscribe(sub, Subscription("will/#", 0))
    props = Properties(session_expiry_interval=60)
    will = Will("will/d", b"late", properties=Properties(will_delay_interval=1))
    c = await RawClient.connected(
        running.port, "wd", V5, clean_start=False, will=will, properties=props
    )
    c.writer.transport.abort()
    back = await RawClient.connected(
        running.port, "wd", V5, clean_start=False, will=will, properties=props
    )
    await sub.send(PingReq())
    assert await sub.recv() == PingResp()
    back.writer.transport.abort()
    loop = asyncio.get_running_loop()
    started = loop.time()
    m = await sub.recv(timeout=4)
    assert isinstance(m, Publish) and m.payload == b"late"
    assert loop.time() - started >= 0.8


async def test_persistent_session_queues_and_redelivers(running: Running) -> None:
    c = await RawClient.connected(running.port, "keeper", clean_start=False)
    await subscribe(c, Subscription("q", 1))
    await running.broker.publish("q", b"first", qos=1)
    m = await c.recv()
    assert isinstance(m, Publish) and m.payload == b"first" and not m.dup
    c.writer.transport.abort()  # never acknowledged
    await eventually(lambda: running.broker.stats().clients_connected == 0)
    await running.broker.publish("q", b"while away", qos=1)
    await running.broker.publish("q", b"dropped qos0", qos=0)
    back = await RawClient.open(running.port)
    await back.send(Connect("keeper", V311, clean_start=False))
    ack = await back.recv()
    assert isinstance(ack, ConnAck) and ack.session_present
    again = await back.recv()
    assert isinstance(again, Publish) and again.payload == b"first" and again.dup
    queued = await back.recv()
    assert isinstance(queued, Publish) and queued.payload == b"while away"
    assert again.packet_id and queued.packet_id
    await back.send(PubAck(again.packet_id))
    await back.send(PubAck(queued.packet_id))
    await back.send(PingReq())
    assert await back.recv() == PingResp()
    fresh = await RawClient.open(running.port)
    await fresh.send(Connect("keeper", V311, clean_start=True))
    ack = await fresh.recv()
    assert isinstance(ack, ConnAck) and not ack.session_present


async def test_inflight_window_respects_v5_receive_maximum(running: Running) -> None:
    c = await RawClient.connected(
        running.port, "slow", V5, properties=Properties(receive_maximum=2)
    )
    await subscribe(c, Subscription("w", 1))
    for i in range(5):
        await running.broker.publish("w", str(i).encode(), qos=1)
    first = [await c.recv(), await c.recv()]
    await c.send(PingReq())
    assert await c.recv() == PingResp()  # only two in flight
    assert running.broker.stats().queued_messages == 3
    got = []
    for m in first:
        assert isinstance(m, Publish) and m.packet_id
        got.append(m.payload)
        await c.send(PubAck(m.packet_id))
    while len(got) < 5:
        m = await c.recv()
        assert isinstance(m, Publish) and m.packet_id
        got.append(m.payload)
        await c.send(PubAck(m.packet_id))
    assert got == [b"0", b"1", b"2", b"3", b"4"]


async def test_client_id_takeover(running: Running) -> None:
    old = await RawClient.connected(running.port, "same", V5)
    new = await RawClient.connected(running.port, "same", V5)
    packets = await old.closed()
    assert packets == [Disconnect(ReasonCode.SESSION_TAKEN_OVER)]
    await new.send(PingReq())
    assert await new.recv() == PingResp()
    assert running.broker.stats().clients_connected == 1


async def test_empty_client_id(running: Running) -> None:
    v5 = await RawClient.open(running.port, V5)
    await v5.send(Connect("", V5))
    ack = await v5.recv()
    assert isinstance(ack, ConnAck) and ack.reason_code == 0
    assert ack.properties.assigned_client_identifier
    ok = await RawClient.connected(running.port, "", V311, clean_start=True)
    await ok.send(PingReq())
    assert await ok.recv() == PingResp()
    bad = await RawClient.open(running.port)
    await bad.send(Connect("", V311, clean_start=False))
    ack = await bad.recv()
    assert isinstance(ack, ConnAck) and ack.reason_code == ReasonCode.CLIENT_IDENTIFIER_NOT_VALID
    await bad.closed()


async def test_keepalive_timeout_closes_silent_client(running: Running) -> None:
    c = await RawClient.connected(running.port, "sleepy", V5, keepalive=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    packets = await c.closed(timeout=4)
    assert packets == [Disconnect(ReasonCode.KEEP_ALIVE_TIMEOUT)]
    assert loop.time() - started >= 1.4


async def test_v5_properties_pass_through(running: Running) -> None:
    sub = await RawClient.connected(running.port, "sub", V5)
    await subscribe(sub, Subscription("req/+", 1), props=Properties(subscription_identifiers=(42,)))
    pub = await RawClient.connected(running.port, "pub", V5)
    props = Properties(
        response_topic="resp/1",
        correlation_data=b"corr",
        user_properties=(("k", "v"),),
        content_type="text/plain",
        message_expiry_interval=30,
        topic_alias=1,
    )
    await pub.send(Publish("req/a", b"q", properties=props))
    await pub.send(Publish("", b"aliased", properties=Properties(topic_alias=1)))
    m = await sub.recv()
    assert isinstance(m, Publish) and m.topic == "req/a"
    p = m.properties
    assert (p.response_topic, p.correlation_data, p.user_properties, p.content_type) == (
        "resp/1",
        b"corr",
        (("k", "v"),),
        "text/plain",
    )
    assert p.subscription_identifiers == (42,)
    assert p.message_expiry_interval is not None and 28 <= p.message_expiry_interval <= 30
    assert p.topic_alias is None
    m2 = await sub.recv()
    assert isinstance(m2, Publish) and (m2.topic, m2.payload) == ("req/a", b"aliased")


async def test_no_local_and_retain_as_published_and_retain_handling(running: Running) -> None:
    await running.broker.publish("opt/r", b"old", retain=True)
    c = await RawClient.connected(running.port, "opts", V5)
    await subscribe(
        c, Subscription("opt/#", 0, no_local=True, retain_as_published=True, retain_handling=2)
    )
    await c.send(Publish("opt/self", b"mine"))
    await running.broker.publish("opt/x", b"kept flag", retain=True)
    m = await c.recv()
    assert isinstance(m, Publish) and m.payload == b"kept flag" and m.retain  # own message skipped
    await subscribe(c, Subscription("opt/r", 0, retain_handling=1), pid=2)
    m = await c.recv()
    assert isinstance(m, Publish) and m.payload == b"old" and m.retain
    await subscribe(c, Subscription("opt/r", 0, retain_handling=1), pid=3)  # existing: no resend
    await c.send(PingReq())
    assert await c.recv() == PingResp()


async def test_message_expiry_drops_queued_message() -> None:
    clock = ManualClock(start=time.monotonic())
    async with Broker(BrokerConfig(sweep_interval=0.1), clock=clock) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        props = Properties(session_expiry_interval=60)
        c = await RawClient.connected(port, "exp", V5, clean_start=False, properties=props)
        await subscribe(c, Subscription("e", 1))
        await c.close()
        await eventually(lambda: broker.stats().clients_connected == 0)
        await broker.publish("e", b"short", qos=1, properties=Properties(message_expiry_interval=1))
        await broker.publish("e", b"long", qos=1, properties=Properties(message_expiry_interval=60))
        clock.advance(1.0)  # exactly the time the short message has to live
        back = await RawClient.connected(port, "exp", V5, clean_start=False, properties=props)
        m = await back.recv()
        assert isinstance(m, Publish) and m.payload == b"long"
        assert broker.stats().expired == 1


async def test_keepalive_expires_at_one_and_a_half_times_by_the_clock() -> None:
    """The broker's sweep and keep-alive run on the injected clock: advancing it to just
    before 1.5 x keep-alive keeps the client; to exactly 1.5 x disconnects it (0x8D)."""
    clock = ManualClock()
    async with Broker(BrokerConfig(sweep_interval=0.5), clock=clock) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        await clock.wait_sleepers(1)  # the sweep is parked
        c = await RawClient.connected(port, "sleepy", V5, keepalive=10)
        clock.advance(0.5)  # the sweep notes the CONNECT as the last packet at t=0.5
        await clock.wait_sleepers(1)
        clock.advance(14.5)  # t=15.0: 14.5 s of silence
        await clock.wait_sleepers(1)
        assert broker.stats().clients_connected == 1
        await c.send(PingReq())
        assert await c.recv() == PingResp()
        clock.advance(0.5)  # t=15.5: the ping is noted, the deadline moves to t=30.5
        await clock.wait_sleepers(1)
        clock.advance(14.5)  # t=30.0
        await clock.wait_sleepers(1)
        assert broker.stats().clients_connected == 1
        clock.advance(0.5)  # t=30.5: exactly 1.5 x 10 s after the ping was noted
        assert await c.closed() == [Disconnect(ReasonCode.KEEP_ALIVE_TIMEOUT)]
        assert broker.stats().clients_connected == 0


async def test_connect_timeout_by_the_clock() -> None:
    clock = ManualClock()
    config = BrokerConfig(sweep_interval=1.0, connect_timeout=5.0)
    async with Broker(config, clock=clock) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        await clock.wait_sleepers(1)
        silent = await RawClient.open(port)
        await eventually(lambda: len(broker.hub.connections) == 1)
        for _ in range(4):  # t=1..4: still inside the CONNECT timeout
            clock.advance(1.0)
            await clock.wait_sleepers(1)
        assert len(broker.hub.connections) == 1
        clock.advance(1.0)  # t=5
        assert await silent.closed() == []


async def test_shared_subscription_round_robin(running: Running) -> None:
    a = await RawClient.connected(running.port, "a", V5)
    b = await RawClient.connected(running.port, "b", V5)
    await subscribe(a, Subscription("$share/g/jobs/#", 0))
    await subscribe(b, Subscription("$share/g/jobs/#", 0))
    for i in range(4):
        await running.broker.publish("jobs/x", str(i).encode())
    got_a = [(await a.recv()), (await a.recv())]
    got_b = [(await b.recv()), (await b.recv())]
    payloads = sorted(m.payload for m in got_a + got_b if isinstance(m, Publish))
    assert payloads == [b"0", b"1", b"2", b"3"]


class Policy:
    def authorize(self, identity: Identity, action: Action, topic: str) -> bool:
        return not topic.startswith("secret")


async def test_authorizer_denies_publish_and_subscribe() -> None:
    async with Broker(authorizer=Policy()) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        seen: list[str] = []
        broker.add_interceptor(lambda identity, p: seen.append(p.topic))
        c = await RawClient.connected(port, "c", V5)
        ack = await subscribe(c, Subscription("secret/#", 0), Subscription("open/#", 0))
        assert ack.reason_codes == (ReasonCode.NOT_AUTHORIZED, 0)
        await c.send(Publish("secret/x", b"no", qos=1, packet_id=3))
        assert await c.recv() == PubAck(3, ReasonCode.NOT_AUTHORIZED)
        await c.send(Publish("secret/y", b"no", qos=2, packet_id=4))
        assert await c.recv() == PubRec(4, ReasonCode.NOT_AUTHORIZED)
        await c.send(Publish("open/x", b"yes"))
        m = await c.recv()
        assert isinstance(m, Publish) and m.topic == "open/x"
        old = await RawClient.connected(port, "old", V311)
        await old.send(Publish("secret/z", b"no", qos=1, packet_id=9))
        assert await old.recv() == PubAck(9)  # 3.1.1 cannot say no: acknowledged and dropped
        stats = broker.stats()
        assert stats.denied_publish == 3 and stats.denied_subscribe == 1
        assert seen == ["open/x"]


async def test_deny_policy_disconnect() -> None:
    async with Broker(BrokerConfig(deny_policy="disconnect"), authorizer=Policy()) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        c = await RawClient.connected(port, "c", V5)
        await c.send(Publish("secret/x", b"no"))
        assert await c.closed() == [Disconnect(ReasonCode.NOT_AUTHORIZED)]


async def test_interceptor_disconnect_where_and_graceful_shutdown() -> None:
    async with Broker() as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        seen: list[tuple[str, str, bytes]] = []
        remove = broker.add_interceptor(lambda i, p: seen.append((i.name, p.topic, p.payload)))
        c = await RawClient.connected(port, "dev-1", V5)
        other = await RawClient.connected(port, "dev-2", V5)
        await c.send(Publish("x", b"1", qos=1, packet_id=1))
        assert await c.recv() == PubAck(1)
        remove()
        await c.send(Publish("x", b"2", qos=1, packet_id=2))
        assert await c.recv() == PubAck(2)
        assert seen == [("dev-1", "x", b"1")]
        assert broker.disconnect_where(lambda i: i.name == "dev-1", "revoked") == 1
        assert await c.closed() == [Disconnect(ReasonCode.ADMINISTRATIVE_ACTION)]
        assert [cid for cid, _ in broker.clients()] == ["dev-2"]
    assert await other.closed() == [Disconnect(ReasonCode.SERVER_SHUTTING_DOWN)]


async def test_sys_topics_published() -> None:
    async with Broker(BrokerConfig(sys_interval=0.2, sweep_interval=0.05)) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        c = await RawClient.connected(port, "mon")
        await subscribe(c, Subscription("$SYS/broker/clients/connected", 0))
        m = await c.recv(timeout=3)
        assert isinstance(m, Publish) and m.payload == b"1"


class SilentRefusal:
    async def authenticate(self, info: ConnectInfo) -> Identity:
        raise Refused(ReasonCode.NOT_AUTHORIZED, "unknown device", silent=True)

    def authorize(self, identity: Identity, action: Action, topic: str) -> bool:
        return True


async def test_silent_refusal_closes_311_without_connack_but_answers_v5() -> None:
    refuser = SilentRefusal()
    async with Broker(authenticator=refuser, authorizer=refuser) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        old = await RawClient.open(port)
        await old.send(Connect("x", V311))
        assert await old.closed() == []
        new = await RawClient.open(port, V5)
        await new.send(Connect("y", V5))
        # a v5 client is told why: the refusal's message as reason string
        assert await new.closed() == [
            ConnAck(False, ReasonCode.NOT_AUTHORIZED, Properties(reason_string="unknown device"))
        ]
        assert broker.stats().refused == 2


async def test_v5_maximum_packet_size_skips_larger_messages(running: Running) -> None:
    c = await RawClient.connected(
        running.port, "small", V5, properties=Properties(maximum_packet_size=64)
    )
    await subscribe(c, Subscription("size/#", 1))
    await running.broker.publish("size/big", b"x" * 100, qos=1)
    await running.broker.publish("size/big0", b"x" * 100)
    await running.broker.publish("size/ok", b"fits", qos=1)
    m = await c.recv()
    assert isinstance(m, Publish) and m.payload == b"fits"


async def test_v5_session_expiry_forgets_session() -> None:
    async with Broker(BrokerConfig(sweep_interval=0.05)) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        props = Properties(session_expiry_interval=1)
        c = await RawClient.connected(port, "brief", V5, clean_start=False, properties=props)
        await subscribe(c, Subscription("x", 1))
        await c.close()
        back = await RawClient.open(port, V5)
        await back.send(Connect("brief", V5, clean_start=False, properties=props))
        ack = await back.recv()
        assert isinstance(ack, ConnAck) and ack.session_present
        await back.close()
        await eventually(lambda: broker.stats().sessions == 0, timeout=3)
        late = await RawClient.open(port, V5)
        await late.send(Connect("brief", V5, clean_start=False, properties=props))
        ack = await late.recv()
        assert isinstance(ack, ConnAck) and not ack.session_present


async def test_takeover_of_clean_session_by_persistent_connect(running: Running) -> None:
    await RawClient.connected(running.port, "flip", V311, clean_start=True)
    back = await RawClient.open(running.port)
    await back.send(Connect("flip", V311, clean_start=False))
    ack = await back.recv()
    assert isinstance(ack, ConnAck) and not ack.session_present
    await subscribe(back, Subscription("flip", 1))
    await running.broker.publish("flip", b"delivered", qos=1)
    m = await back.recv()
    assert isinstance(m, Publish) and m.payload == b"delivered"
    assert running.broker.stats().sessions == 1


async def test_qos1_publisher_is_paced_by_a_slow_subscriber_and_nothing_is_lost(
    running: Running,
) -> None:
    sub = await RawClient.connected(
        running.port, "slow-acker", V5, properties=Properties(receive_maximum=1)
    )
    await subscribe(sub, Subscription("paced", 1))
    pub = await RawClient.connected(running.port, "fast")
    await pub.send(Publish("paced", b"1", qos=1, packet_id=1))
    first = await sub.recv()
    assert isinstance(first, Publish) and first.packet_id
    await sub.send(PubAck(first.packet_id))  # it takes data: from now on it paces
    assert isinstance(await pub.recv(), PubAck)
    for i in range(2, 51):
        await pub.send(Publish("paced", str(i).encode(), qos=1, packet_id=i))
    acked = 1
    while acked < 50:  # then it acknowledges nothing: the publisher is let go after a while
        assert isinstance(await pub.recv(), PubAck)
        acked += 1
    assert running.broker.stats().publishers_paused >= 1
    got = [1]
    while len(got) < 50:
        m = await sub.recv()
        assert isinstance(m, Publish) and m.packet_id
        got.append(int(m.payload))
        await sub.send(PubAck(m.packet_id))
    assert got == list(range(1, 51))


async def test_v5_disconnect_with_will_message_sends_the_will(running: Running) -> None:
    sub = await RawClient.connected(running.port, "sub")
    await subscribe(sub, Subscription("will/#", 0))
    c = await RawClient.connected(running.port, "leaver", V5, will=Will("will/leaver", b"bye"))
    await c.send(Disconnect(ReasonCode.DISCONNECT_WITH_WILL_MESSAGE))
    m = await sub.recv()
    assert isinstance(m, Publish) and m.payload == b"bye"


async def test_qos2_release_is_resent_after_reconnect(running: Running) -> None:
    c = await RawClient.connected(running.port, "q2", clean_start=False)
    await subscribe(c, Subscription("q2", 2))
    await running.broker.publish("q2", b"exactly once", qos=2)
    m = await c.recv()
    assert isinstance(m, Publish) and m.qos == 2 and m.packet_id
    await c.send(PubRec(m.packet_id))
    assert await c.recv() == PubRel(m.packet_id)
    c.writer.transport.abort()  # PUBCOMP never sent
    await eventually(lambda: running.broker.stats().clients_connected == 0)
    back = await RawClient.open(running.port)
    await back.send(Connect("q2", V311, clean_start=False))
    ack = await back.recv()
    assert isinstance(ack, ConnAck) and ack.session_present
    assert await back.recv() == PubRel(m.packet_id)  # not the PUBLISH again
    await back.send(PubComp(m.packet_id))
    await back.send(PingReq())
    assert await back.recv() == PingResp()


async def test_in_process_publish_validates(running: Running) -> None:
    with pytest.raises(ProtocolError):
        await running.broker.publish("a/+", b"x")
    with pytest.raises(ValueError):
        await running.broker.publish("a", b"x", qos=3)


async def test_subscription_quota() -> None:
    async with Broker(BrokerConfig(max_subscriptions=2)) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        c = await RawClient.connected(port, "greedy", V5)
        ack = await subscribe(c, Subscription("a", 0), Subscription("b", 1), Subscription("c", 0))
        assert ack.reason_codes == (0, 1, ReasonCode.QUOTA_EXCEEDED)
        ack = await subscribe(c, Subscription("a", 1), pid=2)  # replacing one is fine
        assert ack.reason_codes == (1,)
        assert broker.stats().subscriptions == 2


async def test_failing_interceptor_is_logged_and_delivery_goes_on(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(identity: Identity, publish: Publish) -> None:
        raise RuntimeError("interceptor bug")

    running.broker.add_interceptor(broken)
    sub = await RawClient.connected(running.port, "sub")
    await subscribe(sub, Subscription("i", 0))
    pub = await RawClient.connected(running.port, "pub")
    await pub.send(Publish("i", b"still delivered", qos=1, packet_id=1))
    assert await pub.recv() == PubAck(1)
    m = await sub.recv()
    assert isinstance(m, Publish) and m.payload == b"still delivered"
    assert "interceptor" in caplog.text and "interceptor bug" in caplog.text
