"""Device HTTPS (mutual TLS): Greengrass V1 discovery and the cores' API, over h11.

Not an ASGI server because every request needs the verified client certificate. Every
response carries a lower-case ``content-length`` and a non-empty JSON body (the V1
discovery client's parser demands both; see ``compat.md``).

Paths (the client certificate says who is asking):

* ``GET /greengrass/discover/thing/{name}`` — things; ``name`` must be the certificate's.
* ``POST /core/v1/certificate``, ``PUT /core/v1/connectivity``,
  ``GET /core/v1/deployments/latest``, ``GET /core/v1/deployments/{id}``,
  ``GET /core/v1/artifacts/{sha256}``, ``GET /core/v1/revocations``, ``GET /core/v1/things``,
  ``GET /core/v1/group-cas`` — cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import h11
from cryptography import x509

from hedgerow import pki
from hedgerow.cloud import discovery, domain
from hedgerow.cloud.api.cores import Connectivity
from hedgerow.cloud.api.edge import decode_json_object
from hedgerow.cloud.api.parsing import checked, parse
from hedgerow.cloud.domain import CertificateKind
from hedgerow.cloud.errors import (
    CloudError,
    InvalidInput,
    NotFound,
    Unauthorized,
)
from hedgerow.cloud.services import CloudServices

log = logging.getLogger(__name__)

#: OpenSSL's X509_V_FLAG_NO_CHECK_TIME: expired certificates pass the handshake so the
#: device gets a JSON answer saying so (the identity check refuses them).
NO_CHECK_TIME = 0x200000
MAX_REQUEST_BODY = 1024 * 1024
READ_CHUNK = 65536
REQUEST_TIMEOUT = 30.0
HANDSHAKE_TIMEOUT = 15.0
LISTEN_BACKLOG = 1024
DISCOVERY_PREFIX = "/greengrass/discover/thing/"


def device_ssl_context(cert_file: str, key_file: str, ca_file: str) -> ssl.SSLContext:
    ctx = pki.server_context(cert_file, key_file, ca_file, require_client_cert=True)
    try:
        ctx.verify_flags |= NO_CHECK_TIME  # type: ignore[assignment]
    except (ValueError, OverflowError):  # an OpenSSL without the flag: expired fails the handshake
        log.warning("device_server.no_check_time_unavailable")
    return ctx


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: bytes = b"application/json"


def json_response(status: int, body: Any) -> Response:
    return Response(
        status, discovery.encode(body) if isinstance(body, dict) else json.dumps(body).encode()
    )


def error_response(exc: CloudError, *, discovery_request: bool) -> Response:
    status = exc.status
    if discovery_request and status == 403:
        status = 401  # the V1 SDKs know 401 (DiscoveryUnauthorizedException), not 403
    return json_response(status, discovery.error_body(status, exc.message))


def _csr(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInput("csr must be a PEM string", field="csr")
    return value


@dataclass(frozen=True)
class ServerCertificateRequest:
    """``POST /core/v1/certificate``: the core's CSR and the names it answers to."""

    csr: str = checked(_csr)
    hosts: list[str] = checked(domain.validate_hosts, default_factory=list)


