"""``FunctionHost``: the function runtime as the core sees it (composition of the parts).

``apply(specs, artifacts)`` prepares every bundle, starts the new and changed functions
*beside* the running ones, waits until each is READY, and only then swaps them in and
stops what was replaced or removed — so a failed deployment leaves the previous functions
running and raises :class:`FunctionDeployError` naming the function and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import grp
import json
import logging
import os
import secrets
import stat
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol

import hedgerow
from hedgerow.functions.code_bundle import PreparedBundle, prepare_bundle, remove_unused
from hedgerow.functions.errors import (
    BundleError,
    FunctionDeployError,
    FunctionNotFound,
    InvocationError,
    InvocationTimeout,
    LaunchError,
)
from hedgerow.functions.policy import State
from hedgerow.functions.pool import FunctionPool, PoolSettings, PublishFn
from hedgerow.functions.process import (
    PASSTHROUGH_ENV,
    RUN_AS_ADVICE,
    UNPRIVILEGED_USERS,
    LaunchPlan,
    RunAs,
    choose_unprivileged_user,
    ensure_function_user,
    find_cgroup_base,
    plan_memory_limit,
    resolve_run_as,
)
from hedgerow.functions.resources import (
    ResourceUnavailable,
    SourceFacts,
    plan_access,
)
from hedgerow.functions.secrets import (
    SecretSource,
    SecretUnavailable,
    SecretVersion,
    parse_call_target,
    parse_v1_request,
    to_call_reply,
    v1_error,
    v1_reply,
)
from hedgerow.functions.spec import FunctionSpec
from hedgerow.functions.v1 import V1_PATH
from hedgerow.functions.v1 import arn as arns
from hedgerow.functions.v1.env import v1_environment
from hedgerow.functions.v1.server import V1Server
from hedgerow.functions.v1.server import parse_topic as parse_shadow_topic


class ShadowReplyLike(Protocol):
    """One shadow request's outcome, as the function runtime reads it."""

    @property
    def accepted(self) -> bool: ...

    @property
    def document(self) -> Any: ...

    @property
    def messages(self) -> Sequence[tuple[str, bytes]]: ...


class Shadows(Protocol):
    """What the runtime needs of a shadow service (the core's ``ShadowService`` is one):
    the runtime owns this protocol and imports nothing of the core."""

    def request(self, thing: str, operation: str, payload: bytes) -> ShadowReplyLike: ...


log = logging.getLogger(__name__)

ShadowPublishFn = Callable[[str, bytes], Awaitable[None] | None]

DEFAULT_REGION: Final = "local"
DEFAULT_SETTLE_S: Final = 1.0
MAX_STOP_GRACE_S: Final = 10.0
#: How much of a function's last traceback goes into the heartbeat (its end: the error).
TRACEBACK_CHARS: Final = 2000


