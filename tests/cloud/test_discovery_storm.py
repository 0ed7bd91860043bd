"""Discovery under a storm, for real: cached answers that follow every change (on this
replica and, through PostgreSQL's LISTEN/NOTIFY, on another one), TLS session resumption
that never skips authorization, and the device server's bound on pending handshakes."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from hedgerow import http11, pki
from hedgerow.cloud import config as config_module
from hedgerow.cloud.server import CloudServer
from hedgerow.thing.credentials import Credentials
from hedgerow.thing.discovery import DiscoveryClient, DiscoveryInfo
from hedgerow.thing.errors import DiscoveryRefused, DiscoveryUnavailable

from .conftest import Cloud, clone_config, pg_url

#: how long a change may take to reach another replica's discovery (commit + NOTIFY)
DEADLINE_S = 10.0


async def setup_group(cloud: Cloud, tmp_path: Path, group: str = "line-1") -> Credentials:
    """A group with a core at 127.0.0.1:8883 and a thing ``t-1`` in it."""
    await cloud.ok("POST", "/api/v1/groups", json={"name": group})
    await cloud.ok("POST", "/api/v1/cores", json={"name": f"{group}-core", "group": group})
    await set_endpoint(cloud, f"{group}-core", 8883)
    cert, key = await cloud.thing("t-1", [group], tmp_path)
    return Credentials(cloud.root_ca, cert, key)


async def set_endpoint(cloud: Cloud, core: str, port: int) -> None:
    await cloud.ok(
        "PUT",
        f"/api/v1/cores/{core}/connectivity",
        json={"endpoints": [{"host": "127.0.0.1", "port": port}]},
    )


def summary(info: DiscoveryInfo) -> dict[str, Any]:
    """What a change may move: groups, each group's endpoints and CA count."""
    return {
        g.group_id: ([e.port for c in g.cores for e in c.endpoints], len(g.cas))
        for g in info.groups
    }


def endpoint(cloud: Cloud) -> tuple[str, int]:
    return ("127.0.0.1", cloud.device_port)


async def eventually(
    read: Callable[[], Awaitable[Any]], want: Callable[[Any], bool], what: str
) -> float:
    """Seconds until ``want(await read())``; fails after ``DEADLINE_S``."""
    started = time.monotonic()
    last: Any = None
    while time.monotonic() - started < DEADLINE_S:
        last = await read()
        if want(last):
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what}: still {last!r} after {DEADLINE_S} s")


async def test_cached_answers_follow_every_change(cloud: Cloud, tmp_path: Path) -> None:
    """The same process: each kind of change is in the very next discovery (no waiting)."""
    credentials = await setup_group(cloud, tmp_path)
    client = DiscoveryClient(credentials)
    cache = cloud.server.discovery_cache

    async def now() -> dict[str, Any]:
        return summary(await client.discover(endpoint(cloud), "t-1"))

    assert await now() == {"line-1": ([8883], 1)}  # made the group's first CA: invalidated

    async def hit() -> bool:
        hits = cache.stats.hits
        assert await now() == {"line-1": ([8883], 1)}
        return cache.stats.hits == hits + 1

    # on PostgreSQL this replica also hears its own announcements back (each empties the
    # cache once more): an unchanged answer comes from the cache once they have passed
    await eventually(hit, bool, "an unchanged answer from the cache")

    await set_endpoint(cloud, "line-1-core", 9883)  # connectivity
    assert await now() == {"line-1": ([9883], 1)}

    await cloud.ok("POST", "/api/v1/groups/line-1/cas/rotate")  # a new group CA
    assert await now() == {"line-1": ([9883], 2)}

    await cloud.ok("POST", "/api/v1/groups", json={"name": "line-2"})  # membership
    await cloud.ok("POST", "/api/v1/cores", json={"name": "line-2-core", "group": "line-2"})
    await set_endpoint(cloud, "line-2-core", 7883)
    await cloud.ok("POST", "/api/v1/groups/line-2/things", json={"thing": "t-1"})
    assert await now() == {"line-1": ([9883], 2), "line-2": ([7883], 1)}

    await cloud.ok("DELETE", "/api/v1/cores/line-2-core")  # a core removed
    assert await now() == {"line-1": ([9883], 2)}

    await cloud.ok("DELETE", "/api/v1/groups/line-1/things/t-1")  # detached: no group left
    with pytest.raises(Exception, match="no group"):
        await now()

    await cloud.ok("POST", "/api/v1/groups/line-1/things", json={"thing": "t-1"})
    assert await now() == {"line-1": ([9883], 2)}
    await cloud.ok("POST", "/api/v1/things/t-1/revoke")  # revocation
    with pytest.raises(DiscoveryRefused, match="revoked"):
        await now()


