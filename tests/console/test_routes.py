"""The console's routes and packaged assets, without a browser."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from importlib import resources

import httpx
import pytest
from starlette.applications import Starlette

from hedgerow.cloud.api import console_routes
from hedgerow.cloud.console import ASSETS, routes
from hedgerow.cloud.console.routes import CONTENT_SECURITY_POLICY

STATIC = resources.files("hedgerow.cloud.console").joinpath("static")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=Starlette(routes=routes()))
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as c:
        yield c


def test_the_cloud_mounts_the_console() -> None:
    paths = {getattr(route, "path", None) for route in console_routes()}
    assert {"/", "/console", "/console/", "/console/static/{name}"} <= paths


async def test_root_and_bare_prefix_redirect_to_the_console(client: httpx.AsyncClient) -> None:
    for path in ("/", "/console"):
        response = await client.get(path)
        assert response.status_code == 307 and response.headers["location"] == "/console/"


async def test_the_page_shell_is_served_with_a_strict_policy(client: httpx.AsyncClient) -> None:
    response = await client.get("/console/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    html = response.text
    assert '<script type="module" src="static/app.js"></script>' in html
    # no inline code or styles: the policy would block them
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert "style=" not in html and "<style" not in html


async def test_every_asset_is_served_with_its_type_and_revalidates(
    client: httpx.AsyncClient,
) -> None:
    types = {"css": "text/css", "js": "text/javascript"}
    for name in ASSETS:
        if name == "index.html":
            continue
        response = await client.get(f"/console/static/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith(types[name.rsplit(".", 1)[1]])
        assert response.headers["cache-control"] == "no-cache"
        again = await client.get(
            f"/console/static/{name}", headers={"if-none-match": response.headers["etag"]}
        )
        assert again.status_code == 304 and again.content == b""


async def test_nothing_else_is_reachable(client: httpx.AsyncClient) -> None:
    for name in ("routes.py", "__init__.py", "index.html", "..%2Froutes.py", "nope.js"):
        response = await client.get(f"/console/static/{name}")
        assert response.status_code == 404, name
    assert (await client.get("/console/static/sub/app.js")).status_code == 404


def test_the_package_ships_exactly_the_listed_assets() -> None:
    shipped = sorted(p.name for p in STATIC.iterdir() if p.is_file())
    assert shipped == sorted(ASSETS)


def test_every_module_import_and_page_reference_resolves() -> None:
    for name in ASSETS:
        text = STATIC.joinpath(name).read_text()
        if name.endswith(".js"):
            for target in re.findall(r'from\s+"\./([^"]+)"', text):
                assert target in ASSETS, f"{name} imports {target}"
            assert "innerHTML" not in text, f"{name}: build DOM nodes, never HTML strings"
            assert "eval(" not in text and "new Function" not in text
        if name == "index.html":
            for target in re.findall(r'(?:src|href)="static/([^"]+)"', text):
                assert target in ASSETS, f"index.html refers to {target}"
