"""``SyncThing``: the asyncio ``Thing`` for plain scripts, run on a background event loop.

```python
with SyncThing(thing_config("bme680-1", "cloud.example:8443", "root-ca.pem", "t.cert.pem", "t.key")) as thing:
    thing.wait_connected(30)
    thing.publish("sensors/bme680-1", b'{"temperature": 21.5}')
```
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from hedgerow.client import Message

from .core_link import Thing, ThingConfig, ThingStats
from .discovery import Endpoint
from .errors import ThingClosed
from .queue import OfflineQueue

T = TypeVar("T")

CLOSE_TIMEOUT = 30.0


class SyncThing:
    """Blocking facade: ``start()``/``close()`` (or ``with``), ``publish``, ``wait_connected``."""

    def __init__(self, config: ThingConfig, *, queue: OfflineQueue | None = None) -> None:
        self._config = config
        self._queue = queue
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._thing: Thing | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    def __enter__(self) -> SyncThing:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._main, name=f"thing-{self._config.thing_name}", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with Thing(self._config, queue=self._queue) as thing:
                self._thing = thing
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # reported to the caller of start()/close()
            self._startup_error = exc
            self._ready.set()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._loop is None or self._thing is None:
            coro.close()
            raise ThingClosed("the thing is not running; call start() first")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise TimeoutError("timed out") from exc

    @property
    def thing(self) -> Thing:
        if self._thing is None:
            raise ThingClosed("the thing is not running")
        return self._thing

    def wait_connected(self, timeout: float | None = None) -> Endpoint:
        return self._call(self.thing.wait_connected(), timeout)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> bool:
        thing = self.thing

        async def put() -> bool:
            return thing.publish(topic, payload, qos)

        return self._call(put())

    def subscribe(self, topic_filter: str, qos: int = 1, timeout: float | None = None) -> None:
        """Subscribe now (if connected) and on every later connection."""
        self._call(self.thing.subscribe(topic_filter, qos), timeout)

    def get_message(self, timeout: float | None = None) -> Message:
        """The next message received on the subscriptions (``TimeoutError`` after ``timeout``)."""
        thing = self.thing

        async def next_message() -> Message:
            async for message in thing.messages():
                return message
            raise ThingClosed("the thing stopped")

        return self._call(next_message(), timeout)

    def flush(self, timeout: float | None = None) -> bool:
        return self._call(self.thing.flush(timeout))

    def stats(self) -> ThingStats:
        thing = self.thing

        async def read() -> ThingStats:
            return thing.stats()

        return self._call(read())

    def close(self) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(CLOSE_TIMEOUT)
        self._thing = None
        self._thread = None
