"""The console tells the truth at a glance, desktop and phone sized, in chromium: long
names wrap, each page has its own status line, drift between the group's definition and
what the core runs is named, a pending deployment names its offline core, revoked things
say so, and "Roll back to" never offers the deployment already running."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import DESKTOP, PHONE, RunningCloud, login, wait_until

pytestmark = pytest.mark.browser


def settle(page: Any) -> None:
    page.evaluate(
        "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"
    )


def overflow(page: Any) -> int:
    settle(page)
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_long_group_name_wraps(page: Any, cloud: RunningCloud, viewport: dict[str, int]) -> None:
    name = ("long-" + "x" * 200)[:128]  # the longest name the registry takes
    if not cloud.ok("GET", "/api/v1/groups")["items"] or name not in [
        g["name"] for g in cloud.ok("GET", "/api/v1/groups")["items"]
    ]:
        cloud.ok("POST", "/api/v1/groups", json={"name": name, "description": "d" * 200})
    page.set_viewport_size(viewport)
    login(page, cloud, f"#/groups/{name}")
    page.get_by_role("heading", level=1).wait_for()
    assert name in page.get_by_role("heading", level=1).inner_text().replace("\n", "")
    assert overflow(page) <= 0
    page.goto(f"{cloud.url}/console/#/groups")
    page.get_by_role("heading", name="Groups").wait_for()
    assert overflow(page) <= 0
    page.goto(f"{cloud.url}/console/#/deployments?group={name}")
    page.get_by_role("heading", name="Deployments").wait_for()
    assert overflow(page) <= 0


def test_each_page_has_its_own_status_line(page: Any, cloud: RunningCloud) -> None:
    login(page, cloud, "#/live")
    form = page.get_by_role("form", name="Subscribe to a topic filter")
    form.get_by_label("Topic filter").fill("status-line/#")
    form.get_by_role("button", name="Subscribe").click()
    line = page.locator("#status-line")
    wait_until(
        lambda: "Subscribed to status-line/#" in line.inner_text(), what="the live page's status"
    )
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Charts").click()
    page.get_by_role("heading", level=1).wait_for()
    # at once, not when the Live page's message would have timed out (6 s)
    wait_until(lambda: line.inner_text() == "", 1.0, "the status line cleared on the Charts page")


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_drift_offline_core_and_revoked_thing(
    page: Any, cloud: RunningCloud, tmp_path: Path, viewport: dict[str, int]
) -> None:
    suffix = "d" if viewport is DESKTOP else "p"
    group, core, thing = f"truth-{suffix}", f"truth-core-{suffix}", f"truth-thing-{suffix}"
    cloud.ok("POST", "/api/v1/groups", json={"name": group})
    cloud.core_identity(core, group, tmp_path)  # registered, never started: offline
    cloud.ok("POST", "/api/v1/things", json={"name": thing, "groups": [group]})
    cloud.ok("POST", f"/api/v1/groups/{group}/subscriptions",
             json={"source": f"thing:{thing}", "topic": "t/#", "target": "cloud"})  # fmt: skip
    page.set_viewport_size(viewport)
    login(page, cloud, f"#/groups/{group}")
    drift = page.locator("[data-drift]")
    drift.wait_for()
    text = drift.inner_text()
    assert f"Core {core} runs no deployment yet" in text
    assert f"+ route thing:{thing} t/# → cloud" in text
    assert overflow(page) <= 0
    # the routing picture scrolls inside its box; on a phone it says so
    assert page.locator(".scroll-hint").is_visible() == (viewport is PHONE)

    # a deploy to the offline core: pending, and the page says why
    made = cloud.ok("POST", f"/api/v1/groups/{group}/deployments", json={})
    page.goto(f"{cloud.url}/console/#/deployments/{made['deployment_id']}")
    status = page.locator(".deployment-status")
    wait_until(
        lambda: f"core {core} is offline" in status.inner_text(), what="the offline core named"
    )
    assert "Pending" in status.inner_text()
    assert overflow(page) <= 0

    # the core never ran anything: "Roll back to" offers nothing
    for _ in range(5):  # a timeline wider than a phone
        cloud.ok("POST", f"/api/v1/groups/{group}/deployments", json={})
    page.goto(f"{cloud.url}/console/#/deployments?group={group}")
    rollback = page.get_by_role("button", name="Roll back")
    rollback.wait_for()
    assert rollback.is_disabled()
    timeline = page.locator("#deploy-timeline")
    wait_until(lambda: timeline.locator("li").count() == 6, what="six deployments")
    settle(page)
    # the newest end of the timeline is in view
    assert timeline.evaluate("(e) => e.scrollLeft + e.clientWidth >= e.scrollWidth - 1")
    if viewport is PHONE:
        assert timeline.evaluate("(e) => e.scrollWidth > e.clientWidth")  # it does overflow
    assert overflow(page) <= 0

    # a revoked thing says so
    cloud.ok("POST", f"/api/v1/things/{thing}/revoke", json={})
    page.goto(f"{cloud.url}/console/#/things?owner=")
    page.get_by_role("heading", name="Things and certificates").wait_for()
    row = page.locator("tr", has_text=f"Revoke {thing}")
    row.wait_for()
    assert "revoked" in row.inner_text()
    assert "no active certificate" not in row.inner_text()
    assert overflow(page) <= 0


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_overview_counts_match_a_running_core_within_two_seconds(
    page: Any, cloud: RunningCloud, tmp_path: Path, viewport: dict[str, int]
) -> None:
    """A core whose periodic heartbeat is 10 minutes away, one function, three things
    publishing through it: the overview shows 3 devices and the function RUNNING within
    2 s of the things' readings reaching the cloud."""
    import io
    import time
    import zipfile

    from .conftest import ROOT

    suffix = "d" if viewport is DESKTOP else "p"
    group, core = f"ov-{suffix}", f"ov-core-{suffix}"
    things = [f"ov-{suffix}-{i}" for i in range(3)]
    cloud.ok("POST", "/api/v1/groups", json={"name": group})
    bundle = cloud.core_bundle(core, group, tmp_path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(
            ROOT / "examples" / "functions" / "temp_correct" / "temp_correct.py", "temp_correct.py"
        )
    sha = cloud.ok("POST", "/api/v1/artifacts", content=buffer.getvalue())["sha256"]
    cloud.ok("POST", f"/api/v1/groups/{group}/functions", json={
        "name": "temp-correct", "handler": "temp_correct.handler", "artifact": sha, "pinned": True,
    })  # fmt: skip
    for name in things:
        cloud.thing_files(name, group, tmp_path)
        cloud.ok("POST", f"/api/v1/groups/{group}/subscriptions",
                 json={"source": f"thing:{name}", "topic": f"ov/{name}", "target": "function:temp-correct"})  # fmt: skip
    cloud.ok("POST", f"/api/v1/groups/{group}/subscriptions",
             json={"source": "function:temp-correct", "topic": "corrected/#", "target": "cloud"})  # fmt: skip
    cloud.start_core(bundle, tmp_path / "core", heartbeat_interval=600)
    deployment = cloud.ok("POST", f"/api/v1/groups/{group}/deployments", json={})
    wait_until(lambda: cloud.ok("GET", f"/api/v1/deployments/{deployment['deployment_id']}")["status"] == "Success", what="the deployment")  # fmt: skip

    page.set_viewport_size(viewport)
    login(page, cloud, "#/overview")
    for name in things:
        cloud.start_thing(name, tmp_path / f"{name}.cert.pem", tmp_path / f"{name}.key",
                          tmp_path / f"state-{name}", f"ov/{name}")  # fmt: skip

    def readings_from_all() -> bool:
        stored = cloud.ok("GET", "/api/v1/messages", params={"filter": "corrected/#", "limit": 500})
        return {m["topic"] for m in stored["items"]} >= {f"corrected/{n}" for n in things}

    wait_until(readings_from_all, what="corrected readings from the three things")
    started = time.monotonic()
    row = page.get_by_role("region", name="Cores", exact=True).locator("tr", has_text=core)
    seen: list[str] = []

    def shown() -> bool:
        devices = row.locator("td[data-label='Devices']").inner_text().strip()
        functions = row.locator("td[data-label='Functions']").inner_text()
        seen.append(f"devices={devices} functions={functions!r}")
        return devices == "3" and "temp-correct" in functions and "RUNNING" in functions

    try:
        wait_until(shown, 2.0, "3 devices and temp-correct RUNNING on the overview")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {seen[-1:]}") from None
    assert time.monotonic() - started <= 2.0
    assert row.locator(".badge-online").count() == 1
    assert overflow(page) <= 0
    cloud.processes.stop("thing")
    cloud.processes.stop("core")
