"""A thing's certificate is revoked while it publishes: the core drops it within seconds.

Two things publish through the core to the cloud. ``hedgerow cloud thing revoke`` reaches
the core without a deployment: the revoked thing is disconnected and refused from then on
(also after a core restart), while the other thing's readings keep arriving.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.e2e.harness import System, running_system, wait_until

pytestmark = pytest.mark.slow

GOOD, BAD = "good-1", "bad-1"
REVOCATION_BOUND = 15.0


def count(system: System, thing: str) -> int:
    return len(system.messages(f"sensors/{thing}"))


def test_a_revoked_thing_is_dropped_and_stays_out(tmp_path: Path) -> None:
    with running_system(tmp_path) as system:
        for name in (GOOD, BAD):
            system.create_thing(name)
            system.route(f"thing:{name}", "sensors/#", "cloud")
        system.deploy()
        for name in (GOOD, BAD):
            system.start(
                name,
                [
                    sys.executable, "-m", "hedgerow", "thing", "run", *system.thing_args(name),
                    "-id", name, "--sensor", "sim", "--interval", "0.2", "--quiet",
                    "--backoff-cap", "2", "--state-dir", str(tmp_path / f"state-{name}"),
                ],
            )  # fmt: skip
        wait_until(
            lambda: count(system, GOOD) >= 3 and count(system, BAD) >= 3,
            timeout=60,
            what="readings from both things",
        )
        assert system.devices_connected() == 2

        revoked_at = time.monotonic()
        system.cloud("thing", "revoke", BAD)
        wait_until(
            lambda: system.devices_connected() == 1,
            timeout=REVOCATION_BOUND,
            what="the core to drop the revoked thing",
        )
        dropped_after = time.monotonic() - revoked_at
        print(f"revoked thing dropped by the core {dropped_after:.1f} s after 'thing revoke'")

        # the good thing goes on; the revoked one (still retrying) gets nothing through
        bad_total = count(system, BAD)
        good_now = count(system, GOOD)
        wait_until(lambda: count(system, GOOD) >= good_now + 10, timeout=30, what="good readings")
        assert count(system, BAD) == bad_total

        # the revocation survives a core restart (no cloud needed for it)
        system.procs["core"].kill9()
        system.start_core(first=False)
        good_now = count(system, GOOD)
        wait_until(lambda: count(system, GOOD) >= good_now + 10, timeout=45, what="good readings")
        assert count(system, BAD) == bad_total
        assert system.devices_connected() == 1
