"""Rollouts, labels, deadlines and drift over the REST API of a running cloud: bodies
refused by field, and the views the CLI and the console read."""

from __future__ import annotations

from typing import Any

from .conftest import Cloud


def error_of(response: Any) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


async def test_bad_rollout_and_label_bodies_name_their_field(cloud: Cloud) -> None:
    bad_label = await cloud.api.post(
        "/api/v1/groups", json={"name": "g", "labels": {"site": "berlin west"}}
    )
    assert bad_label.status_code == 400 and error_of(bad_label)["field"] == "labels.site"
    await cloud.ok("POST", "/api/v1/groups", json={"name": "g", "labels": {"site": "berlin"}})
    await cloud.ok("POST", "/api/v1/cores", json={"name": "gw", "group": "g"})
    for body, field, status in (
        ({"groups": ["g"], "waves": ["10 percent"]}, "waves", 400),
        ({"groups": ["g"], "max_failures": "-2"}, "max_failures", 400),
        ({"groups": ["g"], "soak_s": "long"}, "soak_s", 400),
        ({"groups": ["g"], "deadline_s": 0}, "deadline_s", 400),
        ({"groups": "g"}, "groups", 400),
        ({"labels": {"site": "nowhere"}}, "groups", 400),
    ):
        refused = await cloud.api.post("/api/v1/rollouts", json=body)
        assert refused.status_code in (status, 422), (body, refused.text)
        assert error_of(refused)["field"] == field, (body, refused.text)
    assert (await cloud.ok("GET", "/api/v1/rollouts"))["count"] == 0
    started = await cloud.ok(
        "POST", "/api/v1/rollouts", json={"labels": {"site": "berlin"}, "deadline_s": 30}
    )
    assert started["state"] == "running" and started["total"] == 1
    assert started["targets"][0]["state"] == "deploying" and started["targets"][0]["deployment"]
    action = await cloud.api.post(f"/api/v1/rollouts/{started['id']}/actions", json={"action": "x"})
    assert action.status_code in (400, 422) and error_of(action)["field"] == "action"
    paused = await cloud.ok(
        "POST", f"/api/v1/rollouts/{started['id']}/actions", json={"action": "pause"}
    )
    assert paused["state"] == "paused"
    again = await cloud.api.post(
        f"/api/v1/rollouts/{started['id']}/actions", json={"action": "pause"}
    )
    assert again.status_code == 409 and "cannot pause" in error_of(again)["message"]
    listed = await cloud.ok("GET", "/api/v1/groups", params={"label": "site=berlin"})
    assert [g["name"] for g in listed["items"]] == ["g"] and listed["items"][0]["labels"]
    bad_deadline = await cloud.api.post("/api/v1/groups/g/deployments", json={"deadline_s": -1})
    assert error_of(bad_deadline)["field"] == "deadline_s"
    drift = await cloud.ok("GET", "/api/v1/groups/g/drift")
    assert drift["running"] is None and not drift["drift"]
    no_report = await cloud.api.post("/api/v1/groups/g/drift/adopt")
    assert no_report.status_code == 409 and "has not reported" in error_of(no_report)["message"]
