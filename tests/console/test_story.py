"""The console end to end in chromium: the seed's story with a real cloud, core and thing.

Log in, create a group, its core (run from the downloaded bundle) and a thing (run from
the downloaded certificates), route the thing to the cloud, deploy and watch the status
change, see the core online, watch live messages arrive and chart them; then deploy a
function. Every page is saved as a screenshot, desktop and phone sized.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, RunningCloud, login, screenshots, wait_until

pytestmark = pytest.mark.browser

GROUP = "factory-1"
CORE = "pi-1"
THING = "bme680-1"


def nav(page: Any, name: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name).click()
    page.get_by_role("heading", level=1).wait_for()


def function_zip(directory: Path) -> Path:
    source = ROOT / "examples" / "functions" / "temp_correct" / "temp_correct.py"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(source, "temp_correct.py")
    path = directory / "temp_correct.zip"
    path.write_bytes(buffer.getvalue())
    return path


def watch_deployment(page: Any) -> tuple[set[str], str]:
    """Statuses the deployment page showed (it updates itself) until a final one."""
    seen: set[str] = set()

    def final() -> str | None:
        status = page.locator(".deployment-status").get_attribute("data-status")
        if status:
            seen.add(status)
        return status if status in ("Success", "Failure", "RolledBack") else None

    return seen, wait_until(final, what="a final deployment status")


def test_the_seed_story_in_the_console(page: Any, cloud: RunningCloud, tmp_path: Path) -> None:
    login(page, cloud, "#/groups")

    # a group
    page.get_by_role("heading", name="Groups").wait_for()
    create = page.get_by_role("form", name="Create a group")
    create.get_by_label("Name").fill(GROUP)
    create.get_by_label("Description").fill("the seed's factory")
    create.get_by_role("button", name="Create group").click()
    page.get_by_role("heading", name=f"Group {GROUP}").wait_for()
    assert cloud.ok("GET", f"/api/v1/groups/{GROUP}")["description"] == "the seed's factory"

    # its core, run from the bundle the console offers
    core_form = page.get_by_role("form", name="Create the core")
    core_form.get_by_label("Core name").fill(CORE)
    core_form.get_by_role("button", name="Create core").click()
    with page.expect_download() as download:
        page.get_by_role("link", name=f"Download {CORE}.tar.gz").click()
    bundle = tmp_path / f"{CORE}.tar.gz"
    download.value.save_as(bundle)
    cloud.start_core(bundle, tmp_path / "core")

    # a thing, run from the certificate bundle the console offers
    thing_form = page.get_by_role("form", name="Create a thing in this group")
    thing_form.get_by_label("Thing name").fill(THING)
    thing_form.get_by_role("button", name="Create thing").click()
    with page.expect_download() as download:
        page.get_by_role("link", name=f"Download {THING}-certs.zip").click()
    certs = tmp_path / "certs.zip"
    download.value.save_as(certs)
    with zipfile.ZipFile(certs) as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == sorted(
            [f"{THING}.cert.pem", f"{THING}.key", "root-ca.pem"]
        )
        archive.extractall(tmp_path / "thing")
    cert = tmp_path / "thing" / f"{THING}.cert.pem"
    assert cert.read_text().startswith("-----BEGIN CERTIFICATE-----")
    cloud.start_thing(
        THING, cert, tmp_path / "thing" / f"{THING}.key", tmp_path / "state", f"sensors/{THING}"
    )

    # route the thing's readings to the cloud; the picture shows source -> topic -> target
    subscribe = page.get_by_role("form", name="Add a subscription")
    subscribe.get_by_label("Source").fill(f"thing:{THING}")
    subscribe.get_by_label("Topic filter").fill("sensors/#")
    subscribe.get_by_label("Target").fill("cloud")
    subscribe.get_by_role("button", name="Add subscription").click()
    picture = page.locator("svg.routing")
    picture.locator(".node-topic", has_text="sensors/#").wait_for()
    assert picture.locator(".node-thing").count() == 1
    assert picture.locator(".node-cloud").count() == 1
    assert picture.locator("path.edge").count() == 2
    screenshots(page, "group")

    # deploy and watch the status change on the deployment page
    wait_until(
        lambda: cloud.ok("GET", f"/api/v1/cores/{CORE}")["endpoints"],
        what="the core to report its address",
    )
    page.get_by_role("button", name="Deploy", exact=True).click()
    page.get_by_role("heading", name=re.compile(r"^Deployment d-")).wait_for()
    seen, final = watch_deployment(page)
    assert final == "Success", page.locator("main").inner_text()
    events = page.locator(".timeline .event .badge").all_inner_texts()
    assert events[0] == "Pending" and events[-1] == "Success" and len(events) >= 2
    assert seen, "the page showed no status"
    screenshots(page, "deployment")

    # history, timeline and the roll back / redeploy buttons
    page.get_by_role("link", name="History of this group").click()
    page.locator(".strip-item").first.wait_for()
    assert page.locator(".strip-item").count() == 1
    assert page.get_by_role("button", name="Redeploy latest").is_enabled()
    assert page.get_by_role("button", name="Roll back").is_disabled()
    page.locator(".strip-item .badge-live", has_text="running on the core").wait_for()
    screenshots(page, "deployments")

    # the overview: the core is online, with its heartbeat and the thing connected
    nav(page, "Overview")
    row = page.get_by_role("region", name="Cores", exact=True).locator("tr", has_text=CORE)
    row.locator(".badge-online").wait_for()
    wait_until(
        lambda: row.locator("td[data-label='Devices']").inner_text() == "1",
        what="the heartbeat to count the thing",
    )
    assert row.locator("td[data-label='Version']").inner_text() not in ("", "–")
    assert row.locator("td[data-label='Spool depth']").inner_text().isdigit()
    assert row.locator("td[data-label='Connectors']").inner_text() == "none"  # none deployed
    assert int(page.locator(".card-online .card-value").inner_text()) >= 1
    screenshots(page, "overview")

    # the overview refreshes itself (heartbeats) without losing the keyboard focus
    link = row.get_by_role("link", name=GROUP)
    link.focus()
    link.evaluate("node => node.classList.add('before-refresh')")
    wait_until(
        lambda: page.locator("a.before-refresh").count() == 0, what="the overview to refresh"
    )
    focused = page.evaluate(
        "[document.activeElement.textContent, document.activeElement.closest('td')?.dataset.label]"
    )
    assert focused == [GROUP, "Group"]

    # live messages arrive
    nav(page, "Live")
    page.get_by_label("Topic filter", exact=True).fill("sensors/#")
    page.get_by_role("button", name="Subscribe", exact=True).click()
    page.locator("#live-state .badge-live").wait_for()
    first = page.locator("#live-messages .message").first
    first.wait_for()
    assert first.locator(".topic").inner_text() == f"sensors/{THING}"
    assert '"temperature"' in first.locator(".payload").inner_text()
    wait_until(lambda: int(page.locator("#live-received").inner_text()) >= 3, what="3 messages")
    screenshots(page, "live")

    # pause holds new messages back, clear empties the view, copy gives JSON lines
    page.get_by_role("button", name="Pause").click()
    shown = int(page.locator("#live-shown").inner_text())
    wait_until(lambda: int(page.locator("#live-waiting").inner_text()) >= 2, what="waiting")
    assert int(page.locator("#live-shown").inner_text()) == shown
    page.get_by_role("button", name="Resume").click()
    wait_until(lambda: int(page.locator("#live-shown").inner_text()) > shown, what="resume")
    assert page.locator("#live-waiting").inner_text() == "0"
    ids = "els => els.map(e => e.dataset.id)"
    before = set(page.eval_on_selector_all("#live-messages .message", ids))
    assert before
    page.get_by_role("button", name="Clear").click()
    # every row shown before is gone (a message arriving after the click may already be drawn)
    assert before.isdisjoint(page.eval_on_selector_all("#live-messages .message", ids))
    wait_until(lambda: page.locator("#live-messages .message").count() >= 2, what="new rows")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=cloud.url)
    page.get_by_role("button", name="Copy").click()
    page.locator("#status-line", has_text="Copied").wait_for()
    copied = [
        json.loads(line) for line in page.evaluate("navigator.clipboard.readText()").split("\n")
    ]
    assert len(copied) >= 2 and {m["topic"] for m in copied} == {f"sensors/{THING}"}
    assert all(json.loads(m["payload"])["thing"] == THING for m in copied)

    # a chart of the thing's temperature with points
    nav(page, "Charts")
    page.get_by_label("Topic filter", exact=True).fill(f"sensors/{THING}")
    page.get_by_label("Fields", exact=True).fill("temperature, cpu_temperature")
    page.get_by_role("button", name="Show chart").click()
    chart = page.locator("svg.chart")
    chart.wait_for()
    assert chart.locator(".series").count() == 2
    assert chart.locator("circle.point").count() >= 6
    assert "points from" in page.locator("#chart-summary").inner_text()
    screenshots(page, "charts")

    # things and certificates
    nav(page, "Things")
    things = page.get_by_role("region", name="Things", exact=True)
    things.locator("tr", has_text=THING).wait_for()
    certificates = page.get_by_role("region", name="Certificates", exact=True)
    assert certificates.locator("tr", has_text=THING).locator(".badge-active").count() == 1
    assert "days)" in certificates.locator("tr", has_text=THING).first.inner_text()
    screenshots(page, "things")

    # a function, deployed from the console: the status changes again
    page.goto(f"{cloud.url}/console/#/groups/{GROUP}")
    function_form = page.get_by_role("form", name="Create a function")
    function_form.get_by_label("Name").fill("temp-correct")
    function_form.get_by_label("Handler").fill("temp_correct.handler")
    function_form.get_by_label("Code (zip)").set_input_files(str(function_zip(tmp_path)))
    function_form.get_by_label("Environment").fill("FACTOR=5")
    function_form.get_by_role("button", name="Create function").click()
    page.get_by_role("region", name=f"Functions of {GROUP}").locator(
        "tr", has_text="temp-correct"
    ).wait_for()
    made = cloud.ok("GET", f"/api/v1/groups/{GROUP}/functions/temp-correct")
    assert made["environment"] == {"FACTOR": "5"} and made["pinned"] is True
    page.get_by_role("button", name="Edit temp-correct").click()
    edit = page.get_by_role("form", name="Edit function temp-correct")
    assert edit.get_by_label("Handler").input_value() == "temp_correct.handler"
    edit.get_by_label("Memory (MB)").fill("256")
    edit.get_by_role("button", name="Save new version").click()
    page.get_by_role("form", name="Create a function").wait_for()
    edited = cloud.ok("GET", f"/api/v1/groups/{GROUP}/functions/temp-correct")
    assert (edited["version"], edited["memory_mb"], edited["environment"]) == (
        2,
        256,
        {"FACTOR": "5"},
    )
    for source, topic, target in (
        (f"thing:{THING}", "sensors/#", "function:temp-correct"),
        ("function:temp-correct", "corrected/#", "cloud"),
    ):
        subscribe = page.get_by_role("form", name="Add a subscription")
        subscribe.get_by_label("Source").fill(source)
        subscribe.get_by_label("Topic filter").fill(topic)
        subscribe.get_by_label("Target").fill(target)
        subscribe.get_by_role("button", name="Add subscription").click()
        page.get_by_role("region", name=f"Subscriptions of {GROUP}").locator(
            "tr", has_text=topic
        ).filter(has_text=target).wait_for()
    assert page.locator("svg.routing .node-function").count() == 2
    screenshots(page, "group-with-function")
    page.get_by_role("button", name="Deploy", exact=True).click()
    page.get_by_role("heading", name=re.compile(r"^Deployment d-")).wait_for()
    _, final = watch_deployment(page)
    events = page.locator(".timeline .event .badge").all_inner_texts()
    assert final == "Success", page.locator("main").inner_text()
    assert events[0] == "Pending" and events[-1] == "Success" and len(events) >= 2
    screenshots(page, "deployment-function")

    # the function's state arrives with the heartbeat; corrected readings reach the cloud
    nav(page, "Overview")
    page.locator("tr", has_text=CORE).locator("td[data-label='Functions']").get_by_text(
        "temp-correct"
    ).wait_for()
    nav(page, "Charts")
    page.get_by_label("Topic filter", exact=True).fill(f"corrected/{THING}")
    page.get_by_label("Fields", exact=True).fill("raw_temperature, temperature")
    page.get_by_label("Time window").select_option("300")

    def two_series() -> bool:
        page.get_by_role("button", name="Show chart").click()
        page.locator("#chart-summary, #chart-empty").first.wait_for()
        return page.locator("svg.chart .series").count() == 2

    wait_until(two_series, what="raw and corrected temperature")
    raw = page.locator("svg.chart .series-0")
    corrected = page.locator("svg.chart .series-1")
    assert raw.get_attribute("data-label") == f"corrected/{THING} · raw_temperature"
    assert corrected.get_attribute("data-label") == f"corrected/{THING} · temperature"
    assert raw.locator("circle.point").count() >= 1
    assert corrected.locator("circle.point").count() >= 1
    screenshots(page, "charts-corrected")

    # a broken version fails on the core: the page shows why; roll back to the good one
    page.goto(f"{cloud.url}/console/#/groups/{GROUP}")
    page.get_by_role("button", name="Edit temp-correct").click()
    edit = page.get_by_role("form", name="Edit function temp-correct")
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("temp_correct.py", "raise RuntimeError('broken on purpose')\n")
    edit.get_by_label("New code (zip, optional)").set_input_files(str(broken))
    edit.get_by_role("button", name="Save new version").click()
    page.get_by_role("form", name="Create a function").wait_for()
    assert cloud.ok("GET", f"/api/v1/groups/{GROUP}/functions/temp-correct")["version"] == 3
    page.get_by_role("button", name="Deploy", exact=True).click()
    page.get_by_role("heading", name=re.compile(r"^Deployment d-")).wait_for()
    _, final = watch_deployment(page)
    assert final in ("Failure", "RolledBack")
    error = page.get_by_role("alert").filter(has_text="Error detail")
    assert "temp-correct" in error.inner_text()
    screenshots(page, "deployment-failed")
    page.get_by_role("link", name="History of this group").click()
    page.locator(".strip-item").nth(2).wait_for()
    page.get_by_role("button", name=re.compile(r"^Roll back to d-")).click()
    page.get_by_role("heading", name=re.compile(r"^Deployment d-")).wait_for()
    _, final = watch_deployment(page)
    assert final == "Success"
    assert page.locator(".facts dd", has_text="Redeployment").count() == 1
    nav(page, "Groups")
    page.get_by_role("region", name="Groups").locator("tr", has_text=GROUP).wait_for()
    screenshots(page, "groups")
    cloud.processes.stop("thing")
    cloud.processes.stop("core")


def test_keyboard_only(page: Any, cloud: RunningCloud) -> None:
    """Log in, skip to the content, move between pages and create a group with keys only."""
    page.goto(f"{cloud.url}/console/")
    token = page.get_by_label("API token")
    token.wait_for()
    assert page.evaluate("document.activeElement.id") == token.get_attribute("id")
    page.keyboard.type(cloud.token)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Overview").wait_for()

    page.reload()
    page.get_by_role("heading", name="Overview").wait_for()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    focused: list[str] = []
    for _ in range(3):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.textContent"))
    assert focused == ["Hedgerow", "Overview", "Groups"]
    page.keyboard.press("Enter")
    heading = page.get_by_role("heading", name="Groups", exact=True)
    heading.wait_for()
    # the new page's heading takes the focus, so the next Tab continues from there
    wait_until(lambda: page.evaluate("document.activeElement.tagName") == "H1", what="focus")

    name = page.get_by_role("form", name="Create a group").get_by_label("Name")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == name.get_attribute("id"):
            break
    else:
        raise AssertionError("Tab never reached the group name field")
    page.keyboard.type("keyboard-1")
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Group keyboard-1").wait_for()
    assert cloud.ok("GET", "/api/v1/groups/keyboard-1")["name"] == "keyboard-1"
