"""Test helpers for the core: signed deployment documents and an in-memory cloud API."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from hedgerow import pki
from hedgerow.core.cloudapi import SignedCertificate, SignedDocument
from hedgerow.core.errors import CloudAPIError


def function_zip(
    name: str = "fn", code: str = "def handler(event, context):\n    return event\n"
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"{name}.py", code)
    return buf.getvalue()


def function_entry(name: str, artifact: bytes, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "version": 1,
        "handler": f"{name}.handler",
        "runtime": "python",
        "pinned": False,
        "memory_mb": 128,
        "timeout_s": 3.0,
        "max_concurrency": 1,
        "environment": {},
        "encoding": "json",
        "run_as": None,
        "artifact": {"sha256": hashlib.sha256(artifact).hexdigest(), "size": len(artifact)},
    }
    entry.update(extra)
    return entry


def document(
    deployment_id: str,
    *,
    core: str = "pi-1",
    group: str = "factory-1",
    things: tuple[str, ...] = (),
    functions: tuple[Mapping[str, Any], ...] = (),
    subscriptions: tuple[tuple[str, str, str], ...] = (),
    settings: Mapping[str, Any] | None = None,
    created_at: str = "2026-11-26T00:00:00Z",
) -> str:
    return json.dumps(
        {
            "deployment_id": deployment_id,
            "group": group,
            "core": core,
            "created_at": created_at,
            "things": list(things),
            "functions": list(functions),
            "subscriptions": [{"source": s, "topic": t, "target": g} for s, t, g in subscriptions],
            "settings": dict(settings or {"open_broker": False}),
        }
    )


def sign(key: ed25519.Ed25519PrivateKey, text: str) -> str:
    return base64.b64encode(key.sign(text.encode())).decode()


def raw_verify_key(key: ed25519.Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key the deployment agent takes."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class FakeAPI:
    """The cloud's /core/v1 API in memory."""

    def __init__(
        self, signing_key: ed25519.Ed25519PrivateKey, group_ca: pki.Issued | None = None
    ) -> None:
        self.signing_key = signing_key
        self.group_ca = group_ca
        self.documents: dict[str, SignedDocument] = {}
        self.artifacts: dict[str, bytes] = {}
        self.latest: str | None = None
        self.revoked: list[str] = []
        self.connectivity_reports: list[list[tuple[str, int]]] = []
        self.certificate_requests: list[list[str]] = []
        self.offline = False

    def add(
        self, text: str, *, signature: str | None = None, artifacts: Mapping[str, bytes] = {}
    ) -> str:
        deployment_id = json.loads(text)["deployment_id"]
        self.documents[deployment_id] = SignedDocument(
            text, signature or sign(self.signing_key, text)
        )
        for data in artifacts.values():
            self.artifacts[hashlib.sha256(data).hexdigest()] = data
        self.latest = deployment_id
        return str(deployment_id)

    def _check(self, path: str) -> None:
        if self.offline:
            raise CloudAPIError("cloud unreachable", path)

    async def latest_deployment(self) -> str | None:
        self._check("latest")
        return self.latest

    async def deployment(self, deployment_id: str) -> SignedDocument:
        self._check("deployment")
        try:
            return self.documents[deployment_id]
        except KeyError:
            raise CloudAPIError("not found", "deployment", 404) from None

    async def artifact(self, sha256: str) -> bytes:
        self._check("artifact")
        try:
            return self.artifacts[sha256]
        except KeyError:
            raise CloudAPIError("not found", "artifact", 404) from None

    async def certificate(self, csr: bytes, hosts: list[str]) -> SignedCertificate:
        self._check("certificate")
        assert self.group_ca is not None
        self.certificate_requests.append(list(hosts))
        cert = pki.sign_csr(
            self.group_ca, csr, common_name="pi-1", unit="server", server_hosts=hosts
        )
        return SignedCertificate(pki.cert_to_pem(cert), (self.group_ca.cert_pem,))

    async def connectivity(self, endpoints: list[tuple[str, int]]) -> None:
        self._check("connectivity")
        self.connectivity_reports.append(endpoints)

    async def revocations(self) -> list[str]:
        self._check("revocations")
        return list(self.revoked)

    async def group_cas(self) -> list[bytes]:
        self._check("group-cas")
        assert self.group_ca is not None
        return [self.group_ca.cert_pem]

    async def server_date(self) -> str | None:
        return None
