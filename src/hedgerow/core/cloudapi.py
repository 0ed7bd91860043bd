"""The cloud's device-HTTPS API as the core uses it (``/core/v1/...``, mutual TLS).

``CloudAPI`` is the interface the deployment agent and the certificate manager need;
``HttpCloudAPI`` talks to the real cloud with the core's small h11 client
(``hedgerow.core.https``, one connection per call); tests pass an in-memory fake.
"""

from __future__ import annotations

import json
import logging
import ssl
from dataclasses import dataclass
from typing import Any, Protocol

from hedgerow.contract.errors import ContractError
from hedgerow.contract.provisioning import Membership

from .errors import CloudAPIError
from .https import HTTPSError, Response, request

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SignedDocument:
    document: str
    signature: str


@dataclass(frozen=True, slots=True)
class SignedCertificate:
    certificate: bytes
    group_cas: tuple[bytes, ...]


class CloudAPI(Protocol):
    async def latest_deployment(self) -> str | None: ...

    async def deployment(self, deployment_id: str) -> SignedDocument: ...

    async def artifact(self, sha256: str) -> bytes: ...

    async def certificate(self, csr: bytes, hosts: list[str]) -> SignedCertificate: ...

    async def connectivity(self, endpoints: list[tuple[str, int]]) -> None: ...

    async def revocations(self) -> list[str]: ...

    async def things(self) -> Membership: ...

    async def admit(self, certificate_pem: str) -> Membership: ...

    async def group_cas(self) -> list[bytes]: ...

    async def server_date(self) -> str | None: ...

    async def upload_support_bundle(self, request_id: str, data: bytes) -> None: ...


class HttpCloudAPI:
    """The cloud over mutual TLS; every failure becomes ``CloudAPIError`` (path, status)."""

    def __init__(self, base_url: str, ssl_context: ssl.SSLContext, timeout: float = 15.0) -> None:
        # one connection per call, none kept idle: the core calls rarely, and an idle TLS
        # connection per core would only hold memory on both sides (and delay the cloud's
        # shutdown)
        self._base_url = base_url
        self._ssl_context = ssl_context
        self._timeout = timeout

    async def aclose(self) -> None:
        """Nothing to release (no connection outlives its call); kept for the interface."""

    async def _request(
        self, method: str, path: str, json: Any = None, content: bytes | None = None
    ) -> Response:
        try:
            response = await request(
                self._base_url,
                method,
                path,
                ssl_context=self._ssl_context,
                json=json,
                content=content,
                content_type="application/gzip" if content is not None else "application/json",
                timeout=self._timeout,
            )
        except HTTPSError as exc:
            raise CloudAPIError(f"{method} {path}: {exc}", path) from exc
        if response.status >= 400 and response.status != 404:
            raise CloudAPIError(
                f"{method} {path}: HTTP {response.status} {response.text[:200]}",
                path,
                response.status,
            )
        return response

    async def _json(self, method: str, path: str, json: Any = None) -> Any:
        response = await self._request(method, path, json)
        if response.status == 404:
            raise CloudAPIError(f"{method} {path}: not found", path, 404)
        try:
            return response.json()
        except ValueError as exc:
            raise CloudAPIError(
                f"{method} {path}: the reply is not JSON", path, response.status
            ) from exc

    async def latest_deployment(self) -> str | None:
        path = "/core/v1/deployments/latest"
        response = await self._request("GET", path)
        if response.status == 404:
            return None
        try:
            value = response.json().get("deployment_id")
        except (ValueError, AttributeError) as exc:
            raise CloudAPIError("the latest deployment reply is not a JSON object", path) from exc
        return str(value) if value else None

    async def deployment(self, deployment_id: str) -> SignedDocument:
        path = f"/core/v1/deployments/{deployment_id}"
        data = await self._json("GET", path)
        if not isinstance(data, dict) or not isinstance(data.get("document"), str):
            raise CloudAPIError("the deployment reply has no document", path)
        return SignedDocument(data["document"], str(data.get("signature", "")))

    async def artifact(self, sha256: str) -> bytes:
        path = f"/core/v1/artifacts/{sha256}"
        response = await self._request("GET", path)
        if response.status == 404:
            raise CloudAPIError(f"artifact {sha256} not found", path, 404)
        return response.content

    async def certificate(self, csr: bytes, hosts: list[str]) -> SignedCertificate:
        path = "/core/v1/certificate"
        data = await self._json("POST", path, {"csr": csr.decode(), "hosts": hosts})
        try:
            return SignedCertificate(
                data["certificate"].encode(), tuple(ca.encode() for ca in data["group_cas"])
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise CloudAPIError("the certificate reply lacks certificate/group_cas", path) from exc

    async def connectivity(self, endpoints: list[tuple[str, int]]) -> None:
        body = {"endpoints": [{"host": h, "port": p} for h, p in endpoints]}
        await self._json("PUT", "/core/v1/connectivity", body)

    async def revocations(self) -> list[str]:
        path = "/core/v1/revocations"
        data = await self._json("GET", path)
        try:
            return [str(f) for f in data["fingerprints"]]
        except (KeyError, TypeError) as exc:
            raise CloudAPIError("the revocations reply lacks fingerprints", path) from exc

    async def things(self) -> Membership:
        """The things of the core's group (the devices it admits) and the certificates it
        trusts for them besides the root CA."""
        path = "/core/v1/things"
        data = await self._json("GET", path)
        try:
            return Membership.from_json(json.dumps(data))
        except ContractError as exc:
            raise CloudAPIError(f"the things reply is unusable: {exc}", path) from exc

    async def admit(self, certificate_pem: str) -> Membership:
        """Ask the cloud to admit the device that presented ``certificate_pem`` (a device
        CA of the group signed it, no discovery came first): the group's membership."""
        path = "/core/v1/things/admit"
        data = await self._json("POST", path, {"certificate": certificate_pem})
        try:
            return Membership.from_json(json.dumps(data))
        except ContractError as exc:
            raise CloudAPIError(f"the admit reply is unusable: {exc}", path) from exc

    async def group_cas(self) -> list[bytes]:
        """The CAs of the core's group (PEM), newest first."""
        path = "/core/v1/group-cas"
        data = await self._json("GET", path)
        try:
            cas = [ca.encode() for ca in data["group_cas"]]
        except (KeyError, TypeError, AttributeError) as exc:
            raise CloudAPIError("the group-cas reply lacks group_cas", path) from exc
        if not cas:
            raise CloudAPIError("the group-cas reply lists no CA", path)
        return cas

    async def server_date(self) -> str | None:
        response = await self._request("GET", "/core/v1/deployments/latest")
        date = response.headers.get("date")
        return str(date) if date else None

    async def upload_support_bundle(self, request_id: str, data: bytes) -> None:
        """``PUT /core/v1/support-bundles/{id}``: the bundle the cloud asked for."""
        path = f"/core/v1/support-bundles/{request_id}"
        response = await self._request("PUT", path, content=data)
        if response.status == 404:
            raise CloudAPIError(f"PUT {path}: the cloud does not know this request", path, 404)
