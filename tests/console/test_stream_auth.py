"""The admin token never travels in a URL: the console sends it in a header, and a page
that can only use EventSource opens the live stream with a single-use ticket."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import RunningCloud, login

pytestmark = pytest.mark.browser

OPEN_EVENT_SOURCE = """async (url) => await new Promise((resolve) => {
  const source = new EventSource(url);
  source.onopen = () => { source.close(); resolve("open"); };
  source.onerror = () => { const state = source.readyState; source.close();
                           resolve(state === EventSource.CLOSED ? "refused" : "error"); };
})"""

TICKET = """async () => {
  const response = await fetch("/api/v1/messages/stream/tickets", {
    method: "POST",
    headers: { authorization: `Bearer ${sessionStorage.getItem("hedgerow.token")}` },
  });
  return { status: response.status, body: await response.json() };
}"""


def test_the_token_stays_out_of_urls_and_a_ticket_opens_one_stream(
    page: Any, cloud: RunningCloud
) -> None:
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    login(page, cloud, "#/live?filter=auth-test/%23")
    page.locator("#live-state .badge-live").wait_for()  # the console's own stream: a header
    assert any("/api/v1/messages/stream" in url for url in urls), urls
    assert not [url for url in urls if cloud.token in url or "token=" in url]

    refused = page.evaluate(OPEN_EVENT_SOURCE, f"/api/v1/messages/stream?token={cloud.token}")
    assert refused == "refused", "the token in a URL is refused"
    issued = page.evaluate(TICKET)
    assert issued["status"] == 201 and issued["body"]["expires_in"] == 60
    url = issued["body"]["url"]
    assert page.evaluate(OPEN_EVENT_SOURCE, url) == "open"
    assert page.evaluate(OPEN_EVENT_SOURCE, url) == "refused", "a ticket opens one stream"
