"""Cores: identities, provisioning bundles, connectivity."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace

from hedgerow.cloud import core_bundle as bundle
from hedgerow.cloud.domain import CertificateKind, Core, Endpoint
from hedgerow.cloud.pki_service import PKIService
from hedgerow.cloud.services.log_levels import LogLevelService
from hedgerow.cloud.services.membership import MembershipService
from hedgerow.cloud.services.notify import (
    CoreAdmitted,
    DiscoveryChanged,
    Notifier,
    core_admitted_nowhere,
    discovery_unchanged,
)
from hedgerow.cloud.storage.cores import CoreStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublicEndpoints:
    """Where cores reach the cloud (written into bundles)."""

    https: str
    mqtt: str
    #: "5", or "3.1.1" for an external broker that speaks no MQTT 5 (RabbitMQ 3.10)
    mqtt_protocol: str = "5"
    #: a core's broker password from its name and certificate fingerprint, for a broker
    #: that asks the cloud over HTTP (None: the client certificate is the login)
    mqtt_password: Callable[[str, str], str] | None = None


#: the names of the cores with a live MQTT session at this process's endpoint, or None
#: when it cannot tell (no MQTT endpoint); with an external broker a ``ReportedPresence``
Presence = Callable[[], Collection[str] | None]


def presence_unknown() -> Collection[str] | None:
    return None


@dataclass(frozen=True)
class ReportedPresence(Collection[str]):
    """Presence as the cores report it through an external broker (``contract.Presence``,
    their retained message and will): the connected ones, among those that report at all
    (cores from before presence existed are unknown, not offline)."""

    connected: frozenset[str] = frozenset()
    reporting: frozenset[str] = frozenset()

    def __contains__(self, name: object) -> bool:
        return name in self.connected

    def __iter__(self) -> Iterator[str]:
        return iter(self.connected)

    def __len__(self) -> int:
        return len(self.connected)


def presence_of(live: Collection[str] | None, core: str) -> bool | None:
    """Whether ``core`` is connected; None: not known here."""
    if live is None or (isinstance(live, ReportedPresence) and core not in live.reporting):
        return None
    return core in live


@dataclass(frozen=True)
class CreatedCore:
    core: Core
    bundle: bytes


class CoreService:
    def __init__(
        self,
        store: CoreStore,
        pki_service: PKIService,
        notifier: Notifier,
        endpoints: Callable[[], PublicEndpoints],
        membership: MembershipService,
        presence: Presence = presence_unknown,
        log_levels: LogLevelService | None = None,
        discovery_changed: DiscoveryChanged = discovery_unchanged,
        core_admitted: CoreAdmitted = core_admitted_nowhere,
    ) -> None:
        """``endpoints`` says where the cloud listens; it is asked when a bundle is built
        (the listeners bind their ports after the services exist)."""
        self.core_admitted = core_admitted
        self.store = store
        self.pki = pki_service
        self.notifier = notifier
        self.endpoints = endpoints
        self.membership = membership
        self.presence = presence
        #: the group's log levels set from the cloud go to its new core (retained)
        self.log_levels = log_levels
        #: a core's connectivity and its removal change the answers of its group's things
        self.discovery_changed = discovery_changed

    def _with_presence(self, cores: list[Core]) -> list[Core]:
        live = self.presence()
        if live is None:
            return cores
        return [replace(core, connected=presence_of(live, core.name)) for core in cores]

    def core_config(self, core: str, group: str, fingerprint: str) -> str:
        """The ``config.toml`` of ``core`` whose identity certificate has ``fingerprint``
        (a bundle's, or a claim's answer): with its broker login where the broker asks."""
        endpoints = self.endpoints()
        password = None
        if endpoints.mqtt_password is not None:
            password = endpoints.mqtt_password(core, fingerprint)
        return bundle.core_config(
            core,
            group,
            endpoints.https,
            endpoints.mqtt,
            mqtt_protocol=endpoints.mqtt_protocol,
            mqtt_password=password,
        )

    def _bundle(
        self, core: str, group: str, cert_pem: str, key_pem: str, fingerprint: str
    ) -> bytes:
        config = self.core_config(core, group, fingerprint)
        has_password = self.endpoints().mqtt_password is not None
        return bundle.build_bundle(
            {
                bundle.CONFIG: config.encode(),
                bundle.CORE_CERT: cert_pem.encode(),
                bundle.CORE_KEY: key_pem.encode(),
                bundle.ROOT_CA: self.pki.root_ca_pem.encode(),
                bundle.VERIFY_KEY: self.pki.verify_key_pem.encode(),
            },
            private=bundle.PRIVATE | {bundle.CONFIG} if has_password else bundle.PRIVATE,
        )

    async def create(self, name: str, group: str) -> CreatedCore:
        identity = await asyncio.to_thread(self.pki.issue_identity, name, CertificateKind.CORE)
        core = await asyncio.to_thread(self.store.create_core, name, group, lambda: identity.record)
        assert identity.private_key_pem is not None
        log.info("core.created name=%s group=%s", name, group)
        await self.core_admitted(name)
        await self.membership.announce([group])
        if self.log_levels is not None:
            await self.log_levels.announce(group)
        return CreatedCore(
            core,
            self._bundle(
                name,
                group,
                identity.certificate_pem,
                identity.private_key_pem,
                identity.record.fingerprint,
            ),
        )

    async def register(self, name: str, group: str, csr: str) -> str:
        """A core whose key stays on the device (provisioning by claim): its certificate."""
        identity = await asyncio.to_thread(self.pki.issue_identity, name, CertificateKind.CORE, csr)
        await asyncio.to_thread(self.store.create_core, name, group, lambda: identity.record)
        log.info("core.registered name=%s group=%s", name, group)
        await self.core_admitted(name)
        await self.membership.announce([group])
        return identity.certificate_pem

    async def register_again(self, name: str, csr: str) -> tuple[str, str]:
        """A new certificate for an existing core from its CSR (the earlier ones revoked):
        the certificate and the core's group."""
        core = await self.get(name)
        identity = await asyncio.to_thread(self.pki.issue_identity, name, CertificateKind.CORE, csr)
        await asyncio.to_thread(
            self.store.replace_core_identity, name, identity.record, "provisioned again"
        )
        await self.notifier.disconnect(name, "provisioned again")
        log.info("core.registered_again name=%s group=%s", name, core.group)
        return identity.certificate_pem, core.group

    async def reissue_bundle(self, name: str) -> CreatedCore:
        """A new identity for the core (the old certificates are revoked) in a new bundle."""
        core = await self.get(name)
        identity = await asyncio.to_thread(self.pki.issue_identity, name, CertificateKind.CORE)
        await asyncio.to_thread(
            self.store.replace_core_identity, name, identity.record, "identity reissued"
        )
        await self.notifier.disconnect(name, "identity reissued")
        assert identity.private_key_pem is not None
        return CreatedCore(
            core,
            self._bundle(
                name,
                core.group,
                identity.certificate_pem,
                identity.private_key_pem,
                identity.record.fingerprint,
            ),
        )

    async def all(
        self, *, prefix: str = "", limit: int | None = None, offset: int = 0
    ) -> list[Core]:
        found = await asyncio.to_thread(
            functools.partial(self.store.list_cores, prefix=prefix, limit=limit, offset=offset)
        )
        return self._with_presence(found)

    async def get(self, name: str) -> Core:
        return self._with_presence([await asyncio.to_thread(self.store.get_core, name)])[0]

    async def delete(self, name: str) -> None:
        await asyncio.to_thread(self.store.delete_core, name)
        self.discovery_changed()
        await self.notifier.disconnect(name, "core deleted")
        log.info("core.deleted name=%s", name)

    async def set_connectivity(self, core: str, endpoints: Sequence[Endpoint]) -> Core:
        result = await asyncio.to_thread(self.store.set_endpoints, core, endpoints)
        self.discovery_changed()
        log.info("core.connectivity core=%s endpoints=%s", core, len(endpoints))
        return result
