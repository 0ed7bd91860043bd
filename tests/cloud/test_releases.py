"""Releases for over-the-air updates of cores, through the REST API (SQLite and PostgreSQL):
made from uploaded wheels, signed, named by a deployment, refused where they would break."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import zipfile

from hedgerow import pki
from hedgerow.contract import DeploymentDocument
from hedgerow.contract.deployment import DeploymentStatus, StatusReport

from .conftest import Cloud
from .test_api import error_of, upload


def wheel(name: str, version: str) -> tuple[str, bytes]:
    """A minimal wheel: what the cloud reads of one is its METADATA."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            f"{name}-{version}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        )
    return f"{name}-{version}-py3-none-any.whl", buffer.getvalue()


async def uploaded(cloud: Cloud, name: str, version: str) -> dict[str, str]:
    filename, data = wheel(name, version)
    return {"filename": filename, "sha256": await upload(cloud, data)}


async def test_release_signed_named_by_a_deployment_and_protected(cloud: Cloud) -> None:
    dependency = await uploaded(cloud, "h11", "0.16.0")
    own = await uploaded(cloud, "hedgerow", "9.1.0")
    made = await cloud.ok("POST", "/api/v1/releases", json={"wheels": [dependency, own]})
    assert made["version"] == "9.1.0"
    assert [w["filename"] for w in made["wheels"]] == [own["filename"], dependency["filename"]]
    manifest = json.dumps({"version": "9.1.0", "wheels": made["wheels"]}, separators=(",", ":"))
    verify = pki.verify_key_from_pem((cloud.data / "pki" / "deploy-verify.pem").read_bytes())
    verify.verify(base64.b64decode(made["signature"]), manifest.encode())
    listed = await cloud.ok("GET", "/api/v1/releases")
    assert [r["version"] for r in listed["items"]] == ["9.1.0"]

    again = await cloud.api.post("/api/v1/releases", json={"wheels": [own]})
    assert again.status_code == 409 and "remove it first" in error_of(again)
    no_own = await cloud.api.post("/api/v1/releases", json={"wheels": [dependency]})
    assert no_own.status_code == 400 and "exactly one hedgerow wheel" in error_of(no_own)
    lying = await uploaded(cloud, "hedgerow", "9.2.0")
    lying["filename"] = "hedgerow-9.3.0-py3-none-any.whl"
    refused = await cloud.api.post("/api/v1/releases", json={"wheels": [lying]})
    assert refused.status_code == 400 and "METADATA says version '9.2.0'" in error_of(refused)
    no_sha = await cloud.api.post(
        "/api/v1/releases", json={"wheels": [{"filename": "hedgerow-1-py3-none-any.whl"}]}
    )
    assert no_sha.status_code == 422 and no_sha.json()["error"]["field"] == "wheels[0].sha256"
    bad_sha = await cloud.api.post(
        "/api/v1/releases",
        json={"wheels": [own, {"filename": "x-1-py3-none-any.whl", "sha256": "z"}]},
    )
    assert bad_sha.status_code == 400 and bad_sha.json()["error"]["field"] == "wheels[1].sha256"

    await cloud.ok("POST", "/api/v1/groups", json={"name": "g"})
    await cloud.ok("POST", "/api/v1/cores", json={"name": "pi-1", "group": "g"})
    unknown = await cloud.api.post("/api/v1/groups/g/deployments", json={"core_version": "8.0"})
    assert unknown.status_code == 404 and "release upload" in error_of(unknown)
    bad = await cloud.api.post("/api/v1/groups/g/deployments", json={"core_version": "../x"})
    assert bad.status_code == 400 and "core_version" in bad.text

    first = await cloud.ok("POST", "/api/v1/groups/g/deployments", json={"core_version": "9.1.0"})
    second = await cloud.ok("POST", "/api/v1/groups/g/deployments", json={})  # the setting stays
    for deployment in (first, second):
        _, text, _ = await asyncio.to_thread(
            cloud.server.services.repository.deployment_document, deployment["deployment_id"]
        )
        release = DeploymentDocument.from_json(text).core_version
        assert release is not None and release.version == "9.1.0"
        assert [w.sha256 for w in release.wheels] == [own["sha256"], dependency["sha256"]]

    in_use = await cloud.api.delete("/api/v1/releases/9.1.0")
    assert in_use.status_code == 409 and "group(s) g" in error_of(in_use)
    shown = await cloud.ok("GET", "/api/v1/releases/9.1.0")
    assert shown["size"] == sum(w["size"] for w in made["wheels"])
    missing = await cloud.api.get("/api/v1/releases/7.0")
    assert missing.status_code == 404


