"""The queue of received messages between the connection and the application.

Bounded by backpressure, not by dropping: when it holds ``size`` messages it calls
``on_full`` (the client stops reading the socket) and once readers have taken it down to
half it calls ``on_drained`` (reading resumes). Readers wait on futures, one woken per
message, so many tasks may read from one inbox.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from .message import Message


class Inbox:
    __slots__ = ("_full", "_messages", "_on_drained", "_on_full", "_resume_at", "_waiters", "size")

    def __init__(
        self, size: int, on_full: Callable[[], None], on_drained: Callable[[], None]
    ) -> None:
        if size < 1:
            raise ValueError("the inbox size must be at least 1")
        self.size = size
        self._resume_at = size // 2
        self._on_full = on_full
        self._on_drained = on_drained
        self._full = False
        self._messages: deque[Message] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def full(self) -> bool:
        """True from reaching ``size`` until readers took it down to half."""
        return self._full

    def put(self, message: Message) -> None:
        self._messages.append(message)
        if len(self._messages) >= self.size:  # again on every put: the connection may be new
            self._full = True
            self._on_full()
        if self._waiters:
            self._wake_one()

    def pop(self) -> Message | None:
        """The oldest message, or None when empty."""
        if not self._messages:
            return None
        message = self._messages.popleft()
        if self._full and len(self._messages) <= self._resume_at:
            self._full = False
            self._on_drained()
        return message

    async def wait(self) -> None:
        """Until a message is put or ``wake_all`` is called (check again after)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # we were handed a message we will not take: pass it on
            raise

    def wake_all(self) -> None:
        """Wake every waiting reader (the connection ended)."""
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
