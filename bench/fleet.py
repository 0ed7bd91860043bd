"""Fleet operations (issue 15): the three figures of a fleet and their targets, one command.

    .venv/bin/python bench/fleet.py                    # every leg (about 5 min on 2 loaded CPUs)
    .venv/bin/python bench/fleet.py --only rollout     # one leg: rollout | claims | update
    .venv/bin/python bench/fleet.py --quick            # 20 cores, 1 run, fewer claims

Legs, in this order, each in its own module (imported here):

- rollout (``fleet_rollout.py``): a real ``hedgerow cloud serve`` and ``--cores`` simulated
  cores (one mutual-TLS MQTT session each); time from ``POST /api/v1/rollouts`` (soak 0)
  until every core is healthy on the new deployment, one wave and staged, ``--runs`` each.
- claims (``fleet_claims.py``): a cloud in this process; ``--claim-cores`` cores and
  ``--things`` things provisioned by claim, ``--concurrency`` at a time, with the devices'
  own key work and with a pre-made CSR (the cloud alone): cores per second.
- update (``fleet_update.py``): a real cloud and core; three over-the-air updates of the
  core (two installs, one switch back to the kept environment), from ``hedgerow cloud
  deploy --core-version X --wait`` to the new version healthy.

Progress is printed as each leg goes, then each leg's table, then the summary: every
figure with its target and pass / FAIL. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the checkout's own package and the tests' harness (the update leg runs the e2e system)
sys.path[1:1] = [str(ROOT / "src"), str(ROOT)]

import fleet_claims  # noqa: E402
import fleet_rollout  # noqa: E402
import fleet_update  # noqa: E402

#: issue 15's targets, in seconds: rollout to 100 % of 100 cores with soak 0, and a core's
#: update from the command to healthy on the new version (on this machine)
ROLLOUT_TARGET_S = 10.0
UPDATE_TARGET_S = 30.0
LEGS = ("rollout", "claims", "update")


@dataclass(frozen=True)
class Figure:
    """One row of the summary; ``at_most`` is the target (None: a figure with no target)."""

    name: str
    value: float
    unit: str
    at_most: float | None = None

    @property
    def verdict(self) -> str:
        if self.at_most is None:
            return "-"
        return "pass" if self.value <= self.at_most else "FAIL"

    def row(self) -> str:
        target = "none set" if self.at_most is None else f"≤ {self.at_most:g} {self.unit}"
        return f"| {self.name} | {self.value:.2f} {self.unit} | {target} | {self.verdict} |"


def machine() -> str:
    """CPUs, CPU model, Python and the load average now (shared machines move figures)."""
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
        f"load average {load_average()}"
    )


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def rollout_leg(args: argparse.Namespace) -> tuple[list[str], list[Figure]]:
    found = await fleet_rollout.run(args.cores, args.runs)
    figures = [
        Figure(f"rollout to 100 % of {found.cores} cores, soak 0, {shape} (median)",
               statistics.median(values), "s", ROLLOUT_TARGET_S)
        for shape, values in found.seconds.items()
    ]  # fmt: skip
    return found.table(), figures


async def claims_leg(args: argparse.Namespace) -> tuple[list[str], list[Figure]]:
    found = await fleet_claims.run(args.claim_cores, args.things, args.concurrency)
    figures = [
        Figure("claim provisioning, cores with their own key work (this machine)",
               found.cores_per_s, "cores/s"),
        Figure("claim provisioning, cloud only (pre-made CSR)",
               found.cloud_only_cores_per_s, "cores/s"),
    ]  # fmt: skip
    return found.table(), figures


async def update_leg(args: argparse.Namespace) -> tuple[list[str], list[Figure]]:
    with tempfile.TemporaryDirectory(prefix="hedgerow-bench-update-") as tmp:
        found = await fleet_update.run(Path(tmp), args.update_runs)
    table = [
        *found.table(),
        f"{found.readings} readings acknowledged during the updates, all stored",
    ]
    figures = [
        Figure(f"core update, command to healthy on the new version (slowest of {len(found.updates)})",
               found.worst_s, "s", UPDATE_TARGET_S),
    ]  # fmt: skip
    return table, figures


Leg = Callable[[argparse.Namespace], Awaitable[tuple[list[str], list[Figure]]]]
RUNNERS: dict[str, Leg] = {
    "rollout": rollout_leg,
    "claims": claims_leg,
    "update": update_leg,
}


async def main_async(args: argparse.Namespace) -> int:
    print(f"machine: {machine()}", flush=True)
    legs = [args.only] if args.only else list(LEGS)
    tables: list[tuple[str, list[str]]] = []
    figures: list[Figure] = []
    for leg in legs:
        started = time.perf_counter()
        print(f"[{leg}] starting (load average {load_average()})", flush=True)
        table, found = await RUNNERS[leg](args)
        print(f"[{leg}] done in {time.perf_counter() - started:.0f} s", flush=True)
        tables.append((leg, table))
        figures.extend(found)
    for leg, table in tables:
        print(f"\n{leg}:\n" + "\n".join(table))
    print("\n| figure | measured | target | verdict |\n|---|---|---|---|")
    print("\n".join(f.row() for f in figures))
    print(f"load average at the end: {load_average()}")
    return 1 if any(f.verdict == "FAIL" for f in figures) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=LEGS, help="run one leg")
    parser.add_argument("--cores", type=int, default=100, help="rollout: simulated cores")
    parser.add_argument("--runs", type=int, default=3, help="rollout: runs per shape")
    parser.add_argument("--claim-cores", type=int, default=50, help="claims: cores")
    parser.add_argument("--things", type=int, default=200, help="claims: things")
    parser.add_argument("--concurrency", type=int, default=20, help="claims: at a time")
    parser.add_argument(
        "--update-runs", type=int, default=1, help="update: fresh systems, 3 updates each"
    )
    parser.add_argument(
        "--quick", action="store_true", help="20 cores and 1 run; 10 cores, 40 things"
    )
    args = parser.parse_args()
    if args.quick:
        args.cores, args.runs, args.claim_cores, args.things = 20, 1, 10, 40
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
