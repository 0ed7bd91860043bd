"""Claims against a real cloud (SQLite and PostgreSQL): the device side over real mutual TLS
with the claim certificate, as ``hedgerow.claimclient`` sends it."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from hedgerow import claimclient, pki
from hedgerow.contract.provisioning import ClaimCredential, ProvisionRequest

from .conftest import Cloud

TEMPLATE = {"name": "sensors", "kind": "thing", "group": "plant", "name_pattern": "s-{serial}"}


async def _claim(cloud: Cloud, count: int, template: str = "sensors") -> ClaimCredential:
    created = await cloud.ok(
        "POST", "/api/v1/claims", json={"template": template, "count": count, "expires": "1h"}
    )
    assert created["claim"]["max_uses"] == count and created["bundle_name"].endswith(".tar.gz")
    return ClaimCredential.from_tar(base64.b64decode(created["bundle"]))


def _request(serial: str) -> ProvisionRequest:
    return ProvisionRequest(serial, pki.make_csr(pki.new_key(), "ignored").decode())


async def test_a_claim_is_used_at_most_its_count_even_at_once(cloud: Cloud) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "plant"})
    await cloud.ok("POST", "/api/v1/claim-templates", json=TEMPLATE)
    credential = await _claim(cloud, 3)
    results = await asyncio.gather(
        *(claimclient.provision(credential, _request(f"SN{i}"), timeout=30) for i in range(8)),
        return_exceptions=True,
    )
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, claimclient.ClaimRefusedError)]
    assert len(admitted) == 3 and len(refused) == 5
    assert len({r.name for r in admitted}) == 3 and all(r.group == "plant" for r in admitted)
    assert all(r.status == 403 and "used up: 3 of 3 uses" in r.reason for r in refused)
    shown = await cloud.ok("GET", f"/api/v1/claims/{credential.claim_id}")
    assert shown["used"] == 3
    assert sorted(u["outcome"] for u in shown["uses"]) == ["ok"] * 3 + ["refused"] * 5
    things = await cloud.ok("GET", "/api/v1/things", params={"group": "plant"})
    assert sorted(t["name"] for t in things["items"]) == sorted(r.name for r in admitted)


async def test_a_claim_opens_nothing_else_and_can_be_revoked(cloud: Cloud, tmp_path: Path) -> None:
    await cloud.ok("POST", "/api/v1/groups", json={"name": "plant"})
    await cloud.ok("POST", "/api/v1/claim-templates", json=TEMPLATE)
    credential = await _claim(cloud, 5)
    cert, key = tmp_path / "claim.cert.pem", tmp_path / "claim.key"
    cert.write_bytes(credential.certificate)
    key.write_bytes(credential.key)
    async with cloud.device_client(cert, key) as device:
        for path in ("/core/v1/things", "/greengrass/discover/thing/s-SN1"):
            response = await device.get(path)
            assert response.status_code in (401, 403), (path, response.text)
        core_path = await device.post("/provision/v1/core", content=_request("X1").to_json())
        assert core_path.status_code == 403 and "provisions a thing" in core_path.json()["message"]
        newer = await device.post("/provision/v1/thing", content=b'{"schema": 2, "serial": "a"}')
        assert newer.status_code == 400 and "schema" in newer.json()["message"]
    with pytest.raises(claimclient.ClaimRefusedError, match="serial"):
        await claimclient.provision(credential, _request("bad/serial"), timeout=10)
    await cloud.ok("POST", f"/api/v1/claims/{credential.claim_id}/revoke")
    with pytest.raises(claimclient.ClaimRefusedError, match="was revoked"):
        await claimclient.provision(credential, _request("SN9"), timeout=10)
    shown = await cloud.ok("GET", f"/api/v1/claims/{credential.claim_id}")
    assert shown["used"] == 0 and shown["uses"][-1]["reason"].startswith("revoked")


async def test_bodies_are_checked_at_the_edge(cloud: Cloud) -> None:
    bad_type = await cloud.api.post("/api/v1/claims", json={"template": "x", "count": "many"})
    assert bad_type.status_code == 422 and bad_type.json()["error"]["field"] == "count"
    bad_pattern = await cloud.api.post(
        "/api/v1/claim-templates", json={**TEMPLATE, "name_pattern": "s-{mac}"}
    )
    assert bad_pattern.status_code == 400
    assert bad_pattern.json()["error"]["field"] == "name_pattern"
    await cloud.ok("POST", "/api/v1/claim-templates", json=TEMPLATE)
    too_many = await cloud.api.post("/api/v1/claims", json={"template": "sensors", "count": 0})
    assert too_many.status_code == 400 and too_many.json()["error"]["field"] == "count"
    leaf = pki.issue(pki.make_ca("Acme"), "leaf").cert_pem.decode()
    not_ca = await cloud.api.post(
        "/api/v1/device-cas", json={"certificate": leaf, "template": "sensors"}
    )
    assert not_ca.status_code == 400 and "not a CA certificate" in not_ca.json()["error"]["message"]


async def test_the_same_device_again_gets_its_identity_back_not_another_use(cloud: Cloud) -> None:
    """A device that lost the answer (or was reset) asks again with its serial: the same
    name, a new certificate, the earlier one revoked, and the claim's count unchanged."""
    await cloud.ok("POST", "/api/v1/groups", json={"name": "plant"})
    await cloud.ok("POST", "/api/v1/claim-templates", json=TEMPLATE)
    credential = await _claim(cloud, 1)
    first = await claimclient.provision(credential, _request("SN1"), timeout=30)
    again = await claimclient.provision(credential, _request("SN1"), timeout=30)
    assert first.name == again.name == "s-SN1" and first.certificate != again.certificate
    certificates = await cloud.ok("GET", "/api/v1/certificates", params={"owner": "s-SN1"})
    status = {c["fingerprint"]: c["status"] for c in certificates["items"]}
    old = pki.fingerprint(pki.cert_from_pem(first.certificate.encode()))
    new = pki.fingerprint(pki.cert_from_pem(again.certificate.encode()))
    assert status == {old: "revoked", new: "active"}
    with pytest.raises(claimclient.ClaimRefusedError, match="used up: 1 of 1"):
        await claimclient.provision(credential, _request("SN2"), timeout=30)
    shown = await cloud.ok("GET", f"/api/v1/claims/{credential.claim_id}")
    assert shown["used"] == 1
    assert [u["outcome"] for u in shown["uses"]] == ["ok", "ok", "refused"]
    assert shown["uses"][1]["reason"].startswith("again")
