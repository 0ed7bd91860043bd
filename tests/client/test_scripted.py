"""The client against a scripted server: session resumption, flow control, aliases, keepalive
and a misbehaving server, packet by packet."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from hedgerow.client import (
    Client,
    ConnectError,
    ConnectionLost,
    ProtocolVersion,
    ProtocolViolation,
    PublishError,
    SubscribeError,
)
from hedgerow.mqtt.packets import (
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
)
from hedgerow.mqtt.reasons import ReasonCode

from .scripted import ScriptedServer, ScriptedSession, scripted_server

WAIT = 5.0
pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    async with scripted_server() as s:
        yield s


async def connected(
    server: ScriptedServer,
    session_present: bool = False,
    properties: Properties | None = None,
    **options: object,
) -> tuple[Client, ScriptedSession, Connect]:
    options.setdefault("client_id", "scripted")
    client = Client("127.0.0.1", server.port, **options)  # type: ignore[arg-type]
    connecting = asyncio.ensure_future(client.connect())
    session = await server.accept()
    connect = await session.handshake(session_present, properties)
    await connecting
    return client, session, connect


async def test_connect_packet_carries_the_options(server: ScriptedServer) -> None:
    client, _, connect = await connected(
        server,
        client_id="dev-1",
        keepalive=30,
        clean_start=False,
        session_expiry=120,
        username="u",
        password="p",
        receive_maximum=100,
    )
    await client.disconnect()
    assert connect.client_id == "dev-1"
    assert connect.version == ProtocolVersion.V5
    assert (connect.keepalive, connect.clean_start) == (30, False)
    assert (connect.username, connect.password) == ("u", b"p")
    assert connect.properties.session_expiry_interval == 120
    assert connect.properties.receive_maximum == 100
    assert connect.properties.topic_alias_maximum is not None


async def test_assigned_client_identifier_is_adopted(server: ScriptedServer) -> None:
    client, _, connect = await connected(
        server, client_id="", properties=Properties(assigned_client_identifier="auto-7")
    )
    assert connect.client_id == ""
    assert client.client_id == "auto-7"
    await client.disconnect()


async def test_unacknowledged_qos1_is_resent_with_dup_on_session_resumption(
    server: ScriptedServer,
) -> None:
    client, session, _ = await connected(server, clean_start=False, session_expiry=60)
    future = client.publish_nowait("a/b", b"keep me", qos=1)
    first = await session.expect(Publish)
    assert isinstance(first, Publish) and first.dup is False
    await session.close()
    with pytest.raises(ConnectionLost):
        await future

    connecting = asyncio.ensure_future(client.connect())
    session = await server.accept()
    connect = await session.handshake(session_present=True)
    await connecting
    again = await session.expect(Publish)
    assert isinstance(again, Publish)
    assert connect.clean_start is False
    assert (again.packet_id, again.dup, again.payload) == (first.packet_id, True, b"keep me")
    assert first.packet_id is not None
    session.send(PubAck(first.packet_id))
    following = client.publish_nowait("a/c", b"next", qos=1)  # the flow table works again
    nxt = await session.expect(Publish)
    assert isinstance(nxt, Publish) and nxt.packet_id is not None
    session.send(PubAck(nxt.packet_id))
    await asyncio.wait_for(following, WAIT)
    await client.disconnect()


async def test_qos2_release_is_resent_on_session_resumption(server: ScriptedServer) -> None:
    client, session, _ = await connected(server, clean_start=False, session_expiry=60)
    future = client.publish_nowait("a/b", b"twice?", qos=2)
    publish = await session.expect(Publish)
    assert isinstance(publish, Publish) and publish.packet_id is not None
    session.send(PubRec(publish.packet_id))
    release = await session.expect(PubRel)
    await session.close()
    with pytest.raises(ConnectionLost):
        await future

    connecting = asyncio.ensure_future(client.connect())
    session = await server.accept()
    await session.handshake(session_present=True)
    await connecting
    again = await session.expect(PubRel)
    assert again == release
    session.send(PubComp(publish.packet_id))
    await client.disconnect()


async def test_session_not_present_discards_unacknowledged_state(server: ScriptedServer) -> None:
    client, session, _ = await connected(server, clean_start=False, session_expiry=60)
    client.publish_nowait("a/b", b"lost", qos=1).cancel()
    await session.expect(Publish)
    await session.close()
    await asyncio.wait_for(client.closed, WAIT)

    connecting = asyncio.ensure_future(client.connect())
    session = await server.accept()
    await session.handshake(session_present=False)
    await connecting
    client.publish_nowait("a/fresh", b"new", qos=0)
    first = await session.expect(Publish)
    assert isinstance(first, Publish) and first.topic == "a/fresh"
    await client.disconnect()


async def test_receive_maximum_holds_back_publishes(server: ScriptedServer) -> None:
    client, session, _ = await connected(server, properties=Properties(receive_maximum=2))
    futures = [client.publish_nowait("q", str(i), qos=1) for i in range(4)]
    client.publish_nowait("q0", b"marker", qos=0)
    seen = [await session.expect(Publish) for _ in range(3)]
    assert [p.payload for p in seen if isinstance(p, Publish)] == [b"0", b"1", b"marker"]
    assert not any(f.done() for f in futures)
    first = seen[0]
    assert isinstance(first, Publish) and first.packet_id is not None
    session.send(PubAck(first.packet_id))
    third = await session.expect(Publish)
    assert isinstance(third, Publish) and third.payload == b"2"
    await futures[0]
    assert not futures[2].done()
    for packet in (seen[1], third):
        assert isinstance(packet, Publish) and packet.packet_id is not None
        session.send(PubAck(packet.packet_id))
    fourth = await session.expect(Publish)
    assert isinstance(fourth, Publish) and fourth.packet_id is not None
    session.send(PubAck(fourth.packet_id))
    await asyncio.wait_for(asyncio.gather(*futures), WAIT)
    await client.disconnect()


async def test_inbound_topic_aliases(server: ScriptedServer) -> None:
    client, session, connect = await connected(server)
    assert connect.properties.topic_alias_maximum
    session.send(Publish("sensors/t1", b"1", properties=Properties(topic_alias=3)))
    session.send(Publish("", b"2", properties=Properties(topic_alias=3)))
    async with asyncio.timeout(WAIT):
        first, second = await client.get_message(), await client.get_message()
    assert (first.topic, second.topic) == ("sensors/t1", "sensors/t1")
    assert second.payload == b"2"
    session.send(Publish("", b"3", properties=Properties(topic_alias=4)))  # never set
    error = await asyncio.wait_for(client.closed, WAIT)
    assert isinstance(error, ProtocolViolation)
    assert error.reason_code == ReasonCode.TOPIC_ALIAS_INVALID


async def test_inbound_qos2_is_delivered_exactly_once(server: ScriptedServer) -> None:
    client, session, _ = await connected(server)
    session.send(Publish("t", b"once", qos=2, packet_id=7))
    session.send(Publish("t", b"once", qos=2, dup=True, packet_id=7))
    assert await session.expect(PubRec) == PubRec(7)
    assert await session.expect(PubRec) == PubRec(7)
    session.send(PubRel(7))
    assert await session.expect(PubComp) == PubComp(7)
    session.send(Publish("t", b"marker", qos=0))
    async with asyncio.timeout(WAIT):
        messages = [await client.get_message(), await client.get_message()]
    assert [m.payload for m in messages] == [b"once", b"marker"]
    assert messages[0].qos == 2
    await client.disconnect()


async def test_inbound_qos1_is_acknowledged(server: ScriptedServer) -> None:
    client, session, _ = await connected(server, version=ProtocolVersion.V311)
    session.send(Publish("t", b"x", qos=1, packet_id=42, retain=True))
    assert await session.expect(PubAck) == PubAck(42)
    async with asyncio.timeout(WAIT):
        message = await client.get_message()
    assert (message.qos, message.retain) == (1, True)
    await client.disconnect()


async def test_refused_publish_raises_publish_error(server: ScriptedServer) -> None:
    client, session, _ = await connected(server)
    q1 = client.publish_nowait("t", b"1", qos=1)
    q2 = client.publish_nowait("t", b"2", qos=2)
    p1, p2 = await session.expect(Publish), await session.expect(Publish)
    assert isinstance(p1, Publish) and isinstance(p2, Publish)
    assert p1.packet_id is not None and p2.packet_id is not None
    session.send(PubAck(p1.packet_id, ReasonCode.NOT_AUTHORIZED))
    session.send(PubRec(p2.packet_id, ReasonCode.QUOTA_EXCEEDED))
    with pytest.raises(PublishError) as caught:
        await q1
    assert caught.value.reason_code == ReasonCode.NOT_AUTHORIZED
    with pytest.raises(PublishError) as caught:
        await q2
    assert caught.value.reason_code == ReasonCode.QUOTA_EXCEEDED
    assert client.is_connected
    await client.disconnect()


async def test_refused_subscription_raises_subscribe_error(server: ScriptedServer) -> None:
    client, session, _ = await connected(server)
    subscribing = asyncio.ensure_future(client.subscribe(("ok", 1), ("denied", 1)))
    subscribe = await session.expect(Subscribe)
    assert isinstance(subscribe, Subscribe)
    assert [s.topic_filter for s in subscribe.subscriptions] == ["ok", "denied"]
    session.send(SubAck(subscribe.packet_id, (1, ReasonCode.NOT_AUTHORIZED)))
    with pytest.raises(SubscribeError) as caught:
        await subscribing
    assert caught.value.reason_codes == (1, ReasonCode.NOT_AUTHORIZED)
    assert caught.value.reason_code == ReasonCode.NOT_AUTHORIZED
    await client.disconnect()


async def test_ping_without_answer_drops_the_connection(server: ScriptedServer) -> None:
    client, session, _ = await connected(server, keepalive=1, ping_timeout=0.3)
    subscribing = asyncio.ensure_future(client.subscribe("never/acked"))
    await session.expect(Subscribe)
    await session.expect(PingReq)  # and never answer it
    error = await asyncio.wait_for(client.closed, WAIT)
    assert isinstance(error, ConnectionLost)
    assert "PINGRESP" in str(error)
    with pytest.raises(ConnectionLost):
        await subscribing


async def test_server_keepalive_from_connack_is_used(server: ScriptedServer) -> None:
    client, session, _ = await connected(
        server, keepalive=600, properties=Properties(server_keep_alive=1)
    )
    assert client.effective_keepalive == 1
    await session.expect(PingReq)  # after ~1 s, not 600
    session.send(PingResp())
    await client.disconnect()
    assert client.pings[0] == 1


async def test_server_disconnect_carries_its_reason(server: ScriptedServer) -> None:
    client, session, _ = await connected(server)
    session.send(Disconnect(ReasonCode.SERVER_SHUTTING_DOWN))
    error = await asyncio.wait_for(client.closed, WAIT)
    assert isinstance(error, ConnectionLost)
    assert error.reason_code == ReasonCode.SERVER_SHUTTING_DOWN
    with pytest.raises(ConnectionLost) as caught:
        async for _ in client.messages():
            pass
    assert caught.value.reason_code == ReasonCode.SERVER_SHUTTING_DOWN


async def test_malformed_packet_is_a_protocol_violation(server: ScriptedServer) -> None:
    client, session, _ = await connected(server)
    subscribing = asyncio.ensure_future(client.subscribe("t"))
    await session.expect(Subscribe)
    session.send_raw(b"\x00\x00")  # packet type 0 is reserved
    error = await asyncio.wait_for(client.closed, WAIT)
    assert isinstance(error, ProtocolViolation)
    with pytest.raises(ConnectionLost):
        await subscribing
    assert await session.closed_by_client()


async def test_unexpected_packet_before_connack_is_refused(server: ScriptedServer) -> None:
    client = Client("127.0.0.1", server.port)
    connecting = asyncio.ensure_future(client.connect())
    session = await server.accept()
    await session.expect(Connect)
    session.send(Publish("t", b"too early"))
    with pytest.raises(ConnectError) as caught:
        await connecting
    assert isinstance(caught.value.__cause__, ProtocolViolation)


@pytest.mark.parametrize(
    ("version", "code"),
    [
        (ProtocolVersion.V5, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID),
        (ProtocolVersion.V311, ReasonCode.BAD_USER_NAME_OR_PASSWORD),
    ],
)
async def test_refused_connect_raises_connect_error_with_the_code(
    server: ScriptedServer, version: ProtocolVersion, code: int
) -> None:
    client = Client("127.0.0.1", server.port, version=version)
    connecting = asyncio.ensure_future(client.connect())
    session = await server.accept()
    await session.expect(Connect)
    session.send(ConnAck(False, code))
    with pytest.raises(ConnectError) as caught:
        await connecting
    assert caught.value.reason_code == code
    assert not client.is_connected


async def test_connect_timeout(server: ScriptedServer) -> None:
    client = Client("127.0.0.1", server.port, connect_timeout=0.3)
    connecting = asyncio.ensure_future(client.connect())
    session = await server.accept()
    await session.expect(Connect)  # and never answer
    with pytest.raises(ConnectError) as caught:
        await connecting
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert caught.value.reason_code is None
    assert await session.closed_by_client()


async def test_full_queue_pauses_reading_instead_of_dropping(server: ScriptedServer) -> None:
    client, session, _ = await connected(server, queue_size=20)
    count = 3000
    payload = b"p" * 500
    for index in range(count):
        session.send(Publish(f"bulk/{index}", payload, qos=1, packet_id=index % 60000 + 1))
    longest = 0
    received = []
    async with asyncio.timeout(WAIT * 2):
        # wait until the client has stopped reading, then drain it
        while not client._inbox.full:
            await asyncio.sleep(0.01)
        assert client._conn is not None and client._conn.reading_paused
        for _ in range(count):
            longest = max(longest, len(client._inbox))
            received.append((await client.get_message()).topic)
    assert received == [f"bulk/{index}" for index in range(count)]
    # bounded by the queue size plus what one read (at most 256 KiB) can carry
    assert longest < 20 + 256 * 1024 // len(payload) + 2
    acks = [await session.expect(PubAck) for _ in range(count)]
    assert len(acks) == count
    await client.disconnect()


async def test_outbound_topic_aliases_on_the_wire(server: ScriptedServer) -> None:
    client, session, _ = await connected(
        server, topic_aliases=True, properties=Properties(topic_alias_maximum=1)
    )
    for topic in ("a/1", "a/1", "a/2"):
        client.publish_nowait(topic, b"x")
    first, second, third = [await session.expect(Publish) for _ in range(3)]
    assert isinstance(first, Publish) and isinstance(second, Publish) and isinstance(third, Publish)
    assert (first.topic, first.properties.topic_alias) == ("a/1", 1)
    assert (second.topic, second.properties.topic_alias) == ("", 1)
    assert (third.topic, third.properties.topic_alias) == ("a/2", None)  # no alias left
    await client.disconnect()


async def test_no_outbound_aliases_unless_asked(server: ScriptedServer) -> None:
    client, session, _ = await connected(server, properties=Properties(topic_alias_maximum=5))
    client.publish_nowait("a/1", b"x")
    client.publish_nowait("a/1", b"y")
    packets = [await session.expect(Publish) for _ in range(2)]
    assert [(p.topic, p.properties.topic_alias) for p in packets if isinstance(p, Publish)] == [
        ("a/1", None),
        ("a/1", None),
    ]
    await client.disconnect()


async def test_disconnect_fails_pending_operations(server: ScriptedServer) -> None:
    seen: list[object] = []
    client, session, _ = await connected(server, on_disconnect=seen.append)
    publishing = client.publish_nowait("t", b"x", qos=1)
    subscribing = asyncio.ensure_future(client.subscribe("t"))
    await session.expect(Publish)
    await session.expect(Subscribe)
    await client.disconnect()
    assert await session.expect(Disconnect) == Disconnect()
    with pytest.raises(ConnectionLost):
        await publishing
    with pytest.raises(ConnectionLost):
        await subscribing
    assert client.closed.result() is None
    assert seen == [None]
    with pytest.raises(ConnectionLost, match="disconnected"):
        await client.get_message()


async def test_a_cancelled_reader_passes_its_message_on(server: ScriptedServer) -> None:
    client, session, _ = await connected(server)
    first = asyncio.ensure_future(client.get_message())
    second = asyncio.ensure_future(client.get_message())
    await asyncio.sleep(0)  # both are waiting now
    session.send(Publish("t", b"only one"))
    async with asyncio.timeout(WAIT):
        while not first.done():
            await asyncio.sleep(0)
            # cancel the first reader after it was woken but before it ran
            if len(client._inbox) and not first.done():
                first.cancel()
        message = await second
    assert message.payload == b"only one"
    await client.disconnect()


async def test_suback_after_the_caller_gave_up_is_harmless(server: ScriptedServer) -> None:
    client, session, _ = await connected(server)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.subscribe("slow"), 0.05)
    late = await session.expect(Subscribe)
    assert isinstance(late, Subscribe)
    session.send(SubAck(late.packet_id, (0,)))
    subscribing = asyncio.ensure_future(client.subscribe("next"))
    nxt = await session.expect(Subscribe)
    assert isinstance(nxt, Subscribe)
    session.send(SubAck(nxt.packet_id, (1,)))
    assert await asyncio.wait_for(subscribing, WAIT) == (1,)
    assert client.is_connected
    await client.disconnect()


async def test_publish_over_the_server_maximum_packet_size_is_refused(
    server: ScriptedServer,
) -> None:
    client, session, _ = await connected(server, properties=Properties(maximum_packet_size=100))
    with pytest.raises(PublishError) as caught:
        client.publish_nowait("t", b"x" * 200, qos=1)
    assert caught.value.reason_code == ReasonCode.PACKET_TOO_LARGE
    client.publish_nowait("t", b"small")
    sent = await session.expect(Publish)
    assert isinstance(sent, Publish) and sent.payload == b"small"
    await client.disconnect()


async def test_closed_is_never_left_pending_by_a_failed_connect(server: ScriptedServer) -> None:
    client = Client("127.0.0.1", server.port)
    assert client.closed.done() and client.closed.result() is None  # never connected
    connecting = asyncio.ensure_future(client.connect())
    session = await server.accept()
    await session.expect(Connect)
    session.send(ConnAck(False, ReasonCode.NOT_AUTHORIZED))
    with pytest.raises(ConnectError):
        await connecting
    assert client.closed.done()
    client2, session2, _ = await connected(server)
    assert not client2.closed.done()
    await session2.close()
    assert isinstance(await asyncio.wait_for(client2.closed, WAIT), ConnectionLost)


async def test_inbound_qos2_stays_exactly_once_across_a_resumed_session(
    server: ScriptedServer,
) -> None:
    client, session, _ = await connected(server, clean_start=False, session_expiry=60)
    session.send(Publish("t", b"once", qos=2, packet_id=9))
    assert await session.expect(PubRec) == PubRec(9)
    await session.close()
    await asyncio.wait_for(client.closed, WAIT)

    connecting = asyncio.ensure_future(client.connect())
    session = await server.accept()
    await session.handshake(session_present=True)
    await connecting
    session.send(Publish("t", b"once", qos=2, dup=True, packet_id=9))
    assert await session.expect(PubRec) == PubRec(9)
    session.send(PubRel(9))
    assert await session.expect(PubComp) == PubComp(9)
    session.send(Publish("t", b"marker"))
    async with asyncio.timeout(WAIT):
        payloads = [(await client.get_message()).payload for _ in range(2)]
    assert payloads == [b"once", b"marker"]
    await client.disconnect()
