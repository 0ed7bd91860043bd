"""Scale-out: PostgreSQL shared by several cloud processes, an external Mosquitto with TLS,
ingest workers splitting the load through a shared subscription, and the cores' presence
(retained, and their will) read by every process."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from hedgerow import pki
from hedgerow.client import Client, ProtocolVersion, Will
from hedgerow.cloud import core_bundle
from hedgerow.cloud.server import CloudServer
from hedgerow.contract import DeploymentNotification
from hedgerow.contract.heartbeat import Presence
from hedgerow.contract.topics import CoreLeaf, core_topic
from hedgerow.mqtt.packets import Properties
from tests.conftest import free_port

from .conftest import Cloud, loopback_config, pg_url, stored_payloads

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto]
WAIT = 10.0


class MosquittoTLS:
    """Private TLS Mosquittos started once the cloud's PKI exists (``start(data)``: its
    port); ``stop()`` ends them (the port stays free to start one again on it)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen[bytes]] = []

    def settings(self, data: Path, port: int) -> list[str]:
        """``mosquitto.conf``: mutual TLS on the cloud's PKI, the certificate names the user."""
        return [
            f"listener {port} 127.0.0.1",
            "user root",
            f"cafile {data / 'pki' / 'root-ca.pem'}",
            f"certfile {data / 'pki' / 'server.cert.pem'}",
            f"keyfile {data / 'pki' / 'server.key'}",
            "require_certificate true",
            "use_identity_as_username true",
            "persistence false",
            "max_queued_messages 100000",
            "max_inflight_messages 1000",
            "log_dest stdout",
        ]

    def __call__(self, data: Path, port: int | None = None) -> int:
        port = port or free_port()
        conf = self.tmp_path / "mosquitto.conf"
        conf.write_text("\n".join(self.settings(data, port)) + "\n")
        with (self.tmp_path / "mosquitto.log").open("ab") as log:
            process = subprocess.Popen(
                [shutil.which("mosquitto") or "mosquitto", "-c", str(conf)], stdout=log, stderr=log
            )
        self.started.append(process)
        return port

    def stop(self) -> None:
        for process in self.started:
            process.terminate()
            process.wait(10)
        self.started.clear()


@pytest.fixture
def mosquitto_tls(tmp_path: Path) -> Iterator[MosquittoTLS]:
    """Start a private TLS Mosquitto once the cloud's PKI exists: yields a starter."""
    starter = MosquittoTLS(tmp_path)
    yield starter
    starter.stop()


async def wait_for_port(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.025)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError(f"port {port} never opened")


@pytest.fixture
async def two_clouds(
    tmp_path: Path, pg_schema: str, mosquitto_tls: object
) -> AsyncIterator[tuple[Cloud, Cloud, int]]:
    config = await asyncio.to_thread(loopback_config, tmp_path / "cloud", pg_url(pg_schema))
    port = mosquitto_tls(config.data_dir)  # type: ignore[operator]
    await wait_for_port(port)
    config = config.replace(broker=f"mqtts://127.0.0.1:{port}")
    async with AsyncExitStack() as stack:
        clouds = []
        for _ in range(2):
            server = await stack.enter_async_context(CloudServer(config))
            api = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=server.api_url,
                    headers={"authorization": f"Bearer {server.admin_token}"},
                )
            )
            assert server.link is not None
            async with asyncio.timeout(WAIT):
                await server.link.connected.wait()
            clouds.append(Cloud(server, api, config.data_dir))
        yield clouds[0], clouds[1], port


