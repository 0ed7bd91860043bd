"""The cloud's side of shadow sync, on SQLite and PostgreSQL: a core speaking the contract
over the real MQTT endpoint (mutual TLS), the API reading and changing the cloud's copy,
the group setting reaching the deployment document."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from hedgerow.client import Client
from hedgerow.contract.shadow import ShadowState, ShadowUpdate

from .conftest import Cloud
from .test_core_link import WAIT, core_client

SHADOW = "/api/v1/things/lamp/shadow"


async def next_state(core: Client) -> ShadowState:
    async with asyncio.timeout(WAIT):
        message = await core.get_message()
    assert message.topic == "$hedgerow/cores/pi-1/shadow"
    return ShadowState.from_json(message.payload)


async def patch(cloud: Cloud, body: Any) -> Any:
    return await cloud.api.patch(SHADOW, json=body)


async def test_shadow_sync_with_a_core_and_the_api(cloud: Cloud, tmp_path: Path) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "factory-1"})
    cert, key = await cloud.core("pi-1", "factory-1", tmp_path)
    for thing in ("lamp", "fan"):
        await cloud.ok("POST", "/api/v1/things", json={"name": thing, "groups": ["factory-1"]})
    group = await cloud.ok(
        "PATCH", "/api/v1/groups/factory-1", json={"settings": {"sync_shadows": ["lamp"]}}
    )
    assert group["settings"] == {"open_broker": False, "sync_shadows": ["lamp"]}
    bad = await cloud.api.patch(
        "/api/v1/groups/factory-1", json={"settings": {"sync_shadows": "lamp"}}
    )
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "settings.sync_shadows"

    deployment = await cloud.ok("POST", "/api/v1/groups/factory-1/deployments", json={})
    async with cloud.device_client(cert, key) as device:
        signed = (await device.get(f"/core/v1/deployments/{deployment['deployment_id']}")).json()
    assert json.loads(signed["document"])["settings"]["sync_shadows"] == ["lamp"]

    async with core_client(cloud, cert, key) as core:
        await core.subscribe("$hedgerow/cores/pi-1/shadow", qos=1)
        # the core connects and sends its reported: the cloud's copy takes it, answers
        up = ShadowUpdate("lamp", 1, 0, None, {"led": "off", "t": 20})
        await core.publish("$hedgerow/cores/pi-1/shadow-update", up.to_json(), qos=1)
        state = await next_state(core)
        assert (state.version, state.reported, state.seq) == (1, {"led": "off", "t": 20}, 1)

        # the API changes desired: the core hears it with the version and the client token
        shown = await cloud.ok(
            "PATCH", SHADOW, json={"state": {"desired": {"led": "on"}}, "clientToken": "c-1"}
        )
        assert shown["version"] == 2 and shown["state"]["delta"] == {"led": "on"}
        assert shown["synced_by"] == ["pi-1"]
        state = await next_state(core)
        assert (state.version, state.desired, state.client_token) == (2, {"led": "on"}, "c-1")

        # the core changes desired having seen only version 1: a conflict, the cloud's wins
        late = ShadowUpdate("lamp", 2, 1, {"led": "red"}, {"led": "on", "t": 21})
        await core.publish("$hedgerow/cores/pi-1/shadow-update", late.to_json(), qos=1)
        state = await next_state(core)
        assert state.rejected == ("desired",) and state.desired == {"led": "on"}
        assert state.reported == {"led": "on", "t": 21} and state.version == 3 and state.seq == 2

        # having seen version 3, its desired change is taken
        seen = ShadowUpdate("lamp", 3, 3, {"led": "blue"})
        await core.publish("$hedgerow/cores/pi-1/shadow-update", seen.to_json(), qos=1)
        state = await next_state(core)
        assert not state.rejected and state.desired == {"led": "blue"} and state.version == 4

        # a thing the group does not sync: the cloud ignores the core's update
        other = ShadowUpdate("fan", 4, 0, None, {"rpm": 1})
        await core.publish("$hedgerow/cores/pi-1/shadow-update", other.to_json(), qos=1)
        fan = await cloud.ok("GET", "/api/v1/things/fan/shadow")
        assert fan["version"] == 0 and fan["synced_by"] == []

    shown = await cloud.ok("GET", SHADOW)
    assert shown["state"]["desired"] == {"led": "blue"} and shown["version"] == 4
    # version-checked API updates, AWS merges, and refused bodies naming the field
    stale = await patch(cloud, {"state": {"desired": {"led": "x"}}, "version": 3})
    assert stale.status_code == 409 and "version 4" in stale.json()["error"]["message"]
    merged = await cloud.ok(
        "PATCH", SHADOW, json={"state": {"desired": {"led": None, "mode": "eco"}}, "version": 4}
    )
    assert merged["state"]["desired"] == {"mode": "eco"} and merged["version"] == 5
    cleared = await cloud.ok("PATCH", SHADOW, json={"state": {"desired": None}})
    assert cleared["state"]["desired"] == {} and cleared["version"] == 6
    for body, field in (
        ({"state": {"wanted": {}}}, "state"),
        ({"state": {"desired": [1]}}, "state.desired"),
        ({"state": {"desired": {}}, "version": "3"}, "version"),
        ({}, "state"),
    ):
        refused = await patch(cloud, body)
        assert refused.status_code in (400, 422), refused.text
        assert refused.json()["error"]["field"] == field, refused.text
    missing = await cloud.api.get("/api/v1/things/nobody/shadow")
    assert missing.status_code == 404
