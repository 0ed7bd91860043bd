"""``/api/v1/releases``: Hedgerow releases for over-the-air updates of cores."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from hedgerow.cloud.api.edge import ApiContext, Operation, path_param
from hedgerow.cloud.api.parsing import described
from hedgerow.cloud.api.responses import Deleted, ReleaseList, ReleaseView, respond
from hedgerow.cloud.services.releases import WheelRef

RELEASES = "/api/v1/releases"
RELEASE = RELEASES + "/{version}"


@dataclass(frozen=True)
class UploadedWheel:
    """A wheel uploaded with ``POST /api/v1/artifacts``."""

    filename: str = described("the wheel's file name (NAME-VERSION-TAGS.whl)")
    sha256: str = described("the sha256 the upload answered")


@dataclass(frozen=True)
class CreateRelease:
    """The ``hedgerow`` wheel and the wheels of its dependencies (the wheelhouse a core
    without internet installs from); the version is read from the hedgerow wheel."""

    wheels: list[UploadedWheel] = described("every wheel of the release")


async def create_release(ctx: ApiContext, request: Request, body: CreateRelease) -> Response:
    release = await ctx.services.releases.create(
        [WheelRef(w.filename, w.sha256) for w in body.wheels]
    )
    return respond(ReleaseView.of(release), 201)


async def list_releases(ctx: ApiContext, request: Request) -> Response:
    return respond(ReleaseList.of(await ctx.services.releases.all()))


async def get_release(ctx: ApiContext, request: Request) -> Response:
    return respond(ReleaseView.of(await ctx.services.releases.get(path_param(request, "version"))))


async def remove_release(ctx: ApiContext, request: Request) -> Response:
    version = path_param(request, "version")
    await ctx.services.releases.remove(version)
    return respond(Deleted(version))


OPERATIONS = [
    Operation(
        "POST",
        RELEASES,
        "Make a release of uploaded wheels (signed with the deployment key)",
        create_release,
        body=CreateRelease,
        status=201,
        response=ReleaseView,
    ),
    Operation("GET", RELEASES, "List releases (newest first)", list_releases, response=ReleaseList),
    Operation("GET", RELEASE, "Show a release", get_release, response=ReleaseView),
    Operation("DELETE", RELEASE, "Remove a release", remove_release, response=Deleted),
]
