"""The README's tutorial, in its written order, with real processes on loopback.

cloud init → serve → group create → core create → core run → core check → thing create →
thing run (the thing connects *before* any deployment: group membership reaches the core
as revocations do) → function create → subscription add × 2 → deploy --wait → tail.
Then the way out: a thing taken out of the group is cut off at once, and is told why — an
MQTT 5 client by CONNACK 0x87 with a reason string, ``hedgerow thing run`` (MQTT 3.1.1,
which cannot be told) by the likely cause and the command that fixes it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import EXAMPLES, GROUP, Proc, System, hedgerow, v5_connack, wait_until

pytestmark = pytest.mark.slow

MACHINE_ONLY = {"cgroup v2"} if not Path("/sys/fs/cgroup/cgroup.controllers").exists() else set()


def thing_run(system: System, name: str) -> Proc:
    return system.start(
        f"thing-{name}",
        hedgerow(
            "thing", "run", *system.thing_args(name), "-id", name, "-t", f"sensors/{name}",
            "--sensor", "sim", "--interval", "0.2", "--state-dir", str(system.root / name),
            "--backoff-base", "0.2", "--backoff-cap", "1",
        ),
    )  # fmt: skip


def test_the_readme_tutorial_in_its_written_order(tmp_path: Path) -> None:
    system = System(tmp_path)
    try:
        # 1. the cloud
        system.start_cloud()
        # 2. a group and its core; the core runs and checks out
        system.create_group_and_core()
        system.start_core()
        check = system.run("core", "check", "--data-dir", str(tmp_path / "core"), check=False)
        warned = [
            line for line in check.stdout.splitlines()
            if line.startswith(("warn", "fail")) and not any(m in line for m in MACHINE_ONLY)
        ]  # fmt: skip
        assert check.returncode == 0 and warned == [], check.stdout
        # 3. the sensor as a thing: it connects with no deployment yet
        system.create_thing("bme680-1")
        thing = thing_run(system, "bme680-1")
        wait_until(
            lambda: "connected to the core at" in thing.output(),
            timeout=60,
            what="the new thing connected before any deployment",
        )
        assert system.api(f"/api/v1/groups/{GROUP}/deployments")["items"] == []
        # nothing reaches the cloud yet: no subscription routes it
        assert system.messages("sensors/#") == []
        # 4. the calculation, defined in the cloud and deployed to the edge
        system.function(
            "temp-correct", EXAMPLES / "temp_correct", "temp_correct.handler",
            "--pinned", "--env", "FACTOR=5",
        )  # fmt: skip
        system.route("thing:bme680-1", "sensors/#", "function:temp-correct")
        system.route("function:temp-correct", "corrected/#", "cloud")
        deployed = system.deploy()
        assert "Success" in deployed.stdout + deployed.stderr
        tail = system.cloud("tail", "corrected/#", "--count", "2", "--json", timeout=60)
        readings = [json.loads(line) for line in tail.stdout.splitlines()]
        assert len(readings) == 2
        for message in readings:
            reading = json.loads(message["payload"])
            assert reading["thing"] == "bme680-1" and "raw_temperature" in reading
        # stored readings: the reading's own time beside the ingest time, and paging
        shown = system.cloud("messages", "corrected/#", "--limit", "2")
        assert shown.stdout.count(" read ") == 2 and "older ones: --after" in shown.stderr
        first = system.cloud("messages", "--filter", "corrected/#", "--after", "0", "--limit", "1")
        assert first.stdout.count("corrected/bme680-1") == 1 and "--after" in first.stderr
        everything = system.cloud("messages", "corrected/#", "--all", "--json")
        stored = json.loads(everything.stdout)
        assert len(stored) >= 2 and [m["id"] for m in stored] == sorted(m["id"] for m in stored)
        # human output by default, JSON on request
        status = system.cloud("status")
        assert not status.stdout.lstrip().startswith("{")
        assert json.loads(system.cloud("status", "--json").stdout)
    except BaseException:
        print(system.logs())
        raise
    finally:
        system.close()


def test_a_thing_taken_out_of_the_group_is_cut_off_and_told_why(system: System) -> None:
    system.create_thing("bme680-2")
    thing = thing_run(system, "bme680-2")
    wait_until(lambda: system.devices_connected() == 1, timeout=60, what="the thing connected")
    system.cloud("thing", "detach", "--group", GROUP, "bme680-2")
    wait_until(lambda: system.devices_connected() == 0, timeout=30, what="the thing cut off")
    # hedgerow thing run (MQTT 3.1.1) prints the likely cause and the fix
    wait_until(
        lambda: "the core refused thing 'bme680-2'" in thing.output(),
        timeout=30,
        what="thing run to explain the refusal",
    )
    out = thing.output()
    assert f"hedgerow cloud thing attach --group {GROUP} bme680-2" in out
    # an MQTT 5 client is told by the core itself
    code, reason = v5_connack(system, "bme680-2")
    assert code == 0x87
    assert "not a device of group 'factory-1'" in reason and "thing attach" in reason
    admission = (system.root / "core" / "logs" / "admission.log").read_text()
    assert "reason=not-in-group" in admission
    # and back in: the core learns it without a deployment (a thing run that meanwhile
    # re-discovered and was told it is in no group has given up: run it again)
    system.cloud("thing", "attach", "--group", GROUP, "bme680-2")
    thing.stop()
    thing_run(system, "bme680-2")
    wait_until(lambda: system.devices_connected() == 1, timeout=60, what="the thing back")
    assert system.api(f"/api/v1/groups/{GROUP}/deployments")["items"] == []


def test_pointing_e_at_the_api_port_says_so(system: System) -> None:
    system.create_thing("bme680-3")
    args = system.thing_args("bme680-3")
    args[1] = f"127.0.0.1:{system.api_port}"
    done = subprocess.run(
        hedgerow("thing", "run", *args, "-id", "bme680-3", "--give-up", "20",
                 "--state-dir", str(system.root / "s3")),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "does not speak TLS" in done.stderr and "device port" in done.stderr
    assert not done.stderr.rstrip().endswith("retrying")
