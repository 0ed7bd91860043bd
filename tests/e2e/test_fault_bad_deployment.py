"""A bad deployment rolls back while traffic keeps flowing.

temp-correct runs on the core and a thing publishes through it. A new version of the
function that raises at import is deployed: ``deploy --wait`` exits non-zero, the
deployment history says RolledBack (or Failure) with the reason, and corrected readings
from the previous version keep arriving in the cloud.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import EXAMPLES, System, running_system, wait_until

pytestmark = pytest.mark.slow

THING = "bme680-1"


def corrected(system: System) -> list[dict[str, float]]:
    return system.payloads("corrected/#")


@pytest.mark.parametrize("fault", ["raises-at-import", "no-such-handler"])
def test_a_broken_function_version_rolls_back_and_the_old_one_keeps_working(
    tmp_path: Path, fault: str
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    if fault == "raises-at-import":
        (broken / "temp_correct.py").write_text(
            'raise RuntimeError("broken build: this module cannot be imported")\n'
        )
        change = ["--code", str(broken)]
    else:
        change = ["--handler", "temp_correct.no_such_handler"]
    with running_system(tmp_path) as system:
        system.create_thing(THING)
        system.function(
            "temp-correct",
            EXAMPLES / "temp_correct",
            "temp_correct.handler",
            "--pinned",
            "--env",
            "FACTOR=4",
        )
        system.route(f"thing:{THING}", "sensors/#", "function:temp-correct")
        system.route("function:temp-correct", "corrected/#", "cloud")
        good = system.deploy()
        assert "Success" in good.stdout + good.stderr
        system.start(
            "thing",
            [
                sys.executable, "-m", "hedgerow", "thing", "run", *system.thing_args(THING),
                "-id", THING, "-t", f"sensors/{THING}", "--sensor", "sim", "--interval", "0.2",
                "--quiet", "--state-dir", str(tmp_path / "state"),
            ],
        )  # fmt: skip
        wait_until(lambda: len(corrected(system)) >= 3, timeout=60, what="corrected readings")

        system.cloud(
            "function", "update", "--group", "factory-1", "temp-correct",
            *change, "--env", "FACTOR=9",
        )  # fmt: skip
        bad = system.deploy(check=False)
        output = bad.stdout + bad.stderr
        assert bad.returncode != 0, output
        assert "RolledBack" in output or "Failure" in output, output
        after_failure = len(corrected(system))
        print(output)

        history = system.cloud("deployments", "--group", "factory-1", "--json")
        deployments = json.loads(history.stdout)
        latest = deployments[0]
        assert latest["status"] in ("RolledBack", "Failure"), deployments
        assert "temp-correct" in latest["detail"], latest
        assert [d["status"] for d in deployments[1:]] == ["Success"], deployments
        table = system.cloud("deployments", "--group", "factory-1").stdout
        assert latest["status"] in table and latest["deployment_id"] in table, table

        # traffic keeps flowing through the previous version (FACTOR=4, not 9)
        wait_until(
            lambda: len(corrected(system)) >= after_failure + 5,
            timeout=30,
            what="corrected readings after the failed deployment",
        )
        newest = corrected(system)[after_failure:]
        assert {r["correction_factor"] for r in newest} == {4.0}
        for reading in newest:
            raw, cpu = reading["raw_temperature"], reading["cpu_temperature"]
            assert reading["temperature"] == pytest.approx(raw - (cpu - raw) / 4, abs=1e-3)
