"""200 things power-cycled at once: the core restarts under them and they all come back.

One ``hedgerow thing simulate --count 200`` process (the full device SDK per thing: cached
connection info, mutual TLS, capped exponential backoff with full jitter) is connected to
the core. The core is killed with SIGKILL (or stopped with SIGTERM) and started again from its data directory; the
test measures how long until the core counts all 200 devices connected again and bounds it,
and checks that no reading was lost: each thing publishes a numbered QoS 1 stream routed to
the cloud, kept in its offline queue until the core acknowledged it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.e2e.harness import running_system, wait_until

pytestmark = pytest.mark.slow

COUNT = 200
#: the SDK's first retry ceilings are 1, 2, 4, 8 s (full jitter), capped here at 8 s: after a
#: few seconds of core downtime the last thing must be back within a couple of cycles
RECONNECT_BOUND = 45.0
MESSAGES = 20  # per thing, one a second


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_two_hundred_things_reconnect_after_the_core_restarts(tmp_path: Path, how: str) -> None:
    names = [f"sim-{i}" for i in range(1, COUNT + 1)]
    with running_system(tmp_path) as system:
        started = time.monotonic()
        system.create_things(names)
        system.routes([(f"thing:{name}", "sensors/#", "cloud") for name in names])
        system.deploy()
        print(f"{COUNT} things created and deployed in {time.monotonic() - started:.1f} s")

        sim = system.start(
            "simulate",
            [
                sys.executable, "-m", "hedgerow", "thing", "simulate", "-e",
                f"127.0.0.1:{system.device_port}", "-r", str(system.certs / "root-ca.pem"),
                "--certs", str(system.certs), "--prefix", "sim", "--count", str(COUNT),
                "--messages", str(MESSAGES), "--interval", "1", "--qos", "1",
                "--backoff-cap", "8", "--state-dir", str(tmp_path / "sim-state"),
            ],
        )  # fmt: skip
        wait_until(
            lambda: system.devices_connected() == COUNT,
            timeout=90,
            interval=0.5,
            what=f"{COUNT} devices connected to the core",
        )

        core = system.procs["core"]
        core.kill9() if how == "SIGKILL" else core.stop()
        down_at = time.monotonic()
        system.start_core(first=False)
        up_after = time.monotonic() - down_at
        counts: list[tuple[float, int]] = []

        def all_back() -> bool:
            n = system.devices_connected()
            counts.append((time.monotonic() - down_at, n))
            return n == COUNT

        wait_until(all_back, timeout=RECONNECT_BOUND + 30, interval=0.5, what="all devices back")
        back_after = time.monotonic() - down_at
        print(
            f"core listening again {up_after:.1f} s after {how}; all {COUNT} things back after "
            f"{back_after:.1f} s; progress: "
            + ", ".join(f"{t:.0f}s:{n}" for t, n in counts[:: max(1, len(counts) // 12)])
        )
        assert back_after <= RECONNECT_BOUND, f"all {COUNT} back only after {back_after:.1f} s"
        first_seen = next((t for t, n in counts if n > 0), 0.0)
        print(f"first device back after {first_seen:.1f} s")

        # every thing delivers its whole stream, and the cloud has all of it
        sim.popen.wait(timeout=90)
        report = sim.output()
        assert sim.popen.returncode == 0, report
        total = COUNT * MESSAGES
        assert f"things: {COUNT}  connected: {COUNT}" in report, report
        assert f"published: {total}  delivered: {total}  queued: 0  dropped: 0" in report, report

        def complete() -> bool:
            seen: dict[str, set[int]] = {name: set() for name in names}
            for reading in system.payloads("sensors/#"):
                seen[reading["thing"]].add(reading["sequence"])
            return all(s == set(range(MESSAGES)) for s in seen.values())

        wait_until(complete, timeout=60, interval=1, what="every reading of every thing stored")