class FunctionHost:
    """Runs the deployed functions of one core (an async context manager).

    ``default_run_as`` is the user for functions without ``run_as``: None (the default)
    means, when the core runs as root, the dedicated ``hedgerow-fn`` (created if missing),
    else the first of ``hedgerow``, ``ggc_user`` that can run functions here (probed at
    start). Functions never run as root: with no such user, or ``""`` (no default user),
    a deployment whose functions name no ``run_as`` fails with advice; not being root,
    functions run as the core's user. ``memory_cgroups=False`` forces RLIMIT_AS; ``cgroup_base``
    names a delegated cgroup v2 directory instead of detecting one.
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        publish: PublishFn,
        shadow: Shadows | None = None,
        thing_name: str = "",
        shadow_publish: ShadowPublishFn | None = None,
        settings: PoolSettings | None = None,
        python: str = sys.executable,
        default_run_as: str | None = None,
        region: str = DEFAULT_REGION,
        settle_s: float = DEFAULT_SETTLE_S,
        memory_cgroups: bool = True,
        cgroup_base: Path | None = None,
        stream_manager_port: int | None = None,
        secrets: SecretSource | None = None,
    ) -> None:
        self.work_dir = Path(work_dir)
        #: the core's stream manager (``[streams]``): its port and the function's own token
        #: go into every function's environment, as Greengrass does
        self.stream_manager_port = stream_manager_port
        self._publish = publish
        self.shadow = shadow
        self.thing_name = thing_name
        self._shadow_publish = shadow_publish
        self.settings = settings or PoolSettings()
        self._python = python
        self._default_run_as = default_run_as
        #: Why functions cannot run at all (as root with no unprivileged user), else None.
        self._refusal: str | None = None
        self.region = region
        self._settle_s = settle_s
        self._use_cgroups = memory_cgroups
        self._cgroup_base: Path | None = cgroup_base
        self._pools: dict[str, FunctionPool] = {}
        self._tasks: dict[FunctionPool, asyncio.Task[None]] = {}
        self._tokens: dict[str, FunctionPool] = {}  # V1 authorization token -> its pool
        self._apply_lock = asyncio.Lock()
        self._secrets = secrets
        self._stack = contextlib.AsyncExitStack()
        self._tg: asyncio.TaskGroup | None = None
        self._v1: V1Server | None = None
        self._unknown = 0
        self._changed = asyncio.Event()
        self._watchers = 0
        #: called when a function's state or last error changed (the core's heartbeat)
        self._on_change: Callable[[], None] | None = None
        self._signature: tuple[tuple[str, str, str | None], ...] = ()
        #: given ``(function, chunk)`` for every chunk a function writes (``watch_output``)
        self._output: Callable[[str, bytes], None] | None = None
        self._log_level_of: Callable[[str], int] = lambda _: logging.INFO

    # -- lifetime -----------------------------------------------------------------------------

    async def _choose_user_as_root(self) -> None:
        """Functions never run as root: with no user configured, the dedicated user (made
        if missing) or another unprivileged one that can run functions here; with none,
        functions are refused (``_refusal``) while the rest of the core keeps running."""
        if self._default_run_as is None:
            await ensure_function_user()
            self._default_run_as = await choose_unprivileged_user(
                self._python, self.work_dir, _source_root()
            )
        if not self._default_run_as:
            self._refusal = (
                "the core runs as root and functions must not: no unprivileged user "
                f"({', '.join(UNPRIVILEGED_USERS)}) can run {self._python} here; " + RUN_AS_ADVICE
            )
            log.error("functions_refused reason=%s", self._refusal)

    async def __aenter__(self) -> FunctionHost:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self._use_cgroups and self._cgroup_base is None:
            self._cgroup_base = find_cgroup_base()
        elif not self._use_cgroups:
            self._cgroup_base = None
        if os.geteuid() == 0:
            await self._choose_user_as_root()
        log.info(
            "function_host_started memory_limit=%s default_user=%s",
            self.memory_backend,
            self._default_run_as or "(the core's)",
        )
        await self._stack.__aenter__()
        try:
            self._tg = await self._stack.enter_async_context(asyncio.TaskGroup())
            self._v1 = V1Server(self)
            await self._stack.enter_async_context(self._v1)
            self._stack.push_async_callback(self._stop_all)
        except BaseException:
            await self._stack.__aexit__(*sys.exc_info())
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # the body's own exception is not handed to the task group (it would wrap it)
        await self._stack.aclose()

    async def _stop_all(self) -> None:
        pools = list(self._tasks)  # running ones and any still starting
        self._pools.clear()
        await asyncio.gather(*(self._stop_pool(pool) for pool in pools))

    async def _stop_pool(
        self, pool: FunctionPool, successor: FunctionPool | None = None, grace_s: float = 0.0
    ) -> None:
        await pool.stop(successor, grace_s)
        task = self._tasks.pop(pool, None)
        if task is not None:
            await asyncio.shield(task)
        for token, owner in list(self._tokens.items()):
            if owner is pool:
                del self._tokens[token]

    @property
    def default_user(self) -> str | None:
        """The user functions without ``run_as`` run as (None: the core's own)."""
        return self._default_run_as or None

    @property
    def memory_backend(self) -> str:
        """How memory limits are enforced here: ``cgroup-v2`` or ``rlimit-as``."""
        return "cgroup-v2" if self._cgroup_base is not None else "rlimit-as"

    @property
    def v1_port(self) -> int:
        assert self._v1 is not None
        return self._v1.port

    # -- deployment ------------------------------------------------------------------------------

    async def apply(self, specs: Sequence[FunctionSpec], artifacts: Mapping[str, Path]) -> None:
        """Make the running functions match ``specs`` (see module docstring)."""
        async with self._apply_lock:
            names = [spec.name for spec in specs]
            for name in names:
                if names.count(name) > 1:
                    raise FunctionDeployError(name, "the name is used twice")
            prepared: dict[str, PreparedBundle] = {}
            for spec in specs:
                artifact = artifacts.get(spec.name)
                if artifact is None:
                    raise FunctionDeployError(spec.name, "no artifact for the function")
                try:
                    prepared[spec.name] = await prepare_bundle(
                        spec.name,
                        Path(artifact),
                        self.work_dir,
                        python=self._python,
                        module=spec.module,
                    )
                except BundleError as exc:
                    raise FunctionDeployError(spec.name, exc.reason) from exc
            changed = [spec for spec in specs if self._needs_start(spec, prepared[spec.name])]
            fresh = [self._new_pool(spec, prepared[spec.name]) for spec in changed]
            try:
                results = await asyncio.gather(
                    *(pool.wait_started() for pool in fresh), return_exceptions=True
                )
            except asyncio.CancelledError:
                # the caller gave up (e.g. a deployment deadline): leave nothing half-started
                await asyncio.shield(asyncio.gather(*(self._stop_pool(p) for p in fresh)))
                raise
            failure = next((r for r in results if isinstance(r, BaseException)), None)
            if failure is not None:
                await asyncio.gather(*(self._stop_pool(pool) for pool in fresh))
                if isinstance(failure, FunctionDeployError):
                    log.error(
                        "deploy_failed function=%s reason=%s", failure.function, failure.reason
                    )
                raise failure
            replaced = {p.name: self._pools[p.name] for p in fresh if p.name in self._pools}
            for pool in fresh:
                self._pools[pool.name] = pool
            wanted = set(names)
            removed = [pool for name, pool in self._pools.items() if name not in wanted]
            for pool in removed:
                del self._pools[pool.name]
            await asyncio.gather(
                *(
                    self._stop_pool(old, self._pools[name], self._grace(old))
                    for name, old in replaced.items()
                ),
                *(self._stop_pool(pool, None, self._grace(pool)) for pool in removed),
            )
            log.info(
                "functions_applied started=%s removed=%s running=%s",
                [p.name for p in fresh],
                [p.name for p in removed],
                sorted(self._pools),
            )
            self._pulse()  # functions started, replaced or stopped: an observable change
            await asyncio.to_thread(
                remove_unused, self.work_dir, [pool.bundle for pool in self._pools.values()]
            )

    @staticmethod
    def _grace(pool: FunctionPool) -> float:
        """How long in-flight invocations of a replaced or removed function may finish."""
        return min(pool.spec.timeout_s, MAX_STOP_GRACE_S)

    def _needs_start(self, spec: FunctionSpec, bundle: PreparedBundle) -> bool:
        pool = self._pools.get(spec.name)
        if pool is None or pool.state is State.BROKEN:
            return True
        return pool.spec != spec or pool.bundle != bundle

    def _new_pool(self, spec: FunctionSpec, bundle: PreparedBundle) -> FunctionPool:
        assert self._tg is not None
        token = secrets.token_hex(16)

        def make_plan() -> LaunchPlan:
            return self._plan(spec, bundle, token)

        pool = FunctionPool(
            spec,
            bundle,
            make_plan,
            publish=self._publish,
            call=self._call,
            settings=self.settings,
            notify=self._pulse,
        )
        self._tokens[token] = pool
        self._tasks[pool] = self._tg.create_task(self._run_pool(pool), name=f"function-{spec.name}")
        return pool

    @staticmethod
    async def _run_pool(pool: FunctionPool) -> None:
        """One function's life; a bug in it must not take the other functions down."""
        try:
            await pool.run()
        except Exception as exc:
            log.exception("function_runtime_error function=%s", pool.name)
            pool.abort(f"runtime error: {type(exc).__name__}: {exc}")

    def function_arn(self, spec: FunctionSpec) -> str:
        return arns.function_arn(spec.name, spec.version, self.region)

    def _plan(self, spec: FunctionSpec, bundle: PreparedBundle, token: str) -> LaunchPlan:
        is_root = os.geteuid() == 0
        run_as = resolve_run_as(spec.run_as or self._default_run_as or None, is_root=is_root)
        if is_root and (run_as is None or run_as.uid == 0):
            raise LaunchError(
                self._refusal
                or f"function {spec.name!r} would run as root (run_as {spec.run_as!r}); "
                + RUN_AS_ADVICE
            )
        cwd = self.work_dir / "functions" / spec.name
        cwd.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            try:
                os.chown(cwd, run_as.uid, run_as.gid)
            except OSError as exc:
                raise LaunchError(
                    f"cannot hand the working directory to uid {run_as.uid}: {exc}"
                ) from exc
        run_as = grant_resources(spec, run_as, is_root=is_root)
        memory = plan_memory_limit(spec.memory_mb, self._cgroup_base, spec.name)
        config: dict[str, Any] = {
            "name": spec.name,
            "handler": spec.handler,
            "runtime": spec.runtime,
            "encoding": spec.encoding,
            "version": spec.version,
            "code_dir": str(bundle.code_dir),
            "deps_dir": str(bundle.deps_dir) if bundle.deps_dir else None,
            "v1_path": str(V1_PATH) if spec.runtime == "greengrass-v1" else None,
            "thing_name": self.thing_name,
            "function_arn": self.function_arn(spec),
            "memory_mb": spec.memory_mb,
            "rlimit_as": memory.rlimit_as,
            "timeout_s": spec.timeout_s,
            "settle_s": self._settle_s,
            "mounts": [
                [r.source, r.destination, r.read_only] for r in spec.resources if r.kind == "volume"
            ]
            if is_root
            else [],
            # as root the function never runs as root, so run_as is set
            "read_only_devices": [
                [r.source, run_as.gid]
                for r in spec.resources
                if r.kind == "device" and r.read_only and run_as is not None
            ]
            if is_root
            else [],
            "log_level": self._log_level_of(spec.name),
        }
        env = {key: os.environ[key] for key in PASSTHROUGH_ENV if key in os.environ}
        env.setdefault("LANG", "C.UTF-8")
        env.update(
            {
                "HOME": str(cwd),
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                "MALLOC_ARENA_MAX": "1",
                # numeric libraries start a thread pool per core with large buffers: one
                # thread keeps a small function inside its memory limit (overridable)
                "OPENBLAS_NUM_THREADS": "1",
                "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
                "HEDGEROW_FUNCTION_NAME": spec.name,
                "AWS_IOT_THING_NAME": self.thing_name,
            }
        )
        if spec.runtime == "greengrass-v1":
            env.update(
                v1_environment(
                    function_arn=self.function_arn(spec),
                    token=token,
                    port=self.v1_port,
                    encoding=spec.encoding,
                    region=self.region,
                    thing_name=self.thing_name,
                    name=spec.name,
                    version=spec.version,
                    memory_mb=spec.memory_mb,
                )
            )
        if self.stream_manager_port is not None:
            env["STREAM_MANAGER_SERVER_PORT"] = str(self.stream_manager_port)
            env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = token
        env.update(spec.environment)
        source_root = _source_root()
        extra = spec.environment.get("PYTHONPATH")
        env["PYTHONPATH"] = source_root + (os.pathsep + extra if extra else "")
        env["HEDGEROW_WORKER"] = json.dumps(config)
        return LaunchPlan(
            argv=(self._python, "-u", "-m", "hedgerow.functions.worker"),
            env=env,
            cwd=cwd,
            log_path=self.work_dir / "logs" / f"{spec.name}.log",
            memory=memory,
            run_as=run_as,
            on_output=self._output_of(spec.name),
        )

    # -- traffic ------------------------------------------------------------------------------------

    async def deliver(self, name: str, topic: str, payload: bytes, source: str) -> None:
        """Queue an event for a function; returns at once (overflow and unknown are counted)."""
        pool = self._pools.get(name)
        if pool is None:
            self._unknown += 1
            log.warning("deliver_unknown_function function=%s topic=%s", name, topic)
            return
        pool.deliver(topic, payload, source)

    async def invoke(
        self,
        name: str,
        payload: bytes,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the contract's name
        topic: str = "",
        source: str = "",
        client_context: bytes = b"",
    ) -> bytes:
        """RequestResponse: the handler's result bytes (raises an InvocationError)."""
        pool = self._pools.get(name)
        if pool is None:
            raise FunctionNotFound(name, "no such function is deployed")
        future = pool.submit(payload, topic, source, client_context)
        if timeout is None:
            return await future
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            raise InvocationTimeout(name, f"no result within {timeout} s") from None

    async def _call(self, target: str, caller: str, payload: bytes) -> bytes:
        """A function's ``context.invoke`` (by name or ARN), shadow call (by shadow topic) or
        ``context.secrets.get`` (``$secret/<name>``, the stage as payload)."""
        secret = parse_call_target(target)
        if secret is not None:
            stage = payload.decode(errors="replace") or "AWSCURRENT"
            return to_call_reply(await self.secret(caller, secret, stage))
        shadow_op = parse_shadow_topic(target)
        if shadow_op is not None:
            accepted, document = await self.v1_shadow(shadow_op[0], shadow_op[1], payload)
            if not accepted:
                raise InvocationError("shadow", document.decode(errors="replace"))
            return document
        name = arns.function_name(target) or target
        return await self.invoke(name, payload, source=caller)

    # -- secrets --------------------------------------------------------------------------------------

    async def secret(self, caller: str, name: str, stage: str) -> SecretVersion:
        """The secret ``name`` at ``stage`` for the function ``caller`` — only if it declares
        it (``SecretUnavailable`` with status 403), and only if this core has it (404)."""
        pool = self._pools.get(caller)
        if pool is None or name not in pool.spec.secrets:
            log.warning(
                "secret_refused function=%s secret=%s reason=%r", caller, name, "not declared"
            )
            raise SecretUnavailable(
                name,
                f"function {caller!r} does not declare secret {name!r}: declare it "
                f"(hedgerow cloud function update --secret {name}) and deploy",
                403,
            )
        try:
            version = await self._secrets(name, stage) if self._secrets is not None else None
        except Exception as exc:  # the core could not open it: the function gets a reason
            log.error("secret_unavailable function=%s secret=%s error=%s", caller, name, exc)
            raise SecretUnavailable(
                name,
                f"the core could not open secret {name!r}: {exc} (run hedgerow core check)",
                500,
            ) from exc
        if version is None:
            raise SecretUnavailable(
                name,
                f"secret {name!r} has no version labelled {stage} on this core: create it "
                f"(hedgerow cloud secret create) in this core's group and deploy",
                404,
            )
        log.info("secret_read function=%s secret=%s version=%s", caller, name, version.version_id)
        return version

    async def v1_secret(self, caller: str, body: bytes) -> bytes:
        """The GGSecretManager answer: the V1 SDK's fields, or ``{"Status", "Message"}``."""
        try:
            name, stage = parse_v1_request(body)
            return v1_reply(await self.secret(caller, name, stage), self.region)
        except ValueError as exc:
            return v1_error(400, str(exc))
        except SecretUnavailable as exc:
            return v1_error(exc.status, exc.reason)

    # -- V1 backend (used by the V1 IPC server) -----------------------------------------------------

    def caller_of(self, token: str) -> str | None:
        pool = self._tokens.get(token)
        return pool.name if pool is not None else None

    def v1_token(self, name: str) -> str | None:
        """The authorization token of the running V1 function ``name`` (for tools and tests)."""
        current = self._pools.get(name)
        return next((t for t, pool in self._tokens.items() if pool is current), None)

    async def v1_publish(self, caller: str, topic: str, payload: bytes) -> None:
        pool = self._pools.get(caller)
        if pool is not None:
            pool.counters.published += 1
        result = self._publish(caller, topic, payload)
        if result is not None:
            await result

    async def v1_invoke(
        self,
        caller: str,
        target: str,
        payload: bytes,
        subject: str,
        client_context: bytes,
        event: bool,
    ) -> bytes:
        if event:
            pool = self._pools.get(target)
            if pool is None:
                raise FunctionNotFound(target, "no such function is deployed")
            pool.deliver(subject, payload, caller)
            return b""
        return await self.invoke(
            target, payload, topic=subject, source=caller, client_context=client_context
        )

    async def v1_shadow(self, thing: str, operation: str, payload: bytes) -> tuple[bool, bytes]:
        if self.shadow is None:
            raise InvocationError("GGShadowService", "no shadow service on this core")
        reply = self.shadow.request(thing, operation, payload)
        if self._shadow_publish is not None:
            for topic, message in reply.messages:
                try:
                    result = self._shadow_publish(topic, message)
                    if result is not None:
                        await result
                except Exception:
                    log.exception("shadow_reply_publish_failed topic=%s", topic)
        return reply.accepted, json.dumps(reply.document).encode()

    # -- observing changes --------------------------------------------------------------------

    def watch_changes(self, on_change: Callable[[], None] | None) -> None:
        """Call ``on_change()`` whenever a function starts, stops, fails or records a new
        error (not on every message: counters alone do not count as a change)."""
        self._on_change = on_change
        self._signature = self._states_and_errors()

    def watch_log_levels(self, level_of: Callable[[str], int]) -> None:
        """``level_of(function)``: the ``logging`` level its worker runs at (read at each
        start; ``refresh_log_levels`` tells running workers)."""
        self._log_level_of = level_of
        self.refresh_log_levels()

    def refresh_log_levels(self) -> None:
        for pool in self._pools.values():
            pool.set_log_level(self._log_level_of(pool.name))

    def watch_output(self, on_output: Callable[[str, bytes], None] | None) -> None:
        """Call ``on_output(function, chunk)`` with what each function writes to stdout and
        stderr (its log file gets it as well); workers started afterwards are covered."""
        self._output = on_output

    def _output_of(self, name: str) -> Callable[[bytes], None] | None:
        sink = self._output
        if sink is None:
            return None
        return lambda chunk: sink(name, chunk)

    def _states_and_errors(self) -> tuple[tuple[str, str, str | None], ...]:
        return tuple((n, p.state.value, p.last_error) for n, p in self._pools.items())

    def _pulse(self) -> None:
        if self._on_change is not None:
            signature = self._states_and_errors()
            if signature != self._signature:
                self._signature = signature
                self._on_change()
        if self._watchers:
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def wait_for(self, predicate: Callable[[FunctionHost], bool]) -> None:
        """Return once ``predicate(host)`` holds; re-checked whenever states or counters
        change (use ``asyncio.timeout`` around it to bound the wait)."""
        while not predicate(self):
            self._watchers += 1
            try:
                await self._changed.wait()
            finally:
                self._watchers -= 1

    # -- status ---------------------------------------------------------------------------------------

    def states(self) -> dict[str, str]:
        """Each deployed function's state: STARTING, RUNNING, BACKOFF, BROKEN, STOPPED."""
        return {name: pool.state.value for name, pool in self._pools.items()}

    @property
    def dropped_unknown(self) -> int:
        """Events delivered to functions that are not deployed (ignored)."""
        return self._unknown

    def counters(self) -> dict[str, dict[str, int]]:
        return {name: pool.counters.as_dict() for name, pool in self._pools.items()}

    def errors(self) -> dict[str, dict[str, Any]]:
        """The functions that failed at least once: failed invocations, crashes, timeouts
        and the last error's text (only these go into the heartbeat, to keep it small)."""
        out: dict[str, dict[str, Any]] = {}
        for name, pool in self._pools.items():
            c = pool.counters
            if c.failed or c.crashes or c.timeouts or pool.last_error:
                out[name] = {
                    "failed": c.failed,
                    "crashes": c.crashes,
                    "timeouts": c.timeouts,
                    "invocations": c.delivered + c.invoked,
                    "last_error": pool.last_error,
                }
                if pool.last_traceback:  # its tail: the heartbeat stays small
                    out[name]["traceback"] = pool.last_traceback[-TRACEBACK_CHARS:]
        return out

    def status(self) -> dict[str, Any]:
        """For the core's heartbeat/status: state, version, last crash reason, counters."""
        return {
            name: {
                "state": pool.state.value,
                "version": pool.spec.version,
                "pinned": pool.spec.pinned,
                "last_error": pool.last_error,
                **pool.counters.as_dict(),
            }
            for name, pool in self._pools.items()
        }

    def specs(self) -> dict[str, FunctionSpec]:
        return {name: pool.spec for name, pool in self._pools.items()}


def source_facts(path: str) -> SourceFacts | None:
    """Owner, group and mode of a resource's source on this gateway (None: missing)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return SourceFacts(st.st_mode, st.st_uid, st.st_gid)


def _group_id(name: str) -> int | None:
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def grant_resources(spec: FunctionSpec, run_as: RunAs | None, *, is_root: bool) -> RunAs | None:
    """The user the worker runs as, with the supplementary groups its resources need.

    As root, volumes are mounted in the worker's own namespace and groups are added to the
    function's user. Otherwise the function runs as the core's user with the core's groups:
    a resource those do not open, a read-only or relocated volume (no namespace) and a
    declared group the core lacks are refused, saying what to do.
    """
    if not spec.resources and not spec.groups:
        return run_as
    ptys = [
        r.source for r in spec.resources if r.kind == "device" and r.read_only and _is_pty(r.source)
    ]
    if ptys:
        raise ResourceUnavailable(
            f"{', '.join(ptys)}: a pseudo-terminal cannot be made read-only for a function (the"
            " kernel opens a terminal only through its own devpts node, which a function cannot"
            " be kept from writing when it may read it): declare it rw"
        )
    facts = {r.source: source_facts(r.source) for r in spec.resources}
    group_ids = {name: _group_id(name) for name in spec.groups}
    uid, gid = (run_as.uid, run_as.gid) if run_as is not None else (os.getuid(), os.getgid())
    groups = plan_access(spec.resources, facts, uid=uid, gid=gid, group_ids=group_ids)
    if run_as is not None:
        return dataclasses.replace(run_as, groups=groups)
    relocated = [r.source for r in spec.resources if r.needs_mount]
    if relocated:
        raise ResourceUnavailable(
            f"volumes {', '.join(relocated)} are read-only or shown at "
            "another path, which needs a mount namespace of their own: run the core as root, "
            "or declare them read-write at their own path"
        )
    writable = [
        r.source
        for r in spec.resources
        if r.kind == "device" and r.read_only and os.access(r.source, os.W_OK)
    ]
    if writable:
        raise ResourceUnavailable(
            f"devices {', '.join(writable)} are declared read-only but the core's user may "
            "write them; making them read-only for the function needs a mount namespace of "
            "its own: run the core as root, or declare them rw"
        )
    lacking = sorted(set(groups) - set(os.getgroups()) - {os.getgid()})
    if lacking:
        raise ResourceUnavailable(
            f"its resources need groups {lacking} the core's user is "
            "not in: add the core's user to them (usermod -aG) or run the core as root"
        )
    return None


#: the character majors of Unix 98 pseudo-terminal slaves (``/dev/pts/N``, devpts)
PTY_SLAVE_MAJORS: Final = range(136, 144)


def _is_pty(path: str) -> bool:
    try:
        facts = os.stat(path)
    except OSError:
        return False  # missing: plan_access says so
    return stat.S_ISCHR(facts.st_mode) and os.major(facts.st_rdev) in PTY_SLAVE_MAJORS


def _source_root() -> str:
    """The directory holding the ``hedgerow`` package (for the workers' PYTHONPATH)."""
    return str(Path(hedgerow.__file__).resolve().parents[1])
