"""The API behind the console's operator pages, on SQLite and PostgreSQL: what a deployment
contains and its difference from the previous one and from what the core runs; a group's
saved dashboards."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from .conftest import Cloud
from .test_core_link import core_client

GROUP = "/api/v1/groups/factory-1"


async def test_deployment_contents_and_differences(cloud: Cloud, tmp_path: Path) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "factory-1"})
    cert, key = await cloud.core("pi-1", "factory-1", tmp_path)
    await cloud.ok("POST", "/api/v1/things", json={"name": "lamp", "groups": ["factory-1"]})
    first = await cloud.ok("POST", f"{GROUP}/deployments", json={})
    alone = await cloud.ok("GET", f"/api/v1/deployments/{first['deployment_id']}/contents")
    assert alone["previous"] is None and alone["running"] is None
    assert alone["document"]["things"] == ["lamp"]

    route = {"source": "cloud", "topic": "commands/lamp/#", "target": "thing:lamp"}
    await cloud.ok("POST", f"{GROUP}/subscriptions", json=route)
    second = await cloud.ok("POST", f"{GROUP}/deployments", json={})
    # the core says it runs the first
    async with core_client(cloud, cert, key) as core:
        beat = {"schema": 1, "version": "test", "deployment": first["deployment_id"]}
        await core.publish("$hedgerow/cores/pi-1/heartbeat", json.dumps(beat).encode(), qos=0)
        deadline = time.monotonic() + 5
        while (await cloud.ok("GET", "/api/v1/cores/pi-1")).get("heartbeat") is None:
            assert time.monotonic() < deadline, "the heartbeat was not recorded"
            await asyncio.sleep(0.05)
    contents = await cloud.ok("GET", f"/api/v1/deployments/{second['deployment_id']}/contents")
    assert contents["document"]["subscriptions"] == [route]
    for against in ("previous", "running"):
        plan = contents[against]
        assert plan["running"] == first["deployment_id"], plan
        assert plan["lines"] == ["+ route cloud commands/lamp/# → thing:lamp"], plan
    missing = await cloud.api.get("/api/v1/deployments/d-nope/contents")
    assert missing.status_code == 404


async def test_saved_dashboards_of_a_group(cloud: Cloud) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "factory-1"})
    chart = {"title": "Temperature", "filter": "corrected/#", "fields": ["temperature"]}
    saved = await cloud.ok("PUT", f"{GROUP}/dashboards/climate", json={"charts": [chart]})
    assert saved["charts"] == [{**chart, "window_s": 3600}] and saved["name"] == "climate"
    chart2 = {**chart, "title": "Raw", "fields": ["raw_temperature"], "window_s": 600}
    await cloud.ok("PUT", f"{GROUP}/dashboards/climate", json={"charts": [chart, chart2]})
    listed = (await cloud.ok("GET", f"{GROUP}/dashboards"))["items"]
    assert [d["name"] for d in listed] == ["climate"] and len(listed[0]["charts"]) == 2
    for body, field in (
        ({"charts": [{**chart, "filter": "a/#/b"}]}, "charts[0].filter"),
        ({"charts": [{**chart, "fields": []}]}, "charts[0].fields"),
        ({"charts": [chart, {**chart, "window_s": 0}]}, "charts[1].window_s"),
        ({"charts": "no"}, "charts"),
    ):
        refused = await cloud.api.put(f"{GROUP}/dashboards/climate", json=body)
        assert refused.status_code == 400 and refused.json()["error"]["field"] == field, (
            refused.text
        )
    bad_name = await cloud.api.put(f"{GROUP}/dashboards/no%20spaces", json={"charts": []})
    assert bad_name.status_code == 400
    await cloud.ok("DELETE", f"{GROUP}/dashboards/climate")
    assert (await cloud.ok("GET", f"{GROUP}/dashboards"))["items"] == []
    gone = await cloud.api.delete(f"{GROUP}/dashboards/climate")
    assert gone.status_code == 404
