"""``/api/v1/things`` and ``/api/v1/certificates``: things, their certificates, revocation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

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
from hedgerow.cloud.api.parsing import checked, described
from hedgerow.cloud.api.responses import (
    CertificateList,
    CertificateView,
    Deleted,
    Revoked,
    ThingCreated,
    ThingList,
    ThingView,
    respond,
)
from hedgerow.cloud.errors import InvalidInput
from hedgerow.cloud.services import CreatedThing

THING = "/api/v1/things/{thing}"
CERTIFICATE = "/api/v1/certificates/{fingerprint}"


def group_names(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput("groups must be a list of group names", field="groups")
    return [domain.validate_name(g, "group name") for g in value]


def csr_text(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidInput("csr must be a PEM string", field="csr")
    return value


def certificate_text(value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or "BEGIN CERTIFICATE" not in value):
        raise InvalidInput("certificate must be a PEM certificate", field="certificate")
    return value


@dataclass(frozen=True)
class CreateThing:
    """A new thing: without ``csr`` the cloud generates its key (returned once)."""

    name: str = checked(lambda v: domain.validate_name(v, "thing name"))
    groups: list[str] = checked(group_names, default_factory=list)
    group: str | None = described("one more group (the CLI's --group)", default=None)
    attributes: dict[str, str] = checked(domain.validate_attributes, default_factory=dict)
    csr: str | None = checked(csr_text, default=None, doc="PEM certificate signing request")
    certificate: str | None = checked(
        certificate_text,
        default=None,
        doc="the device's own PEM certificate (bring your own: the key stays on the device)",
    )


@dataclass(frozen=True)
class UpdateThing:
    """New attributes (they replace the old ones)."""

    forbid_extra: ClassVar[bool] = True
    attributes: dict[str, str] = checked(domain.validate_attributes, default_factory=dict)


@dataclass(frozen=True)
class NewCertificate:
    """Another certificate for a thing (``csr``: the device keeps its key)."""

    csr: str | None = checked(csr_text, default=None)


def thing_created(result: CreatedThing) -> Response:
    return respond(
        ThingCreated(
            thing=result.thing.to_json(),
            certificate=result.certificate_pem,
            private_key=result.private_key_pem,
            root_ca=result.root_ca_pem,
        ),
        201,
    )


async def list_things(ctx: ApiContext, request: Request) -> Response:
    return respond(
        ThingList.of(
            await ctx.services.things.all(
                group=request.query_params.get("group"),
                prefix=request.query_params.get("prefix", ""),
                limit=int_param(request, "limit", 1000, 1),
                offset=int_param(request, "offset", 0, 0, 10**9),
            )
        )
    )


async def create_thing(ctx: ApiContext, request: Request, body: CreateThing) -> Response:
    groups = body.groups
    if body.group is not None:
        groups = [domain.validate_name(body.group, "group name"), *groups]
    if body.certificate is not None:
        if body.csr is not None:
            raise InvalidInput("give csr or certificate, not both", field="certificate")
        thing = await ctx.services.things.create_with_certificate(
            body.name, groups, body.attributes, body.certificate, anchor=True
        )
        return thing_created(
            CreatedThing(thing, body.certificate, None, ctx.services.pki.root_ca_pem)
        )
    result = await ctx.services.things.create(body.name, groups, body.attributes, body.csr)
    return thing_created(result)


async def get_thing(ctx: ApiContext, request: Request) -> Response:
    return respond(ThingView.of(await ctx.services.things.get(path_param(request, "thing"))))


async def update_thing(ctx: ApiContext, request: Request, body: UpdateThing) -> Response:
    thing = await ctx.services.things.update(path_param(request, "thing"), body.attributes)
    return respond(ThingView.of(thing))


async def delete_thing(ctx: ApiContext, request: Request) -> Response:
    await ctx.services.things.delete(path_param(request, "thing"))
    return respond(Deleted(path_param(request, "thing")))


async def revoke_thing(ctx: ApiContext, request: Request) -> Response:
    return respond(Revoked(await ctx.services.things.revoke(path_param(request, "thing"))))


async def thing_certificate(ctx: ApiContext, request: Request, body: NewCertificate) -> Response:
    result = await ctx.services.things.new_certificate(path_param(request, "thing"), body.csr)
    return thing_created(result)


async def list_certificates(ctx: ApiContext, request: Request) -> Response:
    return respond(
        CertificateList.of(
            await ctx.services.certificates.all(
                request.query_params.get("owner"), request.query_params.get("kind")
            )
        )
    )


async def get_certificate(ctx: ApiContext, request: Request) -> Response:
    cert = await ctx.services.certificates.get(path_param(request, "fingerprint"))
    return respond(CertificateView.of(cert, pem=True))


async def revoke_certificate(ctx: ApiContext, request: Request) -> Response:
    cert = await ctx.services.certificates.revoke(path_param(request, "fingerprint"))
    return respond(CertificateView.of(cert))


OPERATIONS = [
    Operation(
        "GET",
        "/api/v1/things",
        "List things",
        list_things,
        query=(
            Query("group"),
            Query("prefix"),
            Query("limit", "integer"),
            Query("offset", "integer"),
        ),
        response=ThingList,
    ),
    Operation(
        "POST",
        "/api/v1/things",
        "Create a thing",
        create_thing,
        body=CreateThing,
        status=201,
        response=ThingCreated,
    ),
    Operation("GET", THING, "Show a thing", get_thing, response=ThingView),
    Operation("PATCH", THING, "Update a thing", update_thing, body=UpdateThing, response=ThingView),
    Operation(
        "DELETE",
        THING,
        "Delete a thing (revokes its certificates)",
        delete_thing,
        response=Deleted,
    ),
    Operation(
        "POST",
        THING + "/revoke",
        "Revoke every certificate of a thing",
        revoke_thing,
        response=Revoked,
    ),
    Operation(
        "POST",
        THING + "/certificates",
        "New certificate for a thing",
        thing_certificate,
        body=NewCertificate,
        status=201,
        response=ThingCreated,
    ),
    Operation(
        "GET",
        "/api/v1/certificates",
        "List certificates",
        list_certificates,
        query=(Query("owner"), Query("kind")),
        response=CertificateList,
    ),
    Operation("GET", CERTIFICATE, "Show a certificate", get_certificate, response=CertificateView),
    Operation(
        "POST",
        CERTIFICATE + "/revoke",
        "Revoke a certificate",
        revoke_certificate,
        response=CertificateView,
    ),
]
