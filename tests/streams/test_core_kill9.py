"""kill -9 of a real ``hedgerow core run`` while a V1 function appends to a stream that
exports to the cloud (which is away): after the restart every append that returned to the
function reaches the cloud — at least once, as the spool promises."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ..conftest import free_port
from ..core.fakecloud import FakeCloud
from ..core.helpers import document, function_entry
from ..core.test_functions_real import zipped
from ..core.test_kill9 import start_core, stop_core

FUNCTION = """
import os, threading, time
from greengrasssdk.stream_manager import (
    ExportDefinition, HTTPConfig, InvalidRequestException, MessageStreamDefinition,
    StrategyOnFull, StreamManagerClient,
)


def produce():
    client = StreamManagerClient()
    try:
        client.create_message_stream(MessageStreamDefinition(
            name="line-1",
            strategy_on_full=StrategyOnFull.RejectNewData,
            stream_segment_size=64 * 1024,
            export_definition=ExportDefinition(http=[
                HTTPConfig(identifier="to-cloud", uri="hedgerow://cloud", batch_size=200),
            ]),
        ))
    except InvalidRequestException:
        pass  # there since the last run
    run = "%d-%d" % (os.getpid(), time.time_ns())
    with open(os.environ["OUT"], "a") as out:
        for i in range(200_000):
            payload = ("m-%s-%d" % (run, i)).encode()
            client.append_message("line-1", payload)
            out.write(payload.decode() + "\\n")  # only after the append returned
            out.flush()


threading.Thread(target=produce, daemon=True).start()


def handler(event, context):
    return None
"""


def returned(core: Path) -> list[str]:
    """What the function recorded, in its working directory (it may run as its own user)."""
    found = list(core.rglob("returned.txt"))
    if not found:
        return []
    return [line for line in found[0].read_text().splitlines() if line]


async def wait_lines(core_dir: Path, count: int, timeout: float = 120) -> None:
    async with asyncio.timeout(timeout):
        while len(returned(core_dir)) < count:
            await asyncio.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_kill_9_of_the_core_while_a_function_appends_loses_no_returned_append(
    tmp_path: Path, test_pki: Any
) -> None:
    core_dir = tmp_path / "core"
    async with FakeCloud(tmp_path / "cloud", test_pki.root) as cloud:
        config = cloud.provision(
            tmp_path / "core",
            free_port(),
            f"[spool]\nfsync = 'normal'\n[streams]\nenabled = true\nport = {free_port()}\n",
        )
        log = tmp_path / "core.stderr"
        code = zipped({"producer.py": FUNCTION})
        entry = function_entry(
            "producer", code, handler="producer.handler", runtime="greengrass-v1", pinned=True,
            timeout_s=60.0, environment={"OUT": "returned.txt"},
        )  # fmt: skip
        proc = await start_core(config, log)
        try:
            subs = (("function:producer", "streams/pi-1/#", "cloud"),)  # the cloud's ACL
            await cloud.deploy(
                document("d-1", functions=(entry,), subscriptions=subs), artifacts=(code,)
            )
            await cloud.wait_for(
                lambda: any(s["status"] == "Success" for s in cloud.statuses()), 30
            )
            await cloud.stop_mqtt()  # the cloud goes away: the exports pile up on the core
            await wait_lines(core_dir, 3000)
            proc.kill()  # SIGKILL while the function appends
            await proc.wait()
            killed_at = len(returned(core_dir))

            proc = await start_core(config, log)  # the function starts again from disk
            await wait_lines(core_dir, killed_at + 1000)
            await cloud.start_mqtt()
            wanted = set(returned(core_dir))

            def received() -> set[str]:
                return {p.payload.decode() for p in cloud.telemetry("streams/pi-1/line-1")}

            await cloud.wait_for(lambda: wanted <= received(), 120)
            assert not wanted - received()
        finally:
            await stop_core(proc)
