"""One deployed function: its worker processes, its bounded queue, its lifecycle.

A pinned function has exactly one long-lived worker, started at deploy time and restarted
(with backoff) when it crashes. An on-demand function grows a pool up to
``max_concurrency`` workers while work is waiting and every worker is busy; a worker idle
for ``idle_s`` is reaped. Invocations are pipelined to a worker (up to ``window`` in
flight): results come back in order, which is how the core knows when each invocation
started and enforces the timeout as a backstop to the worker's own watchdog.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any, Final

from hedgerow.functions import protocol as p
from hedgerow.functions.code_bundle import PreparedBundle
from hedgerow.functions.errors import (
    FunctionDeployError,
    FunctionUnavailable,
    HandlerError,
    InvocationError,
    InvocationTimeout,
    LaunchError,
    QueueFull,
    WorkerCrashed,
)
from hedgerow.functions.policy import Event, Lifecycle, RestartPolicy, State
from hedgerow.functions.process import LaunchPlan, WorkerProcess, describe_exit
from hedgerow.functions.spec import FunctionSpec

log = logging.getLogger(__name__)

DEFAULT_QUEUE_LIMIT: Final = 1000
DEFAULT_WINDOW: Final = 256
DEFAULT_IDLE_S: Final = 60.0
DEFAULT_STARTUP_TIMEOUT_S: Final = 30.0
OUTBOX_PAUSE: Final = 10_000
OUTBOX_RESUME: Final = 1_000
MAX_TICK_S: Final = 0.1

# The core's publish callback: a coroutine function or a plain function.
PublishFn = Callable[[str, str, bytes], Awaitable[None] | None]
CallFn = Callable[[str, str, bytes], Awaitable[bytes]]


@dataclass(frozen=True)
class PoolSettings:
    """Named limits of a function pool (the host passes one to every pool)."""

    queue_limit: int = DEFAULT_QUEUE_LIMIT
    window: int = DEFAULT_WINDOW
    idle_s: float = DEFAULT_IDLE_S
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S
    policy: RestartPolicy = RestartPolicy()
    # publishes waiting for the core: stop reading the workers above, resume below
    outbox_pause: int = OUTBOX_PAUSE
    outbox_resume: int = OUTBOX_RESUME


@dataclass
class Counters:
    delivered: int = 0
    invoked: int = 0
    succeeded: int = 0
    failed: int = 0
    dropped: int = 0
    timeouts: int = 0
    crashes: int = 0
    restarts: int = 0
    published: int = 0
    workers: int = 0
    paused: int = 0  # times reading from the workers paused: the core's publish was slow

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True, eq=False)
class Job:
    topic: str
    source: str
    payload: bytes
    future: asyncio.Future[bytes] | None = None
    client_context: bytes = b""


class _Worker:
    def __init__(self, make_plan: Callable[[], LaunchPlan], pool: FunctionPool) -> None:
        self.process = WorkerProcess(make_plan, self._on_messages)
        self.pool = pool
        self.inflight: dict[int, Job] = {}
        self.head_started = 0.0
        self.idle_since = time.monotonic()
        self.ready = False
        self.looping = False
        self.ready_event = asyncio.Event()
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.fatal: str | None = None
        self.stopping = False
        self.timed_out = False
        self.error_kind: p.ErrorKind | None = None

    def _on_messages(self, messages: list[p.Message]) -> None:
        self.pool.on_messages(self, messages)


class FunctionPool:
    """The running state of one deployed function (see module docstring)."""

    def __init__(
        self,
        spec: FunctionSpec,
        bundle: PreparedBundle,
        make_plan: Callable[[], LaunchPlan],
        *,
        publish: PublishFn,
        call: CallFn,
        settings: PoolSettings,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self.spec = spec
        self.bundle = bundle
        self.settings = settings
        self.lifecycle = Lifecycle(settings.policy)
        self.counters = Counters()
        self._make_plan = make_plan
        self._publish = publish
        self._call = call
        self._notify = notify  # "something observable changed" (states, counters)
        self._max_workers = 1 if spec.pinned else spec.max_concurrency
        self._queue: deque[Job] = deque()
        self._workers: list[_Worker] = []
        self._ids = itertools.count(1)
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._outbox_event = asyncio.Event()
        self._paused = False
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._stopping = False
        self._successor: FunctionPool | None = None
        self._grace_s = 0.0
        self._drained = asyncio.Event()
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._internal_error: Exception | None = None
        #: the latest handler exception, crash or timeout, for status reports and the heartbeat
        self.last_error: str | None = None
        #: the traceback of the last handler that raised ("" when none did)
        self.last_traceback = ""
        self._tg: asyncio.TaskGroup | None = None
        self._backstop = 2 * spec.timeout_s + 1.0

    # -- public ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def state(self) -> State:
        return self.lifecycle.state

    def abort(self, reason: str) -> None:
        """After an internal error: BROKEN, with every waiting caller told why."""
        self._stopping = True
        self.lifecycle.state = State.BROKEN
        if not self._started.done():
            self._started.set_exception(FunctionDeployError(self.name, reason))
        self._fail_queue(FunctionUnavailable(self.name, reason))
        for worker in self._workers:
            self._fail_all(worker, FunctionUnavailable(self.name, reason))
            worker.process.kill()

    def _fail_all(self, worker: _Worker, exc: InvocationError) -> None:
        for job in worker.inflight.values():
            self._fail(job, exc)
        worker.inflight.clear()

    def set_log_level(self, level: int) -> None:
        """Tell every running worker its new ``logging`` level (workers started later
        read it from their plan)."""
        message = p.encode(p.LogLevel(level))
        for worker in self._workers:
            if worker.process.link is not None:
                worker.process.link.write(message)

    async def wait_started(self) -> None:
        """Return once the first worker is READY; raise FunctionDeployError otherwise."""
        await asyncio.shield(self._started)

    async def stop(self, successor: FunctionPool | None = None, grace_s: float = 0.0) -> None:
        """Ask the pool to stop (the caller awaits the run task).

        Queued work moves to ``successor`` (the replacing version); invocations already in
        a worker get up to ``grace_s`` seconds to finish before the workers are terminated.
        """
        self._successor = successor
        self._grace_s = grace_s
        self._stop.set()

    def adopt(self, jobs: list[Job]) -> None:
        """Take over queued work of the version this pool replaces."""
        self._queue.extend(jobs)
        self._dispatch()

    def deliver(self, topic: str, payload: bytes, source: str) -> bool:
        """Queue an event; False (and counted as dropped) if the function cannot take it."""
        if self._stopping or self.lifecycle.state is State.BROKEN:
            self.counters.dropped += 1
            return False
        if len(self._queue) >= self.settings.queue_limit:
            self.counters.dropped += 1
            if self.counters.dropped in (1, 10, 100) or self.counters.dropped % 1000 == 0:
                log.warning(
                    "queue_overflow function=%s dropped=%s", self.name, self.counters.dropped
                )
            return False
        self.counters.delivered += 1
        self._queue.append(Job(topic, source, payload))
        self._dispatch()
        return True

    def submit(
        self, payload: bytes, topic: str, source: str, context: bytes = b""
    ) -> asyncio.Future[bytes]:
        """Queue a RequestResponse invocation; the future holds the result bytes."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if self._stopping or self.lifecycle.state is State.BROKEN:
            reason = "the function is BROKEN" if not self._stopping else "the function is stopping"
            future.set_exception(FunctionUnavailable(self.name, reason))
            return future
        if len(self._queue) >= self.settings.queue_limit:
            self.counters.dropped += 1
            future.set_exception(QueueFull(self.name, "the function's queue is full"))
            return future
        self.counters.invoked += 1
        self._queue.append(Job(topic, source, payload, future, context))
        self._dispatch()
        return future

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """The pool's life: start, serve until stopped, shut every worker down."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            helpers = [
                tg.create_task(
                    self._guard(self._housekeeping()), name=f"fn-{self.name}-housekeeping"
                ),
                tg.create_task(self._guard(self._publisher()), name=f"fn-{self.name}-publisher"),
            ]
            try:
                if await self._first_start():
                    await self._stop.wait()
            finally:
                for task in list(self._side_tasks):
                    task.cancel()
                await self._shutdown()
                for task in helpers:
                    task.cancel()

    async def _guard(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Remember an internal error (a bug) so that callers are told what went wrong."""
        try:
            await coroutine
        except Exception as exc:
            if self._internal_error is None:
                self._internal_error = exc
            raise

    def _side_task(self, coroutine: Coroutine[Any, Any, None], what: str) -> None:
        """A task of the pool's group that is cancelled when the pool stops."""
        assert self._tg is not None
        task = self._tg.create_task(self._guard(coroutine), name=f"fn-{self.name}-{what}")
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _first_start(self) -> bool:
        self.lifecycle.fire(Event.START)
        worker = self._spawn()
        reason = await self._wait_ready(worker)
        if reason is not None:
            self._started.set_exception(FunctionDeployError(self.name, reason))
            return False
        self.lifecycle.fire(Event.READY)
        self._started.set_result(None)
        self._notify()
        log.info(
            "function_ready function=%s version=%s pinned=%s pid=%s",
            self.name,
            self.spec.version,
            self.spec.pinned,
            worker.process.pid,
        )
        self._dispatch()
        return True

    async def _wait_ready(self, worker: _Worker) -> str | None:
        """None when READY, else why the worker did not get there."""
        ready: asyncio.Future[bool] = asyncio.ensure_future(worker.ready_event.wait())
        stop: asyncio.Future[bool] = asyncio.ensure_future(self._stop.wait())
        waiters: set[asyncio.Future[Any]] = {ready, stop, worker.done}
        try:
            await asyncio.wait(
                waiters,
                timeout=self.settings.startup_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            ready.cancel()
            stop.cancel()
        if worker.ready:
            return None
        if not worker.done.done():
            worker.stopping = True
            worker.process.kill()
            await asyncio.shield(worker.done)
            if self._stop.is_set():
                return "stopped before it was ready"
            return f"not ready after {self.settings.startup_timeout_s} s"
        return self._startup_failure(worker, worker.done.result())

    @staticmethod
    def _startup_failure(worker: _Worker, code: int) -> str:
        if worker.fatal:
            return worker.fatal
        last = worker.process.log.last_line() if worker.process.log else ""
        return f"worker {describe_exit(code)} before it was ready" + (f": {last}" if last else "")

    def _spawn(self) -> _Worker:
        assert self._tg is not None
        worker = _Worker(self._make_plan, self)
        self._workers.append(worker)
        self.counters.workers = len(self._workers)
        self._tg.create_task(self._guard(self._run_worker(worker)), name=f"fn-{self.name}-worker")
        return worker

    async def _run_worker(self, worker: _Worker) -> None:
        code = -1
        finished = False
        try:
            try:
                await worker.process.start()
            except LaunchError as exc:
                worker.fatal = exc.reason
            else:
                code = await worker.process.wait()
            finished = True
            self._on_exit(worker, code)
            self._notify()
        finally:
            if not finished:  # cancelled: the pool is going down in a hurry
                worker.process.discard()
            if not worker.done.done():
                worker.done.set_result(code)

    def _on_exit(self, worker: _Worker, code: int) -> None:
        self._workers.remove(worker)
        self.counters.workers = len(self._workers)
        jobs = list(worker.inflight.values())
        worker.inflight.clear()
        if worker.stopping or self._stopping:
            self._queue.extendleft(reversed(jobs))
            self._dispatch()
            if self._stopping and not self._busy():
                self._drained.set()
            return
        if not self._started.done():
            return  # _first_start reports it
        timed_out = worker.timed_out or code == p.EXIT_TIMEOUT
        if timed_out:
            self.counters.timeouts += 1
            if jobs and worker.error_kind is not p.ErrorKind.TIMEOUT:
                self._fail(jobs.pop(0), InvocationTimeout(self.name, "timed out"))
            self._queue.extendleft(reversed(jobs))
            log.warning("function_timeout function=%s timeout_s=%s", self.name, self.spec.timeout_s)
            self.last_error = f"timed out after {self.spec.timeout_s} s"
            if self.lifecycle.state is State.RUNNING and (self.spec.pinned or self._queue):
                self.counters.restarts += 1
                self._spawn()
            return
        if code == p.EXIT_MEMORY or worker.process.oom_killed():
            reason = f"memory limit of {self.spec.memory_mb} MB exceeded"
        elif not worker.ready or worker.fatal:
            reason = self._startup_failure(worker, code)
        else:
            reason = describe_exit(code)
        self.counters.crashes += 1
        if jobs and worker.error_kind is None:
            self._fail(jobs.pop(0), WorkerCrashed(self.name, reason))
        self._queue.extendleft(reversed(jobs))
        self._crashed(reason)

    def _crashed(self, reason: str) -> None:
        assert self._tg is not None
        self.last_error = reason
        decision = self.lifecycle.crash(time.monotonic())
        if decision.state is State.BROKEN:
            log.error(
                "function_broken function=%s crashes=%s reason=%s",
                self.name,
                self.lifecycle.total_crashes,
                reason,
            )
            self._fail_queue(FunctionUnavailable(self.name, f"BROKEN: {reason}"))
            return
        log.error(
            "function_crashed function=%s reason=%s restart_in_s=%.2f",
            self.name,
            reason,
            decision.delay,
        )
        self._side_task(self._restart_after(decision.delay), "backoff")

    async def _restart_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._stopping or self.lifecycle.state is not State.BACKOFF:
            return
        self.lifecycle.fire(Event.RETRY)
        if self.spec.pinned or self._queue:
            self.counters.restarts += 1
            self._spawn()
        else:
            self.lifecycle.fire(Event.READY)  # on demand and idle: the next job starts a worker
        self._notify()

    # -- frames from workers -----------------------------------------------------------------

    def on_messages(self, worker: _Worker, messages: list[p.Message]) -> None:
        completed = False
        inflight = worker.inflight
        counters = self.counters
        for message in messages:
            if type(message) is p.Result:
                job = inflight.pop(message.id, None)
                if job is None:
                    continue
                completed = True
                counters.succeeded += 1
                future = job.future
                if future is not None and not future.done():
                    future.set_result(message.payload)
            elif type(message) is p.Publish:
                self._outbox.append((message.topic, message.payload))
                self._outbox_event.set()
                if len(self._outbox) > self.settings.outbox_pause and not self._paused:
                    self._paused = True
                    self.counters.paused += 1
                    log.info(
                        "function_paused function=%s reason=%r", self.name, "core publish backlog"
                    )
                    for w in self._workers:
                        if w.process.link is not None:
                            w.process.link.pause_reading()
            elif isinstance(message, p.Error):
                completed = True
                self._on_error(worker, message)
            elif isinstance(message, p.Call):
                assert self._tg is not None
                self._side_task(self._serve_call(worker, message), "call")
            elif isinstance(message, p.Ready):
                worker.ready = True
                worker.looping = message.looping
                worker.idle_since = time.monotonic()
                worker.ready_event.set()
                if message.looping:
                    log.info("function_module_code_running function=%s", self.name)
                if self._started.done() and self.lifecycle.state is State.STARTING:
                    self.lifecycle.fire(Event.READY)
                    log.info("function_restarted function=%s pid=%s", self.name, message.pid)
            elif isinstance(message, p.Fatal):
                worker.fatal = message.message
        if completed:
            now = time.monotonic()
            if inflight:
                worker.head_started = now
            else:
                worker.idle_since = now
                if self._stopping and not self._busy():
                    self._drained.set()
        if self._queue:
            self._dispatch()
        self._notify()

    def _on_error(self, worker: _Worker, error: p.Error) -> None:
        job = worker.inflight.pop(error.id, None)
        worker.error_kind = error.kind
        if job is None:
            return
        if error.kind is p.ErrorKind.TIMEOUT:
            exc: InvocationError = InvocationTimeout(self.name, error.message)
        elif error.kind is p.ErrorKind.MEMORY:
            exc = WorkerCrashed(self.name, f"memory limit of {self.spec.memory_mb} MB exceeded")
        else:
            worker.error_kind = None  # the worker lives on
            detail = error.traceback.strip().splitlines()[-1] if error.traceback else error.message
            log.warning(
                "handler_failed function=%s topic=%s error=%s", self.name, job.topic, detail
            )
            self.last_error = detail  # what `hedgerow cloud core show` tells the operator
            self.last_traceback = error.traceback
            exc = HandlerError(self.name, error.message, error.error_type, error.traceback)
        self._fail(job, exc)

    def _fail(self, job: Job, exc: InvocationError) -> None:
        self.counters.failed += 1
        if job.future is not None and not job.future.done():
            job.future.set_exception(exc)

    def _fail_queue(self, exc: InvocationError) -> None:
        while self._queue:
            self._fail(self._queue.popleft(), exc)

    async def _serve_call(self, worker: _Worker, call: p.Call) -> None:
        try:
            result = await self._call(call.function, self.name, call.payload)
        except InvocationError as exc:
            reply: p.Message = p.CallError(call.id, str(exc))
        else:
            reply = p.CallResult(call.id, result)
        if worker.process.link is not None:
            worker.process.link.write(p.encode(reply))

    async def _publisher(self) -> None:
        while True:
            await self._outbox_event.wait()
            self._outbox_event.clear()
            while self._outbox:
                topic, payload = self._outbox.popleft()
                try:
                    result = self._publish(self.name, topic, payload)
                    if result is not None:
                        await result
                    self.counters.published += 1
                except Exception:
                    log.exception("publish_failed function=%s topic=%s", self.name, topic)
                if self._paused and len(self._outbox) < self.settings.outbox_resume:
                    self._paused = False
                    now = time.monotonic()
                    for w in self._workers:
                        w.head_started = max(w.head_started, now)  # paused time is not theirs
                        if w.process.link is not None:
                            w.process.link.resume_reading()

    # -- dispatch ------------------------------------------------------------------------------

    def _may_grow(self) -> bool:
        if self._stopping or self.lifecycle.state not in (State.RUNNING, State.STARTING):
            return False
        if len(self._workers) >= self._max_workers:
            return False
        return all(w.ready for w in self._workers)  # one start at a time

    def _dispatch(self) -> None:
        queue = self._queue
        if not queue or self._stopping:
            return
        # a worker whose module-level code still runs (a V1 sensor loop) takes no work yet
        ready = [w for w in self._workers if w.ready and not w.looping and not w.stopping]
        if not ready:
            if self._may_grow():
                self._spawn()
            return
        on_demand = not self.spec.pinned
        window = self.settings.window
        ids = self._ids
        while queue:
            worker = ready[0] if len(ready) == 1 else min(ready, key=lambda w: len(w.inflight))
            inflight = worker.inflight
            if inflight and on_demand:
                # every worker is busy: grow the pool rather than queue behind a busy one
                if self._may_grow():
                    self._spawn()
                    return
                if any(not w.ready for w in self._workers):
                    return
            if len(inflight) >= window:
                return
            job = queue.popleft()
            ident = next(ids)
            if not inflight:
                worker.head_started = time.monotonic()
            inflight[ident] = job
            link = worker.process.link
            assert link is not None
            want = job.future is not None
            link.write(
                p.encode(
                    p.Invoke(ident, job.topic, job.source, job.payload, want, job.client_context)
                )
            )

    async def _housekeeping(self) -> None:
        tick = min(MAX_TICK_S, self.settings.idle_s / 4, self.spec.timeout_s / 2)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for worker in list(self._workers):
                if not worker.ready or worker.stopping:
                    continue
                if worker.inflight:
                    # while the core is not reading results, the backstop cannot judge
                    if not self._paused and now - worker.head_started > self._backstop:
                        log.warning("function_timeout_backstop function=%s", self.name)
                        worker.timed_out = True
                        worker.process.kill()
                elif not self.spec.pinned and now - worker.idle_since > self.settings.idle_s:
                    worker.stopping = True
                    log.info("worker_reaped function=%s pid=%s", self.name, worker.process.pid)
                    assert self._tg is not None
                    self._tg.create_task(worker.process.terminate(), name=f"fn-{self.name}-reap")

    def _busy(self) -> bool:
        return any(w.inflight for w in self._workers)

    async def _shutdown(self) -> None:
        self._stopping = True
        if self._successor is not None and self._queue:
            self._successor.adopt(list(self._queue))
            self._queue.clear()
        if self._grace_s > 0 and self._busy():
            try:
                async with asyncio.timeout(self._grace_s):
                    await self._drained.wait()
            except TimeoutError:
                log.warning("function_stop_grace_expired function=%s", self.name)
        if self.lifecycle.state is not State.STOPPED:
            self.lifecycle.fire(Event.STOP)
        workers = list(self._workers)
        for worker in workers:
            worker.stopping = True
        await asyncio.gather(
            *(w.process.terminate() for w in workers if w.process.pid is not None),
            return_exceptions=True,
        )
        for worker in workers:
            await asyncio.shield(worker.done)
        self._fail_queue(FunctionUnavailable(self.name, "the function was stopped"))
        if self.lifecycle.state is State.STOPPING:
            self.lifecycle.fire(Event.EXITED)
        if not self._started.done():
            error = self._internal_error
            reason = f"runtime error: {error!r}" if error else "stopped before it was ready"
            self._started.set_exception(FunctionDeployError(self.name, reason))
        log.info("function_stopped function=%s", self.name)
        self._notify()
