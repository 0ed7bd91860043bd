"""``/api/v1/telemetry/exports``: where telemetry is exported, how far each target got."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from hedgerow.cloud.api.edge import ApiContext, Operation
from hedgerow.cloud.api.parsing import described
from hedgerow.cloud.api.responses import Entity, respond


@dataclass(frozen=True)
class ExportList:
    items: list[Entity] = described(
        "per target: name, configured, kind, url (no password), topic_filter, started, cursor "
        "(last id acknowledged), lag (stored messages after the cursor), exported, lost (ids "
        "skipped: deleted before export), failures, failing (since the last success), "
        "last_error, last_error_at, last_success_at"
    )
    count: int = described("how many targets")


async def list_exports(ctx: ApiContext, request: Request) -> Response:
    found = await ctx.services.exports.status()
    return respond(ExportList(found, len(found)))


OPERATIONS = [
    Operation(
        "GET",
        "/api/v1/telemetry/exports",
        "Telemetry export targets: cursor, lag, losses, failures",
        list_exports,
        response=ExportList,
    ),
]
