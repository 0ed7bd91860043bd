"""``/api/v1/cores``: cores, their provisioning bundles and connectivity."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import ClassVar

from starlette.requests import Request
from starlette.responses import Response

from hedgerow.cloud import domain
from hedgerow.cloud.api.edge import PAGE_QUERY, ApiContext, Operation, page_params, path_param
from hedgerow.cloud.api.parsing import checked
from hedgerow.cloud.api.responses import CoreCreated, CoreList, CoreView, Deleted, respond
from hedgerow.cloud.domain import Endpoint
from hedgerow.cloud.services import CreatedCore

CORE = "/api/v1/cores/{core}"


@dataclass(frozen=True)
class CreateCore:
    """A new core in a group (one core per group)."""

    name: str = checked(lambda v: domain.validate_name(v, "core name"))
    group: str = checked(lambda v: domain.validate_name(v, "group name"))


@dataclass(frozen=True)
class Connectivity:
    """Where things reach the core (Greengrass V1 connectivity info)."""

    endpoints: list[Endpoint] = checked(domain.validate_endpoints)


@dataclass(frozen=True)
class UpdateCore:
    """The fields to change."""

    forbid_extra: ClassVar[bool] = True
    endpoints: list[Endpoint] = checked(domain.validate_endpoints)


def core_created(result: CreatedCore) -> Response:
    return respond(
        CoreCreated(
            core=result.core.to_json(),
            bundle=base64.b64encode(result.bundle).decode(),
            bundle_name=f"{result.core.name}.tar.gz",
        ),
        201,
    )


async def list_cores(ctx: ApiContext, request: Request) -> Response:
    return respond(CoreList.of(await ctx.services.cores.all(**page_params(request))))


async def create_core(ctx: ApiContext, request: Request, body: CreateCore) -> Response:
    return core_created(await ctx.services.cores.create(body.name, body.group))


async def get_core(ctx: ApiContext, request: Request) -> Response:
    return respond(CoreView.of(await ctx.services.cores.get(path_param(request, "core"))))


async def delete_core(ctx: ApiContext, request: Request) -> Response:
    await ctx.services.cores.delete(path_param(request, "core"))
    return respond(Deleted(path_param(request, "core")))


async def set_connectivity(ctx: ApiContext, request: Request, body: Connectivity) -> Response:
    core = await ctx.services.cores.set_connectivity(path_param(request, "core"), body.endpoints)
    return respond(CoreView.of(core))


async def update_core(ctx: ApiContext, request: Request, body: UpdateCore) -> Response:
    core = await ctx.services.cores.set_connectivity(path_param(request, "core"), body.endpoints)
    return respond(CoreView.of(core))


async def core_bundle(ctx: ApiContext, request: Request) -> Response:
    return core_created(await ctx.services.cores.reissue_bundle(path_param(request, "core")))


OPERATIONS = [
    Operation(
        "GET", "/api/v1/cores", "List cores", list_cores, query=PAGE_QUERY, response=CoreList
    ),
    Operation(
        "POST",
        "/api/v1/cores",
        "Create a core: returns its provisioning bundle",
        create_core,
        body=CreateCore,
        status=201,
        response=CoreCreated,
    ),
    Operation("GET", CORE, "Show a core", get_core, response=CoreView),
    Operation("PATCH", CORE, "Update a core", update_core, body=UpdateCore, response=CoreView),
    Operation(
        "DELETE",
        CORE,
        "Delete a core (revokes its certificates)",
        delete_core,
        response=Deleted,
    ),
    Operation(
        "PUT",
        CORE + "/connectivity",
        "Set connectivity",
        set_connectivity,
        body=Connectivity,
        response=CoreView,
    ),
    Operation(
        "POST",
        CORE + "/bundle",
        "New identity and bundle for a core",
        core_bundle,
        status=201,
        response=CoreCreated,
    ),
]
