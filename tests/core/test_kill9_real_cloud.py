"""The kill -9 scenario end to end with the real cloud: ``hedgerow.cloud`` (stopped and
started again on the same ports and database), a real ``hedgerow core run`` process, and a
device over mutual TLS. Every message the core acknowledged ends up in the cloud's
telemetry store."""

from __future__ import annotations

import asyncio
import base64
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w

from hedgerow import pki
from hedgerow.client import Client
from hedgerow.cloud.config import CloudConfig, Listen
from hedgerow.cloud.datadir import init_data_dir
from hedgerow.cloud.server import CloudServer
from hedgerow.core.bundle_unpack import unpack_bundle

from ..conftest import free_port
from .test_kill9 import start_core, stop_core, stream, wait_accepted


async def ok(api: httpx.AsyncClient, method: str, path: str, **kw: Any) -> Any:
    response = await api.request(method, path, **kw)
    assert response.status_code < 300, response.text
    return response.json()


def admin(server: CloudServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.api_url,
        headers={"authorization": f"Bearer {server.admin_token}"},
        timeout=10,
    )


async def stored_ids(api: httpx.AsyncClient) -> list[int]:
    ids: list[int] = []
    after = 0
    while True:
        params = {"filter": "data/#", "order": "asc", "limit": "1000", "after_id": str(after)}
        page = (await ok(api, "GET", "/api/v1/messages", params=params))["items"]
        ids.extend(int(m["payload"]) for m in page)
        if len(page) < 1000:
            return ids
        after = page[-1]["id"]


@pytest.mark.slow
async def test_kill_9_with_the_real_cloud_away_loses_nothing(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("api", "device", "mqtt")}
    config: CloudConfig
    config, _ = await asyncio.to_thread(
        init_data_dir, tmp_path / "cloud", database="",
        api=Listen("127.0.0.1", ports["api"]), device=Listen("127.0.0.1", ports["device"]),
        mqtt=Listen("127.0.0.1", ports["mqtt"]),
    )  # fmt: skip
    local_port = free_port()
    async with CloudServer(config) as server, admin(server) as api:
        await ok(api, "POST", "/api/v1/groups", json={"name": "factory-1"})
        created = await ok(
            api, "POST", "/api/v1/cores", json={"name": "pi-1", "group": "factory-1"}
        )
        (tmp_path / "pi-1.tar.gz").write_bytes(base64.b64decode(created["bundle"]))
        config_path = unpack_bundle(tmp_path / "pi-1.tar.gz", tmp_path / "core")
        settings = tomllib.loads(config_path.read_text())
        settings["local"] = {"host": "127.0.0.1", "port": local_port, "hosts": ["127.0.0.1"]}
        settings["status"] = {"metrics_port": 0}
        settings["connector"] = {"backoff_base": 0.05, "backoff_cap": 0.5}
        config_path.write_text(tomli_w.dumps(settings))
        thing = await ok(
            api, "POST", "/api/v1/things", json={"name": "sensor", "groups": ["factory-1"]}
        )
        (tmp_path / "t.pem").write_text(thing["certificate"])
        (tmp_path / "t.key").write_text(thing["private_key"])
        await ok(api, "POST", "/api/v1/groups/factory-1/subscriptions",
                 json={"source": "thing:sensor", "topic": "data/#", "target": "cloud"})  # fmt: skip
        proc = await start_core(config_path, tmp_path / "core.stderr")
        deployment_id = (await ok(api, "POST", "/api/v1/groups/factory-1/deployments", json={}))[
            "deployment_id"
        ]
        async with asyncio.timeout(20):
            while (await ok(api, "GET", f"/api/v1/deployments/{deployment_id}")).get(
                "status"
            ) != "Success":
                await asyncio.sleep(0.05)
    # the cloud is gone now (HTTPS and MQTT)
    try:
        ctx = pki.client_context(
            str(tmp_path / "core" / "server" / "group-cas.pem"),
            str(tmp_path / "t.pem"),
            str(tmp_path / "t.key"),
        )
        accepted: list[int] = []
        client = Client(
            "127.0.0.1", local_port, client_id="sensor", ssl=ctx, server_hostname="127.0.0.1"
        )
        await client.connect()
        stop = asyncio.Event()
        task = asyncio.create_task(stream(client, 0, accepted, stop))
        await wait_accepted(accepted, 2000)
        proc.kill()
        await proc.wait()
        stop.set()
        await asyncio.wait_for(task, 10)
        client.abort()

        proc = await start_core(config_path, tmp_path / "core.stderr")
        async with Client(
            "127.0.0.1", local_port, client_id="sensor", ssl=ctx, server_hostname="127.0.0.1"
        ) as c:
            for i in range(1_000_000, 1_000_200):
                await c.publish(f"data/{i}", str(i).encode(), qos=1)
                accepted.append(i)

        async with CloudServer(config) as server, admin(server) as api:
            wanted = set(accepted)
            async with asyncio.timeout(60):
                while not wanted <= set(ids := await stored_ids(api)):
                    await asyncio.sleep(0.2)
            counts = Counter(ids)
            assert not wanted - set(counts)
            print(f"accepted={len(wanted)} stored={len(ids)} duplicates={len(ids) - len(counts)}")
    finally:
        await stop_core(proc)
