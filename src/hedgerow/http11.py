"""HTTP/1.1 over asyncio streams on ``h11``: one small server and a one-request client.

Hedgerow speaks plain HTTP/1.1 in four places — the cloud's device HTTPS (discovery and the
cores' API), the Greengrass V1 IPC server, the core's metrics listener and the core's client
to the cloud — and all four go through this module. It is the standard library plus ``h11``
(a sans-IO HTTP/1.1 state machine), so the core can use it within its memory budget.

Server: ``Server(handler, limits=Limits(...), ssl_context=None, error_response=plain_error)``;
``await server.start(host, port) -> (host, port)`` (port 0 allowed, may be called again for
another address), ``await server.close()`` (or ``async with``). ``handler(request) ->
Response`` is called once per complete request; the handler's own time is not bounded
here (a V1 result may wait for an invocation). What the server bounds:

* the request head (``Limits.max_header_bytes``; over it: 431) and body
  (``Limits.max_body_bytes``; a Content-Length over it is answered 413 before the body is
  read, a chunked body when it crosses the cap);
* time: a connection waits at most ``idle_timeout`` for a request to begin (then it is
  closed without a word), and a request that began must be complete within
  ``request_timeout`` (408);
* garbage (not HTTP/1.1): 400, or what ``h11`` hints;
* load (``Limits.max_pending``, with TLS): at most that many connections are in their TLS
  handshake or first request at once; a connection that finds no slot within
  ``Limits.pending_wait`` seconds is closed before its handshake (``ServerStats.shed``). A
  refusal that could carry ``503``/``Retry-After`` would cost the full handshake it is
  meant to save; the peer sees the connection closed and retries on its backoff. A slot
  is held at most ``handshake_timeout`` for the handshake and as long again for the first
  request to begin (not ``idle_timeout``).

After any of those refusals the server answers (through ``error_response(status,
message)``, so each user keeps its error body format), says ``connection: close`` and
closes; after a 408 or 413 it first reads and drops what the peer still sends for a
moment (so the peer reads the answer rather than a connection reset). Keep-alive is kept when both sides allow it and
``Limits.keep_alive`` is true; otherwise the response says ``connection: close``.
Every response carries ``date``, a lower-case ``content-length`` (Greengrass V1's discovery
client demands the lower case) and ``content-type`` when the response has one. A handler
that raises gets a 500 from ``error_response`` and the failure is logged.

Client: ``await fetch(host, port, method, target, headers=..., body=..., ssl_context=...,
timeout=..., max_body=...) -> Reply``: one request on a fresh connection, the whole
exchange within ``timeout``; a reply body over ``max_body`` is refused. Over TLS the reply
says whether the session was resumed and carries the session to offer next time
(``Reply.tls_session``; a context whose ``wrap_bio`` offers it, such as
``tlscontext.ResumingContext``, resumes it).

Errors: ``HTTPError`` is the one exception type. The client raises it for every failure
(DNS, refused connection, TLS, a reply that is not HTTP, a truncated or oversized body,
the deadline) with a message for humans; HTTP error statuses are not failures (read
``Reply.status``). The server uses it for a peer's bad request, with ``status`` the status
answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import h11

log = logging.getLogger(__name__)

READ_CHUNK: Final = 64 * 1024
#: How long closing a connection may take (a TLS close_notify) before it is aborted.
CLOSE_TIMEOUT: Final = 2.0
#: After refusing a request: how long and how much of the rest of it is read and dropped,
#: so that the peer reads the refusal instead of a connection reset.
LINGER_SECONDS: Final = 1.0
LINGER_BYTES: Final = 4 * 1024 * 1024

_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)


class HTTPError(Exception):
    """An HTTP exchange failed; the message says why and what to look at.

    ``status`` is the status a server answered the peer with (400, 408, 413, 431), None for
    client-side failures; ``timed_out`` says the client's deadline passed."""

    def __init__(self, message: str, *, status: int | None = None, timed_out: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.timed_out = timed_out


def http_date(now: float) -> str:
    """RFC 9110 IMF-fixdate of ``now`` (seconds since the epoch), locale-independent."""
    t = time.gmtime(now)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def merge_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """A header list as a dict with lower-case names; repeated names joined with ", "."""
    merged: dict[str, str] = {}
    for name, value in headers:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        merged[key] = f"{merged[key]}, {text}" if key in merged else text
    return merged


def content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length of h11 headers (h11 has validated it), if there is one."""
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a connection; abort it if the peer does not finish closing in time."""
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


# ---- server ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection of a ``Server`` may take."""

    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 1024 * 1024
    #: seconds a connection may wait before a request begins (new or kept alive)
    idle_timeout: float = 60.0
    #: seconds a request may take to arrive completely once its first byte came
    request_timeout: float = 30.0
    keep_alive: bool = True
    #: TLS handshake bound (only with an ``ssl_context``)
    handshake_timeout: float = 15.0
    backlog: int = 256
    #: connections in their TLS handshake or first request at once (0: no limit; only
    #: with an ``ssl_context``: a plain connection costs next to nothing to accept)
    max_pending: int = 0
    #: seconds a connection over ``max_pending`` waits for a slot before it is closed
    pending_wait: float = 1.0


@dataclass(slots=True)
class ServerStats:
    """What a ``Server`` accepted, handshook and shed (for status pages and benches)."""

    accepted: int = 0
    #: TLS handshakes completed, and of those the resumed ones (a session ticket)
    handshakes: int = 0
    resumed: int = 0
    handshake_failures: int = 0
    #: connections closed before their handshake: no slot within ``pending_wait``
    shed: int = 0
    #: connections in their handshake or first request now
    pending: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "handshakes": self.handshakes,
            "resumed": self.resumed,
            "handshake_failures": self.handshake_failures,
            "shed": self.shed,
            "pending": self.pending,
        }


