"""Who a client certificate speaks for: needs only the repository, so the MQTT
authenticator can be built before the services that publish through the broker."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from hedgerow.cloud.domain import Certificate, CertificateKind
from hedgerow.cloud.errors import Forbidden
from hedgerow.cloud.storage.certificates import CertificateStore
from hedgerow.cloud.storage.cores import CoreStore


def verify_record(record: Certificate | None, kind: CertificateKind) -> str:
    """The owner of a live, registered certificate of ``kind``; ``Forbidden`` otherwise."""
    if record is None:
        raise Forbidden("certificate is not registered with this cloud")
    if record.revoked:
        raise Forbidden(f"certificate of {record.owner!r} is revoked")
    if record.not_after.timestamp() <= time.time():
        raise Forbidden(
            f"certificate of {record.owner!r} expired at {record.not_after.isoformat()}"
        )
    if record.kind != kind.value:
        raise Forbidden(f"a {record.kind} certificate cannot be used here (needs a {kind.value})")
    return record.owner


class IdentityService:
    def __init__(self, certificates: CertificateStore, cores: CoreStore) -> None:
        self.certificates = certificates
        self.cores = cores

    def _check(self, fingerprint: str, kind: CertificateKind) -> str:
        return verify_record(self.certificates.find_certificate(fingerprint), kind)

    async def check_identity(self, fingerprint: str, kind: CertificateKind) -> str:
        """The name a verified client certificate (by its SHA-256 ``fingerprint``) speaks for,
        if it is ours, live and of ``kind``."""
        return await asyncio.to_thread(self._check, fingerprint, kind)

    async def core_group(self, core: str) -> str:
        return (await asyncio.to_thread(self.cores.get_core, core)).group

    async def record_heartbeat(self, core: str, payload: bytes) -> dict[str, Any] | None:
        """A core's heartbeat (a JSON object) or, with an empty payload, just "seen now":
        the heartbeat recorded, if any."""
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            data = None
        heartbeat = data if isinstance(data, dict) else None
        await asyncio.to_thread(self.cores.record_heartbeat, core, heartbeat)
        return heartbeat
