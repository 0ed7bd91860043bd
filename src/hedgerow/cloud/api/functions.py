"""``/api/v1/artifacts`` and ``/api/v1/groups/{group}/functions``: code and functions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hedgerow.cloud import domain
from hedgerow.cloud.api.edge import (
    ApiContext,
    Operation,
    Query,
    path_param,
    read_body,
)
from hedgerow.cloud.api.parsing import UNSET, Unset, checked, described, present
from hedgerow.cloud.api.responses import (
    ArtifactStored,
    Deleted,
    FunctionList,
    FunctionView,
    respond,
)
from hedgerow.cloud.errors import InvalidInput

FUNCTIONS = "/api/v1/groups/{group}/functions"
FUNCTION = FUNCTIONS + "/{function}"
SETTINGS = frozenset(domain.FunctionSettings.__dataclass_fields__)


@dataclass(frozen=True)
class ArtifactRef:
    """An uploaded artifact, as ``POST /api/v1/artifacts`` returned it."""

    sha256: str
    size: int | None = None


@dataclass(frozen=True)
class FunctionFields:
    """A function's settings; absent fields keep their default (or, in a PATCH, the
    latest version's value)."""

    handler: str | Unset = described("module.function", default=UNSET)
    runtime: str | Unset = described("python (the only runtime)", default=UNSET)
    pinned: bool | Unset = described("long-lived (true) or on demand", default=UNSET)
    memory_mb: int | Unset = described("memory limit", default=UNSET)
    timeout_s: float | Unset = described("seconds per invocation", default=UNSET)
    max_concurrency: int | Unset = described("parallel invocations", default=UNSET)
    environment: dict[str, str] | Unset = described("environment variables", default=UNSET)
    encoding: str | Unset = described("json or binary", default=UNSET)
    run_as: str | None | Unset = described("a user name, or null", default=UNSET)
    resources: list[dict[str, Any]] | Unset = described(
        "V1 local resources: {kind: device|volume, source, destination?, access?: ro|rw, "
        "auto_add_group_owner?}",
        default=UNSET,
    )
    groups: list[str] | Unset = described("OS groups the function's process joins", default=UNSET)
    secrets: list[str] | Unset = described(
        "names of the group's secrets the function may read", default=UNSET
    )
    artifact: str | ArtifactRef | Unset = described(
        "the code: its sha256 or the upload's answer", default=UNSET
    )
    artifact_sha256: str | Unset = described("the code's sha256 (as artifact)", default=UNSET)

    def settings(self) -> dict[str, Any]:
        """The settings fields this body set (for ``function_settings_from_json``)."""
        return {k: v for k, v in present(self).items() if k in SETTINGS}

    def sha256(self) -> str | None:
        """The artifact this body names, validated (None: it names none)."""
        if isinstance(self.artifact, ArtifactRef):
            return domain.validate_sha256(self.artifact.sha256)
        if isinstance(self.artifact, str):
            return domain.validate_sha256(self.artifact)
        if isinstance(self.artifact_sha256, str):
            return domain.validate_sha256(self.artifact_sha256)
        return None


@dataclass(frozen=True)
class CreateFunction(FunctionFields):
    """A new function (version 1); ``handler`` and ``artifact`` are required."""

    name: str = checked(domain.validate_function_name, default="")


@dataclass(frozen=True)
class UpdateFunction(FunctionFields):
    """A new version: the changed fields."""


def new_function_parts(body: FunctionFields, name: str) -> tuple[domain.FunctionSettings, str]:
    """The settings and artifact of a new function from ``body`` (both required)."""
    settings = domain.function_settings_from_json(body.settings())
    sha = body.sha256()
    if sha is None:
        raise InvalidInput(
            f"invalid sha256 None: function {name!r} needs an artifact (upload the code with POST /api/v1/artifacts)",
            field="artifact",
        )
    return settings, sha


async def upload_artifact(ctx: ApiContext, request: Request) -> Response:
    data = await read_body(request, ctx.max_upload_bytes)
    if not data:
        raise InvalidInput("empty artifact: send the zip as the request body")
    sha, size = await ctx.services.artifacts.put(data)
    return respond(ArtifactStored(sha, size), 201)


async def get_artifact(ctx: ApiContext, request: Request) -> Response:
    data = await ctx.services.artifacts.get(path_param(request, "sha256"))
    return Response(data, media_type="application/zip")


async def list_functions(ctx: ApiContext, request: Request) -> Response:
    return respond(FunctionList.of(await ctx.services.functions.all(path_param(request, "group"))))


async def create_function(ctx: ApiContext, request: Request, body: CreateFunction) -> Response:
    name = domain.validate_function_name(body.name or None)
    settings, sha = new_function_parts(body, name)
    result = await ctx.services.functions.create(path_param(request, "group"), name, settings, sha)
    return respond(FunctionView.of(result), 201)


async def get_function(ctx: ApiContext, request: Request) -> Response:
    version = request.query_params.get("version")
    if version is not None and not version.isdigit():
        raise InvalidInput("version must be a positive integer", field="version")
    found = await ctx.services.functions.get(
        path_param(request, "group"),
        path_param(request, "function"),
        int(version) if version else None,
    )
    return respond(FunctionView.of(found))


async def update_function(ctx: ApiContext, request: Request, body: UpdateFunction) -> Response:
    updated = await ctx.services.functions.update(
        path_param(request, "group"),
        path_param(request, "function"),
        body.settings(),
        body.sha256(),
    )
    return respond(FunctionView.of(updated))


async def delete_function(ctx: ApiContext, request: Request) -> Response:
    await ctx.services.functions.delete(
        path_param(request, "group"), path_param(request, "function")
    )
    return respond(Deleted(path_param(request, "function")))


async def function_versions(ctx: ApiContext, request: Request) -> Response:
    return respond(
        FunctionList.of(
            await ctx.services.functions.versions(
                path_param(request, "group"), path_param(request, "function")
            )
        )
    )


OPERATIONS = [
    Operation(
        "POST",
        "/api/v1/artifacts",
        "Upload a function's code (zip body)",
        upload_artifact,
        raw_body="application/zip",
        status=201,
        response=ArtifactStored,
    ),
    Operation(
        "GET",
        "/api/v1/artifacts/{sha256}",
        "Download an artifact",
        get_artifact,
        produces="application/zip",
    ),
    Operation(
        "GET", FUNCTIONS, "List functions (latest versions)", list_functions, response=FunctionList
    ),
    Operation(
        "POST",
        FUNCTIONS,
        "Create a function",
        create_function,
        body=CreateFunction,
        status=201,
        response=FunctionView,
    ),
    Operation(
        "GET",
        FUNCTION,
        "Show a function",
        get_function,
        query=(Query("version", "integer"),),
        response=FunctionView,
    ),
    Operation(
        "PATCH",
        FUNCTION,
        "New version of a function",
        update_function,
        body=UpdateFunction,
        response=FunctionView,
    ),
    Operation("DELETE", FUNCTION, "Delete a function", delete_function, response=Deleted),
    Operation(
        "GET",
        FUNCTION + "/versions",
        "All versions of a function",
        function_versions,
        response=FunctionList,
    ),
]
