"""``StreamManager``: the streams, their operations, durability and exports (the service).

It owns every stream (a ``StreamLog`` for the accounting, a store for the bytes, the export
progress) and one TaskGroup with the background tasks: the periodic fsync and time-to-live
sweep, the cloud export (one task, streams served by priority) and one task per HTTP export.
The asyncio server (``hedgerow.streams.server``) calls the operations; everything runs on
one event loop, so no locks.

Durability (``Persistence.File``): an append is written (one ``os.write``) before it is
answered, so it survives ``kill -9``; for ``flushOnWrite`` streams the answer also waits for
the fsync, shared by every append of the same loop tick (group commit), so it survives power
loss; other streams are fsynced every ``fsync_interval`` seconds (a power cut may lose that
last interval). Export progress is saved at most every ``PROGRESS_SAVE_INTERVAL``
(and on stop), without fsync: after a crash what was exported since may be exported again,
never lost (at-least-once, like the cloud spool).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import InvalidRequest, StoreError, StreamExists, StreamNotFound, UpdateNotAllowed
from .log import StreamLog
from .model import (
    ExportConfig,
    ExportKind,
    Persistence,
    ReadOptions,
    StreamDefinition,
    check_name,
    parse_definition,
)
from .store import FileStore, MemoryStore, Record, StreamStore, load_definition, stream_dir

log = logging.getLogger(__name__)

#: Export progress is saved at most this often (seconds) and on stop: a crash re-exports at
#: most this much (duplicates, never a loss), and a fast export is not held up by renames.
PROGRESS_SAVE_INTERVAL = 0.25
#: How long the cloud exporter waits before looking again when the spool has no room.
CLOUD_ROOM_POLL = 0.5
DEFAULT_FSYNC_INTERVAL = 1.0


class ServiceState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class CloudSink(Protocol):
    """Where cloud exports go: the core's durable spool (``SpoolWriter`` + its spool)."""

    def room(self) -> int:
        """Bytes the spool takes now without dropping anything."""
        ...

    def accepts(self, topic: str) -> bool:
        """Whether the cloud takes messages on ``topic`` from this core (the group has a
        subscription to ``cloud`` covering it); the cloud refuses, and the spool drops,
        anything else."""
        ...

    def add(self, topic: str, payload: bytes, qos: int) -> None: ...


HttpPost = Callable[[str, bytes, str], Awaitable[int]]
"""``post(url, body, content_type)`` → the HTTP status; raises ``OSError``-like errors."""


@dataclass(frozen=True, slots=True)
class StreamsSettings:
    #: where File streams live (None: only Memory streams can be created)
    directory: Path | None
    #: the sum of all streams' maxSize may not exceed this
    max_bytes: int = 1024 * 1024 * 1024
    fsync_interval: float = DEFAULT_FSYNC_INTERVAL
    #: the core's name, for the default cloud topic ``streams/<core>/<stream>``
    core: str = "core"
    #: the largest ReadMessages answer (payload bytes), kept under the protocol's frame limit
    max_read_bytes: int = 8 * 1024 * 1024


@dataclass(slots=True)
class ExportState:
    config: ExportConfig
    last_exported: int = -1
    last_export_time: int = 0
    exported_messages: int = 0
    exported_bytes: int = 0
    error: str | None = None
    last_attempt: float = 0.0


