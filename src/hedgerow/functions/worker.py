"""The code that runs INSIDE a function's process: ``python -m hedgerow.functions.worker``.

The core starts it with one end of a Unix socket pair (fd in ``HEDGEROW_IPC_FD``) and the
function's settings (JSON in ``HEDGEROW_WORKER``). It applies the memory limit, imports the
handler's module once (module-level code runs here, in the main thread; a pinned
function's endless sensor loop is allowed: READY is then sent after a settle time and
invocations wait), then serves INVOKE frames: a reader thread decodes everything the
socket holds, the main thread runs the handler for each and writes the results back in
batches. A watchdog thread ends the process when a handler overruns its timeout.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import itertools
import json
import logging
import os
import queue
import resource
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Final

from hedgerow.functions import protocol as p
from hedgerow.functions.errors import IPCProtocolError
from hedgerow.functions.secrets import CURRENT, SecretVersion, call_target, from_call_reply

log = logging.getLogger("hedgerow.function")

THREAD_STACK_BYTES: Final = 1024 * 1024
READ_CHUNK: Final = 256 * 1024
FLUSH_AFTER_S: Final = 0.0005
CALL_TIMEOUT_S: Final = 300.0
WATCHDOG_MAX_POLL_S: Final = 0.1
WATCHDOG_MIN_POLL_S: Final = 0.005
MAX_REASON_CHARS: Final = 400
MEMORY_HINTS: Final = ("failed to map segment", "Cannot allocate memory", "Memory allocation")


class FunctionCallError(Exception):
    """``context.invoke`` failed: the other function raised, timed out or is unavailable."""


@dataclass(frozen=True)
class WorkerConfig:
    name: str
    handler: str
    runtime: str = "python"
    encoding: str = "json"
    version: int = 1
    code_dir: str = "."
    deps_dir: str | None = None
    v1_path: str | None = None
    thing_name: str = ""
    function_arn: str = ""
    memory_mb: int = 128
    rlimit_as: int | None = None
    timeout_s: float = 3.0
    settle_s: float = 1.0
    #: volumes as ``[source, destination, read_only]``, mounted in a namespace of its own
    mounts: tuple[tuple[str, str, bool], ...] = ()
    #: devices declared ``ro`` as ``[path, gid]``: covered by nodes it can only read
    read_only_devices: tuple[tuple[str, int], ...] = ()
    #: the root logger's level at start (``p.LogLevel`` changes it while it runs)
    log_level: int = logging.INFO

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def to_bytes(value: Any) -> bytes:
    """What a function may pass as a payload: bytes, str, or anything JSON-serialisable."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode()


class Channel:
    """The worker's end of the socket: thread-safe writes, a reader thread, pending calls."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._send_lock = threading.Lock()
        self._calls: dict[int, tuple[threading.Event, list[p.Message]]] = {}
        self._ids = itertools.count(1)
        self.inbox: queue.SimpleQueue[list[p.Invoke]] = queue.SimpleQueue()

    def send(self, message: p.Message) -> None:
        self.send_bytes(p.encode(message))

    def send_bytes(self, data: bytes) -> None:
        with self._send_lock:
            self._sock.sendall(data)

    def call(self, function: str, payload: bytes, timeout: float = CALL_TIMEOUT_S) -> bytes:
        ident = next(self._ids)
        done = threading.Event()
        slot: list[p.Message] = []
        self._calls[ident] = (done, slot)
        try:
            self.send(p.Call(ident, function, payload))
            if not done.wait(timeout):
                raise FunctionCallError(f"invoke {function}: no reply in {timeout} s")
        finally:
            self._calls.pop(ident, None)
        reply = slot[0]
        if isinstance(reply, p.CallError):
            raise FunctionCallError(reply.message)
        assert isinstance(reply, p.CallResult)
        return reply.payload

    def read_forever(self) -> None:
        """Reader thread: decode frames; invocations to the inbox, call replies to callers."""
        decoder = p.Decoder()
        while True:
            try:
                data = self._sock.recv(READ_CHUNK)
            except OSError:
                data = b""
            if not data:
                os._exit(0)  # the core closed the channel: nothing left to do
            decoder.receive_data(data)
            try:
                messages = decoder.events()
            except IPCProtocolError:
                log.exception("function.ipc_protocol_error")
                os._exit(p.EXIT_PROTOCOL)
            batch: list[p.Invoke] = []
            for message in messages:
                if isinstance(message, p.Invoke):
                    batch.append(message)
                elif isinstance(message, p.LogLevel):
                    logging.getLogger().setLevel(message.level)
                elif isinstance(message, p.CallResult | p.CallError):
                    entry = self._calls.get(message.id)
                    if entry is not None:
                        entry[1].append(message)
                        entry[0].set()
            if batch:
                self.inbox.put(batch)


class Secrets:
    """``context.secrets``: the secrets this function declares, read from the core."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def get(self, name: str, stage: str = CURRENT) -> str | bytes:
        """The value (``str``; ``bytes`` for a binary secret) of the version at ``stage``.

        A secret the function does not declare, or that this core lacks, raises
        ``FunctionCallError`` saying which and what to do."""
        version = self.get_version(name, stage)
        return version.value if version.binary else version.value.decode()

    def get_version(self, name: str, stage: str = CURRENT) -> SecretVersion:
        """The whole version: ``version_id``, ``stages``, ``created_ms``, ``value``."""
        return from_call_reply(self._channel.call(call_target(name), stage.encode()))


