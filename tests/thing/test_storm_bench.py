"""bench/storm.py runs end to end (tiny storms: the real one is 500 things)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("target, jitters", [("broker", ["full", "none"]), ("core", ["equal"])])
def test_storm_bench_smoke(target: str, jitters: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "storm.py"), "--target", target, "--things", "5",
         "--scenarios", "core up", "--jitter", *jitters, "--deadline", "30"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("core up")]
    assert len(rows) == len(jitters)
    assert all("5/5" in row for row in rows)
    assert f"5 things against hedgerow {target}" in out.stdout
