"""The core against the real ``hedgerow.cloud`` server: bundle, certificate, deployment,
telemetry into the cloud's store, all over mutual TLS on loopback."""

from __future__ import annotations

import asyncio
import base64
import tomllib
from pathlib import Path
from typing import Any

import httpx
import tomli_w

from hedgerow import pki
from hedgerow.client import Client
from hedgerow.cloud.config import Listen
from hedgerow.cloud.datadir import init_data_dir
from hedgerow.cloud.server import CloudServer
from hedgerow.core.bundle_unpack import unpack_bundle
from hedgerow.core.config import load_config
from hedgerow.core.daemon import CoreDaemon

from ..conftest import free_port


async def ok(api: httpx.AsyncClient, method: str, path: str, **kw: Any) -> Any:
    response = await api.request(method, path, **kw)
    assert response.status_code < 300, response.text
    return response.json()


async def until(predicate: Any, timeout: float = 15.0) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            value = await predicate()
            if value:
                return value
            await asyncio.sleep(0.05)


async def test_core_with_the_real_cloud(tmp_path: Path) -> None:
    config, _ = await asyncio.to_thread(
        init_data_dir, tmp_path / "cloud", database="",
        api=Listen("127.0.0.1", 0), device=Listen("127.0.0.1", 0), mqtt=Listen("127.0.0.1", 0),
    )  # fmt: skip
    async with (
        CloudServer(config) as server,
        httpx.AsyncClient(
            base_url=server.api_url,
            headers={"authorization": f"Bearer {server.admin_token}"},
            timeout=10,
        ) as api,
    ):
        await ok(api, "POST", "/api/v1/groups", json={"name": "factory-1"})
        created = await ok(
            api, "POST", "/api/v1/cores", json={"name": "pi-1", "group": "factory-1"}
        )
        bundle = tmp_path / "pi-1.tar.gz"
        bundle.write_bytes(base64.b64decode(created["bundle"]))
        config_path = unpack_bundle(bundle, tmp_path / "core")
        settings = tomllib.loads(config_path.read_text())
        port = free_port()
        settings["local"] = {"host": "127.0.0.1", "port": port, "hosts": ["127.0.0.1"]}
        settings["status"] = {"metrics_port": 0}
        settings["spool"] = {"fsync": "normal"}
        config_path.write_text(tomli_w.dumps(settings))
        thing = await ok(
            api, "POST", "/api/v1/things", json={"name": "bme680-1", "groups": ["factory-1"]}
        )
        (tmp_path / "t.pem").write_text(thing["certificate"])
        (tmp_path / "t.key").write_text(thing["private_key"])
        await ok(api, "POST", "/api/v1/groups/factory-1/subscriptions",
                 json={"source": "thing:bme680-1", "topic": "sensors/#", "target": "cloud"})  # fmt: skip

        async with CoreDaemon(load_config(config_path)) as core:
            deployment = await ok(api, "POST", "/api/v1/groups/factory-1/deployments", json={})
            deployment_id = deployment["deployment_id"]

            async def succeeded() -> bool:
                body = await ok(api, "GET", f"/api/v1/deployments/{deployment_id}")
                return bool(body.get("status") == "Success")

            await until(succeeded)
            assert core.admission.things == frozenset({"bme680-1"})
            ctx = pki.client_context(
                str(tmp_path / "core" / "server" / "group-cas.pem"),
                str(tmp_path / "t.pem"),
                str(tmp_path / "t.key"),
            )
            async with Client(
                "127.0.0.1", port, client_id="bme680-1", ssl=ctx, server_hostname="127.0.0.1"
            ) as c:
                await c.publish("sensors/bme680-1", b'{"temperature": 21.5}', qos=1)

            async def stored() -> list[Any]:
                body = await ok(api, "GET", "/api/v1/messages", params={"filter": "sensors/#"})
                found: list[Any] = body["items"] if isinstance(body, dict) else body
                return found

            messages = await until(stored)
            assert messages[0]["topic"] == "sensors/bme680-1"
            cores = await ok(api, "GET", "/api/v1/cores/pi-1")
            assert {"host": "127.0.0.1", "port": port} in [
                {"host": e["host"], "port": e["port"]} for e in cores["endpoints"]
            ]
