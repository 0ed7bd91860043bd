"""What cores report (deployment status, heartbeats, shadow updates) is never dropped when
recording falls behind: statuses wait in order and are acknowledged once recorded, a
backlog of heartbeats is one (the latest) per core."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

from hedgerow.cloud.errors import Conflict
from hedgerow.cloud.mqtt_endpoint import HEARTBEAT_BATCH, CoreEvents
from hedgerow.contract.topics import CoreLeaf

from .conftest import Cloud
from .test_core_link import core_client, setup_group


class SlowServices:
    """Stand-ins for the services ``CoreEvents.run`` records through; blocked until
    ``open`` is set, as a busy database would be."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.recorded: list[tuple[str, str, bytes]] = []
        self.batches: list[int] = []

    async def record_status(self, core: str, payload: bytes) -> None:
        await self.open.wait()
        if payload == b"refused":
            raise Conflict("a report the cloud refuses")
        self.recorded.append((core, "status", payload))

    async def record_heartbeats(self, batch: list[tuple[str, bytes]]) -> list[tuple[str, None]]:
        await self.open.wait()
        self.batches.append(len(batch))
        self.recorded.extend((core, "heartbeat", payload) for core, payload in batch)
        return [(core, None) for core, _ in batch]

    async def from_core(self, core: str, payload: bytes) -> None:
        await self.open.wait()
        self.recorded.append((core, "shadow", payload))


async def test_a_backlog_drops_no_status_and_keeps_the_latest_heartbeat_per_core() -> None:
    events = CoreEvents()
    services = SlowServices()
    fake = cast(Any, services)
    runner = asyncio.create_task(events.run(fake, fake, fake))
    try:
        statuses = []
        for n in range(20_000):  # twice what the old queue held before it dropped
            core = f"gw-{n % 100}"
            assert events.offer(core, CoreLeaf.HEARTBEAT, b"%d" % n) is None
            if n % 40 == 0:
                handled = events.offer(core, CoreLeaf.DEPLOYMENT_STATUS, b"s%d" % n)
                assert handled is not None
                statuses.append(handled)
        refused = events.offer("gw-0", CoreLeaf.DEPLOYMENT_STATUS, b"refused")
        assert refused is not None
        await asyncio.sleep(0.05)
        assert not any(f.done() for f in statuses)  # not acknowledged before recorded
        assert events.pending() <= 500 + 1 + 100
        services.open.set()
        async with asyncio.timeout(10):
            await asyncio.gather(*statuses, refused)  # a refused report is answered too
            while events.pending():
                await asyncio.sleep(0.01)
    finally:
        runner.cancel()
    recorded_statuses = [p for _, kind, p in services.recorded if kind == "status"]
    assert recorded_statuses == [b"s%d" % n for n in range(0, 20_000, 40)]  # all, in order
    beats = [(c, p) for c, kind, p in services.recorded if kind == "heartbeat"]
    latest = {f"gw-{c}": b"%d" % (19_900 + c) for c in range(100)}
    assert dict(beats) == latest  # each core's latest
    assert len(beats) <= 101  # not 20,000
    assert events.beats_coalesced >= 20_000 - 101
    assert max(services.batches) <= HEARTBEAT_BATCH  # one transaction per batch, not per beat


async def test_a_core_that_beats_all_the_time_does_not_keep_the_others_waiting() -> None:
    """Replaced in its place, a busy core's heartbeat does not go to the back of the line:
    with recording slower than the beats arrive, every core is still recorded."""
    events = CoreEvents()
    services = SlowServices()
    services.open.set()
    fake = cast(Any, services)
    for n in range(300):
        events.offer(f"gw-{n}", CoreLeaf.HEARTBEAT, b"first")
    runner = asyncio.create_task(events.run(fake, fake, fake))
    try:
        async with asyncio.timeout(10):
            while len({c for c, _, _ in services.recorded}) < 300:
                for n in range(300):  # every core beats again before its turn came
                    events.offer(f"gw-{n}", CoreLeaf.HEARTBEAT, b"again")
                await asyncio.sleep(0)
    finally:
        runner.cancel()
    assert len({c for c, _, _ in services.recorded}) == 300


async def test_a_core_has_its_deployment_status_acknowledged_once_it_is_recorded(
    cloud: Cloud, tmp_path: Path
) -> None:
    cert, key, _sha = await setup_group(cloud, tmp_path)
    deployment = await cloud.ok("POST", "/api/v1/groups/factory-1/deployments", json={})
    async with core_client(cloud, cert, key) as core:
        for n in range(500):  # a heartbeat storm meanwhile
            core.publish_nowait("$hedgerow/cores/pi-1/heartbeat", json.dumps({"n": n}), qos=0)
        report = {"deployment_id": deployment["deployment_id"], "status": "Success", "detail": ""}
        await core.publish("$hedgerow/cores/pi-1/deployment-status", json.dumps(report), qos=1)
        # the PUBACK came after the record: no waiting needed to see it
        shown = await cloud.ok("GET", f"/api/v1/deployments/{deployment['deployment_id']}")
        assert shown["status"] == "Success", shown
