"""Shadow sync between a device's core and the cloud, with real processes.

A paho-mqtt device speaks the AWS shadow protocol to its core (``$aws/things/lamp/shadow/...``,
mutual TLS with the group CA from discovery); the group syncs ``lamp`` with the cloud.
Connected, a change on either side reaches the other within 2 s. Then the cloud goes away
and the device changes its shadow through the core (reported and desired); the core stops,
the cloud returns and an operator changes desired there; the core returns: both copies
converge by the version rules (reported: the device's; desired: the cloud's, the device's
offline desired change being a conflict).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ShadowDevice
from tests.e2e.harness import System, core_endpoint, running_system, wait_until

pytestmark = pytest.mark.slow

THING = "lamp"
#: a normal sync, either way, while connected
SYNC_S = 2.0


@contextmanager
def device(system: System, tmp_path: Path) -> Iterator[ShadowDevice]:
    host, port, ca = core_endpoint(system, THING, tmp_path)
    certs = system.certs
    d = ShadowDevice(THING, certs / f"{THING}.cert.pem", certs / f"{THING}.key", host, port, ca)
    d.start()
    try:
        yield d
    finally:
        d.stop()


def cloud_shadow(system: System) -> dict[str, Any]:
    shadow: dict[str, Any] = system.api(f"/api/v1/things/{THING}/shadow")
    return shadow


def test_shadow_syncs_both_ways_and_converges_after_an_outage(tmp_path: Path) -> None:
    with running_system(tmp_path, "--sync-shadows", THING) as system:
        system.create_thing(THING)
        system.deploy()
        with device(system, tmp_path) as lamp:
            # connected: device → cloud within 2 s
            started = time.monotonic()
            lamp.request("update", {"state": {"reported": {"led": "off", "temp": 20}}})
            wait_until(
                lambda: cloud_shadow(system)["state"]["reported"] == {"led": "off", "temp": 20},
                timeout=SYNC_S,
                what="the device's reported state in the cloud",
                interval=0.05,
            )
            up_s = time.monotonic() - started
            # connected: cloud (the CLI) → device within 2 s, as a delta
            started = time.monotonic()
            system.cloud("shadow", "update", THING, "--desired", '{"led": "on"}')
            lamp.delta(SYNC_S + 2.0, {"led": "on"})  # the CLI process itself takes ~1 s
            down_s = time.monotonic() - started
            version_before = cloud_shadow(system)["version"]

            # the cloud goes away; the device changes its shadow through the core
            system.stop_cloud(kill=True)
            lamp.request("update", {"state": {"reported": {"led": "on", "temp": 30}}})
            lamp.request("update", {"state": {"desired": {"led": "red"}}})
            # the core stops too; the cloud returns and an operator changes desired there
            system.procs["core"].stop()
            system.start_cloud()
            shown = system.cloud("shadow", "get", THING, "--json")
            assert json.loads(shown.stdout)["state"]["reported"] == {"led": "off", "temp": 20}
            system.cloud("shadow", "update", THING, "--desired", '{"led": "green"}')
            # the core returns: both copies converge
            system.start_core(first=False)
            assert lamp.connected.wait(30), "the device did not reconnect to the core"
            local = wait_until(
                lambda: (
                    (g := lamp.request("get", {}))["state"].get("desired") == {"led": "green"} and g
                ),
                timeout=30,
                what="the cloud's desired on the core",
                interval=0.2,
            )
            assert local["state"]["reported"] == {"led": "on", "temp": 30}
            assert local["state"]["delta"] == {"led": "green"}

        converged = wait_until(
            lambda: (
                (s := cloud_shadow(system))["state"]["reported"] == {"led": "on", "temp": 30} and s
            ),
            timeout=30,
            what="the device's offline reported state in the cloud",
        )
        assert converged["state"]["desired"] == {"led": "green"}  # the cloud's desired won
        assert converged["state"]["delta"] == {"led": "green"}
        # cloud: +1 for the operator's desired, +1 for the device's reported (its desired,
        # made without seeing the operator's, was refused)
        assert converged["version"] == version_before + 2, converged
        conflicts = 'hedgerow_core_events_total{event="shadow_sync_conflicts"}'
        wait_until(
            lambda: system.metrics().get(conflicts) == 1,
            timeout=10,
            what="the core to count the refused offline desired change",
        )
        assert "cloud.shadow.conflict core=pi-1 thing=lamp" in system.procs["cloud"].output()
        human = system.cloud("shadow", "get", THING).stdout
        assert "synced by pi-1" in human and '"green"' in human
        print(f"shadow sync: device → cloud {up_s:.2f} s, cloud → device {down_s:.2f} s")
        assert up_s < SYNC_S