async def test_two_processes_one_database_one_external_broker(
    two_clouds: tuple[Cloud, Cloud, int], tmp_path: Path
) -> None:
    a, b, port = two_clouds
    assert a.server.mqtt_url == f"mqtts://127.0.0.1:{port}"
    await a.ok("POST", "/api/v1/groups", json={"name": "factory-1"})
    cert, key = await b.core("pi-1", "factory-1", tmp_path)  # written through B, read through A
    assert (await a.ok("GET", "/api/v1/cores/pi-1"))["group"] == "factory-1"

    ctx = pki.client_context(str(a.root_ca), str(cert), str(key))
    async with Client(
        "127.0.0.1", port, ssl=ctx, client_id="pi-1", version=ProtocolVersion.V5
    ) as core:
        await core.subscribe("$hedgerow/cores/pi-1/deployments", qos=1)
        deployment = await a.ok("POST", "/api/v1/groups/factory-1/deployments", json={})
        async with asyncio.timeout(WAIT):
            notice = DeploymentNotification.from_json((await core.get_message()).payload)
        assert notice == DeploymentNotification(deployment["deployment_id"])
        status = {"deployment_id": deployment["deployment_id"], "status": "Success", "detail": ""}
        await core.publish("$hedgerow/cores/pi-1/deployment-status", json.dumps(status), qos=1)

        user = Properties(user_properties=(("core", "pi-1"),))
        total = 400
        for index in range(total):
            core.publish_nowait(f"corrected/{index % 3}", b"%d" % index, qos=1, properties=user)
        await core.publish("corrected/last", b"end", qos=1, properties=user)

        async with asyncio.timeout(WAIT):
            while (await b.ok("GET", f"/api/v1/deployments/{deployment['deployment_id']}"))[
                "status"
            ] != "Success":
                await asyncio.sleep(0.05)
            while a.server.ingest.stats.received + b.server.ingest.stats.received < total + 1:
                await asyncio.sleep(0.05)
            await a.server.ingest.flushed()
            await b.server.ingest.flushed()

    stored_a, stored_b = a.server.ingest.stats.stored, b.server.ingest.stats.stored
    assert stored_a + stored_b == total + 1
    assert stored_a > 0 and stored_b > 0, "the shared subscription splits the load between workers"
    messages = await b.ok(
        "GET", "/api/v1/messages", params={"filter": "corrected/#", "limit": "1000"}
    )
    assert messages["count"] == total + 1
    assert {m["core"] for m in messages["items"]} == {"pi-1"}


async def test_serve_command_with_postgres_and_an_external_broker(
    tmp_path: Path, pg_schema: str, mosquitto_tls: object
) -> None:
    from .test_cli import HEDGEROW, ok
    from .test_cli import WAIT as CLI_WAIT

    data, port = await init_with_mosquitto(tmp_path, mosquitto_tls)
    with (tmp_path / "serve.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            HEDGEROW, "cloud", "serve", "--data", str(data),
            "--database", pg_url(pg_schema), "--broker", f"mqtts://127.0.0.1:{port}",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=log,
        )  # fmt: skip
    assert process.stdout is not None
    banner = ""
    try:
        async with asyncio.timeout(CLI_WAIT):
            while "Ctrl-C" not in banner:
                line = (await process.stdout.readline()).decode()
                assert line, banner
                banner += line
        assert f"MQTT (external)     mqtts://127.0.0.1:{port}" in banner
        assert "database            postgresql" in banner
        await ok(
            "cloud",
            "group",
            "create",
            "in-postgres",
            "--data",
            str(data),
            cwd=tmp_path,
            process=False,
        )
    finally:
        process.terminate()
        async with asyncio.timeout(CLI_WAIT):
            await process.wait()
    engine = sa.create_engine(pg_url(pg_schema).replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT name FROM groups")).scalars().all() == [
            "in-postgres"
        ]
    engine.dispose()


async def init_with_mosquitto(tmp_path: Path, mosquitto_tls: object) -> tuple[Path, int]:
    """``hedgerow cloud init`` (free ports) and a private TLS Mosquitto on its PKI."""
    from .test_cli import ok

    data = tmp_path / "data"
    await ok(
        "cloud", "init", "--data", str(data), "--api-port", "0", "--device-host", "127.0.0.1",
        "--device-port", "0", cwd=tmp_path, process=False,
    )  # fmt: skip
    port = mosquitto_tls(data)  # type: ignore[operator]
    await wait_for_port(port)
    return data, port


async def start_replica(
    data: Path, database: str, broker: int, replica: str, api_port: int, log: Path
) -> tuple[asyncio.subprocess.Process, str]:
    """``hedgerow cloud serve`` as a process on the external broker: it and its API URL."""
    from .test_cli import HEDGEROW

    with log.open("ab") as err:
        process = await asyncio.create_subprocess_exec(
            HEDGEROW, "cloud", "serve", "--data", str(data), "--database", database,
            "--broker", f"mqtts://127.0.0.1:{broker}", "--replica-id", replica,
            "--api-port", str(api_port), "--device-port", "0",
            stdout=asyncio.subprocess.PIPE, stderr=err,
        )  # fmt: skip
    assert process.stdout is not None
    banner = ""
    async with asyncio.timeout(30):
        while "Ctrl-C" not in banner:
            line = (await process.stdout.readline()).decode()
            assert line, f"{replica} ended: {log.read_text()[-2000:]}"
            banner += line
    return process, f"http://127.0.0.1:{api_port}"


