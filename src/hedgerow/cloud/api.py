"""The REST API (Starlette): every registry object, deployments, telemetry, OpenAPI.

All routes under ``/api/v1`` need ``Authorization: Bearer <token>`` (a token in the URL is
refused: URLs end up in proxy logs and browser history); the live stream alone also opens
with a single-use ticket (``tickets.py``) for ``EventSource`` clients; errors are JSON
``{"error": {"status", "message", "field"?}}``. ``/api/openapi.json`` describes the routes
and ``/api/v1/messages/stream`` sends live telemetry as server-sent events. If
``hedgerow.cloud.console`` exists and has ``routes()``, its routes are mounted too.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hmac
import importlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from hedgerow import __version__
from hedgerow.cloud.errors import CloudError, InvalidInput, TooLarge, Unauthorized
from hedgerow.cloud.services import CloudServices
from hedgerow.cloud.storage.repository import MAX_PAGE
from hedgerow.cloud.tickets import TicketPurpose, Tickets

log = logging.getLogger(__name__)

MAX_JSON_BODY = 1024 * 1024
#: Seconds between polls of the database by a live stream (other processes' ingest).
STREAM_POLL_SECONDS = 0.5
STREAM_KEEPALIVE_SECONDS = 15.0
STREAM_BATCH = 500

Handler = Callable[[Request], Awaitable[Response]]
TICKETS_PATH = "/api/v1/messages/stream/tickets"
TOKEN_IN_URL = (
    "the token is not accepted in the URL (proxies and browser history keep URLs): send "
    "'Authorization: Bearer <token>'; a client that cannot set headers (EventSource) gets "
    f"a single-use ticket with POST {TICKETS_PATH} and opens the stream with ?ticket="
)


@dataclass
class ApiContext:
    services: CloudServices
    tokens: Sequence[str]
    max_upload_bytes: int
    status: Callable[[], dict[str, Any]] = dict
    tickets: Tickets | None = None
    _valid_tokens: set[str] = field(default_factory=set)

    async def authorize(self, request: Request, ticket: TicketPurpose | None = None) -> None:
        """The bearer token from the header; ``ticket``: a single-use ticket may stand in."""
        if "token" in request.query_params:
            raise Unauthorized(TOKEN_IN_URL)
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header and "ticket" in request.query_params:
            value = request.query_params["ticket"]
            if ticket is None or self.tickets is None:
                raise Unauthorized(
                    "a ticket opens only the live stream: send 'Authorization: Bearer <token>'"
                )
            if await asyncio.to_thread(self.tickets.redeem, value, ticket):
                return
            raise Unauthorized(
                f"invalid, used or expired ticket: get a new one with POST {TICKETS_PATH} "
                "(a ticket opens one stream, once, within a minute)"
            )
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(
                "missing token: send 'Authorization: Bearer <token>' (see DATA/admin-token)"
            )
        token = token.strip()
        if any(hmac.compare_digest(token, t) for t in self.tokens) or token in self._valid_tokens:
            return
        if await asyncio.to_thread(self.services.repository.token_valid, token):
            self._valid_tokens.add(token)
            return
        raise Unauthorized("invalid token")


def error_json(status: int, message: str, field_name: str | None = None) -> JSONResponse:
    error: dict[str, Any] = {"status": status, "message": message}
    if field_name:
        error["field"] = field_name
    return JSONResponse({"error": error}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"body of {declared} bytes is over the limit of {limit} bytes", limit=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body is over the limit of {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request) -> dict[str, Any]:
    data = await read_body(request, MAX_JSON_BODY)
    if not data.strip():
        return {}
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidInput("the body must be a JSON object")
    return value


def _int_param(
    request: Request, name: str, default: int, low: int = 0, high: int = MAX_PAGE
) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise InvalidInput(f"{name} must be an integer", field=name) from exc
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be within {low}..{high}", field=name)
    return value


def _time_param(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(raw)
    except ValueError as exc:
        raise InvalidInput(f"{name} must be epoch seconds or ISO-8601", field=name) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def items(values: Sequence[Any]) -> JSONResponse:
    return JSONResponse({"items": [v.to_json() for v in values], "count": len(values)})


def _thing_created(created: Any) -> dict[str, Any]:
    return {
        "thing": created.thing.to_json(),
        "certificate": created.certificate_pem,
        "private_key": created.private_key_pem,
        "root_ca": created.root_ca_pem,
    }


def _core_created(created: Any) -> dict[str, Any]:
    return {
        "core": created.core.to_json(),
        "bundle": base64.b64encode(created.bundle).decode(),
        "bundle_name": f"{created.core.name}.tar.gz",
    }


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    handler: Handler
    public: bool = False
    request_body: str | None = None
    #: a single-use ticket of this purpose may stand in for the token (``?ticket=``)
    ticket: TicketPurpose | None = None


def operations(ctx: ApiContext) -> list[Operation]:
    s = ctx.services

    def p(request: Request, name: str) -> str:
        return str(request.path_params[name])

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def status(request: Request) -> Response:
        return JSONResponse(ctx.status())

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(operations(ctx)))

    # groups
    async def list_groups(request: Request) -> Response:
        return items(await s.list_groups())

    async def create_group(request: Request) -> Response:
        return JSONResponse(
            (await s.create_group(await json_body(request))).to_json(), status_code=201
        )

    async def get_group(request: Request) -> Response:
        return JSONResponse((await s.get_group(p(request, "group"))).to_json())

    async def update_group(request: Request) -> Response:
        return JSONResponse(
            (await s.update_group(p(request, "group"), await json_body(request))).to_json()
        )

    async def delete_group(request: Request) -> Response:
        await s.delete_group(p(request, "group"))
        return JSONResponse({"deleted": p(request, "group")})

    async def group_cas(request: Request) -> Response:
        return JSONResponse({"items": await s.group_cas(p(request, "group"))})

    async def rotate_group_ca(request: Request) -> Response:
        return JSONResponse({"items": await s.rotate_group_ca(p(request, "group"))})

    async def attach_thing(request: Request) -> Response:
        return JSONResponse(
            (await s.attach_thing(p(request, "group"), await json_body(request))).to_json(),
            status_code=201,
        )

    async def detach_thing(request: Request) -> Response:
        await s.detach_thing(p(request, "group"), p(request, "thing"))
        return JSONResponse({"detached": p(request, "thing")})

    # cores
    async def list_cores(request: Request) -> Response:
        return items(await s.list_cores())

    async def create_core(request: Request) -> Response:
        return JSONResponse(
            _core_created(await s.create_core(await json_body(request))), status_code=201
        )

    async def get_core(request: Request) -> Response:
        return JSONResponse((await s.get_core(p(request, "core"))).to_json())

    async def delete_core(request: Request) -> Response:
        await s.delete_core(p(request, "core"))
        return JSONResponse({"deleted": p(request, "core")})

    async def core_connectivity(request: Request) -> Response:
        return JSONResponse(
            (await s.set_connectivity(p(request, "core"), await json_body(request))).to_json()
        )

    async def core_bundle(request: Request) -> Response:
        return JSONResponse(
            _core_created(await s.reissue_core_bundle(p(request, "core"))), status_code=201
        )

    # things
    async def list_things(request: Request) -> Response:
        return items(
            await s.list_things(
                group=request.query_params.get("group"),
                prefix=request.query_params.get("prefix", ""),
                limit=_int_param(request, "limit", 1000, 1),
                offset=_int_param(request, "offset", 0, 0, 10**9),
            )
        )

    async def create_thing(request: Request) -> Response:
        return JSONResponse(
            _thing_created(await s.create_thing(await json_body(request))), status_code=201
        )

    async def get_thing(request: Request) -> Response:
        return JSONResponse((await s.get_thing(p(request, "thing"))).to_json())

    async def update_thing(request: Request) -> Response:
        return JSONResponse(
            (await s.update_thing(p(request, "thing"), await json_body(request))).to_json()
        )

    async def delete_thing(request: Request) -> Response:
        await s.delete_thing(p(request, "thing"))
        return JSONResponse({"deleted": p(request, "thing")})

    async def revoke_thing(request: Request) -> Response:
        return JSONResponse({"revoked": await s.revoke_thing(p(request, "thing"))})

    async def thing_certificate(request: Request) -> Response:
        created = await s.new_thing_certificate(p(request, "thing"), await json_body(request))
        return JSONResponse(_thing_created(created), status_code=201)

    # certificates
    async def list_certificates(request: Request) -> Response:
        return items(
            await s.list_certificates(
                request.query_params.get("owner"), request.query_params.get("kind")
            )
        )

    async def get_certificate(request: Request) -> Response:
        cert = await s.get_certificate(p(request, "fingerprint"))
        return JSONResponse({**cert.to_json(), "pem": cert.pem})

    async def revoke_certificate(request: Request) -> Response:
        return JSONResponse((await s.revoke_certificate(p(request, "fingerprint"))).to_json())

    # artifacts
    async def upload_artifact(request: Request) -> Response:
        data = await read_body(request, ctx.max_upload_bytes)
        if not data:
            raise InvalidInput("empty artifact: send the zip as the request body")
        sha, size = await s.put_artifact(data)
        return JSONResponse({"sha256": sha, "size": size}, status_code=201)

    async def get_artifact(request: Request) -> Response:
        return Response(await s.get_artifact(p(request, "sha256")), media_type="application/zip")

    # functions
    async def list_functions(request: Request) -> Response:
        return items(await s.list_functions(p(request, "group")))

    async def create_function(request: Request) -> Response:
        return JSONResponse(
            (await s.create_function(p(request, "group"), await json_body(request))).to_json(),
            status_code=201,
        )

    async def get_function(request: Request) -> Response:
        version = request.query_params.get("version")
        if version is not None and not version.isdigit():
            raise InvalidInput("version must be a positive integer", field="version")
        found = await s.get_function(
            p(request, "group"), p(request, "function"), int(version) if version else None
        )
        return JSONResponse(found.to_json())

    async def update_function(request: Request) -> Response:
        updated = await s.update_function(
            p(request, "group"), p(request, "function"), await json_body(request)
        )
        return JSONResponse(updated.to_json())

    async def delete_function(request: Request) -> Response:
        await s.delete_function(p(request, "group"), p(request, "function"))
        return JSONResponse({"deleted": p(request, "function")})

    async def function_versions(request: Request) -> Response:
        return items(await s.function_versions(p(request, "group"), p(request, "function")))

    # subscriptions
    async def list_subscriptions(request: Request) -> Response:
        return items(await s.list_subscriptions(p(request, "group")))

    async def add_subscription(request: Request) -> Response:
        return JSONResponse(
            (await s.add_subscription(p(request, "group"), await json_body(request))).to_json(),
            status_code=201,
        )

    def subscription_id(request: Request) -> int:
        raw = p(request, "subscription")
        if not raw.isdigit():
            raise InvalidInput("subscription id must be an integer")
        return int(raw)

    async def get_subscription(request: Request) -> Response:
        found = await s.get_subscription(p(request, "group"), subscription_id(request))
        return JSONResponse(found.to_json())

    async def update_subscription(request: Request) -> Response:
        body = await json_body(request)
        updated = await s.update_subscription(p(request, "group"), subscription_id(request), body)
        return JSONResponse(updated.to_json())

    async def update_core(request: Request) -> Response:
        body = await json_body(request)
        unknown = set(body) - {"endpoints"}
        if unknown:
            raise InvalidInput(f"unknown fields: {', '.join(sorted(unknown))}; allowed: endpoints")
        return JSONResponse((await s.set_connectivity(p(request, "core"), body)).to_json())

    async def delete_subscription(request: Request) -> Response:
        await s.delete_subscription(p(request, "group"), subscription_id(request))
        return JSONResponse({"deleted": subscription_id(request)})

    # deployments
    async def deploy(request: Request) -> Response:
        return JSONResponse(
            (await s.deploy(p(request, "group"), await json_body(request))).to_json(),
            status_code=201,
        )

    async def list_deployments(request: Request) -> Response:
        return items(
            await s.list_deployments(p(request, "group"), _int_param(request, "limit", 100, 1))
        )

    async def get_deployment(request: Request) -> Response:
        return JSONResponse((await s.get_deployment(p(request, "deployment"))).to_json())

    async def fleet_apply(request: Request) -> Response:
        return JSONResponse(await s.fleet_apply(await json_body(request)))

    # telemetry
    async def messages(request: Request) -> Response:
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidInput("order must be asc or desc", field="order")
        after = request.query_params.get("after_id")
        found = await s.query_messages(
            topic_filter=request.query_params.get("filter") or None,
            since=_time_param(request, "since"),
            until=_time_param(request, "until"),
            limit=_int_param(request, "limit", 100, 1),
            after_id=int(after) if after and after.isdigit() else None,
            newest_first=order == "desc",
        )
        return items(found)

    async def publish(request: Request) -> Response:
        return JSONResponse(await s.publish_to_cores(await json_body(request)))

    async def stream(request: Request) -> Response:
        topic_filter = request.query_params.get("filter") or None
        if topic_filter:
            await s.query_messages(topic_filter=topic_filter, since=None, until=None, limit=1)
        after = request.query_params.get("after_id")
        return StreamingResponse(
            _stream(s, topic_filter, int(after) if after and after.isdigit() else None),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    async def stream_ticket(request: Request) -> Response:
        if ctx.tickets is None:
            raise CloudError("tickets are not available on this server")
        issued = await asyncio.to_thread(ctx.tickets.issue, TicketPurpose.LIVE_STREAM)
        return JSONResponse(
            {
                "ticket": issued.value,
                "purpose": issued.purpose.value,
                "expires_in": issued.expires_in,
                "url": f"/api/v1/messages/stream?ticket={issued.value}",
            },
            status_code=201,
            headers={"cache-control": "no-store"},
        )

    g = "/api/v1/groups/{group}"
    return [
        Operation("GET", "/api/v1/health", "Liveness and version", health, public=True),
        Operation("GET", "/api/openapi.json", "This document", openapi, public=True),
        Operation("GET", "/api/v1/status", "Endpoints and counters of this server", status),
        Operation("GET", "/api/v1/groups", "List groups", list_groups),
        Operation(
            "POST",
            "/api/v1/groups",
            "Create a group {name, description?, settings?, ca_rotation_days?}",
            create_group,
            request_body="object",
        ),
        Operation("GET", g, "Show a group", get_group),
        Operation(
            "PATCH",
            g,
            "Update a group {description?, settings?, ca_rotation_days?}",
            update_group,
            request_body="object",
        ),
        Operation(
            "DELETE",
            g,
            "Delete a group with its core, functions, subscriptions and deployments",
            delete_group,
        ),
        Operation("GET", g + "/cas", "The group CAs discovery lists (current first)", group_cas),
        Operation("POST", g + "/cas/rotate", "Rotate the group CA now", rotate_group_ca),
        Operation(
            "POST", g + "/things", "Attach a thing {thing}", attach_thing, request_body="object"
        ),
        Operation("DELETE", g + "/things/{thing}", "Detach a thing", detach_thing),
        Operation("GET", g + "/functions", "List functions (latest versions)", list_functions),
        Operation(
            "POST",
            g + "/functions",
            "Create a function {name, handler, artifact: sha256, runtime?, pinned?, memory_mb?, timeout_s?, max_concurrency?, environment?, encoding?, run_as?}",
            create_function,
            request_body="object",
        ),
        Operation("GET", g + "/functions/{function}", "Show a function (?version=N)", get_function),
        Operation(
            "PATCH",
            g + "/functions/{function}",
            "New version of a function (changed fields)",
            update_function,
            request_body="object",
        ),
        Operation("DELETE", g + "/functions/{function}", "Delete a function", delete_function),
        Operation(
            "GET",
            g + "/functions/{function}/versions",
            "All versions of a function",
            function_versions,
        ),
        Operation("GET", g + "/subscriptions", "List subscriptions", list_subscriptions),
        Operation(
            "POST",
            g + "/subscriptions",
            "Add a subscription {source, topic, target}",
            add_subscription,
            request_body="object",
        ),
        Operation(
            "GET", g + "/subscriptions/{subscription}", "Show a subscription", get_subscription
        ),
        Operation(
            "PATCH",
            g + "/subscriptions/{subscription}",
            "Change a subscription {source?, topic?, target?}",
            update_subscription,
            request_body="object",
        ),
        Operation(
            "DELETE",
            g + "/subscriptions/{subscription}",
            "Remove a subscription",
            delete_subscription,
        ),
        Operation(
            "POST",
            g + "/deployments",
            "Deploy {kind: new|redeploy|reset, deployment_id?}",
            deploy,
            request_body="object",
        ),
        Operation("GET", g + "/deployments", "Deployment history (newest first)", list_deployments),
        Operation(
            "GET",
            "/api/v1/deployments/{deployment}",
            "A deployment with its status events",
            get_deployment,
        ),
        Operation(
            "POST",
            "/api/v1/fleet/apply",
            "Apply functions and subscriptions to many groups {groups, from_group? | functions, subscriptions, deploy?}",
            fleet_apply,
            request_body="object",
        ),
        Operation("GET", "/api/v1/cores", "List cores", list_cores),
        Operation(
            "POST",
            "/api/v1/cores",
            "Create a core {name, group}: returns its provisioning bundle",
            create_core,
            request_body="object",
        ),
        Operation("GET", "/api/v1/cores/{core}", "Show a core", get_core),
        Operation(
            "PATCH",
            "/api/v1/cores/{core}",
            "Update a core {endpoints}",
            update_core,
            request_body="object",
        ),
        Operation(
            "DELETE",
            "/api/v1/cores/{core}",
            "Delete a core (revokes its certificates)",
            delete_core,
        ),
        Operation(
            "PUT",
            "/api/v1/cores/{core}/connectivity",
            "Set connectivity {endpoints: [{host, port}]}",
            core_connectivity,
            request_body="object",
        ),
        Operation(
            "POST", "/api/v1/cores/{core}/bundle", "New identity and bundle for a core", core_bundle
        ),
        Operation(
            "GET", "/api/v1/things", "List things (?group=&prefix=&limit=&offset=)", list_things
        ),
        Operation(
            "POST",
            "/api/v1/things",
            "Create a thing {name, groups?, attributes?, csr?}",
            create_thing,
            request_body="object",
        ),
        Operation("GET", "/api/v1/things/{thing}", "Show a thing", get_thing),
        Operation(
            "PATCH",
            "/api/v1/things/{thing}",
            "Update a thing {attributes}",
            update_thing,
            request_body="object",
        ),
        Operation(
            "DELETE",
            "/api/v1/things/{thing}",
            "Delete a thing (revokes its certificates)",
            delete_thing,
        ),
        Operation(
            "POST",
            "/api/v1/things/{thing}/revoke",
            "Revoke every certificate of a thing",
            revoke_thing,
        ),
        Operation(
            "POST",
            "/api/v1/things/{thing}/certificates",
            "New certificate for a thing {csr?}",
            thing_certificate,
            request_body="object",
        ),
        Operation(
            "GET", "/api/v1/certificates", "List certificates (?owner=&kind=)", list_certificates
        ),
        Operation(
            "GET", "/api/v1/certificates/{fingerprint}", "Show a certificate", get_certificate
        ),
        Operation(
            "POST",
            "/api/v1/certificates/{fingerprint}/revoke",
            "Revoke a certificate",
            revoke_certificate,
        ),
        Operation(
            "POST",
            "/api/v1/artifacts",
            "Upload a function's code (zip body)",
            upload_artifact,
            request_body="application/zip",
        ),
        Operation("GET", "/api/v1/artifacts/{sha256}", "Download an artifact", get_artifact),
        Operation(
            "GET", "/api/v1/messages", "Telemetry (?filter=&since=&until=&limit=&order=)", messages
        ),
        Operation(
            "POST",
            "/api/v1/messages/publish",
            "Publish from the cloud {topic, payload, retain?} (to cores routed from `cloud`)",
            publish,
            request_body="object",
        ),
        Operation(
            "GET",
            "/api/v1/messages/stream",
            "Live telemetry as server-sent events (?filter=; EventSource clients: ?ticket=)",
            stream,
            ticket=TicketPurpose.LIVE_STREAM,
        ),
        Operation(
            "POST",
            TICKETS_PATH,
            "A single-use ticket opening the live stream once within 60 s (for EventSource)",
            stream_ticket,
        ),
    ]


async def _stream(
    services: CloudServices, topic_filter: str | None, after_id: int | None
) -> AsyncIterator[bytes]:
    if after_id is None:
        after_id = await services.newest_message_id()
    yield b": hedgerow live telemetry\n\n"
    idle = 0.0
    while True:
        top = await services.newest_message_id()
        if top > after_id:
            batch = await services.query_messages(
                topic_filter=topic_filter,
                since=None,
                until=None,
                limit=STREAM_BATCH,
                after_id=after_id,
                up_to_id=top,
                newest_first=False,
            )
            if batch:
                idle = 0.0
                yield b"".join(
                    f"id: {m.id}\nevent: message\ndata: {json.dumps(m.to_json())}\n\n".encode()
                    for m in batch
                )
            if len(batch) == STREAM_BATCH:
                after_id = batch[-1].id
                continue
            after_id = top  # everything up to ``top`` was looked at
        if idle >= STREAM_KEEPALIVE_SECONDS:
            idle = 0.0
            yield b": keepalive\n\n"
        try:
            await asyncio.wait_for(services.messages_written.wait(), STREAM_POLL_SECONDS)
        except TimeoutError:
            idle += STREAM_POLL_SECONDS


def _wrap(op: Operation, ctx: ApiContext) -> Handler:
    async def endpoint(request: Request) -> Response:
        try:
            if "token" in request.query_params:  # public routes too: never teach it
                raise Unauthorized(TOKEN_IN_URL)
            if not op.public:
                await ctx.authorize(request, op.ticket)
            return await op.handler(request)
        except CloudError as exc:
            log.info(
                "api.refused method=%s path=%s status=%s reason=%s",
                request.method,
                request.url.path,
                exc.status,
                exc.message,
            )
            return error_json(exc.status, exc.message, getattr(exc, "field", None))

    endpoint.__name__ = op.handler.__name__
    return endpoint


def openapi_document(ops: Sequence[Operation]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        entry: dict[str, Any] = {
            "summary": op.summary,
            "operationId": op.handler.__name__,
            "responses": {
                "200": {"description": "OK (201 for creations)"},
                "4XX": {"description": 'JSON error {"error": {"status", "message"}}'},
            },
        }
        if not op.public:
            entry["security"] = [{"bearer": []}]
        params = [seg[1:-1] for seg in op.path.split("/") if seg.startswith("{")]
        if params:
            entry["parameters"] = [
                {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                for n in params
            ]
        if op.request_body:
            media = op.request_body if "/" in op.request_body else "application/json"
            entry["requestBody"] = {
                "content": {
                    media: {"schema": {"type": "object" if media.endswith("json") else "string"}}
                }
            }
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "Hedgerow cloud API", "version": __version__},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }


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
        Route(op.path, _wrap(op, ctx), methods=[op.method]) for op in operations(ctx)
    ]
    routes += console_routes()
    app = Starlette(
        routes=routes, exception_handlers={HTTPException: _http_error, Exception: _server_error}
    )
    app.state.context = ctx
    return app
