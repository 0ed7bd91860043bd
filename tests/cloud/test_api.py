"""The REST API through real HTTP, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import zipfile

import httpx
import pytest
from cryptography import x509

from hedgerow import pki
from hedgerow.cloud import core_bundle as bundle

from .conftest import Cloud


def code_zip(source: str = "def handler(event, context):\n    return event\n") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("temp_correct.py", (2026, 1, 1, 0, 0, 0)), source)
    return buffer.getvalue()


async def upload(cloud: Cloud, data: bytes | None = None) -> str:
    body = await cloud.ok("POST", "/api/v1/artifacts", content=data or code_zip())
    return str(body["sha256"])


def error_of(response: httpx.Response) -> str:
    body = response.json()
    return str(body["error"]["message"])


async def test_health_and_openapi_need_no_token(cloud: Cloud) -> None:
    async with httpx.AsyncClient(base_url=cloud.server.api_url) as anonymous:
        assert (await anonymous.get("/api/v1/health")).json()["status"] == "ok"
        spec = (await anonymous.get("/api/openapi.json")).json()
        assert spec["openapi"].startswith("3.")
        assert "post" in spec["paths"]["/api/v1/groups"]
        assert "/greengrass/discover/thing/{name}" not in spec["paths"]
        refused = await anonymous.get("/api/v1/groups")
        assert refused.status_code == 401
        assert "token" in error_of(refused)
        wrong = await anonymous.get("/api/v1/groups", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        by_query = await anonymous.get("/api/v1/groups", params={"token": cloud.token})
        assert by_query.status_code == 401, "a token in the URL is kept by proxies and history"
        assert (
            await anonymous.post(
                "/api/v1/groups", params={"token": cloud.token}, json={"name": "x"}
            )
        ).status_code == 401


async def test_group_lifecycle(cloud: Cloud) -> None:
    created = await cloud.api.post(
        "/api/v1/groups", json={"name": "factory-1", "description": "hall A"}
    )
    assert created.status_code == 201
    assert created.json()["settings"] == {"open_broker": False}
    listed = await cloud.ok("GET", "/api/v1/groups")
    assert [g["name"] for g in listed["items"]] == ["factory-1"]
    updated = await cloud.ok(
        "PATCH", "/api/v1/groups/factory-1", json={"description": "hall B", "ca_rotation_days": 3}
    )
    assert updated["description"] == "hall B" and updated["ca_rotation_days"] == 3
    assert (await cloud.api.delete("/api/v1/groups/factory-1")).status_code == 200
    missing = await cloud.api.get("/api/v1/groups/factory-1")
    assert missing.status_code == 404
    assert "factory-1" in error_of(missing)


INVALID_GROUPS: list[tuple[dict[str, object], str]] = [
    ({"name": "-bad"}, "invalid group name"),
    ({"name": "a" * 129}, "invalid group name"),
    ({"name": "has space"}, "invalid group name"),
    ({}, "invalid group name"),
    ({"name": "ok", "ca_rotation_days": 31}, "ca_rotation_days"),
    ({"name": "ok", "settings": {"nope": 1}}, "unknown group settings"),
]


async def test_groups_and_cores_list_by_page_with_a_prefix(cloud: Cloud) -> None:
    """Thousands of groups: a list returns a page when asked (``limit``, ``offset``,
    ``prefix``), the whole list as before when not."""
    for index in range(5):
        labels = {"site": "berlin" if index % 2 else "paris"}
        await cloud.ok("POST", "/api/v1/groups", json={"name": f"pg-{index}", "labels": labels})
        await cloud.ok(
            "POST", "/api/v1/cores", json={"name": f"pc-{index}", "group": f"pg-{index}"}
        )
    await cloud.ok("POST", "/api/v1/groups", json={"name": "other"})

    async def names(path: str, **params: str) -> list[str]:
        return [g["name"] for g in (await cloud.ok("GET", path, params=params))["items"]]

    assert await names("/api/v1/groups") == ["other", *(f"pg-{i}" for i in range(5))]
    page = await cloud.ok("GET", "/api/v1/groups", params={"limit": "2", "offset": "1"})
    assert [g["name"] for g in page["items"]] == ["pg-0", "pg-1"] and page["count"] == 2
    assert page["items"][1]["core"] == "pc-1"  # each group of the page with its core
    assert await names("/api/v1/groups", prefix="pg-", offset="3") == ["pg-3", "pg-4"]
    assert await names("/api/v1/groups", label="site=berlin", limit="1", offset="1") == ["pg-3"]
    assert await names("/api/v1/cores", prefix="pc-", limit="2", offset="2") == ["pc-2", "pc-3"]
    assert len(await names("/api/v1/cores")) == 5
    refused = await cloud.api.get("/api/v1/cores", params={"limit": "0"})
    assert refused.status_code == 400


async def test_invalid_groups_are_refused(cloud: Cloud, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hedgerow.cloud.api")
    for body, expected in INVALID_GROUPS:
        response = await cloud.api.post("/api/v1/groups", json=body)
        assert response.status_code == 400, body
        assert expected in error_of(response), body
    refusals = [r.getMessage() for r in caplog.records if "api.refused" in r.getMessage()]
    assert len(refusals) == len(INVALID_GROUPS)
    assert (await cloud.ok("GET", "/api/v1/groups"))["items"] == []


async def test_duplicates_and_malformed_json(cloud: Cloud) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "g"})
    dup = await cloud.api.post("/api/v1/groups", json={"name": "g"})
    assert dup.status_code == 409
    assert "already exists" in error_of(dup)
    bad = await cloud.api.post("/api/v1/groups", content=b"{not json")
    assert bad.status_code == 400
    assert "malformed JSON" in error_of(bad)
    array = await cloud.api.post("/api/v1/groups", content=b"[1]")
    assert array.status_code == 400
    nowhere = await cloud.api.get("/api/v1/nowhere")
    assert nowhere.status_code == 404 and "no such path" in error_of(nowhere)
    method = await cloud.api.put("/api/v1/groups")
    assert method.status_code == 405


async def test_thing_with_generated_key_and_with_csr(cloud: Cloud) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "g"})
    made = await cloud.ok("POST", "/api/v1/things", json={"name": "bme680-1", "groups": ["g"]})
    cert = pki.cert_from_pem(made["certificate"].encode())
    assert pki.name_of(cert) == "bme680-1" and pki.role_of(cert) == "thing"
    assert made["private_key"].startswith("-----BEGIN PRIVATE KEY")
    root = pki.cert_from_pem(cloud.root_ca.read_bytes())
    assert pki.is_signed_by(cert, root)
    assert made["root_ca"] == cloud.root_ca.read_text()

    key = pki.new_key()
    csr = pki.make_csr(key, "claims-another-name").decode()
    signed = await cloud.ok(
        "POST", "/api/v1/things", json={"name": "dev-2", "groups": ["g"], "csr": csr}
    )
    assert signed["private_key"] is None
    cert2 = pki.cert_from_pem(signed["certificate"].encode())
    assert pki.name_of(cert2) == "dev-2", "the registry's name wins over the CSR's"
    assert cert2.public_key() == key.public_key()

    things = await cloud.ok("GET", "/api/v1/things", params={"group": "g"})
    assert [t["name"] for t in things["items"]] == ["bme680-1", "dev-2"]
    assert things["items"][0]["groups"] == ["g"]
    page = await cloud.ok("GET", "/api/v1/things", params={"limit": "1", "offset": "1"})
    assert [t["name"] for t in page["items"]] == ["dev-2"]
    prefixed = await cloud.ok("GET", "/api/v1/things", params={"prefix": "bme"})
    assert [t["name"] for t in prefixed["items"]] == ["bme680-1"]
    bad_limit = await cloud.api.get("/api/v1/things", params={"limit": "0"})
    assert bad_limit.status_code == 400 and "limit" in error_of(bad_limit)
    certs = await cloud.ok("GET", "/api/v1/certificates", params={"owner": "dev-2"})
    assert certs["items"][0]["fingerprint"] == pki.fingerprint(cert2)


async def test_bad_thing_requests_write_nothing(cloud: Cloud) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "g"})
    unknown = await cloud.api.post("/api/v1/things", json={"name": "t", "groups": ["g", "nope"]})
    assert unknown.status_code == 404 and "nope" in error_of(unknown)
    bad_csr = await cloud.api.post("/api/v1/things", json={"name": "t", "csr": "garbage"})
    assert bad_csr.status_code == 400 and "CSR" in error_of(bad_csr)
    assert (await cloud.ok("GET", "/api/v1/things"))["items"] == []
    assert (await cloud.ok("GET", "/api/v1/certificates"))["items"] == []
    await cloud.ok("POST", "/api/v1/things", json={"name": "t", "groups": ["g"]})
    again = await cloud.api.post("/api/v1/things", json={"name": "t"})
    assert again.status_code == 409
    clash = await cloud.api.post("/api/v1/cores", json={"name": "t", "group": "g"})
    assert clash.status_code == 409 and "already used by a thing" in error_of(clash)
    assert len((await cloud.ok("GET", "/api/v1/certificates"))["items"]) == 1


async def test_core_bundle_follows_the_contract(cloud: Cloud) -> None:
    import tomllib

    await cloud.ok("POST", "/api/v1/groups", json={"name": "factory-1"})
    made = await cloud.ok("POST", "/api/v1/cores", json={"name": "pi-1", "group": "factory-1"})
    assert made["bundle_name"] == "pi-1.tar.gz"
    files = bundle.read_bundle(base64.b64decode(made["bundle"]))
    assert set(files) == {
        "config.toml",
        "core.cert.pem",
        "core.key",
        "root-ca.pem",
        "deploy-verify.pem",
    }
    config = tomllib.loads(files["config.toml"].decode())
    assert config["core"] == {"name": "pi-1", "group": "factory-1"}
    assert config["cloud"]["https"] == f"https://127.0.0.1:{cloud.device_port}"
    assert config["cloud"]["mqtt"] == f"mqtts://127.0.0.1:{cloud.mqtt_port}"
    assert config["local"]["port"] == 8883
    cert = pki.cert_from_pem(files["core.cert.pem"])
    assert pki.name_of(cert) == "pi-1" and pki.role_of(cert) == "core"
    assert pki.key_from_pem(files["core.key"]).public_key() == cert.public_key()
    pki.verify_key_from_pem(files["deploy-verify.pem"])
    second = await cloud.api.post("/api/v1/cores", json={"name": "pi-2", "group": "factory-1"})
    assert second.status_code == 409 and "one core" in error_of(second)
    group = await cloud.ok("GET", "/api/v1/groups/factory-1")
    assert group["core"] == "pi-1"
    conn = await cloud.ok(
        "PUT",
        "/api/v1/cores/pi-1/connectivity",
        json={"endpoints": [{"host": "10.0.0.5", "port": 8883}]},
    )
    assert conn["endpoints"] == [{"host": "10.0.0.5", "port": 8883, "metadata": ""}]
    bad = await cloud.api.put(
        "/api/v1/cores/pi-1/connectivity", json={"endpoints": [{"host": "x", "port": 0}]}
    )
    assert bad.status_code == 400 and "port" in error_of(bad)


async def test_functions_versions_and_subscriptions(cloud: Cloud) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "g"})
    await cloud.ok("POST", "/api/v1/things", json={"name": "bme680-1", "groups": ["g"]})
    sha = await upload(cloud)
    fn = await cloud.ok(
        "POST",
        "/api/v1/groups/g/functions",
        json={
            "name": "temp-correct",
            "handler": "temp_correct.handler",
            "artifact": sha,
            "pinned": True,
            "environment": {"FACTOR": "5"},
        },
    )
    assert fn["version"] == 1 and fn["artifact"] == {"sha256": sha, "size": len(code_zip())}
    v2 = await cloud.ok("PATCH", "/api/v1/groups/g/functions/temp-correct", json={"memory_mb": 256})
    assert v2["version"] == 2 and v2["memory_mb"] == 256 and v2["pinned"] is True
    versions = await cloud.ok("GET", "/api/v1/groups/g/functions/temp-correct/versions")
    assert [v["version"] for v in versions["items"]] == [1, 2]
    old = await cloud.ok("GET", "/api/v1/groups/g/functions/temp-correct", params={"version": "1"})
    assert old["memory_mb"] == 128

    for body, expected in [
        ({"name": "f", "handler": "nodots", "artifact": sha}, "handler"),
        ({"name": "f", "handler": "m.f", "artifact": "0" * 64}, "never uploaded"),
        ({"name": "f", "handler": "m.f", "artifact": sha, "memory_mb": 1}, "memory_mb"),
        ({"name": "f", "handler": "m.f", "artifact": sha, "runtime": "java"}, "runtime"),
        (
            {"name": "f", "handler": "m.f", "artifact": sha, "environment": {"1X": "y"}},
            "environment",
        ),
        ({"name": "temp-correct", "handler": "m.f", "artifact": sha}, "already exists"),
    ]:
        response = await cloud.api.post("/api/v1/groups/g/functions", json=body)
        assert response.status_code in (400, 409), body
        assert expected in error_of(response), body

    sub = await cloud.ok(
        "POST",
        "/api/v1/groups/g/subscriptions",
        json={"source": "thing:bme680-1", "topic": "sensors/#", "target": "function:temp-correct"},
    )
    assert sub["id"] > 0
    for body, expected in [
        ({"source": "thing:ghost", "topic": "a", "target": "cloud"}, "not in group"),
        ({"source": "function:nope", "topic": "a", "target": "cloud"}, "not in group"),
        ({"source": "thing:bme680-1", "topic": "a/#/b", "target": "cloud"}, "topic filter"),
        ({"source": "satellite", "topic": "a", "target": "cloud"}, "invalid source"),
        (
            {"source": "thing:bme680-1", "topic": "sensors/#", "target": "function:temp-correct"},
            "already exists",
        ),
    ]:
        response = await cloud.api.post("/api/v1/groups/g/subscriptions", json=body)
        assert response.status_code in (400, 409), body
        assert expected in error_of(response), body
    shown = await cloud.ok("GET", f"/api/v1/groups/g/subscriptions/{sub['id']}")
    assert shown["topic"] == "sensors/#"
    changed = await cloud.ok(
        "PATCH", f"/api/v1/groups/g/subscriptions/{sub['id']}", json={"topic": "sensors/+/t"}
    )
    assert changed["topic"] == "sensors/+/t" and changed["source"] == "thing:bme680-1"
    bad_patch = await cloud.api.patch(
        f"/api/v1/groups/g/subscriptions/{sub['id']}", json={"target": "thing:ghost"}
    )
    assert bad_patch.status_code == 400
    assert (await cloud.ok("GET", f"/api/v1/groups/g/subscriptions/{sub['id']}"))[
        "target"
    ] == "function:temp-correct"
    in_use = await cloud.api.delete("/api/v1/groups/g/functions/temp-correct")
    assert in_use.status_code == 409
    # the 409 names what blocks it and how to remove it
    message = in_use.json()["error"]["message"]
    assert f"{sub['id']}: thing:bme680-1 sensors/+/t -> function:temp-correct" in message
    assert "hedgerow cloud subscription remove --group g" in message
    await cloud.ok("DELETE", f"/api/v1/groups/g/subscriptions/{sub['id']}")
    await cloud.ok("DELETE", "/api/v1/groups/g/functions/temp-correct")
    assert (await cloud.ok("GET", "/api/v1/groups/g/functions"))["items"] == []


async def test_oversized_upload_is_refused(cloud: Cloud) -> None:
    limit = cloud.server.config.max_upload_bytes
    response = await cloud.api.post("/api/v1/artifacts", content=b"x" * (limit + 1))
    assert response.status_code == 413
    assert "limit" in error_of(response)

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(limit // 65536 + 2):
            yield b"y" * 65536

    streamed = await cloud.api.post("/api/v1/artifacts", content=chunks())
    assert streamed.status_code == 413


async def test_deployments_snapshot_sign_and_history(cloud: Cloud) -> None:
    import json

    await cloud.ok("POST", "/api/v1/groups", json={"name": "g"})
    no_core = await cloud.api.post("/api/v1/groups/g/deployments", json={})
    assert no_core.status_code == 409 and "no core" in error_of(no_core)
    await cloud.ok("POST", "/api/v1/cores", json={"name": "pi-1", "group": "g"})
    await cloud.ok("POST", "/api/v1/things", json={"name": "bme680-1", "groups": ["g"]})
    sha = await upload(cloud)
    await cloud.ok(
        "POST",
        "/api/v1/groups/g/functions",
        json={"name": "f", "handler": "temp_correct.handler", "artifact": sha},
    )
    await cloud.ok(
        "POST",
        "/api/v1/groups/g/subscriptions",
        json={"source": "function:f", "topic": "out/#", "target": "cloud"},
    )
    first = await cloud.ok("POST", "/api/v1/groups/g/deployments", json={})
    assert first["status"] == "Pending" and first["core"] == "pi-1"
    core, text, signature = await asyncio.to_thread(
        cloud.server.services.repository.deployment_document, first["deployment_id"]
    )
    verify = pki.verify_key_from_pem((cloud.data / "pki" / "deploy-verify.pem").read_bytes())
    verify.verify(base64.b64decode(signature), text.encode())
    document = json.loads(text)
    assert document["deployment_id"] == first["deployment_id"]
    assert document["things"] == ["bme680-1"]
    assert document["functions"][0]["artifact"] == {"sha256": sha, "size": len(code_zip())}
    assert document["functions"][0]["runtime"] == "python"
    assert document["subscriptions"] == [
        {"source": "function:f", "topic": "out/#", "target": "cloud"}
    ]
    assert document["settings"] == {"open_broker": False}

    await cloud.ok("PATCH", "/api/v1/groups/g/functions/f", json={"timeout_s": 9})
    redeploy = await cloud.ok(
        "POST",
        "/api/v1/groups/g/deployments",
        json={"kind": "redeploy", "deployment_id": first["deployment_id"]},
    )
    _, text2, _ = await asyncio.to_thread(
        cloud.server.services.repository.deployment_document, redeploy["deployment_id"]
    )
    assert json.loads(text2)["functions"][0]["timeout_s"] == 3.0, (
        "a redeployment freezes the old snapshot"
    )
    reset = await cloud.ok("POST", "/api/v1/groups/g/deployments", json={"kind": "reset"})
    _, text3, _ = await asyncio.to_thread(
        cloud.server.services.repository.deployment_document, reset["deployment_id"]
    )
    assert json.loads(text3)["functions"] == [] and json.loads(text3)["subscriptions"] == []
    history = await cloud.ok("GET", "/api/v1/groups/g/deployments")
    assert [d["kind"] for d in history["items"]] == [
        "ResetDeployment",
        "Redeployment",
        "NewDeployment",
    ]
    bad = await cloud.api.post("/api/v1/groups/g/deployments", json={"kind": "sideways"})
    assert bad.status_code == 400
    unknown = await cloud.api.get("/api/v1/deployments/d-nope")
    assert unknown.status_code == 404


async def test_fleet_apply_to_many_groups(cloud: Cloud) -> None:
    sha = await upload(cloud)
    for name in ("template", "a", "b"):
        await cloud.ok("POST", "/api/v1/groups", json={"name": name})
    for name in ("a", "b"):
        await cloud.ok("POST", "/api/v1/cores", json={"name": f"core-{name}", "group": name})
    await cloud.ok(
        "POST",
        "/api/v1/groups/template/functions",
        json={"name": "f", "handler": "m.h", "artifact": sha},
    )
    await cloud.ok(
        "POST",
        "/api/v1/groups/template/subscriptions",
        json={"source": "function:f", "topic": "x/#", "target": "cloud"},
    )
    result = await cloud.ok(
        "POST",
        "/api/v1/fleet/apply",
        json={"groups": ["a", "b"], "from_group": "template", "deploy": True},
    )
    assert result["functions"] == 1 and len(result["deployments"]) == 2
    for name in ("a", "b"):
        subs = await cloud.ok("GET", f"/api/v1/groups/{name}/subscriptions")
        assert [(s["source"], s["topic"], s["target"]) for s in subs["items"]] == [
            ("function:f", "x/#", "cloud")
        ]
    # a reference that does not hold in one group leaves every group untouched
    bad = await cloud.api.post(
        "/api/v1/fleet/apply",
        json={
            "groups": ["a", "b"],
            "functions": [{"name": "g", "handler": "m.h", "artifact": sha}],
            "subscriptions": [{"source": "thing:ghost", "topic": "t", "target": "function:g"}],
        },
    )
    assert bad.status_code == 400
    assert [f["name"] for f in (await cloud.ok("GET", "/api/v1/groups/a/functions"))["items"]] == [
        "f"
    ]


async def test_revoking_a_thing(cloud: Cloud) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "g"})
    made = await cloud.ok("POST", "/api/v1/things", json={"name": "t", "groups": ["g"]})
    fingerprint = pki.fingerprint(x509.load_pem_x509_certificate(made["certificate"].encode()))
    revoked = await cloud.ok("POST", "/api/v1/things/t/revoke")
    assert revoked["revoked"] == [fingerprint]
    cert = await cloud.ok("GET", f"/api/v1/certificates/{fingerprint}")
    assert cert["status"] == "revoked"
    again = await cloud.api.post(f"/api/v1/certificates/{fingerprint}/revoke")
    assert again.status_code == 409
    missing = await cloud.api.post("/api/v1/things/ghost/revoke")
    assert missing.status_code == 404
    other = await cloud.ok("POST", "/api/v1/things", json={"name": "gone", "groups": ["g"]})
    other_fp = pki.fingerprint(pki.cert_from_pem(other["certificate"].encode()))
    await cloud.ok("DELETE", "/api/v1/things/gone")
    assert (await cloud.api.get("/api/v1/things/gone")).status_code == 404
    assert (await cloud.ok("GET", f"/api/v1/certificates/{other_fp}"))["status"] == "revoked"
    assert other_fp in await cloud.server.services.certificates.revocations()


async def test_a_certificates_issue_time_is_when_it_was_issued(cloud: Cloud) -> None:
    """Not its not-before, which is backdated for clock skew."""
    import datetime as dt

    from hedgerow import pki

    await cloud.ok("POST", "/api/v1/groups", json={"name": "issued-g"})
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    made = await cloud.ok(
        "POST", "/api/v1/things", json={"name": "issued-t", "groups": ["issued-g"]}
    )
    after = dt.datetime.now(dt.UTC)
    cert = pki.cert_from_pem(made["certificate"].encode())
    listed = await cloud.ok("GET", "/api/v1/certificates", params={"owner": "issued-t"})
    issued = dt.datetime.fromisoformat(listed["items"][0]["issued_at"])
    assert before <= issued <= after
    assert cert.not_valid_before_utc < before  # the certificate itself is backdated
