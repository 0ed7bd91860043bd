"""Benchmark shadow sync latency with real processes: a device, its core, the cloud.

    .venv/bin/python bench/shadow_sync.py            # 40 updates each way
    .venv/bin/python bench/shadow_sync.py --quick    # 10 each way

Runs `hedgerow cloud serve` and `hedgerow core run` (the e2e harness: free loopback ports,
the group syncing the thing `lamp`) and a paho-mqtt device speaking the AWS shadow protocol
to the core over mutual TLS. Measures, one update at a time:

1. device → cloud: the device publishes `update` (reported) on the core; until the
   cloud's API shows it (polled every 10 ms, so figures include up to ~10 ms of polling);
2. cloud → device: `PATCH /api/v1/things/lamp/shadow` (desired); until the device gets
   the `update/delta` from its core (the API call's own time included).

Prints p50 / p95 / max in milliseconds, the machine and its load average. The target the
issue sets: a normal sync both ways within 2 s when connected.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import ShadowDevice  # noqa: E402
from tests.e2e.harness import core_endpoint, running_system  # noqa: E402

THING = "lamp"
POLL_S = 0.01
LIMIT_S = 10.0


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"p50 {statistics.median(ms):7.1f}  p95 {p95:7.1f}  max {ms[-1]:7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 updates each way")
    parser.add_argument("--count", type=int, default=40, help="updates each way")
    args = parser.parse_args()
    count = 10 if args.quick else args.count
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, load average at start {load}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-shadow-") as tmp:
        root = Path(tmp)
        with running_system(root, "--sync-shadows", THING) as system:
            system.create_thing(THING)
            system.deploy()
            host, port, ca = core_endpoint(system, THING, root)
            certs = system.certs
            device = ShadowDevice(
                THING, certs / f"{THING}.cert.pem", certs / f"{THING}.key", host, port, ca
            )
            device.start()
            api = httpx.Client(
                base_url=f"http://127.0.0.1:{system.api_port}",
                headers={"authorization": f"Bearer {system.token}"},
                timeout=10,
            )
            up: list[float] = []
            down: list[float] = []
            try:
                for n in range(count):
                    started = time.monotonic()
                    device.request("update", {"state": {"reported": {"n": n}}})
                    while (
                        api.get(f"/api/v1/things/{THING}/shadow")
                        .json()["state"]["reported"]
                        .get("n")
                        != n
                    ):
                        if time.monotonic() - started > LIMIT_S:
                            raise SystemExit(f"update {n} did not reach the cloud in {LIMIT_S} s")
                        time.sleep(POLL_S)
                    up.append(time.monotonic() - started)
                for n in range(count):
                    started = time.monotonic()
                    patched = api.patch(
                        f"/api/v1/things/{THING}/shadow", json={"state": {"desired": {"m": n}}}
                    )
                    patched.raise_for_status()
                    device.delta(LIMIT_S, {"m": n})
                    down.append(time.monotonic() - started)
            finally:
                api.close()
                device.stop()
    print(f"\nshadow sync, {count} updates each way, one at a time (ms)")
    print(f"  device → cloud   {percentiles(up)}")
    print(f"  cloud → device   {percentiles(down)}")
    worst = max(up + down)
    print(
        f"target: within 2 s both ways — {'met' if worst < 2.0 else 'MISSED'} (worst {worst:.2f} s)"
    )
    print(f"load average at end {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
