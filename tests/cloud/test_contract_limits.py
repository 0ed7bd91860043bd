"""The cloud refuses at creation exactly what the core would refuse at deployment.

Every limit of ``hedgerow.contract.functions.LIMITS`` at its boundary, through the real
REST API; the functions the cloud created are then deployed, and the signed document is
verified and read by the core's own code (signature check in the key-tool child process,
``parse_document``, the function runtime's ``FunctionSpec``).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from hedgerow.cloud.storage.models import FunctionVersionRow
from hedgerow.core import keytool
from hedgerow.core.daemon import function_specs
from hedgerow.core.deployment import verify_document

from ..contract.boundaries import cases
from ..contract.test_limits import CLOUD_ASSIGNED, core_verdict
from .conftest import Cloud
from .test_api import upload
from .test_core_link import setup_group


async def test_cloud_creates_exactly_what_the_core_runs(cloud: Cloud, tmp_path: Path) -> None:
    cert, key, sha = await setup_group(cloud, tmp_path)
    created: dict[str, dict[str, object]] = {}
    checked = 0
    for index, case in enumerate(c for c in cases() if c.limit.field not in CLOUD_ASSIGNED):
        body = {**case.entry, "artifact": sha}
        if case.limit.field != "name":
            body["name"] = f"limit-{index}"
        response = await cloud.api.post("/api/v1/groups/factory-1/functions", json=body)
        core_refuses = core_verdict(body)
        if core_refuses is None:
            assert response.status_code == 201, (case.id, response.text)
            created[str(body["name"])] = body
        else:
            assert response.status_code == 400, (case.id, response.text)
            assert response.json()["error"]["field"] == core_refuses, case.id
        checked += 1
    assert checked >= 20 and created

    deployment = await cloud.ok("POST", "/api/v1/groups/factory-1/deployments", json={})
    async with cloud.device_client(cert, key) as device:
        signed = (await device.get(f"/core/v1/deployments/{deployment['deployment_id']}")).json()
    verify_key = keytool.ed25519_public_key_from_pem(
        (cloud.data / "pki" / "deploy-verify.pem").read_bytes()
    )
    doc = await verify_document(
        signed["document"], signed["signature"], verify_key, core="pi-1", group="factory-1"
    )
    specs = {spec.name: spec for spec in function_specs(doc)}
    assert set(created) <= set(specs)
    for name, body in created.items():
        assert specs[name].memory_mb == body["memory_mb"]
        assert specs[name].environment == body["environment"]


async def test_a_stored_function_the_core_would_refuse_is_not_deployed(
    cloud: Cloud, tmp_path: Path
) -> None:
    """A function stored before the limits were shared (memory_mb=16 was accepted then)
    stops the deployment with a message saying what to change, instead of failing on
    the core."""
    await cloud.ok("POST", "/api/v1/groups", json={"name": "factory-1"})
    await cloud.core("pi-1", "factory-1", tmp_path)
    sha = await upload(cloud)
    await cloud.ok(
        "POST",
        "/api/v1/groups/factory-1/functions",
        json={"name": "legacy", "handler": "temp_correct.handler", "artifact": sha},
    )
    # what an older cloud let into the database
    with cloud.server.services.repository.engine.begin() as connection:
        connection.execute(
            sa.update(FunctionVersionRow).values(
                settings={"handler": "temp_correct.handler", "memory_mb": 16}
            )
        )
    refused = await cloud.api.post("/api/v1/groups/factory-1/deployments", json={})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["field"] == "memory_mb"
    assert "'legacy' version 1" in error["message"] and "update the function" in error["message"]