async def test_a_replica_killed_during_ingest_loses_no_acknowledged_message(
    tmp_path: Path, pg_schema: str, mosquitto_tls: object
) -> None:
    """The cloud acknowledges a core's message to the external broker only once stored,
    in a persistent session: what replica A had taken but not stored when it was killed
    is sent to it again when it comes back under the same replica id."""

    data, port = await init_with_mosquitto(tmp_path, mosquitto_tls)
    database, log = pg_url(pg_schema), tmp_path / "replicas.log"
    api_a, api_b = free_port(), free_port()
    a, url = await start_replica(data, database, port, "a", api_a, log)
    b, _ = await start_replica(data, database, port, "b", api_b, log)
    token = (data / "admin-token").read_text().strip()
    headers = {"authorization": f"Bearer {token}"}
    total, killed_at = 6000, 2000
    try:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as api:
            (await api.post("/api/v1/groups", json={"name": "plant"})).raise_for_status()
            made = await api.post("/api/v1/cores", json={"name": "gw", "group": "plant"})
            made.raise_for_status()
            files = core_bundle.read_bundle(base64.b64decode(made.json()["bundle"]))
            (tmp_path / "gw.cert").write_bytes(files[core_bundle.CORE_CERT])
            (tmp_path / "gw.key").write_bytes(files[core_bundle.CORE_KEY])
            ctx = pki.client_context(
                str(data / "pki" / "root-ca.pem"),
                str(tmp_path / "gw.cert"),
                str(tmp_path / "gw.key"),
            )
            user = Properties(user_properties=(("core", "gw"),))
            async with Client("127.0.0.1", port, ssl=ctx, client_id="gw") as core:
                for index in range(total):
                    # every publish returns once the broker acknowledged it to the core
                    await core.publish(f"plant/{index % 5}", b"%d" % index, qos=1, properties=user)
                    if index == killed_at:
                        a.kill()  # kill -9, mid-stream, whatever it had not stored yet
                        await a.wait()
                    if index == killed_at + 1000:
                        a, _ = await start_replica(data, database, port, "a", api_a, log)

            seen = await stored_payloads(database, total)
    finally:
        for process in (a, b):
            if process.returncode is None:
                process.terminate()
                async with asyncio.timeout(10):
                    await process.wait()
    missing = sorted(set(range(total)) - set(seen))
    assert not missing, f"{len(missing)} acknowledged messages never stored: {missing[:10]}"
    print(f"{total} acknowledged, {len(seen)} stored, {len(seen) - total} stored twice")


async def test_presence_through_the_external_broker_the_will_included(
    two_clouds: tuple[Cloud, Cloud, int], tmp_path: Path
) -> None:
    """A core's retained presence and its will tell every cloud process whether it is
    connected; a core that never reports one is unknown (null), not offline."""
    a, b, port = two_clouds
    await a.ok("POST", "/api/v1/groups", json={"name": "factory-1"})
    await a.ok("POST", "/api/v1/groups", json={"name": "factory-2"})
    cert, key = await a.core("pi-1", "factory-1", tmp_path)
    await a.core("pi-old", "factory-2", tmp_path)
    ctx = pki.client_context(str(a.root_ca), str(cert), str(key))
    topic = core_topic("pi-1", CoreLeaf.PRESENCE)
    core = Client(
        "127.0.0.1", port, ssl=ctx, client_id="pi-1", version=ProtocolVersion.V5,
        will=Will(topic, Presence(False).to_json(), qos=1, retain=True),
    )  # fmt: skip
    await core.connect()
    await core.publish(topic, Presence(True).to_json(), qos=1, retain=True)

    async def connected(cloud: Cloud, name: str) -> object:
        return (await cloud.ok("GET", f"/api/v1/cores/{name}"))["connected"]

    async with asyncio.timeout(WAIT):
        while not (await connected(a, "pi-1") is True and await connected(b, "pi-1") is True):
            await asyncio.sleep(0.05)
    assert await connected(a, "pi-old") is None  # reports nothing: unknown
    core.abort()  # the link ends without DISCONNECT: mosquitto publishes the will
    async with asyncio.timeout(WAIT):
        while not (await connected(a, "pi-1") is False and await connected(b, "pi-1") is False):
            await asyncio.sleep(0.05)
    assert "pi-1" not in a.server.connected_cores()  # type: ignore[operator]


