"""The core's HTTP client: one HTTP/1.1 request per connection, over TLS or plain TCP.

The edge daemon calls the cloud rarely (a deployment, a certificate, the revocation list),
so it needs no pool, proxies, redirects or compression; a full client library would cost
megabytes of resident memory for nothing. This module is the standard library plus ``h11``
(a sans-IO HTTP/1.1 state machine): ``request()`` opens a connection with
``asyncio.open_connection``, sends one request with ``Connection: close``, reads the reply
by h11 events (Content-Length or chunked) into a ``Response`` and closes the connection.

Every failure — DNS, refused connection, TLS handshake or verification, a reply that is
not HTTP, a truncated or oversized body, the deadline — raises ``HTTPSError`` with a
message for humans. HTTP error statuses are not failures here: the caller reads
``Response.status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import h11

import hedgerow

#: The largest reply body accepted (artifacts are function bundles).
MAX_BODY = 64 * 1024 * 1024
#: How long closing a connection may take (a TLS close_notify) before it is aborted.
CLOSE_TIMEOUT = 2.0
READ_SIZE = 64 * 1024
USER_AGENT = f"hedgerow-core/{hedgerow.__version__}"
DEFAULT_PORTS = {"https": 443, "http": 80}
#: Characters left as they are in a request target (RFC 3986 pchar, "/", "?" and escapes).
_TARGET_SAFE = "/?%:@!$&'()*+,;=~"


class HTTPSError(Exception):
    """A request failed before a complete reply was read; the message says why."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: parsed from a base URL such as ``https://[::1]:8443/prefix``."""

    scheme: str
    host: str
    port: int
    prefix: str = ""

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def authority(self) -> str:
        """The ``Host`` header: the host (IPv6 in brackets), the port unless the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def target(self, path: str) -> str:
        """The request target for ``path`` below the prefix, percent-encoded where needed."""
        return quote(self.prefix + "/" + path.lstrip("/"), safe=_TARGET_SAFE)


@dataclass(frozen=True, slots=True)
class Response:
    """A complete reply, whatever its status."""

    status: int
    #: Header names lower-cased; repeated headers joined with ", ".
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` if it is not."""
        return jsonlib.loads(self.content)


def parse_base_url(base_url: str) -> Origin:
    """``http(s)://host[:port][/prefix]`` as an ``Origin``; ``HTTPSError`` if it is not one."""
    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise HTTPSError(f"{base_url!r} must start with https:// or http://")
    try:
        port = parts.port
    except ValueError as exc:
        raise HTTPSError(f"{base_url!r} has a bad port") from exc
    if not parts.hostname:
        raise HTTPSError(f"{base_url!r} has no host")
    return Origin(scheme, parts.hostname, port or DEFAULT_PORTS[scheme], parts.path.rstrip("/"))


def encode_json(value: Any) -> bytes:
    return jsonlib.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def request_headers(
    origin: Origin, body: bytes | None, content_type: str = "application/json"
) -> list[tuple[str, str]]:
    headers = [
        ("Host", origin.authority),
        ("User-Agent", USER_AGENT),
        ("Accept", "application/json"),
        ("Connection", "close"),
    ]
    if body is not None:
        headers += [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    return headers


def response_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """h11's (already lower-cased) header list as a dict; repeated names are joined."""
    merged: dict[str, str] = {}
    for name, value in headers:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        merged[key] = f"{merged[key]}, {text}" if key in merged else text
    return merged


def content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length of h11 response headers (h11 has validated it), if there is one."""
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None


def _closed_without_reply(origin: Origin) -> str:
    message = "the server closed the connection without a reply"
    if origin.tls:
        # with TLS 1.3 the client's handshake ends before the server has checked the client
        # certificate; a server that rejects it may just close (asyncio's servers do)
        message += " (did it reject the TLS client certificate?)"
    return message


def _too_large(limit: int, detail: str) -> HTTPSError:
    return HTTPSError(f"the reply body exceeds the {limit} byte limit ({detail})")


async def request(
    base_url: str,
    method: str,
    path: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    json: Any = None,
    content: bytes | None = None,
    content_type: str = "application/json",
    timeout: float,  # noqa: ASYNC109 - the whole exchange is bounded, not one await
    max_body: int = MAX_BODY,
) -> Response:
    """``method path`` on ``base_url`` with an optional JSON body (or raw ``content`` of
    ``content_type``); the whole exchange
    (connect, TLS handshake, send, receive) within ``timeout`` seconds.

    ``https`` URLs use ``ssl_context`` (the system's default trust when None); ``http``
    URLs are plain TCP and ignore it. Raises ``HTTPSError`` on any failure.
    """
    origin = parse_base_url(base_url)
    body = content if content is not None else None if json is None else encode_json(json)
    tls: ssl.SSLContext | None = None
    if origin.tls:
        tls = ssl_context if ssl_context is not None else ssl.create_default_context()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                origin.host, origin.port, ssl=tls, server_hostname=origin.host if tls else None
            )
            return await _exchange(
                reader, writer, origin, method, path, body, max_body, content_type
            )
    except TimeoutError:
        raise HTTPSError(f"no complete reply within {timeout:g} s") from None
    except ssl.SSLError as exc:
        raise HTTPSError(f"TLS: {exc}") from exc
    except OSError as exc:
        raise HTTPSError(str(exc) or type(exc).__name__) from exc
    except h11.RemoteProtocolError as exc:
        raise HTTPSError(f"invalid reply: {exc}") from exc
    except h11.LocalProtocolError as exc:
        raise HTTPSError(f"invalid request: {exc}") from exc
    finally:
        if writer is not None:
            await _close(writer)


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    origin: Origin,
    method: str,
    path: str,
    body: bytes | None,
    max_body: int,
    content_type: str = "application/json",
) -> Response:
    conn = h11.Connection(h11.CLIENT)
    headers = request_headers(origin, body, content_type)
    head = h11.Request(method=method, target=origin.target(path), headers=headers)
    writer.write(conn.send(head) or b"")
    if body:
        writer.write(conn.send(h11.Data(data=body)) or b"")
    writer.write(conn.send(h11.EndOfMessage()) or b"")
    await writer.drain()

    response: h11.Response | None = None
    content = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(READ_SIZE)
            if not data and response is None:
                raise HTTPSError(_closed_without_reply(origin))
            conn.receive_data(data)  # b"" is the end of the stream: h11 checks the body
        elif isinstance(event, h11.Response):
            response = event
            length = content_length(event.headers)
            if length is not None and length > max_body:
                raise _too_large(max_body, f"Content-Length {length}")
        elif isinstance(event, h11.Data):
            content += event.data
            if len(content) > max_body:
                raise _too_large(max_body, f"{len(content)} bytes read")
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None  # h11 sends a Response before any body
            return Response(
                response.status_code, response_headers(response.headers), bytes(content)
            )
        elif isinstance(event, h11.ConnectionClosed):
            raise HTTPSError(_closed_without_reply(origin))
        # InformationalResponse (1xx): the final response follows


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close the connection; abort it if the peer does not finish closing in time."""
    writer.close()
    closed = False
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await writer.wait_closed()
        closed = True
    except (OSError, TimeoutError):  # ssl.SSLError is an OSError
        pass
    finally:
        if not closed:
            with contextlib.suppress(Exception):
                writer.transport.abort()
