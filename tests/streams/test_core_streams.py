"""The stream manager inside a real core: a V1 function written only against the PyPI
``greengrasssdk`` (deployed through a signed deployment, run by the real function runtime)
creates a stream with a cloud export and appends to it; every message reaches the cloud
through the core's spool, and the heartbeat shows the stream's progress."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hedgerow.core.config import load_config
from hedgerow.core.daemon import CoreDaemon
from hedgerow.core.status import heartbeat

from ..conftest import free_port
from ..core.fakecloud import FakeCloud
from ..core.helpers import document, function_entry
from ..core.test_functions_real import zipped

COUNT = 20_000


def producer_code(count: int, producers: int = 1) -> str:
    """A V1 function that creates ``line-1`` (exported to the cloud) at import and appends
    ``count`` messages to it from ``producers`` threads, each with its own SDK client
    (the SDK's calls are synchronous: one request in flight per client). Producer ``p``'s
    ``i``-th message is ``p<p>-m<i>`` (six digits), so each producer's order can be checked."""
    return f"""
import threading
from greengrasssdk.stream_manager import (
    ExportDefinition, HTTPConfig, MessageStreamDefinition, StrategyOnFull, StreamManagerClient,
)


def produce(p, n):
    client = StreamManagerClient()
    for i in range(n):
        client.append_message("line-1", b"p%d-m%06d" % (p, i))
    client.close()


def start():
    client = StreamManagerClient()
    client.create_message_stream(MessageStreamDefinition(
        name="line-1",
        strategy_on_full=StrategyOnFull.RejectNewData,
        export_definition=ExportDefinition(http=[
            HTTPConfig(identifier="to-cloud", uri="hedgerow://cloud", batch_size=500),
        ]),
    ))
    client.close()
    for p in range({producers}):
        threading.Thread(target=produce, args=(p, {count // producers}), daemon=True).start()


threading.Thread(target=start, daemon=True).start()


def handler(event, context):
    return None
"""


def assert_each_producer_in_order(received: list[bytes], count: int, producers: int) -> None:
    """Every message ``producer_code(count, producers)`` appends arrived, each producer's in
    the order it appended them (a message sent twice after a reconnect counts where it was
    first seen)."""
    first_seen = list(dict.fromkeys(received))
    assert len(first_seen) == count
    for p in range(producers):
        mine = [m for m in first_seen if m.startswith(b"p%d-" % p)]
        assert mine == [b"p%d-m%06d" % (p, i) for i in range(count // producers)]


#: appending threads in the function, each with its own SDK client: the SDK's calls are
#: synchronous (a round trip per message), so several keep the core's stream server busy
PRODUCERS = 4
FUNCTION = producer_code(COUNT, PRODUCERS)


@pytest.mark.timeout(300)
async def test_a_v1_function_streams_to_the_cloud_through_a_real_core(
    tmp_path: Path, test_pki: Any
) -> None:
    async with FakeCloud(tmp_path / "cloud", test_pki.root) as cloud:
        streams_port = free_port()
        config = load_config(
            cloud.provision(
                tmp_path / "core",
                free_port(),
                f"[spool]\nfsync = 'normal'\n[streams]\nenabled = true\nport = {streams_port}\n",
            )
        )
        code = zipped({"producer.py": FUNCTION})
        entry = function_entry(
            "producer", code, handler="producer.handler", runtime="greengrass-v1", pinned=True,
            timeout_s=60.0,
        )  # fmt: skip
        async with CoreDaemon(config) as core:
            assert core.streams is not None and core.streams.port == streams_port
            subs = (("function:producer", "streams/pi-1/#", "cloud"),)  # the cloud's ACL
            await cloud.deploy(
                document("d-1", functions=(entry,), subscriptions=subs), artifacts=(code,)
            )
            await cloud.wait_for(
                lambda: any(s["status"] in ("Success", "Failure", "RolledBack")
                            for s in cloud.statuses()), 30)  # fmt: skip
            assert cloud.statuses()[-1]["status"] == "Success", cloud.statuses()
            await cloud.wait_for(lambda: len(cloud.telemetry("streams/pi-1/line-1")) >= COUNT, 240)
            received = [p.payload for p in cloud.telemetry("streams/pi-1/line-1")]
            assert len(received) == COUNT  # once each: nothing was sent twice
            assert_each_producer_in_order(received, COUNT, PRODUCERS)
            progress = core.snapshot().streams["line-1"]
            assert progress["newest"] == COUNT - 1 and progress["backlog"] == 0
            beat = json.loads(heartbeat(core.snapshot()))
            assert beat["streams"] == {"line-1": {"newest": COUNT - 1, "backlog": 0}}
        # the stream and its export progress are on the core's disk
        assert (tmp_path / "core" / "streams" / b"line-1".hex() / "exports.json").exists()