async def test_a_revoked_core_is_cut_off_at_mosquitto(
    two_clouds: tuple[Cloud, Cloud, int], tmp_path: Path
) -> None:
    """The cloud takes a revoked core's client id over at the external broker, which
    closes the core's connection (Mosquitto checks no revocation at the next connect: that
    needs a broker that asks the cloud, see test_rabbitmq.py)."""
    a, _, port = two_clouds
    await a.ok("POST", "/api/v1/groups", json={"name": "factory-1"})
    cert, key = await a.core("pi-1", "factory-1", tmp_path)
    ctx = pki.client_context(str(a.root_ca), str(cert), str(key))
    async with Client(
        "127.0.0.1", port, ssl=ctx, client_id="pi-1", version=ProtocolVersion.V5
    ) as core:
        await core.subscribe("$hedgerow/cores/pi-1/deployments", qos=1)
        listed = await a.ok("GET", "/api/v1/certificates", params={"owner": "pi-1"})
        (fingerprint,) = [c["fingerprint"] for c in listed["items"]]
        await a.ok("POST", f"/api/v1/certificates/{fingerprint}/revoke")
        async with asyncio.timeout(WAIT):
            await asyncio.shield(core.closed)


async def test_an_unreachable_external_broker_delays_no_api_call_and_loses_no_core_state(
    tmp_path: Path, pg_schema: str, mosquitto_tls: MosquittoTLS
) -> None:
    """The broker down: a deployment is created at once and its (retained) notification
    waits in the cloud; a command fails quickly with 503; the notification reaches the core
    once the broker is back, although that broker kept nothing (no persistence)."""
    config = await asyncio.to_thread(loopback_config, tmp_path / "cloud", pg_url(pg_schema))
    port = mosquitto_tls(config.data_dir)
    await wait_for_port(port)
    config = config.replace(broker=f"mqtts://127.0.0.1:{port}")
    async with CloudServer(config) as server, httpx.AsyncClient(
        base_url=server.api_url, headers={"authorization": f"Bearer {server.admin_token}"}
    ) as api:  # fmt: skip
        cloud = Cloud(server, api, config.data_dir)
        link = server.link
        assert link is not None
        async with asyncio.timeout(WAIT):
            await link.connected.wait()
        await cloud.ok("POST", "/api/v1/groups", json={"name": "factory-1"})
        cert, key = await cloud.core("pi-1", "factory-1", tmp_path)

        mosquitto_tls.stop()
        async with asyncio.timeout(WAIT):
            while link.connected.is_set():
                await asyncio.sleep(0.02)
        started = asyncio.get_running_loop().time()
        deployment = await cloud.ok("POST", "/api/v1/groups/factory-1/deployments", json={})
        took = asyncio.get_running_loop().time() - started
        assert took < 2.0, f"creating a deployment waited {took:.1f} s for the broker"
        assert list(link.deferred) == ["$hedgerow/cores/pi-1/deployments"]
        refused = await api.post(
            "/api/v1/messages/publish", json={"topic": "commands/pi-1", "payload": "reboot"}
        )
        assert refused.status_code == 503, refused.text
        assert "unreachable" in refused.json()["error"]["message"], refused.text

        mosquitto_tls(config.data_dir, port)  # back, empty: it kept nothing
        await wait_for_port(port)
        async with asyncio.timeout(30):  # the link's own backoff
            await link.connected.wait()
        assert link.deferred == {}
        ctx = pki.client_context(str(cloud.root_ca), str(cert), str(key))
        async with Client(
            "127.0.0.1", port, ssl=ctx, client_id="pi-1", version=ProtocolVersion.V5
        ) as core:
            await core.subscribe("$hedgerow/cores/pi-1/deployments", qos=1)
            async with asyncio.timeout(WAIT):
                message = await core.get_message()
        assert message.retain
        notice = DeploymentNotification.from_json(message.payload)
        assert notice == DeploymentNotification(deployment["deployment_id"])
