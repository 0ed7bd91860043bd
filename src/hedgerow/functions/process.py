"""Launching one worker process: environment, working directory, memory limit, user, log.

The memory limit uses a cgroup v2 child group (``memory.max``) when this process sits in
a delegated cgroup v2 hierarchy with the memory controller enabled for its children;
otherwise the worker sets ``RLIMIT_AS`` on itself before importing any function code.
When the core runs as root and the function names ``run_as``, the worker is started as
that user (``setgid``/``setuid`` in the child before exec). Stopping sends SIGTERM to the
worker's process group, waits, then SIGKILL. Everything the worker writes to stdout and
stderr lands in the function's size-rotated log file.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import signal
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

from hedgerow.functions import protocol as p
from hedgerow.functions.errors import IPCProtocolError, LaunchError

log = logging.getLogger(__name__)

LOG_MAX_BYTES: Final = 1024 * 1024
LOG_BACKUPS: Final = 3
LOG_TAIL_BYTES: Final = 4096
TERM_GRACE_S: Final = 2.0
PUMP_DRAIN_S: Final = 1.0
READ_CHUNK: Final = 65536
# Python itself needs room beyond the function's own data: the RLIMIT_AS fallback limits
# the whole address space, so malloc arenas and thread stacks are kept small (see worker).
PASSTHROUGH_ENV: Final = ("PATH", "TZ", "LANG", "LC_ALL", "SSL_CERT_FILE", "SSL_CERT_DIR")


# -- memory limit backend (pure helpers + one probe) -------------------------------------


def cgroup2_mount(mountinfo: str) -> Path | None:
    """The cgroup v2 mount point from /proc/self/mountinfo text."""
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            fields = left.split()
            if len(fields) >= 5:
                return Path(fields[4])
    return None


def cgroup2_path(proc_cgroup: str) -> str | None:
    """This process's cgroup v2 path from /proc/self/cgroup text (the ``0::`` line)."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def memory_delegated(subtree_control: str) -> bool:
    return "memory" in subtree_control.split()


CORE_LEAF: Final = "hedgerow-core"


def find_cgroup_base() -> Path | None:
    """A cgroup v2 directory where child groups with ``memory.max`` can be made, or None.

    Works when the memory controller is already enabled for this cgroup's children, or
    when it is available here and the cgroup is ours to manage (systemd ``Delegate=yes``):
    then this process moves into a leaf group ``hedgerow-core`` and enables ``+memory``
    for the children (cgroup v2 allows controllers only where no process lives).
    """
    try:
        mount = cgroup2_mount(Path("/proc/self/mountinfo").read_text())
        own = cgroup2_path(Path("/proc/self/cgroup").read_text())
        if mount is None or own is None:
            return None
        base = mount / own.lstrip("/")
        if base.name == CORE_LEAF:
            base = base.parent  # moved there by an earlier host in this process
        if not os.access(base, os.W_OK):
            return None
        if memory_delegated((base / "cgroup.subtree_control").read_text()):
            return base
        if "memory" not in (base / "cgroup.controllers").read_text().split():
            return None
        leaf = base / CORE_LEAF
        leaf.mkdir(exist_ok=True)
        (leaf / "cgroup.procs").write_text(str(os.getpid()))
        (base / "cgroup.subtree_control").write_text("+memory")
        return base
    except OSError as exc:
        log.info("cgroup_memory_unavailable error=%r fallback=RLIMIT_AS", str(exc))
        return None


@dataclass(frozen=True)
class MemoryLimit:
    """How a worker's memory is limited: a cgroup directory, or RLIMIT_AS bytes."""

    limit_bytes: int
    cgroup: Path | None = None

    @property
    def rlimit_as(self) -> int | None:
        return None if self.cgroup is not None else self.limit_bytes


def plan_memory_limit(memory_mb: int, cgroup_base: Path | None, name: str) -> MemoryLimit:
    limit = memory_mb * 1024 * 1024
    if cgroup_base is None:
        return MemoryLimit(limit)
    return MemoryLimit(limit, cgroup_base / f"hedgerow-{name}-{uuid.uuid4().hex[:8]}")


# -- users ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunAs:
    uid: int
    gid: int
    #: supplementary groups (those the function's local resources are granted through)
    groups: tuple[int, ...] = ()

    def to_env(self) -> str:
        """``uid:gid[:g1,g2..]`` as ``worker.drop_privileges`` reads it."""
        extra = ",".join(str(g) for g in self.groups)
        return f"{self.uid}:{self.gid}" + (f":{extra}" if extra else "")


def resolve_run_as(run_as: str | None, *, is_root: bool) -> RunAs | None:
    """``user`` or ``user:group`` (names or numeric ids) -> ids; None when not switching."""
    if run_as is None or not is_root:
        return None
    user, _, group = run_as.partition(":")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        if not user.isdigit():
            raise LaunchError(f"no such user {user!r}") from None
        uid, gid = int(user), int(user)
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise LaunchError(f"no such group {group!r}") from None
    return RunAs(uid, gid)


