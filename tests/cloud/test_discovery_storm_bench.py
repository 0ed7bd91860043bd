"""bench/discovery_storm.py runs its legs for real (a tiny storm on SQLite) and its
figures add up: every discovery answered, resumption and the cache where the leg has them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_tiny_storm_reports_every_leg() -> None:
    out = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "discovery_storm.py"), "--sqlite",
            "--devices", "6", "--rounds", "2", "--procs", "2",
            "--legs", "baseline,cache+resume+limit@2/5",
        ],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    figures = json.loads(out.stdout[out.stdout.index("\n{") :])
    baseline, limited = figures["baseline"], figures["cache+resume+limit@2/5"]
    for leg in (baseline, limited):
        assert leg["answers"] == 12 and leg["gave up"] == 0 and leg["handshakes"] >= 12
        assert leg["p99 ms"] >= leg["p50 ms"] > 0
    assert baseline["resumed"] == 0 and baseline["cache hits"] == 0
    assert limited["resumed"] == 6  # each device's second discovery
    assert limited["cache hits"] == 6
    assert "cache+resume+limit@2/5:" in out.stdout
