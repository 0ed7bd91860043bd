"""Starlette routes of the console: the page shell, its static assets, the redirects.

The console is plain HTML, CSS and JavaScript modules shipped in ``static/``. It calls
the REST API from the browser with the token the user typed on its login page (kept in
``sessionStorage``), so these routes need no authentication themselves: they serve the
same bytes to everyone and no data.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

log = logging.getLogger(__name__)

PREFIX = "/console"
#: Every file the console serves (nothing else under ``static/`` is reachable).
ASSETS = (
    "index.html",
    "console.css",
    "api.js",
    "app.js",
    "chart.js",
    "claims.js",
    "dom.js",
    "drift.js",
    "forms.js",
    "live.js",
    "operator.js",
    "ops.js",
    "pages.js",
    "releases.js",
    "rollouts.js",
    "zip.js",
)
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}
#: The console loads nothing from elsewhere and runs no inline code.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@cache
def load_asset(name: str) -> Asset:
    """The bytes of one packaged asset (read once per process)."""
    body = resources.files("hedgerow.cloud.console").joinpath("static", name).read_bytes()
    suffix = name[name.rfind(".") :]
    return Asset(body, MEDIA_TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _serve(request: Request, name: str) -> Response:
    asset = load_asset(name)
    headers = {**SECURITY_HEADERS, "cache-control": "no-cache", "etag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


async def index(request: Request) -> Response:
    return _serve(request, "index.html")


async def static(request: Request) -> Response:
    name = str(request.path_params["name"])
    if name not in ASSETS or name == "index.html":
        return Response(
            f"no console asset {name!r}\n", status_code=404, media_type="text/plain; charset=utf-8"
        )
    return _serve(request, name)


async def to_console(request: Request) -> Response:
    return RedirectResponse(PREFIX + "/", status_code=307)


def routes() -> list[BaseRoute]:
    """The console's routes, mounted by the cloud's REST API app."""
    return [
        Route("/", to_console, methods=["GET", "HEAD"]),
        Route(PREFIX, to_console, methods=["GET", "HEAD"]),
        Route(PREFIX + "/", index, methods=["GET", "HEAD"]),
        Route(PREFIX + "/static/{name}", static, methods=["GET", "HEAD"]),
    ]
