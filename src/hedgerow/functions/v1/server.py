"""The Greengrass V1 IPC server: plain HTTP on 127.0.0.1 that ``greengrasssdk`` talks to.

Paths are ``/2016-11-01/functions/{functionArn}``; the caller is identified by its
``Authorization`` token (one per deployed V1 function).

- ``POST`` posts work: to ``GGRouter`` (an ``iot-data`` publish: the subject of the client
  context is the topic), to ``GGShadowService`` (the subject names the thing and the
  operation), or to another function (``Event`` queues it, ``RequestResponse`` runs it).
  The reply carries ``X-Amz-InvocationId``.
- ``GET`` with ``X-Amz-InvocationId`` returns the result with ``X-Amz-Function-Error``
  (empty on success, ``Handled`` when the handler raised, ``Unhandled`` otherwise).

Events for V1 functions themselves reach their worker over the framed IPC, so the
runtime-side ``.../work`` long poll is not served.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import re
from collections.abc import Awaitable
from types import TracebackType
from typing import Final, Protocol
from urllib.parse import unquote

from hedgerow import http11
from hedgerow.functions.errors import HandlerError, InvocationError
from hedgerow.functions.v1 import arn as arns

log = logging.getLogger(__name__)

PREFIX: Final = "/2016-11-01/functions/"
MAX_BODY: Final = 16 * 1024 * 1024
MAX_PENDING_RESULTS: Final = 10_000
#: Requests come from the function processes on this host: a publish or invoke payload
#: up to MAX_BODY; a kept-alive connection idles at most a minute.
V1_LIMITS: Final = http11.Limits(
    max_header_bytes=64 * 1024, max_body_bytes=MAX_BODY, idle_timeout=60.0, request_timeout=30.0
)
_SHADOW_TOPIC: Final = re.compile(r"^\$aws/things/([^/#+]+)/shadow/(get|update|delete)$")


def parse_topic(topic: str) -> tuple[str, str] | None:
    """``$aws/things/<thing>/shadow/<op>`` -> (thing, op)."""
    match = _SHADOW_TOPIC.match(topic)
    return (match.group(1), match.group(2)) if match else None


class V1Backend(Protocol):
    def caller_of(self, token: str) -> str | None: ...

    def v1_publish(self, caller: str, topic: str, payload: bytes) -> Awaitable[None]: ...

    def v1_invoke(
        self,
        caller: str,
        target: str,
        payload: bytes,
        subject: str,
        client_context: bytes,
        event: bool,
    ) -> Awaitable[bytes]: ...

    def v1_shadow(
        self, thing: str, operation: str, payload: bytes
    ) -> Awaitable[tuple[bool, bytes]]: ...

    def v1_secret(self, caller: str, body: bytes) -> Awaitable[bytes]: ...


Outcome = tuple[bytes, str]  # (body, X-Amz-Function-Error)
Headers = tuple[tuple[str, str], ...]


def _error_body(message: str, error_type: str = "", stack: str = "") -> bytes:
    body: dict[str, object] = {"errorMessage": message}
    if error_type:
        body["errorType"] = error_type
    if stack:
        body["stackTrace"] = stack.splitlines()
    return json.dumps(body).encode()


def _error_response(status: int, message: str) -> http11.Response:
    return http11.Response(status, _error_body(message))


def parse_client_context(header: bytes) -> dict[str, object]:
    if not header:
        return {}
    try:
        data = json.loads(base64.b64decode(header))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class V1Server:
    """Serves the V1 IPC for every V1 function of one FunctionHost."""

    def __init__(self, backend: V1Backend, host: str = "127.0.0.1", port: int = 0) -> None:
        self._backend = backend
        self._host = host
        self._port = port
        self._results: dict[str, asyncio.Future[Outcome]] = {}
        self._ids = itertools.count(1)
        self._http = http11.Server(
            self._serve, limits=V1_LIMITS, error_response=_error_response, name="v1-ipc"
        )
        self._work = asyncio.TaskGroup()  # invocations whose results callers will fetch
        self.port = 0

    async def __aenter__(self) -> V1Server:
        await self._work.__aenter__()
        self.port = (await self._http.start(self._host, self._port))[1]
        log.info("functions.ipc.listening port=%s", self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for future in self._results.values():
            future.cancel()
        await self._http.close()
        await self._work.__aexit__(None, None, None)

    # -- connections --------------------------------------------------------------------------

    async def _serve(self, request: http11.Request) -> http11.Response:
        status, headers, payload = await self._route(request)
        return http11.Response(status, payload, headers=headers)

    # -- requests -----------------------------------------------------------------------------

    async def _route(self, request: http11.Request) -> tuple[int, Headers, bytes]:
        headers = dict(request.headers)  # the last of a repeated header wins
        caller = self._backend.caller_of(headers.get("authorization", ""))
        if caller is None:
            return 403, (), _error_body("unknown authorization token")
        path = unquote(request.target).split("?", 1)[0]
        if not path.startswith(PREFIX):
            return 404, (), _error_body(f"no such path {path}")
        arn = path[len(PREFIX) :]
        if arn.endswith("/work"):
            return 501, (), _error_body("the runtime-side work API is not served by Hedgerow")
        if request.method == "POST":
            return await self._post_work(caller, arn, headers, request.body)
        if request.method == "GET":
            return await self._get_result(headers)
        return 405, (), _error_body("method not allowed")

    async def _post_work(
        self, caller: str, arn: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Headers, bytes]:
        context_header = headers.get("x-amz-client-context", "").encode("latin-1")
        invocation_type = headers.get("x-amz-invocation-type", "RequestResponse")
        event = invocation_type == "Event"
        context = parse_client_context(context_header)
        custom = context.get("custom")
        subject = custom.get("subject", "") if isinstance(custom, dict) else ""
        subject = subject if isinstance(subject, str) else ""
        invocation_id = f"{next(self._ids):016x}"
        reply = (("x-amz-invocationid", invocation_id),)
        if arns.same_service(arn, arns.ROUTER_ARN):
            if not subject:
                return 400, (), _error_body("publish without a topic (client context subject)")
            try:
                await self._backend.v1_publish(caller, subject, body)
            except Exception as exc:  # the core's router failed: tell the SDK, keep serving
                log.exception("functions.ipc.publish_failed function=%s topic=%s", caller, subject)
                return 500, (), _error_body(f"publish failed: {exc}")
            return 202, reply, b""
        if arns.same_service(arn, arns.SHADOW_ARN):
            self._store(invocation_id, self._shadow(subject, body))
            return 202, reply, b""
        if arns.same_service(arn, arns.SECRETS_ARN):
            # errors travel in the payload ({"Status", "Message"}), as the SDK expects
            secret = self._work.create_task(self._secret(caller, body), name="v1-secret")
            self._store(invocation_id, secret)
            return 202, reply, b""
        target = arns.function_name(arn)
        if target is None:
            return 400, (), _error_body(f"malformed function ARN {arn}")
        coroutine = self._backend.v1_invoke(caller, target, body, subject, context_header, event)
        if event:
            try:
                await coroutine
            except InvocationError as exc:
                return 404, (), _error_body(str(exc))
            return 202, reply, b""
        self._store(invocation_id, self._invoke(coroutine))
        return 202, reply, b""

    @staticmethod
    def _done(outcome: Outcome) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        future.set_result(outcome)
        return future

    def _store(self, invocation_id: str, future: asyncio.Future[Outcome]) -> None:
        if len(self._results) >= MAX_PENDING_RESULTS:
            oldest = next(iter(self._results))
            self._results.pop(oldest).cancel()
        self._results[invocation_id] = future

    def _shadow(self, subject: str, body: bytes) -> asyncio.Future[Outcome]:
        return self._work.create_task(self._shadow_outcome(subject, body), name="v1-shadow")

    async def _shadow_outcome(self, subject: str, body: bytes) -> Outcome:
        parsed = parse_topic(subject)
        if parsed is None:
            return _error_body(f"not a shadow topic: {subject!r}"), "Unhandled"
        try:
            _, document = await self._backend.v1_shadow(parsed[0], parsed[1], body)
        except InvocationError as exc:
            return _error_body(exc.reason), "Unhandled"
        except Exception as exc:  # the shadow store failed: the caller gets an error, we go on
            log.exception("functions.ipc.shadow_failed subject=%s", subject)
            return _error_body(f"shadow service error: {exc}"), "Unhandled"
        return document, ""

    async def _secret(self, caller: str, body: bytes) -> Outcome:
        return await self._backend.v1_secret(caller, body), ""

    def _invoke(self, coroutine: Awaitable[bytes]) -> asyncio.Future[Outcome]:
        async def run() -> Outcome:
            try:
                return await coroutine, ""
            except HandlerError as exc:
                return _error_body(exc.reason, exc.error_type, exc.traceback), "Handled"
            except InvocationError as exc:
                return _error_body(exc.reason), "Unhandled"

        return self._work.create_task(run(), name="v1-invoke")

    async def _get_result(self, headers: dict[str, str]) -> tuple[int, Headers, bytes]:
        invocation_id = headers.get("x-amz-invocationid", "")
        future = self._results.get(invocation_id)
        if future is None:
            return (
                404,
                (("x-amz-function-error", "Unhandled"),),
                _error_body("unknown invocation id"),
            )
        try:
            body, error = await asyncio.shield(future)
        finally:
            if future.done():
                self._results.pop(invocation_id, None)
        return 200, (("x-amz-function-error", error),), body