@dataclass(eq=False)
class Stream:
    definition: StreamDefinition
    wire: dict[str, Any]
    log: StreamLog
    store: StreamStore
    exports: dict[str, ExportState] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    deleted: bool = False
    http_tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    progress_dirty: bool = False
    progress_saved_at: float = 0.0

    @property
    def name(self) -> str:
        return self.definition.name

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def next_to_export(self, state: ExportState) -> int:
        return max(state.last_exported + 1, self.log.oldest, state.config.start_sequence_number)

    def backlog(self) -> int:
        """Messages not yet exported by the slowest enabled export (0 without exports)."""
        pending = [
            self.log.next_sequence - self.next_to_export(s)
            for s in self.exports.values()
            if not s.config.disabled
        ]
        return max(pending, default=0)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class StreamManager:
    def __init__(
        self,
        settings: StreamsSettings,
        *,
        cloud: CloudSink | None = None,
        http_post: HttpPost | None = None,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.settings = settings
        self.cloud = cloud
        self.http_post = http_post
        self.clock = clock
        self.state = ServiceState.NEW
        self.streams: dict[str, Stream] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sync_waiters: list[asyncio.Future[None]] = []
        self._sync_streams: set[Stream] = set()
        self._cloud_wake = asyncio.Event()
        self.appended = 0
        self.rejected = 0

    # ---- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> StreamManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._reopen()
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._spawn(self._housekeeping(), "streams-housekeeping")
        self._spawn(self._cloud_export(), "streams-cloud-export")
        for stream in self.streams.values():
            self._start_http_exports(stream)
        self.state = ServiceState.RUNNING
        log.info("streams.started streams=%d", len(self.streams))

    async def stop(self) -> None:
        if self.state is not ServiceState.RUNNING:
            return
        self.state = ServiceState.STOPPING
        tg, self._tg = self._tg, None
        if tg is not None:
            for task in self._tasks:
                task.cancel()
            await tg.__aexit__(None, None, None)
        self._tasks.clear()
        self._flush_syncs()
        for stream in self.streams.values():
            self._save_progress(stream)
            try:
                stream.store.sync()
            except StoreError as exc:
                log.error("streams.sync_failed stream=%s error=%s", stream.name, exc)
            stream.store.close()
        self.state = ServiceState.STOPPED
        log.info("streams.stopped")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        assert self._tg is not None
        task = self._tg.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _housekeeping(self) -> None:
        """Every ``fsync_interval``: fsync what was written, drop segments past their TTL."""
        while True:
            await asyncio.sleep(self.settings.fsync_interval)
            now = self.clock()
            for stream in list(self.streams.values()):
                self._save_progress(stream)
                try:
                    stream.store.sync()
                except StoreError as exc:
                    log.error("streams.sync_failed stream=%s error=%s", stream.name, exc)
                expired = stream.log.expired(now, stream.definition.ttl_ms)
                if expired:
                    stream.store.drop(expired)
                    stream.log.drop_oldest(expired)
                    log.info("streams.expired stream=%s segments=%d", stream.name, expired)

    def health(self) -> str | None:
        """None when serving, else why not."""
        return None if self.state is ServiceState.RUNNING else f"stream manager {self.state.value}"

    def _reopen(self) -> None:
        root = self.settings.directory
        if root is None:
            return
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(f"cannot create the streams directory {root}: {exc}") from exc
        for directory in sorted(p for p in root.iterdir() if p.is_dir()):
            try:
                wire = load_definition(directory)
                definition = parse_definition(wire)
                store, segments = FileStore.open(directory)
            except (StoreError, InvalidRequest) as exc:
                log.error("streams.reopen_failed dir=%s error=%s", directory, exc)
                continue
            stream = Stream(
                definition,
                wire,
                StreamLog(
                    definition.name,
                    definition.max_size,
                    definition.segment_size,
                    definition.strategy,
                    segments,
                ),
                store,
            )
            self._set_exports(stream, store.load_progress())
            self.streams[definition.name] = stream
            log.info(
                "streams.reopened stream=%s oldest=%d newest=%d",
                definition.name,
                stream.log.oldest,
                stream.log.newest,
            )

    # ---- operations --------------------------------------------------------------------

    def _get(self, name: Any) -> Stream:
        stream = self.streams.get(check_name(name))
        if stream is None:
            raise StreamNotFound(str(name))
        return stream

    def _check_budget(self, definition: StreamDefinition, replacing: str | None = None) -> None:
        total = definition.max_size + sum(
            s.definition.max_size for n, s in self.streams.items() if n != replacing
        )
        if total > self.settings.max_bytes:
            raise InvalidRequest(
                f"streams would hold up to {total} bytes, more than the core's budget "
                f"{self.settings.max_bytes} (streams.max_bytes): lower maxSize or raise the budget"
            )

    def create(self, wire: Any) -> None:
        definition = parse_definition(wire)
        if definition.name in self.streams:
            raise StreamExists(definition.name)
        self._check_budget(definition)
        store: StreamStore
        if definition.persistence is Persistence.File:
            if self.settings.directory is None:
                raise InvalidRequest(
                    "this core keeps no stream files (streams.dir unset): use Persistence.Memory"
                )
            directory = stream_dir(self.settings.directory, definition.name)
            if directory.exists():  # a stream that could not be reopened: never overwrite it
                raise InvalidRequest(
                    f"files of an earlier stream {definition.name!r} are in {directory} but "
                    "could not be opened (see the core's log): move them away to create it anew"
                )
            store = FileStore.create(directory, wire)
        else:
            store = MemoryStore()
        stream = Stream(
            definition,
            dict(wire),
            StreamLog(
                definition.name, definition.max_size, definition.segment_size, definition.strategy
            ),
            store,
        )
        self._set_exports(stream, {})
        self.streams[definition.name] = stream
        self._start_http_exports(stream)
        log.info(
            "streams.created stream=%s persistence=%s max_size=%d exports=%d",
            definition.name,
            definition.persistence.name,
            definition.max_size,
            len(definition.exports),
        )

    def update(self, wire: Any) -> None:
        definition = parse_definition(wire)
        stream = self._get(definition.name)
        if definition.persistence is not stream.definition.persistence:
            raise UpdateNotAllowed(
                definition.name,
                f"persistence of stream {definition.name!r} cannot change: delete the stream "
                "and create it again",
            )
        self._check_budget(definition, replacing=definition.name)
        stream.store.save_definition(dict(wire))
        stream.definition, stream.wire = definition, dict(wire)
        stream.log.set_limits(definition.max_size, definition.segment_size, definition.strategy)
        excess = 0
        total = stream.log.total_bytes
        segments = list(stream.log.segments)
        while total > definition.max_size and excess < len(segments) - 1:
            total -= segments[excess].bytes
            excess += 1
        if excess:
            stream.store.drop(excess)
            stream.log.drop_oldest(excess)
        progress = {i: s.last_exported for i, s in stream.exports.items()}
        for task in stream.http_tasks.values():
            task.cancel()
        stream.http_tasks.clear()
        self._set_exports(stream, progress)
        self._start_http_exports(stream)
        stream.notify()
        log.info("streams.updated stream=%s", definition.name)

    def delete(self, name: Any) -> None:
        stream = self._get(name)
        del self.streams[stream.name]
        stream.deleted = True
        for task in stream.http_tasks.values():
            task.cancel()
        stream.store.destroy()
        self._sync_streams.discard(stream)
        stream.notify()
        log.info("streams.deleted stream=%s", stream.name)

    def list_streams(self) -> list[str]:
        return sorted(self.streams)

    def describe(self, name: Any) -> dict[str, Any]:
        stream = self._get(name)
        return {
            "definition": stream.wire,
            "storageStatus": {
                "oldestSequenceNumber": stream.log.oldest,
                "newestSequenceNumber": stream.log.newest,
                "totalBytes": stream.log.total_bytes,
            },
            "exportStatuses": [
                {
                    "exportConfigIdentifier": s.config.identifier,
                    "lastExportedSequenceNumber": s.last_exported,
                    "lastExportTime": s.last_export_time,
                    "errorMessage": s.error or "",
                    "exportedBytesFromStream": s.exported_bytes,
                    "exportedMessagesCount": s.exported_messages,
                }
                for s in stream.exports.values()
            ],
        }

    async def append(self, name: Any, payload: Any) -> int:
        stream = self._get(name)
        if not isinstance(payload, bytes) or not payload:
            raise InvalidRequest("payload is required: at least one byte")
        log_ = stream.log
        try:
            plan = log_.plan_append(len(payload))
        except InvalidRequest:
            self.rejected += 1
            raise
        now = self.clock()
        stream.store.append(plan, now, payload)
        dropped = log_.commit(plan, now)
        if dropped:
            log.info(
                "streams.overwritten stream=%s segments=%d messages=%d",
                stream.name,
                len(dropped),
                sum(s.count for s in dropped),
            )
        self.appended += 1
        stream.notify()
        if stream.exports:
            self._cloud_wake.set()
        if stream.definition.flush_on_write and stream.definition.persistence is Persistence.File:
            await self._group_sync(stream)
        return plan.sequence

    def _group_sync(self, stream: Stream) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self._sync_waiters:
            loop.call_soon(self._flush_syncs)
        self._sync_waiters.append(future)
        self._sync_streams.add(stream)
        return future

    def _flush_syncs(self) -> None:
        waiters, self._sync_waiters = self._sync_waiters, []
        streams, self._sync_streams = self._sync_streams, set()
        error: StoreError | None = None
        for stream in streams:
            try:
                stream.store.sync()
            except StoreError as exc:
                error = exc
        for future in waiters:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    async def read(self, name: Any, options: ReadOptions) -> list[Record]:
        stream = self._get(name)
        if options.timeout_ms and not stream.log.satisfies(options.start, options.min_count):
            deadline = time.monotonic() + options.timeout_ms / 1000
            while not stream.log.satisfies(options.start, options.min_count):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                changed = stream.changed
                try:
                    await asyncio.wait_for(changed.wait(), remaining)
                except TimeoutError:
                    break
                if stream.deleted:
                    raise StreamNotFound(stream.name)
        first, count = stream.log.span(options.start, options.min_count, options.max_count)
        records = stream.store.read(first, count)
        budget = self.settings.max_read_bytes
        total = 0
        for i, (_seq, _t, payload) in enumerate(records):
            total += len(payload) + 64
            if total > budget and i >= options.min_count:
                return records[:i]
        return records

    # ---- status ------------------------------------------------------------------------

    def progress(self) -> dict[str, dict[str, int]]:
        """Per stream: newest sequence number, bytes held, and the export backlog (for the
        heartbeat and the metrics)."""
        return {
            name: {
                "newest": s.log.newest,
                "bytes": s.log.total_bytes,
                "backlog": s.backlog(),
                "exported": sum(e.exported_messages for e in s.exports.values()),
            }
            for name, s in self.streams.items()
        }

    # ---- exports -----------------------------------------------------------------------

    def _set_exports(self, stream: Stream, progress: Mapping[str, int]) -> None:
        old = stream.exports
        stream.exports = {}
        for config in stream.definition.exports:
            state = ExportState(
                config,
                last_exported=progress.get(config.identifier, -1),
                last_attempt=time.monotonic(),  # batchIntervalMillis counts from here
            )
            previous = old.get(config.identifier)
            if previous is not None:
                state.exported_messages = previous.exported_messages
                state.exported_bytes = previous.exported_bytes
                state.last_export_time = previous.last_export_time
            stream.exports[config.identifier] = state
        self._cloud_wake.set()

    def _start_http_exports(self, stream: Stream) -> None:
        if self._tg is None:
            return
        for state in stream.exports.values():
            if state.config.kind is ExportKind.HTTP and not state.config.disabled:
                stream.http_tasks[state.config.identifier] = self._spawn(
                    self._http_export(stream, state),
                    f"streams-http-{stream.name}-{state.config.identifier}",
                )

    def _exported(self, stream: Stream, state: ExportState, records: list[Record]) -> None:
        state.last_exported = records[-1][0]
        state.last_export_time = self.clock()
        state.exported_messages += len(records)
        state.exported_bytes += sum(len(r[2]) for r in records)
        state.error = None
        stream.progress_dirty = True
        if time.monotonic() - stream.progress_saved_at >= PROGRESS_SAVE_INTERVAL:
            self._save_progress(stream)

    def _save_progress(self, stream: Stream) -> None:
        if stream.deleted or not stream.progress_dirty:
            return
        stream.progress_dirty = False
        stream.progress_saved_at = time.monotonic()
        try:
            stream.store.save_progress({i: s.last_exported for i, s in stream.exports.items()})
        except OSError as exc:
            log.warning("streams.progress_not_saved stream=%s error=%s", stream.name, exc)

    def _due(self, stream: Stream, state: ExportState, now: float) -> int:
        """How many messages to export now (0: nothing due)."""
        config = state.config
        if config.disabled or stream.deleted:
            return 0
        available = stream.log.next_sequence - stream.next_to_export(state)
        if available <= 0:
            return 0
        if available >= config.batch_size or config.batch_interval_ms is None:
            return min(available, config.batch_size)
        if (now - state.last_attempt) * 1000 >= config.batch_interval_ms:
            return available
        return 0

    def cloud_topic(self, stream: Stream, config: ExportConfig) -> str:
        return config.topic or f"streams/{self.settings.core}/{stream.name}"

    async def _cloud_export(self) -> None:
        """Moves batches into the spool, the highest priority (1) stream first, while the
        spool has room; the spool's own durability and PUBACK handling take it from there."""
        while True:
            moved = self.cloud is not None and self._cloud_round()
            if moved:
                await asyncio.sleep(0)  # let appends and reads in between batches
                continue
            self._cloud_wake.clear()
            try:
                await asyncio.wait_for(self._cloud_wake.wait(), CLOUD_ROOM_POLL)
            except TimeoutError:
                pass

    def _cloud_round(self) -> bool:
        assert self.cloud is not None
        now = time.monotonic()
        candidates = [
            (state.config.priority, stream, state)
            for stream in self.streams.values()
            for state in stream.exports.values()
            if state.config.kind is ExportKind.CLOUD
        ]
        candidates.sort(key=lambda c: c[0])
        for _priority, stream, state in candidates:
            count = self._due(stream, state, now)
            if not count:
                continue
            topic = self.cloud_topic(stream, state.config)
            if not self.cloud.accepts(topic):
                if state.error is None:
                    log.warning(
                        "streams.cloud_export_waiting stream=%s topic=%s"
                        " reason=no_subscription_to_the_cloud_covers_it",
                        stream.name,
                        topic,
                    )
                state.error = (
                    f"the cloud takes nothing on {topic} from this core: add a subscription "
                    f"(any source, topic {topic!r} or a filter covering it, target cloud) to "
                    "the group and deploy; the messages wait in the stream"
                )
                continue
            records = stream.store.read(stream.next_to_export(state), count)
            size = sum(len(r[2]) for r in records) + 64 * len(records)
            if size > self.cloud.room():
                return False  # the spool is full: wait for the cloud to drain it
            for _seq, _ingest, payload in records:
                self.cloud.add(topic, payload, 1)
            state.last_attempt = now
            self._exported(stream, state, records)
            return True
        return False

    async def _http_export(self, stream: Stream, state: ExportState) -> None:
        from hedgerow.backoff import Backoff, BackoffPolicy

        from .exporters import http_requests

        backoff = Backoff(BackoffPolicy(base=0.5, cap=30.0))
        post = self.http_post
        if post is None:
            from .exporters import post_http

            post = post_http
        while not stream.deleted:
            count = self._due(stream, state, time.monotonic())
            if not count:
                changed = stream.changed
                try:
                    await asyncio.wait_for(changed.wait(), 1.0)
                except TimeoutError:
                    pass
                continue
            records = stream.store.read(stream.next_to_export(state), count)
            state.last_attempt = time.monotonic()
            try:
                for body, content_type, sent in http_requests(stream.name, state.config, records):
                    status = await post(state.config.uri, body, content_type)
                    if not 200 <= status < 300:
                        raise OSError(f"{state.config.uri} answered HTTP {status}")
                    self._exported(stream, state, sent)
            except OSError as exc:
                state.error = str(exc)
                delay = backoff.next_delay()
                log.warning(
                    "streams.http_export_failed stream=%s export=%s retry_in=%.1f error=%s",
                    stream.name,
                    state.config.identifier,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                continue
            backoff.reset()
