"""Telemetry ingest: a worker that stores what cores forward, in batches.

``submit()`` is cheap and synchronous (called from the MQTT interceptor for every
message); the worker drains everything pending in one write (a multi-row INSERT on
SQLite, COPY on PostgreSQL) while new messages gather for the next write.

``submit()`` returns a future that completes once the message is stored: the embedded
broker acknowledges a core's QoS 1 message only then, so a cloud that crashes loses
nothing it acknowledged (the core keeps the message in its spool and sends it again).
Messages submitted together share one future per write, not one each. When the store
falls behind by ``max_pending`` messages, new ones are refused (their future fails, the
broker drops the core's link without acknowledging, and the core retries later), and
counted. A second task deletes messages older than the retention period (unless the
caller runs ``sweep`` itself: the cloud server runs it as a job, once across replicas);
on PostgreSQL the telemetry's sweep is partition maintenance (``MessageStore.expire_messages``:
whole days dropped, the coming days' partitions created).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from hedgerow.cloud.storage.repository import Repository

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 10_000
DEFAULT_MAX_PENDING = 200_000
RETENTION_SWEEP_SECONDS = 60.0
#: Seconds to wait before retrying after a failed write (the batch is kept).
RETRY_SECONDS = 1.0

Row = tuple[str, bytes, str, float]


class IngestBehind(Exception):
    """A message was not stored: the store is behind (or failed); the sender must retry."""

    def __init__(self, pending: int, message: str | None = None) -> None:
        super().__init__(message or f"telemetry store is behind by {pending} messages")
        self.pending = pending


def _chain(first: asyncio.Future[None], then: asyncio.Future[None]) -> None:
    """Complete ``then`` as ``first`` completes."""

    def copy(done: asyncio.Future[None]) -> None:
        if then.done():
            return
        if done.cancelled():
            then.cancel()
        elif (error := done.exception()) is not None:
            then.set_exception(error)
        else:
            then.set_result(None)

    first.add_done_callback(copy)


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0
    dropped: int = 0
    batches: int = 0
    failures: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "received": self.received,
            "stored": self.stored,
            "dropped": self.dropped,
            "batches": self.batches,
            "failures": self.failures,
        }


class IngestWorker:
    """``async with IngestWorker(repo) as ingest: ingest.submit(...)``; pending rows are
    flushed on exit."""

    def __init__(
        self,
        repository: Repository,
        *,
        retention_days: float = 7.0,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_pending: int = DEFAULT_MAX_PENDING,
        on_written: Callable[[], None] | None = None,
        write: Callable[[list[Row]], None] | None = None,
        delete_before: Callable[[float], int] | None = None,
        name: str = "ingest",
        sweep_in_background: bool = True,
    ) -> None:
        """``write`` and ``delete_before`` default to the telemetry table's; the logs'
        worker passes its own (same batching, acknowledgement and retention rules).
        ``sweep_in_background=False``: the caller runs ``sweep`` (the cloud server, as a
        job that runs once across replicas)."""
        self.sweep_in_background = sweep_in_background
        self.repository = repository
        self.write = write or repository.insert_messages
        self.delete_before = delete_before or repository.expire_messages
        self.name = name
        self.retention_seconds = retention_days * 86400
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.on_written = on_written
        self.stats = IngestStats()
        self._pending: list[Row] = []
        #: completes when every row now pending is stored (created by the first submit)
        self._stored: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._stop = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None

    def submit(
        self, topic: str, payload: bytes, core: str, ts: float | None = None
    ) -> asyncio.Future[None]:
        """Queue one message; the future completes when it is stored (it fails when the
        message was refused because the store is behind, or could not be written)."""
        self.stats.received += 1
        if len(self._pending) >= self.max_pending:
            self.stats.dropped += 1
            if self.stats.dropped % 10_000 == 1:
                log.warning(
                    "ingest.refusing pending=%s refused=%s", len(self._pending), self.stats.dropped
                )
            refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            refused.set_exception(IngestBehind(len(self._pending)))
            return refused
        self._pending.append((topic, payload, core, time.time() if ts is None else ts))
        stored = self._stored
        if stored is None:
            stored = self._stored = asyncio.get_running_loop().create_future()
        self._idle.clear()
        self._wake.set()
        return stored

    async def flushed(self) -> None:
        """Wait until everything submitted so far is stored."""
        await self._idle.wait()

    async def __aenter__(self) -> IngestWorker:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._tasks.create_task(self._writer(), name=f"{self.name}-writer")
        if self.sweep_in_background:
            self._tasks.create_task(self._retention(), name=f"{self.name}-retention")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        self._stop.set()
        self._wake.set()
        assert self._tasks is not None
        await self._tasks.__aexit__(None, None, None)

    async def _writer(self) -> None:
        while True:
            if not self._pending:
                self._idle.set()
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            # the rows' future goes with the write that takes the last of them
            stored = None if self._pending else self._stored
            if stored is not None:
                self._stored = None
            try:
                await asyncio.to_thread(self.write, batch)
            except Exception as exc:
                self.stats.failures += 1
                log.warning("ingest.write_failed rows=%s error=%s", len(batch), exc)
                self._pending[:0] = batch
                if stored is not None:
                    if self._stored is None:
                        self._stored = stored
                    else:  # rows arrived meanwhile: both complete with the next write
                        _chain(self._stored, stored)
                if self._closing:
                    log.error("ingest.not_stored rows=%s acknowledged=no", len(self._pending))
                    self._pending.clear()
                    if self._stored is not None and not self._stored.done():
                        self._stored.set_exception(IngestBehind(0, f"store failed: {exc}"))
                    self._stored = None
                    continue
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if stored is not None and not stored.done():
                stored.set_result(None)
            self.stats.stored += len(batch)
            self.stats.batches += 1
            if self.on_written:
                self.on_written()

    async def sweep(self) -> int:
        """Delete messages older than the retention period; returns how many. Each step
        is one transaction: a cloud killed meanwhile leaves a consistent table, and the
        next sweep finishes the work."""
        cutoff = time.time() - self.retention_seconds
        deleted = await asyncio.to_thread(self.delete_before, cutoff)
        if deleted:
            log.info("ingest.retention worker=%s deleted=%s", self.name, deleted)
        return deleted

    async def _retention(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._stop.wait(), RETENTION_SWEEP_SECONDS)
                return
            except TimeoutError:
                pass
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("ingest.retention_failed error=%s", exc)
