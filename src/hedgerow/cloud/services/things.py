"""Things: registration with a certificate (generated key or the device's CSR), group
membership, attributes, revocation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from hedgerow.cloud.domain import CertificateKind, Thing
from hedgerow.cloud.pki_service import PKIService
from hedgerow.cloud.services.certificates import CertificateService
from hedgerow.cloud.services.membership import MembershipService
from hedgerow.cloud.storage.things import ThingStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CreatedThing:
    thing: Thing
    certificate_pem: str
    private_key_pem: str | None
    root_ca_pem: str


class ThingService:
    def __init__(
        self,
        store: ThingStore,
        pki_service: PKIService,
        certificates: CertificateService,
        membership: MembershipService,
    ) -> None:
        self.store = store
        self.pki = pki_service
        self.certificates = certificates
        self.membership = membership

    async def create(
        self, name: str, groups: Sequence[str], attributes: dict[str, str], csr: str | None
    ) -> CreatedThing:
        identity = await asyncio.to_thread(
            self.pki.issue_identity, name, CertificateKind.THING, csr
        )
        thing = await asyncio.to_thread(
            self.store.create_thing, name, list(groups), attributes, lambda: identity.record
        )
        log.info("thing.created name=%s groups=%s csr=%s", name, ",".join(groups), csr is not None)
        await self.membership.announce(groups)
        return CreatedThing(
            thing, identity.certificate_pem, identity.private_key_pem, self.pki.root_ca_pem
        )

    async def new_certificate(self, name: str, csr: str | None) -> CreatedThing:
        thing = await self.get(name)
        identity = await asyncio.to_thread(
            self.pki.issue_identity, name, CertificateKind.THING, csr
        )
        await asyncio.to_thread(self.store.add_thing_certificate, name, identity.record)
        return CreatedThing(
            thing, identity.certificate_pem, identity.private_key_pem, self.pki.root_ca_pem
        )

    async def all(self, *, group: str | None, prefix: str, limit: int, offset: int) -> list[Thing]:
        return await asyncio.to_thread(
            self.store.list_things, group=group, prefix=prefix, limit=limit, offset=offset
        )

    async def get(self, name: str) -> Thing:
        return await asyncio.to_thread(self.store.get_thing, name)

    async def update(self, name: str, attributes: dict[str, str]) -> Thing:
        return await asyncio.to_thread(self.store.update_thing, name, attributes)

    async def delete(self, name: str) -> None:
        revoked, groups = await asyncio.to_thread(self.store.delete_thing, name)
        if revoked:
            await self.certificates.announce(groups)
        await self.membership.announce(groups)
        log.info("thing.deleted name=%s revoked=%s", name, len(revoked))

    async def attach(self, group: str, thing: str) -> Thing:
        attached = await asyncio.to_thread(self.store.attach_thing, group, thing)
        await self.membership.announce([group])
        return attached

    async def detach(self, group: str, thing: str) -> None:
        await asyncio.to_thread(self.store.detach_thing, group, thing)
        await self.membership.announce([group])

    async def revoke(self, name: str) -> list[str]:
        return await self.certificates.revoke_owner(name)
