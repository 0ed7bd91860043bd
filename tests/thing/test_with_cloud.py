"""The SDK against the real Hedgerow cloud: discovery, the core's certificate, CA rotation.

The core's MQTT endpoint is a Hedgerow broker with the server certificate a core gets from
the cloud (``POST /core/v1/certificate`` with its identity), so the trust chain is the
production one: thing → root CA for discovery, thing → group CA for the core.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from hedgerow import pki
from hedgerow.broker import Broker, CertificateAuthenticator
from hedgerow.client import Client
from hedgerow.cloud import core_bundle as bundle
from hedgerow.cloud.config import Listen
from hedgerow.cloud.datadir import init_data_dir
from hedgerow.cloud.server import CloudServer
from hedgerow.thing import MemoryQueue, NotInGroupError, Thing, ThingConfig, thing_config
from tests.conftest import free_port

from .conftest import FAST_BACKOFF, Recorder

TIMEOUT = 20


@dataclass
class Cloud:
    server: CloudServer
    api: httpx.AsyncClient
    directory: Path

    @property
    def root_ca(self) -> Path:
        return self.server.config.data_dir / "pki" / "root-ca.pem"

    @property
    def endpoint(self) -> str:
        assert self.server.endpoints is not None
        return f"127.0.0.1:{self.server.endpoints.device[1]}"

    async def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.api.request(method, path, **kwargs)
        assert response.status_code < 300, response.text
        return response.json()

    async def thing(self, name: str, groups: list[str]) -> tuple[Path, Path]:
        body = await self.ok("POST", "/api/v1/things", json={"name": name, "groups": groups})
        cert, key = self.directory / f"{name}.cert.pem", self.directory / f"{name}.key"
        cert.write_text(body["certificate"])
        key.write_text(body["private_key"])
        return cert, key

    async def core_server_cert(self, core: str, group: str) -> tuple[Path, Path, Path]:
        """Create (once) the core and get it a server certificate from the current group CA."""
        identity_cert = self.directory / f"{core}.identity.pem"
        identity_key = self.directory / f"{core}.identity.key"
        if not identity_cert.exists():
            body = await self.ok("POST", "/api/v1/cores", json={"name": core, "group": group})
            files = bundle.read_bundle(base64.b64decode(body["bundle"]))
            identity_cert.write_bytes(files[bundle.CORE_CERT])
            identity_key.write_bytes(files[bundle.CORE_KEY])
        key = pki.new_key()
        ctx = pki.client_context(str(self.root_ca), str(identity_cert), str(identity_key))
        async with httpx.AsyncClient(verify=ctx, timeout=10) as device:
            response = await device.post(
                f"https://{self.endpoint}/core/v1/certificate",
                json={
                    "csr": pki.make_csr(key, core, ["127.0.0.1"]).decode(),
                    "hosts": ["127.0.0.1"],
                },
            )
        assert response.status_code == 200, response.text
        serial = len(list(self.directory.glob(f"{core}.server*.pem")))
        cert_file = self.directory / f"{core}.server{serial}.pem"
        key_file = self.directory / f"{core}.server{serial}.key"
        cert_file.write_text(response.json()["certificate"])
        key_file.write_bytes(pki.key_to_pem(key))
        return cert_file, key_file, self.root_ca


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    config, _ = await asyncio.to_thread(
        init_data_dir,
        tmp_path / "cloud",
        api=Listen("127.0.0.1", 0),
        device=Listen("127.0.0.1", 0),
        mqtt=Listen("127.0.0.1", 0),
    )
    async with CloudServer(config, enable_mqtt=False) as server:
        async with httpx.AsyncClient(
            base_url=server.api_url,
            headers={"authorization": f"Bearer {server.admin_token}"},
            timeout=10,
        ) as api:
            yield Cloud(server, api, tmp_path)


@asynccontextmanager
async def core_endpoint(
    cert: Path, key: Path, root_ca: Path, port: int, recorder: Recorder | None = None
) -> AsyncIterator[Broker]:
    ctx = pki.server_context(str(cert), str(key), str(root_ca), require_client_cert=True)
    async with Broker(authenticator=CertificateAuthenticator()) as broker:
        if recorder is not None:
            broker.add_interceptor(recorder)
        await broker.listen("127.0.0.1", port, ssl=ctx)
        yield broker


async def setup_group(cloud: Cloud, port: int) -> tuple[ThingConfig, tuple[Path, Path, Path]]:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "factory-1"})
    core_files = await cloud.core_server_cert("pi-1", "factory-1")
    await cloud.ok(
        "PUT",
        "/api/v1/cores/pi-1/connectivity",
        json={"endpoints": [{"host": "127.0.0.1", "port": port}]},
    )
    cert, key = await cloud.thing("bme680-1", ["factory-1"])
    await cloud.thing("observer", ["factory-1"])
    config = thing_config(
        "bme680-1",
        cloud.endpoint,
        cloud.root_ca,
        cert,
        key,
        cache_dir=cloud.directory / "state",
        backoff=FAST_BACKOFF,
    )
    return config, core_files


def observer(cloud: Cloud, port: int, group_cas: list[str]) -> Client:
    ctx = pki.client_context(
        ca_data="\n".join(group_cas),
        cert_file=str(cloud.directory / "observer.cert.pem"),
        key_file=str(cloud.directory / "observer.key"),
    )
    return Client("127.0.0.1", port, client_id="observer", ssl=ctx, server_hostname="127.0.0.1")


async def group_cas(cloud: Cloud) -> list[str]:
    body = await cloud.ok("GET", "/api/v1/groups/factory-1/cas")
    return [item["certificate"] for item in body["items"]]


async def test_discovers_through_the_cloud_and_survives_a_ca_rotation(cloud: Cloud) -> None:
    port = free_port()
    config, (cert, key, root) = await setup_group(cloud, port)
    async with Thing(config, queue=MemoryQueue(1000)) as thing:
        async with core_endpoint(cert, key, root, port):
            async with asyncio.timeout(TIMEOUT):
                endpoint = await thing.wait_connected()
            assert endpoint.port == port
        cached = json.loads((cloud.directory / "state" / "bme680-1.json").read_text())
        assert cached["discovery"]["GGGroups"][0]["CAs"]

        rotated = await cloud.ok("POST", "/api/v1/groups/factory-1/cas/rotate")
        assert rotated
        new_cert, new_key, _ = await cloud.core_server_cert("pi-1", "factory-1")
        for i in range(10):
            thing.publish("sensors/bme680-1", f"r{i}".encode(), qos=1)
        recorder = Recorder()
        async with (
            core_endpoint(new_cert, new_key, root, port, recorder),
            observer(cloud, port, await group_cas(cloud)) as obs,
        ):
            assert await recorder.wait_for(10) == [f"r{i}".encode() for i in range(10)]
            async with asyncio.timeout(TIMEOUT):
                stats = await thing.wait_until(lambda s: s.queued == 0)
            assert stats.dropped == 0
            assert stats.discoveries == 2  # the cached group CA failed: re-discovered once
            assert obs.is_connected  # another device trusting the API's CA list gets in too


async def test_a_thing_in_no_group_is_told_so(cloud: Cloud) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "coreless"})
    cert, key = await cloud.thing("lonely", ["coreless"])
    config = thing_config(
        "lonely", cloud.endpoint, cloud.root_ca, cert, key, cache_dir=cloud.directory / "s"
    )
    async with Thing(config) as thing:
        with pytest.raises(NotInGroupError) as info:
            async with asyncio.timeout(TIMEOUT):
                await thing.wait_connected()
    assert "'lonely'" in info.value.one_line()
