"""Interceptors that store messages: the broker acknowledges QoS 1/2 only once they are stored."""

from __future__ import annotations

import asyncio

import pytest

from hedgerow.broker.auth import Identity
from hedgerow.client import Client, ConnectionLost
from hedgerow.mqtt.packets import ProtocolVersion, Publish
from tests.broker.conftest import TIMEOUT, Running


@pytest.mark.parametrize("qos", [1, 2])
async def test_puback_waits_for_the_interceptor(running: Running, qos: int) -> None:
    stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    def store(identity: Identity, publish: Publish) -> asyncio.Future[None] | None:
        seen.append(publish.topic)
        return stored if publish.qos else None

    running.broker.add_interceptor(store)
    async with Client(running.host, running.port, client_id="c", version=ProtocolVersion.V5) as c:
        acked = c.publish_nowait("t/1", b"x", qos=qos)
        await asyncio.wait_for(_until(lambda: bool(seen)), TIMEOUT)
        await asyncio.sleep(0.05)
        assert not acked.done()  # not stored yet: no acknowledgement
        stored.set_result(None)
        await asyncio.wait_for(acked, TIMEOUT)
        await c.publish("t/0", b"y", qos=0)  # QoS 0 never waits
    assert seen == ["t/1", "t/0"]


async def test_a_failed_store_disconnects_without_acknowledging(running: Running) -> None:
    def refuse(identity: Identity, publish: Publish) -> asyncio.Future[None]:
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(RuntimeError("disk full"))
        return failed

    running.broker.add_interceptor(refuse)
    async with Client(
        running.host, running.port, client_id="c2", version=ProtocolVersion.V311
    ) as c:
        acked = c.publish_nowait("t/2", b"x", qos=1)
        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(acked, TIMEOUT)


async def _until(predicate: object) -> None:
    assert callable(predicate)
    while not predicate():
        await asyncio.sleep(0.01)


async def test_a_qos2_message_not_stored_is_taken_again_when_resent(running: Running) -> None:
    attempts: list[bytes] = []

    def store_second_time(identity: Identity, publish: Publish) -> asyncio.Future[None]:
        attempts.append(publish.payload)
        result: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if len(attempts) == 1:
            result.set_exception(RuntimeError("store unavailable"))
        else:
            result.set_result(None)
        return result

    running.broker.add_interceptor(store_second_time)
    options = {
        "client_id": "q2",
        "version": ProtocolVersion.V5,
        "clean_start": False,
        "session_expiry": 60,
    }
    client = Client(running.host, running.port, **options)  # type: ignore[arg-type]
    await client.connect()
    first = client.publish_nowait("t/q2", b"once", qos=2)
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(first, TIMEOUT)
    await client.connect()  # the session resumes; the unacknowledged PUBLISH is resent (DUP)
    try:
        await asyncio.wait_for(_until(lambda: len(attempts) == 2), TIMEOUT)
    finally:
        await client.disconnect()
    assert attempts == [b"once", b"once"]  # offered to the store again, not swallowed as a dup


async def test_a_resent_qos2_message_already_taken_is_not_intercepted_twice(
    running: Running,
) -> None:
    from hedgerow.mqtt.packets import PubRec
    from tests.broker.conftest import RawClient

    taken: list[bool] = []

    def store(identity: Identity, publish: Publish) -> asyncio.Future[None]:
        taken.append(publish.dup)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    running.broker.add_interceptor(store)
    raw = await RawClient.connected(running.port, "raw-q2")
    await raw.send(Publish("t/x", b"1", qos=2, packet_id=7))
    assert await raw.recv() == PubRec(7)
    await raw.send(Publish("t/x", b"1", qos=2, dup=True, packet_id=7))  # PUBREC "lost": resent
    assert await raw.recv() == PubRec(7)
    assert taken == [False]  # exactly once


async def test_an_interceptor_returning_a_plain_value_is_logged_not_awaited(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in an interceptor (returning, say, a timestamp) must not kill the sender's
    connection: the value is logged and the message acknowledged as if it returned None."""
    running.broker.add_interceptor(lambda identity, publish: 12.5)  # type: ignore[arg-type,return-value]
    async with Client(running.host, running.port, client_id="c9", version=ProtocolVersion.V5) as c:
        for n in range(3):
            await asyncio.wait_for(c.publish(f"t/{n}", b"x", qos=1), TIMEOUT)
    assert "broker.interceptor_bad_result" in caplog.text
    assert "result=12.5 expected='an awaitable or None'" in caplog.text
