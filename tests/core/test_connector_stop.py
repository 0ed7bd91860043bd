"""Stopping the connector while its cloud link breaks: the stop must win.

On Python 3.11 a TaskGroup whose child fails while the group's own task is being cancelled
raises the child's error and swallows the cancellation. The connector caught that error as
a lost link and reconnected, so a core told to stop at the moment its cloud connection
broke (cloud restarting, network flapping) kept reconnecting for ever and ignored SIGTERM.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hedgerow.backoff import BackoffPolicy
from hedgerow.client.errors import ConnectionLost
from hedgerow.clock import ManualClock
from hedgerow.core.connector import CloudConnector
from hedgerow.core.spool import MemorySpool


class BreakingClient:
    """Connects at once; its message stream breaks (ConnectionLost) when it is cancelled,
    as a real link does when the cloud goes away at the moment the core stops."""

    sessions = 0
    receiving = asyncio.Event()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def connect(self) -> None:
        return None

    async def subscribe(self, *filters: str, qos: int) -> None:
        BreakingClient.sessions += 1

    def publish_nowait(self, *args: Any) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def messages(self) -> AsyncIterator[Any]:
        BreakingClient.receiving.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ConnectionLost("the cloud closed the connection") from None
        yield  # an async generator that never yields a message

    def abort(self) -> None:
        pass


def connector(client: type, clock: ManualClock | None = None) -> CloudConnector:
    return CloudConnector(
        core="pi-1", host="127.0.0.1", port=1, ssl_context=ssl.create_default_context(),
        spool=MemorySpool(), on_message=lambda t, p: None, on_connected=lambda: None,
        filters=list, client_factory=client,  # type: ignore[arg-type]
        backoff=BackoffPolicy(0.05, 0.2), clock=clock,
        uniform=lambda low, high: high,  # the jitter's upper bound: exact delays
    )  # fmt: skip


async def test_a_stop_that_coincides_with_a_lost_link_stops_the_connector() -> None:
    BreakingClient.receiving = asyncio.Event()
    BreakingClient.sessions = 0
    c = connector(BreakingClient)
    task = asyncio.create_task(c.run())
    await asyncio.wait_for(BreakingClient.receiving.wait(), 5)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=3)
    assert done, f"the connector did not stop (sessions opened: {BreakingClient.sessions})"
    assert task.cancelled()
    assert BreakingClient.sessions == 1


class ClosingClient(BreakingClient):
    """The cloud closes the stream by itself (no stop): the connector reconnects."""

    async def messages(self) -> AsyncIterator[Any]:
        BreakingClient.receiving.set()
        return
        yield


async def test_a_link_dropped_at_once_is_retried_at_the_backoffs_pace() -> None:
    """A cloud that accepts and then drops the link at once: reconnect, but not in a hot
    loop (the backoff applies until a session lasts)."""
    BreakingClient.receiving = asyncio.Event()
    BreakingClient.sessions = 0
    clock = ManualClock()
    c = connector(ClosingClient, clock)
    task = asyncio.create_task(c.run())
    await clock.wait_sleepers(1)
    assert c.counters["connects"] == 1  # then it waits, it does not reconnect at once
    clock.advance(0.049)
    await clock.wait_sleepers(1)
    assert c.counters["connects"] == 1
    # 1 s of a cloud that drops every link at once: reconnects after 0.05, 0.1, 0.2, 0.2,
    # 0.2, 0.2 s (the backoff, doubling up to its cap), i.e. at 0.05, 0.15, 0.35, 0.55,
    # 0.75 and 0.95 s
    while (due := clock.next_due()) is not None and due <= 1.0:
        clock.advance(due - clock.now())
        await clock.wait_sleepers(1)
    assert c.counters["connects"] == 7, c.counters
    assert clock.next_due() == pytest.approx(1.15)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=3)
    assert done and task.cancelled()
