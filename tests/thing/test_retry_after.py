"""Retry-After from a throttled discovery: read, capped, and honoured by the thing's backoff."""

from __future__ import annotations

import asyncio
import email.utils
import time

import pytest

from hedgerow.backoff import Backoff, BackoffPolicy
from hedgerow.thing import Thing, thing_config
from hedgerow.thing.discovery import MAX_RETRY_AFTER_S, DiscoveryClient, retry_after_seconds
from hedgerow.thing.errors import DiscoveryUnavailable

from .conftest import DiscoveryStandIn, Env


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after_seconds(b"3") == 3.0
    assert retry_after_seconds(" 0 ") == 0.0
    assert retry_after_seconds(b"86400") == MAX_RETRY_AFTER_S
    date = email.utils.formatdate(1_000_010, usegmt=True)
    assert retry_after_seconds(date, now=1_000_000) == pytest.approx(10.0)
    assert retry_after_seconds(date, now=1_000_100) == 0.0  # in the past: now
    for bad in (None, b"", b"soon", b"-5", b"1.5"):
        assert retry_after_seconds(bad) is None


def test_the_backoff_waits_at_least_what_the_server_asked() -> None:
    backoff = Backoff(BackoffPolicy(base=0.5, cap=1.0), uniform=lambda lo, hi: hi)
    assert backoff.next_delay_after(None) == 0.5
    assert backoff.next_delay_after(4.0) == 6.0  # 4 s plus up to half again (here all of it)
    assert backoff.next_delay_after(0.1) == 1.0  # the schedule's own delay was longer
    assert backoff.attempt == 3


async def test_a_throttled_discovery_says_when_to_come_back(
    env: Env, discovery: DiscoveryStandIn
) -> None:
    discovery.response = (503, {"errorMessage": "busy"})
    discovery.headers = [("retry-after", "2")]
    client = DiscoveryClient(env.credentials)
    with pytest.raises(DiscoveryUnavailable, match="retry after 2 s") as caught:
        await client.discover(discovery.endpoint, env.thing_name)
    assert caught.value.retry_after == 2.0 and caught.value.retryable


async def test_the_thing_waits_for_retry_after_rather_than_its_short_backoff(
    env: Env, discovery: DiscoveryStandIn
) -> None:
    discovery.response = (429, {"errorMessage": "slow down"})
    discovery.headers = [("retry-after", "1")]
    config = thing_config(
        env.thing_name,
        discovery.endpoint,
        env.pki.ca_file,
        env.thing.cert,
        env.thing.key,
        backoff=BackoffPolicy(base=0.01, cap=0.02),
    )
    async with Thing(config):
        deadline = time.monotonic() + 10
        while len(discovery.request_times) < 2:
            assert time.monotonic() < deadline, discovery.request_times
            await asyncio.sleep(0.02)
    first, second = discovery.request_times[:2]
    assert 1.0 <= second - first < 3.0, second - first