@dataclass(frozen=True, slots=True)
class Request:
    """A complete request as a handler sees it."""

    method: str
    #: the request target as sent (percent-escapes not decoded)
    target: str
    #: header names lower case, in the order sent
    headers: tuple[tuple[str, str], ...]
    body: bytes
    #: the peer's address (``peername``)
    peer: Any = None
    #: the TLS connection (for the peer certificate), None on plain TCP
    tls: ssl.SSLObject | None = None

    @property
    def path(self) -> str:
        """The target without its query."""
        return self.target.split("?", 1)[0]

    def header(self, name: str, default: str = "") -> str:
        """The first header called ``name`` (lower case), or ``default``."""
        for key, value in self.headers:
            if key == name:
                return value
        return default


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    #: further headers (``content-length``, ``date`` and ``content-type`` are added)
    headers: tuple[tuple[str, str], ...] = ()
    #: the reason phrase; None = the standard one
    reason: str | None = None


Handler = Callable[[Request], Awaitable[Response]]
ErrorResponse = Callable[[int, str], Response]


def plain_error(status: int, message: str) -> Response:
    """The default error body: the message as text."""
    return Response(status, f"{message}\n".encode(), "text/plain; charset=utf-8")


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


@dataclass
class _DateCache:
    second: int = -1
    value: bytes = b""

    def now(self) -> bytes:
        now = time.time()
        if int(now) != self.second:
            self.second = int(now)
            self.value = http_date(now).encode()
        return self.value


def response_head(response: Response, date: bytes, *, close: bool) -> h11.Response:
    headers: list[tuple[bytes, bytes]] = []
    if response.content_type is not None:
        headers.append((b"content-type", response.content_type.encode("latin-1")))
    headers.append((b"content-length", str(len(response.body)).encode()))
    headers.append((b"date", date))
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    if close:
        headers.append((b"connection", b"close"))
    reason = response.reason if response.reason is not None else _reason(response.status)
    return h11.Response(status_code=response.status, headers=headers, reason=reason.encode())


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    conn: h11.Connection
    peer: Any
    tls: ssl.SSLObject | None
    served: int = 0
    #: the connection holds one of the server's pending slots (until its first answer)
    slot: asyncio.Semaphore | None = None


