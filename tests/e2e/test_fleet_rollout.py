"""Fleet operations with real processes: one cloud and ten ``hedgerow core run`` gateways.

1. A staged rollout of a tiny function to ten groups selected by label (canary 1, waves
   50 % and 100 %, soak 1 s, no failure allowed). One gateway's function raises at start (a
   marker file stands for its missing sensor): its core rolls back, the rollout pauses and
   restores that group's previous deployment, the other nine keep the new one. After the
   fix, ``rollout resume`` retries it and the rollout completes.
2. A stuck deployment (a core that never answers) is superseded by a newer one, which
   fails at its deadline; neither blocks anything.
3. An offline deployment: exported, the cloud stopped, ``hedgerow core deploy --file``
   applies it with no cloud; the cloud started again shows the drift, never redeploys over
   it, and adopts it on the operator's word.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.e2e.harness import Proc, System, wait_until

pytestmark = pytest.mark.slow

GATEWAYS = 10
BROKEN = 7  # in the third wave (canary 1, then 50 % = 5, then 100 %)
CORE_SETTINGS = """
[deployment]
health_timeout = 4
"""
FUNCTION = """\
import os

marker = os.path.join(os.environ["MARKER_DIR"], os.environ.get("AWS_IOT_THING_NAME", ""))
if os.path.exists(marker):
    raise RuntimeError("this gateway's sensor is missing")


def handler(event, context):
    return event
