"""Bad input in the console: a wrong token, invalid forms, a very busy topic."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hedgerow import pki
from hedgerow.client import Client, ProtocolVersion

from .conftest import RunningCloud, login, screenshots, shot, wait_until

pytestmark = pytest.mark.browser

#: What the live view may draw at once (static/live.js MAX_ROWS).
MAX_ROWS = 200
BURST = 4000


def field_error(form: Any, label: str) -> str:
    """The error text shown under the field labelled ``label`` (waits for it)."""
    control = form.get_by_label(label, exact=True)
    error = form.locator(f"#{control.get_attribute('id')}-error")
    error.wait_for(state="visible")
    assert control.get_attribute("aria-invalid") == "true"
    return str(error.inner_text())


def posts_to(page: Any, path: str) -> list[str]:
    """Every POST the page sends to ``path`` from now on."""
    seen: list[str] = []
    page.on(
        "request",
        lambda request: (
            seen.append(request.url)
            if request.method == "POST" and request.url.split("?")[0].endswith(path)
            else None
        ),
    )
    return seen


def test_a_wrong_token_is_refused_on_the_login_page(page: Any, cloud: RunningCloud) -> None:
    page.goto(cloud.url + "/")
    assert page.url.endswith("/console/#/login?next=%23%2Foverview")
    page.get_by_label("API token").fill("not-the-token")
    page.get_by_role("button", name="Log in").click()
    message = page.get_by_role("alert").filter(has_text="Wrong token")
    message.wait_for()
    assert "invalid token" in message.inner_text()
    assert page.evaluate("sessionStorage.length") == 0
    assert page.locator("#nav").is_hidden()
    screenshots(page, "login-wrong-token")

    page.get_by_label("API token").fill(cloud.token)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Overview").wait_for()
    assert page.evaluate("sessionStorage.getItem('hedgerow.token')") == cloud.token

    # a token the cloud stops accepting sends the user back to the login page, saying why
    # (the overview's own refresh may meet the refusal first and hide the nav, so the next
    # page is asked for by its address, as a click on the nav's link does, not by a click)
    page.evaluate("sessionStorage.setItem('hedgerow.token', 'revoked-token')")
    page.evaluate("location.hash = '#/groups'")
    page.get_by_role("alert").filter(has_text="refused the token").wait_for()
    assert "#/login" in page.url


def test_invalid_forms_say_what_is_wrong_and_save_nothing(
    page: Any, cloud: RunningCloud, tmp_path: Path
) -> None:
    cloud.ok("POST", "/api/v1/groups", json={"name": "taken"})
    login(page, cloud, "#/groups")
    create = page.get_by_role("form", name="Create a group")
    create.wait_for()
    sent = posts_to(page, "/api/v1/groups")

    create.get_by_label("Name").fill("bad name!")
    create.get_by_role("button", name="Create group").click()
    assert "invalid group name 'bad name!'" in field_error(create, "Name")
    assert sent == []

    # the API's refusal lands on the field too (a duplicate)
    create.get_by_label("Name").fill("taken")
    create.get_by_role("button", name="Create group").click()
    assert "already exists" in field_error(create, "Name")
    assert len(sent) == 1
    names = [g["name"] for g in cloud.ok("GET", "/api/v1/groups")["items"]]
    assert names.count("taken") == 1 and "bad name!" not in names
    shot(page, "form-errors-group-desktop")

    # subscriptions that name unknown things or functions
    cloud.ok("POST", "/api/v1/groups", json={"name": "refs"})
    for name in ("known", "gone"):
        cloud.ok("POST", "/api/v1/things", json={"name": name, "groups": ["refs"]})
    page.goto(f"{cloud.url}/console/#/groups/refs")
    subscribe = page.get_by_role("form", name="Add a subscription")
    subscribe.wait_for()
    sent = posts_to(page, "/api/v1/groups/refs/subscriptions")
    subscribe.get_by_label("Source").fill("thing:ghost")
    subscribe.get_by_label("Topic filter").fill("sensors/#/x")
    subscribe.get_by_label("Target").fill("function:nope")
    subscribe.get_by_role("button", name="Add subscription").click()
    assert "thing 'ghost' is not in group 'refs'" in field_error(subscribe, "Source")
    assert "'#' must be the whole last level" in field_error(subscribe, "Topic filter")
    assert "function 'nope' is not in group 'refs'" in field_error(subscribe, "Target")
    assert sent == []
    shot(page, "form-errors-subscription-desktop")

    # a thing deleted since the page loaded: the cloud refuses, the field says so
    cloud.ok("DELETE", "/api/v1/things/gone")
    subscribe.get_by_label("Source").fill("thing:gone")
    subscribe.get_by_label("Topic filter").fill("sensors/#")
    subscribe.get_by_label("Target").fill("cloud")
    subscribe.get_by_role("button", name="Add subscription").click()
    assert "thing 'gone' is not in group 'refs'" in field_error(subscribe, "Source")
    assert len(sent) == 1
    assert cloud.ok("GET", "/api/v1/groups/refs/subscriptions")["items"] == []

    # a function with a bad handler and no code
    function = page.get_by_role("form", name="Create a function")
    function.get_by_label("Name").fill("f1")
    function.get_by_label("Handler").fill("no_dot")
    function.get_by_label("Memory (MB)").fill("4")
    function.get_by_role("button", name="Create function").click()
    assert "use module.function" in field_error(function, "Handler")
    assert "choose the function's code" in field_error(function, "Code (zip)")
    assert "32..16384" in field_error(function, "Memory (MB)")
    assert cloud.ok("GET", "/api/v1/groups/refs/functions")["items"] == []

    # group settings: a rotation period out of range is refused; a valid change is saved
    settings = page.get_by_role("form", name="Group settings")
    settings.get_by_label("Group CA rotation (days)").fill("99")
    settings.get_by_role("button", name="Save settings").click()
    assert "1..30" in field_error(settings, "Group CA rotation (days)")
    assert cloud.ok("GET", "/api/v1/groups/refs")["ca_rotation_days"] is None
    settings.get_by_label("Description", exact=True).fill("reference checks")
    settings.get_by_label("Group CA rotation (days)").fill("14")
    settings.get_by_role("button", name="Save settings").click()
    page.locator("#status-line", has_text="Settings of refs saved.").wait_for()
    saved = cloud.ok("GET", "/api/v1/groups/refs")
    assert (saved["description"], saved["ca_rotation_days"]) == ("reference checks", 14)
    assert saved["settings"]["open_broker"] is False

    # the live view refuses an invalid topic filter
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Live").click()
    live = page.get_by_role("form", name="Subscribe to a topic filter")
    live.get_by_label("Topic filter").fill("a/#/b")
    live.get_by_role("button", name="Subscribe", exact=True).click()
    assert "'#' must be the whole last level" in field_error(live, "Topic filter")


def _publisher(cloud: RunningCloud, cert: Path, key: Path, stop: threading.Event) -> dict[str, Any]:
    """Publish as a core would: probes until the page sees one, then a burst."""
    result: dict[str, Any] = {"sent": 0, "error": None, "go": threading.Event()}

    async def run() -> None:
        ctx = pki.client_context(str(cloud.root_ca), str(cert), str(key))
        async with Client(
            "127.0.0.1", cloud.mqtt_port, ssl=ctx, client_id="busy-core", version=ProtocolVersion.V5
        ) as client:
            while not result["go"].is_set() and not stop.is_set():
                await client.publish("busy/probe", b'{"probe": true}', qos=1)
                result["sent"] += 1
                await asyncio.sleep(0.2)
            pending = [
                client.publish_nowait("busy/data", f'{{"n": {i}}}'.encode(), qos=1)
                for i in range(BURST)
            ]
            await asyncio.gather(*pending)
            result["sent"] += BURST

    def main() -> None:
        try:
            asyncio.run(run())
        except Exception as exc:  # reported to the test
            result["error"] = exc

    result["thread"] = threading.Thread(target=main, name="busy-publisher")
    return result


def test_a_busy_topic_keeps_the_live_view_responsive(
    page: Any, cloud: RunningCloud, tmp_path: Path
) -> None:
    cloud.ok("POST", "/api/v1/groups", json={"name": "busy"})
    cloud.ok("POST", "/api/v1/things", json={"name": "noisy", "groups": ["busy"]})
    cloud.ok(
        "POST",
        "/api/v1/groups/busy/subscriptions",
        json={"source": "thing:noisy", "topic": "busy/#", "target": "cloud"},
    )
    cert, key = cloud.core_identity("busy-core", "busy", tmp_path)
    login(page, cloud, "#/live?filter=busy%2F%23")
    page.locator("#live-state .badge-live").wait_for()
    # the longest gap between two animation frames while the burst arrives
    page.evaluate(
        """() => {
        window.maxFrameGap = 0;
        let last = performance.now();
        const tick = (now) => {
          window.maxFrameGap = Math.max(window.maxFrameGap, now - last);
          last = now;
          requestAnimationFrame(tick);
        };
        requestAnimationFrame(tick);
    }"""
    )
    stop = threading.Event()
    publisher = _publisher(cloud, cert, key, stop)
    publisher["thread"].start()
    try:
        wait_until(
            lambda: int(page.locator("#live-received").inner_text()) >= 1, what="a first probe"
        )
        page.evaluate("window.maxFrameGap = 0")
        publisher["go"].set()
        pause = page.get_by_role("button", name="Pause")
        wait_until(
            lambda: int(page.locator("#live-received").inner_text()) >= 200,
            what="the burst to arrive",
        )
        started = time.monotonic()
        pause.click()
        page.locator("#live-pause[aria-pressed='true']").wait_for()
        pause_took = time.monotonic() - started
        page.get_by_role("button", name="Resume").click()
        publisher["thread"].join(timeout=30)
        assert publisher["error"] is None, publisher["error"]
        total = publisher["sent"]
        wait_until(
            lambda: int(page.locator("#live-received").inner_text()) == total,
            what=f"all {total} messages to be counted",
        )
    finally:
        stop.set()
        publisher["go"].set()
        publisher["thread"].join(timeout=30)
    page.get_by_role("button", name="Pause").click()
    skipped, shown, rows = page.evaluate(
        """() => [
        Number(document.getElementById("live-skipped").textContent),
        Number(document.getElementById("live-shown").textContent),
        document.querySelectorAll("#live-messages > li").length,
    ]"""
    )
    assert skipped > 0, "a burst of thousands should not all be drawn"
    assert 0 < shown <= MAX_ROWS and rows == shown
    # generous bounds: the machine running the tests may be busy too
    assert pause_took < 5.0
    gap = page.evaluate("window.maxFrameGap")
    assert gap < 1000, f"the page froze for {gap:.0f} ms"
    shot(page, "live-busy-desktop")
