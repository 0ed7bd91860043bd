"""The console's operator pages in chromium, against a real cloud and core: the fleet page
sorted by problems (an offline core first, then the one whose function fails, with its
traceback), the log view with filters and live follow, and alerts with rules and history."""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from .conftest import RunningCloud, login, screenshots, wait_until

pytestmark = pytest.mark.browser

RAISER = 'def handler(event, context):\n    raise ValueError("console boom " + context.topic)\n'


def _core(cloud: RunningCloud, tmp_path: Path, group: str, core: str) -> Path:
    made = cloud.ok("POST", "/api/v1/cores", json={"name": core, "group": group})
    bundle = tmp_path / made["bundle_name"]
    bundle.write_bytes(base64.b64decode(made["bundle"]))
    return bundle


def test_fleet_logs_and_alerts_pages(page: Any, cloud: RunningCloud, tmp_path: Path) -> None:
    group, idle_group = "ops-console", "ops-idle"
    for name in (group, idle_group):
        cloud.ok("POST", "/api/v1/groups", json={"name": name})
    bundle = _core(cloud, tmp_path, group, "ops-core")
    _core(cloud, tmp_path, idle_group, "ops-never")  # created, never started: offline
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("raiser.py", RAISER)
    sha = cloud.ok("POST", "/api/v1/artifacts", content=buffer.getvalue())["sha256"]
    cloud.ok("POST", f"/api/v1/groups/{group}/functions",
             json={"name": "raiser", "handler": "raiser.handler", "artifact": sha})  # fmt: skip
    cloud.ok("POST", f"/api/v1/groups/{group}/subscriptions",
             json={"source": "cloud", "topic": "ops/raise", "target": "function:raiser"})  # fmt: skip
    cloud.start_core(bundle, tmp_path / "core")
    deployment = cloud.ok("POST", f"/api/v1/groups/{group}/deployments", json={})
    wait_until(lambda: cloud.ok("GET", f"/api/v1/deployments/{deployment['deployment_id']}")["status"] == "Success", what="the deployment")  # fmt: skip
    cloud.ok("POST", "/api/v1/messages/publish", json={"topic": "ops/raise", "payload": "1"})

    # the fleet: the offline core first, then the core with a failing function
    login(page, cloud, "#/fleet")
    page.get_by_role("heading", name="Fleet health").wait_for()
    rows = page.locator("#fleet tbody tr")

    def order() -> list[str]:
        names = [rows.nth(i).locator("td").first.inner_text() for i in range(rows.count())]
        return [n for n in names if n in ("ops-core", "ops-never")]

    wait_until(lambda: order() == ["ops-never", "ops-core"], what="cores sorted by problems")
    core_row = page.locator("#fleet tbody tr", has_text="ops-core")
    wait_until(lambda: "1 failed" in core_row.inner_text(), what="the function's errors")
    assert "online" in core_row.inner_text()
    assert "offline" in page.locator("#fleet tbody tr", has_text="ops-never").inner_text()
    assert core_row.locator("summary").inner_text() == "traceback"  # folded, one click away
    assert "ValueError: console boom ops/raise" in (core_row.locator("pre").text_content() or "")
    screenshots(page, "ops-fleet")

    # the logs: filtered to the function's errors, then one more error arrives live
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Logs").click()
    filters = page.get_by_role("form", name="Log filters")
    filters.get_by_label("Group").select_option(group)
    filters.get_by_label("Function").fill("raiser")
    filters.get_by_label("Level and above").select_option("ERROR")
    filters.get_by_role("button", name="Show logs").click()
    lines = page.locator("#log-lines li")
    wait_until(lambda: lines.count() >= 1, what="the stored error")
    assert "Traceback (most recent call last):" in lines.first.inner_text()
    wait_until(lambda: "live" in page.locator("#log-state").inner_text(), what="live follow")
    before = lines.count()
    cloud.ok("POST", "/api/v1/messages/publish", json={"topic": "ops/raise", "payload": "2"})
    wait_until(lambda: lines.count() > before, what="the new error, live")
    assert "console boom ops/raise" in lines.last.inner_text()
    assert all("function:raiser" in lines.nth(i).inner_text() for i in range(lines.count()))
    screenshots(page, "ops-logs")

    # alerts: a rule added on the page fires on the next error; the history shows it
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Alerts").click()
    rule = page.get_by_role("form", name="Add a rule")
    rule.get_by_label("Name").fill("ops-errors")
    rule.get_by_label("Kind").select_option("function-errors")
    rule.get_by_label("Threshold (seconds, errors a minute, fraction or days)").fill("0.01")
    rule.get_by_label("Group (empty: all)").fill(group)
    rule.get_by_role("button", name="Add rule").click()
    page.get_by_role("button", name="Remove ops-errors").wait_for()
    cloud.ok("POST", "/api/v1/messages/publish", json={"topic": "ops/raise", "payload": "3"})
    history = page.locator("#alerts table", has_text="Fired").first
    wait_until(lambda: "function raiser on core ops-core" in page.locator("#alerts").inner_text(),
               what="the alert in the history")  # fmt: skip
    assert "active" in history.inner_text()
    screenshots(page, "ops-alerts")
    page.get_by_role("button", name="Remove ops-errors").click()
    wait_until(lambda: page.get_by_role("button", name="Remove ops-errors").count() == 0,
               what="the rule removed")  # fmt: skip
