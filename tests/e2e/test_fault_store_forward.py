"""Store and forward through a crash: the cloud is down, the core is killed with SIGKILL.

A device publishes a numbered QoS 1 stream routed to the cloud. The cloud goes away, the
core keeps accepting (into its durable spool), the core is killed mid-stream and restarted
from the same data directory, the device goes on, the cloud comes back: every message the
core acknowledged (PUBACK) is in the telemetry store. Duplicates are allowed (at least
once) and counted; nothing may be missing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.harness import running_system
from tests.e2e.publisher import THING, Publisher, wait_all_stored

pytestmark = pytest.mark.slow


async def test_every_acknowledged_message_survives_cloud_outage_and_core_kill9(
    tmp_path: Path,
) -> None:
    with running_system(tmp_path) as system:
        await asyncio.to_thread(system.create_thing, THING)
        await asyncio.to_thread(system.route, f"thing:{THING}", "sensors/#", "cloud")
        await asyncio.to_thread(system.deploy)

        publisher = Publisher(system)
        task = asyncio.create_task(publisher.run())
        try:
            # 1. everything up: the stream reaches the cloud
            await publisher.wait_acked(30, 60, "30 acknowledged with the cloud up")

            # 2. the cloud goes away; the core keeps accepting into its spool
            await asyncio.to_thread(system.stop_cloud, kill=True)
            before_outage = len(publisher.acked)
            await publisher.wait_acked(before_outage + 100, 60, "100 acknowledged, cloud down")

            # 3. the core is killed mid-stream (no clean shutdown), then restarted
            system.procs["core"].kill9()
            acked_at_kill = len(publisher.acked)
            await asyncio.to_thread(system.start_core, first=False)
            await publisher.wait_acked(acked_at_kill + 100, 90, "100 acknowledged after restart")
        finally:
            publisher.stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 20)
        assert publisher.reconnects >= 1, "the device never noticed the core's death"

        # 4. the cloud comes back: the spool drains
        await asyncio.to_thread(system.start_cloud)
        acked = set(publisher.acked)
        stored = await wait_all_stored(system, acked, 90)

    duplicates = sum(n - 1 for n in Counter(stored).values())
    unacked_stored = set(stored) - acked
    print(
        f"acknowledged {len(acked)}, stored {len(stored)} ({len(set(stored))} distinct), "
        f"duplicates {duplicates}, stored but never acknowledged {len(unacked_stored)}, "
        f"device reconnects {publisher.reconnects}"
    )
    assert set(stored) <= set(publisher.sent), "the store holds messages nobody sent"
    assert duplicates <= len(acked) // 2, f"too many duplicates: {duplicates}"
