"""``SyncClient``: the asyncio ``Client`` for scripts, driven from a background event loop.

Every call hands a coroutine to the loop thread and waits for its result, so errors are the
same ``ClientError`` family as the async client's::

    with SyncClient("127.0.0.1", 1883, client_id="script") as client:
        client.subscribe("sensors/#", qos=1)
        client.publish("sensors/t", b"21.5", qos=1)
        for message in client.messages(timeout=5):
            ...
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar

from hedgerow.mqtt.packets import NO_PROPERTIES, ConnAck, Properties

from .client import Client, SubscriptionSpec
from .errors import ClientError
from .message import Message

T = TypeVar("T")

#: how long ``close()`` waits for the loop thread to finish
CLOSE_TIMEOUT = 10.0


class SyncClient:
    """Blocking MQTT client; takes the same arguments as ``hedgerow.client.Client``."""

    def __init__(self, host: str, port: int = 1883, **options: Any) -> None:
        self._client = Client(host, port, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def client(self) -> Client:
        """The underlying asyncio client (touch it only from the loop thread)."""
        return self._client

    @property
    def session_present(self) -> bool:
        return self._client.session_present

    @property
    def connack(self) -> ConnAck | None:
        return self._client.connack

    @property
    def is_connected(self) -> bool:
        return self._client.is_connected

    def __enter__(self) -> SyncClient:
        try:
            self.connect()
        except BaseException:
            self.close()  # __exit__ will not run: do not leave the loop thread behind
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- operations -------------------------------------------------------------------

    def connect(self) -> ConnAck:
        self._start_loop()
        return self._call(self._client.connect())

    def publish(
        self,
        topic: str,
        payload: bytes | str = b"",
        qos: int = 0,
        retain: bool = False,
        properties: Properties = NO_PROPERTIES,
        timeout: float | None = None,
    ) -> None:
        """Publish and wait until the QoS flow completes."""
        self._call(self._client.publish(topic, payload, qos, retain, properties), timeout)

    def subscribe(
        self, *topics: SubscriptionSpec, qos: int = 0, timeout: float | None = None
    ) -> tuple[int, ...]:
        return self._call(self._client.subscribe(*topics, qos=qos), timeout)

    def unsubscribe(self, *topic_filters: str, timeout: float | None = None) -> tuple[int, ...]:
        return self._call(self._client.unsubscribe(*topic_filters), timeout)

    def get_message(self, timeout: float | None = None) -> Message | None:
        """The next received message, or None if none arrives within ``timeout`` seconds.

        Raises ``ConnectionLost`` once the connection is gone and no message is left.
        """
        return self._call(self._next_message(timeout))

    def messages(self, timeout: float | None = None) -> Iterator[Message]:
        """Received messages until none arrives within ``timeout`` or the connection ends."""
        while True:
            message = self.get_message(timeout)
            if message is None:
                return
            yield message

    def disconnect(self) -> None:
        if self._loop is not None:
            self._call(self._client.disconnect())

    def close(self) -> None:
        """Disconnect (if connected) and stop the loop thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._call(self._client.disconnect(), CLOSE_TIMEOUT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(CLOSE_TIMEOUT)
            loop.close()
            self._loop = self._thread = None

    # ---- the loop thread --------------------------------------------------------------

    async def _next_message(self, wait: float | None) -> Message | None:
        try:
            async with asyncio.timeout(wait):
                return await self._client.get_message()
        except TimeoutError:
            return None

    def _start_loop(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            # finish whatever the client left scheduled (timers are cancelled on close)
            loop.run_until_complete(loop.shutdown_asyncgens())

        thread = threading.Thread(target=run, name="hedgerow-mqtt-sync", daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread = loop, thread

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._loop is None:
            coro.close()
            raise ClientError("not connected: call connect() first")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise TimeoutError(f"no result within {timeout} s") from exc
