"""A newer deployment supersedes the one the core is still applying (real cloud and core).

The group runs a pinned function. Its next version hangs while its module loads, in a
native call that holds the interpreter (so the worker never reports ready: the function
runtime gives up only at its 30 s start timeout, and the deployment has a 240 s deadline);
while the core is applying it, the operator fixes the function and deploys again. The core cancels the hanging deployment at once, rolls back what it had
started, reports it ``Superseded``, and applies the newer one, which succeeds in a few
seconds; nothing of the superseded deployment stays on the core's disk, and after a restart
the core runs the newer one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import CORE, GROUP, System, running_system, wait_until

pytestmark = pytest.mark.slow

CORE_SETTINGS = """
[deployment]
deadline = 240
"""
#: the new version must be running well within this (the hanging start alone takes 30 s)
SUPERSEDE_WITHIN_S = 20.0
GOOD = """\
import os

FACTOR = os.environ.get("FACTOR", "?")


def handler(event, context):
    return {"factor": FACTOR}
"""
#: a start that never finishes: a driver call that blocks holding the GIL (libc's sleep
#: through ``PyDLL``), so the worker never even says "module code still running"
HANGS = """\
import ctypes

ctypes.PyDLL(None).sleep(600)


def handler(event, context):
    return event
"""


def deployment(system: System, deployment_id: str) -> dict[str, Any]:
    found: dict[str, Any] = system.api(f"/api/v1/deployments/{deployment_id}")
    return found


def newest_deployment(system: System) -> dict[str, Any]:
    newest: dict[str, Any] = system.api(f"/api/v1/groups/{GROUP}/deployments", limit="1")["items"][
        0
    ]
    return newest


def heartbeat(system: System) -> dict[str, Any]:
    beat: dict[str, Any] = system.api(f"/api/v1/cores/{CORE}").get("heartbeat") or {}
    return beat


def write_code(directory: Path, code: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "probe.py").write_text(code)
    return directory


@pytest.mark.timeout(240)
def test_a_newer_deployment_supersedes_one_whose_function_hangs_at_start(
    tmp_path: Path,
) -> None:
    good = write_code(tmp_path / "good", GOOD)
    hangs = write_code(tmp_path / "hangs", HANGS)
    with running_system(tmp_path, core_settings=CORE_SETTINGS) as system:
        system.function("probe", good, "probe.handler", "--pinned", "--env", "FACTOR=1")
        first = system.deploy()
        assert "Success" in first.stdout + first.stderr
        d1 = newest_deployment(system)["deployment_id"]

        # the hanging version: deployed without waiting; the core starts applying it
        system.cloud("function", "update", "--group", GROUP, "probe", "--code", str(hangs))
        system.cloud("deploy", "--group", GROUP, "--deadline", "240")
        d2 = newest_deployment(system)["deployment_id"]
        assert d2 != d1
        wait_until(
            lambda: any(e["status"] == "InProgress" for e in deployment(system, d2)["events"]),
            timeout=60,
            what="the core applying the hanging deployment",
        )

        # the fix, deployed while the core is still in the hanging start
        system.cloud(
            "function", "update", "--group", GROUP, "probe", "--code", str(good),
            "--env", "FACTOR=3",
        )  # fmt: skip
        started = time.monotonic()
        fixed = system.deploy(check=False)
        took = time.monotonic() - started
        output = fixed.stdout + fixed.stderr
        assert fixed.returncode == 0, output
        d3 = newest_deployment(system)["deployment_id"]
        assert deployment(system, d3)["status"] == "Success", output
        print(f"superseding deployment {d3} succeeded in {took:.1f} s")
        assert took < SUPERSEDE_WITHIN_S, (took, output)

        # the old one: Superseded in the cloud, with the core's account of what it undid
        account = f"superseded by {d3}: cancelled while applying, rolled back to {d1}"
        old = wait_until(
            lambda: (found := deployment(system, d2))["detail"] == account and found,
            timeout=30,
            what="the core's Superseded report",
        )
        assert old["status"] == "Superseded", old
        statuses = [e["status"] for e in old["events"]]
        assert "RolledBack" not in statuses and "Failure" not in statuses, old["events"]

        # nothing of the superseded deployment stays on the core
        stored = tmp_path / "core" / "deployments"
        assert not (stored / f"{d2}.json").exists() and not (stored / f"{d2}.sig").exists()
        contents = system.api(f"/api/v1/deployments/{d2}/contents")
        hang_sha = contents["document"]["functions"][0]["artifact"]["sha256"]
        good_sha = system.api(f"/api/v1/deployments/{d3}/contents")["document"]["functions"][0][
            "artifact"
        ]["sha256"]
        assert {p.name for p in (stored / "artifacts").iterdir()} == {f"{good_sha}.zip"}
        assert not (stored / "artifacts" / f"{hang_sha}.zip").exists()
        assert (stored / "current").read_text() == d3
        assert (stored / "previous").read_text() == d1

        def runs_d3() -> bool:
            beat = heartbeat(system)
            states = beat.get("functions") or {}
            return beat.get("deployment") == d3 and str(states.get("probe")).lower() == "running"

        wait_until(runs_d3, timeout=30, what="the core's heartbeat on the new deployment")
        # one worker (the new version's): the hanging one was stopped; one code bundle
        functions = tmp_path / "core" / "functions"
        wait_until(
            lambda: len(workers_in(functions / "functions" / "probe")) == 1,
            timeout=30,
            what="the hanging worker to be gone",
        )
        assert [b.name for b in (functions / "bundles").iterdir()] == [f"probe-{good_sha[:16]}"]

        # after a restart the core runs the newer deployment
        system.procs["core"].stop()
        system.start_core(first=False)
        started = time.monotonic()
        wait_until(
            lambda: runs_d3() and heartbeat_fresh(system, started),
            timeout=60,
            what="the restarted core on the new deployment",
        )


def workers_in(directory: Path) -> list[int]:
    """The processes whose working directory is ``directory`` (a function's workers)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if Path(os.readlink(proc / "cwd")) == directory:
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def heartbeat_fresh(system: System, since_monotonic: float) -> bool:
    """Whether the core's uptime says its heartbeat came from the restarted process."""
    uptime = heartbeat(system).get("uptime")
    return isinstance(uptime, int | float) and uptime <= time.monotonic() - since_monotonic + 5
