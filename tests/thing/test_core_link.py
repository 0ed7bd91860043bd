"""The SDK against real sockets: a discovery stand-in and a Hedgerow broker as the core."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from hedgerow import pki
from hedgerow.broker import Broker, ConnectInfo, Identity, Refused
from hedgerow.broker.auth import NOT_AUTHORIZED
from hedgerow.client import Client, Message
from hedgerow.thing import (
    DropPolicy,
    MemoryQueue,
    NotInGroupError,
    SqliteQueue,
    SyncThing,
    Thing,
    connect,
)
from tests.conftest import free_port

from .conftest import (
    DiscoveryStandIn,
    Env,
    Recorder,
    core_broker,
    discovery_body,
    subscriber_credentials,
)

TIMEOUT = 15


async def collect(client: Client, count: int) -> list[Message]:
    out: list[Message] = []
    async with asyncio.timeout(TIMEOUT):
        async for message in client.messages():
            out.append(message)
            if len(out) == count:
                return out
    return out


def observer(env: Env, port: int, group_index: int = 0) -> Client:
    return Client(
        "127.0.0.1",
        port,
        client_id="observer",
        ssl=subscriber_credentials(env, env.groups[group_index]),
        server_hostname="127.0.0.1",
    )


async def test_discovers_connects_and_publishes(env: Env, discovery: DiscoveryStandIn) -> None:
    port = free_port()
    discovery.response = (200, discovery_body([env.groups[0].pem], port))
    async with core_broker(env, env.groups[0], port) as broker, observer(env, port) as obs:
        await obs.subscribe("sensors/#", qos=1)
        async with Thing(env.config(discovery.endpoint)) as thing:
            async with asyncio.timeout(TIMEOUT):
                endpoint = await thing.wait_connected()
            assert (endpoint.host, endpoint.port) == ("127.0.0.1", port)
            assert ("bme680-1", "bme680-1") in [
                (cid, ident.name) for cid, ident in broker.clients()
            ]
            for i in range(3):
                assert thing.publish("sensors/bme680-1", json.dumps({"i": i}), qos=1)
            received = await collect(obs, 3)
            assert [json.loads(m.payload)["i"] for m in received] == [0, 1, 2]
            assert await thing.flush(5)
            stats = thing.stats()
            assert (stats.connected, stats.delivered, stats.queued, stats.discoveries) == (
                True,
                3,
                0,
                1,
            )
    cached = json.loads((env.directory / "state" / "bme680-1.json").read_text())
    assert cached["last_good"] == {"host": "127.0.0.1", "port": port}
    assert cached["discovery"]["GGGroups"][0]["CAs"] == [env.groups[0].pem]


async def test_a_rebooted_thing_reconnects_from_its_cache_without_the_cloud(
    env: Env, discovery: DiscoveryStandIn
) -> None:
    port = free_port()
    discovery.response = (200, discovery_body([env.groups[0].pem], port))
    async with core_broker(env, env.groups[0], port):
        async with Thing(env.config(discovery.endpoint)) as first:
            async with asyncio.timeout(TIMEOUT):
                await first.wait_connected()
        await discovery.stop()  # the cloud is gone
        async with Thing(env.config(discovery.endpoint)) as second:
            async with asyncio.timeout(TIMEOUT):
                await second.wait_connected()
            assert second.discoveries == 0
    assert len(discovery.requests) == 1


async def test_survives_a_core_restart_without_losing_queued_messages(
    env: Env, discovery: DiscoveryStandIn
) -> None:
    port = free_port()
    discovery.response = (200, discovery_body([env.groups[0].pem], port))
    config = env.config(discovery.endpoint)
    recorder = Recorder()
    async with Thing(config, queue=MemoryQueue(1000)) as thing:
        async with core_broker(env, env.groups[0], port, recorder):
            async with asyncio.timeout(TIMEOUT):
                await thing.wait_connected()
            thing.publish("sensors/bme680-1", b"before", qos=1)
            assert await thing.flush(5)
        # the core is down: publishing goes on, into the offline queue
        async with asyncio.timeout(TIMEOUT):
            await thing.wait_until(lambda stats: not stats.connected)
        for i in range(20):
            thing.publish("sensors/bme680-1", f"offline-{i}".encode(), qos=1)
        assert thing.stats().queued == 20
        async with core_broker(env, env.groups[0], port, recorder):
            payloads = await recorder.wait_for(21)
            assert payloads == [b"before"] + [f"offline-{i}".encode() for i in range(20)]
            async with asyncio.timeout(TIMEOUT):
                stats = await thing.wait_until(lambda s: s.queued == 0)
            assert stats.disconnects == 1 and stats.connects == 2 and stats.dropped == 0
            assert stats.discoveries == 1  # the core came back where it was: no re-discovery
    assert {name for name, _, _ in recorder.messages} == {"bme680-1"}


async def test_group_ca_rotation_re_discovers_and_keeps_the_queue(
    env: Env, discovery: DiscoveryStandIn
) -> None:
    port = free_port()
    old, new = env.groups[0], env.new_group_ca("b")
    discovery.response = (200, discovery_body([old.pem], port))
    queue = SqliteQueue(env.directory / "queue.db", 1000)
    recorder = Recorder()
    async with Thing(env.config(discovery.endpoint), queue=queue) as thing:
        async with core_broker(env, old, port):
            async with asyncio.timeout(TIMEOUT):
                await thing.wait_connected()
        # rotation: the cloud now hands out the new CA, the core restarts with a cert from it
        discovery.response = (200, discovery_body([new.pem], port))
        for i in range(10):
            thing.publish("sensors/bme680-1", f"m{i}".encode(), qos=1)
        async with core_broker(env, new, port, recorder):
            assert await recorder.wait_for(10) == [f"m{i}".encode() for i in range(10)]
            async with asyncio.timeout(TIMEOUT):
                stats = await thing.wait_until(lambda s: s.queued == 0)
            assert stats.discoveries == 2
    cached = json.loads((env.directory / "state" / "bme680-1.json").read_text())
    assert cached["discovery"]["GGGroups"][0]["CAs"] == [new.pem]


async def test_a_thing_in_no_group_stops_with_a_clear_error(
    env: Env, discovery: DiscoveryStandIn
) -> None:
    discovery.response = (404, {"errorMessage": "thing bme680-1 is in no group"})
    async with Thing(env.config(discovery.endpoint)) as thing:
        with pytest.raises(NotInGroupError, match="no group"):
            async with asyncio.timeout(TIMEOUT):
                await thing.wait_connected()
        assert await thing.wait_finished() is thing.error
    assert len(discovery.requests) == 1  # not retried: retrying cannot help


async def test_an_unreachable_core_is_retried_with_backoff(
    env: Env, discovery: DiscoveryStandIn
) -> None:
    port = free_port()
    discovery.response = (200, discovery_body([env.groups[0].pem], port))
    delays: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        delays.append((low, high))
        return high

    async with Thing(
        env.config(discovery.endpoint, rediscover_after=100), uniform=uniform
    ) as thing:
        async with asyncio.timeout(TIMEOUT):
            stats = await thing.wait_until(lambda stats: stats.connect_failures >= 4)
        assert not stats.connected
        assert stats.last_error is not None and "cannot connect to the core" in stats.last_error
        assert "is the core running" in stats.last_error
        assert delays[:3] == [(0.0, 0.05), (0.0, 0.1), (0.0, 0.2)]
        # now the core starts: the thing gets there on its own
        async with core_broker(env, env.groups[0], port):
            async with asyncio.timeout(TIMEOUT):
                await thing.wait_connected()


async def test_tries_every_advertised_endpoint_in_order(
    env: Env, discovery: DiscoveryStandIn
) -> None:
    dead, alive = free_port(), free_port()
    body = discovery_body([env.groups[0].pem], dead)
    body["GGGroups"][0]["Cores"][0]["Connectivity"].append(
        {"Id": "second", "HostAddress": "localhost", "PortNumber": alive, "Metadata": ""}
    )
    discovery.response = (200, body)
    async with core_broker(env, env.groups[0], alive):
        async with connect(env.config(discovery.endpoint), within=TIMEOUT) as thing:
            assert thing.is_connected and thing.endpoint is not None
            assert (thing.endpoint.host, thing.endpoint.port) == ("localhost", alive)
            assert thing.stats().connect_failures == 0  # the dead one was tried, then the next


async def test_subscriptions_survive_reconnects(env: Env, discovery: DiscoveryStandIn) -> None:
    port = free_port()
    discovery.response = (200, discovery_body([env.groups[0].pem], port))
    async with Thing(env.config(discovery.endpoint)) as thing:
        await thing.subscribe("commands/bme680-1", qos=1)
        messages = thing.messages()
        for round_ in range(2):
            async with core_broker(env, env.groups[0], port) as broker:
                async with asyncio.timeout(TIMEOUT):
                    await thing.wait_connected()  # subscriptions are made before this returns
                await broker.publish("commands/bme680-1", f"go-{round_}", qos=1)
                async with asyncio.timeout(TIMEOUT):
                    message = await anext(messages)
                assert message.payload == f"go-{round_}".encode()


async def test_drop_newest_when_the_offline_queue_is_full(
    env: Env, discovery: DiscoveryStandIn
) -> None:
    discovery.response = (200, discovery_body([env.groups[0].pem], free_port()))
    async with Thing(
        env.config(discovery.endpoint), queue=MemoryQueue(5, DropPolicy.NEWEST)
    ) as thing:
        accepted = [thing.publish("t", b"x", qos=0) for _ in range(8)]
        assert accepted.count(True) == 5
        assert thing.stats().dropped == 3
        with pytest.raises(ValueError):
            thing.publish("t", b"x", qos=2)


def test_sync_wrapper(env: Env, tmp_path: Path) -> None:
    async def scenario() -> list[bytes]:
        port = free_port()
        server = DiscoveryStandIn(env)
        await server.start()
        server.response = (200, discovery_body([env.groups[0].pem], port))
        try:
            async with core_broker(env, env.groups[0], port), observer(env, port) as obs:
                await obs.subscribe("sensors/#", qos=1)

                def use_sync() -> None:
                    with SyncThing(env.config(server.endpoint)) as thing:
                        thing.wait_connected(TIMEOUT)
                        thing.subscribe("commands/bme680-1", qos=1, timeout=TIMEOUT)
                        assert thing.publish("sensors/bme680-1", b"from a script", qos=1)
                        assert thing.flush(TIMEOUT)
                        assert thing.stats().delivered == 1
                        message = thing.get_message(TIMEOUT)
                        assert (message.topic, message.payload) == ("commands/bme680-1", b"stop")
                        with pytest.raises(TimeoutError):
                            thing.get_message(0.05)

                script = asyncio.ensure_future(asyncio.to_thread(use_sync))
                received = [m.payload for m in await collect(obs, 1)]
                await obs.publish("commands/bme680-1", b"stop", qos=1)
                async with asyncio.timeout(TIMEOUT):
                    await script
                return received
        finally:
            await server.stop()

    assert asyncio.run(scenario()) == [b"from a script"]


async def test_closing_abandons_a_hanging_connect(env: Env, discovery: DiscoveryStandIn) -> None:
    accepted = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept TCP, never answer the TLS handshake
        accepted.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    discovery.response = (200, discovery_body([env.groups[0].pem], port))
    try:
        loop = asyncio.get_running_loop()
        async with Thing(env.config(discovery.endpoint, connect_timeout=30.0)) as thing:
            async with asyncio.timeout(TIMEOUT):
                await accepted.wait()
            closing = loop.time()
        assert loop.time() - closing < 2.0
        assert not thing.is_connected and thing.error is None
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("silent", [False, True])
async def test_a_core_that_refuses_the_thing(
    env: Env, discovery: DiscoveryStandIn, silent: bool
) -> None:
    class NotDeployed:
        async def authenticate(self, info: ConnectInfo) -> Identity:
            raise Refused(NOT_AUTHORIZED, "not in this core's deployment", silent=silent)

    port = free_port()
    discovery.response = (200, discovery_body([env.groups[0].pem], port))
    group = env.groups[0]
    ctx = pki.server_context(
        str(group.core.cert), str(group.core.key), str(env.pki.ca_file), require_client_cert=True
    )
    async with Broker(authenticator=NotDeployed()) as broker:
        await broker.listen("127.0.0.1", port, ssl=ctx)
        async with Thing(env.config(discovery.endpoint)) as thing:
            async with asyncio.timeout(TIMEOUT):
                stats = await thing.wait_until(lambda s: s.connect_failures >= 2)
    assert stats.last_error is not None
    # the likely cause and the commands that fix it (a 3.1.1 client is not told why)
    assert "the core refused thing" in stats.last_error
    assert "hedgerow cloud thing attach --group" in stats.last_error
    assert not stats.last_error.endswith("retrying")
    assert thing.error is None  # retried: the thing may yet be added


async def test_a_reconnect_to_the_same_core_resumes_its_tls_session(
    env: Env, discovery: DiscoveryStandIn
) -> None:
    """The core drops the thing; the thing comes back on the TLS session of its first
    connection (the SDK keeps its core context), and a core restarted with new ticket keys
    is still reached with a full handshake."""
    port = free_port()
    discovery.response = (200, discovery_body([env.groups[0].pem], port))
    async with Thing(env.config(discovery.endpoint)) as thing:
        async with core_broker(env, env.groups[0], port) as broker:
            async with asyncio.timeout(TIMEOUT):
                await thing.wait_connected()
            assert thing.core_resumed == 0
            assert broker.disconnect_where(lambda who: who.name == "bme680-1", "test") == 1
            async with asyncio.timeout(TIMEOUT):
                await thing.wait_until(lambda stats: stats.connects == 2 and stats.connected)
            assert thing.core_resumed == 1
        async with core_broker(env, env.groups[0], port):  # a new process: new ticket keys
            async with asyncio.timeout(TIMEOUT):
                await thing.wait_until(lambda stats: stats.connects == 3 and stats.connected)
            assert thing.core_resumed == 1
