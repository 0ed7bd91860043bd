"""``/api/v1/cores/{core}/support-bundles``: ask a core for a support bundle, fetch it.

The cloud asks over the core's MQTT link and the core uploads over device HTTPS
(``hedgerow.contract.support``): no connection to the gateway. Poll the bundle until
``status`` is ``received``, then download it.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from hedgerow.cloud.api.edge import ApiContext, Operation, path_param
from hedgerow.cloud.api.parsing import described
from hedgerow.cloud.api.responses import respond
from hedgerow.cloud.errors import Conflict
from hedgerow.cloud.storage.support_bundles import SupportBundle

BUNDLES = "/api/v1/cores/{core}/support-bundles"
BUNDLE = BUNDLES + "/{request_id}"


@dataclass(frozen=True)
class SupportBundleView:
    request_id: str
    core: str
    status: str = described("requested (the core has not uploaded it yet) or received")
    requested_at: str = described("when it was asked (ISO-8601)")
    received_at: str | None = described("when the core uploaded it, or null")
    size: int | None = described("bytes of the gzip'd tar, once received")

    @classmethod
    def of(cls, bundle: SupportBundle) -> SupportBundleView:
        return cls(
            bundle.request_id,
            bundle.core,
            "received" if bundle.received_at else "requested",
            bundle.requested_at.isoformat(),
            bundle.received_at.isoformat() if bundle.received_at else None,
            bundle.size,
        )


async def request_bundle(ctx: ApiContext, request: Request) -> Response:
    bundle = await ctx.services.support_bundles.request(path_param(request, "core"))
    return respond(SupportBundleView.of(bundle), 202)


async def get_bundle(ctx: ApiContext, request: Request) -> Response:
    bundle, _ = await ctx.services.support_bundles.get(
        path_param(request, "core"), path_param(request, "request_id")
    )
    return respond(SupportBundleView.of(bundle))


async def download_bundle(ctx: ApiContext, request: Request) -> Response:
    bundle, data = await ctx.services.support_bundles.get(
        path_param(request, "core"), path_param(request, "request_id")
    )
    if data is None:
        raise Conflict(
            f"core {bundle.core!r} has not uploaded {bundle.request_id} yet: is it connected? "
            "(hedgerow cloud core show)"
        )
    filename = f"{bundle.core}-{bundle.request_id}.tar.gz"
    return Response(
        data,
        media_type="application/gzip",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


OPERATIONS = [
    Operation("POST", BUNDLES, "Ask a core for a support bundle (over its MQTT link)",
              request_bundle, status=202, response=SupportBundleView),
    Operation("GET", BUNDLE, "A support bundle's status", get_bundle, response=SupportBundleView),
    Operation("GET", BUNDLE + "/download", "Download a support bundle (gzip'd tar)",
              download_bundle, produces="application/gzip"),
]  # fmt: skip
