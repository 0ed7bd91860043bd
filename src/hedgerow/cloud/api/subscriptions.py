"""``/api/v1/groups/{group}/subscriptions``: the group's routing table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from starlette.requests import Request
from starlette.responses import Response

from hedgerow.cloud.api.edge import ApiContext, Operation, path_param
from hedgerow.cloud.api.parsing import UNSET, Unset, described, present
from hedgerow.cloud.api.responses import Deleted, SubscriptionList, SubscriptionView, respond
from hedgerow.cloud.errors import InvalidInput

SUBSCRIPTIONS = "/api/v1/groups/{group}/subscriptions"
SUBSCRIPTION = SUBSCRIPTIONS + "/{subscription}"
REF = "thing:NAME, function:NAME, cloud or shadow"


@dataclass(frozen=True)
class AddSubscription:
    """A route: messages from ``source`` on topics matching ``topic`` go to ``target``."""

    source: str = described(REF)
    topic: str = described("an MQTT topic filter")
    target: str = described(REF)


@dataclass(frozen=True)
class UpdateSubscription:
    """The fields to change."""

    forbid_extra: ClassVar[bool] = True
    source: str | Unset = described(REF, default=UNSET)
    topic: str | Unset = described("an MQTT topic filter", default=UNSET)
    target: str | Unset = described(REF, default=UNSET)


def subscription_id(request: Request) -> int:
    raw = path_param(request, "subscription")
    if not raw.isdigit():
        raise InvalidInput("subscription id must be an integer")
    return int(raw)


async def list_subscriptions(ctx: ApiContext, request: Request) -> Response:
    return respond(
        SubscriptionList.of(await ctx.services.subscriptions.all(path_param(request, "group")))
    )


async def add_subscription(ctx: ApiContext, request: Request, body: AddSubscription) -> Response:
    sub = await ctx.services.subscriptions.add(
        path_param(request, "group"), body.source, body.topic, body.target
    )
    return respond(SubscriptionView.of(sub), 201)


async def get_subscription(ctx: ApiContext, request: Request) -> Response:
    found = await ctx.services.subscriptions.get(
        path_param(request, "group"), subscription_id(request)
    )
    return respond(SubscriptionView.of(found))


async def update_subscription(
    ctx: ApiContext, request: Request, body: UpdateSubscription
) -> Response:
    updated = await ctx.services.subscriptions.update(
        path_param(request, "group"), subscription_id(request), present(body)
    )
    return respond(SubscriptionView.of(updated))


async def delete_subscription(ctx: ApiContext, request: Request) -> Response:
    await ctx.services.subscriptions.delete(path_param(request, "group"), subscription_id(request))
    return respond(Deleted(subscription_id(request)))


OPERATIONS = [
    Operation(
        "GET", SUBSCRIPTIONS, "List subscriptions", list_subscriptions, response=SubscriptionList
    ),
    Operation(
        "POST",
        SUBSCRIPTIONS,
        "Add a subscription",
        add_subscription,
        body=AddSubscription,
        status=201,
        response=SubscriptionView,
    ),
    Operation(
        "GET", SUBSCRIPTION, "Show a subscription", get_subscription, response=SubscriptionView
    ),
    Operation(
        "PATCH",
        SUBSCRIPTION,
        "Change a subscription",
        update_subscription,
        body=UpdateSubscription,
        response=SubscriptionView,
    ),
    Operation(
        "DELETE", SUBSCRIPTION, "Remove a subscription", delete_subscription, response=Deleted
    ),
]
