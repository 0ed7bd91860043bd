"""The console as an operator's tool, in chromium, with a real core and a paho device.

A thing's page shows its shadow, desired vs reported (reported changes appear live), and a
desired state edited there reaches the device as a delta through the core; its
"send a message" panel publishes on a route from the cloud, and the device gets it. A
deployment's page shows what it contains and its difference from the previous deployment
and from what the core runs. A dashboard of charts saved for a group is still there after
a reload, drawing the device's readings.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ShadowDevice

from .conftest import RunningCloud, login, screenshots, wait_until

pytestmark = pytest.mark.browser

GROUP, CORE, THING = "op-1", "op-core", "op-lamp"
COMMANDS = f"commands/{THING}/#"


def deploy(cloud: RunningCloud) -> str:
    made = cloud.ok("POST", f"/api/v1/groups/{GROUP}/deployments", json={})
    deployment_id = str(made["deployment_id"])

    def final() -> str | None:
        status = cloud.ok("GET", f"/api/v1/deployments/{deployment_id}")["status"]
        return status if status in ("Success", "Failure", "RolledBack") else None

    assert wait_until(final, what=f"deployment {deployment_id}") == "Success"
    return deployment_id


@pytest.fixture
def lamp(cloud: RunningCloud, tmp_path: Path) -> Iterator[tuple[ShadowDevice, list[str]]]:
    """The group (syncing the lamp's shadow), its core running, two deployments, the device."""
    cloud.ok("POST", "/api/v1/groups", json={"name": GROUP,
                                             "settings": {"sync_shadows": [THING]}})  # fmt: skip
    thing = cloud.ok("POST", "/api/v1/things", json={"name": THING, "groups": [GROUP]})
    cert, key = tmp_path / "lamp.cert.pem", tmp_path / "lamp.key"
    cert.write_text(thing["certificate"])
    key.write_text(thing["private_key"])
    core = cloud.ok("POST", "/api/v1/cores", json={"name": CORE, "group": GROUP})
    bundle = tmp_path / f"{CORE}.tar.gz"
    bundle.write_bytes(base64.b64decode(core["bundle"]))
    port = cloud.start_core(bundle, tmp_path / "core")
    routes = [
        {"source": f"thing:{THING}", "topic": "sensors/#", "target": "cloud"},
        {"source": "cloud", "topic": COMMANDS, "target": f"thing:{THING}"},
    ]
    cloud.ok("POST", f"/api/v1/groups/{GROUP}/subscriptions", json=routes[0])
    first = deploy(cloud)
    cloud.ok("POST", f"/api/v1/groups/{GROUP}/subscriptions", json=routes[1])
    second = deploy(cloud)
    ca = tmp_path / "group-ca.pem"
    ca.write_text(cloud.ok("GET", f"/api/v1/groups/{GROUP}/cas")["items"][0]["certificate"])
    device = ShadowDevice(THING, cert, key, "127.0.0.1", port, ca, extra=(COMMANDS,))
    device.start()
    try:
        yield device, [first, second]
    finally:
        device.stop()
        cloud.processes.stop("core")


def test_shadow_message_deployment_diff_and_dashboard(
    page: Any, cloud: RunningCloud, lamp: tuple[ShadowDevice, list[str]]
) -> None:
    device, (first, second) = lamp
    device.request("update", {"state": {"reported": {"led": "off", "temp": 21}}})
    for n in range(3):
        device.client.publish(
            "sensors/op-lamp", f'{{"temperature": {20 + n}}}', 1
        ).wait_for_publish(5)

    # the thing's shadow: reported arrives live; desired edited here reaches the device
    login(page, cloud, f"#/things/{THING}")
    shadow = page.get_by_role("region", name=f"Shadow of {THING}: desired and reported")
    wait_until(lambda: '"off"' in shadow.inner_text(), what="the reported state on the page")
    assert f"Synced with core {CORE}" in page.locator(".shadow-facts").inner_text()
    editor = page.get_by_label("Desired state (JSON object)")
    editor.fill("{not json")
    page.get_by_role("button", name="Save desired state").click()
    assert "not JSON" in page.locator(".field-error:visible").first.inner_text()
    editor.fill('{"led": "on"}')
    started = time.monotonic()
    page.get_by_role("button", name="Save desired state").click()
    delta = device.delta(10, {"led": "on"})
    reached_s = time.monotonic() - started
    assert delta["state"] == {"led": "on"}
    wait_until(lambda: "pending" in shadow.inner_text(), what="the delta shown as pending")
    device.request("update", {"state": {"reported": {"led": "on"}}})
    wait_until(lambda: "pending" not in shadow.inner_text(), what="desired and reported in sync")
    screenshots(page, "operator-thing")

    # send a message to the device on the route from the cloud
    panel = page.get_by_role("form", name=f"Send a message to {THING}")
    topic = panel.get_by_label("Topic")
    assert topic.input_value() == f"commands/{THING}"
    topic.fill("elsewhere/x")
    panel.get_by_role("button", name="Send message").click()
    assert "no route from the cloud" in panel.locator(".field-error:visible").inner_text()
    topic.fill(f"commands/{THING}/blink")
    panel.get_by_label("Payload").fill('{"times": 3}')
    panel.get_by_role("button", name="Send message").click()
    assert device.heard(f"commands/{THING}/blink", 10) == {"times": 3}

    # what a deployment contains, and its differences
    page.goto(f"{cloud.url}/console/#/deployments/{second}")
    previous = page.locator("[data-diff=previous]")
    previous.wait_for()
    assert f"+ route cloud {COMMANDS} → thing:{THING}" in previous.inner_text()
    running = page.locator("[data-diff=running]")
    wait_until(lambda: "The core runs this deployment" in running.inner_text(), what="running")
    assert COMMANDS in page.get_by_role("region", name="Subscriptions").inner_text()
    page.goto(f"{cloud.url}/console/#/deployments/{first}")
    back = page.locator("[data-diff=running]")
    back.wait_for()
    assert f"- route cloud {COMMANDS} → thing:{THING}" in back.inner_text()
    assert "first deployment" in page.locator(".deployment-contents").inner_text()

    # a dashboard saved for the group, drawn again after a reload
    page.goto(f"{cloud.url}/console/#/dashboards?group={GROUP}")
    add = page.get_by_role("form", name="Add a chart")
    add.get_by_label("Dashboard").fill("climate")
    add.get_by_label("Title").fill("Lamp temperature")
    add.get_by_label("Topic filter").fill("sensors/#")
    add.get_by_label("Fields").fill("temperature")
    add.get_by_role("button", name="Add chart").click()
    chart = page.locator('[data-chart="Lamp temperature"]')
    chart.wait_for()
    page.reload()
    chart.wait_for()
    assert int(chart.get_attribute("data-points") or 0) == 3
    saved = cloud.ok("GET", f"/api/v1/groups/{GROUP}/dashboards")["items"]
    assert [d["name"] for d in saved] == ["climate"]
    print(f"desired edited in the console reached the device in {reached_s:.2f} s")
    assert reached_s < 2.0
