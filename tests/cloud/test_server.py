"""The composition root: HTTPS for the API, the console hook, artifacts on disk, restarts."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import types
from pathlib import Path

import httpx
import pytest
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from hedgerow import pki
from hedgerow.cloud import config as config_module
from hedgerow.cloud.errors import ConfigError
from hedgerow.cloud.server import CloudServer

from .conftest import loopback_config
from .test_api import code_zip


async def test_api_over_https_with_the_cloud_certificate(tmp_path: Path) -> None:
    config = await asyncio.to_thread(loopback_config, tmp_path / "cloud", api_tls=True)
    async with CloudServer(config) as server:
        assert server.api_url.startswith("https://127.0.0.1:")
        ctx = pki.client_context(str(config.paths.root_ca_cert))
        headers = {"authorization": f"Bearer {server.admin_token}"}
        async with httpx.AsyncClient(base_url=server.api_url, verify=ctx, headers=headers) as api:
            assert (await api.get("/api/v1/groups")).json() == {"items": [], "count": 0}
        localhost = server.api_url.replace("127.0.0.1", "localhost")
        async with httpx.AsyncClient(base_url=localhost, verify=ctx) as api:
            assert (await api.get("/api/v1/health")).status_code == 200
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(base_url=server.api_url) as untrusting:
                await untrusting.get("/api/v1/health")


async def test_console_routes_are_mounted_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def page(request: object) -> PlainTextResponse:
        return PlainTextResponse("console here")

    console = types.ModuleType("hedgerow.cloud.console")
    console.routes = lambda: [Route("/console", page)]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hedgerow.cloud.console", console)
    config = await asyncio.to_thread(loopback_config, tmp_path / "cloud")
    async with CloudServer(config, enable_mqtt=False) as server:
        assert server.mqtt_url == ""
        async with httpx.AsyncClient(base_url=server.api_url) as client:
            assert (await client.get("/console")).text == "console here"


async def test_artifacts_are_content_addressed_on_disk_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    config = await asyncio.to_thread(loopback_config, tmp_path / "cloud")
    data = code_zip()
    sha = hashlib.sha256(data).hexdigest()
    async with CloudServer(config) as server:
        headers = {"authorization": f"Bearer {server.admin_token}"}
        async with httpx.AsyncClient(base_url=server.api_url, headers=headers) as api:
            assert (await api.post("/api/v1/artifacts", content=data)).json() == {
                "sha256": sha,
                "size": len(data),
            }
            await api.post("/api/v1/groups", json={"name": "kept"})
    cached = config.paths.artifacts / sha[:2] / sha
    assert cached.read_bytes() == data
    cached.unlink()
    async with CloudServer(config) as server:  # same data directory: migrations are idempotent
        headers = {"authorization": f"Bearer {server.admin_token}"}
        async with httpx.AsyncClient(base_url=server.api_url, headers=headers) as api:
            assert (await api.get(f"/api/v1/artifacts/{sha}")).content == data
            assert [g["name"] for g in (await api.get("/api/v1/groups")).json()["items"]] == [
                "kept"
            ]
    assert cached.exists(), "a database read refills the disk copy"


async def test_config_round_trip_and_bad_values(tmp_path: Path) -> None:
    config = await asyncio.to_thread(loopback_config, tmp_path / "cloud")
    assert config_module.load(config.data_dir) == config
    (config.data_dir / "config.toml").write_text("[pki]\ngroup_ca_rotation_days = 45\n")
    with pytest.raises(ConfigError, match="group_ca_rotation_days"):
        config_module.load(config.data_dir)
    (config.data_dir / "config.toml").write_text("not toml [")
    with pytest.raises(ConfigError, match="TOML"):
        config_module.load(config.data_dir)
    with pytest.raises(ConfigError, match="cloud init"):
        config_module.load(tmp_path / "nowhere")


async def test_a_busy_port_fails_cleanly(tmp_path: Path) -> None:
    config = await asyncio.to_thread(loopback_config, tmp_path / "cloud")
    async with CloudServer(config) as first:
        assert first.endpoints is not None
        clash = config.replace(api=config.api.__class__("127.0.0.1", first.endpoints.api[1]))
        with pytest.raises(OSError):
            async with CloudServer(clash):
                pass
