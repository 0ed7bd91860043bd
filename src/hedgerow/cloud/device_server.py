"""Device HTTPS (mutual TLS): Greengrass V1 discovery and the cores' API, on ``hedgerow.http11``.

Not an ASGI server because every request needs the verified client certificate. Every
response carries a lower-case ``content-length`` and a non-empty JSON body (the V1
discovery client's parser demands both; see ``compat.md``).

Paths (the client certificate says who is asking):

* ``GET /greengrass/discover/thing/{name}`` — things; ``name`` must be the certificate's.
* ``POST /core/v1/certificate``, ``PUT /core/v1/connectivity``,
  ``GET /core/v1/deployments/latest``, ``GET /core/v1/deployments/{id}``,
  ``GET /core/v1/artifacts/{sha256}``, ``GET /core/v1/revocations``, ``GET /core/v1/things``,
  ``GET /core/v1/group-cas``, ``POST /core/v1/things/admit``,
  ``PUT /core/v1/support-bundles/{id}`` (a gzip'd tar the cloud asked for) — cores.
* ``POST /provision/v1/core``, ``POST /provision/v1/thing`` — claim certificates only (and
  a claim certificate opens nothing else: it is no registered identity).

Trust: the root CA, the claim CA, the registered device CAs and the devices' own registered
certificates (``DeviceTrustStore``: added to the live context as they are registered, so
new handshakes accept them at once; partial chains allowed, so a device's own certificate
is its own anchor). A device whose certificate a device CA signed is admitted just in time
at its first discovery.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from cryptography import x509

from hedgerow import http11, pki
from hedgerow.cloud import discovery, domain
from hedgerow.cloud.api.cores import Connectivity
from hedgerow.cloud.api.edge import decode_json_object
from hedgerow.cloud.api.parsing import checked, parse
from hedgerow.cloud.domain import CertificateKind
from hedgerow.cloud.errors import (
    CloudError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthorized,
)
from hedgerow.cloud.services import CloudServices
from hedgerow.contract.errors import ContractError
from hedgerow.contract.provisioning import PATHS, ClaimKind, ProvisionRequest

log = logging.getLogger(__name__)

#: OpenSSL's X509_V_FLAG_NO_CHECK_TIME: expired certificates pass the handshake so the
#: device gets a JSON answer saying so (the identity check refuses them).
NO_CHECK_TIME = 0x200000
MAX_REQUEST_BODY = 1024 * 1024
REQUEST_TIMEOUT = 30.0
HANDSHAKE_TIMEOUT = 15.0
LISTEN_BACKLOG = 1024
DEVICE_LIMITS = http11.Limits(
    max_header_bytes=64 * 1024,
    max_body_bytes=MAX_REQUEST_BODY,
    idle_timeout=60.0,
    request_timeout=REQUEST_TIMEOUT,
    handshake_timeout=HANDSHAKE_TIMEOUT,
    backlog=LISTEN_BACKLOG,
)
DISCOVERY_PREFIX = "/greengrass/discover/thing/"
PROVISION_PREFIX = "/provision/"


def device_ssl_context(cert_file: str, key_file: str, ca_file: str) -> ssl.SSLContext:
    ctx = pki.server_context(cert_file, key_file, ca_file, require_client_cert=True)
    try:
        ctx.verify_flags |= NO_CHECK_TIME  # type: ignore[assignment]
    except (ValueError, OverflowError):  # an OpenSSL without the flag: expired fails the handshake
        log.warning("device_server.no_check_time_unavailable")
    # a device's own registered certificate is a trust anchor by itself
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


class DeviceTrustStore:
    """The certificates the device HTTPS server trusts besides the root CA, loaded into
    its live context (a ``services.DeviceTrust``). OpenSSL cannot forget one: a revoked
    device CA or certificate is refused by the identity check instead."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self._loaded: set[str] = set()

    def add(self, pems: Sequence[str]) -> None:
        fresh = [pem for pem in pems if pem not in self._loaded]
        for pem in fresh:
            try:
                self.context.load_verify_locations(cadata=pem)
            except ssl.SSLError as exc:
                log.warning("device_server.trust_refused error=%s", exc)
                continue
            self._loaded.add(pem)
        if fresh:
            log.info("device_server.trust_added count=%d total=%d", len(fresh), len(self._loaded))


Response = http11.Response


