"""Deployments edited on the core's disk are refused at restart: a real ``hedgerow core run``
process and the real cloud (in this process). The core falls back to the previous
deployment that verifies, reports the refusal in its heartbeat, and the cloud sends its
latest deployment again, which replaces the edited files."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import tomllib
import zipfile
from collections.abc import Callable
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


def code_zip(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("temp_correct.py", (2026, 1, 1, 0, 0, 0)), source)
    return buffer.getvalue()


async def until(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    try:
        async with asyncio.timeout(timeout):
            while not (value := predicate()):
                await asyncio.sleep(0.05)
            return value
    except TimeoutError:
        raise AssertionError(f"not within {timeout:g} s: {what}") from None


async def deploy(api: httpx.AsyncClient) -> str:
    deployment_id = str(
        (await ok(api, "POST", "/api/v1/groups/factory-1/deployments", json={}))["deployment_id"]
    )
    async with asyncio.timeout(30):
        while (await ok(api, "GET", f"/api/v1/deployments/{deployment_id}"))["status"] not in (
            "Success",
            "Failure",
            "RolledBack",
        ):
            await asyncio.sleep(0.05)
    body = await ok(api, "GET", f"/api/v1/deployments/{deployment_id}")
    assert body["status"] == "Success", body
    return deployment_id


@pytest.mark.slow
async def test_edited_document_and_swapped_artifact_are_refused_at_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hedgerow.cloud")
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
            await ok(
                api, "POST", "/api/v1/things", json={"name": "bme680-1", "groups": ["factory-1"]}
            )
            await ok(api, "POST", "/api/v1/groups/factory-1/subscriptions",
                     json={"source": "thing:bme680-1", "topic": "sensors/#", "target": "cloud"})  # fmt: skip
            store = tmp_path / "core" / "deployments"

            logs = [tmp_path / f"core-{n}.stderr" for n in range(3)]
            core = await start_core(config_path, logs[0])
            try:
                d1 = await deploy(api)
                artifact = code_zip("def handler(event, context):\n    return event\n")
                sha = (await ok(api, "POST", "/api/v1/artifacts", content=artifact))["sha256"]
                await ok(api, "POST", "/api/v1/groups/factory-1/functions",
                         json={"name": "temp-correct", "handler": "temp_correct.handler",
                               "artifact": sha})  # fmt: skip
                d2 = await deploy(api)
            finally:
                await stop_core(core)
            original = (store / f"{d2}.json").read_bytes()

            # 1. the document edited: a foreign thing admitted, the broker opened
            data = json.loads(original)
            data["things"].append("thing-of-another-group")
            data["settings"]["open_broker"] = True
            (store / f"{d2}.json").write_text(json.dumps(data, separators=(",", ":")))
            # 2. then (second restart) the function's code swapped
            swapped = code_zip("import os\ndef handler(event, context):\n    os.system('id')\n")

            for log_file, tamper in ((logs[1], None), (logs[2], swapped)):
                caplog.clear()
                if tamper is not None:
                    (store / "artifacts" / f"{sha}.zip").write_bytes(tamper)
                core = await start_core(config_path, log_file)
                try:
                    bad_file = f"{d2}.json" if tamper is None else f"artifacts/{sha}.zip"
                    text = log_file.read_text()
                    # restore runs before the core says it serves
                    assert f"core.deployment.refused id={d2} file={bad_file}" in text, text
                    assert f"core.deployment.fell_back id={d1} refused={d2}" in text, text
                    await until(
                        lambda: (
                            f"deployment.redeploy core=pi-1 running={d1} refused={d2}"
                            in caplog.text
                        ),
                        "the cloud answers the refusal with a redeploy",
                    )
                    await until(
                        lambda: (store / "current").read_text() == d2,
                        "the latest deployment arrives again, verifies and is applied",
                    )
                    assert (store / f"{d2}.json").read_bytes() == original
                    assert (store / "artifacts" / f"{sha}.zip").read_bytes() == artifact
                    assert (store / "current").read_text() == d2
                finally:
                    await stop_core(core)