@pytest.fixture
async def two_replicas(
    tmp_path: Path, pg_schema: str, cloud_template: Path
) -> AsyncIterator[tuple[Cloud, Cloud]]:
    """Two CloudServers on one PostgreSQL schema, each with its own copy of the data
    directory (the same root CA and token, as replicas deployed from one template)."""
    database = pg_url(pg_schema)
    first = await asyncio.to_thread(clone_config, cloud_template, tmp_path / "a", database)
    shutil.copytree(first.data_dir, tmp_path / "b")
    second = config_module.load(tmp_path / "b")
    async with CloudServer(first) as a, CloudServer(second) as b:
        clouds = []
        for server in (a, b):
            api = httpx.AsyncClient(
                base_url=server.api_url,
                headers={"authorization": f"Bearer {server.admin_token}"},
                timeout=10,
            )
            clouds.append(Cloud(server, api, server.config.data_dir))
        try:
            for server in (a, b):  # both replicas hear the feed before the test changes
                await asyncio.wait_for(server.changes.listening.wait(), DEADLINE_S)
            yield clouds[0], clouds[1]
        finally:
            for cloud in clouds:
                await cloud.api.aclose()


@pytest.mark.postgres
async def test_a_change_on_one_replica_reaches_the_others_cached_answers(
    two_replicas: tuple[Cloud, Cloud], tmp_path: Path
) -> None:
    a, b = two_replicas
    credentials = await setup_group(a, tmp_path)
    client = DiscoveryClient(credentials)

    async def on_b() -> dict[str, Any]:
        return summary(await client.discover(endpoint(b), "t-1"))

    cache = b.server.discovery_cache

    async def hit_on_b() -> bool:
        hits = cache.stats.hits
        assert await on_b() == {"line-1": ([8883], 1)}
        return cache.stats.hits == hits + 1

    # the setup's announcements (and B's own, for the group CA its first discovery made)
    # reach B for a moment after they were made: B answers from its cache once they passed
    await eventually(hit_on_b, bool, "B answers from its cache")
    latencies = []

    await set_endpoint(a, "line-1-core", 9883)
    latencies.append(await eventually(on_b, lambda s: s == {"line-1": ([9883], 1)}, "connectivity"))
    await a.ok("POST", "/api/v1/groups/line-1/cas/rotate")
    latencies.append(await eventually(on_b, lambda s: s == {"line-1": ([9883], 2)}, "group CA"))
    await a.ok("POST", "/api/v1/groups", json={"name": "line-2"})
    await a.ok("POST", "/api/v1/cores", json={"name": "line-2-core", "group": "line-2"})
    await a.ok("POST", "/api/v1/groups/line-2/things", json={"thing": "t-1"})
    latencies.append(await eventually(on_b, lambda s: "line-2" in s, "membership"))
    await a.ok("POST", "/api/v1/things/t-1/revoke")

    async def refused_on_b() -> bool:
        try:
            await on_b()
        except DiscoveryRefused:
            return True
        return False

    latencies.append(await eventually(refused_on_b, bool, "revocation"))
    assert b.server.changes.heard["discovery"] >= 4
    # commit + NOTIFY + one discovery: far below the TTL backstop
    assert max(latencies) < 2.0, latencies


async def test_a_resumed_session_is_authorized_again_on_every_request(
    cloud: Cloud, tmp_path: Path
) -> None:
    """The second discovery resumes the TLS session (no certificate sent), yet the server
    still knows the certificate and checks it: revoked in between, the resumed request
    is refused."""
    credentials = await setup_group(cloud, tmp_path)
    client = DiscoveryClient(credentials)
    stats = cloud.server.device.stats
    await client.discover(endpoint(cloud), "t-1")
    assert not client.last_resumed
    await client.discover(endpoint(cloud), "t-1")
    assert client.last_resumed and client.resumed == 1
    assert stats.resumed >= 1

    await cloud.ok("POST", "/api/v1/things/t-1/revoke")
    reply = await http11.fetch(
        "127.0.0.1",
        cloud.device_port,
        "GET",
        "/greengrass/discover/thing/t-1",
        headers=[("host", "127.0.0.1")],
        ssl_context=client.context,
        timeout=10,
        max_body=1 << 20,
    )
    assert reply.tls_resumed, "the refused request came over a resumed session"
    # the V1 SDKs know 401 for a refused identity (device_server.error_response: 403 → 401)
    assert reply.status == 401, reply.content
    assert b"revoked" in reply.content


