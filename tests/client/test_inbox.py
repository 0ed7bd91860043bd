"""The inbound queue on its own: backpressure signals and reader hand-off, no sockets."""

from __future__ import annotations

import asyncio

import pytest

from hedgerow.client import Message
from hedgerow.client.inbox import Inbox


def make(size: int) -> tuple[Inbox, list[str]]:
    events: list[str] = []
    inbox = Inbox(size, lambda: events.append("full"), lambda: events.append("drained"))
    return inbox, events


def test_full_at_size_and_drained_at_half() -> None:
    inbox, events = make(4)
    for index in range(4):
        inbox.put(Message("t", str(index).encode()))
    assert inbox.full and events == ["full"]
    assert inbox.pop() == Message("t", b"0")
    assert events == ["full"]  # 3 left: still above half
    inbox.pop()
    assert events == ["full", "drained"] and not inbox.full
    assert [inbox.pop(), inbox.pop(), inbox.pop()] == [Message("t", b"2"), Message("t", b"3"), None]
    assert events == ["full", "drained"]


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        make(0)


async def test_each_message_wakes_one_reader() -> None:
    inbox, _ = make(10)
    readers = [asyncio.ensure_future(inbox.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    inbox.put(Message("t", b"x"))
    await asyncio.sleep(0)
    assert [r.done() for r in readers] == [True, False, False]
    inbox.wake_all()
    await asyncio.gather(*readers)
    assert all(r.done() for r in readers)