"""


def rollout_json(system: System, *args: str, check: bool = False) -> tuple[int, dict[str, Any]]:
    done = system.cloud("rollout", *args, "--json", check=check, timeout=240)
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


def heartbeat(system: System, core: str) -> dict[str, Any]:
    beat: dict[str, Any] = system.api(f"/api/v1/cores/{core}").get("heartbeat") or {}
    return beat


@pytest.mark.timeout(300)  # eleven real processes on a shared two-core machine
def test_rollout_pause_restore_resume_then_a_stuck_deployment_and_an_offline_one(
    tmp_path: Path,
) -> None:
    system = System(tmp_path)
    # functions run as an unprivileged user when the tests run as root: the marker
    # directory must be readable by it (the test's own temporary directory is 0700)
    markers = Path(tempfile.mkdtemp(prefix="hedgerow-markers-"))
    markers.chmod(0o755)
    code = tmp_path / "tiny"
    code.mkdir()
    (code / "tiny.py").write_text(FUNCTION)
    try:
        system.start_cloud()
        system.cloud("group", "create", "template")
        system.cloud(
            "function", "create", "--group", "template", "tiny", "--code", str(code),
            "--handler", "tiny.handler", "--pinned", "--env", f"MARKER_DIR={markers}",
        )  # fmt: skip
        procs: list[tuple[Proc, int]] = []
        # the ten groups and cores through the API (ten CLI processes each cost seconds here)
        with system._http() as http:
            for i in range(GATEWAYS):
                made = http.post(
                    "/api/v1/groups", json={"name": f"berlin-{i}", "labels": {"site": "berlin"}}
                )
                made.raise_for_status()
        for i in range(GATEWAYS):
            system.create_core(f"berlin-{i}", f"gw-{i}", free_port(), CORE_SETTINGS, api=True)
            port = free_port()
            procs.append((system.start_named_core(f"gw-{i}", port, wait=False), port))
        for proc, port in procs:
            system.wait_core(proc, port)
        listed = system.cloud("group", "list", "--label", "site=berlin").stdout
        assert listed.count("site=berlin") == GATEWAYS and "template" not in listed

        # a first rollout of each group's own (empty) definition: what the next restores
        code_, first = rollout_json(system, "start", "--label", "site=berlin", "--follow")
        assert code_ == 0 and first["state"] == "completed", first
        previous = {t["group"]: t["deployment"] for t in first["targets"]}

        (markers / f"gw-{BROKEN}").write_text("sensor missing")
        code_, paused = rollout_json(
            system, "start", "--label", "site=berlin", "--from-group", "template",
            "--canary", "1", "--waves", "50%", "100%", "--soak", "1", "--max-failures", "0",
            "--follow", "--timeout", "180",
        )  # fmt: skip
        assert code_ == 1 and paused["state"] == "paused", paused
        assert [w["groups"] for w in paused["per_wave"]] == [1, 4, 5]
        rollout_id = paused["id"]

        def settled() -> dict[str, Any] | None:
            now: dict[str, Any] = system.api(f"/api/v1/rollouts/{rollout_id}")
            states = {t["group"]: t["state"] for t in now["targets"]}
            broken = states.pop(f"berlin-{BROKEN}")
            return now if broken == "restored" and set(states.values()) == {"done"} else None

        status = wait_until(settled, timeout=90, what="the others done, the broken one restored")
        broken = next(t for t in status["targets"] if t["group"] == f"berlin-{BROKEN}")
        assert broken["failed"] and broken["detail"], broken
        assert broken["previous"] == previous[f"berlin-{BROKEN}"]
        history = system.api(f"/api/v1/groups/berlin-{BROKEN}/deployments")["items"]
        by_id = {d["deployment_id"]: d for d in history}
        assert by_id[broken["deployment"]]["status"] in ("RolledBack", "Failure")
        assert by_id[broken["restore"]]["restores"] == previous[f"berlin-{BROKEN}"]
        wait_until(
            lambda: heartbeat(system, f"gw-{BROKEN}").get("deployment") == broken["restore"],
            timeout=60,
            what="the broken gateway on its restored deployment",
        )
        for target in status["targets"]:
            if target["group"] != f"berlin-{BROKEN}":
                core = "gw-" + target["group"].split("-")[1]
                beat = heartbeat(system, core)
                assert beat["deployment"] == target["deployment"], (core, beat)
                assert beat["functions"] == {"tiny": "RUNNING"}, (core, beat)
        human = system.cloud("rollout", "status", rollout_id).stdout
        assert "paused" in human and f"berlin-{BROKEN}" in human and "9/10 done" in human

        # the fix; resume retries the failed group and the rollout completes
        (markers / f"gw-{BROKEN}").unlink()
        system.cloud("rollout", "resume", rollout_id)
        code_, done = rollout_json(system, "watch", rollout_id, "--timeout", "120")
        assert code_ == 0 and done["state"] == "completed" and done["done"] == GATEWAYS, done
        retried = next(t for t in done["targets"] if t["group"] == f"berlin-{BROKEN}")
        wait_until(
            lambda: heartbeat(system, f"gw-{BROKEN}").get("functions") == {"tiny": "RUNNING"},
            timeout=60,
            what="the fixed gateway running the function",
        )
        assert heartbeat(system, f"gw-{BROKEN}")["deployment"] == retried["deployment"]

        # a core that never answers: superseded, then failed at its deadline
        system.cloud("group", "create", "stuck")
        system.create_core("stuck", "gw-stuck", free_port(), api=True)  # never started
        stuck = json.loads(system.cloud("deploy", "--group", "stuck", "--json").stdout)
        newer = json.loads(
            system.cloud("deploy", "--group", "stuck", "--deadline", "2", "--json").stdout
        )
        old = system.api(f"/api/v1/deployments/{stuck['deployment_id']}")
        assert old["status"] == "Superseded" and newer["deployment_id"] in old["detail"]
        failed = wait_until(
            lambda: (
                d
                if (d := system.api(f"/api/v1/deployments/{newer['deployment_id']}"))["status"]
                == "Failure"
                else None
            ),
            timeout=30,
            what="the deadline",
        )
        assert failed["detail"].startswith("deadline exceeded")

        # offline: export, stop the cloud, apply on the gateway, start the cloud, adopt
        offline_file = tmp_path / "d.tar"
        exported = json.loads(
            system.cloud(
                "deployment", "export", "--group", "berlin-0", "--out", str(offline_file), "--json"
            ).stdout
        )
        system.stop_cloud()
        applied = system.run(
            "core", "deploy", "--file", str(offline_file), "--data-dir", str(tmp_path / "gw-0"),
            "--timeout", "60",
        )  # fmt: skip
        assert f"deployment {exported['deployment_id']}: Success" in applied.stdout
        system.start_cloud()

        def drift() -> dict[str, Any] | None:
            found: dict[str, Any] = system.api("/api/v1/groups/berlin-0/drift")
            return found if found["running"] == exported["deployment_id"] else None

        shown = wait_until(drift, timeout=60, what="the gateway's heartbeat after the outage")
        assert shown["drift"] and shown["signed_here"], shown
        assert shown["latest"] == next(
            t["deployment"] for t in done["targets"] if t["group"] == "berlin-0"
        )
        assert "DRIFT" in system.cloud("deployment", "drift", "--group", "berlin-0").stdout
        # nothing was redeployed over it: the gateway still runs the offline deployment
        assert heartbeat(system, "gw-0")["deployment"] == exported["deployment_id"]
        system.cloud("deployment", "adopt", "--group", "berlin-0")
        after = system.api("/api/v1/groups/berlin-0/drift")
        assert not after["drift"] and after["latest"] == exported["deployment_id"]
        assert system.api(f"/api/v1/deployments/{exported['deployment_id']}")["status"] == "Success"
    except BaseException:
        print(system.logs())
        raise
    finally:
        system.close()
        shutil.rmtree(markers, ignore_errors=True)