class DeviceServer:
    """An asyncio TLS server; ``async with DeviceServer(...)`` then ``await start(host, port)``."""

    def __init__(self, services: CloudServices, ssl_context: ssl.SSLContext) -> None:
        self.services = services
        self.ssl_context = ssl_context
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> DeviceServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        server = await asyncio.start_server(
            self._accept,
            host,
            port,
            ssl=self.ssl_context,
            backlog=LISTEN_BACKLOG,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
        )
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        log.info("device_server.listening host=%s port=%s", bound[0], bound[1])
        return str(bound[0]), int(bound[1])

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        self._servers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve_connection(reader, writer)
        except (ConnectionError, TimeoutError, ssl.SSLError, h11.RemoteProtocolError) as exc:
            log.debug("device_server.connection_ended error=%s", exc)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        cert = pki.peer_certificate(writer.get_extra_info("ssl_object"))
        peer = writer.get_extra_info("peername")
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        while True:
            request, body, too_large = await self._read_request(conn, reader)
            if request is None:
                return
            target = request.target.decode("latin-1")
            method = request.method.decode()
            if too_large:
                response = json_response(
                    413, discovery.error_body(413, f"request body over {MAX_REQUEST_BODY} bytes")
                )
            else:
                response = await self._dispatch(method, target, body, cert)
            log.debug(
                "device_server.request peer=%s method=%s path=%s status=%s",
                peer,
                method,
                target,
                response.status,
            )
            await self._send(conn, writer, response)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE or too_large:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request | None, bytes, bool]:
        request: h11.Request | None = None
        chunks: list[bytes] = []
        size = 0
        too_large = False
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(reader.read(READ_CHUNK), REQUEST_TIMEOUT)
                conn.receive_data(data)
                if not data and conn.their_state is h11.IDLE:
                    return None, b"", False
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_REQUEST_BODY:
                    too_large = True
                else:
                    chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return request, b"".join(chunks), too_large
            elif isinstance(event, h11.ConnectionClosed):
                return None, b"", False

    @staticmethod
    async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, response: Response) -> None:
        reason = discovery.REASONS.get(response.status, "Error").encode()
        headers = [
            (b"content-type", response.content_type),
            (b"content-length", str(len(response.body)).encode()),
            # the core's `core check` compares its clock with this one
            (b"date", email.utils.formatdate(usegmt=True).encode()),
        ]
        data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        data += conn.send(h11.Data(data=response.body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        writer.write(data)
        await writer.drain()

    async def _dispatch(
        self, method: str, target: str, body: bytes, cert: x509.Certificate | None
    ) -> Response:
        path = target.split("?", 1)[0]
        is_discovery = path.startswith(DISCOVERY_PREFIX)
        try:
            if cert is None:
                raise Unauthorized("a client certificate is required")
            if is_discovery:
                if method != "GET":
                    raise InvalidInput("discovery takes GET")
                return await self._discover(unquote(path[len(DISCOVERY_PREFIX) :]), cert)
            if path.startswith("/core/v1/"):
                core = await self.services.identities.check_identity(
                    pki.fingerprint(cert), CertificateKind.CORE
                )
                return await self._core_api(core, method, path[len("/core/v1/") :], body)
            raise NotFound("path", path, f"no such path {path}")
        except CloudError as exc:
            log.info(
                "device_server.refused path=%s status=%s reason=%s", path, exc.status, exc.message
            )
            return error_response(exc, discovery_request=is_discovery)
        except Exception:
            log.exception("device_server.failed path=%s", path)
            return json_response(500, discovery.error_body(500, "internal error"))

    async def _discover(self, thing: str, cert: x509.Certificate) -> Response:
        return json_response(200, await self.services.devices.discover_as(cert, thing))

    async def _core_api(self, core: str, method: str, path: str, body: bytes) -> Response:
        routes: dict[tuple[str, str], Callable[[], Awaitable[Response]]] = {
            ("POST", "certificate"): lambda: self._certificate(core, body),
            ("PUT", "connectivity"): lambda: self._connectivity(core, body),
            ("GET", "deployments/latest"): lambda: self._latest(core),
            ("GET", "revocations"): lambda: self._revocations(),
            ("GET", "group-cas"): lambda: self._json(self.services.devices.core_group_cas(core)),
            ("GET", "things"): lambda: self._json(self.services.membership.core_things(core)),
        }
        handler = routes.get((method, path))
        if handler is not None:
            return await handler()
        if method == "GET" and path.startswith("deployments/"):
            return json_response(
                200,
                await self.services.deployments.document_for_core(
                    core, path[len("deployments/") :]
                ),
            )
        if method == "GET" and path.startswith("artifacts/"):
            data = await self.services.devices.core_artifact(core, path[len("artifacts/") :])
            return Response(200, data, b"application/zip")
        if any(p == path for _, p in routes):
            raise InvalidInput(f"method {method} is not allowed on /core/v1/{path}")
        raise NotFound("path", path, f"no such path /core/v1/{path}")

    @staticmethod
    async def _json(result: Awaitable[dict[str, Any]]) -> Response:
        return json_response(200, await result)

    async def _certificate(self, core: str, body: bytes) -> Response:
        request = parse(ServerCertificateRequest, decode_json_object(body))
        return json_response(
            200,
            await self.services.devices.sign_core_certificate(core, request.csr, request.hosts),
        )

    async def _connectivity(self, core: str, body: bytes) -> Response:
        connectivity = parse(Connectivity, decode_json_object(body))
        await self.services.cores.set_connectivity(core, connectivity.endpoints)
        return json_response(200, {})

    async def _latest(self, core: str) -> Response:
        latest = await self.services.deployments.latest_for_core(core)
        if latest is None:
            raise NotFound("deployment", core, f"core {core!r} has no deployment yet")
        return json_response(200, {"deployment_id": latest})

    async def _revocations(self) -> Response:
        return json_response(200, {"fingerprints": await self.services.certificates.revocations()})
