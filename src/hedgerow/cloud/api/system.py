"""``/api/v1/health`` and ``/api/v1/status``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hedgerow import __version__
from hedgerow.cloud.api.edge import ApiContext, Operation
from hedgerow.cloud.api.responses import Health, respond


async def health(ctx: ApiContext, request: Request) -> Response:
    return respond(Health("ok", __version__))


async def status(ctx: ApiContext, request: Request) -> Response:
    return JSONResponse(ctx.status())


OPERATIONS = [
    Operation(
        "GET", "/api/v1/health", "Liveness and version", health, public=True, response=Health
    ),
    Operation("GET", "/api/v1/status", "Endpoints and counters of this server", status),
]