@dataclass
class Context:
    """What a native handler receives as ``context``."""

    topic: str
    source: str
    function_name: str
    thing_name: str
    logger: logging.Logger
    _channel: Channel = field(repr=False)

    @property
    def secrets(self) -> Secrets:
        return Secrets(self._channel)

    def publish(self, topic: str, payload: Any) -> None:
        """Publish into the core's subscription table (as this function)."""
        self._channel.send(p.Publish(topic, to_bytes(payload)))

    def invoke(self, function: str, payload: Any = b"", timeout: float = CALL_TIMEOUT_S) -> bytes:
        """Invoke another function (RequestResponse) and return its result bytes."""
        return self._channel.call(function, to_bytes(payload), timeout)

    def get_thing_shadow(self, thing: str) -> dict[str, Any]:
        """The thing's shadow document from the core's shadow service."""
        return self._shadow(thing, "get", b"")

    def update_thing_shadow(self, thing: str, document: Any) -> dict[str, Any]:
        """Apply an update request (``{"state": {"desired"|"reported": ...}}``)."""
        return self._shadow(thing, "update", to_bytes(document))

    def delete_thing_shadow(self, thing: str) -> dict[str, Any]:
        return self._shadow(thing, "delete", b"")

    def _shadow(self, thing: str, operation: str, payload: bytes) -> dict[str, Any]:
        topic = f"$aws/things/{thing}/shadow/{operation}"
        reply: dict[str, Any] = json.loads(self._channel.call(topic, payload))
        return reply


