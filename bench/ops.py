"""Benchmark fleet operations on a real cloud and core (``hedgerow cloud serve`` and
``hedgerow core run`` as processes, through the tests' whole-system harness).

    .venv/bin/python bench/ops.py            # about 3 minutes
    .venv/bin/python bench/ops.py --quick    # smaller counts, shorter idle window

Measures:

1. log throughput to the cloud: a function prints N lines as fast as it can; lines/s from
   the trigger until the last line is stored in the cloud's database (the rate cap raised
   out of the way: this is the pipeline's capacity, not the cap);
2. telemetry throughput (a function publishes M messages routed to the cloud; msg/s until
   the last is stored) alone, and again while another function floods the logs: with the
   default cap (200 lines/s) and with the cap raised (the flood shipped in full); the flood
   is 5000 lines/s (``FLOOD_RATE``);
3. idle bytes per day with logs, heartbeat and alerts on: a byte-counting TCP proxy sits
   between the core and the cloud's MQTT endpoint (TLS included, TCP/IP headers not);
   over a window with short intervals it sorts what the core sends into keepalive pings
   (small records) and heartbeats/log batches (the rest), and scales each to a day at the
   defaults (keepalive 300 s, heartbeat 600 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port  # noqa: E402
from tests.e2e.harness import CORE, GROUP, System, running_system, wait_until  # noqa: E402

LOGGER = """
def handler(event, context):
    for i in range(int(event)):
        print(f"line {i}")
    print("", end="", flush=True)
"""
PUBLISHER = """
import json


def handler(event, context):
    for i in range(int(event)):
        context.publish("bench/out", json.dumps({"i": i}))
"""
FLOODER = """
import time


def handler(event, context):
    seconds, rate = event  # [seconds, lines a second]
    end = time.monotonic() + seconds
    n = 0
    while (now := time.monotonic()) < end:
        for _ in range(int(rate / 100)):  # a burst every 10 ms
            print(f"flood {n}")
            n += 1
        time.sleep(max(0.0, 0.01 - (time.monotonic() - now)))
"""
#: Lines a second the flooding function writes: 25 times the default cap, a chatty
#: function gone wrong (not a busy loop: that would measure the CPU it burns itself).
FLOOD_RATE = 5000
#: A TLS record carrying only a PINGREQ or PINGRESP is well under this many bytes.
PING_RECORD_MAX = 64
DAY = 86400.0


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} vCPU {model}, Python {sys.version.split()[0]}"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---- a byte-counting TCP proxy (the core's link to the cloud MQTT endpoint) -------------------


class CountingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.up: list[tuple[float, int]] = []  # (time, bytes) core → cloud, per read
        self.down: list[tuple[float, int]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True, name="proxy")
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
            self._ready.set()
            async with server:
                await server.serve_forever()

        self._loop.run_until_complete(main())

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, log: list[tuple[float, int]]
        ) -> None:
            try:
                while data := await src.read(65536):
                    log.append((time.monotonic(), len(data)))
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, self.up), pipe(up_reader, writer, self.down))


# ---- helpers -----------------------------------------------------------------------------------


def code(root: Path, name: str, text: str) -> Path:
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(text)
    return directory


def newest_log_number(system: System, function: str, word: str) -> int:
    items = system.api("/api/v1/logs", group=GROUP, function=function, limit="1", order="desc")[
        "items"
    ]
    if not items:
        return -1
    match = re.fullmatch(rf"{word} (\d+)", items[0]["message"])
    return int(match[1]) if match else -1


def newest_telemetry(system: System) -> int:
    items = system.api("/api/v1/messages", filter="bench/out", limit="1", order="desc")["items"]
    return int(json.loads(items[0]["payload"])["i"]) if items else -1


def wait_for(predicate: Any, timeout: float) -> float:
    started = time.monotonic()
    wait_until(predicate, timeout=timeout, what="the benchmark's last record", interval=0.05)
    return time.monotonic() - started


def deploy_bench_functions(system: System, root: Path) -> None:
    system.function("logger", code(root, "logger", LOGGER), "logger.handler", "--timeout", "300")
    system.function(
        "publisher", code(root, "publisher", PUBLISHER), "publisher.handler", "--timeout", "300"
    )
    system.function(
        "flooder", code(root, "flooder", FLOODER), "flooder.handler", "--timeout", "300"
    )
    system.route("cloud", "bench/logs", "function:logger")
    system.route("cloud", "bench/telemetry", "function:publisher")
    system.route("cloud", "bench/flood", "function:flooder")
    system.route("function:publisher", "bench/out", "cloud")
    system.deploy()


def telemetry_rate(system: System, count: int, base: int) -> tuple[float, int]:
    """msg/s for ``count`` messages; ``base`` is the cloud's count of bench/out before."""
    started = time.monotonic()
    system.publish("bench/telemetry", str(count))
    wait_until(lambda: newest_telemetry(system) == count - 1 and
               len(system.messages("bench/out")) >= base + count,
               timeout=300, what="all telemetry", interval=0.1)  # fmt: skip
    return count / (time.monotonic() - started), len(system.messages("bench/out"))


# ---- the measurements -------------------------------------------------------------------------


