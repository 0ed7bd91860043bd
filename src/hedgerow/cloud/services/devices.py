"""The device side: Greengrass V1 discovery for things, and what a core asks over its
mutual-TLS API (server certificate, group CAs, artifacts of its deployments).

Discovery answers are kept per thing and certificate (``DiscoveryCache``): a hit is
answered on the event loop without a database trip, and the certificate's record in it is
checked again on every request (revoked, expired, someone else's). Whatever changes an
answer calls ``DiscoveryChanged`` (``services.notify``), which empties the cache
here and, through the change feed, on every replica."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from hedgerow import pki
from hedgerow.cloud import discovery, domain
from hedgerow.cloud.discovery_cache import CachedAnswer, DiscoveryCache
from hedgerow.cloud.domain import Certificate, CertificateKind
from hedgerow.cloud.errors import NotFound, Unauthorized
from hedgerow.cloud.pki_service import PKIService, record_of
from hedgerow.cloud.services.cores import CoreService
from hedgerow.cloud.services.functions import ArtifactService
from hedgerow.cloud.services.groups import GroupService
from hedgerow.cloud.services.identities import verify_record
from hedgerow.cloud.storage.repository import DiscoveryGroup, Repository

log = logging.getLogger(__name__)


class DeviceService:
    def __init__(
        self,
        repository: Repository,
        pki_service: PKIService,
        groups: GroupService,
        cores: CoreService,
        artifacts: ArtifactService,
        cache: DiscoveryCache | None = None,
    ) -> None:
        self.repository = repository
        #: answers per (thing, fingerprint); ``max_entries=0``: every request reads
        self.cache = cache if cache is not None else DiscoveryCache(max_entries=0)
        self.pki = pki_service
        self.groups = groups
        self.cores = cores
        self.artifacts = artifacts

    def _body(self, groups: Sequence[DiscoveryGroup]) -> dict[str, Any]:
        return discovery.discovery_body(
            [
                (
                    group,
                    [c.cert_pem for c in self.pki.group_cas(group.group, group.ca_rotation_days)],
                )
                for group in groups
            ]
        )

    async def discover(self, thing: str) -> dict[str, Any]:
        body = await asyncio.to_thread(lambda: self._body(self.repository.discovery_groups(thing)))
        await self.groups.announce_rotations()
        return body

    def _read_answer(
        self, fingerprint: str, thing: str
    ) -> tuple[Certificate | None, dict[str, Any] | None]:
        """The certificate's record and, if it is ``thing``'s and the thing is in a group
        with a core, the body (else None): one trip to the database (worker thread)."""
        record, groups = self.repository.identity_and_groups(fingerprint, thing)
        if record is None or record.owner != thing or not groups:
            return record, None
        return record, self._body(groups)

    @staticmethod
    def _authorize(record: Certificate | None, thing: str) -> None:
        """Per request, cached or not: a live thing certificate of ``thing`` itself."""
        owner = verify_record(record, CertificateKind.THING)
        if owner != thing:
            raise Unauthorized(f"the certificate belongs to {owner!r}, not to {thing!r}")

    async def discover_as(self, cert: Any, thing: str) -> dict[str, Any]:
        """Discovery for the thing ``cert`` belongs to: from the cache, or one trip to a
        worker thread (then kept unless something changed meanwhile)."""
        fingerprint = pki.fingerprint(cert)
        cached = self.cache.get(thing, fingerprint) if self.cache.enabled else None
        if cached is not None:
            self._authorize(cached.certificate, thing)
            return cached.body
        generation = self.cache.generation
        record, body = await asyncio.to_thread(self._read_answer, fingerprint, thing)
        self._authorize(record, thing)
        if body is None:
            raise NotFound("group", thing, f"thing {thing!r} is in no group with a core")
        assert record is not None  # _authorize refused None
        self.cache.put(thing, fingerprint, CachedAnswer(record, body), generation)
        await self.groups.announce_rotations()
        return body

    async def core_group_cas(self, core_name: str) -> dict[str, Any]:
        """``GET /core/v1/group-cas``: the CAs of the core's group, newest first."""
        core = await self.cores.get(core_name)
        group = await self.groups.get(core.group)
        cas = await asyncio.to_thread(self.pki.group_cas, core.group, group.ca_rotation_days)
        await self.groups.announce_rotations()
        return {"group_cas": [c.cert_pem for c in cas]}

    async def sign_core_certificate(
        self, core_name: str, csr: str, hosts: Sequence[str]
    ) -> dict[str, Any]:
        core = await self.cores.get(core_name)
        group = await self.groups.get(core.group)
        all_hosts = list(dict.fromkeys([*hosts, *(e.host for e in core.endpoints)]))
        cert_pem, cas = await asyncio.to_thread(
            self.pki.sign_core_server, core_name, core.group, csr, all_hosts, group.ca_rotation_days
        )
        record = record_of(
            pki.cert_from_pem(cert_pem.encode()), CertificateKind.CORE_SERVER.value, core_name
        )
        await asyncio.to_thread(self.repository.add_core_certificate, core_name, record)
        log.info("core.server_certificate core=%s hosts=%s", core_name, ",".join(all_hosts))
        await self.groups.announce_rotations()
        return {"certificate": cert_pem, "group_cas": cas}

    async def core_artifact(self, core: str, sha256: str) -> bytes:
        sha256 = domain.validate_sha256(sha256)
        if not await asyncio.to_thread(self.repository.artifact_in_core_deployments, core, sha256):
            raise NotFound(
                "artifact", sha256, f"artifact {sha256} is not part of core {core!r}'s group"
            )
        return await self.artifacts.get(sha256)
