"""The Starlette application: every resource's operations, auth, JSON errors, OpenAPI."""

from __future__ import annotations

import importlib
import logging
import time
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from hedgerow.cloud.api import (
    alerts,
    broker_auth,
    claims,
    connectors,
    cores,
    dashboards,
    deployments,
    exports,
    functions,
    groups,
    logs,
    messages,
    releases,
    rollouts,
    secrets,
    shadows,
    subscriptions,
    support_bundles,
    system,
    things,
)
from hedgerow.cloud.api.edge import TOKEN_IN_URL, ApiContext, Operation, json_body
from hedgerow.cloud.api.openapi import openapi_document
from hedgerow.cloud.api.parsing import parse
from hedgerow.cloud.errors import CloudError, Unauthorized

log = logging.getLogger(__name__)


async def openapi(ctx: ApiContext, request: Request) -> Response:
    return JSONResponse(OPENAPI)


OPERATIONS: list[Operation] = [
    *system.OPERATIONS,
    Operation("GET", "/api/openapi.json", "This document", openapi, public=True),
    *groups.OPERATIONS,
    *dashboards.OPERATIONS,
    *functions.OPERATIONS,
    *secrets.OPERATIONS,
    *subscriptions.OPERATIONS,
    *connectors.OPERATIONS,
    *deployments.OPERATIONS,
    *rollouts.OPERATIONS,
    *cores.OPERATIONS,
    *support_bundles.OPERATIONS,
    *things.OPERATIONS,
    *shadows.OPERATIONS,
    *claims.OPERATIONS,
    *messages.OPERATIONS,
    *releases.OPERATIONS,
    *logs.OPERATIONS,
    *alerts.OPERATIONS,
    *exports.OPERATIONS,
]
OPENAPI: dict[str, Any] = openapi_document(OPERATIONS)


def error_json(status: int, message: str, field_name: str | None = None) -> JSONResponse:
    error: dict[str, Any] = {"status": status, "message": message}
    if field_name:
        error["field"] = field_name
    return JSONResponse({"error": error}, status_code=status)


def endpoint(op: Operation, ctx: ApiContext) -> Any:
    """``op`` as a Starlette endpoint: token check, body parsing, errors as JSON."""

    async def serve(request: Request) -> Response:
        started = time.perf_counter()
        try:
            if "token" in request.query_params:  # public routes too: never teach it
                raise Unauthorized(TOKEN_IN_URL)
            if not op.public:
                await ctx.authorize(request, op.ticket)
            if op.body is None:
                response: Response = await op.handler(ctx, request)
            else:
                body = parse(op.body, await json_body(request))
                response = await op.handler(ctx, request, body)
            return response
        except CloudError as exc:
            log.info(
                "api.refused method=%s path=%s status=%s reason=%s",
                request.method,
                request.url.path,
                exc.status,
                exc.message,
            )
            return error_json(exc.status, exc.message, getattr(exc, "field", None))
        finally:
            ctx.latency.observe(op.method, op.path, time.perf_counter() - started)

    serve.__name__ = op.handler.__name__
    return serve


def console_routes() -> list[BaseRoute]:
    """The console's pages, when ``hedgerow.cloud.console`` provides ``routes()``."""
    try:
        module = importlib.import_module("hedgerow.cloud.console")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("hedgerow.cloud.console"):
            return []
        raise
    routes = getattr(module, "routes", None)
    return list(routes()) if callable(routes) else []


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {
        404: f"no such path {request.url.path}",
        405: f"method {request.method} is not allowed on {request.url.path}",
    }
    return error_json(exc.status_code, message.get(exc.status_code, str(exc.detail)))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("api.failed method=%s path=%s", request.method, request.url.path, exc_info=exc)
    return error_json(500, "internal error (see the server log)")


def create_app(ctx: ApiContext) -> Starlette:
    routes: list[BaseRoute] = [
        Route(op.path, endpoint(op, ctx), methods=[op.method]) for op in OPERATIONS
    ]
    if ctx.broker_auth is not None:
        routes += broker_auth.routes(ctx.broker_auth)
    routes += console_routes()
    app = Starlette(
        routes=routes, exception_handlers={HTTPException: _http_error, Exception: _server_error}
    )
    app.state.context = ctx
    return app
