"""Things: registration with a certificate (generated key or the device's CSR), group
membership, attributes, revocation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from hedgerow import pki
from hedgerow.cloud.domain import CertificateKind, Thing
from hedgerow.cloud.errors import InvalidInput
from hedgerow.cloud.pki_service import PKIService, record_of
from hedgerow.cloud.services.certificates import CertificateService
from hedgerow.cloud.services.membership import DeviceTrust, MembershipService
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
        device_trust: DeviceTrust,
    ) -> None:
        self.store = store
        self.pki = pki_service
        self.certificates = certificates
        self.membership = membership
        self.device_trust = device_trust

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

    async def create_with_certificate(
        self,
        name: str,
        groups: Sequence[str],
        attributes: dict[str, str],
        cert_pem: str,
        *,
        anchor: bool,
    ) -> Thing:
        """A thing registered by a certificate it already has (the key stays on the device).
        ``anchor``: the certificate is trusted as itself (no registered CA signed it)."""
        try:
            cert = pki.cert_from_pem(cert_pem.encode())
        except pki.PKIError as exc:
            raise InvalidInput(f"not a PEM certificate: {exc}", field="certificate") from exc
        if cert.not_valid_after_utc <= pki.now():
            raise InvalidInput(
                f"the certificate expired at {cert.not_valid_after_utc.isoformat()}",
                field="certificate",
            )
        record = record_of(cert, CertificateKind.THING.value, name)
        record = replace(record, issued_at=cert.not_valid_before_utc)
        thing = await asyncio.to_thread(
            self.store.create_thing, name, list(groups), attributes, lambda: record, external=anchor
        )
        log.info(
            "thing.registered_certificate name=%s groups=%s fingerprint=%s anchor=%s",
            name, ",".join(groups), record.fingerprint, anchor,
        )  # fmt: skip
        if anchor:
            self.device_trust.add([cert_pem])
        await self.membership.announce(groups)
        return thing

    async def new_certificate(
        self, name: str, csr: str | None, *, revoke_others: bool = False
    ) -> CreatedThing:
        """Another certificate for a thing (``revoke_others``: its earlier ones revoked)."""
        thing = await self.get(name)
        identity = await asyncio.to_thread(
            self.pki.issue_identity, name, CertificateKind.THING, csr
        )
        if revoke_others:
            await self.certificates.revoke_owner(name)
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
