"""``/api/v1/rollouts``: staged rollouts over many groups, and the operator's commands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response

from hedgerow.cloud import domain
from hedgerow.cloud.api.deployments import fleet_definition
from hedgerow.cloud.api.edge import (
    ApiContext,
    Operation,
    Query,
    flag_param,
    int_param,
    path_param,
)
from hedgerow.cloud.api.functions import CreateFunction
from hedgerow.cloud.api.parsing import UNSET, Unset, checked, described
from hedgerow.cloud.api.responses import respond
from hedgerow.cloud.errors import InvalidInput
from hedgerow.cloud.rollout_plan import DEFAULT_DEADLINE_S, Rollout
from hedgerow.cloud.services import FleetSubscription, RolloutRequest

ROLLOUT = "/api/v1/rollouts/{rollout}"


def _names(value: object) -> list[str]:
    if not isinstance(value, list):
        raise InvalidInput("groups must be a list of group names", field="groups")
    return [domain.validate_name(g, "group name") for g in dict.fromkeys(value)]


def _positive(field: str) -> Any:
    def check(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise InvalidInput(f"{field} must be a number of seconds, 0 or more", field=field)
        return float(value)

    return check


def _deadline(value: object) -> float:
    seconds = float(_positive("deadline_s")(value))
    if seconds <= 0:
        raise InvalidInput("deadline_s must be more than 0 seconds", field="deadline_s")
    return seconds


def _waves(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(w, str | int) for w in value):
        raise InvalidInput('waves must be a list like ["10%", "50%", "100%"]', field="waves")
    return [str(w) for w in value]


@dataclass(frozen=True)
class StartRollout:
    """Targets: ``groups`` and/or every group with all of ``labels``. What they get:
    ``from_group``'s functions and subscriptions, or those given, or (neither) each
    group's own definition."""

    groups: list[str] = checked(_names, default_factory=list)
    labels: dict[str, str] = checked(domain.validate_labels, default_factory=dict)
    from_group: str | None = checked(
        lambda v: None if v is None else domain.validate_name(v, "group name"), default=None
    )
    functions: list[CreateFunction] | None = described("functions with name", default=None)
    subscriptions: list[FleetSubscription] = described("subscriptions", default_factory=list)
    canary: int = described("groups in the first wave (0: none)", default=0)
    waves: list[str] = checked(_waves, default_factory=lambda: ["100%"], doc="cumulative")
    soak_s: float = checked(_positive("soak_s"), default=0.0, doc="healthy this long")
    max_failures: str = described("failed groups allowed before a pause: N or P%", default="0")
    deadline_s: float = checked(_deadline, default=DEFAULT_DEADLINE_S)


@dataclass(frozen=True)
class RolloutCommand:
    """What to do with a rollout."""

    action: Literal["pause", "resume", "abort", "rollback"] = checked(
        lambda v: _action(v), doc="pause, resume (retries failed groups), abort, rollback"
    )


def _action(value: object) -> str:
    if value not in ("pause", "resume", "abort", "rollback"):
        raise InvalidInput(
            f"invalid action {value!r}: use pause, resume, abort or rollback", field="action"
        )
    return str(value)


@dataclass(frozen=True)
class RolloutTargetView:
    group: str
    core: str
    wave: int
    state: str = described("waiting, deploying, soaking, done, restoring, restored, skipped")
    failed: bool = described("this group failed in this rollout (and was restored)")
    deployment: str | None = described("the rollout's deployment of this group")
    previous: str | None = described("what the group ran before: what a restore brings back")
    restore: str | None = described("the deployment that restored it")
    detail: str = described("why it failed")


