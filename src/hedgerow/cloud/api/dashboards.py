"""``/api/v1/groups/{group}/dashboards``: a group's saved dashboards of charts.

A chart is ``{title, filter, fields, window_s}``: the numeric JSON fields (dotted paths)
of the messages stored on a topic filter over the last ``window_s`` seconds — what the
console's charts page draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hedgerow.cloud import domain
from hedgerow.cloud.api.edge import ApiContext, Operation, path_param
from hedgerow.cloud.api.parsing import checked, described
from hedgerow.cloud.api.responses import Deleted, respond
from hedgerow.cloud.errors import InvalidInput
from hedgerow.cloud.storage.dashboards import Dashboard

DASHBOARDS = "/api/v1/groups/{group}/dashboards"
DASHBOARD = DASHBOARDS + "/{name}"
MAX_CHARTS = 24
MAX_FIELDS = 8
MAX_WINDOW_S = 7 * 24 * 3600


def _chart(value: object, at: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput("a chart is {title, filter, fields, window_s}", field=at)
    unknown = set(value) - {"title", "filter", "fields", "window_s"}
    if unknown:
        raise InvalidInput(f"unknown chart field {sorted(unknown)[0]!r}", field=at)
    title = value.get("title", "")
    if not isinstance(title, str) or len(title) > 128:
        raise InvalidInput("title must be text of at most 128 characters", field=f"{at}.title")
    try:
        topic_filter = domain.validate_topic_filter_text(value.get("filter"))
    except InvalidInput as exc:
        raise InvalidInput(exc.message, field=f"{at}.filter") from exc
    fields = value.get("fields")
    if (
        not isinstance(fields, list)
        or not 1 <= len(fields) <= MAX_FIELDS
        or not all(isinstance(f, str) and f for f in fields)
    ):
        raise InvalidInput(
            f"fields must list 1-{MAX_FIELDS} JSON field paths", field=f"{at}.fields"
        )
    window = value.get("window_s", 3600)
    if not isinstance(window, int) or isinstance(window, bool) or not 1 <= window <= MAX_WINDOW_S:
        raise InvalidInput(f"window_s must be 1-{MAX_WINDOW_S} seconds", field=f"{at}.window_s")
    return {"title": title, "filter": topic_filter, "fields": fields, "window_s": window}


def charts(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list) or len(value) > MAX_CHARTS:
        raise InvalidInput(f"charts must be a list of at most {MAX_CHARTS} charts", field="charts")
    return [_chart(chart, f"charts[{i}]") for i, chart in enumerate(value)]


@dataclass(frozen=True)
class PutDashboard:
    """The dashboard's charts (they replace the saved ones)."""

    charts: list[dict[str, Any]] = checked(charts, doc="[{title, filter, fields, window_s}]")


@dataclass(frozen=True)
class DashboardView:
    group: str
    name: str
    charts: list[dict[str, Any]] = described("[{title, filter, fields, window_s}]")
    updated_at: str = described("when it was last saved (ISO-8601)")

    @classmethod
    def of(cls, d: Dashboard) -> DashboardView:
        return cls(d.group, d.name, list(d.charts), d.updated_at.isoformat())


@dataclass(frozen=True)
class DashboardList:
    items: list[DashboardView]


async def list_dashboards(ctx: ApiContext, request: Request) -> Response:
    found = await ctx.services.dashboards.all(path_param(request, "group"))
    return respond(DashboardList([DashboardView.of(d) for d in found]))


async def put_dashboard(ctx: ApiContext, request: Request, body: PutDashboard) -> Response:
    name = domain.validate_name(path_param(request, "name"), "dashboard name")
    saved = await ctx.services.dashboards.put(path_param(request, "group"), name, body.charts)
    return respond(DashboardView.of(saved))


async def delete_dashboard(ctx: ApiContext, request: Request) -> Response:
    name = path_param(request, "name")
    await ctx.services.dashboards.delete(path_param(request, "group"), name)
    return respond(Deleted(name))


OPERATIONS = [
    Operation("GET", DASHBOARDS, "A group's saved dashboards", list_dashboards,
              response=DashboardList),
    Operation("PUT", DASHBOARD, "Save a dashboard (its charts replace the saved ones)",
              put_dashboard, body=PutDashboard, response=DashboardView),
    Operation("DELETE", DASHBOARD, "Delete a dashboard", delete_dashboard, response=Deleted),
]  # fmt: skip
