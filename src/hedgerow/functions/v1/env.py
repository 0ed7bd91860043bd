"""The environment a Greengrass V1 function sees (without MY_FUNCTION_ARN the SDK mocks)."""

from __future__ import annotations

from hedgerow.functions.v1 import arn as arns


def v1_environment(
    *,
    function_arn: str,
    token: str,
    port: int,
    encoding: str,
    region: str,
    thing_name: str,
    name: str,
    version: int,
    memory_mb: int,
) -> dict[str, str]:
    return {
        "MY_FUNCTION_ARN": function_arn,
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": token,
        "GG_DAEMON_PORT": str(port),
        "ROUTER_FUNCTION_ARN": arns.ROUTER_ARN,
        "SHADOW_FUNCTION_ARN": arns.SHADOW_ARN,
        "SECRETS_MANAGER_FUNCTION_ARN": arns.SECRETS_ARN,
        "ENCODING_TYPE": encoding,
        "GGC_MAX_INTERFACE_VERSION": arns.INTERFACE_VERSION,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_IOT_THING_NAME": thing_name,
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": str(version),
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
    }
