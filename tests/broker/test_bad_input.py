"""Bad input closes only the offending connection, with the right reason; others carry on."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from hedgerow.broker import Broker, BrokerConfig
from hedgerow.mqtt.codec import encode
from hedgerow.mqtt.packets import (
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    ProtocolVersion,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)
from hedgerow.mqtt.reasons import ReasonCode

from .conftest import RawClient, Running

V5 = ProtocolVersion.V5
V311 = ProtocolVersion.V311


async def assert_others_unaffected(
    running: Running, bystander: RawClient, listener: RawClient
) -> None:
    await bystander.send(Publish("ok/topic", b"still here"))
    m = await listener.recv()
    assert isinstance(m, Publish) and m.payload == b"still here"


@pytest.fixture
async def pair(running: Running) -> tuple[RawClient, RawClient]:
    listener = await RawClient.connected(running.port, "listener")
    await listener.send(Subscribe(1, (Subscription("ok/#", 0),)))
    assert isinstance(await listener.recv(), SubAck)
    bystander = await RawClient.connected(running.port, "bystander")
    return bystander, listener


def publish_bytes(topic: bytes, payload: bytes = b"p", first: int = 0x30) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + payload
    return bytes([first, len(body)]) + body


CASES_V311 = {
    "malformed remaining length": b"\x30\xff\xff\xff\xff\x01",
    "wildcard in PUBLISH topic": publish_bytes(b"a/+/b"),
    "hash in PUBLISH topic": publish_bytes(b"a/#"),
    "invalid UTF-8 topic": publish_bytes(b"a/\xff\xfe"),
    "QoS 3": publish_bytes(b"a/b", first=0x36),
    "reserved bits in SUBSCRIBE": b"\x80\x06\x00\x01\x00\x01a\x00",
    "reserved packet type 0": b"\x00\x00",
    "second CONNECT": encode(Connect("again", V311), V311),
    "server packet from a client": encode(ConnAck(False, 0), V311),
}


@pytest.mark.parametrize("case", sorted(CASES_V311))
async def test_bad_packet_closes_only_that_client(
    running: Running, pair: tuple[RawClient, RawClient], case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hedgerow.broker")
    bad = await RawClient.connected(running.port, "bad")
    await bad.send_bytes(CASES_V311[case])
    assert await bad.closed() == []
    assert "broker.client.protocol_error client=bad " in caplog.text
    assert running.broker.stats().protocol_errors == 1
    await assert_others_unaffected(running, *pair)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (publish_bytes(b"a/+"), ReasonCode.TOPIC_NAME_INVALID),
        (b"\x30\xff\xff\xff\xff\x01", ReasonCode.MALFORMED_PACKET),
        (encode(Connect("again", V5), V5), ReasonCode.PROTOCOL_ERROR),
    ],
)
async def test_v5_gets_disconnect_with_reason(
    running: Running, pair: tuple[RawClient, RawClient], data: bytes, reason: int
) -> None:
    bad = await RawClient.connected(running.port, "bad5", V5)
    # v5 PUBLISH has a properties length byte after the topic
    if data.startswith(b"\x30\x05"):
        data = b"\x30\x06" + data[2:-1] + b"\x00" + data[-1:]
    await bad.send_bytes(data)
    packets = await bad.closed()
    assert len(packets) == 1 and isinstance(packets[0], Disconnect)
    assert packets[0].reason_code == reason
    await assert_others_unaffected(running, *pair)


async def test_publish_before_connect(running: Running, pair: tuple[RawClient, RawClient]) -> None:
    bad = await RawClient.open(running.port)
    await bad.send_bytes(publish_bytes(b"a/b"))
    assert await bad.closed() == []
    await assert_others_unaffected(running, *pair)


async def test_unsupported_protocol_version(running: Running) -> None:
    bad = await RawClient.open(running.port)
    body = b"\x00\x04MQTT\x07\x02\x00\x3c\x00\x01x"
    await bad.send_bytes(bytes([0x10, len(body)]) + body)
    packets = await bad.closed()
    assert packets == [ConnAck(False, ReasonCode.UNSUPPORTED_PROTOCOL_VERSION)]


async def test_oversize_packet() -> None:
    async with Broker(BrokerConfig(max_packet_size=1024)) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        v5 = await RawClient.connected(port, "big5", V5)
        ok = await RawClient.connected(port, "fine", V5)
        await v5.send(Publish("big", b"x" * 2000))
        assert await v5.closed() == [Disconnect(ReasonCode.PACKET_TOO_LARGE)]
        old = await RawClient.connected(port, "big3", V311)
        await old.send_bytes(b"\x30\xff\xff\x7f")  # announces 2 MB: refused before it arrives
        assert await old.closed() == []
        await ok.send(PingReq())
        assert await ok.recv() == PingResp()


async def test_connect_timeout(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hedgerow.broker")
    async with Broker(BrokerConfig(connect_timeout=0.3, sweep_interval=0.05)) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        silent = await RawClient.open(port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await silent.closed(timeout=3) == []
        assert loop.time() - started >= 0.25
        assert "broker.client.connect_timeout" in caplog.text


async def test_client_that_never_reads_is_dropped_memory_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hedgerow.broker")
    config = BrokerConfig(
        max_outbound_bytes=256 * 1024,
        write_high_water=64 * 1024,
        write_low_water=16 * 1024,
        backpressure_timeout=0.2,
        slow_client_timeout=3.0,
        sweep_interval=0.05,
    )
    async with Broker(config) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        # A subscriber with a tiny receive buffer that never reads.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        try:
            loop = asyncio.get_running_loop()
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, encode(Connect("deaf", V311), V311))
            await loop.sock_sendall(sock, encode(Subscribe(1, (Subscription("flood", 0),)), V311))
            healthy = await RawClient.connected(port, "healthy")
            await healthy.send(Subscribe(1, (Subscription("flood", 0),)))
            assert isinstance(await healthy.recv(), SubAck)
            publisher = await RawClient.connected(port, "publisher")
            payload = b"x" * 16000
            received = 0
            largest = 0
            async with asyncio.timeout(15):
                while broker.stats().clients_connected == 3:
                    for _ in range(50):
                        await publisher.send(Publish("flood", payload))
                    await asyncio.sleep(0)  # let the broker read
                    for conn in broker.hub.connections:
                        assert conn.transport is not None
                        held = conn.transport.get_write_buffer_size() + conn.held_bytes
                        largest = max(largest, held)
                    while received < broker.stats().messages_in - 50:
                        m = await healthy.recv()
                        assert isinstance(m, Publish)
                        received += 1
            stats = broker.stats()
            assert stats.dropped_qos0 > 0
            assert "deaf" in caplog.text and "slow consumer" in caplog.text
            # The broker held at most its bound (plus one read burst) for the deaf client.
            assert 0 < largest < config.max_outbound_bytes + 256 * 1024
            await publisher.send(Publish("flood", b"after"))
            while True:
                m = await healthy.recv()
                assert isinstance(m, Publish)
                if m.payload == b"after":
                    break
        finally:
            sock.close()
