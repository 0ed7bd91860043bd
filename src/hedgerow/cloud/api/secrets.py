"""``/api/v1/groups/{group}/secrets``: secrets functions read.

Values go in (create, update, rotate) and never come out: the answers carry names,
version ids, labels and dates only.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from hedgerow.cloud.api.edge import ApiContext, Operation, path_param
from hedgerow.cloud.api.parsing import UNSET, Unset, described
from hedgerow.cloud.api.responses import Deleted, respond
from hedgerow.cloud.errors import Conflict
from hedgerow.cloud.services.secrets import SecretService

SECRETS = "/api/v1/groups/{group}/secrets"
SECRET = SECRETS + "/{secret}"


@dataclass(frozen=True)
class SecretValue:
    """A new value: text, or base64 when ``binary``."""

    value: str = described("the value (base64 when binary)", default="")
    binary: bool = described("the value is bytes, sent as base64", default=False)


@dataclass(frozen=True)
class CreateSecret(SecretValue):
    name: str = described("letters, digits and _.-+=@ (V1: greengrass-...)", default="")


@dataclass(frozen=True)
class RotateSecret:
    """A new value, or none: one is generated."""

    value: str | Unset = described("the value (generated when absent)", default=UNSET)
    binary: bool = described("the value is bytes, sent as base64", default=False)


@dataclass(frozen=True)
class SecretVersionView:
    version_id: str
    stages: list[str]
    created_at: str
    binary: bool


@dataclass(frozen=True)
class SecretWritten(SecretVersionView):
    """The version a write made (never its value); ``previous`` is now AWSPREVIOUS."""

    name: str
    previous: str | None | Unset = UNSET


@dataclass(frozen=True)
class SecretName:
    name: str


@dataclass(frozen=True)
class SecretNames:
    items: list[SecretName]
    count: int


@dataclass(frozen=True)
class SecretVersions:
    name: str
    versions: list[SecretVersionView]


def _service(ctx: ApiContext) -> SecretService:
    if ctx.services.secrets is None:
        raise Conflict("this cloud keeps no secrets")
    return ctx.services.secrets


def _written(result: dict[str, object]) -> SecretWritten:
    return SecretWritten(**result)  # type: ignore[arg-type]


async def list_secrets(ctx: ApiContext, request: Request) -> Response:
    names = await _service(ctx).names(path_param(request, "group"))
    return respond(SecretNames([SecretName(n["name"]) for n in names], len(names)))


async def create_secret(ctx: ApiContext, request: Request, body: CreateSecret) -> Response:
    created = await _service(ctx).create(
        path_param(request, "group"),
        {"name": body.name, "value": body.value, "binary": body.binary},  # fmt: skip
    )
    return respond(_written(created), 201)


async def secret_versions(ctx: ApiContext, request: Request) -> Response:
    found = await _service(ctx).versions(
        path_param(request, "group"), path_param(request, "secret")
    )
    versions = [SecretVersionView(**v) for v in found["versions"]]
    return respond(SecretVersions(found["name"], versions))


async def update_secret(ctx: ApiContext, request: Request, body: SecretValue) -> Response:
    updated = await _service(ctx).update(
        path_param(request, "group"),
        path_param(request, "secret"),
        {"value": body.value, "binary": body.binary},
    )
    return respond(_written(updated))


async def rotate_secret(ctx: ApiContext, request: Request, body: RotateSecret) -> Response:
    value = {} if isinstance(body.value, Unset) else {"value": body.value}
    rotated = await _service(ctx).update(
        path_param(request, "group"),
        path_param(request, "secret"),
        {**value, "binary": body.binary},
        rotate=True,
    )
    return respond(_written(rotated))


async def delete_secret(ctx: ApiContext, request: Request) -> Response:
    await _service(ctx).delete(path_param(request, "group"), path_param(request, "secret"))
    return respond(Deleted(path_param(request, "secret")))


OPERATIONS = [
    Operation(
        "GET", SECRETS, "The names of the group's secrets", list_secrets, response=SecretNames
    ),
    Operation(
        "POST",
        SECRETS,
        "Create a secret (its value never comes back)",
        create_secret,
        body=CreateSecret,
        status=201,
        response=SecretWritten,
    ),
    Operation(
        "GET", SECRET, "A secret's versions and labels", secret_versions, response=SecretVersions
    ),
    Operation(
        "PUT",
        SECRET,
        "A new value: it becomes AWSCURRENT, the current one AWSPREVIOUS",
        update_secret,
        body=SecretValue,
        response=SecretWritten,
    ),
    Operation(
        "POST",
        SECRET + "/rotate",
        "A new value (generated when absent): AWSCURRENT moves",
        rotate_secret,
        body=RotateSecret,
        response=SecretWritten,
    ),
    Operation(
        "DELETE", SECRET, "Delete a secret and its versions", delete_secret, response=Deleted
    ),
]
