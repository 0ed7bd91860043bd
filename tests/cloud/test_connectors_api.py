"""Industrial connectors in the cloud: added, listed, updated, removed; a bad config refused
with the field named; carried (and frozen) in deployment documents."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from .conftest import Cloud

METER: dict[str, Any] = {
    "host": "10.0.0.5",
    "tags": [{"name": "power", "table": "holding_register", "address": 0, "type": "float32"}],
}


def error_of(response: Any) -> str:
    return str(response.json()["error"]["message"])


async def document(cloud: Cloud, deployment_id: str) -> dict[str, Any]:
    _, text, _ = await asyncio.to_thread(
        cloud.server.services.repository.deployment_document, deployment_id
    )
    return dict(json.loads(text))


async def test_connectors_crud_validation_and_deployment(cloud: Cloud) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "g"})
    await cloud.ok("POST", "/api/v1/cores", json={"name": "pi-1", "group": "g"})
    base = "/api/v1/groups/g/connectors"

    bad = dict(METER, tags=[dict(METER["tags"][0], type="float128")])
    refused = await cloud.api.post(
        base, json={"kind": "modbus-tcp", "name": "meter", "config": bad}
    )
    assert refused.status_code == 400
    assert error_of(refused).startswith("config.tags[0].type: 'float128' is not one of")
    refused = await cloud.api.post(base, json={"kind": "bacnet", "name": "m", "config": {}})
    assert refused.status_code == 400 and "unknown connector kind" in error_of(refused)
    refused = await cloud.api.post(base, json={"kind": "opcua", "name": "m", "config": "x"})
    assert refused.status_code == 422 and "config must be an object" in error_of(refused)
    refused = await cloud.api.post(base, json={"kind": "opcua", "name": "m", "config": {}, "x": 1})
    assert refused.status_code == 400 and "unknown fields: x" in error_of(refused)
    assert (await cloud.ok("GET", base))["items"] == []

    added = await cloud.ok(
        "POST", base, json={"kind": "modbus-tcp", "name": "meter", "config": METER}
    )
    assert added == {
        "group": "g",
        "kind": "modbus-tcp",
        "name": "meter",
        "version": 1,
        "config": METER,
    }
    clash = await cloud.api.post(
        base, json={"kind": "modbus-tcp", "name": "meter", "config": METER}
    )
    assert clash.status_code == 409
    machine = {
        "url": "opc.tcp://10.0.0.9:4840",
        "nodes": [{"name": "speed", "node_id": "ns=2;s=Speed"}],
    }
    await cloud.ok("POST", base, json={"kind": "opcua", "name": "machine", "config": machine})
    assert [c["name"] for c in (await cloud.ok("GET", base))["items"]] == ["machine", "meter"]
    await cloud.ok(
        "POST",
        "/api/v1/groups/g/subscriptions",
        json={"source": "connector:meter", "topic": "connectors/meter/data/#", "target": "cloud"},
    )

    first = await cloud.ok("POST", "/api/v1/groups/g/deployments", json={})
    doc = await document(cloud, first["deployment_id"])
    assert [c["name"] for c in doc["connectors"]] == ["machine", "meter"]
    assert doc["connectors"][1] == {
        "kind": "modbus-tcp",
        "name": "meter",
        "version": 1,
        "config": METER,
    }
    assert {
        "source": "connector:meter",
        "topic": "connectors/meter/data/#",
        "target": "cloud",
    } in doc["subscriptions"]

    wrong = await cloud.api.put(f"{base}/meter", json={"config": dict(METER, port=0)})
    assert wrong.status_code == 400 and error_of(wrong).startswith("config.port:")
    updated = await cloud.ok("PUT", f"{base}/meter", json={"config": dict(METER, port=5020)})
    assert updated["config"]["port"] == 5020
    assert (await cloud.ok("GET", f"{base}/meter"))["config"]["port"] == 5020
    await cloud.ok("DELETE", f"{base}/machine")
    assert (await cloud.api.get(f"{base}/machine")).status_code == 404
    assert (await cloud.api.delete(f"{base}/machine")).status_code == 404

    # the group update API does not take connectors in by the back door
    sneaky = await cloud.api.patch("/api/v1/groups/g", json={"settings": {"connectors": {}}})
    assert sneaky.status_code == 400
    # other settings leave the connectors alone
    await cloud.ok("PATCH", "/api/v1/groups/g", json={"settings": {"open_broker": True}})
    second = await cloud.ok("POST", "/api/v1/groups/g/deployments", json={})
    doc = await document(cloud, second["deployment_id"])
    assert [c["name"] for c in doc["connectors"]] == ["meter"]
    assert doc["connectors"][0]["config"]["port"] == 5020

    redeploy = await cloud.ok(
        "POST",
        "/api/v1/groups/g/deployments",
        json={"kind": "redeploy", "deployment_id": first["deployment_id"]},
    )
    frozen = await document(cloud, redeploy["deployment_id"])
    assert [c["name"] for c in frozen["connectors"]] == ["machine", "meter"], (
        "a redeployment freezes"
    )
    reset = await cloud.ok("POST", "/api/v1/groups/g/deployments", json={"kind": "reset"})
    assert "connectors" not in await document(cloud, reset["deployment_id"])
