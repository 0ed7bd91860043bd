"""``/api/v1/logs``: logs from cores (stored, and live as server-sent events), the log
levels set from the cloud per group (its core and each function), and the cloud's
Prometheus ``/metrics``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from hedgerow.cloud import metrics
from hedgerow.cloud.api.edge import (
    ApiContext,
    Operation,
    Query,
    int_param,
    optional_id_param,
    path_param,
    time_param,
)
from hedgerow.cloud.api.messages import STREAM_BATCH, Quiet, event_stream
from hedgerow.cloud.api.parsing import described
from hedgerow.cloud.api.responses import Entity, respond
from hedgerow.cloud.services import LogService
from hedgerow.cloud.tickets import TicketPurpose


@dataclass(frozen=True)
class LogList:
    items: list[Entity]
    count: int
    #: the newest id in this answer (ask again with ``after_id`` for what follows)
    last_id: int | None


@dataclass(frozen=True)
class LogFilter:
    group: str | None
    core: str | None
    function: str | None
    level: str | None
    since: float | None

    @classmethod
    def of(cls, request: Request) -> LogFilter:
        q = request.query_params
        return cls(
            q.get("group") or None,
            q.get("core") or None,
            q.get("function") or None,
            q.get("level") or None,
            time_param(request, "since"),
        )

    async def query(self, logs: LogService, **more: Any) -> list[Any]:
        return await logs.query(
            group=self.group,
            core=self.core,
            function=self.function,
            level=self.level,
            since=self.since,
            **more,
        )


@dataclass(frozen=True)
class LogLevelChange:
    level: str = described(
        "DEBUG, INFO, WARNING, ERROR, CRITICAL, or default (the core's config file's again)"
    )
    function: str | None = described(
        "the function whose records this level is for (default: the core's own)", default=None
    )


@dataclass(frozen=True)
class LogLevelsView:
    group: str
    core: str | None = described("the core's own level set from the cloud (null: its config's)")
    functions: dict[str, str] = described("per function, the level set from the cloud")


async def get_log_levels(ctx: ApiContext, request: Request) -> Response:
    group = path_param(request, "group")
    levels = await ctx.services.log_levels.get(group)
    return respond(LogLevelsView(group, levels["core"], levels["functions"]))


async def set_log_level(ctx: ApiContext, request: Request, body: LogLevelChange) -> Response:
    group = path_param(request, "group")
    service = ctx.services.log_levels
    if body.function is None:
        levels = await service.update(group, core=body.level, set_core=True)
    else:
        levels = await service.update(group, functions={body.function: body.level})
    return respond(LogLevelsView(group, levels["core"], levels["functions"]))


LOG_QUERY = (
    Query("group"),
    Query("core"),
    Query("function"),
    Query("level", description="DEBUG, INFO, WARNING, ERROR or CRITICAL: this level and above"),
    Query("since", description="epoch seconds or ISO-8601"),
    Query("after_id", "integer"),
)


async def query_logs(ctx: ApiContext, request: Request) -> Response:
    newest = request.query_params.get("order", "asc") == "desc"
    found = await LogFilter.of(request).query(
        ctx.services.logs,
        after_id=optional_id_param(request, "after_id"),
        limit=int_param(request, "limit", 100, 1),
        newest_first=newest,
    )
    last = max((e.id for e in found), default=None)
    return respond(LogList([e.to_json() for e in found], len(found), last))


async def stream_logs(ctx: ApiContext, request: Request) -> Response:
    where = LogFilter.of(request)
    await where.query(ctx.services.logs, limit=1)  # a bad level is a 400 now, not mid-stream
    return event_stream(live_logs(ctx.services.logs, where, optional_id_param(request, "after_id")))


async def live_logs(
    logs: LogService, where: LogFilter, after_id: int | None
) -> AsyncIterator[bytes]:
    """Server-sent events ``log`` for records newer than ``after_id`` (default: from now)."""
    if after_id is None:
        after_id = await logs.newest_id()
    yield b": hedgerow live logs\n\n"
    quiet = Quiet(logs.written)
    while True:
        quiet.looking()
        batch = await where.query(logs, after_id=after_id, limit=STREAM_BATCH)
        if batch:
            quiet.busy()
            after_id = batch[-1].id
            yield b"".join(
                f"id: {e.id}\nevent: log\ndata: {json.dumps(e.to_json())}\n\n".encode()
                for e in batch
            )
            continue
        if keepalive := await quiet.wait():
            yield keepalive


async def prometheus(ctx: ApiContext, request: Request) -> Response:
    cores = [c.to_json() for c in await ctx.services.cores.all()]
    active = await ctx.services.alerts.history(active_only=True, limit=10_000)
    exports = await ctx.services.exports.status()
    text = metrics.render(
        cores, ctx.status(), ctx.latency, active_alerts=len(active), exports=exports
    )
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


OPERATIONS = [
    Operation(
        "GET",
        "/api/v1/logs",
        "Logs from cores, oldest first (order=desc: newest first)",
        query_logs,
        query=(*LOG_QUERY, Query("limit", "integer"), Query("order", description="asc or desc")),
        response=LogList,
    ),
    Operation(
        "GET",
        "/api/v1/logs/stream",
        "Live logs as server-sent events `log` (EventSource clients: ?ticket=)",
        stream_logs,
        ticket=TicketPurpose.LIVE_STREAM,
        query=LOG_QUERY,
        produces="text/event-stream",
    ),
    Operation(
        "GET",
        "/api/v1/groups/{group}/log-levels",
        "Log levels set from the cloud for the group's core and its functions",
        get_log_levels,
        response=LogLevelsView,
    ),
    Operation(
        "PATCH",
        "/api/v1/groups/{group}/log-levels",
        "Set the level of the core's own records or of one function's (no deployment: the "
        "core applies it at once, or when it connects, and keeps it across restarts)",
        set_log_level,
        body=LogLevelChange,
        response=LogLevelsView,
    ),
    Operation(
        "GET",
        "/metrics",
        "Prometheus metrics: fleet gauges, ingest counters, API latency (bearer token)",
        prometheus,
        produces="text/plain",
    ),
]
