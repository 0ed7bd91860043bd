"""The seed's scenario with real processes: cloud, core, a thing, a function deployed from the cloud.

Also the V1 promise: the seed's own AWSIoTPythonSDK script, unchanged but for endpoint and
certificate paths, discovers a Hedgerow core through the Hedgerow cloud and publishes through it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import CORE, EXAMPLES, REPO, System, wait_until

pytestmark = pytest.mark.slow


def test_temperature_is_corrected_at_the_edge_and_reaches_the_cloud(system: System) -> None:
    system.create_thing("bme680-1")
    system.function(
        "temp-correct",
        EXAMPLES / "temp_correct",
        "temp_correct.handler",
        "--pinned",
        "--env",
        "FACTOR=4",
    )
    system.route("thing:bme680-1", "sensors/#", "function:temp-correct")
    system.route("function:temp-correct", "corrected/#", "cloud")
    result = system.deploy()
    assert "Success" in result.stdout + result.stderr

    system.start(
        "thing",
        [
            sys.executable,
            "-m",
            "hedgerow",
            "thing",
            "run",
            *system.thing_args("bme680-1"),
            "-id",
            "bme680-1",
            "-t",
            "sensors/bme680-1",
            "--sensor",
            "sim",
            "--interval",
            "0.2",
            "--state-dir",
            str(system.root / "state"),
        ],
    )
    corrected = wait_until(
        lambda: (
            system.payloads("corrected/#")[:3] if len(system.payloads("corrected/#")) >= 3 else None
        ),
        timeout=60,
        what="three corrected readings in the cloud",
    )
    for reading in corrected:
        raw, cpu = reading["raw_temperature"], reading["cpu_temperature"]
        assert reading["temperature"] == pytest.approx(raw - (cpu - raw) / 4, abs=1e-3)
        assert reading["thing"] == "bme680-1"
        assert cpu > raw  # the simulated CPU is hotter than the sensor reads
    # Least privilege: raw readings were not routed to the cloud, so none arrived there.
    assert system.messages("sensors/#") == []
    stored = system.messages("corrected/#")
    assert {m["core"] for m in stored} == {CORE}
    # the deployment was verified and the server key made by the short-lived keytool: the
    # long-running daemon never loaded cryptography's native library
    assert not system.core_maps("cryptography/hazmat/bindings")
    assert system.core_maps("_ssl")  # the check can see what is loaded


def test_the_seeds_v1_sdk_script_works_unchanged(system: System, tmp_path: Path) -> None:
    system.create_thing("bme680-2")
    system.route("thing:bme680-2", "sensors/#", "cloud")
    system.deploy()
    script = REPO / "examples" / "greengrass_thing.py"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "-e",
            "127.0.0.1",
            "-p",
            str(system.device_port),
            "-r",
            str(system.certs / "root-ca.pem"),
            "-c",
            str(system.certs / "bme680-2.cert.pem"),
            "-k",
            str(system.certs / "bme680-2.key"),
            "-id",
            "bme680-2",
            "-t",
            "sensors/bme680-2",
            "-n",
            "5",
            "--interval",
            "0.1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "connected to core 127.0.0.1" in done.stdout
    readings = wait_until(
        lambda: (p := system.payloads("sensors/bme680-2")) and len(p) >= 5 and p,
        timeout=30,
        what="the V1 script's five readings in the cloud",
    )
    assert sorted(r["seq"] for r in readings) == [0, 1, 2, 3, 4]
