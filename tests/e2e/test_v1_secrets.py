"""Secrets through a real cloud, core and deployment: a V1 Lambda using only the PyPI
greengrasssdk reads the secret it declares (and gets a clear error for one it does not),
still reads it after a core restart with the cloud down, and the value is nowhere in the
cloud's database file, the deployment documents, the core's logs or its heartbeat."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.e2e.harness import EXAMPLES, GROUP, System, wait_until

pytestmark = pytest.mark.slow

VALUE = "hunter2-Zq9-unique-secret-value"
ROTATED = "rotated-Kx7-unique-secret-value"


def reports(system: System) -> list[dict[str, object]]:
    return system.payloads("secrets/report")


def test_a_v1_function_reads_its_secret_which_is_nowhere_in_clear(
    system: System, tmp_path: Path
) -> None:
    value_file = tmp_path / "value.txt"
    value_file.write_text(VALUE)
    system.cloud("secret", "create", "--group", GROUP, "greengrass-api-key",
                 "--from-file", str(value_file))  # fmt: skip
    system.cloud("secret", "create", "--group", GROUP, "greengrass-db", "--value", "db-pw-77")
    listed = system.cloud("secret", "list", "--group", GROUP).stdout
    assert listed.split() == ["greengrass-api-key", "greengrass-db"] and VALUE not in listed
    system.function(
        "reader", EXAMPLES / "v1_secret_reader", "v1_secret_reader.function_handler",
        "--runtime", "greengrass-v1", "--pinned", "--secret", "greengrass-api-key",
        "--env", "SECRET_NAME=greengrass-api-key", "--env", "UNDECLARED_NAME=greengrass-db",
    )  # fmt: skip
    system.route("function:reader", "secrets/#", "cloud")
    system.deploy()
    first = wait_until(
        lambda: [r for r in reports(system) if "sha256" in r], timeout=60, what="a report"
    )[0]
    assert first["sha256"] == hashlib.sha256(VALUE.encode()).hexdigest()
    assert first["name"] == "greengrass-api-key" and first["stages"] == ["AWSCURRENT"]
    assert str(first["arn"]).endswith(":secret:greengrass-api-key")
    undeclared = str(first["undeclared"])
    assert undeclared.startswith("SecretsManagerError") and "403" in undeclared
    assert "does not declare secret 'greengrass-db'" in undeclared

    # a new value: AWSCURRENT moves, the function reads it after the deployment
    rotated_file = tmp_path / "rotated.txt"
    rotated_file.write_text(ROTATED)
    out = system.cloud("secret", "update", "--group", GROUP, "greengrass-api-key",
                       "--from-file", str(rotated_file)).stdout  # fmt: skip
    assert "AWSCURRENT" in out and ROTATED not in out
    system.deploy()
    wait_until(
        lambda: any(r.get("sha256") == hashlib.sha256(ROTATED.encode()).hexdigest()
                    for r in reports(system)),
        timeout=60, what="the rotated value read",
    )  # fmt: skip

    # the cloud down, the core restarted: the secret is still readable from the core's disk
    boots = {r["boot"] for r in reports(system)}
    system.stop_cloud()
    system.procs["core"].stop()
    system.start_core(first=False)
    system.start_cloud()
    after = wait_until(
        lambda: [r for r in reports(system) if r["boot"] not in boots and "sha256" in r],
        timeout=90,
        what="a report from after the restart",
    )[0]
    assert after["sha256"] == hashlib.sha256(ROTATED.encode()).hexdigest()

    # nowhere in clear: the cloud's database file, the documents, the logs, the heartbeat
    secrets_in_clear = [VALUE.encode(), ROTATED.encode(), b"db-pw-77"]
    cloud_files = [p for p in system.cloud_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("cloud.db") for p in cloud_files)
    core_files = [p for p in (system.root / "core").rglob("*") if p.is_file()]
    documents = [p for p in core_files if p.parent.name == "deployments"]
    assert documents
    logs = [p for p in system.root.glob("*.log")] + [p for p in core_files if ".log" in p.name]
    deployments = system.api(f"/api/v1/groups/{GROUP}/deployments")["items"]
    heartbeat = system.api("/api/v1/cores/pi-1")
    assert heartbeat.get("heartbeat"), heartbeat  # the core has reported since the restart
    texts = [json.dumps(deployments).encode(), json.dumps(heartbeat).encode()]
    for deployment in deployments:
        texts.append(
            json.dumps(system.api(f"/api/v1/deployments/{deployment['deployment_id']}")).encode()
        )
    for path in cloud_files + core_files + logs:
        texts.append(path.read_bytes())
    for text in texts:
        for secret in secrets_in_clear:
            assert secret not in text
    document_text = b"".join(p.read_bytes() for p in documents)
    assert b'"secrets"' in document_text and b'"sealed"' in document_text
