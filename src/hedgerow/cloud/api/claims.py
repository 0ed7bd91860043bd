"""``/api/v1/claim-templates``, ``/api/v1/claims``, ``/api/v1/device-cas``: provisioning by
claim and registered device CAs (the use cases are ``services/claims.py``)."""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hedgerow.cloud import claim_rules, domain
from hedgerow.cloud.api.edge import ApiContext, Operation, path_param
from hedgerow.cloud.api.parsing import checked, described
from hedgerow.cloud.api.responses import Deleted, respond
from hedgerow.cloud.claim_rules import DEFAULT_USES, ClaimTemplate
from hedgerow.cloud.errors import InvalidInput

TEMPLATE = "/api/v1/claim-templates/{template}"
CLAIM = "/api/v1/claims/{claim}"
DEVICE_CA = "/api/v1/device-cas/{fingerprint}"
Entity = dict[str, Any]


def _pem(value: object) -> str:
    if not isinstance(value, str) or "BEGIN CERTIFICATE" not in value:
        raise InvalidInput("certificate must be a PEM certificate", field="certificate")
    return value


@dataclass(frozen=True)
class CreateTemplate:
    """How devices provisioning with a claim of this template are registered."""

    name: str = checked(lambda v: domain.validate_name(v, "template name"))
    kind: str = checked(lambda v: claim_rules.validate_kind(v).value, doc="core or thing")
    group: str = checked(
        lambda v: claim_rules.validate_pattern(v, "group"),
        doc="group (pattern): a core gets a group of its own, made when missing",
    )
    name_pattern: str = checked(
        lambda v: claim_rules.validate_pattern(v, "name_pattern"),
        doc="e.g. press-{serial} or {group}-{seq}",
    )
    attributes: dict[str, str] = checked(domain.validate_attributes, default_factory=dict)


@dataclass(frozen=True)
class CreateClaim:
    template: str = checked(lambda v: domain.validate_name(v, "template name"))
    count: int = described("how many devices may use it", default=DEFAULT_USES)
    expires: str = described("a duration: 30d, 12h, 90m, 2w", default="30d")


@dataclass(frozen=True)
class RegisterCA:
    certificate: str = checked(_pem, doc="the device CA's PEM certificate")
    template: str = checked(lambda v: domain.validate_name(v, "template name"))


@dataclass(frozen=True)
class TemplateView:
    name: str
    kind: str
    group: str
    name_pattern: str
    attributes: dict[str, str]
    created_at: str | None


@dataclass(frozen=True)
class TemplateList:
    items: list[TemplateView]
    count: int


@dataclass(frozen=True)
class ClaimView:
    id: str
    template: str
    kind: str
    fingerprint: str
    max_uses: int
    used: int
    expires_at: str | None
    revoked_at: str | None
    created_at: str | None
    uses: list[Entity] = described(
        "every use (newest 1000): at, serial, outcome ok|refused, reason, name, fingerprint, peer",
        default_factory=list,
    )


@dataclass(frozen=True)
class ClaimList:
    items: list[ClaimView]
    count: int


@dataclass(frozen=True)
class ClaimCreated:
    """A claim and its credential (base64 of ``bundle_name``, a tar.gz: the only copy of
    the claim's key)."""

    claim: ClaimView
    bundle: str
    bundle_name: str


@dataclass(frozen=True)
class DeviceCAView:
    fingerprint: str
    subject: str
    template: str
    group: str
    created_at: str | None
    revoked_at: str | None


@dataclass(frozen=True)
class DeviceCAList:
    items: list[DeviceCAView]
    count: int


def _template_view(template: ClaimTemplate) -> TemplateView:
    return TemplateView(**template.to_json())


def _claim_view(claim: claim_rules.Claim) -> ClaimView:
    return ClaimView(**{"uses": [], **claim.to_json()})


async def create_template(ctx: ApiContext, request: Request, body: CreateTemplate) -> Response:
    template = ClaimTemplate(
        name=body.name,
        kind=claim_rules.validate_kind(body.kind),
        group=body.group,
        name_pattern=body.name_pattern,
        attributes=body.attributes,
        created_at=dt.datetime.now(dt.UTC),
    )
    return respond(_template_view(await ctx.services.claims.create_template(template)), 201)


