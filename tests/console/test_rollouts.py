"""The rollout view in the console: progress per rollout, wave and group, and the
operator's buttons (a rollout over two groups whose cores never answer)."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import RunningCloud, login, screenshots, wait_until

pytestmark = pytest.mark.browser


def test_a_rollout_shows_its_waves_and_groups_and_is_paused_resumed_and_rolled_back(
    page: Any, cloud: RunningCloud
) -> None:
    for name in ("roll-a", "roll-b"):
        cloud.ok("POST", "/api/v1/groups", json={"name": name, "labels": {"ring": "console"}})
        cloud.ok("POST", "/api/v1/cores", json={"name": f"{name}-core", "group": name})
    rollout = cloud.ok(
        "POST",
        "/api/v1/rollouts",
        json={"labels": {"ring": "console"}, "canary": 1, "deadline_s": 600},
    )
    rollout_id = rollout["id"]
    page.on("dialog", lambda dialog: dialog.accept())
    login(page, cloud, "#/rollouts")
    page.get_by_role("link", name=rollout_id).click()
    page.get_by_role("heading", name=f"Rollout {rollout_id}").wait_for()
    waves = page.get_by_role("region", name="Waves", exact=True)
    # header and two waves, once the page's first fetch has filled the table (the heading
    # is drawn before it)
    wait_until(lambda: waves.locator("tr").count() == 3, what="the waves table")
    groups = page.get_by_role("region", name="Groups of the rollout")
    canary = groups.locator("tr", has_text="roll-a")
    canary.locator(".badge", has_text="deploying").wait_for()
    assert "waiting" in groups.locator("tr", has_text="roll-b").inner_text()
    assert page.get_by_label(f"rollout {rollout_id}").get_attribute("value") == "0"
    screenshots(page, "rollout-running")

    page.get_by_role("button", name="Pause").click()
    page.get_by_role("button", name="Resume").wait_for()
    assert cloud.ok("GET", f"/api/v1/rollouts/{rollout_id}")["state"] == "paused"
    page.get_by_role("button", name="Resume").click()
    page.get_by_role("button", name="Pause").wait_for()
    page.get_by_role("button", name="Roll back").click()
    wait_until(
        lambda: cloud.ok("GET", f"/api/v1/rollouts/{rollout_id}")["state"] == "rolling-back",
        what="the rollback",
    )
    canary.locator(".badge", has_text="restoring").wait_for()
    assert "skipped" in groups.locator("tr", has_text="roll-b").inner_text()
