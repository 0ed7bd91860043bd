"""The connector lifecycle: states, waiting for a state, and a stop that always ends."""

from __future__ import annotations

import asyncio

from hedgerow.connectors.model import ConnectorBase
from hedgerow.lifecycle import Health, State


class Swallowing(ConnectorBase):
    """Runs until cancelled twice: the first cancellation is swallowed, as some libraries do."""

    async def _run(self) -> None:
        self._linked()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass
        await asyncio.Event().wait()


class Crashing(ConnectorBase):
    async def _run(self) -> None:
        raise RuntimeError("a bug")


async def _nowhere(topic: str, payload: bytes) -> None:
    return None


async def test_stop_ends_even_when_a_cancellation_is_swallowed() -> None:
    c = Swallowing("s", _nowhere)
    assert c.state is State.STOPPED
    await c.start()
    async with asyncio.timeout(5):
        assert await c.wait_for_state(State.RUNNING) is State.RUNNING
    assert c.health() is Health.HEALTHY and c.counters.connected
    async with asyncio.timeout(5):
        await c.stop()
    assert c.state is State.STOPPED and not c.counters.connected


async def test_a_bug_leaves_the_connector_broken_not_silent() -> None:
    c = Crashing("c", _nowhere)
    await c.start()
    async with asyncio.timeout(5):
        await c.wait_for_state(State.BROKEN)
    assert c.health() is Health.BROKEN
    await c.stop()
    assert c.state is State.STOPPED
