"""Greengrass V1 discovery responses (pure): what ``GET /greengrass/discover/thing/X`` says.

The shape and the error format are fixed by the V1 SDKs (see ``compat.md``): every
response, errors included, is a non-empty JSON body.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hedgerow.cloud.storage.repository import DiscoveryGroup

#: Account and region in the ARNs discovery reports (the SDKs only key on them).
ARN_PREFIX = "arn:aws:iot:hedgerow:000000000000:thing/"

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
}


def core_arn(core: str) -> str:
    return ARN_PREFIX + core


def discovery_body(groups: Sequence[tuple[DiscoveryGroup, Sequence[str]]]) -> dict[str, Any]:
    """``groups``: each group the thing is in with the CAs (PEM) to list for it."""
    return {
        "GGGroups": [
            {
                "GGGroupId": group.group,
                "Cores": [
                    {
                        "thingArn": core_arn(group.core),
                        "Connectivity": [
                            {
                                "Id": f"{e.host}_{e.port}",
                                "HostAddress": e.host,
                                "PortNumber": e.port,
                                "Metadata": e.metadata,
                            }
                            for e in group.endpoints
                        ],
                    }
                ],
                "CAs": list(cas),
            }
            for group, cas in groups
        ]
    }


def error_body(status: int, message: str) -> dict[str, Any]:
    """The V1 error shape (``errorMessage``), with ``message`` for Hedgerow's own clients."""
    return {"errorMessage": message, "message": message, "status": status}


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
