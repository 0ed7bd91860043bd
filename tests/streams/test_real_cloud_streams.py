"""The stream manager end to end with the real ``hedgerow.cloud`` server: a V1 function
written only against the PyPI ``greengrasssdk`` is created and deployed through the cloud's
REST API and appends 100,000 messages (from four SDK clients) to a stream exported to the
cloud; every one lands in the cloud's telemetry store, each producer's in the order it
appended them (read back through the REST API)."""

from __future__ import annotations

import asyncio
import base64
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
from hedgerow.core.config import load_config
from hedgerow.core.daemon import CoreDaemon

from ..conftest import free_port
from ..core.test_functions_real import zipped
from ..core.test_real_cloud import ok, until
from .test_core_streams import PRODUCERS, assert_each_producer_in_order, producer_code

#: appended through the PyPI greengrasssdk by a function on the core
COUNT = 100_000


@pytest.mark.slow
@pytest.mark.timeout(720)
async def test_a_v1_function_streams_into_the_real_clouds_telemetry_store(
    tmp_path: Path,
) -> None:
    config, _ = await asyncio.to_thread(
        init_data_dir, tmp_path / "cloud", database="",
        api=Listen("127.0.0.1", 0), device=Listen("127.0.0.1", 0), mqtt=Listen("127.0.0.1", 0),
    )  # fmt: skip
    async with (
        CloudServer(config) as server,
        httpx.AsyncClient(
            base_url=server.api_url,
            headers={"authorization": f"Bearer {server.admin_token}"},
            timeout=30,
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
        settings["local"] = {"host": "127.0.0.1", "port": free_port(), "hosts": ["127.0.0.1"]}
        settings["status"] = {"metrics_port": 0}
        settings["spool"] = {"fsync": "normal"}
        settings["streams"] = {"enabled": True, "port": free_port()}
        config_path.write_text(tomli_w.dumps(settings))

        code = zipped({"producer.py": producer_code(COUNT, PRODUCERS)})
        artifact = await ok(
            api, "POST", "/api/v1/artifacts", content=code,
            headers={"content-type": "application/zip"},
        )  # fmt: skip
        await ok(api, "POST", "/api/v1/groups/factory-1/functions", json={
            "name": "producer", "handler": "producer.handler", "artifact": artifact["sha256"],
            "runtime": "greengrass-v1", "pinned": True, "timeout_s": 60,
        })  # fmt: skip

        # the cloud takes a core's messages only on topics a subscription to it covers
        await ok(api, "POST", "/api/v1/groups/factory-1/subscriptions", json={
            "source": "function:producer", "topic": "streams/pi-1/#", "target": "cloud",
        })  # fmt: skip

        async with CoreDaemon(load_config(config_path)):
            deployment = await ok(api, "POST", "/api/v1/groups/factory-1/deployments", json={})

            async def settled() -> str | None:
                body = await ok(api, "GET", f"/api/v1/deployments/{deployment['deployment_id']}")
                status = body.get("status")
                return status if status in ("Success", "Failure", "RolledBack") else None

            assert await until(settled, 60) == "Success"

            stored: list[dict[str, Any]] = []

            async def all_stored() -> bool:
                after = stored[-1]["id"] if stored else 0
                page = await ok(api, "GET", "/api/v1/messages", params={
                    "filter": "streams/pi-1/line-1", "order": "asc", "limit": 10_000,
                    "after_id": after,
                })  # fmt: skip
                stored.extend(page["items"])
                return len({m["payload"] for m in stored}) >= COUNT

            # measured: ~125 s at load 10, ~370 s at load 16 (the shared machine)
            await until(all_stored, 600)
        # in the stored order
        assert_each_producer_in_order([m["payload"].encode() for m in stored], COUNT, PRODUCERS)
        assert {m["topic"] for m in stored} == {"streams/pi-1/line-1"}
