"""RabbitMQ 3.10 (MQTT 3.1.1 only, HTTP auth backend) as the cloud's external MQTT engine:
the broker asks the cloud who logs in and what each core may do, so a revoked core is
refused and cut off at the broker, and no core reaches another's topics."""

from __future__ import annotations

import asyncio
import base64
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hedgerow.client import Client, ClientError, ConnectError, ProtocolVersion
from hedgerow.cloud import core_bundle
from hedgerow.cloud.config import Listen
from hedgerow.cloud.server import CloudServer
from tests.conftest import free_port
from tests.rabbitmq import (
    BROKER_URL,
    MQTT_PORT,
    TEST_TIMEOUT_S,
    RabbitMQ,
    rabbitmq_turn,
    rabbitmqctl,
)

from .conftest import Cloud, loopback_config, stored_payloads

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(TEST_TIMEOUT_S)]
WAIT = 30.0
#: a revoked core's connection is closed within this (the cloud takes its client id over)
CUT_OFF_BOUND_S = 10.0


@dataclass
class Login:
    core: str
    password: str

    def client(self, client_id: str | None = None) -> Client:
        return Client(
            "127.0.0.1",
            MQTT_PORT,
            client_id=client_id or self.core,
            version=ProtocolVersion.V311,
            username=self.core,
            password=self.password,
            keepalive=30,
        )


@pytest.fixture
async def rabbit_cloud(tmp_path: Path) -> AsyncIterator[tuple[Cloud, RabbitMQ]]:
    api_port = free_port()
    config = await asyncio.to_thread(loopback_config, tmp_path / "cloud")
    with rabbitmq_turn(config.data_dir, f"http://127.0.0.1:{api_port}") as rabbit:
        config = config.replace(
            api=Listen("127.0.0.1", api_port),
            broker=BROKER_URL,
            broker_protocol="3.1.1",
            broker_login="password",
            replica_id=rabbit.replica("a"),
        )
        async with CloudServer(config) as server:
            assert server.link is not None
            async with asyncio.timeout(WAIT):  # logged in through /api/v1/broker-auth, subscribed
                await server.link.connected.wait()
            async with httpx.AsyncClient(
                base_url=server.api_url,
                headers={"authorization": f"Bearer {server.admin_token}"},
                timeout=10,
            ) as api:
                yield Cloud(server, api, config.data_dir), rabbit


async def make_core(api: httpx.AsyncClient, name: str, group: str) -> Login:
    """A group and its core; the broker login its bundle carries."""
    (await api.post("/api/v1/groups", json={"name": group})).raise_for_status()
    made = await api.post("/api/v1/cores", json={"name": name, "group": group})
    made.raise_for_status()
    files = core_bundle.read_bundle(base64.b64decode(made.json()["bundle"]))
    settings = tomllib.loads(files[core_bundle.CONFIG].decode())["cloud"]
    assert settings["mqtt"] == BROKER_URL and settings["mqtt_protocol"] == "3.1.1"
    assert settings["mqtt_username"] == name
    return Login(name, settings["mqtt_password"])


async def wait_closed(client: Client, bound: float) -> None:
    async with asyncio.timeout(bound):
        await asyncio.shield(client.closed)


async def test_rabbitmq_asks_the_cloud_and_keeps_cores_apart(
    rabbit_cloud: tuple[Cloud, RabbitMQ], tmp_path: Path
) -> None:
    cloud, _ = rabbit_cloud
    gw = await make_core(cloud.api, "gw", "plant")
    other = await make_core(cloud.api, "other", "mill")
    await cloud.thing("t1", ["plant"], tmp_path)
    await cloud.ok(
        "POST",
        "/api/v1/groups/plant/subscriptions",
        json={"source": "thing:t1", "topic": "plant/#", "target": "cloud"},
    )
    async with asyncio.timeout(WAIT):  # the route cache the broker's questions read
        while "plant/#" not in cloud.server.routes.to_cloud("plant"):
            await cloud.server.routes.refreshed.wait()
            cloud.server.routes.refreshed.clear()

    # a wrong password, or another core's client id, is refused at the broker
    with pytest.raises(ConnectError):
        async with Login("gw", "x" * 64).client():
            pass
    with pytest.raises(ConnectError):
        async with gw.client(client_id="other"):
            pass

    async with gw.client() as core:
        assert await core.subscribe("$hedgerow/cores/gw/deployments", qos=1) == (1,)
        # its telemetry, named by the topic, reaches the store (acknowledged once stored)
        await core.publish("$hedgerow/cores/gw/routed/plant/1", b"21.5", qos=1)
        async with asyncio.timeout(WAIT):
            while not await stored(cloud):
                await asyncio.sleep(0.1)
        assert [(m["topic"], m["core"]) for m in await stored(cloud)] == [("plant/1", "gw")]

    # another core's topics, a wildcard over every core: the broker refuses (RabbitMQ 3.10
    # closes the connection)
    for login, subscribe in (
        (gw, "$hedgerow/cores/other/deployments"),
        (gw, "$hedgerow/cores/+/routed/#"),
        (other, "$hedgerow/cores/gw/deployments"),
    ):
        await refused(login, lambda core, f=subscribe: core.subscribe(f, qos=1))
    for login, topic in (
        (gw, "$hedgerow/cores/other/routed/plant/2"),
        (gw, "$hedgerow/cores/other/heartbeat"),
        (other, "$hedgerow/cores/gw/routed/plant/2"),
    ):
        await refused(login, lambda core, t=topic: core.publish(t, b"forged", qos=1))
    assert [m["payload"] for m in await stored(cloud)] == ["21.5"]