#: The dedicated user functions run as when the core runs as root and no user is configured
#: (created as a system user with its own group, no home, no login shell, when missing).
FUNCTION_USER: Final = "hedgerow-fn"
UNPRIVILEGED_USERS: Final = (FUNCTION_USER, "hedgerow", "ggc_user")
PROBE_TIMEOUT_S: Final = 10.0
USERADD_TIMEOUT_S: Final = 30.0
#: What the core tells an operator when functions would otherwise run as root.
RUN_AS_ADVICE: Final = (
    f"create an unprivileged user (useradd --system --user-group {FUNCTION_USER}) that can "
    "read the Python installation, or set functions.run_as_user in the core's config"
)


async def ensure_function_user(name: str = FUNCTION_USER) -> str | None:
    """Make sure the dedicated user exists (as root: ``useradd --system`` when missing);
    its name, or None when it neither exists nor can be created (the reason is logged)."""
    try:
        pwd.getpwnam(name)
        return name
    except KeyError:
        pass
    argv = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
            "/nonexistent", "--shell", "/usr/sbin/nologin", "--comment",
            "Hedgerow functions", name]  # fmt: skip
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(USERADD_TIMEOUT_S):
            _, err = await proc.communicate()
    except (OSError, TimeoutError) as exc:
        log.warning("function_user_not_created user=%s error=%s", name, exc)
        return None
    try:
        pwd.getpwnam(name)  # another core on this host may have created it meanwhile
    except KeyError:
        log.warning(
            "function_user_not_created user=%s status=%s error=%s",
            name,
            proc.returncode,
            err.decode(errors="replace").strip(),
        )
        return None
    log.info("function_user_created user=%s", name)
    return name


