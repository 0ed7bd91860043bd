"""Over-the-air update of the core itself, while a device publishes QoS 1 readings.

The core runs as ``hedgerow core run`` started by hand (no systemd): the first update makes
it replace itself with the launcher (``core/launcher.py``, same process id), which from then
on starts the release ``runtime/current`` names. Two releases built from this tree
(``tests/e2e/releases.py``): one with a bumped version, which installs offline from the
wheelhouse into its own virtual environment, starts, checks its health and commits; and one
whose entry point raises, which the launcher starts twice, then rolls back to the previous
environment; the group's core version goes back to the one that runs, so the next plain
deployment does not try the failed release again. A third release, updated to last, leaves
exactly two environments: its own and the one to roll back to. Throughout, every reading the core
acknowledged reaches the cloud.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import CORE, EXAMPLES, GROUP, System, running_system
from tests.e2e.publisher import THING, Publisher, wait_all_stored
from tests.e2e.releases import Releases, deploy_core_version

pytestmark = pytest.mark.slow

UPDATE_SETTINGS = """
[deployment]
update_timeout = 90
"""


def heartbeat(system: System) -> dict[str, Any]:
    return system.api(f"/api/v1/cores/{CORE}").get("heartbeat") or {}


def heartbeat_version(system: System) -> str | None:
    return heartbeat(system).get("version")


def core_python(launcher_pid: int) -> str:
    """The interpreter of the core the launcher (``launcher_pid``) runs ("" if none yet)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == launcher_pid:
                return (stat.parent / "cmdline").read_bytes().split(b"\0")[0].decode()
        except (OSError, IndexError, ValueError):
            continue
    return ""


async def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):  # type: ignore[arg-type]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.5)