async def stored(cloud: Cloud) -> list[dict[str, str]]:
    page = await cloud.ok("GET", "/api/v1/messages", params={"filter": "plant/#"})
    return list(page["items"])


async def refused(login: Login, act: Callable[[Client], Awaitable[object]]) -> None:
    """``act`` on a fresh connection of ``login`` is refused: the broker closes it."""
    async with login.client() as core:
        with pytest.raises(ClientError):
            async with asyncio.timeout(WAIT):
                await act(core)
                await core.closed  # a QoS 1 publish may be dropped first, then closed
        assert core.closed.done()


async def test_a_revoked_or_deleted_core_is_cut_off_and_refused_by_rabbitmq(
    rabbit_cloud: tuple[Cloud, RabbitMQ],
) -> None:
    cloud, _ = rabbit_cloud
    gw = await make_core(cloud.api, "gw", "plant")
    async with gw.client() as core:
        await core.subscribe("$hedgerow/cores/gw/deployments", qos=1)
        fingerprints = [
            c["fingerprint"]
            for c in (await cloud.ok("GET", "/api/v1/certificates", params={"owner": "gw"}))[
                "items"
            ]
        ]
        assert len(fingerprints) == 1
        revoked_at = time.monotonic()
        await cloud.ok("POST", f"/api/v1/certificates/{fingerprints[0]}/revoke")
        await wait_closed(core, CUT_OFF_BOUND_S)
        took = time.monotonic() - revoked_at
        print(f"revoked core cut off by RabbitMQ {took:.2f} s after the revocation")
    with pytest.raises(ConnectError):
        async with gw.client():
            pass

    # a deleted core likewise
    mill = await make_core(cloud.api, "mill-gw", "mill")
    async with mill.client() as core:
        await core.subscribe("$hedgerow/cores/mill-gw/deployments", qos=1)
        await cloud.ok("DELETE", "/api/v1/cores/mill-gw")
        await wait_closed(core, CUT_OFF_BOUND_S)
    with pytest.raises(ConnectError):
        async with mill.client():
            pass


