"""Who a client certificate speaks for: needs only the repository, so the MQTT
authenticator can be built before the services that publish through the broker."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from hedgerow.cloud.broker_acl import CoreStanding
from hedgerow.cloud.domain import Certificate, CertificateKind
from hedgerow.cloud.errors import Forbidden, NotFound
from hedgerow.cloud.storage.certificates import CertificateStore
from hedgerow.cloud.storage.cores import CoreStore
from hedgerow.contract.errors import ContractError
from hedgerow.contract.heartbeat import Heartbeat

log = logging.getLogger(__name__)


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

    def _standing(self, core: str) -> CoreStanding | None:
        try:
            group = self.cores.get_core(core).group
        except NotFound:
            return None
        for record in self.certificates.list_certificates(owner=core, kind="core"):
            try:
                verify_record(record, CertificateKind.CORE)
            except Forbidden:
                continue
            return CoreStanding(core, group, record.fingerprint)
        return None

    async def core_standing(self, core: str) -> CoreStanding | None:
        """The core's group and live identity certificate; None when it has none (deleted,
        revoked, expired): what an external broker's login and ACL questions go by."""
        return await asyncio.to_thread(self._standing, core)

    async def core_standings(self) -> list[CoreStanding]:
        """``core_standing`` of every core that has one, in one query."""
        found = await asyncio.to_thread(self.cores.live_core_identities)
        return [CoreStanding(name, group, fingerprint) for name, group, fingerprint in found]

    async def core_group(self, core: str) -> str:
        return (await asyncio.to_thread(self.cores.get_core, core)).group

    async def record_heartbeat(self, core: str, payload: bytes) -> Heartbeat | None:
        """Record that ``core`` is alive and, when ``payload`` is a heartbeat (the contract's,
        ``hedgerow.contract.heartbeat``), its state: the heartbeat recorded, if any. An empty
        payload only updates "last seen"; a malformed one is logged, not kept."""
        ((_core, beat),) = await self.record_heartbeats([(core, payload)], strict=True)
        return beat

    async def record_heartbeats(
        self, reports: Sequence[tuple[str, bytes]], *, strict: bool = False
    ) -> list[tuple[str, Heartbeat | None]]:
        """``record_heartbeat`` for many cores in one transaction: each core with the
        heartbeat recorded. A core that does not exist is logged and left out (``strict``:
        ``NotFound``)."""
        parsed: list[tuple[str, Heartbeat | None]] = []
        for core, payload in reports:
            beat = None
            if payload:
                try:
                    beat = Heartbeat.from_json(payload)
                except ContractError as exc:
                    log.warning("core.heartbeat_refused core=%s error=%s", core, exc)
            parsed.append((core, beat))
        rows = [(core, beat.to_dict() if beat is not None else None) for core, beat in parsed]
        missing = await asyncio.to_thread(self.cores.record_heartbeats, rows)
        if missing and strict:
            raise NotFound("core", missing[0])
        for core in missing:
            log.warning("core.heartbeat_unknown core=%s", core)
        gone = set(missing)
        return [(core, beat) for core, beat in parsed if core not in gone]