class ClientContext:
    """V1 ``context.client_context``: ``custom``, ``client`` and ``env``."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.custom: dict[str, Any] = dict(data.get("custom") or {})
        self.client: Any = data.get("client")
        self.env: Any = data.get("env")


class LambdaContext:
    """The V1-shaped context of a ``function_handler(event, context)``."""

    def __init__(self, config: WorkerConfig, request_id: str, client_context: ClientContext):
        self.function_name = config.name
        self.function_version = str(config.version)
        self.invoked_function_arn = config.function_arn
        self.memory_limit_in_mb = config.memory_mb
        self.aws_request_id = request_id
        self.log_group_name = f"/hedgerow/functions/{config.name}"
        self.log_stream_name = config.name
        self.identity: Any = None
        self.client_context = client_context
        self._deadline = time.monotonic() + config.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class Watchdog:
    """Ends the process when the running invocation has overrun its timeout."""

    def __init__(self, timeout_s: float, on_timeout: Callable[[int], None]) -> None:
        self.timeout_s = timeout_s
        self.current: tuple[int, float] | None = None
        self._on_timeout = on_timeout
        self._poll = min(WATCHDOG_MAX_POLL_S, max(WATCHDOG_MIN_POLL_S, timeout_s / 4))

    def run(self) -> None:
        while True:
            time.sleep(self._poll)
            current = self.current
            if current is not None and time.monotonic() - current[1] > self.timeout_s:
                self._on_timeout(current[0])


class Worker:
    def __init__(self, config: WorkerConfig, channel: Channel) -> None:
        self.config = config
        self.channel = channel
        self.handler: Callable[[Any, Any], Any] | None = None
        self._ready_lock = threading.Lock()
        self._readiness = ""  # "" -> "looping" (module code still running) -> "ready"
        self._v1 = config.runtime == "greengrass-v1"
        self._json = config.encoding == "json"
        self.watchdog = Watchdog(config.timeout_s, self._timed_out)

    # -- start ---------------------------------------------------------------------------

    def send_ready(self, looping: bool) -> None:
        """READY(looping) after the settle time, READY once the module is imported."""
        state = "looping" if looping else "ready"
        with self._ready_lock:  # held while sending: the two READYs must not swap places
            if self._readiness == "ready" or self._readiness == state:
                return
            self._readiness = state
            self.channel.send(p.Ready(os.getpid(), looping))
        if looping:
            log.info(
                "function.module_code_running after_s=%s then=%r",
                self.config.settle_s,
                "serving when it returns",
            )

    def load(self) -> None:
        """Import the handler's module (module-level code runs now, once)."""
        module_name, _, attr = self.config.handler.rpartition(".")
        timer = threading.Timer(self.config.settle_s, self.send_ready, args=(True,))
        timer.daemon = True
        timer.start()
        try:
            module = import_module(module_name)
            handler = getattr(module, attr)
            if not callable(handler):
                raise TypeError(f"{self.config.handler} is not callable")
        except MemoryError:
            self._fatal("MemoryError: the module exceeded the memory limit while importing")
            os._exit(p.EXIT_MEMORY)
        except BaseException as exc:  # noqa: B036 - anything the module does must be reported
            log.error(
                "function.import_failed handler=%s\n%s", self.config.handler, traceback.format_exc()
            )
            self._fatal(f"cannot load handler {self.config.handler}: {self._describe(exc)}")
            os._exit(p.EXIT_IMPORT_FAILED)
        finally:
            timer.cancel()
        self.handler = handler
        self.send_ready(False)

    def _describe(self, exc: BaseException) -> str:
        """One line for a deployment status: the exception, its first and last lines."""
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}" if lines else ""
        text = f"{type(exc).__name__}: {text}"[:MAX_REASON_CHARS]
        if self.config.rlimit_as and any(hint in str(exc) for hint in MEMORY_HINTS):
            text += (
                f" (the memory limit of {self.config.memory_mb} MB bounds the address space:"
                " raise memory_mb)"
            )
        return text

    def _fatal(self, message: str) -> None:
        self.channel.send(p.Fatal(message))

    def _timed_out(self, ident: int) -> None:
        log.error(
            "function.timeout timeout_s=%s then=%r", self.config.timeout_s, "the worker is stopped"
        )
        message = f"Task timed out after {self.config.timeout_s} seconds"
        self.channel.send(p.Error(ident, p.ErrorKind.TIMEOUT, "Timeout", message))
        os._exit(p.EXIT_TIMEOUT)

    # -- serve ---------------------------------------------------------------------------

    def serve(self) -> None:
        inbox = self.channel.inbox
        send = self.channel.send_bytes
        while True:
            batch = inbox.get()
            out: list[bytes] = []
            first = 0.0
            for invocation in batch:
                if out and time.perf_counter() - first > FLUSH_AFTER_S:
                    send(b"".join(out))
                    out.clear()
                if not out:
                    first = time.perf_counter()
                out.append(self.run(invocation))
            if out:
                send(b"".join(out))

    def run(self, invocation: p.Invoke) -> bytes:
        """Run one invocation; the encoded RESULT or ERROR frame."""
        handler = self.handler
        assert handler is not None
        try:
            event = self._event(invocation.payload)
        except ValueError as exc:
            log.warning("function.undecodable_event topic=%s error=%r", invocation.topic, str(exc))
            return p.encode(p.Error(invocation.id, p.ErrorKind.DECODE, "ValueError", str(exc)))
        context = self._context(invocation)
        self.watchdog.current = (invocation.id, time.monotonic())
        try:
            value = handler(event, context)
        except MemoryError:
            self.watchdog.current = None
            log.error("function.memory_error reason=%r", "the function exceeded its memory limit")
            error = p.Error(
                invocation.id, p.ErrorKind.MEMORY, "MemoryError", "memory limit exceeded"
            )
            self.channel.send(error)
            os._exit(p.EXIT_MEMORY)
        except Exception as exc:
            self.watchdog.current = None
            tb = traceback.format_exc()
            log.error("function.handler_failed topic=%s\n%s", invocation.topic, tb)
            kind = p.ErrorKind.HANDLED
            return p.encode(p.Error(invocation.id, kind, type(exc).__name__, str(exc), tb))
        self.watchdog.current = None
        if not invocation.want_result:
            return p.HEADER.pack(0, p.Kind.RESULT, invocation.id)
        try:
            return p.encode(p.Result(invocation.id, self._result(value)))
        except (TypeError, ValueError) as exc:
            return p.encode(
                p.Error(invocation.id, p.ErrorKind.HANDLED, type(exc).__name__, str(exc))
            )

    def _event(self, payload: bytes) -> Any:
        if not self._json:
            return payload
        if not payload:
            return None
        return json.loads(payload)

    def _result(self, value: Any) -> bytes:
        if self._json:
            if isinstance(value, bytes | bytearray):
                return bytes(value)
            return json.dumps(value).encode()
        if value is None:
            return b""
        return to_bytes(value)

    def _context(self, invocation: p.Invoke) -> Any:
        if not self._v1:
            return Context(
                invocation.topic,
                invocation.source,
                self.config.name,
                self.config.thing_name,
                log,
                self.channel,
            )
        data: dict[str, Any] = {}
        if invocation.client_context:
            try:
                data = json.loads(base64.b64decode(invocation.client_context))
            except ValueError:
                data = {}
        client_context = ClientContext(data if isinstance(data, dict) else {})
        if invocation.topic:
            client_context.custom["subject"] = invocation.topic
        return LambdaContext(self.config, f"{os.getpid()}-{invocation.id}", client_context)


