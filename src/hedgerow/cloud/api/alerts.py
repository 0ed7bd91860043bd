"""``/api/v1/alerts``: alert rules, webhooks, and the alerts that fired."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from hedgerow.cloud.api.edge import (
    ApiContext,
    Operation,
    Query,
    flag_param,
    int_param,
    path_param,
)
from hedgerow.cloud.api.parsing import described
from hedgerow.cloud.api.responses import Deleted, Entity, respond


@dataclass(frozen=True)
class NewRule:
    name: str = described("the rule's name")
    kind: str = described(
        "core-offline, deployment-failed, function-errors, spool-full or cert-expiry"
    )
    threshold: float = described(
        "seconds offline; errors a minute; fraction of the spool quota; days before expiry",
        default=0.0,
    )
    group: str | None = described("only this group's cores (default: every group)", default=None)


@dataclass(frozen=True)
class NewWebhook:
    name: str = described("the webhook's name")
    url: str = described("where alerts are POSTed (http or https)")
    secret: str | None = described(
        "the HMAC-SHA256 key (default: a new random one, shown once)", default=None
    )


@dataclass(frozen=True)
class Items:
    items: list[Entity]
    count: int


@dataclass(frozen=True)
class CreatedWebhookView:
    webhook: Entity
    secret: str = described("verify X-Hedgerow-Signature with it (shown only now)")


async def list_rules(ctx: ApiContext, request: Request) -> Response:
    rules = await ctx.services.alerts.rules()
    return respond(Items([r.to_json() for r in rules], len(rules)))


async def add_rule(ctx: ApiContext, request: Request, body: NewRule) -> Response:
    rule = await ctx.services.alerts.add_rule(body.name, body.kind, body.threshold, body.group)
    return respond(rule.to_json(), 201)


async def remove_rule(ctx: ApiContext, request: Request) -> Response:
    name = path_param(request, "name")
    await ctx.services.alerts.remove_rule(name)
    return respond(Deleted(name))


async def list_webhooks(ctx: ApiContext, request: Request) -> Response:
    hooks = await ctx.services.alerts.webhooks()
    return respond(Items([h.to_json() for h in hooks], len(hooks)))


async def add_webhook(ctx: ApiContext, request: Request, body: NewWebhook) -> Response:
    created = await ctx.services.alerts.add_webhook(body.name, body.url, body.secret)
    return respond(
        CreatedWebhookView(created.webhook.to_json(), created.secret),
        201,
        headers={"cache-control": "no-store"},
    )


async def remove_webhook(ctx: ApiContext, request: Request) -> Response:
    name = path_param(request, "name")
    await ctx.services.alerts.remove_webhook(name)
    return respond(Deleted(name))


async def list_alerts(ctx: ApiContext, request: Request) -> Response:
    active = flag_param(request, "active", False)
    found = await ctx.services.alerts.history(
        active_only=active, limit=int_param(request, "limit", 100, 1)
    )
    return respond(Items([a.to_json() for a in found], len(found)))


OPERATIONS = [
    Operation(
        "GET",
        "/api/v1/alerts",
        "Alerts that fired, newest first (active=true: those not cleared)",
        list_alerts,
        query=(Query("active", description="true: only active"), Query("limit", "integer")),
        response=Items,
    ),
    Operation("GET", "/api/v1/alerts/rules", "Alert rules", list_rules, response=Items),
    Operation(
        "POST", "/api/v1/alerts/rules", "Add an alert rule", add_rule, body=NewRule, status=201
    ),
    Operation(
        "DELETE",
        "/api/v1/alerts/rules/{name}",
        "Remove an alert rule",
        remove_rule,
        response=Deleted,
    ),
    Operation("GET", "/api/v1/alerts/webhooks", "Alert webhooks", list_webhooks, response=Items),
    Operation(
        "POST",
        "/api/v1/alerts/webhooks",
        "Add a webhook (alerts are POSTed there, signed with HMAC-SHA256)",
        add_webhook,
        body=NewWebhook,
        status=201,
        response=CreatedWebhookView,
    ),
    Operation(
        "DELETE",
        "/api/v1/alerts/webhooks/{name}",
        "Remove a webhook",
        remove_webhook,
        response=Deleted,
    ),
]
