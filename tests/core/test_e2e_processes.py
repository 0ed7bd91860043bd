"""Real processes end to end: the real cloud (in this process), ``hedgerow core run`` and
``hedgerow thing run`` (Greengrass-style discovery through the cloud, then mutual TLS to the
core) — readings reach the cloud's telemetry store through the core."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w

from hedgerow.cloud.config import Listen
from hedgerow.cloud.datadir import init_data_dir
from hedgerow.cloud.server import CloudServer
from hedgerow.core.bundle_unpack import unpack_bundle

from ..conftest import free_port
from .test_kill9 import start_core, stop_core


async def ok(api: httpx.AsyncClient, method: str, path: str, **kw: Any) -> Any:
    response = await api.request(method, path, **kw)
    assert response.status_code < 300, response.text
    return response.json()


@pytest.mark.slow
async def test_cloud_core_and_thing_processes(tmp_path: Path) -> None:
    config, _ = await asyncio.to_thread(
        init_data_dir, tmp_path / "cloud", database="",
        api=Listen("127.0.0.1", 0), device=Listen("127.0.0.1", 0), mqtt=Listen("127.0.0.1", 0),
    )  # fmt: skip
    async with CloudServer(config) as server:
        headers = {"authorization": f"Bearer {server.admin_token}"}
        async with httpx.AsyncClient(base_url=server.api_url, headers=headers, timeout=10) as api:
            await ok(api, "POST", "/api/v1/groups", json={"name": "factory-1"})
            created = await ok(
                api, "POST", "/api/v1/cores", json={"name": "pi-1", "group": "factory-1"}
            )
            (tmp_path / "pi-1.tar.gz").write_bytes(base64.b64decode(created["bundle"]))
            config_path = unpack_bundle(tmp_path / "pi-1.tar.gz", tmp_path / "core")
            settings = tomllib.loads(config_path.read_text())
            settings["local"] = {"host": "127.0.0.1", "port": free_port(), "hosts": ["127.0.0.1"]}
            settings["status"] = {"metrics_port": 0}
            config_path.write_text(tomli_w.dumps(settings))
            thing = await ok(
                api, "POST", "/api/v1/things", json={"name": "bme680-1", "groups": ["factory-1"]}
            )
            (tmp_path / "t.pem").write_text(thing["certificate"])
            (tmp_path / "t.key").write_text(thing["private_key"])
            (tmp_path / "root.pem").write_text(thing["root_ca"])
            await ok(api, "POST", "/api/v1/groups/factory-1/subscriptions",
                     json={"source": "thing:bme680-1", "topic": "sensors/#", "target": "cloud"})  # fmt: skip
            core = await start_core(config_path, tmp_path / "core.stderr")
            try:
                deployment_id = (
                    await ok(api, "POST", "/api/v1/groups/factory-1/deployments", json={})
                )["deployment_id"]
                async with asyncio.timeout(20):
                    while (await ok(api, "GET", f"/api/v1/deployments/{deployment_id}")).get(
                        "status"
                    ) != "Success":
                        await asyncio.sleep(0.05)
                assert server.endpoints is not None
                device_port = server.endpoints.device[1]
                with (tmp_path / "thing.log").open("wb") as log:
                    thing_proc = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "hedgerow", "thing", "run",
                        "-e", f"127.0.0.1:{device_port}", "-r", str(tmp_path / "root.pem"),
                        "-c", str(tmp_path / "t.pem"), "-k", str(tmp_path / "t.key"), "-id", "bme680-1",
                        "-t", "sensors/bme680-1", "--sensor", "sim", "--count", "5", "--interval", "0.05",
                        "--state-dir", str(tmp_path / "thing-state"), "--give-up", "20",
                        stdout=log, stderr=log, env={**os.environ},
                    )  # fmt: skip
                    assert await asyncio.wait_for(thing_proc.wait(), 60) == 0, (
                        tmp_path / "thing.log"
                    ).read_text()
                async with asyncio.timeout(20):
                    while True:
                        stored = (
                            await ok(api, "GET", "/api/v1/messages", params={"filter": "sensors/#"})
                        )["items"]
                        if len(stored) >= 5:
                            break
                        await asyncio.sleep(0.1)
                assert {m["topic"] for m in stored} == {"sensors/bme680-1"}
                assert {m["core"] for m in stored} == {"pi-1"}
            finally:
                await stop_core(core)
