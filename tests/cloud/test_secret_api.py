"""The secrets resource through real HTTP, on SQLite and on PostgreSQL: values go in and
never come out; a deployment carries them sealed to its core, and refuses a missing one."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from hedgerow import pki
from hedgerow.core.secrets import secret_aad

from .conftest import Cloud
from .test_api import error_of, upload


async def test_secret_lifecycle_and_sealed_delivery(cloud: Cloud, tmp_path: Path) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "g"})
    _, core_key_file = await cloud.core("pi-1", "g", tmp_path)
    core_key = pki.key_from_pem(core_key_file.read_bytes())
    base = "/api/v1/groups/g/secrets"
    created = await cloud.ok("POST", base, json={"name": "greengrass-key", "value": "v-one"})
    assert created["stages"] == ["AWSCURRENT"] and "value" not in created
    duplicate = await cloud.api.post(base, json={"name": "greengrass-key", "value": "x"})
    assert duplicate.status_code == 409 and "secret update" in error_of(duplicate)
    bad = await cloud.api.post(base, json={"name": "bad name", "value": "x"})
    assert bad.status_code == 400
    updated = await cloud.ok("PUT", f"{base}/greengrass-key", json={"value": "v-two"})
    assert updated["previous"] == created["version_id"]
    rotated = await cloud.ok("POST", f"{base}/greengrass-key/rotate", json={})  # generated
    assert rotated["previous"] == updated["version_id"]
    listed = await cloud.ok("GET", base)
    assert listed == {"items": [{"name": "greengrass-key"}], "count": 1}
    versions = await cloud.ok("GET", f"{base}/greengrass-key")
    assert [v["stages"] for v in versions["versions"]] == [["AWSCURRENT"], ["AWSPREVIOUS"]]
    assert "v-two" not in json.dumps(versions) and "v-one" not in json.dumps(versions)

    sha = await upload(cloud)
    await cloud.ok("POST", "/api/v1/groups/g/functions", json={
        "name": "reader", "handler": "temp_correct.handler", "artifact": sha,
        "secrets": ["greengrass-key", "greengrass-missing"]})  # fmt: skip
    refused = await cloud.api.post("/api/v1/groups/g/deployments", json={})
    assert refused.status_code == 409
    assert "secret create --group g greengrass-missing" in error_of(refused)
    await cloud.ok("PATCH", "/api/v1/groups/g/functions/reader",
                   json={"secrets": ["greengrass-key"]})  # fmt: skip
    deployment = await cloud.ok("POST", "/api/v1/groups/g/deployments", json={})
    document = json.loads(
        cloud.server.services.repository.deployment_document(deployment["deployment_id"])[1]
    )
    assert document["functions"][0]["secrets"] == ["greengrass-key"]
    entries = {e["version_id"]: e for e in document["secrets"]}
    assert set(entries) == {rotated["version_id"], updated["version_id"]}
    previous = entries[updated["version_id"]]
    assert previous["stages"] == ["AWSPREVIOUS"]
    aad = secret_aad("g", "pi-1", "greengrass-key", previous["version_id"])
    assert pki.open_sealed(core_key, base64.b64decode(previous["sealed"]), aad) == b"v-two"
    assert "v-two" not in json.dumps(document)

    await cloud.ok("DELETE", f"{base}/greengrass-key")
    assert (await cloud.ok("GET", base)) == {"items": [], "count": 0}
    gone = await cloud.api.get(f"{base}/greengrass-key")
    assert gone.status_code == 404
