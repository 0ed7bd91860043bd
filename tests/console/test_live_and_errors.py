"""Two behaviours of the console, in chromium: the live view shows only the filter
subscribed now (the previous filter's messages and counts are cleared), and a long
deployment error stays inside its card on a phone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hedgerow.contract.deployment import DeploymentStatus, StatusReport
from hedgerow.contract.topics import CoreLeaf, core_topic

from .conftest import PHONE, RunningCloud, login, shot, wait_until

pytestmark = pytest.mark.browser


def counter(page: Any, name: str) -> int:
    return int(page.locator(f"#live-{name}").inner_text())


def shown_topics(page: Any) -> list[str]:
    return [str(t) for t in page.locator("#live-messages .message .topic").all_inner_texts()]


def test_a_new_filter_clears_the_live_view(page: Any, cloud: RunningCloud, tmp_path: Path) -> None:
    cloud.ok("POST", "/api/v1/groups", json={"name": "lf"})
    cloud.ok("POST", "/api/v1/things", json={"name": "lf-thing", "groups": ["lf"]})
    cloud.ok("POST", "/api/v1/groups/lf/subscriptions",
             json={"source": "thing:lf-thing", "topic": "lf/#", "target": "cloud"})  # fmt: skip
    cert, key = cloud.core_identity("lf-core", "lf", tmp_path)
    login(page, cloud, "#/live?filter=lf%2Fa%2F%23")
    page.locator("#live-state .badge-live").wait_for()
    cloud.publish_as_core(cert, key, "lf-core", [(f"lf/a/{i}", b'{"a": 1}') for i in range(3)])
    wait_until(lambda: counter(page, "shown") == 3, what="the first filter's 3 messages")
    assert counter(page, "received") == 3

    form = page.get_by_role("form", name="Subscribe to a topic filter")
    form.get_by_label("Topic filter").fill("lf/b/#")
    form.get_by_role("button", name="Subscribe").click()
    page.locator("#live-state", has_text="live: lf/b/#").wait_for()
    # at once: nothing of lf/a/# is left, shown or counted
    assert shown_topics(page) == []
    assert [counter(page, n) for n in ("received", "shown", "skipped", "waiting")] == [0, 0, 0, 0]

    cloud.publish_as_core(cert, key, "lf-core", [
        ("lf/a/late", b'{"a": 2}'), ("lf/b/1", b'{"b": 1}'), ("lf/b/2", b'{"b": 2}'),
    ])  # fmt: skip
    wait_until(lambda: counter(page, "shown") == 2, what="the new filter's 2 messages")
    assert sorted(shown_topics(page)) == ["lf/b/1", "lf/b/2"]
    assert counter(page, "received") == 2
    assert "filter=lf%2Fb%2F%23" in page.url  # the address follows the filter


def test_a_long_deployment_error_stays_inside_its_card_on_a_phone(
    page: Any, cloud: RunningCloud, tmp_path: Path
) -> None:
    cloud.ok("POST", "/api/v1/groups", json={"name": "longerr"})
    cert, key = cloud.core_identity("longerr-core", "longerr", tmp_path)
    made = cloud.ok("POST", "/api/v1/groups/longerr/deployments", json={})
    deployment = made["deployment_id"]
    # what a core reports when a function fails to start: long words that do not break
    path = "/var/lib/hedgerow/core/functions/" + "very-long-function-name-" * 12 + "/handler.py"
    detail = (
        f"function temp-correct failed to start: ModuleNotFoundError: No module named "
        f"'{'x' * 300}' (in {path}); rolled back to nothing"
    )
    report = StatusReport(deployment, DeploymentStatus.FAILURE, detail)
    topic = core_topic("longerr-core", CoreLeaf.DEPLOYMENT_STATUS)
    cloud.publish_as_core(cert, key, "longerr-core", [(topic, report.to_json())])
    wait_until(
        lambda: cloud.ok("GET", f"/api/v1/deployments/{deployment}")["status"] == "Failure",
        what="the failure recorded",
    )

    page.set_viewport_size(PHONE)
    login(page, cloud, f"#/deployments/{deployment}")
    card = page.locator(".error-detail")
    card.wait_for()
    assert "x" * 300 in card.inner_text().replace("\n", "")
    box, text = card.bounding_box(), card.locator("pre").bounding_box()
    assert box is not None and text is not None
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
    # the text wraps inside the card: nothing sticks out or hides behind a scrollbar
    assert text["x"] + text["width"] <= box["x"] + box["width"]
    assert card.locator("pre").evaluate("(e) => e.scrollWidth <= e.clientWidth")
    assert box["height"] > 200  # wrapped onto many lines, not cut off
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    shot(page, "deployment-long-error-phone")
