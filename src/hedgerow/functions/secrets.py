"""Secrets a function reads: the value type, the call target and the V1 wire shape (pure).

The core hands the runtime a :data:`SecretSource` (``await source(name, stage)`` returning
a :class:`SecretVersion` or None); the runtime decides who may ask (only the secrets a
function declares, ``FunctionSpec.secrets``) and answers in two shapes:

* native: ``context.secrets.get(name)`` is a CALL to :func:`call_target` (``$secret/<name>``
  — ``$`` starts no function name), answered with :func:`to_call_reply`;
* Greengrass V1: ``greengrasssdk.client('secretsmanager').get_secret_value(SecretId=..,
  VersionStage=..)`` invokes the GGSecretManager ARN with ``{"SecretId", "VersionStage"}``;
  the answer is the JSON the V1 SDK reads (:func:`v1_reply`: ``ARN``, ``Name``,
  ``VersionId``, ``SecretString`` or ``SecretBinary`` (base64), ``VersionStages``,
  ``CreatedDate`` in epoch milliseconds) or ``{"Status", "Message"}``, which the SDK raises
  as ``SecretsManagerError``.

Values never go to a log here: only names, stages and version ids.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from hedgerow.functions.errors import InvocationError
from hedgerow.functions.v1.arn import ACCOUNT

CURRENT: Final = "AWSCURRENT"
PREVIOUS: Final = "AWSPREVIOUS"
CALL_PREFIX: Final = "$secret/"


@dataclass(frozen=True)
class SecretVersion:
    """One version of a secret, decrypted (held by the core only while it is asked for)."""

    name: str
    version_id: str
    stages: tuple[str, ...]
    created_ms: int
    value: bytes = field(repr=False)
    binary: bool = False


SecretSource = Callable[[str, str], Awaitable[SecretVersion | None]]


class SecretUnavailable(InvocationError):
    """The secret is unknown, not declared by the function, or not on this core.

    ``status`` is what the V1 answer carries (403 not declared, 404 not found)."""

    def __init__(self, secret: str, reason: str, status: int) -> None:
        super().__init__(f"secret {secret}", reason)
        self.secret = secret
        self.status = status


def call_target(name: str) -> str:
    return CALL_PREFIX + name


def parse_call_target(target: str) -> str | None:
    return target[len(CALL_PREFIX) :] if target.startswith(CALL_PREFIX) else None


def secret_arn(name: str, region: str) -> str:
    return f"arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:{name}"


def secret_name(secret_id: str) -> str:
    """The name in a ``SecretId``: a bare name, or the last part of a Secrets Manager ARN."""
    if secret_id.startswith("arn:"):
        parts = secret_id.split(":", 6)
        if len(parts) == 7 and parts[2] == "secretsmanager" and parts[5] == "secret":
            return parts[6]
    return secret_id


def parse_v1_request(body: bytes) -> tuple[str, str]:
    """``(name, stage)`` from the SDK's request; ValueError naming what is wrong."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"the request is not JSON: {exc}") from exc
    secret_id = request.get("SecretId") if isinstance(request, dict) else None
    if not isinstance(secret_id, str) or not secret_id:
        raise ValueError("SecretId is required")
    stage = request.get("VersionStage") or CURRENT
    if not isinstance(stage, str):
        raise ValueError("VersionStage must be a string")
    return secret_name(secret_id), stage


def v1_reply(version: SecretVersion, region: str) -> bytes:
    reply: dict[str, object] = {
        "ARN": secret_arn(version.name, region),
        "Name": version.name,
        "VersionId": version.version_id,
        "VersionStages": list(version.stages),
        "CreatedDate": version.created_ms,
    }
    if version.binary:
        reply["SecretBinary"] = base64.b64encode(version.value).decode()
    else:
        reply["SecretString"] = version.value.decode()
    return json.dumps(reply).encode()


def v1_error(status: int, message: str) -> bytes:
    return json.dumps({"Status": status, "Message": message}).encode()


def to_call_reply(version: SecretVersion) -> bytes:
    return json.dumps(
        {
            "name": version.name,
            "version_id": version.version_id,
            "stages": list(version.stages),
            "created_ms": version.created_ms,
            "binary": version.binary,
            "value": base64.b64encode(version.value).decode(),
        }
    ).encode()


def from_call_reply(payload: bytes) -> SecretVersion:
    data = json.loads(payload)
    return SecretVersion(
        name=data["name"],
        version_id=data["version_id"],
        stages=tuple(data["stages"]),
        created_ms=data["created_ms"],
        value=base64.b64decode(data["value"]),
        binary=data["binary"],
    )
