"""``/api/v1/groups/{group}/connectors``: the group's industrial connectors (Modbus, OPC UA)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import Response

from hedgerow.cloud.api.edge import ApiContext, Operation, path_param
from hedgerow.cloud.api.parsing import described
from hedgerow.cloud.api.responses import ConnectorList, ConnectorView, Deleted, respond

CONNECTORS = "/api/v1/groups/{group}/connectors"
CONNECTOR = CONNECTORS + "/{connector}"
CONFIG = "the connector's settings, checked before they are stored (see the connectors README)"


@dataclass(frozen=True)
class AddConnector:
    """A built-in connector of ``kind`` named ``name`` with its settings."""

    forbid_extra: ClassVar[bool] = True
    kind: str = described("modbus-tcp, modbus-rtu or opcua")
    name: str = described("the connector's name (connector:NAME in subscriptions)")
    config: dict[str, Any] = described(CONFIG)


@dataclass(frozen=True)
class UpdateConnector:
    """The connector's new settings (they replace the old ones)."""

    forbid_extra: ClassVar[bool] = True
    config: dict[str, Any] = described(CONFIG)


async def list_connectors(ctx: ApiContext, request: Request) -> Response:
    return respond(
        ConnectorList.of(await ctx.services.connectors.all(path_param(request, "group")))
    )


async def add_connector(ctx: ApiContext, request: Request, body: AddConnector) -> Response:
    added = await ctx.services.connectors.add(
        path_param(request, "group"), body.kind, body.name, body.config
    )
    return respond(ConnectorView.of(added), 201)


async def get_connector(ctx: ApiContext, request: Request) -> Response:
    found = await ctx.services.connectors.get(
        path_param(request, "group"), path_param(request, "connector")
    )
    return respond(ConnectorView.of(found))


async def update_connector(ctx: ApiContext, request: Request, body: UpdateConnector) -> Response:
    updated = await ctx.services.connectors.update(
        path_param(request, "group"), path_param(request, "connector"), body.config
    )
    return respond(ConnectorView.of(updated))


async def remove_connector(ctx: ApiContext, request: Request) -> Response:
    name = path_param(request, "connector")
    await ctx.services.connectors.remove(path_param(request, "group"), name)
    return respond(Deleted(name))


OPERATIONS = [
    Operation("GET", CONNECTORS, "List connectors", list_connectors, response=ConnectorList),
    Operation(
        "POST",
        CONNECTORS,
        "Add an industrial connector",
        add_connector,
        body=AddConnector,
        status=201,
        response=ConnectorView,
    ),
    Operation("GET", CONNECTOR, "Show a connector", get_connector, response=ConnectorView),
    Operation(
        "PUT",
        CONNECTOR,
        "Replace a connector's settings",
        update_connector,
        body=UpdateConnector,
        response=ConnectorView,
    ),
    Operation("DELETE", CONNECTOR, "Remove a connector", remove_connector, response=Deleted),
]
