"""The outbound memory budget: pure accounting, and real sockets against a running broker.

A *stalled* subscriber is a real socket with a tiny receive buffer that subscribes and
never reads again; a *deaf* one reads but never acknowledges.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from hedgerow.broker import Broker, BrokerConfig
from hedgerow.broker.aliases import MAX_OUTBOUND_ALIASES, OutboundAliases
from hedgerow.broker.budget import OutboundBudget, Verdict, message_cost
from hedgerow.broker.messages import Message
from hedgerow.broker.pacing import Pacing
from hedgerow.broker.sessions import FIRST_WINDOW, Session
from hedgerow.broker.stats import Counters
from hedgerow.clock import ManualClock
from hedgerow.mqtt.codec import encode
from hedgerow.mqtt.packets import (
    ConnAck,
    Connect,
    Disconnect,
    Properties,
    ProtocolVersion,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)
from hedgerow.mqtt.reasons import ReasonCode

from .conftest import RawClient, eventually

V311 = ProtocolVersion.V311
V5 = ProtocolVersion.V5
KIB = 1024


# ---- pure parts ------------------------------------------------------------------------------


def test_budget_verdicts_and_peak() -> None:
    budget = OutboundBudget(client_limit=1000, total_limit=1500)
    assert budget.check(0, 1000) is Verdict.FITS
    assert budget.check(1, 1000) is Verdict.CLIENT_FULL
    budget.add(900)
    assert budget.check(0, 601) is Verdict.TOTAL_FULL
    assert budget.check(0, 600) is Verdict.FITS
    budget.remove(900)
    assert (budget.total, budget.peak) == (0, 900)
    with pytest.raises(ValueError, match="positive"):
        OutboundBudget(0, 10)


def offline_session(budget: OutboundBudget, max_queued: int = 1000) -> Session:
    return Session("away", Counters(), max_queued=max_queued, budget=budget)


def test_a_subscriber_paces_publishers_only_after_it_took_data() -> None:
    """Old code: a subscriber that had never taken anything got ``backpressure_timeout`` of
    credit whenever data started to wait for it (first message in flight, socket
    congested), and paused the publisher meanwhile: a stalled subscriber took 0.25 s from
    the publisher (three: 0.75 s) before its byte budget disconnected it, which cut the
    publisher to 0.05-0.5x of its rate while the stall lasted (bench/hostile.py)."""
    clock = ManualClock(100.0)
    pacing = Pacing(timeout=0.25)
    # connected, first message in flight, socket congested: it has never taken data
    for _ in range(3):
        pacing.busy(clock.now())
        assert not pacing.paces(clock.now())
        clock.advance(0.01)
    # it acknowledges: it takes data, so a full window or socket paces the publisher
    pacing.took(clock.now())
    assert pacing.paces(clock.now())
    assert pacing.stalled_at() == pytest.approx(clock.now() + 0.25)
    clock.advance(0.24)
    assert pacing.paces(clock.now())
    # nothing more for backpressure_timeout: stalled, it paces no one
    clock.advance(0.01)
    assert not pacing.paces(clock.now())
    clock.advance(30)
    assert not pacing.paces(clock.now())
    # idle, then a new burst: a client that took data before gets one round trip's credit
    pacing.busy(clock.now())
    assert pacing.paces(clock.now())
    clock.advance(0.25)
    assert not pacing.paces(clock.now())
    # its socket drains: pacing again
    pacing.took(clock.now())
    clock.advance(0.1)
    assert pacing.paces(clock.now())


def test_offline_session_drops_its_oldest_when_its_budget_is_full() -> None:
    cost = message_cost(b"x" * 100, "t")
    budget = OutboundBudget(client_limit=cost * 5, total_limit=cost * 100)
    session = offline_session(budget)
    for i in range(12):
        session.deliver(Message("t", b"%0100d" % i, 1, False), 1, False, ())
    assert session.queue is not None
    assert [int(m.payload) for m, *_ in session.queue] == [7, 8, 9, 10, 11]
    assert session.held == budget.total == cost * 5
    assert session.counters.dropped_budget == 7
    session.release_all()
    assert budget.total == 0 and budget.peak == cost * 5


def test_the_process_total_bounds_every_session_together() -> None:
    cost = message_cost(b"x" * 100, "t")
    budget = OutboundBudget(client_limit=cost * 10, total_limit=cost * 15)
    a, b = offline_session(budget), offline_session(budget)
    for _ in range(10):
        a.deliver(Message("t", b"x" * 100, 1, False), 1, False, ())
        b.deliver(Message("t", b"x" * 100, 1, False), 1, False, ())
    assert budget.total <= cost * 15 and budget.peak <= cost * 15
    assert a.held + b.held == budget.total
    assert a.counters.dropped_budget + b.counters.dropped_budget == 5


class RecordingLink:
    """A connection that records what the session writes to it (a ``ClientLink``)."""

    max_out_packet = None
    overflowed = False

    def __init__(self) -> None:
        self.written: list[int] = []

    def write_publish(
        self, message: Message, qos: int, retain: bool, dup: bool, pid: int, ids: tuple[int, ...]
    ) -> None:
        self.written.append(pid)

    def busy(self) -> None: ...
    def window_full(self) -> None: ...
    def release_publishers(self) -> None: ...


def test_the_window_opens_as_the_client_acknowledges() -> None:
    """A subscriber that never reads gets ``FIRST_WINDOW`` messages written, not its whole
    Receive Maximum: the rest wait in the queue, cheaply, until its budget disconnects it.
    (Old code: 1,000 messages per stalled subscriber were encoded and written over TLS, a
    third of the core's time while three stalled: bench/hostile.py, 0.59x.) One
    acknowledgement opens the window by one, up to what was negotiated."""
    budget = OutboundBudget(client_limit=1 << 24, total_limit=1 << 26)
    session = offline_session(budget)
    link = RecordingLink()
    session.connection = link  # type: ignore[assignment]  # the parts a delivery uses
    session.open_window(100)
    for i in range(300):
        session.deliver(Message("t", b"%d" % i, 1, False), 1, False, ())
    assert len(link.written) == FIRST_WINDOW and session.queued == 300 - FIRST_WINDOW
    for _ in range(200):  # a reading client: each acknowledgement lets more through
        assert session.inflight
        assert session.on_puback(next(iter(session.inflight)))  # the oldest in flight
        session.drain(0.0)
    assert session.window == 100  # opened to the negotiated limit, never beyond
    assert len(session.inflight or ()) == 100 and len(link.written) == 300
    session.open_window(100)  # a new connection proves itself again
    assert session.window == FIRST_WINDOW
    session.open_window(10)  # a client's Receive Maximum below the first window: that
    assert session.window == 10


def test_a_message_larger_than_the_client_budget_is_dropped_not_queued() -> None:
    budget = OutboundBudget(client_limit=2 * KIB, total_limit=1 << 20)
    session = offline_session(budget)
    session.deliver(Message("t", b"x" * 4 * KIB, 1, False), 1, False, ())
    assert session.queued == 0 and budget.total == 0
    assert session.counters.dropped_budget == 1


def test_outbound_aliases_first_come_never_above_the_maximum() -> None:
    aliases = OutboundAliases(2)
    assert aliases.alias_for("a") == (1, False)
    assert aliases.alias_for("a") == (1, True)
    assert aliases.alias_for("b") == (2, False)
    assert aliases.alias_for("c") == (None, False)  # full: sent with its topic
    aliases.forget("b")  # its PUBLISH was never sent
    assert aliases.alias_for("c") == (2, False)
    assert OutboundAliases(65535).maximum == MAX_OUTBOUND_ALIASES
    with pytest.raises(ValueError, match="no topic alias"):
        OutboundAliases(0)


# ---- against a running broker ---------------------------------------------------------------


@asynccontextmanager
async def broker_with(**config: object) -> AsyncIterator[tuple[Broker, int]]:
    settings: dict[str, object] = {"sweep_interval": 0.05, "backpressure_timeout": 0.2}
    settings.update(config)
    async with Broker(BrokerConfig(**settings)) as broker:  # type: ignore[arg-type]
        _, port = await broker.listen("127.0.0.1", 0)
        yield broker, port


async def stalled_subscriber(port: int, client_id: str, qos: int) -> socket.socket:
    """Subscribes, reads its CONNACK and SUBACK, then never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(
        sock,
        encode(Connect(client_id, V311, keepalive=0), V311)
        + encode(Subscribe(1, (Subscription("flood/#", qos),)), V311),
    )
    got = b""
    async with asyncio.timeout(5):
        while len(got) < 9:
            got += await loop.sock_recv(sock, 9 - len(got))
    return sock


async def publish_qos1(publisher: RawClient, count: int, payload: bytes, window: int) -> None:
    """Publish ``count`` QoS 1 messages with up to ``window`` unacknowledged."""
    outstanding = 0
    sent = 0
    acked = 0
    while acked < count:
        while sent < count and outstanding < window:
            sent += 1
            outstanding += 1
            await publisher.send(Publish("flood/x", payload, qos=1, packet_id=sent % 60000 + 1))
        packet = await publisher.recv()
        if isinstance(packet, PubAck):
            outstanding -= 1
            acked += 1


async def healthy_reader(client: RawClient, received: list[bytes]) -> None:
    while True:
        packet = await client.recv(timeout=30)
        if isinstance(packet, Publish):
            received.append(packet.payload)
            if packet.qos:
                assert packet.packet_id is not None
                await client.send(PubAck(packet.packet_id))


async def test_stalled_qos1_subscriber_is_disconnected_and_memory_stays_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Old code: the stalled client's window (1000 messages) and queue grew without a
    byte bound and the publisher was paused at every sweep (200 msg/s)."""
    caplog.set_level(logging.INFO, logger="hedgerow.broker")
    client_limit = 512 * KIB
    async with broker_with(
        max_outbound_bytes=client_limit, max_total_outbound_bytes=4 * client_limit
    ) as (broker, port):
        healthy = await RawClient.connected(port, "healthy")
        await healthy.send(Subscribe(1, (Subscription("flood/#", 1),)))
        assert isinstance(await healthy.recv(), SubAck)
        received: list[bytes] = []
        reader = asyncio.create_task(healthy_reader(healthy, received))
        stalled = await stalled_subscriber(port, "stalled", 1)
        publisher = await RawClient.connected(port, "publisher")
        payload = b"p" * (16 * KIB)
        # the healthy one takes a first message: a client that never took any gets no
        # pacing, only its byte budget (pacing.py), and a burst could fill that first
        await publish_qos1(publisher, 1, b"warm-up", window=1)
        await eventually(lambda: received == [b"warm-up"])
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, broker.hub.budget.total)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            # 2000 x 16 KiB = 31 MiB through a broker allowed 512 KiB for the stalled client
            await asyncio.wait_for(publish_qos1(publisher, 2000, payload, window=20), 20)
            elapsed = loop.time() - started
            await eventually(lambda: len(received) == 2001, timeout=10)
        finally:
            watcher.cancel()
            reader.cancel()
            stalled.close()
        stats = broker.stats()
        assert "stalled" in caplog.text and "outbound budget" in caplog.text
        assert stats.slow_consumers == 1
        # the budget held: the stalled client's window and queue never grew past its limit
        assert stats.outbound_bytes_peak <= client_limit + 2 * client_limit
        assert peak <= 3 * client_limit
        assert broker.hub.sessions.get("stalled") is None  # clean session: gone with it
        # the publisher was never paused for the stalled client beyond its first round trip
        assert elapsed < 15


async def test_deaf_v5_client_with_a_full_window_is_disconnected_with_quota_exceeded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Reads, never acknowledges: its window stays full; old code never disconnected it."""
    caplog.set_level(logging.INFO, logger="hedgerow.broker")
    async with broker_with(slow_client_timeout=0.6) as (broker, port):
        deaf = await RawClient.connected(port, "deaf", V5, properties=Properties(receive_maximum=2))
        await deaf.send(Subscribe(1, (Subscription("flood/#", 1),)))
        assert isinstance(await deaf.recv(), SubAck)
        publisher = await RawClient.connected(port, "publisher")
        for i in range(5):
            await publisher.send(Publish("flood/x", b"m%d" % i, qos=1, packet_id=i + 1))
        loop = asyncio.get_running_loop()
        started = loop.time()
        seen = [await deaf.recv(), await deaf.recv()]
        assert all(isinstance(p, Publish) for p in seen)  # its Receive Maximum: 2 at a time
        rest = await deaf.closed(timeout=5)
        waited = loop.time() - started
        assert rest == [Disconnect(ReasonCode.QUOTA_EXCEEDED)]
        assert 0.5 <= waited < 3
        assert "in-flight window full (slow consumer)" in caplog.text
        assert broker.stats().slow_consumers == 1


async def test_process_total_full_disconnects_with_server_busy() -> None:
    cost = message_cost(b"x" * 4 * KIB, "flood/x")
    async with broker_with(
        max_outbound_bytes=cost * 8, max_total_outbound_bytes=cost * 12, slow_client_timeout=30
    ) as (broker, port):
        clients = []
        for name in ("a", "b"):
            # Receive Maximum 1 and no acknowledgements: everything else waits in its queue
            c = await RawClient.connected(port, name, V5, properties=Properties(receive_maximum=1))
            await c.send(Subscribe(1, (Subscription("flood/#", 1),)))
            assert isinstance(await c.recv(), SubAck)
            clients.append(c)
        publisher = await RawClient.connected(port, "publisher")
        for i in range(7):
            await publisher.send(Publish("flood/x", b"x" * 4 * KIB, qos=1, packet_id=i + 1))
            assert isinstance(await publisher.recv(), PubAck)
        endings = [await c.closed(timeout=5) for c in clients]
        flat = [p for packets in endings for p in packets]
        assert Disconnect(ReasonCode.SERVER_BUSY) in flat
        assert broker.hub.budget.total <= cost * 12
        assert broker.hub.budget.peak <= cost * 12


async def test_stalled_qos0_subscriber_drops_within_budget_and_others_keep_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hedgerow.broker")
    client_limit = 256 * KIB
    async with broker_with(
        max_outbound_bytes=client_limit,
        write_high_water=64 * KIB,
        write_low_water=16 * KIB,
        slow_client_timeout=1.0,
    ) as (broker, port):
        healthy = await RawClient.connected(port, "healthy")
        await healthy.send(Subscribe(1, (Subscription("flood/#", 0),)))
        assert isinstance(await healthy.recv(), SubAck)
        received: list[bytes] = []
        reader = asyncio.create_task(healthy_reader(healthy, received))
        stalled = await stalled_subscriber(port, "stalled", 0)
        publisher = await RawClient.connected(port, "publisher")
        try:
            async with asyncio.timeout(20):
                n = 0
                while broker.stats().slow_consumers == 0:
                    n += 1
                    await publisher.send(Publish("flood/x", b"%08d" % n + b"y" * 16000))
                    if n % 20 == 0:
                        await eventually(lambda n=n: len(received) >= n - 20)  # type: ignore[misc]
                        assert broker.hub.budget.peak <= client_limit + 64 * KIB
                await publisher.send(Publish("flood/x", b"after"))
                await eventually(lambda: b"after" in received)
        finally:
            reader.cancel()
            stalled.close()
        assert broker.stats().dropped_qos0 > 0
        assert "not reading for" in caplog.text and "stalled" in caplog.text


async def test_a_stalled_qos0_subscriber_that_reads_again_gets_new_messages() -> None:
    """Dropped QoS 0 while stalled over its budget (without asking the budget for every
    message), delivered again as soon as its socket drained."""
    async with broker_with(
        max_outbound_bytes=128 * KIB,
        write_high_water=32 * KIB,
        write_low_water=8 * KIB,
        slow_client_timeout=30.0,
    ) as (broker, port):
        sleeper = await stalled_subscriber(port, "sleeper", 0)
        publisher = await RawClient.connected(port, "publisher")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(20):
                while broker.stats().dropped_qos0 < 50:
                    await publisher.send(Publish("flood/x", b"z" * 8000))
                    await asyncio.sleep(0)
                dropped = broker.stats().dropped_qos0
                got = bytearray()

                async def read_until(marker: bytes) -> None:
                    while marker not in got:
                        got.extend(await loop.sock_recv(sleeper, 65536))

                reading = asyncio.create_task(read_until(b"back-again"))
                # once it drained, the broker stops dropping: a later message reaches it
                while not reading.done():
                    await publisher.send(Publish("flood/x", b"back-again"))
                    await asyncio.wait({reading}, timeout=0.05)
                await reading
        finally:
            sleeper.close()
        assert broker.stats().slow_consumers == 0
        assert dropped >= 50 and b"back-again" in got


async def test_offline_persistent_session_keeps_the_newest_within_its_budget() -> None:
    cost = message_cost(b"%04d" % 0 + b"z" * 1000, "keep/x")
    async with broker_with(max_outbound_bytes=cost * 10) as (broker, port):
        sub = await RawClient.connected(port, "sleeper", clean_start=False)
        await sub.send(Subscribe(1, (Subscription("keep/#", 1),)))
        assert isinstance(await sub.recv(), SubAck)
        await sub.close()
        await eventually(lambda: broker.stats().clients_connected == 0)
        publisher = await RawClient.connected(port, "publisher")
        for i in range(50):
            await publisher.send(
                Publish("keep/x", b"%04d" % i + b"z" * 1000, qos=1, packet_id=i + 1)
            )
            assert isinstance(await publisher.recv(), PubAck)
        assert broker.stats().dropped_budget == 40
        back = await RawClient.open(port)
        await back.send(Connect("sleeper", V311, clean_start=False))
        ack = await back.recv()
        assert isinstance(ack, ConnAck) and ack.session_present
        got = []
        for _ in range(10):
            p = await back.recv()
            assert isinstance(p, Publish) and p.packet_id is not None
            got.append(int(p.payload[:4]))
            await back.send(PubAck(p.packet_id))
        assert got == list(range(40, 50))
        await eventually(lambda: broker.hub.budget.total == 0)


async def test_outbound_topic_aliases_towards_a_raw_v5_client() -> None:
    async with broker_with() as (broker, port):
        sub = await RawClient.connected(
            port, "aliased", V5, properties=Properties(topic_alias_maximum=2)
        )
        await sub.send(Subscribe(1, (Subscription("a/#", 1),)))
        assert isinstance(await sub.recv(), SubAck)
        plain = await RawClient.connected(port, "plain", V5)  # allows none: never gets one
        await plain.send(Subscribe(1, (Subscription("a/#", 0),)))
        assert isinstance(await plain.recv(), SubAck)
        publisher = await RawClient.connected(port, "publisher")
        topics = ["a/1", "a/2", "a/1", "a/3", "a/2", "a/3"]
        for i, topic in enumerate(topics):
            await publisher.send(Publish(topic, b"%d" % i, qos=1, packet_id=i + 1))
        seen = []
        for _ in topics:
            p = await sub.recv()
            assert isinstance(p, Publish) and p.packet_id is not None
            seen.append((p.topic, p.properties.topic_alias))
            await sub.send(PubAck(p.packet_id))
        assert seen == [
            ("a/1", 1),
            ("a/2", 2),
            ("", 1),
            ("a/3", None),  # both aliases taken: the topic in full
            ("", 2),
            ("a/3", None),
        ]
        for topic in topics:
            p = await plain.recv()
            assert isinstance(p, Publish)
            assert (p.topic, p.properties.topic_alias) == (topic, None)


async def test_when_the_total_is_full_the_hoarder_goes_not_the_healthy_subscriber() -> None:
    cost = message_cost(b"x" * 4 * KIB, "flood/x")
    async with broker_with(
        max_outbound_bytes=cost * 8, max_total_outbound_bytes=cost * 6, slow_client_timeout=30
    ) as (broker, port):
        hoarder = await RawClient.connected(
            port, "hoarder", V5, properties=Properties(receive_maximum=1)
        )
        await hoarder.send(Subscribe(1, (Subscription("flood/#", 1),)))
        assert isinstance(await hoarder.recv(), SubAck)
        healthy = await RawClient.connected(port, "healthy", V5)
        await healthy.send(Subscribe(1, (Subscription("flood/#", 1),)))
        assert isinstance(await healthy.recv(), SubAck)
        received: list[bytes] = []
        reader = asyncio.create_task(healthy_reader(healthy, received))
        publisher = await RawClient.connected(port, "publisher")
        try:
            for i in range(20):
                await publisher.send(Publish("flood/x", b"x" * 4 * KIB, qos=1, packet_id=i + 1))
                assert isinstance(await publisher.recv(), PubAck)
                await eventually(lambda i=i: len(received) == i + 1)  # type: ignore[misc]
            ending = await hoarder.closed(timeout=5)
        finally:
            reader.cancel()
        assert Disconnect(ReasonCode.SERVER_BUSY) in ending
        assert broker.stats().slow_consumers == 1
        assert broker.stats().dropped_budget >= 1
        assert broker.hub.budget.peak <= cost * 7  # one message over, while the hoarder went


async def test_messages_restored_from_persistence_count_against_the_budget(
    tmp_path: object,
) -> None:
    from pathlib import Path

    directory = Path(str(tmp_path))
    keep = Properties(session_expiry_interval=3600)
    async with Broker(BrokerConfig(), persist=directory) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        sub = await RawClient.connected(port, "keeper", V5, clean_start=False, properties=keep)
        await sub.send(Subscribe(1, (Subscription("p/#", 1),)))
        assert isinstance(await sub.recv(), SubAck)
        await sub.close()
        await eventually(lambda: broker.stats().clients_connected == 0)
        for i in range(5):
            await broker.publish("p/x", b"%d" % i + b"q" * 999, qos=1)
        held = broker.hub.budget.total
        assert held == 5 * message_cost(b"0" + b"q" * 999, "p/x")
    async with Broker(BrokerConfig(), persist=directory) as broker:
        assert broker.hub.budget.total == held  # the restored queue is counted again
        _, port = await broker.listen("127.0.0.1", 0)
        back = await RawClient.open(port, V5)
        await back.send(Connect("keeper", V5, clean_start=False, properties=keep))
        assert isinstance(await back.recv(), ConnAck)
        for _ in range(5):
            p = await back.recv()
            assert isinstance(p, Publish) and p.packet_id is not None
            await back.send(PubAck(p.packet_id))
        await eventually(lambda: broker.hub.budget.total == 0)


async def test_an_alias_that_would_overflow_the_clients_packet_size_is_left_out() -> None:
    from hedgerow.mqtt.codec import encode_publish

    payload = b"z" * 200
    exact = len(encode_publish("big/t", payload, 1, False, False, 1, V5, None))
    async with broker_with() as (broker, port):
        sub = await RawClient.connected(
            port,
            "tight",
            V5,
            properties=Properties(topic_alias_maximum=4, maximum_packet_size=exact),
        )
        await sub.send(Subscribe(1, (Subscription("big/#", 1),)))
        assert isinstance(await sub.recv(), SubAck)
        for _ in range(2):
            await broker.publish("big/t", payload, qos=1)
            p = await sub.recv()
            assert isinstance(p, Publish) and p.packet_id is not None
            assert (p.topic, p.properties.topic_alias, p.payload) == ("big/t", None, payload)
            await sub.send(PubAck(p.packet_id))
        await eventually(lambda: broker.hub.budget.total == 0)
