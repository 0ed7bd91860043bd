"""What a support bundle keeps out (pure: redaction, scrubbing) and how it fits its limit."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from hedgerow.contract.errors import InvalidMessage
from hedgerow.contract.support import SupportBundleRequest
from hedgerow.core.support_bundle import (
    REDACTED,
    BundleInputs,
    build,
    deployment_for_bundle,
    redact,
    scrub,
)

KEY = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----"


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        out = {}
        for m in tar.getmembers():
            f = tar.extractfile(m)
            assert f is not None
            out[m.name.partition("/")[2]] = f.read()
        return out


def test_redact_and_scrub_cut_secret_values_not_their_names() -> None:
    config, count = redact(
        {
            "core": {"name": "pi-1", "key_file": "core.key"},
            "streams": {"password": "pw-1", "api_key": "k-2", "keepalive": 30},
            "list": [{"token": "t-3"}, {"monkey": "banana"}],
            "empty_secret": "",
        }
    )
    assert config["streams"] == {"password": REDACTED, "api_key": REDACTED, "keepalive": 30}
    assert config["list"] == [{"token": REDACTED}, {"monkey": "banana"}]
    assert config["core"] == {"name": "pi-1", "key_file": "core.key"} and count == 3
    text, cut = scrub(
        f"start\n{KEY}\nAWS_TOKEN=abc123 password: hunter2 Authorization: Bearer eyJhbG.x\n"
        "INFO hedgerow.core.secrets: secret_read secret=db client_secret=s3cr3t\nend"
    )
    for secret in ("MIGHAgEA", "abc123", "hunter2", "eyJhbG", "s3cr3t"):
        assert secret not in text
    assert "AWS_TOKEN=" in text and text.startswith("start") and text.endswith("end")
    assert "hedgerow.core.secrets: secret_read secret=db" in text  # names are not secrets
    assert cut == 5


def test_deployments_lose_sealed_secrets_and_secret_environment() -> None:
    doc, count = deployment_for_bundle(
        {
            "deployment_id": "d-1",
            "functions": [{"name": "f", "environment": {"API_TOKEN": "tok-9", "FACTOR": "5"}}],
            "secrets": [{"name": "db", "version_id": "v1", "sealed": "c2VhbGVk"}],
        }
    )
    assert doc["secrets"] == [{"name": "db", "version_id": "v1"}]
    assert doc["functions"][0]["environment"] == {"API_TOKEN": REDACTED, "FACTOR": "5"}
    assert count == 2


def test_a_bundle_holds_its_members_and_fits_its_limit_by_cutting_logs() -> None:
    noisy = "".join(
        f"line {n} {hashlib.sha256(str(n).encode()).hexdigest()}\n" for n in range(20_000)
    )
    inputs = BundleInputs(
        core="pi-1",
        group="factory-1",
        config={"core": {"name": "pi-1"}},
        check="ok  python  3.12\n1 checks: 0 failed, 0 warnings",
        status={"health": "healthy"},
        logs=[("core/core.log", noisy + KEY)],
        deployments=[("index.json", {"current": "d-1", "previous": None})],
        made_at=1_800_000_000,
    )
    data = build(inputs, limit=32 * 1024)
    assert len(data) <= 32 * 1024
    files = members(data)
    assert set(files) == {
        "manifest.json", "versions.json", "config.json", "check.txt", "status.json",
        "logs/core/core.log", "deployments/index.json",
    }  # fmt: skip
    manifest = json.loads(files["manifest.json"])
    assert manifest["log_tail_bytes"] < 96 * 1024 and manifest["redacted"] == {
        "logs/core/core.log": 1
    }
    log = files["logs/core/core.log"].decode()
    assert log.startswith("line ") and "MIGHAgEA" not in log  # whole lines, the newest
    assert json.loads(files["versions.json"])["core"] == "pi-1"
    with pytest.raises(ValueError, match="without logs"):
        build(inputs, limit=100)


def test_requests_round_trip_and_refuse_bad_ids() -> None:
    ask = SupportBundleRequest("sb-0123456789abcdef")
    assert SupportBundleRequest.from_json(ask.to_json()) == ask
    with pytest.raises(InvalidMessage) as bad:
        SupportBundleRequest.from_json(b'{"request_id": "../etc"}')
    assert bad.value.field == "request_id"


def test_a_request_may_carry_its_expiry_and_old_ones_have_none() -> None:
    ask = SupportBundleRequest("sb-0123456789abcdef", expires_at=1_800_000_000.5)
    assert SupportBundleRequest.from_json(ask.to_json()) == ask
    assert not ask.expired(1_800_000_000.0) and ask.expired(1_800_000_000.5)
    old = SupportBundleRequest.from_json(b'{"schema": 1, "request_id": "sb-0123456789abcdef"}')
    assert old.expires_at is None and not old.expired(1e12)  # a cloud from before: no expiry
    assert b"expires_at" not in old.to_json()  # what an old core reads stays as it was
    with pytest.raises(InvalidMessage) as bad:
        SupportBundleRequest.from_json(b'{"request_id": "sb-0123456789abcdef", "expires_at": "x"}')
    assert bad.value.field == "expires_at"
