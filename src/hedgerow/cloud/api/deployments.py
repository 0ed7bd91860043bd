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
    DeploymentContentsView,
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
    deadline_s: float | None = checked(
        lambda v: None if v is None else _deadline(v),
        default=None,
        doc="unfinished after this many seconds, it fails (default: the cloud's)",
    )
    core_version: str | None = checked(
        lambda v: None if v is None else check_release_version(v),
        default=None,
        doc="the Hedgerow release the group's cores should run from now on (uploaded first)",
    )


def _deadline(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise InvalidInput("deadline_s must be a number of seconds above 0", field="deadline_s")
    return float(value)


@dataclass(frozen=True)
class DriftView:
    """What the group's core runs against the group's current deployment."""

    group: str
    core: str
    running: str | None = described("the deployment the core's heartbeat names")
    latest: str | None = described("the group's current deployment")
    drift: bool = described("the core runs something else than the group's current deployment")
    running_kind: str | None = described(
        "OfflineDeployment when it was exported and applied offline"
    )
    signed_here: bool = described(
        "this cloud made (and signed) what the core runs: it can be adopted"
    )


@dataclass(frozen=True)
class DriftList:
    """The cores that run something other than their group's current deployment."""

    items: list[DriftView]
    count: int


@dataclass(frozen=True)
class ExportedView:
    """A signed deployment for ``hedgerow core deploy --file`` (artifacts: GET /api/v1/artifacts/{sha256})."""

    deployment: DeploymentView
    document: str = described("the exact signed JSON text")
    signature: str = described("Ed25519 over the document's UTF-8 bytes, base64")
    artifacts: list[str] = described("the sha256 of every artifact the document names")


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
        deadline_s=body.deadline_s,
        core_version=body.core_version,
    )
    return respond(DeploymentView.of(deployment), 201)


async def export_deployment(ctx: ApiContext, request: Request) -> Response:
    exported = await ctx.services.deployments.export(path_param(request, "group"))
    return respond(
        ExportedView(
            DeploymentView.of(exported.deployment),
            exported.document,
            exported.signature,
            list(exported.artifacts),
        ),
        201,
    )


async def drift(ctx: ApiContext, request: Request) -> Response:
    found = await ctx.services.deployments.drift(path_param(request, "group"))
    return respond(DriftView(**found.to_json()))  # type: ignore[arg-type]


async def fleet_drift(ctx: ApiContext, request: Request) -> Response:
    found = await ctx.services.deployments.drifting()
    items = [DriftView(**d.to_json()) for d in found]  # type: ignore[arg-type]
    return respond(DriftList(items, len(items)))


async def adopt(ctx: ApiContext, request: Request) -> Response:
    adopted = await ctx.services.deployments.adopt(path_param(request, "group"))
    return respond(DeploymentView.of(adopted))


async def replace(ctx: ApiContext, request: Request) -> Response:
    replaced = await ctx.services.deployments.replace(path_param(request, "group"))
    return respond(DeploymentView.of(replaced), 201)


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


async def fleet_definition(
    ctx: ApiContext,
    from_group: str | None,
    items: list[CreateFunction],
    given: list[FleetSubscription],
) -> tuple[list[FleetFunction], list[FleetSubscription]]:
    """``from_group``'s functions and subscriptions, or those of the body."""
    if from_group is not None:
        return await ctx.services.fleet.template(from_group)
    functions = []
    for item in items:
        name = domain.validate_function_name(item.name or None)
        settings, sha = new_function_parts(item, name)
        functions.append(FleetFunction(name, settings, sha))
    return functions, list(given)


async def deployment_contents(ctx: ApiContext, request: Request) -> Response:
    deployment_id = path_param(request, "deployment")
    found = await ctx.services.deployments.contents(deployment_id)
    return respond(
        DeploymentContentsView(
            deployment_id,
            found.document,
            DeploymentPlanView.of(found.previous) if found.previous else None,
            DeploymentPlanView.of(found.running) if found.running else None,
        )
    )


async def fleet_apply(ctx: ApiContext, request: Request, body: FleetApply) -> Response:
    fleet = ctx.services.fleet
    functions, subscriptions = await fleet_definition(
        ctx, body.from_group, body.functions, body.subscriptions
    )
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
        "POST",
        "/api/v1/groups/{group}/deployments/export",
        "A signed deployment of the group for an offline core (not sent to it)",
        export_deployment,
        status=201,
        response=ExportedView,
    ),
    Operation(
        "GET",
        "/api/v1/groups/{group}/drift",
        "What the core runs against the group's current deployment",
        drift,
        response=DriftView,
    ),
    Operation(
        "GET",
        "/api/v1/drift",
        "Every core that runs something other than its group's current deployment",
        fleet_drift,
        response=DriftList,
    ),
    Operation(
        "POST",
        "/api/v1/groups/{group}/drift/adopt",
        "Make what the core runs (applied offline, signed here) the group's current deployment",
        adopt,
        response=DeploymentView,
    ),
    Operation(
        "POST",
        "/api/v1/groups/{group}/drift/replace",
        "Deploy the group's current deployment over what the core runs",
        replace,
        status=201,
        response=DeploymentView,
    ),
    Operation(
        "GET",
        "/api/v1/deployments/{deployment}",
        "A deployment with its status events",
        get_deployment,
        response=DeploymentView,
    ),
    Operation(
        "GET",
        "/api/v1/deployments/{deployment}/contents",
        "What a deployment contains, and its difference from the previous one and from what runs",
        deployment_contents,
        response=DeploymentContentsView,
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
