"""``/api/v1/cores/{core}/support-bundles``: ask a core for a support bundle, fetch it.

The cloud asks over the core's MQTT link and the core uploads over device HTTPS
(``hedgerow.contract.support``): no connection to the gateway. Poll the bundle until
``status`` is ``received``, then download it. A request for a core that is offline waits
for it (``waiting``), retained, until ``expires_at`` (``wait_s``, 24 h by default).
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from hedgerow.cloud.api.edge import ApiContext, Operation, path_param
from hedgerow.cloud.api.parsing import described
from hedgerow.cloud.api.responses import respond
from hedgerow.cloud.errors import Conflict
from hedgerow.cloud.services.support_bundles import DEFAULT_WAIT_S, MAX_WAIT_S
from hedgerow.cloud.storage.support_bundles import SupportBundle

BUNDLES = "/api/v1/cores/{core}/support-bundles"
BUNDLE = BUNDLES + "/{request_id}"


@dataclass(frozen=True)
class NewSupportBundle:
    wait_s: float = described(
        f"seconds the request waits for a core that is offline (1..{MAX_WAIT_S:.0f})",
        default=DEFAULT_WAIT_S,
    )


@dataclass(frozen=True)
class SupportBundleView:
    request_id: str
    core: str
    status: str = described(
        "requested (asked, not uploaded yet), waiting (for the core, which is not connected: "
        "it is asked when it connects), received, or expired (not uploaded before expires_at)"
    )
    requested_at: str = described("when it was asked (ISO-8601)")
    received_at: str | None = described("when the core uploaded it, or null")
    size: int | None = described("bytes of the gzip'd tar, once received")
    expires_at: str = described("until when the request waits for the core (ISO-8601)")

    @classmethod
    def of(cls, bundle: SupportBundle, status: str) -> SupportBundleView:
        return cls(
            bundle.request_id,
            bundle.core,
            status,
            bundle.requested_at.isoformat(),
            bundle.received_at.isoformat() if bundle.received_at else None,
            bundle.size,
            bundle.expires_at.isoformat(),
        )


async def request_bundle(ctx: ApiContext, request: Request, body: NewSupportBundle) -> Response:
    bundles = ctx.services.support_bundles
    bundle = await bundles.request(path_param(request, "core"), body.wait_s)
    return respond(SupportBundleView.of(bundle, bundles.status(bundle)), 202)


async def get_bundle(ctx: ApiContext, request: Request) -> Response:
    bundles = ctx.services.support_bundles
    bundle, _ = await bundles.get(path_param(request, "core"), path_param(request, "request_id"))
    return respond(SupportBundleView.of(bundle, bundles.status(bundle)))


async def download_bundle(ctx: ApiContext, request: Request) -> Response:
    bundles = ctx.services.support_bundles
    bundle, data = await bundles.get(path_param(request, "core"), path_param(request, "request_id"))
    if data is None:
        if bundles.status(bundle) == "expired":
            raise Conflict(
                f"core {bundle.core!r} did not upload {bundle.request_id} before it expired "
                f"({bundle.expires_at.isoformat()}): ask again"
            )
        raise Conflict(
            f"core {bundle.core!r} has not uploaded {bundle.request_id} yet: is it connected? "
            f"(hedgerow cloud core show); the request waits for it until "
            f"{bundle.expires_at.isoformat()}"
        )
    filename = f"{bundle.core}-{bundle.request_id}.tar.gz"
    return Response(
        data,
        media_type="application/gzip",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


OPERATIONS = [
    Operation("POST", BUNDLES, "Ask a core for a support bundle (over its MQTT link; an "
              "offline core is asked when it connects)", request_bundle,
              body=NewSupportBundle, status=202, response=SupportBundleView),
    Operation("GET", BUNDLE, "A support bundle's status", get_bundle, response=SupportBundleView),
    Operation("GET", BUNDLE + "/download", "Download a support bundle (gzip'd tar)",
              download_bundle, produces="application/gzip"),
]  # fmt: skip
