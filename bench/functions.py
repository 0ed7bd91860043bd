"""Function runtime benchmark: invocations per second, the latency of the function hop,
memory per function process.

    .venv/bin/python bench/functions.py [--events 50000] [--latency 2000]

Figures (one run on this machine; the lead collects them in bench/RESULTS.md):
- events/s through a pinned and an on-demand trivial function (``deliver``: asynchronous,
  pipelined), and RequestResponse invocations/s with 256 in flight;
- the added latency of one hop core -> worker -> core (``invoke`` one at a time), p50/p99;
- resident memory (VmRSS) of one idle worker process, native and Greengrass V1;
- ``greengrasssdk`` ``iot-data`` publishes per second from one V1 function (HTTP IPC).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from hedgerow.functions import FunctionHost, FunctionSpec
from hedgerow.functions.pool import PoolSettings

TRIVIAL = "import os\n\ndef handler(event, context):\n    return None\n\ndef pid(event, context):\n    return os.getpid()\n"
V1_TRIVIAL = """
import os
import time
import greengrasssdk

client = greengrasssdk.client("iot-data")

def function_handler(event, context):
    if event and event.get("publish"):
        start = time.perf_counter()
        for n in range(event["publish"]):
            client.publish(topic="bench/v1", payload=b'{"n": 1}')
        return event["publish"] / (time.perf_counter() - start)
    return os.getpid()
"""


async def _noop_publish(function: str, topic: str, payload: bytes) -> None:
    return None


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _events_per_second(host: FunctionHost, name: str, count: int) -> float:
    payload = json.dumps({"temperature": 21.5, "humidity": 40.1}).encode()
    before = host.counters()[name]["succeeded"]
    start = time.perf_counter()
    sent = 0
    while sent < count:
        # offer in bursts no larger than the queue holds, as a router would under load
        burst = min(500, count - sent)
        for _ in range(burst):
            await host.deliver(name, "sensors/bench", payload, "thing:bench")
        sent += burst
        while (
            host.counters()[name]["succeeded"] + host.counters()[name]["dropped"] - before
            < sent - 400
        ):
            await asyncio.sleep(0)
    while host.counters()[name]["succeeded"] - before + host.counters()[name]["dropped"] < count:
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - start
    return count / elapsed


async def _invokes_per_second(
    host: FunctionHost, name: str, count: int, in_flight: int = 256
) -> float:
    payload = b'{"n": 1}'
    start = time.perf_counter()
    done = 0
    while done < count:
        batch = min(in_flight, count - done)
        await asyncio.gather(*(host.invoke(name, payload) for _ in range(batch)))
        done += batch
    return count / (time.perf_counter() - start)


async def _latency_ms(host: FunctionHost, name: str, count: int) -> tuple[float, float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await host.invoke(name, b"{}")
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


async def main(events: int, latency_count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        code = root / "trivial"
        code.mkdir()
        (code / "trivial.py").write_text(TRIVIAL)
        v1code = root / "v1trivial"
        v1code.mkdir()
        (v1code / "v1trivial.py").write_text(V1_TRIVIAL)
        specs = [
            FunctionSpec(name="pinned", handler="trivial.handler", pinned=True),
            FunctionSpec(name="ondemand", handler="trivial.handler", max_concurrency=2),
            FunctionSpec(name="pid", handler="trivial.pid", pinned=True),
            FunctionSpec(
                name="v1",
                handler="v1trivial.function_handler",
                pinned=True,
                runtime="greengrass-v1",
                timeout_s=120,
            ),
        ]
        artifacts = {"pinned": code, "ondemand": code, "pid": code, "v1": v1code}
        settings = PoolSettings(queue_limit=2000)
        async with FunctionHost(root / "work", publish=_noop_publish, settings=settings) as host:
            await host.apply(specs, artifacts)
            await _events_per_second(host, "pinned", 2000)  # warm-up
            pinned = await _events_per_second(host, "pinned", events)
            ondemand = await _events_per_second(host, "ondemand", events)
            invoke_pinned = await _invokes_per_second(host, "pinned", events // 2)
            invoke_ondemand = await _invokes_per_second(host, "ondemand", events // 2)
            p50, p99 = await _latency_ms(host, "pinned", latency_count)
            native_pid = int(await host.invoke("pid", b"{}"))
            v1_pid = int(await host.invoke("v1", b"{}"))
            v1_publish_rate = float(await host.invoke("v1", b'{"publish": 3000}', timeout=120))
            dropped = {name: c["dropped"] for name, c in host.counters().items()}
            print(f"events/s, pinned trivial (deliver):          {pinned:>10,.0f}")
            print(f"events/s, on-demand trivial (2 workers):     {ondemand:>10,.0f}")
            print(f"invocations/s, pinned (RequestResponse):     {invoke_pinned:>10,.0f}")
            print(f"invocations/s, on-demand (RequestResponse):  {invoke_ondemand:>10,.0f}")
            print(f"function hop latency p50 / p99 (ms):         {p50:.3f} / {p99:.3f}")
            print(
                f"RSS per worker, native / greengrass-v1 (MB): {_rss_kb(native_pid) / 1024:.1f} / {_rss_kb(v1_pid) / 1024:.1f}"
            )
            print(f"greengrasssdk iot-data publish/s (V1 HTTP IPC): {v1_publish_rate:>7,.0f}")
            print(f"dropped (queue overflow): {dropped}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--latency", type=int, default=2_000)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.latency))
