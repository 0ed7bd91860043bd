"""Support bundles through the cloud, on SQLite and PostgreSQL: the API asks, the core hears
it on its MQTT link and uploads over device HTTPS; only the core asked can answer."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

from hedgerow.contract.support import SupportBundleRequest

from .conftest import Cloud
from .test_core_link import WAIT, core_client


async def test_a_core_uploads_the_bundle_the_api_asked_for(cloud: Cloud, tmp_path: Path) -> None:
    for group in ("factory-1", "factory-2"):
        await cloud.ok("POST", "/api/v1/groups", json={"name": group})
    cert, key = await cloud.core("pi-1", "factory-1", tmp_path)
    other_cert, other_key = await cloud.core("pi-2", "factory-2", tmp_path)
    bundle = gzip.compress(b"a tar would be here")
    async with core_client(cloud, cert, key) as core:
        await core.subscribe("$hedgerow/cores/pi-1/support-bundle", qos=1)
        asked = await cloud.ok("POST", "/api/v1/cores/pi-1/support-bundles")
        assert asked["status"] == "requested" and asked["core"] == "pi-1"
        async with asyncio.timeout(WAIT):
            message = await core.get_message()
        request = SupportBundleRequest.from_json(message.payload)
        assert request.request_id == asked["request_id"]
    path = f"/api/v1/cores/pi-1/support-bundles/{request.request_id}"
    early = await cloud.api.get(path + "/download")
    assert early.status_code == 409 and "connected" in early.json()["error"]["message"]

    upload = f"/core/v1/support-bundles/{request.request_id}"
    async with cloud.device_client(other_cert, other_key) as stranger:
        refused = await stranger.put(upload, content=bundle)
        assert refused.status_code == 404  # another core cannot answer pi-1's request
    async with cloud.device_client(cert, key) as device:
        not_gzip = await device.put(upload, content=b"plain text")
        assert not_gzip.status_code == 400
        stored = await device.put(upload, content=bundle)
        assert stored.status_code == 200 and stored.json()["size"] == len(bundle)

    shown = await cloud.ok("GET", path)
    assert shown["status"] == "received" and shown["size"] == len(bundle)
    download = await cloud.api.get(path + "/download")
    assert download.status_code == 200 and download.content == bundle
    assert download.headers["content-type"] == "application/gzip"
    missing = await cloud.api.post("/api/v1/cores/nobody/support-bundles")
    assert missing.status_code == 404