class Server:
    """An asyncio HTTP/1.1 server (TLS with ``ssl_context``) calling one handler."""

    def __init__(
        self,
        handler: Handler,
        *,
        limits: Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
        error_response: ErrorResponse = plain_error,
        name: str = "http",
    ) -> None:
        self.handler = handler
        self.limits = limits if limits is not None else Limits()
        self.ssl_context = ssl_context
        self.error_response = error_response
        self.name = name
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._date = _DateCache()
        self.stats = ServerStats()
        #: with TLS and ``max_pending``: the handshake waits for a slot (FIFO)
        self._slots: asyncio.Semaphore | None = None
        if ssl_context is not None and self.limits.max_pending > 0:
            self._slots = asyncio.Semaphore(self.limits.max_pending)

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        # with a pending limit the handshake is ours to start (``_admit``), after a slot
        tls_here = self.ssl_context is not None and self._slots is None
        server = await asyncio.start_server(
            self._accept,
            host,
            port,
            ssl=self.ssl_context if tls_here else None,
            backlog=self.limits.backlog,
            ssl_handshake_timeout=self.limits.handshake_timeout if tls_here else None,
        )
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        log.debug("http11.listening server=%s host=%s port=%s", self.name, bound[0], bound[1])
        return str(bound[0]), int(bound[1])

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.stats.accepted += 1
        slot: asyncio.Semaphore | None = None
        connection: _Connection | None = None
        try:
            if self._slots is not None:
                # the ClientHello stays in the socket until the handshake starts: read into
                # the plain stream now, it would be lost to the TLS layer start_tls adds
                transport = writer.transport
                assert isinstance(transport, asyncio.ReadTransport)  # a socket's: both ways
                transport.pause_reading()
                if not await self._admit(self._slots):
                    writer.transport.abort()  # no handshake, no linger: the cheapest "no"
                    return
                slot = self._slots
                self.stats.pending += 1
                await self._handshake(writer)
            else:
                self._count_handshake(writer.get_extra_info("ssl_object"))
            connection = _Connection(
                reader,
                writer,
                h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes),
                writer.get_extra_info("peername"),
                writer.get_extra_info("ssl_object"),
                slot=slot,
            )
            await self._serve(connection)
        except (OSError, EOFError, h11.ProtocolError) as exc:  # ssl.SSLError is an OSError
            log.debug("http11.connection_ended server=%s error=%r", self.name, exc)
        finally:
            held = connection.slot if connection is not None else slot
            if held is not None:  # still held: no answer went out
                self._release(held)
            self._connections.discard(task)
            await close_writer(writer)

    async def _admit(self, slots: asyncio.Semaphore) -> bool:
        """A pending slot within ``pending_wait`` (FIFO among the waiting), or False."""
        try:
            async with asyncio.timeout(self.limits.pending_wait):
                await slots.acquire()
        except TimeoutError:
            self.stats.shed += 1
            if self.stats.shed == 1 or self.stats.shed % 1000 == 0:
                log.warning(
                    "http11.shed server=%s total=%d max_pending=%d",
                    self.name,
                    self.stats.shed,
                    self.limits.max_pending,
                )
            return False
        return True

    def _release(self, slot: asyncio.Semaphore) -> None:
        self.stats.pending -= 1
        slot.release()

    async def _handshake(self, writer: asyncio.StreamWriter) -> None:
        assert self.ssl_context is not None
        try:
            await writer.start_tls(
                self.ssl_context, ssl_handshake_timeout=self.limits.handshake_timeout
            )
        except (OSError, TimeoutError) as exc:
            self.stats.handshake_failures += 1
            raise OSError(f"TLS handshake: {exc!r}") from exc
        self._count_handshake(writer.get_extra_info("ssl_object"))

    def _count_handshake(self, tls: ssl.SSLObject | None) -> None:
        if tls is None:
            return
        self.stats.handshakes += 1
        if tls.session_reused:
            self.stats.resumed += 1

    async def _serve(self, c: _Connection) -> None:
        while True:
            try:
                request = await self._read_request(c)
            except HTTPError as exc:
                log.info(
                    "http11.refused server=%s peer=%s status=%s reason=%s",
                    self.name,
                    c.peer,
                    exc.status,
                    exc.message,
                )
                if exc.status is not None and c.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(c, self.error_response(exc.status, exc.message), close=True)
                    if exc.status in (408, 413):  # the peer may still be sending
                        await self._linger(c.reader)
                return
            if request is None:
                return
            response = await self._respond(request)
            close = not self.limits.keep_alive or c.conn.their_state is not h11.DONE
            await self._send(c, response, close=close)
            c.served += 1
            if c.slot is not None:  # answered: a kept-alive connection waits without one
                self._release(c.slot)
                c.slot = None
            if h11.MUST_CLOSE in (c.conn.our_state, c.conn.their_state):
                return
            c.conn.start_next_cycle()

    async def _respond(self, request: Request) -> Response:
        try:
            return await self.handler(request)
        except Exception:
            log.exception(
                "http11.handler_failed server=%s method=%s path=%s",
                self.name,
                request.method,
                request.path,
            )
            return self.error_response(500, "internal error")

    async def _read_request(self, c: _Connection) -> Request | None:
        """The next complete request; None when the peer closed or stayed idle."""
        limits = self.limits
        loop = asyncio.get_running_loop()
        head: h11.Request | None = None
        body = bytearray()
        started = False
        try:
            # a connection holding a pending slot must begin its request as soon as a
            # handshake would end: it may not sit on the slot for the whole idle time
            idle = limits.handshake_timeout if c.slot is not None else limits.idle_timeout
            async with asyncio.timeout(idle) as deadline:
                while True:
                    event = c.conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await c.reader.read(READ_CHUNK)
                        if data and not started:
                            started = True
                            deadline.reschedule(loop.time() + limits.request_timeout)
                        c.conn.receive_data(data)
                    elif isinstance(event, h11.Request):
                        if not started:  # pipelined: it was already buffered
                            started = True
                            deadline.reschedule(loop.time() + limits.request_timeout)
                        if _head_size(event) > limits.max_header_bytes:
                            raise HTTPError(
                                f"request head over {limits.max_header_bytes} bytes", status=431
                            )
                        head = event
                        declared = content_length(event.headers)
                        if declared is not None and declared > limits.max_body_bytes:
                            raise HTTPError(_body_over(limits.max_body_bytes), status=413)
                    elif isinstance(event, h11.Data):
                        body += event.data
                        if len(body) > limits.max_body_bytes:
                            raise HTTPError(_body_over(limits.max_body_bytes), status=413)
                    elif isinstance(event, h11.EndOfMessage):
                        assert head is not None  # h11 gives the head first
                        return _request(head, bytes(body), c)
                    else:  # ConnectionClosed
                        return None
        except TimeoutError:
            if not started:
                return None
            raise HTTPError(
                f"the request was not complete within {limits.request_timeout:g} s", status=408
            ) from None
        except h11.RemoteProtocolError as exc:
            if c.conn.their_state is h11.CLOSED or not started:
                return None  # closed mid-request, or garbage after the last response
            raise HTTPError(f"malformed request: {exc}", status=exc.error_status_hint) from exc

    async def _send(self, c: _Connection, response: Response, *, close: bool) -> None:
        head = response_head(response, self._date.now(), close=close)
        data = c.conn.send(head) or b""
        if response.body:
            data += c.conn.send(h11.Data(data=response.body)) or b""
        data += c.conn.send(h11.EndOfMessage()) or b""
        c.writer.write(data)
        await c.writer.drain()

    @staticmethod
    async def _linger(reader: asyncio.StreamReader) -> None:
        """Read and drop what the peer still sends, briefly, before the connection closes."""
        dropped = 0
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(LINGER_SECONDS):
                while dropped < LINGER_BYTES:
                    data = await reader.read(READ_CHUNK)
                    if not data:
                        return
                    dropped += len(data)