def throughput(root: Path, lines: int, messages: int, flood_s: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    settings = "[cloud_logs]\nrate = 1000000.0\nburst = 1000000\nspool_bytes = 268435456\n"
    with running_system(root / "uncapped", core_settings=settings) as system:
        deploy_bench_functions(system, root / "code1")
        started = time.monotonic()
        system.publish("bench/logs", str(lines))
        wait_until(lambda: newest_log_number(system, "logger", "line") == lines - 1,
                   timeout=300, what="every log line", interval=0.1)  # fmt: skip
        results["log lines/s (uncapped)"] = lines / (time.monotonic() - started)
        rate, stored = telemetry_rate(system, messages, 0)
        results["telemetry msg/s, no flood"] = rate
        system.publish("bench/flood", f"[{flood_s + 30}, {FLOOD_RATE}]")
        wait_until(lambda: newest_log_number(system, "flooder", "flood") > 1000, timeout=60,
                   what="the flood under way")  # fmt: skip
        rate, stored = telemetry_rate(system, messages, stored)
        results["telemetry msg/s, uncapped flood"] = rate
    with running_system(root / "capped") as system:  # the default cap: 200 lines/s
        deploy_bench_functions(system, root / "code2")
        rate, stored = telemetry_rate(system, messages, 0)
        results["telemetry msg/s, no flood (default cap)"] = rate
        system.publish("bench/flood", f"[{flood_s + 30}, {FLOOD_RATE}]")
        wait_until(lambda: newest_log_number(system, "flooder", "flood") >= 0, timeout=60,
                   what="the flood under way")  # fmt: skip
        rate, stored = telemetry_rate(system, messages, stored)
        results["telemetry msg/s, flood at the default cap"] = rate
        beat = system.api(f"/api/v1/cores/{CORE}")["heartbeat"] or {}
        results["flood lines dropped by the cap (so far)"] = (beat.get("counters") or {}).get(
            "logs_dropped", 0
        )
    return results


def idle_bytes(root: Path, window: float) -> dict[str, Any]:
    """Short intervals over ``window`` seconds, each kind of traffic scaled to the defaults."""
    keepalive, heartbeat = 15, 30
    system = System(root / "idle")
    proxy = CountingProxy(system.mqtt_port)
    proxy.start()
    system.core_settings = (
        f'[cloud]\nmqtt = "mqtts://127.0.0.1:{proxy.port}"\n'
        f"[connector]\nkeepalive = {keepalive}\n[status]\nheartbeat_interval = {heartbeat}\n"
    )
    try:
        system.start_cloud()
        system.create_group_and_core()
        # the harness's test settings say heartbeat 5 s: ours win (merged last)
        system.start_core()
        system.cloud(
            "alert", "rule", "add", "offline", "--kind", "core-offline", "--threshold", "60"
        )
        wait_until(lambda: system.api(f"/api/v1/cores/{CORE}")["connected"], timeout=60,
                   what="the core connected")  # fmt: skip
        time.sleep(10)  # let the start settle (first heartbeat, certificate, log lines)
        start = time.monotonic()
        time.sleep(window)
        end = time.monotonic()
    finally:
        system.close()
    up = [(t, n) for t, n in proxy.up if start <= t < end]
    down = [(t, n) for t, n in proxy.down if start <= t < end]
    pings_up = [n for _, n in up if n <= PING_RECORD_MAX]
    other_up = [n for _, n in up if n > PING_RECORD_MAX]
    pings_down = [n for _, n in down if n <= PING_RECORD_MAX]
    other_down = sum(n for _, n in down if n > PING_RECORD_MAX)
    ping_pair = (statistics.mean(pings_up) if pings_up else 0) + (
        statistics.mean(pings_down) if pings_down else 0
    )
    # what is not a ping: heartbeats (every `heartbeat` s) and the idle core's own log batches
    beats = window / heartbeat
    per_beat = (sum(other_up) + other_down) / beats if beats else 0.0
    per_day_defaults = ping_pair * DAY / 300 + per_beat * DAY / 600
    return {
        "window (s)": window,
        "bytes in window (up/down)": f"{sum(n for _, n in up)}/{sum(n for _, n in down)}",
        "pings seen (up/down)": f"{len(pings_up)}/{len(pings_down)}",
        "bytes per keepalive exchange": round(ping_pair, 1),
        "bytes per heartbeat period (heartbeat + logs)": round(per_beat, 1),
        f"per day at keepalive {keepalive} s, heartbeat {heartbeat} s (MiB)": round(
            (sum(n for _, n in up) + sum(n for _, n in down)) * DAY / window / 2**20, 3
        ),
        "per day at the defaults, keepalive 300 s, heartbeat 600 s (MiB)": round(
            per_day_defaults / 2**20, 3
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    lines, messages, window = (5_000, 2_000, 60.0) if args.quick else (30_000, 10_000, 120.0)
    print(f"machine: {machine()}; load average at start: {load()}")
    with tempfile.TemporaryDirectory(prefix="hedgerow-bench-ops-") as tmp:
        root = Path(tmp)
        results = throughput(root, lines, messages, flood_s=30.0)
        print(f"load average after the throughput runs: {load()}")
        results.update(idle_bytes(root, window))
    print(f"load average at the end: {load()}")
    print(f"\n| measurement ({lines} log lines, {messages} telemetry messages) | value |")
    print("|---|---|")
    for key, value in results.items():
        shown = f"{value:,.0f}" if isinstance(value, float) and value > 100 else value
        print(f"| {key} | {shown} |")
    base = results["telemetry msg/s, no flood"]
    print(f"\nratio, telemetry with an uncapped flood / without: "
          f"{results['telemetry msg/s, uncapped flood'] / base:.2f}")  # fmt: skip
    base = results["telemetry msg/s, no flood (default cap)"]
    print(f"ratio, telemetry with a flood at the default cap / without: "
          f"{results['telemetry msg/s, flood at the default cap'] / base:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
