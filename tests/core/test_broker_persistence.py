"""The core embeds the broker with persistence under its data directory: a device's
persistent session and the QoS 1 messages queued for it survive a kill -9 of the core."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hedgerow.client import Client

from ..conftest import free_port
from .fakecloud import FakeCloud
from .helpers import document
from .test_kill9 import start_core, stop_core


async def test_queued_messages_for_a_device_survive_kill_9_of_the_core(
    tmp_path: Path, test_pki: Any
) -> None:
    async with FakeCloud(tmp_path / "cloud", test_pki.root) as cloud:
        local_port = free_port()
        config = cloud.provision(tmp_path / "core", local_port)
        log = tmp_path / "core.stderr"
        sensor = cloud.thing_context(cloud.thing("sensor"))
        display = cloud.thing_context(cloud.thing("display"))

        def client(name: str, ctx: Any, **kw: Any) -> Client:
            return Client(
                "127.0.0.1", local_port, client_id=name, ssl=ctx, server_hostname="127.0.0.1", **kw
            )

        proc = await start_core(config, log)
        try:
            subs = (("thing:sensor", "data/#", "thing:display"),)
            await cloud.deploy(document("d-1", things=("sensor", "display"), subscriptions=subs))
            await cloud.wait_for(
                lambda: any(s["status"] == "Success" for s in cloud.statuses()), 20
            )
            away = client("display", display, clean_start=False, session_expiry=3600)
            await away.connect()
            await away.subscribe("data/#", qos=1)
            await away.disconnect()
            sender = client("sensor", sensor)
            await sender.connect()
            for i in range(20):
                await sender.publish(f"data/{i}", str(i).encode(), qos=1)  # PUBACK awaited
            proc.kill()  # at once after the last acknowledgement
            await proc.wait()
            sender.abort()

            proc = await start_core(config, log)
            back = client("display", display, clean_start=False, session_expiry=3600)
            await back.connect()
            got = []
            async with asyncio.timeout(20):
                while len(got) < 20:
                    got.append(int((await back.get_message()).payload))
            assert sorted(got) == list(range(20))
            await back.disconnect()
            assert (tmp_path / "core" / "broker" / "broker.db").exists()
        finally:
            await stop_core(proc)
