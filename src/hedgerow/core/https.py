"""The core's HTTP client: one HTTP/1.1 request per connection, over TLS or plain TCP.

The edge daemon calls the cloud rarely (a deployment, a certificate, the revocation list),
so it needs no pool, proxies, redirects or compression; a full client library would cost
megabytes of resident memory for nothing. ``request()`` parses the base URL, builds the
headers (``Connection: close``) and runs the exchange through ``hedgerow.http11.fetch``
(the standard library plus ``h11``), which reads the reply (Content-Length or chunked)
into a ``Response`` and closes the connection.

Every failure — DNS, refused connection, TLS handshake or verification, a reply that is
not HTTP, a truncated or oversized body, the deadline — raises ``HTTPSError`` (which is
``hedgerow.http11.HTTPError``) with a message for humans. HTTP error statuses are not
failures here: the caller reads ``Response.status``.
"""

from __future__ import annotations

import json as jsonlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import hedgerow
from hedgerow import http11
from hedgerow.tlscontext import ResumingContext

#: The largest reply body accepted (artifacts are function bundles).
MAX_BODY = 64 * 1024 * 1024
USER_AGENT = f"hedgerow-core/{hedgerow.__version__}"
DEFAULT_PORTS = {"https": 443, "http": 80}
#: Characters left as they are in a request target (RFC 3986 pchar, "/", "?" and escapes).
_TARGET_SAFE = "/?%:@!$&'()*+,;=~"


#: A request failed before a complete reply was read; the message says why.
HTTPSError = http11.HTTPError


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
    #: the TLS handshake resumed an earlier session
    tls_resumed: bool = False

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
    return http11.merge_headers(headers)


def content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length of h11 response headers (h11 has validated it), if there is one."""
    return http11.content_length(headers)


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
    URLs are plain TCP and ignore it. A ``tlscontext.ResumingContext`` keeps the session
    each reply brought, so the next request to that host resumes it. Raises
    ``HTTPSError`` on any failure.
    """
    origin = parse_base_url(base_url)
    body = content if content is not None else None if json is None else encode_json(json)
    tls: ssl.SSLContext | None = None
    if origin.tls:
        tls = ssl_context if ssl_context is not None else ssl.create_default_context()
    reply = await http11.fetch(
        origin.host,
        origin.port,
        method,
        origin.target(path),
        headers=request_headers(origin, body, content_type),
        body=body,
        ssl_context=tls,
        timeout=timeout,
        max_body=max_body,
    )
    if isinstance(tls, ResumingContext):
        tls.keep(origin.host, reply.tls_session)
    return Response(reply.status, response_headers(reply.headers), reply.content, reply.tls_resumed)
