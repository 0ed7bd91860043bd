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

from hedgerow.client.errors import ConnectionLost
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

    async def messages(self) -> AsyncIterator[Any]:
        BreakingClient.receiving.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ConnectionLost("the cloud closed the connection") from None
        yield  # an async generator that never yields a message

    def abort(self) -> None:
        pass


def connector(client: type) -> CloudConnector:
    return CloudConnector(
        core="pi-1", host="127.0.0.1", port=1, ssl_context=ssl.create_default_context(),
        spool=MemorySpool(), on_message=lambda t, p: None, on_connected=lambda: None,
        filters=list, client_factory=client,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_a_stop_that_coincides_with_a_lost_link_stops_the_connector() -> None:
    BreakingClient.receiving = asyncio.Event()
    BreakingClient.sessions = 0
    task = asyncio.create_task(connector(BreakingClient).run())
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


async def test_a_lost_link_alone_reconnects() -> None:
    BreakingClient.receiving = asyncio.Event()
    BreakingClient.sessions = 0
    c = connector(ClosingClient)
    task = asyncio.create_task(c.run())
    try:
        async with asyncio.timeout(5):
            while BreakingClient.sessions < 3:
                await asyncio.sleep(0.01)
        assert c.counters["connects"] >= 3
    finally:
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=3)
        assert done and task.cancelled()
