"""The core's secrets: sealed to its key in the deployment document, opened by the real
key-tool child on first read, never by another core's key."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from hedgerow import pki
from hedgerow.core.errors import DeploymentError
from hedgerow.core.keytool import KeytoolError
from hedgerow.core.secrets import CoreSecrets, parse_secrets, secret_aad


def entry(key: pki.PrivateKey, name: str, version: str, stages: list[str], value: bytes,
          core: str = "pi-1") -> dict[str, object]:  # fmt: skip
    sealed = pki.seal_to(key.public_key(), value, secret_aad("factory-1", core, name, version))
    return {"name": name, "version_id": version, "stages": stages, "created_ms": 1000,
            "binary": False, "sealed": base64.b64encode(sealed).decode()}  # fmt: skip


async def test_versions_open_in_the_key_tool_child_for_this_core_only(tmp_path: Path) -> None:
    key = pki.new_key()
    key_file = tmp_path / "core.key"
    key_file.write_bytes(pki.key_to_pem(key))
    entries = [
        entry(key, "api-key", "v2", ["AWSCURRENT"], b"new-value"),
        entry(key, "api-key", "v1", ["AWSPREVIOUS"], b"old-value"),
        entry(key, "stolen", "s1", ["AWSCURRENT"], b"other", core="pi-2"),
    ]
    document = json.dumps({"secrets": entries})
    assert "new-value" not in document and "old-value" not in document
    versions = parse_secrets("d-1", json.loads(document)["secrets"])
    secrets = CoreSecrets(key_file, "factory-1", "pi-1")
    secrets.set_versions(versions)
    current = await secrets.get("api-key", "AWSCURRENT")
    assert current is not None and current.value == b"new-value" and current.version_id == "v2"
    previous = await secrets.get("api-key", "AWSPREVIOUS")
    assert previous is not None and previous.value == b"old-value"
    assert await secrets.get("api-key", "NOPE") is None
    assert await secrets.get("unknown", "AWSCURRENT") is None
    with pytest.raises(KeytoolError, match="does not open with this key"):
        await secrets.get("stolen", "AWSCURRENT")  # sealed for another core
    assert secrets.status() == {"names": ["api-key", "stolen"], "versions": 3}
    assert "value" not in json.dumps(secrets.status())
    with pytest.raises(DeploymentError, match="secrets\\[0\\]"):
        parse_secrets("d-1", [{"name": "x"}])
