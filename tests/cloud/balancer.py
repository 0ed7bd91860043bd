"""A small TCP load balancer for tests: what an operator puts in front of the replicas.

``Balancer(backends)`` listens on a free loopback port and hands each new connection to
the next backend in turn (round robin); a backend that refuses the connection (a killed
replica) is skipped for the next one, as a balancer's health check would. Bytes are
copied both ways untouched (TLS passes through). ``served`` counts the connections each
backend took.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter


class Balancer:
    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.served: Counter[tuple[str, int]] = Counter()
        self._turn = itertools.cycle(range(len(backends)))
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0

    async def __aenter__(self) -> Balancer:
        # a deep accept queue: a broker asking about thousands of logins at once
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._open):  # the copies end on their own: nothing cancelled
            writer.close()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in self.backends:
            backend = self.backends[next(self._turn)]
            try:
                up_reader, up_writer = await asyncio.open_connection(*backend)
            except OSError:
                continue  # down: the next one
            self.served[backend] += 1
            task = asyncio.current_task()
            assert task is not None
            self._pipes.add(task)
            self._open |= {writer, up_writer}
            try:
                await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
            finally:
                self._pipes.discard(task)
                self._open -= {writer, up_writer}
                up_writer.close()
                writer.close()
            return
        writer.close()  # every backend down: the client sees the connection closed


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
    with contextlib.suppress(OSError):
        if sink.can_write_eof():
            sink.write_eof()