async def report(cloud: Cloud, deployment_id: str, status: str, detail: str) -> None:
    await cloud.server.services.deployments.record_status(
        "pi-1", StatusReport(deployment_id, DeploymentStatus(status), detail).to_json()
    )


async def carried(cloud: Cloud, deployment_id: str) -> str | None:
    _, text, _ = await asyncio.to_thread(
        cloud.server.services.repository.deployment_document, deployment_id
    )
    release = DeploymentDocument.from_json(text).core_version
    return release.version if release is not None else None


async def test_a_failed_update_puts_the_groups_core_version_back(cloud: Cloud) -> None:
    for version in ("9.1.0", "9.2.0"):
        own = await uploaded(cloud, "hedgerow", version)
        await cloud.ok("POST", "/api/v1/releases", json={"wheels": [own]})
    await cloud.ok("POST", "/api/v1/groups", json={"name": "g"})
    await cloud.ok("POST", "/api/v1/cores", json={"name": "pi-1", "group": "g"})

    async def group_version() -> str | None:
        group = await cloud.ok("GET", "/api/v1/groups/g")
        version: str | None = group["settings"].get("core_version")
        return version

    # never updated before: a failed first update leaves the group naming no version
    first = await cloud.ok("POST", "/api/v1/groups/g/deployments", json={"core_version": "9.2.0"})
    await report(cloud, first["deployment_id"], "Failure", "core update to 9.2.0: pip failed")
    assert await group_version() is None
    shown = await cloud.ok("GET", f"/api/v1/deployments/{first['deployment_id']}")
    assert shown["status"] == "Failure"
    assert shown["detail"] == (
        "core update to 9.2.0: pip failed; group g's core version is back to none (the core "
        "keeps the version it runs); deploy --core-version 9.2.0 to try 9.2.0 again"
    )
    plain = await cloud.ok("POST", "/api/v1/groups/g/deployments", json={})
    assert await carried(cloud, plain["deployment_id"]) is None  # no retry of 9.2.0
    await report(cloud, plain["deployment_id"], "Success", "")

    # 9.1.0 takes; 9.2.0 is rolled back: the group is back on 9.1.0, and says why
    good = await cloud.ok("POST", "/api/v1/groups/g/deployments", json={"core_version": "9.1.0"})
    await report(cloud, good["deployment_id"], "Success", "core updated 0.1.0 -> 9.1.0")
    bad = await cloud.ok("POST", "/api/v1/groups/g/deployments", json={"core_version": "9.2.0"})
    assert await group_version() == "9.2.0"
    why = "version 9.2.0 did not start (2 attempts): RuntimeError: boom"
    await report(cloud, bad["deployment_id"], "RolledBack", why)
    assert await group_version() == "9.1.0"
    shown = await cloud.ok("GET", f"/api/v1/deployments/{bad['deployment_id']}")
    assert shown["detail"].startswith(why + "; group g's core version is back to 9.1.0;")
    assert [e["detail"] for e in shown["events"] if e["status"] == "RolledBack"] == [why]
    after = await cloud.ok("POST", "/api/v1/groups/g/deployments", json={})
    assert await carried(cloud, after["deployment_id"]) == "9.1.0"
    await report(cloud, after["deployment_id"], "Success", "")

    # a failure that is not the update's (the core runs the release already): nothing moves
    broken = await cloud.ok("POST", "/api/v1/groups/g/deployments", json={})
    await report(cloud, broken["deployment_id"], "RolledBack", "functions not healthy")
    assert await group_version() == "9.1.0"
    # a late report for a deployment a newer one replaced: the newer one's word stands
    late = await cloud.ok("POST", "/api/v1/groups/g/deployments", json={"core_version": "9.2.0"})
    await cloud.ok("POST", "/api/v1/groups/g/deployments", json={})
    await report(cloud, late["deployment_id"], "RolledBack", "version 9.2.0 did not start")
    assert await group_version() == "9.2.0"
