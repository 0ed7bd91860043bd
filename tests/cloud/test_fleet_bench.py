"""bench/fleet.py runs its legs and says pass or FAIL per target (a tiny fleet: the real
one is 100 cores; the update leg builds releases and is left to the benchmark itself)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def fleet_bench(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fleet.py"), *args],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def summary(stdout: str) -> list[str]:
    """The rows of the final table (figure | measured | target | verdict)."""
    lines = stdout.splitlines()
    start = lines.index("| figure | measured | target | verdict |")
    return [line for line in lines[start + 2 :] if line.startswith("| ")]


def test_rollout_leg_times_every_shape_against_its_target() -> None:
    out = fleet_bench("--only", "rollout", "--cores", "3", "--runs", "1")
    assert "[rollout] starting" in out and "  run 1, one wave: " in out
    assert "deployments applied by the simulated cores: 6" in out  # 2 shapes x 3 cores
    rows = summary(out)
    assert [r.split(" | ")[0] for r in rows] == [
        "| rollout to 100 % of 3 cores, soak 0, one wave (median)",
        "| rollout to 100 % of 3 cores, soak 0, canary 1, 10% 50% 100% (median)",
    ]
    assert all(r.endswith("| ≤ 10 s | pass |") for r in rows), rows
    assert "[claims]" not in out and "[update]" not in out


def test_claims_leg_reports_cores_per_second() -> None:
    out = fleet_bench("--only", "claims", "--claim-cores", "2", "--things", "3")
    assert "  2 cores provisioned in " in out and "  3 things provisioned in " in out
    rows = summary(out)
    assert len(rows) == 2 and all(" cores/s | none set | - |" in r for r in rows), rows
    rates = [float(r.split(" | ")[1].split()[0]) for r in rows]
    assert all(rate > 0 for rate in rates)
