"""A real stream manager on a free loopback port, run in its own thread and event loop, so
that the SDKs' blocking clients can be driven from the test's thread."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hedgerow.streams.manager import CloudSink, HttpPost, StreamManager, StreamsSettings
from hedgerow.streams.server import StreamServer, allow_token

TOKEN = "test-token-0123456789"


class ServerThread:
    def __init__(
        self,
        settings: StreamsSettings,
        *,
        cloud: Callable[[], CloudSink] | None = None,
        http_post: HttpPost | None = None,
    ) -> None:
        self.settings = settings
        self.cloud = cloud
        self.http_post = http_post
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.manager: StreamManager | None = None
        self._stop: asyncio.Event | None = None
        self._ready: Future[int] = Future()
        self._thread = threading.Thread(target=self._run, name="stream-server", daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # surfaced through the ready future
            if not self._ready.done():
                self._ready.set_exception(exc)
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        cloud = self.cloud() if self.cloud is not None else None  # built on the server's loop
        async with StreamManager(self.settings, cloud=cloud, http_post=self.http_post) as manager:
            self.manager = manager
            async with StreamServer(manager, port=0, authorize=allow_token(TOKEN)) as server:
                assert server.address is not None
                self._ready.set_result(server.address[1])
                await self._stop.wait()

    def start(self) -> int:
        self._thread.start()
        self.port = self._ready.result(timeout=10)
        return self.port

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        """Block until ``predicate()`` (run on the server's loop after each of its events)
        holds; fails after ``timeout`` seconds."""

        async def watch() -> None:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await asyncio.sleep(0.01)

        asyncio.run_coroutine_threadsafe(watch(), self.loop).result(timeout=timeout + 5)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop (for looking at the manager's state)."""

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=10)

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()


@contextmanager
def running(settings: StreamsSettings, **kwargs: Any) -> Iterator[ServerThread]:
    server = ServerThread(settings, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def token_env() -> Iterator[None]:
    """The SDKs read the token from the environment when the client is created."""
    old = os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
    os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = TOKEN
    try:
        yield
    finally:
        if old is None:
            del os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
        else:
            os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = old


class ServerProcess:
    """``python -m hedgerow.streams`` as a child process (for restarts and kill -9)."""

    def __init__(self, directory: Path, *extra: str) -> None:
        env = dict(os.environ, AWS_CONTAINER_AUTHORIZATION_TOKEN=TOKEN)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hedgerow.streams",
                "--dir",
                str(directory),
                "--port",
                "0",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # bounded: the child exits (EOF) if it fails
        assert line.startswith("listening "), f"stream server did not start: {line!r}"
        self.port = int(line.split()[2])

    def terminate(self) -> None:
        self.proc.terminate()
        try:
            assert self.proc.wait(timeout=20) == 0
        finally:
            self._close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=20)
        self._close()

    def _close(self) -> None:
        if self.proc.stdout is not None:
            self.proc.stdout.close()
