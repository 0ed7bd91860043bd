"""Rollback and the registry agree: the plan of the next deploy against what the core
runs, a redeployment that says what it restores, and a core's live connection.

The core here is a real MQTT client with the core's certificate at the cloud's real
endpoint, reporting as the core daemon does (status and heartbeat); the CLI runs as a
subprocess against the same cloud."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from hedgerow.client import Client

from .conftest import Cloud
from .test_cli import run
from .test_core_link import WAIT, core_client, setup_group

GROUP = "/api/v1/groups/factory-1"


async def report(cloud: Cloud, core: Client, deployment_id: str) -> None:
    """The core applied ``deployment_id``: its status report and heartbeat, recorded."""
    await send(core, deployment_id)
    await until(cloud, "/api/v1/cores/pi-1", lambda c: (c["heartbeat"] or {}).get("deployment") == deployment_id)  # fmt: skip


async def send(core: Client, deployment_id: str, status: str = "Success") -> None:
    body = {"deployment_id": deployment_id, "status": status, "detail": ""}
    await core.publish("$hedgerow/cores/pi-1/deployment-status", json.dumps(body), qos=1)
    await core.publish(
        "$hedgerow/cores/pi-1/heartbeat",
        json.dumps({"version": "0", "deployment": deployment_id, "functions": {}}),
        qos=1,
    )


async def until(cloud: Cloud, path: str, check: Any) -> Any:
    async with asyncio.timeout(WAIT):
        while not check(body := await cloud.ok("GET", path)):
            await asyncio.sleep(0.05)
    return body


async def plan(cloud: Cloud, **body: Any) -> dict[str, Any]:
    result: dict[str, Any] = await cloud.ok("POST", f"{GROUP}/deployments/plan", json=body)
    return result


async def test_rollback_then_the_next_deploy_shows_what_it_brings_back(
    cloud: Cloud, tmp_path: Path
) -> None:
    cert, key, _ = await setup_group(cloud, tmp_path)
    await cloud.ok(
        "PATCH", f"{GROUP}/functions/temp-correct", json={"environment": {"FACTOR": "5"}}
    )
    first_plan = await plan(cloud)
    assert first_plan["running"] is None
    assert "+ start function temp-correct v2" in first_plan["lines"]
    async with core_client(cloud, cert, key) as core:
        d1 = await cloud.ok("POST", f"{GROUP}/deployments", json={})
        await report(cloud, core, d1["deployment_id"])
        assert (await plan(cloud))["empty"]  # the core runs the definition

        # v3 with FACTOR 7 goes out, then the operator rolls back to d1
        await cloud.ok(
            "PATCH", f"{GROUP}/functions/temp-correct", json={"environment": {"FACTOR": "7"}}
        )
        d2 = await cloud.ok("POST", f"{GROUP}/deployments", json={})
        await report(cloud, core, d2["deployment_id"])
        restore_plan = await plan(cloud, kind="redeploy", deployment_id=d1["deployment_id"])
        assert restore_plan["lines"] == ["~ replace function temp-correct v3 → v2 (environment)"]
        d3 = await cloud.ok(
            "POST", f"{GROUP}/deployments", json={"kind": "redeploy", "deployment_id": d1["deployment_id"]}
        )  # fmt: skip
        assert d3["restores"] == d1["deployment_id"]
        listed = await cloud.ok("GET", f"{GROUP}/deployments")
        assert listed["items"][0]["restores"] == d1["deployment_id"]
        assert listed["items"][1]["restores"] is None
        await report(cloud, core, d3["deployment_id"])

        # the definition still says v3: the next plain deploy says it brings v3 back
        drift = await plan(cloud)
        assert drift["running"] == d3["deployment_id"] and not drift["empty"]
        assert drift["functions"] == [
            {"name": "temp-correct", "before": 2, "after": 3, "fields": ["environment"]}
        ]

        url = ["--url", cloud.server.api_url, f"--token={cloud.token}"]  # a token may start with -
        dry = await run("cloud", "deploy", "--group", "factory-1", "--dry-run", *url, cwd=tmp_path)
        assert dry.code == 0, dry.err
        assert f"the core runs {d3['deployment_id']}" in dry.out
        assert "~ replace function temp-correct v2 → v3 (environment)" in dry.out
        history = await cloud.ok("GET", f"{GROUP}/deployments")
        assert history["count"] == 3  # a dry run deploys nothing
        # from a script (stdin not a terminal): the plan is printed, then deployed
        real = await run("cloud", "deploy", "--group", "factory-1", *url, cwd=tmp_path)
        assert real.code == 0, real.err
        assert "replace function temp-correct v2 → v3" in real.out
        assert (await cloud.ok("GET", f"{GROUP}/deployments"))["count"] == 4
        redeploy = await run(
            "cloud", "deploy", "--group", "factory-1", "--redeploy", d1["deployment_id"], *url,
            cwd=tmp_path,
        )  # fmt: skip
        assert f"(restores {d1['deployment_id']})" in redeploy.out, redeploy.err


async def test_a_cores_connected_flag_follows_its_mqtt_session(
    cloud: Cloud, tmp_path: Path
) -> None:
    cert, key, _ = await setup_group(cloud, tmp_path)
    assert (await cloud.ok("GET", "/api/v1/cores/pi-1"))["connected"] is False
    async with core_client(cloud, cert, key) as core:
        shown = await until(cloud, "/api/v1/cores/pi-1", lambda c: c["connected"] is True)
        assert shown["last_seen"] is not None
        listed = await cloud.ok("GET", "/api/v1/cores")
        assert [c["connected"] for c in listed["items"]] == [True]
        beat = {
            "version": "0", "deployment": "d-1", "health": "healthy", "devices": 3,
            "functions": {"temp-correct": "RUNNING"},
            "function_errors": {"temp-correct": {"failed": 2, "crashes": 0, "timeouts": 0,
                                                 "last_error": "KeyError: 'cpu_temperature'"}},
        }  # fmt: skip
        await core.publish("$hedgerow/cores/pi-1/heartbeat", json.dumps(beat), qos=1)
        await until(cloud, "/api/v1/cores/pi-1", lambda c: c["heartbeat"] and c["heartbeat"].get("devices") == 3)  # fmt: skip
        url = ["--url", cloud.server.api_url, f"--token={cloud.token}"]  # a token may start with -
        show = await run("cloud", "core", "show", "pi-1", *url, cwd=tmp_path)
        assert show.code == 0, show.err
        assert "core pi-1 (group factory-1): connected" in show.out
        assert "deployment: d-1   health: healthy   devices: 3" in show.out
        assert "  temp-correct: RUNNING (2 failed)" in show.out
        assert "    last error: KeyError: 'cpu_temperature'" in show.out
    async with asyncio.timeout(2.0):  # visible in the cloud within 2 s
        await until(cloud, "/api/v1/cores/pi-1", lambda c: c["connected"] is False)
