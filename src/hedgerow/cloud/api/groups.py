"""``/api/v1/groups``: groups, their CAs and their things."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import Response

from hedgerow.cloud import domain
from hedgerow.cloud.api.edge import (
    PAGE_QUERY,
    ApiContext,
    Operation,
    Query,
    page_params,
    path_param,
)
from hedgerow.cloud.api.parsing import checked
from hedgerow.cloud.api.responses import (
    Deleted,
    Detached,
    GroupCAs,
    GroupList,
    GroupView,
    ThingView,
    respond,
)
from hedgerow.cloud.errors import InvalidInput

GROUP = "/api/v1/groups/{group}"
SETTINGS_DOC = (
    "open_broker: let any client of the core's broker in; sync_shadows: the things whose "
    "shadows the core syncs with the cloud (deployed with the group)"
)


def group_settings(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput("settings must be an object", field="settings")
    unknown = set(value) - {"open_broker", "sync_shadows"}
    if unknown:
        raise InvalidInput(
            f"unknown group settings: {', '.join(sorted(unknown))}", field="settings"
        )
    if "open_broker" in value and not isinstance(value["open_broker"], bool):
        raise InvalidInput(
            "settings.open_broker must be true or false", field="settings.open_broker"
        )
    if "sync_shadows" in value:
        things = value["sync_shadows"]
        if not isinstance(things, list) or not all(isinstance(t, str) for t in things):
            raise InvalidInput(
                "settings.sync_shadows must be a list of thing names",
                field="settings.sync_shadows",
            )
        for thing in things:
            domain.validate_name(thing, "thing name")
        value = {**value, "sync_shadows": sorted(set(things))}
    return dict(value)


@dataclass(frozen=True)
class CreateGroup:
    """A new group."""

    name: str = checked(lambda v: domain.validate_name(v, "group name"))
    description: str = checked(domain.validate_description, default="")
    settings: dict[str, Any] = checked(group_settings, default_factory=dict, doc=SETTINGS_DOC)
    ca_rotation_days: int | None = checked(
        lambda v: None if v is None else domain.validate_rotation_days(v), default=None
    )
    labels: dict[str, str] = checked(
        domain.validate_labels, default_factory=dict, doc="what rollouts select by"
    )


@dataclass(frozen=True)
class UpdateGroup:
    """The fields to change (absent: unchanged)."""

    forbid_extra: ClassVar[bool] = True
    description: str | None = checked(domain.validate_description, default=None)
    settings: dict[str, Any] | None = checked(group_settings, default=None, doc=SETTINGS_DOC)
    ca_rotation_days: int | None = checked(domain.validate_rotation_days, default=None)
    labels: dict[str, str] | None = checked(
        domain.validate_label_changes, default=None, doc='merged in; "" removes a label'
    )


@dataclass(frozen=True)
class AttachThing:
    """A thing to attach (``name`` is accepted for ``thing``)."""

    thing: str = checked(lambda v: domain.validate_name(v, "thing name"), aliases=("name",))


async def list_groups(ctx: ApiContext, request: Request) -> Response:
    selector = request.query_params.get("label")
    labels = domain.parse_label_selector(selector) if selector else None
    return respond(GroupList.of(await ctx.services.groups.all(labels, **page_params(request))))


async def create_group(ctx: ApiContext, request: Request, body: CreateGroup) -> Response:
    group = await ctx.services.groups.create(
        body.name,
        body.description,
        dict(body.settings),
        body.ca_rotation_days,
        dict(body.labels),
    )
    return respond(GroupView.of(group), 201)


async def get_group(ctx: ApiContext, request: Request) -> Response:
    return respond(GroupView.of(await ctx.services.groups.get(path_param(request, "group"))))


async def update_group(ctx: ApiContext, request: Request, body: UpdateGroup) -> Response:
    group = await ctx.services.groups.update(
        path_param(request, "group"),
        description=body.description,
        settings=dict(body.settings) if body.settings is not None else None,
        ca_rotation_days=body.ca_rotation_days,
        labels=dict(body.labels) if body.labels is not None else None,
    )
    return respond(GroupView.of(group))


async def delete_group(ctx: ApiContext, request: Request) -> Response:
    await ctx.services.groups.delete(path_param(request, "group"))
    return respond(Deleted(path_param(request, "group")))


async def group_cas(ctx: ApiContext, request: Request) -> Response:
    return respond(GroupCAs(await ctx.services.groups.cas(path_param(request, "group"))))


async def rotate_group_ca(ctx: ApiContext, request: Request) -> Response:
    return respond(GroupCAs(await ctx.services.groups.rotate_ca(path_param(request, "group"))))


async def attach_thing(ctx: ApiContext, request: Request, body: AttachThing) -> Response:
    thing = await ctx.services.things.attach(path_param(request, "group"), body.thing)
    return respond(ThingView.of(thing), 201)


async def detach_thing(ctx: ApiContext, request: Request) -> Response:
    await ctx.services.things.detach(path_param(request, "group"), path_param(request, "thing"))
    return respond(Detached(path_param(request, "thing")))


OPERATIONS = [
    Operation(
        "GET",
        "/api/v1/groups",
        "List groups (those with every label of ?label=site=berlin,tier=2)",
        list_groups,
        query=(Query("label", "string", "key=value[,key=value]"), *PAGE_QUERY),
        response=GroupList,
    ),
    Operation(
        "POST",
        "/api/v1/groups",
        "Create a group",
        create_group,
        body=CreateGroup,
        status=201,
        response=GroupView,
    ),
    Operation("GET", GROUP, "Show a group", get_group, response=GroupView),
    Operation("PATCH", GROUP, "Update a group", update_group, body=UpdateGroup, response=GroupView),
    Operation(
        "DELETE",
        GROUP,
        "Delete a group with its core, functions, subscriptions and deployments",
        delete_group,
        response=Deleted,
    ),
    Operation(
        "GET",
        GROUP + "/cas",
        "The group CAs discovery lists (current first)",
        group_cas,
        response=GroupCAs,
    ),
    Operation(
        "POST", GROUP + "/cas/rotate", "Rotate the group CA now", rotate_group_ca, response=GroupCAs
    ),
    Operation(
        "POST",
        GROUP + "/things",
        "Attach a thing",
        attach_thing,
        body=AttachThing,
        status=201,
        response=ThingView,
    ),
    Operation(
        "DELETE", GROUP + "/things/{thing}", "Detach a thing", detach_thing, response=Detached
    ),
]
