"""The HTTP client of the V1 IPC (``/2016-11-01/functions/{arn}`` on localhost).

One persistent HTTP/1.1 connection per thread to ``GG_DAEMON_PORT``; the caller is
identified by ``AWS_CONTAINER_AUTHORIZATION_TOKEN``.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import threading
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)

HEADER_INVOCATION_ID = "X-Amz-InvocationId"
HEADER_CLIENT_CONTEXT = "X-Amz-Client-Context"
HEADER_AUTH_TOKEN = "Authorization"
HEADER_INVOCATION_TYPE = "X-Amz-Invocation-Type"
HEADER_FUNCTION_ERR_TYPE = "X-Amz-Function-Error"
IPC_API_VERSION = "2016-11-01"
TIMEOUT_S = 300.0


class IPCException(Exception):
    pass


class WorkItem:
    def __init__(self, invocation_id: str, payload: bytes, client_context: str) -> None:
        self.invocation_id = invocation_id
        self.payload = payload
        self.client_context = client_context


class GetWorkResultOutput:
    def __init__(self, payload: bytes, func_err: str) -> None:
        self.payload = payload
        self.func_err = func_err


def _as_bytes(payload: Any) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if hasattr(payload, "read"):
        return _as_bytes(payload.read())
    raise IPCException(
        f"payload must be bytes, str or a file-like object, not {type(payload).__name__}"
    )


def _as_str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("ascii", errors="replace")
    return str(value)


class IPCClient:
    """Posts work to functions and fetches results, as the V1 SDK expects."""

    def __init__(self, endpoint: str = "localhost", port: int | None = None) -> None:
        self.endpoint = "127.0.0.1" if endpoint == "localhost" else endpoint
        env_port = os.environ.get("GG_DAEMON_PORT")
        if port is None and not env_port:
            raise IPCException("GG_DAEMON_PORT is not set")
        self.port = int(port if port is not None else str(env_port))
        self.auth_token = os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN", "")
        self._local = threading.local()

    # -- transport ----------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.endpoint, self.port, timeout=TIMEOUT_S)
            self._local.conn = conn
        return conn

    def _request(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {HEADER_AUTH_TOKEN: self.auth_token, **headers}
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                return response.status, {k.lower(): v for k, v in response.getheaders()}, data
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise IPCException(f"IPC request failed: {exc}") from exc
        raise IPCException("unreachable")

    @staticmethod
    def _url(function_arn: str, suffix: str = "") -> str:
        return f"/{IPC_API_VERSION}/functions/{quote(function_arn, safe=':')}{suffix}"

    # -- caller side ------------------------------------------------------------------------------

    def post_work(
        self,
        function_arn: str,
        input_bytes: Any,
        client_context: Any,
        invocation_type: str = "RequestResponse",
    ) -> str:
        headers = {
            HEADER_CLIENT_CONTEXT: _as_str(client_context),
            HEADER_INVOCATION_TYPE: invocation_type,
        }
        status, reply, body = self._request(
            "POST", self._url(function_arn), _as_bytes(input_bytes), headers
        )
        if status >= 300:
            raise IPCException(_message(body, status))
        return reply.get(HEADER_INVOCATION_ID.lower(), "")

    def get_work_result(self, function_arn: str, invocation_id: str) -> GetWorkResultOutput:
        headers = {HEADER_INVOCATION_ID: invocation_id}
        status, reply, body = self._request("GET", self._url(function_arn), b"", headers)
        if status != 200:
            raise IPCException(_message(body, status))
        return GetWorkResultOutput(body, reply.get(HEADER_FUNCTION_ERR_TYPE.lower(), ""))

    # -- runtime side (not used by Hedgerow's own runtime, kept for completeness) ------------------

    def get_work(self, function_arn: str) -> WorkItem:
        status, reply, body = self._request("GET", self._url(function_arn, "/work"), b"", {})
        if status != 200:
            raise IPCException(_message(body, status))
        return WorkItem(
            reply.get(HEADER_INVOCATION_ID.lower(), ""),
            body,
            reply.get(HEADER_CLIENT_CONTEXT.lower(), ""),
        )

    def post_work_result(self, function_arn: str, work: WorkItem) -> None:
        headers = {HEADER_INVOCATION_ID: work.invocation_id}
        status, _, body = self._request(
            "POST", self._url(function_arn, "/work"), work.payload, headers
        )
        if status >= 300:
            raise IPCException(_message(body, status))

    def post_handler_err(self, function_arn: str, invocation_id: str, handler_err: str) -> None:
        headers = {HEADER_INVOCATION_ID: invocation_id, HEADER_FUNCTION_ERR_TYPE: "Handled"}
        payload = json.dumps({"errorMessage": handler_err}).encode()
        status, _, body = self._request("POST", self._url(function_arn, "/work"), payload, headers)
        if status >= 300:
            raise IPCException(_message(body, status))


def _message(body: bytes, status: int) -> str:
    try:
        data = json.loads(body)
        if isinstance(data, dict) and "errorMessage" in data:
            return f"{status}: {data['errorMessage']}"
    except ValueError:
        pass
    return f"{status}: {body[:200].decode(errors='replace')}"


def encode_client_context(context: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(context).encode()).decode()