def _head_size(head: h11.Request) -> int:
    """About what the head took on the wire (h11 only bounds a head read in pieces)."""
    return len(head.target) + sum(len(name) + len(value) + 4 for name, value in head.headers)


def _body_over(limit: int) -> str:
    return f"request body over {limit} bytes: send at most {limit} bytes"


def _request(head: h11.Request, body: bytes, c: _Connection) -> Request:
    return Request(
        method=head.method.decode("ascii"),
        target=head.target.decode("latin-1"),
        headers=tuple(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in head.headers
        ),
        body=body,
        peer=c.peer,
        tls=c.tls,
    )


# ---- client ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete reply, whatever its status."""

    status: int
    #: h11's header list (names lower case)
    headers: tuple[tuple[bytes, bytes], ...] = field(default=())
    content: bytes = b""
    #: TLS: whether the handshake resumed a session, and the session to offer next time
    tls_resumed: bool = False
    tls_session: ssl.SSLSession | None = None

    def header(self, name: bytes) -> bytes | None:
        """The first header called ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


async def fetch(
    host: str,
    port: int,
    method: str,
    target: str,
    *,
    headers: Iterable[tuple[str, str]],
    body: bytes | None = None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float,  # noqa: ASYNC109 - the whole exchange is bounded, not one await
    max_body: int,
) -> Reply:
    """One request on a new connection (TLS with ``ssl_context``), the whole exchange within
    ``timeout`` seconds; ``HTTPError`` on any failure (see the module's docstring)."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=ssl_context,
                server_hostname=(server_hostname or host) if ssl_context else None,
            )
            head = h11.Request(method=method, target=target, headers=list(headers))
            tls = ssl_context is not None
            reply = await _exchange(reader, writer, head, body, max_body, tls=tls)
            tls_object = writer.get_extra_info("ssl_object")
            if tls_object is None:
                return reply
            # read after the reply: TLS 1.3 tickets arrive after the handshake
            return dataclasses.replace(
                reply, tls_resumed=tls_object.session_reused, tls_session=tls_object.session
            )
    except TimeoutError:
        raise HTTPError(f"no complete reply within {timeout:g} s", timed_out=True) from None
    except ssl.SSLError as exc:
        raise HTTPError(f"TLS: {exc}") from exc
    except OSError as exc:
        raise HTTPError(str(exc) or type(exc).__name__) from exc
    except h11.RemoteProtocolError as exc:
        raise HTTPError(f"invalid reply: {exc}") from exc
    except h11.LocalProtocolError as exc:
        raise HTTPError(f"invalid request: {exc}") from exc
    finally:
        if writer is not None:
            await close_writer(writer)


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    head: h11.Request,
    body: bytes | None,
    max_body: int,
    *,
    tls: bool,
) -> Reply:
    conn = h11.Connection(h11.CLIENT)
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
            data = await reader.read(READ_CHUNK)
            if not data and response is None:
                raise HTTPError(_closed_without_reply(tls))
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
            return Reply(response.status_code, tuple(response.headers), bytes(content))
        elif isinstance(event, h11.ConnectionClosed):
            raise HTTPError(_closed_without_reply(tls))
        # InformationalResponse (1xx): the final response follows


def _closed_without_reply(tls: bool) -> str:
    message = "the server closed the connection without a reply"
    if tls:
        # with TLS 1.3 the client's handshake ends before the server has checked the client
        # certificate; a server that rejects it may just close (asyncio's servers do)
        message += " (did it reject the TLS client certificate?)"
    return message


def _too_large(limit: int, detail: str) -> HTTPError:
    return HTTPError(f"the reply body exceeds the {limit} byte limit ({detail})")
