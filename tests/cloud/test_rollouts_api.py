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
    # pollers and lists ask for the summary alone: a fleet's per-group list is long
    summary = await cloud.ok("GET", f"/api/v1/rollouts/{started['id']}?targets=false")
    assert "targets" not in summary and summary["total"] == 1 and summary["state"] == "paused"
    listed = await cloud.ok("GET", "/api/v1/rollouts", params={"targets": "false"})
    assert listed["count"] == 1 and "targets" not in listed["items"][0]
    full = await cloud.ok("GET", "/api/v1/rollouts")
    assert full["items"][0]["targets"][0]["group"] == "g"
    bad_flag = await cloud.api.get("/api/v1/rollouts", params={"targets": "maybe"})
    assert bad_flag.status_code == 400 and error_of(bad_flag)["field"] == "targets"
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


async def test_fleet_drift_lists_the_cores_off_their_groups_current_deployment(
    cloud: Cloud,
) -> None:
    """``GET /api/v1/drift``: what ``/groups/{g}/drift`` says, for every drifting core at
    once (the console's fleet page): an offline deployment made here (adoptable), one the
    cloud never made (replace only); a core on its current deployment and a silent one are
    left out."""
    from hedgerow.contract.heartbeat import Heartbeat

    latest: dict[str, str] = {}
    for name in ("dr-on", "dr-offline", "dr-foreign", "dr-silent"):
        await cloud.ok("POST", "/api/v1/groups", json={"name": name})
        await cloud.ok("POST", "/api/v1/cores", json={"name": f"{name}-core", "group": name})
        made = await cloud.ok("POST", f"/api/v1/groups/{name}/deployments", json={})
        latest[name] = made["deployment_id"]
    exported = await cloud.ok("POST", "/api/v1/groups/dr-offline/deployments/export")
    offline_id = exported["deployment"]["deployment_id"]

    async def beat(core: str, deployment: str) -> None:
        payload = Heartbeat(deployment=deployment, health="healthy").to_json()
        await cloud.server.services.identities.record_heartbeat(core, payload)

    await beat("dr-on-core", latest["dr-on"])
    await beat("dr-offline-core", offline_id)
    await beat("dr-foreign-core", "made-elsewhere")
    found = await cloud.ok("GET", "/api/v1/drift")
    assert found["count"] == 2
    assert found["items"] == [
        {"group": "dr-foreign", "core": "dr-foreign-core", "running": "made-elsewhere",
         "latest": latest["dr-foreign"], "drift": True, "running_kind": None,
         "signed_here": False},
        {"group": "dr-offline", "core": "dr-offline-core", "running": offline_id,
         "latest": latest["dr-offline"], "drift": True, "running_kind": "OfflineDeployment",
         "signed_here": True},
    ]  # fmt: skip
    for item in found["items"]:  # the same as each group's own view
        assert item == await cloud.ok("GET", f"/api/v1/groups/{item['group']}/drift")

    await cloud.ok("POST", "/api/v1/groups/dr-offline/drift/adopt")
    replaced = await cloud.ok("POST", "/api/v1/groups/dr-foreign/drift/replace")
    still = await cloud.ok("GET", "/api/v1/drift")  # until the core reports the replacement
    assert [(d["group"], d["latest"]) for d in still["items"]] == [
        ("dr-foreign", replaced["deployment_id"])
    ]
    await beat("dr-foreign-core", replaced["deployment_id"])
    assert await cloud.ok("GET", "/api/v1/drift") == {"items": [], "count": 0}
