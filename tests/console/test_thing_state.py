"""Each thing's connection and last activity, live, in chromium: fed by the core's
heartbeat (a device's connect and disconnect each trigger one), with real ``thing run``
processes and a core whose periodic heartbeat is 10 minutes away."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import RunningCloud, login, wait_until

pytestmark = pytest.mark.browser

#: from the thing's "connected" (or its kill) to the console showing it
SHOWN_WITHIN_S = 2.0


def test_things_connected_and_disconnected_within_two_seconds(
    page: Any, cloud: RunningCloud, tmp_path: Path
) -> None:
    group, core = "live-things", "live-things-core"
    things = ["live-a", "live-b"]
    cloud.ok("POST", "/api/v1/groups", json={"name": group})
    bundle = cloud.core_bundle(core, group, tmp_path)
    for name in things:
        cloud.thing_files(name, group, tmp_path)
        cloud.ok("POST", f"/api/v1/groups/{group}/subscriptions",
                 json={"source": f"thing:{name}", "topic": f"live/{name}", "target": "cloud"})  # fmt: skip
    cloud.start_core(bundle, tmp_path / "core", heartbeat_interval=600)
    deployment = cloud.ok("POST", f"/api/v1/groups/{group}/deployments", json={})
    wait_until(
        lambda: (
            cloud.ok("GET", f"/api/v1/deployments/{deployment['deployment_id']}")["status"]
            == "Success"
        ),
        what="the deployment",
    )

    login(page, cloud, f"#/groups/{group}")
    state = {n: page.locator(f"[data-thing-state='{n}']") for n in things}
    activity = {n: page.locator(f"[data-thing-activity='{n}']") for n in things}
    for name in things:
        state[name].wait_for()
        assert state[name].inner_text().strip() == "unknown"  # never seen by the core
        assert activity[name].inner_text().strip() == "never"

    def shown(name: str, text: str, since: float) -> float:
        wait_until(
            lambda: state[name].inner_text().strip() == text,
            SHOWN_WITHIN_S + 3,
            f"{name} shown {text}",
        )
        return time.monotonic() - since

    # connect: from the thing's own "connected" line to the console
    for name in things:
        cloud.start_thing(name, tmp_path / f"{name}.cert.pem", tmp_path / f"{name}.key",
                          tmp_path / f"state-{name}", f"live/{name}", process=name)  # fmt: skip
    for name in things:
        wait_until(
            lambda name=name: "connected to the core" in cloud.processes.log(name),
            what=f"{name} connected",
        )
        connected_at = time.monotonic()
        took = shown(name, "connected", connected_at)
        assert took <= SHOWN_WITHIN_S, f"{name} shown connected after {took:.2f} s"
        assert activity[name].inner_text().strip().endswith("s ago")

    # kill -9: the core notices the closed socket and tells the cloud at once
    killed_at = time.monotonic()
    cloud.processes.kill("live-a")
    took = shown("live-a", "disconnected", killed_at)
    assert took <= SHOWN_WITHIN_S, f"live-a shown disconnected after {took:.2f} s"
    assert state["live-b"].inner_text().strip() == "connected"

    # the core's heartbeat carries the same, and the things page shows it too
    beat = cloud.ok("GET", f"/api/v1/cores/{core}")["heartbeat"]
    assert beat["things"]["live-a"]["connected"] is False
    assert beat["things"]["live-b"]["connected"] is True
    assert beat["things"]["live-a"]["last_activity"] <= time.time()
    page.goto(f"{cloud.url}/console/#/things")
    page.get_by_role("heading", name="Things and certificates").wait_for()
    wait_until(
        lambda: (
            page.locator("[data-thing-state='live-b']").inner_text().strip() == "connected"
            and page.locator("[data-thing-state='live-a']").inner_text().strip() == "disconnected"
        ),
        what="the things page showing both states",
    )
    cloud.processes.stop("live-b")
    cloud.processes.stop("core")