async def serve_replica(
    data: Path, database: str, replica: str, api_port: int, log: Path, *extra: str
) -> asyncio.subprocess.Process:
    """``hedgerow cloud serve`` on RabbitMQ as a process; returns once its link logged in
    and its subscriptions were acknowledged (its session holds what cores send from then)."""
    from .test_cli import HEDGEROW

    connected = f"client=hedgerow-cloud-{replica} "
    before = log.read_text().count(connected) if log.exists() else 0
    with log.open("ab") as err:
        process = await asyncio.create_subprocess_exec(
            HEDGEROW, "cloud", "serve", "--data", str(data), "--database", database,
            "--broker", BROKER_URL, "--broker-protocol", "3.1.1", "--broker-login", "password",
            "--replica-id", replica, "--api-port", str(api_port), "--device-port", "0", *extra,
            stdout=asyncio.subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    async with asyncio.timeout(WAIT * 2):
        while log.read_text().count(connected) <= before:
            assert process.returncode is None, log.read_text()[-3000:]
            await asyncio.sleep(0.05)
    return process


async def route_allowed(auth_url: str, core: str, topic: str) -> bool:
    """Ask the broker-auth endpoint as RabbitMQ would: may ``core`` publish ``topic``?"""
    key = topic.replace("/", ".")
    question = {
        "username": core, "vhost": "/", "resource": "topic", "name": "amq.topic",
        "permission": "write", "routing_key": key, "variable_map.client_id": core,
    }  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(auth_url + "topic", data=question)
    return answer.text == "allow"


@pytest.mark.postgres
async def test_a_replica_killed_during_ingest_through_rabbitmq_loses_no_acknowledged_message(
    tmp_path: Path, pg_schema: str
) -> None:
    """RabbitMQ keeps a 3.1.1 persistent session (clean_session=false) in a durable queue
    and sends again what a consumer had not acknowledged when its connection died: replica
    A, killed with SIGKILL mid-stream and started again under its id, stores everything
    the core had been acknowledged. The session is a quorum queue (clusterable). RabbitMQ 3.10 has no shared subscriptions, so replica
    B serves the API (and the broker's auth questions) and takes no telemetry."""
    from .test_cli import ok
    from .test_scale_out import pg_url

    data = tmp_path / "data"
    await ok(
        "cloud", "init", "--data", str(data), "--api-port", "0", "--device-host", "127.0.0.1",
        "--device-port", "0", cwd=tmp_path, process=False,
    )  # fmt: skip
    database, log_a, log_b = pg_url(pg_schema), tmp_path / "a.log", tmp_path / "b.log"
    api_a, api_b = free_port(), free_port()
    total, killed_at, back_at = 3000, 1000, 1600
    with rabbitmq_turn(data, f"http://127.0.0.1:{api_b}") as rabbit:
        a_id, b_id = rabbit.replica("a"), rabbit.replica("b")
        b = await serve_replica(data, database, b_id, api_b, log_b, "--no-broker-ingest")
        a = await serve_replica(data, database, a_id, api_a, log_a)
        token = (data / "admin-token").read_text().strip()
        auth_url = f"http://127.0.0.1:{api_b}/api/v1/broker-auth/{rabbit.secret.path_token()}/"
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{api_b}",
                headers={"authorization": f"Bearer {token}"},
                timeout=10,
            ) as api:
                gw = await make_core(api, "gw", "plant")
                thing = await api.post("/api/v1/things", json={"name": "t1", "groups": ["plant"]})
                thing.raise_for_status()
                route = {"source": "thing:t1", "topic": "plant/#", "target": "cloud"}
                (
                    await api.post("/api/v1/groups/plant/subscriptions", json=route)
                ).raise_for_status()
                async with asyncio.timeout(WAIT):
                    while not await route_allowed(
                        auth_url, "gw", "$hedgerow/cores/gw/routed/plant/0"
                    ):
                        await asyncio.sleep(0.1)
                started = time.monotonic()
                async with gw.client() as core:
                    for index in range(total):
                        # each publish returns once RabbitMQ acknowledged it to the core
                        await core.publish(
                            f"$hedgerow/cores/gw/routed/plant/{index % 5}", b"%d" % index, qos=1
                        )
                        if index == killed_at:
                            a.kill()  # kill -9, mid-stream: whatever it had not stored yet
                            await a.wait()
                        if index == back_at:
                            a = await serve_replica(data, database, a_id, api_a, log_a)
                published = time.monotonic() - started
                queues = rabbitmqctl("list_queues", "name", "type").stdout
                assert f"mqtt-subscription-hedgerow-cloud-{a_id}qos1\tquorum" in queues, queues
            seen = await stored_payloads(database, total)
        finally:
            for process in (a, b):
                if process.returncode is None:
                    process.terminate()
                    async with asyncio.timeout(WAIT):
                        await process.wait()
    missing = sorted(set(range(total)) - set(seen))
    assert not missing, f"{len(missing)} acknowledged messages never stored: {missing[:10]}"
    assert f"client=hedgerow-cloud-{a_id} resumed=True" in log_a.read_text()
    print(
        f"{total} acknowledged in {published:.1f} s, {len(seen)} stored, "
        f"{len(seen) - total} stored twice"
    )


async def test_a_core_provisioned_by_claim_gets_its_rabbitmq_login(
    rabbit_cloud: tuple[Cloud, RabbitMQ],
) -> None:
    """The claim's answer carries the same login a bundle would; claimed again (a new
    certificate, the old one revoked), the core gets a new password and the old is refused."""
    from hedgerow import claimclient, pki
    from hedgerow.contract.provisioning import ClaimCredential, ProvisionRequest, ProvisionResponse

    cloud, _ = rabbit_cloud
    template = {
        "name": "gws",
        "kind": "core",
        "group": "site-{serial}",
        "name_pattern": "gw-{serial}",
    }
    await cloud.ok("POST", "/api/v1/claim-templates", json=template)
    created = await cloud.ok(
        "POST", "/api/v1/claims", json={"template": "gws", "count": 1, "expires": "1h"}
    )
    credential = ClaimCredential.from_tar(base64.b64decode(created["bundle"]))

    def request() -> ProvisionRequest:
        return ProvisionRequest("SN7", pki.make_csr(pki.new_key(), "ignored").decode())

    def login(answer: ProvisionResponse) -> Login:
        assert answer.config is not None
        settings = tomllib.loads(answer.config)["cloud"]
        assert settings["mqtt_protocol"] == "3.1.1" and settings["mqtt_username"] == "gw-SN7"
        return Login("gw-SN7", settings["mqtt_password"])

    first = login(await claimclient.provision(credential, request(), timeout=30))
    async with first.client() as core:
        assert await core.subscribe("$hedgerow/cores/gw-SN7/deployments", qos=1) == (1,)
    again = login(await claimclient.provision(credential, request(), timeout=30))
    assert again.password != first.password
    with pytest.raises(ConnectError):
        async with first.client():
            pass
    async with again.client() as core:
        assert await core.subscribe("$hedgerow/cores/gw-SN7/deployments", qos=1) == (1,)
