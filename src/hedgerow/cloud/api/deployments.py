"""``/api/v1/groups/{group}/deployments``, ``/api/v1/deployments`` and ``/api/v1/fleet``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

from hedgerow.cloud import domain
from hedgerow.cloud.api.edge import (
    ApiContext,
    Operation,
    Query,
    int_param,
    path_param,
)
from hedgerow.cloud.api.functions import CreateFunction, new_function_parts
from hedgerow.cloud.api.parsing import UNSET, checked, described
from hedgerow.cloud.api.responses import (
    DeploymentList,
    DeploymentPlanView,
    DeploymentView,
    FleetApplied,
    respond,
)
from hedgerow.cloud.domain import DeploymentKind
from hedgerow.cloud.errors import InvalidInput
from hedgerow.cloud.services import FleetFunction, FleetSubscription
from hedgerow.contract.deployment import check_version
from hedgerow.contract.errors import ContractError

KINDS = {
    "new": DeploymentKind.NEW,
    "redeploy": DeploymentKind.REDEPLOY,
    "reset": DeploymentKind.RESET,
}


def deployment_kind(value: object) -> str:
    if value is None:
        return "new"
    if value not in KINDS:
        raise InvalidInput(
            f"invalid deployment kind {value!r}: use new, redeploy or reset", field="kind"
        )
    return str(value)


@dataclass(frozen=True)
class Deploy:
    """``new`` deploys the group as it is, ``redeploy`` repeats a deployment (default: the
    latest), ``reset`` removes everything from the core."""

    kind: Literal["new", "redeploy", "reset"] = checked(deployment_kind, default="new")
    deployment_id: str | None = described("the deployment to redeploy", default=None)
    core_version: str | None = checked(
        lambda v: None if v is None else check_release_version(v),
        default=None,
        doc="the Hedgerow release the group's cores should run from now on (uploaded first)",
    )


def check_release_version(value: object) -> str:
    try:
        return check_version(value, "core_version")
    except ContractError as exc:
        raise InvalidInput(str(exc), field="core_version") from exc


def group_list(value: object) -> list[str]:
    if not isinstance(value, list) or not value:
        raise InvalidInput("groups must be a non-empty list of group names", field="groups")
    return [domain.validate_name(g, "group name") for g in dict.fromkeys(value)]


@dataclass(frozen=True)
class FleetApply:
    """Make these groups' functions and subscriptions exactly those of ``from_group``, or
    those given (all groups or none)."""

    groups: list[str] = checked(group_list)
    from_group: str | None = checked(
        lambda v: None if v is None else domain.validate_name(v, "group name"), default=None
    )
    functions: list[CreateFunction] = described("functions with name", default_factory=list)
    subscriptions: list[FleetSubscription] = described("subscriptions", default_factory=list)
    deploy: bool = described("deploy every group afterwards", default=False)


async def deploy(ctx: ApiContext, request: Request, body: Deploy) -> Response:
    deployment = await ctx.services.deployments.deploy(
        path_param(request, "group"),
        KINDS[body.kind],
        body.deployment_id if body.kind == "redeploy" else None,
        core_version=body.core_version,
    )
    return respond(DeploymentView.of(deployment), 201)


async def plan_deployment(ctx: ApiContext, request: Request, body: Deploy) -> Response:
    plan = await ctx.services.deployments.plan(
        path_param(request, "group"),
        KINDS[body.kind],
        body.deployment_id if body.kind == "redeploy" else None,
    )
    return respond(DeploymentPlanView.of(plan))


async def list_deployments(ctx: ApiContext, request: Request) -> Response:
    return respond(
        DeploymentList.of(
            await ctx.services.deployments.all(
                path_param(request, "group"), int_param(request, "limit", 100, 1)
            )
        )
    )


async def get_deployment(ctx: ApiContext, request: Request) -> Response:
    found = await ctx.services.deployments.get(path_param(request, "deployment"))
    return respond(DeploymentView.of(found))


async def fleet_apply(ctx: ApiContext, request: Request, body: FleetApply) -> Response:
    fleet = ctx.services.fleet
    if body.from_group is not None:
        functions, subscriptions = await fleet.template(body.from_group)
    else:
        functions = []
        for item in body.functions:
            name = domain.validate_function_name(item.name or None)
            settings, sha = new_function_parts(item, name)
            functions.append(FleetFunction(name, settings, sha))
        subscriptions = list(body.subscriptions)
    result = await fleet.apply(body.groups, functions, subscriptions, deploy=body.deploy)
    return respond(
        FleetApplied(
            groups=result["groups"],
            functions=result["functions"],
            subscriptions=result["subscriptions"],
            deployments=result.get("deployments", UNSET),
        )
    )


OPERATIONS = [
    Operation(
        "POST",
        "/api/v1/groups/{group}/deployments",
        "Deploy a group",
        deploy,
        body=Deploy,
        status=201,
        response=DeploymentView,
    ),
    Operation(
        "POST",
        "/api/v1/groups/{group}/deployments/plan",
        "What a deployment would change on the core (nothing is deployed)",
        plan_deployment,
        body=Deploy,
        response=DeploymentPlanView,
    ),
    Operation(
        "GET",
        "/api/v1/groups/{group}/deployments",
        "Deployment history (newest first)",
        list_deployments,
        query=(Query("limit", "integer"),),
        response=DeploymentList,
    ),
    Operation(
        "GET",
        "/api/v1/deployments/{deployment}",
        "A deployment with its status events",
        get_deployment,
        response=DeploymentView,
    ),
    Operation(
        "POST",
        "/api/v1/fleet/apply",
        "Apply functions and subscriptions to many groups",
        fleet_apply,
        body=FleetApply,
        response=FleetApplied,
    ),
]
