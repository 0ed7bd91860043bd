"""Signed HTTP POSTs, shared by alert webhooks and telemetry export (one attempt each).

A delivery carries ``X-Hedgerow-Timestamp`` (epoch seconds) and, when there is a secret,
``X-Hedgerow-Signature: sha256=<hex>``, the HMAC-SHA256 of ``TIMESTAMP + "." + BODY``
(``alerting.sign``; a receiver checks it with ``alerting.verify``). ``post`` answers None
for a 2xx and otherwise the reason (a status, or the transport error); the callers own
their retry schedules.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from hedgerow.cloud.alerting import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign


def signed_headers(
    secret: str,
    data: bytes,
    now: float,
    *,
    user_agent: str,
    content_type: str = "application/json",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The headers of one signed POST of ``data`` (unsigned when ``secret`` is empty)."""
    timestamp = str(int(now))
    headers = {**(extra or {}), "content-type": content_type, "user-agent": user_agent}
    headers[TIMESTAMP_HEADER] = timestamp
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, data)
    return headers


async def post(
    client: httpx.AsyncClient, url: str, data: bytes, headers: Mapping[str, str], timeout_s: float
) -> str | None:
    """POST once: None when the answer is a 2xx, else why not (``HTTP 500``, ``ConnectError: …``)."""
    try:
        response = await client.post(url, content=data, headers=dict(headers), timeout=timeout_s)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"
