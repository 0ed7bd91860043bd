"""Support bundles through the cloud, on SQLite and PostgreSQL: the API asks, the core hears
it on its MQTT link and uploads over device HTTPS; only the core asked can answer. A request
for a core that is offline waits for it, retained, until it expires."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import time
from pathlib import Path

from hedgerow.client import Client
from hedgerow.contract.support import SupportBundleRequest
from hedgerow.contract.topics import CoreLeaf, core_topic

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


async def _first_message(cloud: Cloud, core: Client) -> bytes:
    """What the core hears first on subscribing to its support-bundle topic: the retained
    request, if one waits; else the marker the cloud publishes after the subscription."""
    await core.subscribe(
        core_topic("pi-1", CoreLeaf.SUPPORT_BUNDLE), core_topic("pi-1", CoreLeaf.SHADOW), qos=1
    )
    notifier = cloud.server.services.support_bundles.notifier
    await notifier.publish(core_topic("pi-1", CoreLeaf.SHADOW), b"marker", retain=False)
    async with asyncio.timeout(WAIT):
        message = await core.get_message()
    return message.payload if message.topic.endswith("support-bundle") else b"marker"


async def test_a_request_waits_for_an_offline_core_and_expires(
    cloud: Cloud, tmp_path: Path
) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "factory-1"})
    cert, key = await cloud.core("pi-1", "factory-1", tmp_path)
    path = "/api/v1/cores/pi-1/support-bundles"

    # asked while the core is away: waiting, and asking again gives the same request
    asked = await cloud.ok("POST", path, json={})
    assert asked["status"] == "waiting", asked
    expires = dt.datetime.fromisoformat(asked["expires_at"]).timestamp()
    assert abs(expires - (time.time() + 86400)) < 60  # a day by default
    again = await cloud.ok("POST", path)
    assert again["request_id"] == asked["request_id"]
    refused = await cloud.api.post(path, json={"wait_s": 0})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "wait_s"

    # the core connects: the retained request reaches it; once uploaded, it is cleared
    async with core_client(cloud, cert, key) as core:
        request = SupportBundleRequest.from_json(await _first_message(cloud, core))
        assert request.request_id == asked["request_id"]
        assert request.expires_at is not None and abs(request.expires_at - expires) < 1
        shown = await cloud.ok("GET", f"{path}/{request.request_id}")
        assert shown["status"] == "requested"  # connected now: asked, not in yet
    async with cloud.device_client(cert, key) as device:
        upload = f"/core/v1/support-bundles/{request.request_id}"
        assert (await device.put(upload, content=gzip.compress(b"tar"))).status_code == 200
    assert (await cloud.ok("GET", f"{path}/{request.request_id}"))["status"] == "received"
    async with core_client(cloud, cert, key) as core:
        assert await _first_message(cloud, core) == b"marker"  # nothing retained any more

    # a request nobody answers in time expires, and its retained message is cleared
    started = dt.datetime.now(dt.UTC)
    short = await cloud.ok("POST", path, json={"wait_s": 1})
    assert short["request_id"] != asked["request_id"] and short["status"] == "waiting"
    async with asyncio.timeout(WAIT):
        while (await cloud.ok("GET", f"{path}/{short['request_id']}"))["status"] != "expired":
            await asyncio.sleep(0.05)
    late = await cloud.api.get(f"{path}/{short['request_id']}/download")
    assert late.status_code == 409 and "expired" in late.json()["error"]["message"]
    swept = await cloud.server.services.support_bundles.sweep(started, dt.datetime.now(dt.UTC))
    assert [b.request_id for b in swept] == [short["request_id"]]
    async with core_client(cloud, cert, key) as core:
        assert await _first_message(cloud, core) == b"marker"