_WORKER: list[Worker] = []


def module_context(topic: str = "") -> Context:
    """A context for module-level code of a native function (e.g. a sensor loop)."""
    if not _WORKER:
        raise RuntimeError("not running inside a Hedgerow function worker")
    worker = _WORKER[0]
    return Context(topic, "", worker.config.name, worker.config.thing_name, log, worker.channel)


def drop_privileges(spec: str) -> None:
    """Become ``uid:gid[:g1,g2..]`` with just those supplementary groups (irreversible).

    The supplementary groups are the ones the function's local resources are granted
    through (``resources.plan_access``); none otherwise.

    Directories on ``sys.path`` that the new user cannot reach (an interpreter installed
    under a private home such as ``/root/.pyenv``, a data directory inside ``/root``) stay
    importable: each is opened before the switch and, when the user cannot reach it by
    name, replaced by ``/proc/self/fd/N`` — the directory's own mode still applies, only
    the private parents are stepped over. Nothing else of the core's becomes readable.
    """
    uid, _, rest = spec.partition(":")
    gid, _, extra = rest.partition(":")
    held: dict[str, int] = {}
    for entry in sys.path:
        if entry and entry not in held and os.path.isdir(entry):
            with contextlib.suppress(OSError):
                held[entry] = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    os.setgroups([int(g) for g in extra.split(",") if g])
    os.setgid(int(gid))
    os.setuid(int(uid))
    _reach_held_dirs(held)


def _reach_held_dirs(held: dict[str, int]) -> None:
    moved: dict[str, str] = {}
    for entry, fd in held.items():
        if os.access(entry, os.R_OK | os.X_OK):
            os.close(fd)
        else:
            moved[entry] = f"/proc/self/fd/{fd}"
    if not moved:
        return

    def reach(path: str) -> str:
        for old, new in moved.items():
            if path == old or path.startswith(old + os.sep):
                return new + path[len(old) :]
        return path

    sys.path[:] = [reach(p) for p in sys.path]
    for module in list(sys.modules.values()):  # packages imported before the switch
        search = getattr(module, "__path__", None)
        if isinstance(search, list):
            search[:] = [reach(p) for p in search]
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()


def _limit_memory(limit: int | None) -> None:
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main() -> None:
    run_as = os.environ.pop("HEDGEROW_RUN_AS", "")
    config = WorkerConfig.from_json(os.environ.pop("HEDGEROW_WORKER"))
    fd = int(os.environ.pop("HEDGEROW_IPC_FD"))
    paths = [config.code_dir]
    if config.deps_dir:
        paths.append(config.deps_dir)
    if config.v1_path:
        paths.append(config.v1_path)
    sys.path[:0] = paths
    if config.mounts or config.read_only_devices:  # as root, before the switch
        from hedgerow.functions import namespace  # ctypes: only for functions that need it

        namespace.enter(
            [namespace.Mount.from_json(m) for m in config.mounts],
            [namespace.ReadOnlyDevice.from_json(d) for d in config.read_only_devices],
        )
    if run_as:  # before any function code: it never runs with the core's privileges
        drop_privileges(run_as)
    logging.basicConfig(
        stream=sys.stderr,
        level=config.log_level,
        format=f"%(asctime)s %(levelname)s {config.name}[%(process)d] %(name)s: %(message)s",
    )
    threading.stack_size(THREAD_STACK_BYTES)
    _limit_memory(config.rlimit_as)
    sock = socket.socket(fileno=fd)
    channel = Channel(sock)
    worker = Worker(config, channel)
    _WORKER.append(worker)
    threading.Thread(target=channel.read_forever, name="ipc-reader", daemon=True).start()
    threading.Thread(target=worker.watchdog.run, name="watchdog", daemon=True).start()
    worker.load()
    try:
        worker.serve()
    except SystemExit as exc:  # a handler called sys.exit(): the worker ends (a crash)
        code = exc.code if isinstance(exc.code, int) else 1
        log.error(
            "function.exit code=%s reason=%r", exc.code, "sys.exit in the handler: the worker ends"
        )
        logging.shutdown()
        os._exit(code)


if __name__ == "__main__":
    # run the imported module's main, so that function code importing
    # hedgerow.functions.worker (module_context) sees the same module state
    import_module("hedgerow.functions.worker").main()
