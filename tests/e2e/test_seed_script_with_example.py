"""The seed's own device script and the shipped ``temp_correct`` work together unchanged.

The seed's script (``examples/greengrass_thing.py``, AWSIoTPythonSDK) sends temperature,
humidity and pressure but no ``cpu_temperature``: in the seed, the Lambda on the Pi read
the CPU temperature itself. The shipped function does the same on the core (the thermal
zone, or the simulator's CPU on a machine without one) and says which it used.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import EXAMPLES, REPO, System, wait_until

pytestmark = pytest.mark.slow


def test_the_seeds_script_is_corrected_by_the_shipped_function(
    system: System, tmp_path: Path
) -> None:
    system.create_thing("bme680-1")
    system.function(
        "temp-correct", EXAMPLES / "temp_correct", "temp_correct.handler",
        "--pinned", "--env", "FACTOR=5",
    )  # fmt: skip
    system.route("thing:bme680-1", "sensors/#", "function:temp-correct")
    system.route("function:temp-correct", "corrected/#", "cloud")
    system.deploy()
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "greengrass_thing.py"),
         "-e", "127.0.0.1", "-p", str(system.device_port),
         "-r", str(system.certs / "root-ca.pem"),
         "-c", str(system.certs / "bme680-1.cert.pem"),
         "-k", str(system.certs / "bme680-1.key"),
         "-id", "bme680-1", "-t", "sensors/bme680-1", "-n", "4", "--interval", "0.1"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    corrected = wait_until(
        lambda: (p := system.payloads("corrected/#")) and len(p) >= 4 and p,
        timeout=60,
        what="the seed script's four readings corrected in the cloud",
    )
    expected_source = (
        "core" if Path("/sys/class/thermal/thermal_zone0/temp").exists() else "simulated"
    )
    for reading in corrected:
        assert "cpu_temperature" in reading and reading["cpu_source"] == expected_source
        raw, cpu = reading["raw_temperature"], reading["cpu_temperature"]
        assert reading["temperature"] == pytest.approx(raw - (cpu - raw) / 5, abs=1e-3)
    assert sorted(r["seq"] for r in corrected[:4]) == [0, 1, 2, 3]
    # nothing was dropped for a missing field on the core
    function_log = system.root / "core" / "functions" / "logs" / "temp-correct.log"
    assert "ignoring" not in (function_log.read_text() if function_log.exists() else "")
