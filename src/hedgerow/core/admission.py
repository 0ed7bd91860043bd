"""Who may connect to the local endpoint, and where they may publish and subscribe.

Admission (``authenticate``): the client certificate must be issued by a root CA
certificate, be inside its validity period, not be revoked (fingerprint list from the
cloud), and name a thing of this core's group: the group's members as the cloud announced
them (``members``: the retained ``$hedgerow/cores/{core}/things`` message or
``GET /core/v1/things``, so a new thing connects without a deployment), or, before the core
heard that list, the current deployment's ``things``. The identity is the certificate's
thing name, never the client id. A refused MQTT 5 client gets CONNACK 0x87 Not authorized
with the reason as its reason string; a 3.1.1 client cannot be told (V1 SDK clients treat any
CONNACK as success), so the socket closes without one. Every refusal is logged with the
reason and what fixes it.

Certificates are read with ``hedgerow.certinfo`` (standard library only: the edge daemon
does not load ``cryptography``), which does not check signatures. It does not need to: the
TLS handshake already verified the client certificate's signature against the root CA file
the listener trusts (that file alone: the roots given here are read from it). "Issued by a
root" is the issuer name and key identifier (``CertInfo.issued_by``), which tells apart two
CAs of the same name (a rotated root).

Devices that did not get their certificate from this cloud (the Greengrass V1 migration)
are admitted through ``trusted``: the device CAs registered for the group (a certificate
they issued passes as one the root CA issued) and the devices' own registered certificates
(each its own anchor: the listener allows partial chains). The cloud names them with the
group's members (``Membership.device_trust``); one it stops naming is refused at once.

Authorization (``authorize``) is the routing table's least-privilege ACL, plus a device's
own shadow (``$aws/things/<itself>/shadow/...``: publish get/update/delete, subscribe to the
replies) which needs no subscription; what happens to a
denied PUBLISH (drop and count, or disconnect with reason 0x87) is the broker's
``deny_policy``, set from ``local.deny_policy``. Denials are counted here.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from hedgerow import certinfo
from hedgerow.broker.auth import NOT_AUTHORIZED, Action, ConnectInfo, Identity, Refused

from .routing_table import RoutingTable

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
#: ``Identity.attributes["anchor"]`` of a device whose certificate the root CA issued
ROOT_ANCHOR = "root"


def _own_shadow(thing: str, topic: str, action: Action) -> bool:
    """A device may always use its own shadow: publish get/update/delete requests and
    subscribe to the replies under ``$aws/things/<itself>/shadow/``."""
    if any(c in thing for c in "+#/"):
        return False
    prefix = f"$aws/things/{thing}/shadow/"
    if not topic.startswith(prefix):
        return False
    if action is Action.PUBLISH:
        return topic[len(prefix) :] in ("get", "update", "delete")
    return True  # any filter under the literal prefix stays inside the device's own shadow


class Admission:
    """The local endpoint's authenticator and authorizer in one object (shared state)."""

    def __init__(
        self,
        roots: Sequence[certinfo.CertInfo],
        *,
        things: Iterable[str] = (),
        members: Iterable[str] | None = None,
        trusted: Sequence[certinfo.CertInfo] = (),
        names: Mapping[str, str] | None = None,
        revoked: Iterable[str] = (),
        table: RoutingTable | None = None,
        clock: Clock = certinfo.now,
        group: str = "GROUP",
        on_admitted: Callable[[str], None] | None = None,
        refresh: Callable[[certinfo.CertInfo, bool], Awaitable[None]] | None = None,
    ) -> None:
        self.roots = list(roots)
        #: told each admitted device's name (the core's heartbeat follows device counts)
        self.on_admitted = on_admitted
        #: ``refresh(cert, by_ca)``: asks the cloud about a device a registered certificate
        #: or device CA (``by_ca``) vouches for that is not a member yet — admitted just in
        #: time a moment ago at its discovery, or to be admitted now (no discovery came first)
        self.refresh = refresh
        self.group = group
        #: the current deployment's things
        self.things: frozenset[str] = frozenset(things)
        #: the group's things as the cloud last announced them (None: never heard)
        self.members: frozenset[str] | None = None if members is None else frozenset(members)
        self.revoked: frozenset[str] = frozenset(revoked)
        self.trusted: list[certinfo.CertInfo] = list(trusted)
        self.names: dict[str, str] = dict(names or {})
        self.table = table if table is not None else RoutingTable()
        self.clock = clock
        self.refused: dict[str, int] = {}
        self.denied_publish = 0
        self.denied_subscribe = 0

    def set_deployment(self, table: RoutingTable, things: Iterable[str]) -> None:
        """A deployment took effect: its routes and its things (those connected that are no
        longer admitted are the caller's to disconnect: ``still_admitted``)."""
        self.table = table
        self.things = frozenset(things)

    def set_revoked(self, fingerprints: Iterable[str]) -> None:
        """The revoked certificates' fingerprints, as the cloud lists them now."""
        self.revoked = frozenset(fingerprints)

    def set_trusted(
        self, trusted: Sequence[certinfo.CertInfo], names: Mapping[str, str] | None = None
    ) -> None:
        """The device CAs and devices' own certificates trusted besides the root CA, and
        the thing each registered device certificate speaks for (by fingerprint)."""
        self.trusted = list(trusted)
        self.names = dict(names or {})

    def name_of(self, cert: certinfo.CertInfo) -> str:
        """The thing a certificate speaks for: the registered name of a device's own
        certificate, else its common name."""
        return self.names.get(cert.fingerprint) or cert.name

    def anchor_of(self, cert: certinfo.CertInfo) -> str | None:
        """What vouches for ``cert``: ``root``, the fingerprint of the trusted device CA or
        certificate, or None."""
        if any(cert.issued_by(root) for root in self.roots):
            return ROOT_ANCHOR
        for t in self.trusted:
            if cert.fingerprint == t.fingerprint or cert.issued_by(t):
                return t.fingerprint
        return None

    def set_members(self, things: Iterable[str]) -> None:
        """The group's things as the cloud announced them (they win over a deployment's)."""
        self.members = frozenset(things)

    @property
    def admitted(self) -> frozenset[str]:
        """The names that may connect: the announced members, else the deployment's things."""
        return self.members if self.members is not None else self.things

    def _refuse(self, reason: str, message: str, info: ConnectInfo) -> Refused:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        log.warning(
            "core.admission.refused reason=%s client_id=%s peer=%s detail=%s",
            reason, info.client_id, info.peer, message,
        )  # fmt: skip
        # silent for 3.1.1 (no CONNACK); a v5 client gets 0x87 and the message
        return Refused(NOT_AUTHORIZED, message, silent=True)

    def check(self, cert: certinfo.CertInfo | None) -> tuple[str, str] | None:
        """``(reason, message)`` when this certificate may not connect, else None (pure).

        "Chains to a root" is ``cert.issued_by(root)`` (issuer name and key identifier):
        the TLS handshake already verified the signature against the root CA file, so this
        only tells which of the trusted roots issued it.
        """
        if cert is None:
            return "no-certificate", "no client certificate"
        if self.anchor_of(cert) is None:
            return "untrusted", "the certificate does not chain to the root CA"
        now = self.clock()
        if cert.not_after < now or cert.not_before > now:
            return "expired", "the certificate is expired or not yet valid"
        if cert.fingerprint in self.revoked:
            return "revoked", "the certificate is revoked"
        try:
            name = self.name_of(cert)
        except certinfo.CertInfoError as exc:
            return "unusable", str(exc)
        if name not in self.admitted:
            return "not-in-group", (
                f"thing {name!r} is not a device of group {self.group!r}: add it with"
                f" `hedgerow cloud thing attach --group {self.group} {name}`"
            )
        return None

    async def authenticate(self, info: ConnectInfo) -> Identity:
        problem = self.check(info.peer_cert)
        cert = info.peer_cert
        anchor = None if cert is None else self.anchor_of(cert)
        if (
            problem is not None
            and problem[0] == "not-in-group"
            and self.refresh is not None
            and cert is not None
            and anchor not in (None, ROOT_ANCHOR)
        ):
            await self.refresh(cert, anchor != cert.fingerprint)
            problem = self.check(cert)
        if problem is not None:
            raise self._refuse(problem[0], problem[1], info)
        assert info.peer_cert is not None
        name = self.name_of(info.peer_cert)
        if self.on_admitted is not None:
            self.on_admitted(name)
        return Identity(
            name,
            kind="thing",
            attributes={
                "client_id": info.client_id,
                "fingerprint": info.peer_cert.fingerprint,
                "anchor": self.anchor_of(info.peer_cert) or "",
            },
        )

    def authorize(self, identity: Identity, action: Action, topic: str) -> bool:
        if identity.kind != "thing":
            return True
        if _own_shadow(identity.name, topic, action):
            return True
        if action is Action.PUBLISH:
            if self.table.may_publish(identity.name, topic):
                return True
            self.denied_publish += 1
            log.info("core.admission.publish_denied thing=%s topic=%s", identity.name, topic)
            return False
        if self.table.may_subscribe(identity.name, topic):
            return True
        self.denied_subscribe += 1
        log.info("core.admission.subscribe_denied thing=%s filter=%s", identity.name, topic)
        return False

    def may_deliver(self, publisher: Identity, subscriber: Identity, topic: str) -> bool:
        """A device hears another device only where a subscription routes it (the broker
        asks this for every device-to-device delivery; see DeliveryAuthorizer)."""
        if publisher.kind != "thing" or subscriber.kind != "thing":
            return True
        return self.table.routes_to("thing:" + publisher.name, topic, "thing:" + subscriber.name)

    def still_admitted(self, identity: Identity) -> bool:
        """For ``disconnect_where`` after a deployment or revocation change."""
        if identity.kind != "thing":
            return True
        fingerprint = identity.attributes.get("fingerprint")
        return (
            identity.name in self.admitted
            and fingerprint not in self.revoked
            and self._still_anchored(identity.attributes.get("anchor", ROOT_ANCHOR))
        )

    def _still_anchored(self, anchor: object) -> bool:
        return anchor == ROOT_ANCHOR or any(t.fingerprint == anchor for t in self.trusted)
