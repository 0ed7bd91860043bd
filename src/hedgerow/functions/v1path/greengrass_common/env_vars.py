"""The V1 environment, read once at import as the SDK expects (MY_FUNCTION_ARN None = mock)."""

from __future__ import annotations

import os

MY_FUNCTION_ARN = os.environ.get("MY_FUNCTION_ARN")
AUTH_TOKEN = os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
GG_DAEMON_PORT = os.environ.get("GG_DAEMON_PORT")
ROUTER_FUNCTION_ARN = os.environ.get("ROUTER_FUNCTION_ARN", "arn:aws:lambda:::function:GGRouter")
SHADOW_FUNCTION_ARN = os.environ.get(
    "SHADOW_FUNCTION_ARN", "arn:aws:lambda:::function:GGShadowService"
)
SECRETS_MANAGER_FUNCTION_ARN = os.environ.get(
    "SECRETS_MANAGER_FUNCTION_ARN", "arn:aws:lambda:::function:GGSecretManager:1"
)
ENCODING_TYPE = os.environ.get("ENCODING_TYPE", "json")
GGC_MAX_INTERFACE_VERSION = os.environ.get("GGC_MAX_INTERFACE_VERSION", "1.5")
AWS_REGION = os.environ.get("AWS_REGION")
AWS_IOT_THING_NAME = os.environ.get("AWS_IOT_THING_NAME")
