"""Secrets in the function runtime: a function reads only what it declares, through the
real PyPI greengrasssdk (V1) or ``context.secrets`` (native)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hedgerow.functions import FunctionHost, FunctionSpec
from hedgerow.functions.errors import InvalidFunctionSpec
from hedgerow.functions.secrets import (
    SecretVersion,
    parse_v1_request,
    secret_name,
    v1_reply,
)

from .helpers import Recorder, write_bundle

V1_READER = """
    import base64
    import greengrasssdk

    secrets = greengrasssdk.client("secretsmanager")

    def function_handler(event, context):
        out = {}
        got = secrets.get_secret_value(SecretId=event["id"], VersionStage=event.get("stage", ""))
        got["CreatedDate"] = got["CreatedDate"].isoformat()
        out["got"] = got
        try:
            secrets.get_secret_value(SecretId="db-admin")
            out["undeclared"] = "read"
        except Exception as exc:
            out["undeclared"] = [type(exc).__name__, str(exc)]
        try:
            secrets.get_secret_value(SecretId="api-key", VersionStage="NOPE")
            out["no_stage"] = "read"
        except Exception as exc:
            out["no_stage"] = [type(exc).__name__, str(exc)]
        return out
"""

NATIVE_READER = """
    def handler(event, context):
        out = {"current": context.secrets.get("api-key"),
               "previous": context.secrets.get("api-key", "AWSPREVIOUS"),
               "version": context.secrets.get_version("api-key").version_id}
        try:
            context.secrets.get("db-admin")
        except Exception as exc:
            out["undeclared"] = [type(exc).__name__, str(exc)]
        return out
"""

VERSIONS = {
    ("api-key", "AWSCURRENT"): SecretVersion(
        "api-key", "v2-uuid", ("AWSCURRENT",), 1_700_000_000_000, b"s3cr3t-v2"
    ),
    ("api-key", "AWSPREVIOUS"): SecretVersion(
        "api-key", "v1-uuid", ("AWSPREVIOUS",), 1_600_000_000_000, b"s3cr3t-v1"
    ),
    ("db-admin", "AWSCURRENT"): SecretVersion(
        "db-admin", "d-uuid", ("AWSCURRENT",), 1_700_000_000_000, b"root-pw"
    ),
}


async def source(name: str, stage: str) -> SecretVersion | None:
    return VERSIONS.get((name, stage))


def test_the_v1_wire_shape() -> None:
    assert secret_name("arn:aws:secretsmanager:eu-west-1:123456789012:secret:api-key") == "api-key"
    assert parse_v1_request(b'{"SecretId": "api-key"}') == ("api-key", "AWSCURRENT")
    with pytest.raises(ValueError, match="SecretId is required"):
        parse_v1_request(b"{}")
    binary = SecretVersion("cert", "v", ("AWSCURRENT",), 5, b"\x00\xff", binary=True)
    reply = json.loads(v1_reply(binary, "eu-west-1"))
    assert reply["SecretBinary"] == "AP8=" and "SecretString" not in reply
    assert reply["ARN"] == "arn:aws:secretsmanager:eu-west-1:000000000000:secret:cert"
    with pytest.raises(InvalidFunctionSpec, match="secrets"):
        FunctionSpec(name="f", handler="m.h", secrets=("no spaces",))
    assert "s3cr3t" not in repr(VERSIONS)  # values stay out of reprs (and so of logs)


async def test_v1_and_native_functions_read_only_what_they_declare(tmp_path: Path) -> None:
    bundles = {
        "v1-reader": write_bundle(tmp_path, "v1", {"reader.py": V1_READER}),
        "native-reader": write_bundle(tmp_path, "native", {"native.py": NATIVE_READER}),
    }
    specs = [
        FunctionSpec(name="v1-reader", handler="reader.function_handler",
                     runtime="greengrass-v1", secrets=("api-key",)),
        FunctionSpec(name="native-reader", handler="native.handler", secrets=("api-key",)),
    ]  # fmt: skip
    async with FunctionHost(
        tmp_path / "work", publish=Recorder(), secrets=source, region="eu-west-1"
    ) as host:
        await host.apply(specs, bundles)
        event = {"id": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:api-key"}
        result = json.loads(await host.invoke("v1-reader", json.dumps(event).encode(), timeout=20))
        got = result["got"]
        assert got == {
            "ARN": "arn:aws:secretsmanager:eu-west-1:000000000000:secret:api-key",
            "Name": "api-key",
            "VersionId": "v2-uuid",
            "SecretString": "s3cr3t-v2",
            "VersionStages": ["AWSCURRENT"],
            "CreatedDate": got["CreatedDate"],
        }
        assert got["CreatedDate"].startswith("2023-11-14")
        kind, message = result["undeclared"]
        assert kind == "SecretsManagerError"
        assert "403" in message and "does not declare secret 'db-admin'" in message
        assert "--secret db-admin" in message
        kind, message = result["no_stage"]
        assert "404" in message and "no version labelled NOPE" in message
        previous = json.loads(
            await host.invoke(
                "v1-reader",
                json.dumps({"id": "api-key", "stage": "AWSPREVIOUS"}).encode(),
                timeout=20,
            )  # fmt: skip
        )
        assert previous["got"]["SecretString"] == "s3cr3t-v1"
        native = json.loads(await host.invoke("native-reader", b"{}", timeout=20))
        assert native["current"] == "s3cr3t-v2" and native["previous"] == "s3cr3t-v1"
        assert native["version"] == "v2-uuid"
        assert native["undeclared"][0] == "FunctionCallError"
        assert "does not declare secret 'db-admin'" in native["undeclared"][1]
    logs = "".join(p.read_text() for p in (tmp_path / "work" / "logs").glob("*.log*"))
    assert "s3cr3t" not in logs and "root-pw" not in logs
