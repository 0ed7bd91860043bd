"""Function ARNs the V1 SDK expects, and the names of the core's built-in V1 services."""

from __future__ import annotations

from typing import Final

ACCOUNT: Final = "000000000000"
ROUTER_ARN: Final = "arn:aws:lambda:::function:GGRouter"
SHADOW_ARN: Final = "arn:aws:lambda:::function:GGShadowService"
SECRETS_ARN: Final = "arn:aws:lambda:::function:GGSecretManager:1"
INTERFACE_VERSION: Final = "1.5"


def function_arn(name: str, version: int | str, region: str) -> str:
    """``arn:aws:lambda:<region>:<account>:function:<name>:<version>``."""
    return f"arn:aws:lambda:{region}:{ACCOUNT}:function:{name}:{version}"


def function_name(arn: str) -> str | None:
    """The function name of an ARN (qualified or not) or a bare name; None if malformed.

    Region and account are ignored: a V1 function that invokes
    ``arn:aws:lambda:us-east-1:123456789012:function:other:3`` reaches ``other`` here.
    """
    if not arn.startswith("arn:"):
        return arn or None
    parts = arn.split(":")
    if len(parts) < 7 or parts[2] != "lambda" or parts[5] != "function" or not parts[6]:
        return None
    return parts[6]


def same_service(arn: str, service_arn: str) -> bool:
    """Is ``arn`` the built-in service (qualifier and region ignored)?"""
    return function_name(arn) == function_name(service_arn)
