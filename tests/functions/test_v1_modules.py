"""The clean-room V1 modules and ARN helpers, and the IPC server's refusals."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hedgerow.functions import FunctionHost, FunctionSpec
from hedgerow.functions.v1 import V1_PATH
from hedgerow.functions.v1 import arn as arns

from .helpers import Recorder, write_bundle


@pytest.fixture
def v1_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(V1_PATH))
    yield
    for name in list(sys.modules):
        if name.startswith(("greengrass_common", "greengrass_ipc_python_sdk")):
            del sys.modules[name]


def test_function_arn_fields(v1_modules: None) -> None:
    fields_module = importlib.import_module("greengrass_common.function_arn_fields")
    FunctionArnFields = fields_module.FunctionArnFields
    fields = FunctionArnFields("arn:aws:lambda:us-east-1:123456789012:function:hello:3")
    assert (fields.region, fields.account_id, fields.name, fields.qualifier) == (
        "us-east-1",
        "123456789012",
        "hello",
        "3",
    )
    assert fields.unqualified_arn == "arn:aws:lambda:us-east-1:123456789012:function:hello"
    assert FunctionArnFields.build_function_arn(fields.unqualified_arn, "3") == fields.function_arn
    assert (
        FunctionArnFields.build_function_arn(fields.unqualified_arn, "") == fields.unqualified_arn
    )
    assert FunctionArnFields("arn:aws:lambda:::function:GGRouter").qualifier == ""
    with pytest.raises(ValueError):
        FunctionArnFields("arn:aws:s3:::bucket")


def test_arn_helpers() -> None:
    arn = arns.function_arn("temp-correct", 2, "local")
    assert arn == "arn:aws:lambda:local:000000000000:function:temp-correct:2"
    assert arns.function_name(arn) == "temp-correct"
    assert arns.function_name("arn:aws:lambda:us-east-1:1:function:other") == "other"
    assert arns.function_name("plain-name") == "plain-name"
    assert arns.function_name("arn:aws:iot:x") is None
    assert arns.same_service("arn:aws:lambda:::function:GGShadowService:1", arns.SHADOW_ARN)


async def test_ipc_server_refuses_unknown_tokens_and_paths(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, "v", {"v.py": "def function_handler(e, c):\n    return 1\n"})
    spec = FunctionSpec(name="v", handler="v.function_handler", runtime="greengrass-v1")
    async with FunctionHost(tmp_path / "work", publish=Recorder()) as host:
        await host.apply([spec], {"v": bundle})
        base = f"http://127.0.0.1:{host.v1_port}"
        async with httpx.AsyncClient(base_url=base) as client:
            refused = await client.post(f"/2016-11-01/functions/{arns.ROUTER_ARN}", content=b"x")
            assert refused.status_code == 403
            token = host.v1_token("v")
            assert token is not None
            headers = {"Authorization": token}
            missing = await client.get(
                "/2016-11-01/functions/x", headers={**headers, "X-Amz-InvocationId": "zz"}
            )
            assert missing.status_code == 404
            no_topic = await client.post(
                f"/2016-11-01/functions/{arns.ROUTER_ARN}", headers=headers, content=b"x"
            )
            assert no_topic.status_code == 400
            elsewhere = await client.get("/other", headers=headers)
            assert elsewhere.status_code == 404
            # a RequestResponse post then get, straight over HTTP (keep-alive connection)
            posted = await client.post(
                "/2016-11-01/functions/arn:aws:lambda:::function:v",
                headers={**headers, "X-Amz-Invocation-Type": "RequestResponse"},
                content=b"{}",
            )
            assert posted.status_code == 202
            invocation = posted.headers["x-amz-invocationid"]
            result = await asyncio.wait_for(
                client.get(
                    "/2016-11-01/functions/arn:aws:lambda:::function:v",
                    headers={**headers, "X-Amz-InvocationId": invocation},
                ),
                10,
            )
            assert result.status_code == 200 and result.content == b"1"
            assert result.headers["x-amz-function-error"] == ""
            # an undeclared secret: the V1 error in the payload, as the SDK reads it
            posted = await client.post(
                f"/2016-11-01/functions/{arns.SECRETS_ARN}",
                headers={**headers, "X-Amz-Invocation-Type": "RequestResponse"},
                content=b'{"SecretId": "x"}',
            )
            secret = await client.get(
                f"/2016-11-01/functions/{arns.SECRETS_ARN}",
                headers={**headers, "X-Amz-InvocationId": posted.headers["x-amz-invocationid"]},
            )
            assert secret.headers["x-amz-function-error"] == ""
            assert secret.json()["Status"] == 403
            assert "does not declare secret 'x'" in secret.json()["Message"]
