"""The client against the machine's Mosquitto (127.0.0.1:1883), MQTT 3.1.1 and 5."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from hedgerow.client import (
    Client,
    ClientError,
    ConnectionLost,
    Message,
    Properties,
    ProtocolVersion,
    Will,
)
from hedgerow.mqtt.reasons import ReasonCode

pytestmark = pytest.mark.mosquitto

VERSIONS = [ProtocolVersion.V311, ProtocolVersion.V5]
WAIT = 5.0


def new_client(broker: tuple[str, int], version: ProtocolVersion, **options: object) -> Client:
    options.setdefault("client_id", f"hedgerow-test-{uuid.uuid4().hex[:12]}")
    return Client(broker[0], broker[1], version=version, **options)  # type: ignore[arg-type]


async def next_message(client: Client) -> Message:
    async with asyncio.timeout(WAIT):
        return await client.get_message()


@pytest.mark.parametrize("version", VERSIONS)
async def test_connect_reports_connack(
    shared_broker: tuple[str, int], version: ProtocolVersion
) -> None:
    async with new_client(shared_broker, version) as client:
        assert client.is_connected
        assert client.connack is not None
        assert client.connack.reason_code == 0
        assert client.session_present is False
    assert not client.is_connected
    assert client.closed.result() is None


@pytest.mark.parametrize("version", [ProtocolVersion.V31, *VERSIONS])
@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_round_trip_each_qos(
    shared_broker: tuple[str, int], topic: str, version: ProtocolVersion, qos: int
) -> None:
    async with new_client(shared_broker, version) as sub, new_client(shared_broker, version) as pub:
        granted = await sub.subscribe(f"{topic}/#", qos=qos)
        assert granted == (qos,)
        await pub.publish(f"{topic}/a", b"\x00binary\xff", qos=qos)
        await pub.publish(f"{topic}/b", "text", qos=qos)
        first, second = await next_message(sub), await next_message(sub)
    assert (first.topic, first.payload, first.qos) == (f"{topic}/a", b"\x00binary\xff", qos)
    assert (second.topic, second.payload, second.qos) == (f"{topic}/b", b"text", qos)
    assert first.retain is False


@pytest.mark.parametrize("version", VERSIONS)
async def test_subscribe_several_filters_returns_granted_codes(
    shared_broker: tuple[str, int], topic: str, version: ProtocolVersion
) -> None:
    async with new_client(shared_broker, version) as client:
        granted = await client.subscribe((f"{topic}/a", 2), (f"{topic}/b/+", 0), f"{topic}/c")
        assert granted == (2, 0, 0)
        codes = await client.unsubscribe(f"{topic}/a", f"{topic}/b/+")
        assert codes == (() if version == ProtocolVersion.V311 else (0, 0))


@pytest.mark.parametrize("version", VERSIONS)
async def test_unsubscribed_topic_is_no_longer_delivered(
    shared_broker: tuple[str, int], topic: str, version: ProtocolVersion
) -> None:
    async with new_client(shared_broker, version) as sub, new_client(shared_broker, version) as pub:
        await sub.subscribe(f"{topic}/gone", f"{topic}/kept", qos=1)
        await sub.unsubscribe(f"{topic}/gone")
        await pub.publish(f"{topic}/gone", b"1", qos=1)
        await pub.publish(f"{topic}/kept", b"2", qos=1)
        message = await next_message(sub)
    assert message.topic == f"{topic}/kept"  # same publisher, so order is kept


@pytest.mark.parametrize("version", VERSIONS)
async def test_retained_message_reaches_late_subscriber(
    shared_broker: tuple[str, int], topic: str, version: ProtocolVersion
) -> None:
    async with new_client(shared_broker, version) as pub:
        await pub.publish(f"{topic}/state", b"on", qos=1, retain=True)
        try:
            async with new_client(shared_broker, version) as sub:
                await sub.subscribe(f"{topic}/state", qos=1)
                message = await next_message(sub)
        finally:
            await pub.publish(f"{topic}/state", b"", qos=1, retain=True)  # clear it
    assert (message.payload, message.retain, message.qos) == (b"on", True, 1)


@pytest.mark.parametrize("version", VERSIONS)
async def test_will_is_published_when_the_connection_drops(
    shared_broker: tuple[str, int], topic: str, version: ProtocolVersion
) -> None:
    will = Will(f"{topic}/status", "offline", qos=1)
    async with new_client(shared_broker, version) as watcher:
        await watcher.subscribe(f"{topic}/status", qos=1)
        device = new_client(shared_broker, version, will=will)
        await device.connect()
        device.abort()
        error = await asyncio.wait_for(device.closed, WAIT)
        message = await next_message(watcher)
    assert isinstance(error, ConnectionLost)
    assert (message.topic, message.payload) == (f"{topic}/status", b"offline")


@pytest.mark.parametrize("version", VERSIONS)
async def test_will_is_not_published_after_disconnect(
    shared_broker: tuple[str, int], topic: str, version: ProtocolVersion
) -> None:
    async with new_client(shared_broker, version) as watcher:
        await watcher.subscribe(f"{topic}/#", qos=1)
        async with new_client(shared_broker, version, will=Will(f"{topic}/status", b"offline")):
            pass
        async with new_client(shared_broker, version) as marker:
            await marker.publish(f"{topic}/marker", b"after", qos=1)
        message = await next_message(watcher)
    assert message.topic == f"{topic}/marker"


@pytest.mark.parametrize("version", VERSIONS)
async def test_persistent_session_receives_messages_sent_while_offline(
    shared_broker: tuple[str, int], topic: str, version: ProtocolVersion
) -> None:
    client_id = f"hedgerow-test-{uuid.uuid4().hex[:12]}"
    persistent = new_client(
        shared_broker, version, client_id=client_id, clean_start=False, session_expiry=60
    )
    async with persistent:
        await persistent.subscribe(f"{topic}/queued", qos=1)
    async with new_client(shared_broker, version) as pub:
        for index in range(3):
            await pub.publish(f"{topic}/queued", str(index), qos=1)
    try:
        async with persistent:
            assert persistent.session_present is True
            received = [(await next_message(persistent)).payload for _ in range(3)]
    finally:  # drop the session from the shared broker
        async with new_client(shared_broker, version, client_id=client_id, clean_start=True):
            pass
    assert received == [b"0", b"1", b"2"]


@pytest.mark.parametrize("version", VERSIONS)
async def test_manual_ack_what_was_not_acknowledged_comes_again(
    shared_broker: tuple[str, int], topic: str, version: ProtocolVersion
) -> None:
    """With ``manual_ack`` a QoS 1 message is acknowledged by ``ack()``: the broker sends
    the one left unacknowledged again on the next connection, never the acknowledged one;
    an acknowledgement for an ended connection is refused."""
    client_id = f"hedgerow-test-{uuid.uuid4().hex[:12]}"
    worker = new_client(
        shared_broker, version, client_id=client_id, clean_start=False, session_expiry=60,
        manual_ack=True,
    )  # fmt: skip
    try:
        async with worker:
            await worker.subscribe(f"{topic}/work", qos=1)
            async with new_client(shared_broker, version) as pub:
                await pub.publish(f"{topic}/work", b"done", qos=1)
                await pub.publish(f"{topic}/work", b"unfinished", qos=1)
            done, unfinished = await next_message(worker), await next_message(worker)
            assert (done.payload, unfinished.payload) == (b"done", b"unfinished")
            assert worker.ack(done) is True
            async with new_client(shared_broker, version) as marker:
                await marker.publish(f"{topic}/work", b"marker", qos=1)
            marker_message = await next_message(worker)
            assert worker.ack(marker_message) is True
        assert worker.ack(unfinished) is False  # its connection ended
        async with worker:
            again = await next_message(worker)
            assert again.payload == b"unfinished"
            assert worker.ack(again) is True
    finally:  # drop the session from the shared broker
        async with new_client(shared_broker, version, client_id=client_id, clean_start=True):
            pass


@pytest.mark.parametrize("version", VERSIONS)
async def test_publish_nowait_pipelines_qos1(
    shared_broker: tuple[str, int], topic: str, version: ProtocolVersion
) -> None:
    count = 500  # below mosquitto's default max_queued_messages (1000), which drops the rest
    async with new_client(shared_broker, version) as sub, new_client(shared_broker, version) as pub:
        await sub.subscribe(f"{topic}/bulk", qos=1)
        futures = [pub.publish_nowait(f"{topic}/bulk", str(i), qos=1) for i in range(count)]
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*futures)
            received = [int((await sub.get_message()).payload) for _ in range(count)]
    assert received == list(range(count))


@pytest.mark.parametrize("version", VERSIONS)
async def test_messages_iterator_stops_after_disconnect(
    shared_broker: tuple[str, int], topic: str, version: ProtocolVersion
) -> None:
    client = new_client(shared_broker, version)
    await client.connect()
    await client.subscribe(f"{topic}/it", qos=1)
    await client.publish(f"{topic}/it", b"one", qos=1)
    received = []
    async with asyncio.timeout(WAIT):
        async for message in client.messages():
            received.append(message.payload)
            await client.disconnect()
    assert received == [b"one"]
    assert client.closed.result() is None


async def test_keepalive_pings_keep_an_idle_connection_open(shared_broker: tuple[str, int]) -> None:
    async with new_client(shared_broker, ProtocolVersion.V5, keepalive=1) as client:
        with pytest.raises(TimeoutError):
            # the connection must stay up for 2.5 keepalive periods with no traffic
            await asyncio.wait_for(asyncio.shield(client.closed), 2.5)
        sent, received = client.pings
        assert client.is_connected
    assert sent >= 2
    assert received >= 2


async def test_operations_need_a_connection(shared_broker: tuple[str, int]) -> None:
    client = new_client(shared_broker, ProtocolVersion.V5)
    with pytest.raises(ConnectionLost):
        await client.publish("x", b"")
    with pytest.raises(ConnectionLost):
        await client.subscribe("x")
    async with client:
        with pytest.raises(ClientError):
            await client.connect()
        with pytest.raises(ValueError):
            await client.publish("bad/+/topic", b"")
        with pytest.raises(ValueError):
            await client.subscribe("bad#")


async def test_v5_properties_round_trip(shared_broker: tuple[str, int], topic: str) -> None:
    props = Properties(
        user_properties=(("core", "pi-1"), ("unit", "C")),
        response_topic=f"{topic}/reply",
        correlation_data=b"\x01\x02",
        content_type="application/json",
    )
    async with new_client(shared_broker, ProtocolVersion.V5) as sub:
        await sub.subscribe(f"{topic}/p", qos=1)
        async with new_client(shared_broker, ProtocolVersion.V5) as pub:
            await pub.publish(f"{topic}/p", b"{}", qos=1, properties=props)
        message = await next_message(sub)
    assert message.properties.user_properties == props.user_properties
    assert message.properties.response_topic == props.response_topic
    assert message.properties.correlation_data == props.correlation_data
    assert message.properties.content_type == "application/json"


async def test_outbound_topic_aliases_reach_mosquitto(
    shared_broker: tuple[str, int], topic: str
) -> None:
    async with new_client(shared_broker, ProtocolVersion.V5) as sub:
        await sub.subscribe(f"{topic}/#", qos=1)
        async with new_client(shared_broker, ProtocolVersion.V5, topic_aliases=True) as pub:
            assert pub.connack is not None and pub.connack.properties.topic_alias_maximum
            for index in range(3):
                await pub.publish(f"{topic}/aliased", str(index), qos=index % 2)
            await pub.publish(f"{topic}/other", b"x", qos=1)
        received = [await next_message(sub) for _ in range(4)]
    assert [m.topic for m in received] == [f"{topic}/aliased"] * 3 + [f"{topic}/other"]
    assert [m.payload for m in received] == [b"0", b"1", b"2", b"x"]


async def test_v5_disconnect_with_will_message(shared_broker: tuple[str, int], topic: str) -> None:
    async with new_client(shared_broker, ProtocolVersion.V5) as watcher:
        await watcher.subscribe(f"{topic}/status", qos=1)
        device = new_client(
            shared_broker, ProtocolVersion.V5, will=Will(f"{topic}/status", b"gone", qos=1)
        )
        await device.connect()
        assert "connected" in repr(device)
        await device.disconnect(ReasonCode.DISCONNECT_WITH_WILL_MESSAGE)
        message = await next_message(watcher)
    assert message.payload == b"gone"
    assert device.closed.result() is None
