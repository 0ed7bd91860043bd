"""Delivering alerts to webhooks (the signed POST itself is ``webhooks.py``, shared with
telemetry export).

A delivery is an HTTP POST of JSON ``{"state": "firing"|"resolved", "alert": {...}}`` with
``X-Hedgerow-Timestamp`` (epoch seconds) and ``X-Hedgerow-Signature: sha256=<hex>``, the
HMAC-SHA256 of ``TIMESTAMP + "." + BODY`` under the webhook's secret. A 2xx answer is
delivered; anything else (another status, no answer within ``TIMEOUT_S``) is retried on a
capped, jittered exponential backoff, ``ATTEMPTS`` times in all.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import httpx

from hedgerow.backoff import BackoffPolicy
from hedgerow.clock import Clock, MonotonicClock
from hedgerow.cloud import webhooks
from hedgerow.cloud.alerting import AlertWebhook

log = logging.getLogger(__name__)

ATTEMPTS: Final = 5
TIMEOUT_S: Final = 5.0
RETRY: Final = BackoffPolicy(base=0.5, cap=30.0)


def signed_request(
    hook: AlertWebhook, body: Mapping[str, Any], now: float
) -> tuple[bytes, dict[str, str]]:
    """The bytes to POST and their headers."""
    data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return data, webhooks.signed_headers(hook.secret, data, now, user_agent="hedgerow-alerts/1")


async def deliver(
    client: httpx.AsyncClient,
    hook: AlertWebhook,
    body: Mapping[str, Any],
    *,
    clock: Clock | None = None,
    wall: Callable[[], float] = time.time,
    attempts: int = ATTEMPTS,
    retry: BackoffPolicy = RETRY,
) -> str:
    """POST until a 2xx answer or ``attempts`` run out: ``"delivered"`` or ``"failed: …"``."""
    clock = clock or MonotonicClock()
    reason = "not tried"
    for attempt in range(attempts):
        data, headers = signed_request(hook, body, wall())
        failed = await webhooks.post(client, hook.url, data, headers, TIMEOUT_S)
        if failed is None:
            log.info("alerts.delivered webhook=%s attempt=%s", hook.name, attempt + 1)
            return "delivered"
        reason = failed
        if attempt + 1 < attempts:
            delay = retry.delay(attempt, random.uniform)
            log.info(
                "alerts.delivery_retry webhook=%s reason=%s retry_in=%.2f", hook.name, reason, delay
            )
            await clock.sleep(delay)
    log.warning("alerts.delivery_failed webhook=%s reason=%s", hook.name, reason)
    return f"failed: {reason}"