async def list_templates(ctx: ApiContext, request: Request) -> Response:
    items = [_template_view(t) for t in await ctx.services.claims.templates()]
    return respond(TemplateList(items, len(items)))


async def get_template(ctx: ApiContext, request: Request) -> Response:
    return respond(
        _template_view(await ctx.services.claims.template(path_param(request, "template")))
    )


async def delete_template(ctx: ApiContext, request: Request) -> Response:
    await ctx.services.claims.delete_template(path_param(request, "template"))
    return respond(Deleted(path_param(request, "template")))


async def create_claim(ctx: ApiContext, request: Request, body: CreateClaim) -> Response:
    created = await ctx.services.claims.create_claim(
        body.template, body.count, claim_rules.parse_duration(body.expires)
    )
    return respond(
        ClaimCreated(
            _claim_view(created.claim),
            base64.b64encode(created.bundle).decode(),
            f"{created.claim.id}.tar.gz",
        ),
        201,
    )


async def list_claims(ctx: ApiContext, request: Request) -> Response:
    items = [_claim_view(c) for c in await ctx.services.claims.claims()]
    return respond(ClaimList(items, len(items)))


async def get_claim(ctx: ApiContext, request: Request) -> Response:
    return respond(_claim_view(await ctx.services.claims.claim(path_param(request, "claim"))))


async def revoke_claim(ctx: ApiContext, request: Request) -> Response:
    return respond(_claim_view(await ctx.services.claims.revoke(path_param(request, "claim"))))


async def register_ca(ctx: ApiContext, request: Request, body: RegisterCA) -> Response:
    ca = await ctx.services.claims.register_ca(body.certificate, body.template)
    return respond(DeviceCAView(**ca.to_json()), 201)


async def list_cas(ctx: ApiContext, request: Request) -> Response:
    items = [DeviceCAView(**ca.to_json()) for ca in await ctx.services.claims.device_cas()]
    return respond(DeviceCAList(items, len(items)))


async def revoke_ca(ctx: ApiContext, request: Request) -> Response:
    ca = await ctx.services.claims.revoke_ca(path_param(request, "fingerprint"))
    return respond(DeviceCAView(**ca.to_json()))


OPERATIONS = [
    Operation(
        "GET", "/api/v1/claim-templates", "List claim templates", list_templates,
        response=TemplateList,
    ),
    Operation(
        "POST", "/api/v1/claim-templates", "Create a claim template", create_template,
        body=CreateTemplate, status=201, response=TemplateView,
    ),
    Operation("GET", TEMPLATE, "Show a claim template", get_template, response=TemplateView),
    Operation(
        "DELETE", TEMPLATE, "Delete a claim template (no claim or device CA may use it)",
        delete_template, response=Deleted,
    ),
    Operation("GET", "/api/v1/claims", "List claims", list_claims, response=ClaimList),
    Operation(
        "POST", "/api/v1/claims", "Create a claim: returns its credential (claim.tar.gz)",
        create_claim, body=CreateClaim, status=201, response=ClaimCreated,
    ),
    Operation("GET", CLAIM, "Show a claim and its uses", get_claim, response=ClaimView),
    Operation(
        "POST", CLAIM + "/revoke", "Revoke a claim (later uses are refused)", revoke_claim,
        response=ClaimView,
    ),
    Operation("GET", "/api/v1/device-cas", "List device CAs", list_cas, response=DeviceCAList),
    Operation(
        "POST", "/api/v1/device-cas",
        "Register a device CA: the certificates it signed are admitted just in time",
        register_ca, body=RegisterCA, status=201, response=DeviceCAView,
    ),
    Operation(
        "POST", DEVICE_CA + "/revoke",
        "Revoke a device CA (and the certificates of the things it admitted)",
        revoke_ca, response=DeviceCAView,
    ),
]  # fmt: skip