@pytest.mark.timeout(400)  # three restarts, two installs and a session's wheel builds, loaded
async def test_update_the_core_then_roll_back_a_release_that_fails_at_start(
    tmp_path: Path, releases: Releases
) -> None:
    with running_system(tmp_path, core_settings=UPDATE_SETTINGS) as system:
        await asyncio.to_thread(system.create_thing, THING)
        await asyncio.to_thread(system.route, f"thing:{THING}", "sensors/#", "cloud")
        # a pinned function: part of the new version's health (it must be running)
        await asyncio.to_thread(
            system.function, "temp-correct", EXAMPLES / "temp_correct", "temp_correct.handler",
            "--pinned",
        )  # fmt: skip
        await asyncio.to_thread(system.deploy)
        runtime = tmp_path / "core" / "runtime"
        core_pid = system.procs["core"].popen.pid
        base_version = await asyncio.to_thread(heartbeat_version, system)

        for wheel in (releases.good, releases.failing, releases.later):
            uploaded = await asyncio.to_thread(
                system.cloud, "release", "upload", str(wheel),
                "--wheelhouse", str(releases.wheelhouse), "--json",
            )  # fmt: skip
            assert json.loads(uploaded.stdout)["signature"]
        listed = await asyncio.to_thread(system.cloud, "release", "list")
        assert releases.good_version in listed.stdout and releases.failing_version in listed.stdout

        publisher = Publisher(system, pause=0.02)
        task = asyncio.create_task(publisher.run())
        try:
            await publisher.wait_acked(20, 60, "the stream to start")

            # 1. the bumped version: installed offline, started, healthy, committed
            update = await asyncio.to_thread(deploy_core_version, system, releases.good_version)
            latest, took = update.deployment, update.took
            assert update.done.returncode == 0, latest
            assert latest["status"] == "Success", latest
            assert latest["detail"] == f"core updated {base_version} -> {releases.good_version}"
            statuses = [e["detail"] for e in latest["events"]]  # type: ignore[union-attr]
            assert any("installing" in str(d) for d in statuses), statuses
            await wait_for(
                lambda: heartbeat_version(system) == releases.good_version, 30, "new version"
            )
            assert (runtime / "current").read_text() == releases.good_version
            assert not (runtime / "pending.json").exists()
            assert (runtime / "venvs" / releases.good_version / ".hedgerow-ready").exists()
            functions = (await asyncio.to_thread(heartbeat, system))["functions"]
            assert str(functions["temp-correct"]).lower() == "running", functions
            assert system.procs["core"].popen.poll() is None  # the launcher, same pid
            assert (
                Path(f"/proc/{core_pid}/cmdline")
                .read_bytes()
                .split(b"\0")[1]
                .endswith(b"launcher.py")
            )
            print(f"update {base_version} -> {releases.good_version} took {took:.1f} s")
            acked_before = len(publisher.acked)
            await publisher.wait_acked(acked_before + 20, 60, "readings on the new version")

            # 2. a release whose entry point raises: started twice, rolled back
            update = await asyncio.to_thread(deploy_core_version, system, releases.failing_version)
            latest, took = update.deployment, update.took
            assert update.done.returncode != 0
            assert latest["status"] == "RolledBack", latest
            detail = str(latest["detail"])
            assert "did not start (2 attempts)" in detail, detail
            assert "this release fails at start" in detail, detail
            assert (runtime / "current").read_text() == releases.good_version
            assert not (runtime / "pending.json").exists()
            await wait_for(
                lambda: heartbeat_version(system) == releases.good_version, 30, "rolled back"
            )
            print(f"failed update rolled back in {took:.1f} s")
            # the group's core version is back to what runs, and the operator is told why
            assert f"group {GROUP}'s core version is back to {releases.good_version}" in detail
            assert f"back to {releases.good_version}" in update.done.stderr, update.done.stderr
            group = await asyncio.to_thread(system.api, f"/api/v1/groups/{GROUP}")
            assert group["settings"]["core_version"] == releases.good_version, group
            # so the next deployment does not try the failed release again
            plain = await asyncio.to_thread(system.deploy)
            assert "Success" in plain.stdout, plain.stdout + plain.stderr
            assert "installing" not in plain.stdout and "core update" not in plain.stdout
            assert await asyncio.to_thread(heartbeat_version, system) == releases.good_version
            # and the failed release's wheel is not kept: no kept deployment names it
            failing_sha = hashlib.sha256(releases.failing.read_bytes()).hexdigest()
            good_sha = hashlib.sha256(releases.good.read_bytes()).hexdigest()
            artifacts = tmp_path / "core" / "deployments" / "artifacts"
            assert (artifacts / f"{good_sha}.zip").exists()
            assert not (artifacts / f"{failing_sha}.zip").exists()
            acked_before = len(publisher.acked)
            await publisher.wait_acked(acked_before + 20, 60, "readings after the rollback")
        finally:
            publisher.stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 20)

        # 3. the core started again by hand (a reboot without systemd) runs the update
        await asyncio.to_thread(system.procs["core"].stop)
        await asyncio.to_thread(system.start_core, first=False)
        pid = system.procs["core"].popen.pid
        await wait_for(
            lambda: releases.good_version in core_python(pid), 60, "the launcher's child"
        )
        await wait_for(
            lambda: heartbeat_version(system) == releases.good_version, 60, "its heartbeat"
        )

        # 4. a third update: the running and the rollback environment stay, the rolled-back
        # release's goes, and the core logs the bytes it freed
        update = await asyncio.to_thread(deploy_core_version, system, releases.later_version)
        assert update.deployment["status"] == "Success", update.deployment
        await wait_for(
            lambda: heartbeat_version(system) == releases.later_version, 30, "the third version"
        )
        venvs = sorted(p.name for p in (runtime / "venvs").iterdir())
        assert venvs == sorted([releases.good_version, releases.later_version]), venvs
        logs = sorted((tmp_path / "core" / "logs").glob("core.log*"), reverse=True)  # oldest first
        cleaned = [
            line
            for log in logs
            for line in log.read_text().splitlines()
            if "core.update.cleaned" in line
        ]
        assert "removed=1" in cleaned[-1] and releases.failing_version not in venvs, cleaned
        freed = int(cleaned[-1].rsplit("freed_bytes=", 1)[1])
        assert freed > 1_000_000, cleaned  # a whole environment
        print(f"update to {releases.later_version} took {update.took:.1f} s, freed {freed} bytes")

        # 5. nothing the core acknowledged was lost across all the restarts
        acked = set(publisher.acked)
        await wait_all_stored(system, acked, 60)
        print(f"{len(acked)} readings acknowledged, all stored; reconnects {publisher.reconnects}")
        assert publisher.reconnects >= 2  # the device really lived through both restarts