async def test_a_resumed_core_session_is_refused_after_revocation(
    cloud: Cloud, tmp_path: Path
) -> None:
    """The cores' API over a resumed session: 200, then 403 once the core is revoked."""
    await cloud.ok("POST", "/api/v1/groups", json={"name": "g"})
    cert, key = await cloud.core("g-core", "g", tmp_path)
    context = pki.client_context(str(cloud.root_ca), str(cert), str(key), resume=True)
    assert isinstance(context, pki.ResumingContext)

    async def things() -> http11.Reply:
        reply = await http11.fetch(
            "127.0.0.1",
            cloud.device_port,
            "GET",
            "/core/v1/things",
            headers=[("host", "127.0.0.1")],
            ssl_context=context,
            timeout=10,
            max_body=1 << 20,
        )
        context.keep("127.0.0.1", reply.tls_session)
        return reply

    first, second = await things(), await things()
    assert (first.status, first.tls_resumed) == (200, False)
    assert (second.status, second.tls_resumed) == (200, True)
    fingerprint = pki.fingerprint(pki.cert_from_pem(cert.read_bytes()))
    await cloud.ok("POST", f"/api/v1/certificates/{fingerprint}/revoke")
    third = await things()
    assert (third.status, third.tls_resumed) == (403, True), third.content


async def test_connections_over_max_pending_are_shed_before_their_handshake(
    tmp_path: Path, cloud_template: Path
) -> None:
    """max_pending 1: a client stuck in its handshake holds the only slot; the next
    connection waits pending_wait, then is closed unanswered (quickly, no handshake); once
    the slot is free discovery works again."""
    config = await asyncio.to_thread(clone_config, cloud_template, tmp_path / "cloud")
    config = config.replace(device_max_pending=1, device_pending_wait_s=0.3)
    async with CloudServer(config) as server:
        async with httpx.AsyncClient(
            base_url=server.api_url,
            headers={"authorization": f"Bearer {server.admin_token}"},
            timeout=10,
        ) as api:
            cloud = Cloud(server, api, config.data_dir)
            credentials = await setup_group(cloud, tmp_path)
            client = DiscoveryClient(credentials, request_timeout=5.0)
            await client.discover(endpoint(cloud), "t-1")
            stats = server.device.stats
            stuck = socket.create_connection(("127.0.0.1", cloud.device_port))
            try:
                deadline = time.monotonic() + DEADLINE_S
                while stats.pending < 1:  # the stuck client holds the slot
                    assert time.monotonic() < deadline, stats
                    await asyncio.sleep(0.01)
                started = time.monotonic()
                with pytest.raises(DiscoveryUnavailable):
                    await client.discover(endpoint(cloud), "t-1")
                took = time.monotonic() - started
                assert 0.25 <= took < 2.0, took
                assert stats.shed == 1
            finally:
                stuck.close()
            handshakes = stats.handshakes
            await eventually(
                lambda: _discovers(client, endpoint(cloud)), bool, "discovery after the stall"
            )
            assert stats.handshakes > handshakes
            status = (await api.get("/api/v1/status")).json()["device_server"]
            assert status["shed"] == 1 and status["discovery_cache"]["stores"] >= 1
            metrics = (await api.get("/metrics")).text.splitlines()
            assert 'hedgerow_cloud_device_connections_total{event="shed"} 1' in metrics
            assert "hedgerow_cloud_device_pending 0" in metrics
            assert any(
                line.startswith('hedgerow_cloud_discovery_cache_total{event="misses"} ')
                for line in metrics
            )


async def _discovers(client: DiscoveryClient, where: tuple[str, int]) -> bool:
    try:
        await client.discover(where, "t-1")
    except DiscoveryUnavailable:
        return False
    return True


async def test_a_connection_that_waited_for_a_slot_is_answered(
    tmp_path: Path, cloud_template: Path
) -> None:
    """The device's ClientHello arrives while its connection waits for a slot: once the
    slot frees, its handshake goes on from those bytes (not lost to the plain stream) and
    it is answered well within its own timeout."""
    config = await asyncio.to_thread(clone_config, cloud_template, tmp_path / "cloud")
    config = config.replace(device_max_pending=1, device_pending_wait_s=5.0)
    async with CloudServer(config) as server:
        async with httpx.AsyncClient(
            base_url=server.api_url,
            headers={"authorization": f"Bearer {server.admin_token}"},
            timeout=10,
        ) as api:
            cloud = Cloud(server, api, config.data_dir)
            credentials = await setup_group(cloud, tmp_path)
            client = DiscoveryClient(credentials, request_timeout=4.0)
            stats = server.device.stats
            stuck = socket.create_connection(("127.0.0.1", cloud.device_port))
            try:
                deadline = time.monotonic() + DEADLINE_S
                while stats.pending < 1:
                    assert time.monotonic() < deadline, stats
                    await asyncio.sleep(0.01)
                waiting = asyncio.create_task(client.discover(endpoint(cloud), "t-1"))
                while stats.accepted < 2:  # the discovery's connection waits for the slot
                    assert time.monotonic() < deadline, stats
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.2)  # its ClientHello has arrived by now
                assert not waiting.done()
            finally:
                stuck.close()
            started = time.monotonic()
            info = await waiting
            assert summary(info) == {"line-1": ([8883], 1)}
            assert time.monotonic() - started < 2.0
            assert stats.shed == 0 and stats.handshakes == 1
            assert stats.handshake_failures == 1  # the stuck socket, closed mid-handshake
