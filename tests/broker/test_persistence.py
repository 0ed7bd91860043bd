"""Persistence: sessions, their subscriptions and queued QoS 1/2 messages, and retained
messages survive a kill -9 of a real ``hedgerow broker --persist DIR`` (paho clients)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from hedgerow.broker import Broker, BrokerConfig

from ..conftest import free_port
from .conftest import RawClient
from .test_real_peers import Paho, paho

WAIT = 10.0


@asynccontextmanager
async def broker_process(port: int, directory: Path, *extra: str) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hedgerow", "broker", "--port", str(port),
        "--persist", str(directory), *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), WAIT)
        assert f"mqtt://127.0.0.1:{port}" in line.decode(), line
        yield
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)  # the point: no clean shutdown, ever
            await proc.wait()


def v5_session(expiry: int) -> PahoProperties:
    props = PahoProperties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry
    return props


async def test_acknowledged_messages_and_sessions_survive_kill_9(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "persist"
    count = 50
    async with broker_process(port, data):

        def before() -> None:
            with paho(port, "keeper-311", mqtt.MQTTv311, clean=False) as sub:
                sub.start()
                sub.subscribe("keep/#", 1)
            with paho(port, "keeper-5", mqtt.MQTTv5) as sub5:
                sub5.start(clean_start=False, properties=v5_session(3600))
                sub5.subscribe("keep/#", 2)
            with paho(port, "short-lived", mqtt.MQTTv311, clean=True) as clean:
                clean.start()
                clean.subscribe("keep/#", 1)
            with paho(port, "sender", mqtt.MQTTv311) as pub:
                pub.start()
                pub.publish_and_wait("status/door", b"open", 1, retain=True)
                for i in range(count):  # each one: PUBACK received before the next
                    pub.publish_and_wait(f"keep/{i % 3}", str(i).encode(), 1 + i % 2)

        await asyncio.to_thread(before)
    # killed with SIGKILL right after the last PUBACK
    async with broker_process(port, data):

        def after() -> None:
            with paho(port, "keeper-311", mqtt.MQTTv311, clean=False) as sub:
                sub.start()
                got = [int(sub.get().payload) for _ in range(count)]
                assert sorted(got) == list(range(count))
            with paho(port, "keeper-5", mqtt.MQTTv5) as sub5:
                sub5.start(clean_start=False, properties=v5_session(3600))
                got5 = [sub5.get() for _ in range(count)]
                assert sorted(int(m.payload) for m in got5) == list(range(count))
                assert {m.qos for m in got5} == {1, 2}
            with paho(port, "late", mqtt.MQTTv311) as late:
                late.start()
                late.subscribe("status/#", 1)
                message = late.get()
                assert (message.topic, message.payload, message.retain) == (
                    "status/door",
                    b"open",
                    True,
                )

        await asyncio.to_thread(after)
        # the clean session was not kept: nothing of it came back
        client = await RawClient.open(port)
        from hedgerow.mqtt.packets import ConnAck, Connect, ProtocolVersion

        await client.send(Connect("short-lived", ProtocolVersion.V311, clean_start=False))
        ack = await client.recv()
        assert isinstance(ack, ConnAck) and ack.session_present is False


async def test_delivered_messages_are_not_redelivered_after_a_restart(tmp_path: Path) -> None:
    """Acknowledgements from subscribers are written too (within the flush interval)."""
    port = free_port()
    data = tmp_path / "persist"
    async with broker_process(port, data, "--persist-interval", "0.2"):

        def first() -> None:
            with paho(port, "reader", mqtt.MQTTv311, clean=False) as sub:
                sub.start()
                sub.subscribe("once/#", 1)
                with paho(port, "writer", mqtt.MQTTv311) as pub:
                    pub.start()
                    pub.publish_and_wait("once/a", b"read already", 1)
                assert sub.get().payload == b"read already"

        await asyncio.to_thread(first)
        db = data / "broker.db"

        async def acknowledged() -> None:
            while True:
                with sqlite3.connect(db) as conn:
                    if not conn.execute("SELECT count(*) FROM messages").fetchone()[0]:
                        return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(acknowledged(), WAIT)
    async with broker_process(port, data):

        def second() -> None:
            with paho(port, "writer", mqtt.MQTTv311) as pub:
                pub.start()
                pub.publish_and_wait("once/b", b"new", 1)
            sub = Paho(port, "reader", mqtt.MQTTv311, clean=False)
            try:
                sub.start()
                assert sub.get().payload == b"new"  # not "read already" first
            finally:
                sub.stop()

        await asyncio.to_thread(second)


async def test_in_process_broker_persists_on_clean_close(tmp_path: Path) -> None:
    """The embedding API (the core's): Broker(persist=DIR) restores on the next start."""
    async with Broker(BrokerConfig(), persist=tmp_path) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        await broker.publish("cfg/mode", b"eco", qos=1, retain=True)
        from hedgerow.mqtt.packets import ProtocolVersion, SubAck, Subscribe, Subscription

        sub = await RawClient.connected(port, "dev", ProtocolVersion.V311, clean_start=False)
        await sub.send(Subscribe(1, (Subscription("cmd/#", 1),)))
        assert isinstance(await sub.recv(), SubAck)
        await sub.close()
        await broker.publish("cmd/go", b"now", qos=1)
    async with Broker(BrokerConfig(), persist=tmp_path) as broker:
        assert broker.stats().retained == 1 and broker.stats().sessions == 1
        assert broker.stats().queued_messages == 1


async def test_unacknowledged_deliveries_resume_after_a_restart(tmp_path: Path) -> None:
    """In flight at shutdown: a QoS 1 PUBLISH comes again with DUP, a QoS 2 flow past
    PUBREC continues with PUBREL; v5 properties and message expiry survive."""
    from hedgerow.mqtt.packets import (
        ConnAck,
        Connect,
        Properties,
        ProtocolVersion,
        Publish,
        PubRec,
        PubRel,
        SubAck,
        Subscribe,
        Subscription,
    )

    v5 = ProtocolVersion.V5
    keep = Properties(session_expiry_interval=3600)
    async with Broker(BrokerConfig(), persist=tmp_path) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        sub = await RawClient.connected(port, "slow", v5, clean_start=False, properties=keep)
        await sub.send(Subscribe(1, (Subscription("q/#", 2),)))
        assert isinstance(await sub.recv(), SubAck)
        props = Properties(message_expiry_interval=3600, user_properties=(("k", "v"),))
        await broker.publish("q/1", b"one", qos=1, properties=props)
        await broker.publish("q/2", b"two", qos=2)
        first = await sub.recv()
        second = await sub.recv()
        assert isinstance(first, Publish) and isinstance(second, Publish)
        await sub.send(PubRec(second.packet_id))  # type: ignore[arg-type]
        assert isinstance(await sub.recv(), PubRel)
        sub.writer.close()  # gone without PUBACK / PUBCOMP
    async with Broker(BrokerConfig(), persist=tmp_path) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        again = await RawClient.open(port, v5)
        await again.send(Connect("slow", v5, clean_start=False, properties=keep))
        ack = await again.recv()
        assert isinstance(ack, ConnAck) and ack.session_present
        got = [await again.recv(), await again.recv()]
        resent = next(p for p in got if isinstance(p, Publish))
        assert (resent.topic, resent.payload, resent.dup) == ("q/1", b"one", True)
        assert resent.properties.user_properties == (("k", "v"),)
        assert 3500 < (resent.properties.message_expiry_interval or 0) <= 3600
        released = next(p for p in got if isinstance(p, PubRel))
        assert released.packet_id == second.packet_id


async def test_an_unusable_persistence_directory_is_a_clear_error(tmp_path: Path) -> None:
    from hedgerow.broker.persistence import PersistenceError

    (tmp_path / "broker.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(PersistenceError, match="move a damaged broker.db aside"):
        async with Broker(BrokerConfig(), persist=tmp_path):
            pass


async def test_every_acknowledged_message_is_on_disk_when_its_puback_arrives(
    tmp_path: Path,
) -> None:
    """Read the database right after the last PUBACK, while the broker runs: the rows are
    there (the long queue is written incrementally, commit by commit)."""
    from hedgerow.mqtt.packets import ProtocolVersion, PubAck, Publish, SubAck, Subscribe
    from hedgerow.mqtt.packets import Subscription as Sub

    count = 2000
    async with Broker(BrokerConfig(), persist=tmp_path, persist_interval=60.0) as broker:
        _, port = await broker.listen("127.0.0.1", 0)
        away = await RawClient.connected(port, "away", ProtocolVersion.V311, clean_start=False)
        await away.send(Subscribe(1, (Sub("bulk/#", 1),)))
        assert isinstance(await away.recv(), SubAck)
        await away.close()
        pub = await RawClient.connected(port, "bulk-pub", ProtocolVersion.V311)
        for i in range(count):  # pipelined: all sent before any PUBACK is read
            await pub.send(Publish(f"bulk/{i % 7}", str(i).encode(), qos=1, packet_id=i + 1))
        acked = set()
        while len(acked) < count:
            ack = await pub.recv()
            assert isinstance(ack, PubAck)
            acked.add(ack.packet_id)
        with sqlite3.connect(tmp_path / "broker.db") as db:
            rows = db.execute("SELECT count(*) FROM messages WHERE client_id='away'").fetchone()
        assert rows[0] == count
        assert broker.stats().queued_messages == count

        def retained() -> list[str]:
            with sqlite3.connect(tmp_path / "broker.db") as db:
                return [r[0] for r in db.execute("SELECT topic FROM retained")]

        await pub.send(Publish("state/x", b"on", qos=1, retain=True, packet_id=1))
        assert isinstance(await pub.recv(), PubAck)
        assert retained() == ["state/x"]  # acknowledged: on disk, not after the interval
        await pub.send(Publish("state/x", b"", qos=1, retain=True, packet_id=2))
        assert isinstance(await pub.recv(), PubAck)
        assert retained() == []  # cleared, likewise
