"""Certificates: listing, revocation, and telling cores what was revoked."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence

from hedgerow.cloud.domain import Certificate
from hedgerow.cloud.services.notify import (
    DiscoveryChanged,
    Notifier,
    discovery_unchanged,
    revocations_topic,
)
from hedgerow.cloud.storage.certificates import CertificateStore

log = logging.getLogger(__name__)


class CertificateService:
    def __init__(
        self,
        store: CertificateStore,
        notifier: Notifier,
        discovery_changed: DiscoveryChanged = discovery_unchanged,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.discovery_changed = discovery_changed

    async def all(self, owner: str | None, kind: str | None) -> list[Certificate]:
        return await asyncio.to_thread(self.store.list_certificates, owner=owner, kind=kind)

    async def get(self, fingerprint: str) -> Certificate:
        return await asyncio.to_thread(self.store.get_certificate, fingerprint)

    async def revoke(self, fingerprint: str) -> Certificate:
        cert = await asyncio.to_thread(
            self.store.revoke_certificate, fingerprint, "revoked by an administrator"
        )
        groups = await asyncio.to_thread(self.store.groups_of_owner, cert.owner)
        await self.after_revocation(cert.owner, groups)
        log.info("certificate.revoked fingerprint=%s owner=%s", fingerprint, cert.owner)
        return cert

    async def revoke_owner(self, owner: str) -> list[str]:
        """Revoke every certificate of ``owner``: the fingerprints revoked."""
        revoked = await asyncio.to_thread(
            self.store.revoke_owner, owner, "revoked by an administrator"
        )
        groups = await asyncio.to_thread(self.store.groups_of_owner, owner)
        await self.after_revocation(owner, groups)
        log.info("certificates.revoked owner=%s count=%s", owner, len(revoked))
        return revoked

    async def after_revocation(self, owner: str, groups: Sequence[str]) -> None:
        self.discovery_changed()  # a cached answer holds the certificate's record
        await self.announce(groups)
        await self.notifier.disconnect(owner, "certificate revoked")

    async def announce(self, groups: Sequence[str]) -> None:
        """Tell the cores of ``groups`` the revoked fingerprints (retained: no deployment needed)."""
        fingerprints = await self.revocations()
        payload = json.dumps({"fingerprints": fingerprints}).encode()
        for core in await asyncio.to_thread(self.store.cores_of_groups, groups):
            await self.notifier.publish(revocations_topic(core), payload, retain=True)

    async def revocations(self) -> list[str]:
        return await asyncio.to_thread(self.store.revoked_fingerprints)
