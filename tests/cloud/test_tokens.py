"""The admin token only in the Authorization header; single-use tickets for the live stream."""

from __future__ import annotations

import re
import time

import httpx

from tests.cloud.conftest import Cloud

STREAM = "/api/v1/messages/stream"
TICKETS = "/api/v1/messages/stream/tickets"


def concrete(path: str) -> str:
    """An OpenAPI path with its parameters filled in (authorisation comes first anyway)."""
    return re.sub(r"\{[^}]+\}", "x", path)


async def test_a_token_in_the_query_string_is_refused_on_every_get_endpoint(cloud: Cloud) -> None:
    spec = (await cloud.api.get("/api/openapi.json")).json()
    gets = [path for path, methods in spec["paths"].items() if "get" in methods]
    assert STREAM in gets and "/api/v1/groups" in gets and len(gets) >= 15
    async with httpx.AsyncClient(base_url=cloud.server.api_url, timeout=10) as anonymous:
        for path in gets:
            response = await anonymous.get(concrete(path), params={"token": cloud.token})
            assert response.status_code == 401, (path, response.status_code)
            message = response.json()["error"]["message"]
            assert "Authorization: Bearer" in message and TICKETS in message, message
        # with the header too: the URL already leaked it, the client is told at once
        both = await cloud.api.get("/api/v1/groups", params={"token": cloud.token})
        assert both.status_code == 401
        assert (await cloud.api.get("/api/v1/groups")).status_code == 200


async def test_a_ticket_opens_the_live_stream_once(cloud: Cloud) -> None:
    issued = await cloud.ok("POST", TICKETS)
    assert issued["purpose"] == "live-stream" and issued["expires_in"] == 60
    assert issued["url"] == f"{STREAM}?ticket={issued['ticket']}"
    async with httpx.AsyncClient(base_url=cloud.server.api_url, timeout=10) as browser:
        refused = await browser.post(TICKETS)
        assert refused.status_code == 401, "a ticket is obtained with the token"
        async with browser.stream("GET", issued["url"]) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            first = await anext(response.aiter_bytes())
            assert first.startswith(b": hedgerow live telemetry")
        again = await browser.get(issued["url"])
        assert again.status_code == 401
        assert "used or expired" in again.json()["error"]["message"]


async def test_a_ticket_opens_nothing_but_the_live_stream(cloud: Cloud) -> None:
    async with httpx.AsyncClient(base_url=cloud.server.api_url, timeout=10) as browser:
        for path in ("/api/v1/groups", "/api/v1/status", "/api/v1/messages"):
            ticket = (await cloud.ok("POST", TICKETS))["ticket"]
            refused = await browser.get(path, params={"ticket": ticket})
            assert refused.status_code == 401, path
            assert "only the live stream" in refused.json()["error"]["message"]
            # refused elsewhere, the ticket was not spent: it still opens the stream
            async with browser.stream("GET", STREAM, params={"ticket": ticket}) as stream:
                assert stream.status_code == 200
        assert (await browser.get(STREAM, params={"ticket": "made-up"})).status_code == 401


async def test_a_ticket_expires(cloud: Cloud) -> None:
    ticket = (await cloud.ok("POST", TICKETS))["ticket"]
    tickets = cloud.server.tickets
    tickets.clock = lambda: time.time() + 61.0
    try:
        async with httpx.AsyncClient(base_url=cloud.server.api_url, timeout=10) as browser:
            expired = await browser.get(STREAM, params={"ticket": ticket})
    finally:
        tickets.clock = time.time
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]["message"]