def json_response(status: int, body: Any) -> Response:
    return Response(
        status,
        discovery.encode(body) if isinstance(body, dict) else json.dumps(body).encode(),
        "application/json",
        reason=discovery.REASONS.get(status, "Error"),
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


def peer_address(peer: Any) -> str:
    """A socket's peer name as the claims' audit shows it: ``host:port``, ``[v6]:port``."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "" if peer is None else str(peer)


@dataclass(frozen=True)
class ServerCertificateRequest:
    """``POST /core/v1/certificate``: the core's CSR and the names it answers to."""

    csr: str = checked(_csr)
    hosts: list[str] = checked(domain.validate_hosts, default_factory=list)


@dataclass(frozen=True)
class AdmitRequest:
    """``POST /core/v1/things/admit``: the certificate (PEM) a device presented to the core."""

    certificate: str


def _refusal(status: int, message: str) -> Response:
    """The answer to a request refused before it reached a handler (too large, malformed)."""
    return json_response(status, discovery.error_body(status, message))


class DeviceServer:
    """An asyncio TLS server; ``async with DeviceServer(...)`` then ``await start(host, port)``.

    ``max_pending``: connections in their TLS handshake or first request at once (0: no
    limit); one over it waits ``pending_wait`` seconds for a slot, then is closed before
    its handshake (the device retries on its backoff). TLS 1.3 session tickets are issued
    (OpenSSL's default, two per handshake): a device that offers one back resumes without a
    certificate exchange, and every request is still authorized from the certificate the
    session carries (``_dispatch``)."""

    def __init__(
        self,
        services: CloudServices,
        ssl_context: ssl.SSLContext,
        *,
        max_pending: int = 0,
        pending_wait: float = 8.0,
    ) -> None:
        self.services = services
        self.ssl_context = ssl_context
        self._http = http11.Server(
            self._request,
            limits=dataclasses.replace(
                DEVICE_LIMITS, max_pending=max_pending, pending_wait=pending_wait
            ),
            ssl_context=ssl_context,
            error_response=_refusal,
            name="device_server",
        )

    async def __aenter__(self) -> DeviceServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def stats(self) -> http11.ServerStats:
        """Accepted, handshakes (resumed), shed connections (``/api/v1/status``)."""
        return self._http.stats

    async def start(self, host: str, port: int) -> tuple[str, int]:
        bound = await self._http.start(host, port)
        log.info("device_server.listening host=%s port=%s", bound[0], bound[1])
        return bound

    async def close(self) -> None:
        await self._http.close()

    async def _request(self, request: http11.Request) -> Response:
        cert = pki.peer_certificate(request.tls)
        response = await self._dispatch(
            request.method, request.target, request.body, cert, peer_address(request.peer)
        )
        log.debug(
            "device_server.request peer=%s method=%s path=%s status=%s",
            request.peer,
            request.method,
            request.target,
            response.status,
        )
        return response

    async def _dispatch(
        self, method: str, target: str, body: bytes, cert: x509.Certificate | None, peer: str = ""
    ) -> Response:
        path = target.split("?", 1)[0]
        is_discovery = path.startswith(DISCOVERY_PREFIX)
        try:
            if path.startswith(PROVISION_PREFIX):
                return await self._provision(method, path, body, cert, peer)
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
        try:
            return json_response(200, await self.services.devices.discover_as(cert, thing))
        except Forbidden:
            # not registered: a device CA's certificate is admitted now, once
            if not await self.services.claims.admit_just_in_time(cert, thing):
                raise
        return json_response(200, await self.services.devices.discover_as(cert, thing))

    async def _provision(
        self, method: str, path: str, body: bytes, cert: x509.Certificate | None, peer: str
    ) -> Response:
        """``POST /provision/v1/{kind}`` with a claim certificate."""
        kind = {p: kind for kind, p in PATHS.items()}.get(path)
        if kind is None:
            raise NotFound("path", path, f"no such path {path}")
        if method != "POST":
            raise InvalidInput(f"method {method} is not allowed on {path}")
        if cert is None:
            raise Unauthorized("a claim certificate is required")
        try:
            request = ProvisionRequest.from_json(body)
        except ContractError as exc:
            raise InvalidInput(str(exc), field=exc.field) from exc
        response = await self.services.claims.provision(cert, ClaimKind(kind), request, peer)
        return Response(200, response.to_json().encode(), "application/json")

    async def _core_api(self, core: str, method: str, path: str, body: bytes) -> Response:
        routes: dict[tuple[str, str], Callable[[], Awaitable[Response]]] = {
            ("POST", "certificate"): lambda: self._certificate(core, body),
            ("PUT", "connectivity"): lambda: self._connectivity(core, body),
            ("GET", "deployments/latest"): lambda: self._latest(core),
            ("GET", "revocations"): lambda: self._revocations(),
            ("GET", "group-cas"): lambda: self._json(self.services.devices.core_group_cas(core)),
            ("GET", "things"): lambda: self._json(self.services.membership.core_things(core)),
            ("POST", "things/admit"): lambda: self._admit(core, body),
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
        if method == "PUT" and path.startswith("support-bundles/"):
            bundle = await self.services.support_bundles.receive(
                core, path[len("support-bundles/") :], body
            )
            return json_response(200, {"request_id": bundle.request_id, "size": bundle.size})
        if method == "GET" and path.startswith("artifacts/"):
            data = await self.services.devices.core_artifact(core, path[len("artifacts/") :])
            return Response(200, data, "application/zip")
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

    async def _admit(self, core: str, body: bytes) -> Response:
        request = parse(AdmitRequest, decode_json_object(body))
        return json_response(
            200, await self.services.claims.admit_for_core(core, request.certificate)
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