@dataclass(frozen=True)
class RolloutView:
    id: str
    state: str = described("running, paused, completed, aborted, rolling-back, rolled-back")
    reason: str = described("why it is in this state")
    wave: int = described("the current wave (1 = first)")
    waves: list[int] = described("the cumulative group count at the end of each wave")
    soak_s: float = described("how long a group must stay healthy")
    max_failures: int = described("failed groups allowed before the rollout pauses")
    deadline_s: float = described("a group not healthy this long after its deployment fails")
    total: int = described("groups")
    done: int = described("groups healthy on the new deployment for the soak")
    failed: int = described("groups that failed")
    per_wave: list[dict[str, Any]] = described("each wave: groups, done, failed, in_flight")
    targets: list[RolloutTargetView] | Unset = described(
        "each group (left out with ?targets=false: the summary alone, for pollers and lists)"
    )
    events: list[str] = described("what happened, oldest first")

    @classmethod
    def of(cls, rollout: Rollout, targets: bool = True) -> RolloutView:
        summary = rollout.summary()
        return cls(
            id=rollout.id,
            state=rollout.state.value,
            reason=rollout.reason,
            wave=rollout.wave + 1,
            waves=list(rollout.waves),
            soak_s=rollout.soak_s,
            max_failures=rollout.max_failures,
            deadline_s=rollout.deadline_s,
            total=summary["total"],
            done=summary["done"],
            failed=summary["failed"],
            per_wave=summary["waves"],
            targets=[
                RolloutTargetView(
                    group=t.group,
                    core=t.core,
                    wave=t.wave + 1,
                    state=t.state.value,
                    failed=t.failed,
                    deployment=t.deployment,
                    previous=t.previous,
                    restore=t.restore,
                    detail=t.detail,
                )
                for t in rollout.targets
            ]
            if targets
            else UNSET,
            events=list(rollout.events),
        )


@dataclass(frozen=True)
class RolloutList:
    items: list[RolloutView]
    count: int


async def start_rollout(ctx: ApiContext, request: Request, body: StartRollout) -> Response:
    functions = None
    subscriptions: list[FleetSubscription] = []
    if body.from_group is not None or body.functions is not None:
        functions, subscriptions = await fleet_definition(
            ctx, body.from_group, body.functions or [], body.subscriptions
        )
    rollout = await ctx.services.rollouts.start(
        RolloutRequest(
            groups=body.groups,
            labels=dict(body.labels) or None,
            functions=functions,
            subscriptions=subscriptions,
            canary=body.canary,
            waves=body.waves,
            soak_s=body.soak_s,
            max_failures=str(body.max_failures),
            deadline_s=body.deadline_s,
        )
    )
    return respond(RolloutView.of(rollout), 201)


async def list_rollouts(ctx: ApiContext, request: Request) -> Response:
    rollouts = await ctx.services.rollouts.all(int_param(request, "limit", 100, 1))
    targets = flag_param(request, "targets", True)
    return respond(RolloutList([RolloutView.of(r, targets) for r in rollouts], len(rollouts)))


async def get_rollout(ctx: ApiContext, request: Request) -> Response:
    rollout = await ctx.services.rollouts.get(path_param(request, "rollout"))
    return respond(RolloutView.of(rollout, flag_param(request, "targets", True)))


async def command_rollout(ctx: ApiContext, request: Request, body: RolloutCommand) -> Response:
    rollout = await ctx.services.rollouts.command(path_param(request, "rollout"), body.action)
    return respond(RolloutView.of(rollout))


TARGETS_QUERY = Query(
    "targets",
    "boolean",
    "false: leave the per-group list out (default true; a big fleet's is long)",
)

OPERATIONS = [
    Operation(
        "POST",
        "/api/v1/rollouts",
        "Start a staged rollout over many groups (waves, health, soak, failure threshold)",
        start_rollout,
        body=StartRollout,
        status=201,
        response=RolloutView,
    ),
    Operation(
        "GET",
        "/api/v1/rollouts",
        "Rollouts (newest first)",
        list_rollouts,
        query=(Query("limit", "integer"), TARGETS_QUERY),
        response=RolloutList,
    ),
    Operation(
        "GET",
        ROLLOUT,
        "A rollout: per wave and per group",
        get_rollout,
        query=(TARGETS_QUERY,),
        response=RolloutView,
    ),
    Operation(
        "POST",
        ROLLOUT + "/actions",
        "Pause, resume, abort or roll back a rollout",
        command_rollout,
        body=RolloutCommand,
        response=RolloutView,
    ),
]
