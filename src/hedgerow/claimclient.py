"""The device side of provisioning by claim, shared by the core and the thing SDK.

``provision(credential, request, timeout=)`` presents the claim certificate (mutual TLS,
trusting only the root CA in the claim credential) to ``POST /provision/v1/{kind}`` and
returns the contract's ``ProvisionResponse``. A network failure or a 5xx reply is tried
again with jittered backoff until ``timeout`` (a gateway's first boot may come before its
network); a refusal (4xx: the claim is used up, expired, revoked, the hook said no) is
final and raised at once as ``ClaimRefusedError`` with the cloud's reason.

The claim's key is written, 0600, only to a private temporary directory for the TLS
handshake (OpenSSL loads keys from files) and removed when the call returns.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from hedgerow import http11, tlscontext
from hedgerow.backoff import Backoff, BackoffPolicy
from hedgerow.contract.errors import ContractError
from hedgerow.contract.provisioning import (
    PATHS,
    ClaimCredential,
    ProvisionRequest,
    ProvisionResponse,
)

log = logging.getLogger(__name__)

#: One attempt's bound (the cloud signs a CSR and writes a few rows).
ATTEMPT_TIMEOUT = 30.0
MAX_REPLY = 256 * 1024
RETRY = BackoffPolicy(base=0.5, cap=15.0)


class ClaimError(Exception):
    """Provisioning by claim failed; the message says why and what to do."""


class ClaimRefusedError(ClaimError):
    """The cloud refused the claim (``status``, the cloud's ``reason``): trying again does
    not help."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"the cloud refused the claim ({status}): {reason}")
        self.status = status
        self.reason = reason


def read_credential(path: Path) -> ClaimCredential:
    try:
        return ClaimCredential.from_tar(path.read_bytes())
    except OSError as exc:
        raise ClaimError(f"cannot read the claim {path}: {exc.strerror}") from exc
    except ContractError as exc:
        raise ClaimError(f"{path}: {exc}") from exc


def _reason(body: bytes) -> str:
    try:
        data = json.loads(body)
        return str(data.get("message") or data.get("errorMessage") or data)
    except (ValueError, AttributeError):
        return body.decode(errors="replace")[:300] or "no reason given"


async def provision(
    credential: ClaimCredential,
    request: ProvisionRequest,
    *,
    timeout: float = 120.0,  # noqa: ASYNC109 - bounds every attempt together
) -> ProvisionResponse:
    """Provision with ``credential``: the identity the cloud registered for ``request``."""
    url = urlsplit(credential.https)
    if url.scheme != "https" or not url.hostname:
        raise ClaimError(f"the claim's endpoint {credential.https!r} is not an https:// URL")
    host, port = url.hostname, url.port or 443
    path = PATHS[credential.kind]
    body = request.to_json().encode()
    deadline = time.monotonic() + timeout
    backoff = Backoff(RETRY)
    with tempfile.TemporaryDirectory(prefix="hedgerow-claim-") as tmp:
        cert_file, key_file = Path(tmp) / "claim.cert.pem", Path(tmp) / "claim.key"
        cert_file.write_bytes(credential.certificate)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(credential.key)
        ctx = tlscontext.client_context(
            ca_data=credential.root_ca.decode(), cert_file=str(cert_file), key_file=str(key_file)
        )
        while True:
            left = deadline - time.monotonic()
            try:
                reply = await http11.fetch(
                    host,
                    port,
                    "POST",
                    path,
                    headers=[
                        ("Host", url.netloc),
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(body))),
                        ("Connection", "close"),
                    ],
                    body=body,
                    ssl_context=ctx,
                    timeout=max(1.0, min(ATTEMPT_TIMEOUT, left)),
                    max_body=MAX_REPLY,
                )
            except http11.HTTPError as exc:
                problem = f"cannot reach {credential.https}: {exc}"
            else:
                if reply.status == 200:
                    try:
                        return ProvisionResponse.from_json(reply.content)
                    except ContractError as exc:
                        raise ClaimError(f"the cloud's answer is unusable: {exc}") from exc
                if reply.status < 500:
                    raise ClaimRefusedError(reply.status, _reason(reply.content))
                problem = f"the cloud answered {reply.status}: {_reason(reply.content)}"
            delay = backoff.next_delay()
            if time.monotonic() + delay >= deadline:
                raise ClaimError(f"{problem} (gave up after {timeout:g} s)")
            log.warning(
                "claim.retry claim=%s delay=%.1f problem=%s", credential.claim_id, delay, problem
            )
            await asyncio.sleep(delay)