async def can_run_as(user: str, python: str, work_dir: Path, source_root: str) -> bool:
    """Once switched to ``user`` the way a worker switches (``worker.drop_privileges``), can
    it import the runtime and the standard library and read ``work_dir``?"""
    try:
        run_as = resolve_run_as(user, is_root=True)
    except LaunchError:
        return False
    assert run_as is not None
    script = (
        "import os, sys; sys.path.insert(0, sys.argv[1]);"
        " from hedgerow.functions.worker import drop_privileges;"
        " drop_privileges(sys.argv[3] + ':' + sys.argv[2]);"
        " import decimal, email.mime.text; os.listdir(sys.path[0])"
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            python,
            "-c",
            script,
            str(work_dir),
            str(run_as.gid),
            str(run_as.uid),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env={"PYTHONPATH": source_root, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            cwd="/",
        )
    except (OSError, ValueError):
        return False
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            return await proc.wait() == 0
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False


async def choose_unprivileged_user(
    python: str, work_dir: Path, source_root: str, candidates: tuple[str, ...] = UNPRIVILEGED_USERS
) -> str | None:
    """The first existing candidate user that can run functions here, or None."""
    for user in candidates:
        if await can_run_as(user, python, work_dir, source_root):
            return user
    return None


# -- the log -------------------------------------------------------------------------------


class RotatingLog:
    """Append bytes to a file; rotate to .1 .. .N when it grows past ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int = LOG_MAX_BYTES, backups: int = LOG_BACKUPS):
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115 - closed in close()
        self._size = self._file.tell()
        self.tail = bytearray()

    def write(self, data: bytes) -> None:
        if self._size + len(data) > self.max_bytes and self._size > 0:
            self._rotate()
        self._file.write(data)
        self._file.flush()
        self._size += len(data)
        self.tail += data
        if len(self.tail) > LOG_TAIL_BYTES:
            del self.tail[: len(self.tail) - LOG_TAIL_BYTES]

    def _rotate(self) -> None:
        self._file.close()
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115
        self._size = 0

    def last_line(self) -> str:
        lines = [ln for ln in bytes(self.tail).decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1] if lines else ""

    def close(self) -> None:
        self._file.close()


# -- the IPC link (asyncio side) -------------------------------------------------------------


class WorkerLink(asyncio.Protocol):
    """The core's end of the socket pair: decode frames in bulk, coalesce writes per tick."""

    def __init__(self, on_messages: Callable[[list[p.Message]], None]) -> None:
        self._on_messages = on_messages
        self._decoder = p.Decoder()
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports do not inherit from asyncio.Transport but behave like one)
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._decoder.receive_data(data)
        try:
            messages = self._decoder.events()
        except IPCProtocolError as exc:
            log.error("worker_protocol_error error=%s", exc)
            if self._transport is not None:
                self._transport.abort()
            return
        if messages:
            self._on_messages(messages)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    def write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._transport is not None and self._out:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def pause_reading(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


# -- the process -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchPlan:
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    log_path: Path
    memory: MemoryLimit
    run_as: RunAs | None = None
    #: also given every chunk of the worker's output (the core ships it to the cloud)
    on_output: Callable[[bytes], None] | None = None


class WorkerProcess:
    """One running worker: its process, its IPC link and its log pump."""

    def __init__(
        self, make_plan: Callable[[], LaunchPlan], on_messages: Callable[[list[p.Message]], None]
    ) -> None:
        self._make_plan = make_plan
        self.plan: LaunchPlan | None = None
        self._on_messages = on_messages
        self.link: WorkerLink | None = None
        self.log: RotatingLog | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self.returncode: int | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        plan = self.plan = self._make_plan()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if plan.memory.cgroup is not None:
                plan.memory.cgroup.mkdir(exist_ok=True)
                (plan.memory.cgroup / "memory.max").write_text(str(plan.memory.limit_bytes))
                with contextlib.suppress(OSError):
                    (plan.memory.cgroup / "memory.swap.max").write_text("0")
            env = dict(plan.env)
            env["HEDGEROW_IPC_FD"] = str(child.fileno())
            self.log = RotatingLog(plan.log_path)
            if plan.run_as is not None:  # the worker drops to it before loading any code
                env["HEDGEROW_RUN_AS"] = plan.run_as.to_env()
            self._proc = await asyncio.create_subprocess_exec(
                *plan.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=str(plan.cwd),
                env=env,
                pass_fds=(child.fileno(),),
                start_new_session=True,
            )
            child.close()
            if plan.memory.cgroup is not None:
                try:
                    (plan.memory.cgroup / "cgroup.procs").write_text(str(self._proc.pid))
                except OSError as exc:
                    log.warning("cgroup_join_failed pid=%s error=%s", self._proc.pid, exc)
            loop = asyncio.get_running_loop()
            _, link = await loop.create_unix_connection(
                lambda: WorkerLink(self._on_messages), sock=parent
            )
        except BaseException as exc:  # cancellation included: leave nothing behind
            child.close()
            parent.close()
            self.kill()
            if self.log is not None:
                self.log.close()
            if isinstance(exc, OSError | ValueError):
                raise LaunchError(f"cannot start worker: {exc}") from exc
            raise
        self.link = link
        self._pump = asyncio.create_task(self._pump_log(), name=f"log-pump-{self._proc.pid}")

    async def _pump_log(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None and self.log is not None
        while True:
            chunk = await self._proc.stdout.read(READ_CHUNK)
            if not chunk:
                return
            self.log.write(chunk)
            if self.plan is not None and self.plan.on_output is not None:
                try:
                    self.plan.on_output(chunk)
                except Exception:  # a failing log sink must not stop the function's log
                    log.exception("function_output_sink_failed")

    async def wait(self) -> int:
        """Wait for the process to end; returns its exit code (negative: a signal)."""
        assert self._proc is not None
        code = await self._proc.wait()
        self.returncode = code
        self._kill_group(signal.SIGKILL)  # no orphans of a dead function
        if self._pump is not None:
            # the rest of its output; a process that escaped the group may hold the pipe
            done, _ = await asyncio.wait({self._pump}, timeout=PUMP_DRAIN_S)
            if not done:
                self._pump.cancel()
                await asyncio.wait({self._pump})
        if self.link is not None:
            self.link.close()
        if self.log is not None:
            self.log.close()
        if self.plan is not None and self.plan.memory.cgroup is not None:
            with contextlib.suppress(OSError):
                self.plan.memory.cgroup.rmdir()
        return code

    def oom_killed(self) -> bool:
        """Did the cgroup's OOM killer end it? (always False under RLIMIT_AS)"""
        cgroup = self.plan.memory.cgroup if self.plan is not None else None
        if cgroup is None:
            return False
        try:
            for line in (cgroup / "memory.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        except (OSError, ValueError):
            return False
        return False

    def _kill_group(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def discard(self) -> None:
        """Kill it and release the link and the log without waiting (a hurried shutdown)."""
        self.kill()
        if self._pump is not None:
            self._pump.cancel()
        if self.link is not None:
            self.link.close()
        if self.log is not None:
            self.log.close()

    def kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._kill_group(signal.SIGKILL)

    async def terminate(self, grace: float = TERM_GRACE_S) -> int:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; returns the exit code."""
        assert self._proc is not None
        if self._proc.returncode is None:
            self._kill_group(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await self._proc.wait()
            except TimeoutError:
                log.warning(
                    "worker_kill pid=%s reason=%r", self.pid, f"no exit {grace}s after SIGTERM"
                )
                self._kill_group(signal.SIGKILL)
                await self._proc.wait()
        return self._proc.returncode if self._proc.returncode is not None else -9


def describe_exit(code: int) -> str:
    if code == p.EXIT_MEMORY:
        return "memory limit exceeded"
    if code == p.EXIT_TIMEOUT:
        return "timed out"
    if code == p.EXIT_IMPORT_FAILED:
        return "the handler could not be loaded"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
