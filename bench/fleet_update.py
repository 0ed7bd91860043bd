"""Update leg of ``bench/fleet.py``: over-the-air update of a core, from the command to
healthy on the new version.

A real cloud and core (``hedgerow cloud serve``, ``hedgerow core run``: the harness of
``tests/e2e``) on loopback, one device publishing QoS 1 readings routed to the cloud. Two
releases are built from this tree with bumped versions (``tests/e2e/releases.py``) and
uploaded with their wheelhouse; then the core is updated three times:

1. base -> A: a new virtual environment, ``pip install --no-index`` from the wheelhouse;
2. A -> B: the same, from a core that is itself an updated release;
3. B -> A: A's environment is kept as ``previous``: no install, only the switch.

Each figure is from ``hedgerow cloud deploy --core-version X --wait`` starting to the
deployment's ``Success`` (which the new version reports only after it is healthy: the
deployment applied, its functions running, linked to the cloud), split by the status
events: install, restart into the new version, health + commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.harness import CORE, System, running_system
from tests.e2e.publisher import THING, Publisher, wait_all_stored
from tests.e2e.releases import build_release, build_wheelhouse, bumped, deploy_core_version

import hedgerow

PHASES = ("fetched", "venv", "installed", "switched", "new_started", "committed")


@dataclass(frozen=True)
class UpdateResult:
    #: (label, seconds after the command of each phase, ``total``: to Success)
    updates: list[tuple[str, dict[str, float]]]
    #: readings the device had acknowledged during the updates (all found stored)
    readings: int

    @property
    def worst_s(self) -> float:
        return max(p["total"] for _, p in self.updates)

    def table(self) -> list[str]:
        lines = [
            "| update | fetched | venv made | pip done | switched | new version started "
            "| committed (healthy) | command to Success |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for label, p in self.updates:
            cells = [f"{p[k]:.1f} s" if k in p else "-" for k in PHASES]
            lines.append(f"| {label} | {' | '.join(cells)} | {p['total']:.1f} s |")
        return lines


def _log_times(log: Path, since: float) -> dict[str, float]:
    """Seconds after ``since`` of the core's update events in its ``core.log`` (the
    cloud records one InProgress event per deployment, so the phases come from here)."""
    marks = {
        "core.update.installing": "fetched",
        "step=venv": "venv",
        "core.update.installed": "installed",
        "core.update.switched": "switched",
        "core.update.trial": "new_started",
        "core.update.committed": "committed",
    }
    found: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        for event, name in marks.items():
            if event in line:
                stamp = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                at = time.mktime(stamp.timetuple()) + stamp.microsecond / 1e6
                if at >= since:
                    found.setdefault(name, at - since)
    return found


def update_once(system: System, version: str) -> dict[str, float]:
    """Deploy ``version``; seconds from the command to each phase (and to Success)."""
    update = deploy_core_version(system, version)
    if update.deployment["status"] != "Success":
        raise SystemExit(f"update to {version} ended {update.deployment['status']}")
    log = system.root / "core" / "logs" / "core.log"
    phases = {"total": update.took, **_log_times(log, update.started)}
    heartbeat = system.api(f"/api/v1/cores/{CORE}").get("heartbeat") or {}
    if heartbeat.get("version") != version:
        print(f"  (the heartbeat still says {heartbeat.get('version')})")
    return phases


async def run(root: Path, runs: int) -> UpdateResult:
    a, b = bumped(hedgerow.__version__, 1), bumped(hedgerow.__version__, 3)
    started = time.monotonic()
    wheel_a = build_release(root / "build", a)
    wheel_b = build_release(root / "build", b)
    wheelhouse = build_wheelhouse(root / "build", wheel_a)
    print(f"  built {wheel_a.name}, {wheel_b.name} and the wheelhouse in "
          f"{time.monotonic() - started:.1f} s")  # fmt: skip
    results: list[tuple[str, dict[str, float]]] = []
    readings = 0
    for index in range(runs):
        with running_system(root / f"run-{index}") as system:
            await asyncio.to_thread(system.create_thing, THING)
            await asyncio.to_thread(system.route, f"thing:{THING}", "sensors/#", "cloud")
            await asyncio.to_thread(system.deploy)
            for wheel in (wheel_a, wheel_b):
                await asyncio.to_thread(
                    system.cloud, "release", "upload", str(wheel), "--wheelhouse", str(wheelhouse)
                )
            publisher = Publisher(system, pause=0.02)
            task = asyncio.create_task(publisher.run())
            try:
                await publisher.wait_acked(20, 60, "the stream to start")
                steps = [
                    (f"base {hedgerow.__version__} -> {a} (install)", a),
                    (f"{a} -> {b} (install)", b),
                    (f"{b} -> {a} (kept env)", a),
                ]
                for label, version in steps:
                    phases = await asyncio.to_thread(update_once, system, version)
                    results.append((label, phases))
                    print(f"  {label}: {phases['total']:.1f} s", flush=True)
                    await publisher.wait_acked(len(publisher.acked) + 10, 60, "readings")
            finally:
                publisher.stop.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, 20)
            await wait_all_stored(system, set(publisher.acked), 60)
            readings += len(publisher.acked)
            print(f"  {len(publisher.acked)} readings acknowledged, all stored", flush=True)
    return UpdateResult(results, readings)
