"""What every resource module uses: the request context, the ``Operation`` record each
route is declared with, and reading paths, queries and bodies once at the edge."""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from hedgerow.cloud.api.broker_auth import BrokerAuth
from hedgerow.cloud.errors import InvalidInput, TooLarge, Unauthorized
from hedgerow.cloud.metrics import LatencyHistogram
from hedgerow.cloud.services import CloudServices
from hedgerow.cloud.storage.repository import MAX_PAGE
from hedgerow.cloud.tickets import TicketPurpose, Tickets

MAX_JSON_BODY = 1024 * 1024
TICKETS_PATH = "/api/v1/messages/stream/tickets"
TOKEN_IN_URL = (
    "the token is not accepted in the URL (proxies and browser history keep URLs): send "
    "'Authorization: Bearer <token>'; a client that cannot set headers (EventSource) gets "
    f"a single-use ticket with POST {TICKETS_PATH} and opens the stream with ?ticket="
)


@dataclass
class ApiContext:
    """What the handlers share: the services, the accepted tokens, the limits."""

    services: CloudServices
    tokens: Sequence[str]
    max_upload_bytes: int
    status: Callable[[], dict[str, Any]] = dict
    tickets: Tickets | None = None
    #: the external broker's login and ACL questions (``broker_login = "password"``)
    broker_auth: BrokerAuth | None = None
    #: every request's duration per route (``/metrics``)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
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


#: ``handler(ctx, request)``, or ``handler(ctx, request, body)`` when the operation has a
#: body model (the body arrives parsed).
Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Query:
    """A query parameter, for the OpenAPI document."""

    name: str
    type: str = "string"
    description: str = ""


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    handler: Handler
    public: bool = False
    #: The request model (a frozen dataclass) the JSON body is parsed into.
    body: type[Any] | None = None
    #: A raw (non-JSON) body's media type, e.g. ``application/zip``.
    raw_body: str | None = None
    query: tuple[Query, ...] = ()
    status: int = 200
    #: The response model (``responses.py``); None: an entity in its ``to_json`` form.
    response: type[Any] | None = None
    #: The response's media type when it is not JSON.
    produces: str = "application/json"
    #: a single-use ticket of this purpose may stand in for the token (``?ticket=``)
    ticket: TicketPurpose | None = None


def path_param(request: Request, name: str) -> str:
    return str(request.path_params[name])


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


def decode_json_object(data: bytes) -> dict[str, Any]:
    """A JSON object body (an empty body is ``{}``)."""
    if not data.strip():
        return {}
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidInput("the body must be a JSON object")
    return value


async def json_body(request: Request) -> dict[str, Any]:
    return decode_json_object(await read_body(request, MAX_JSON_BODY))


def int_param(request: Request, name: str, default: int, low: int = 0, high: int = MAX_PAGE) -> int:
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


def flag_param(request: Request, name: str, default: bool) -> bool:
    """``?name=true`` (``1``, ``yes``) or ``?name=false`` (``0``, ``no``); absent: ``default``."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise InvalidInput(f"{name} must be true or false", field=name)


def page_params(request: Request) -> dict[str, Any]:
    """``prefix``, ``limit`` and ``offset`` of a list (no ``limit``: the whole list)."""
    limit = int_param(request, "limit", 1, 1) if "limit" in request.query_params else None
    return {
        "prefix": request.query_params.get("prefix", ""),
        "limit": limit,
        "offset": int_param(request, "offset", 0, 0, 10**9),
    }


PAGE_QUERY = (
    Query("prefix", description="only names starting with it"),
    Query("limit", "integer", "at most this many (default: all)"),
    Query("offset", "integer", "skip this many first"),
)


def optional_id_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    return int(raw) if raw and raw.isdigit() else None


def time_param(request: Request, name: str) -> float | None:
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
