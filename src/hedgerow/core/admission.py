"""Who may connect to the local endpoint, and where they may publish and subscribe.

Admission (``authenticate``): the client certificate (already verified by TLS against the
root CA) must chain to a root CA certificate, be inside its validity period, not be revoked
(fingerprint list from the cloud), and name a thing of this core's group (the current
deployment's ``things``). The identity is the certificate's thing name, never the client id.
Refusals are silent (the socket closes, no CONNACK: V1 SDK clients treat any CONNACK as
success) and logged with the reason.

Authorization (``authorize``) is the routing table's least-privilege ACL, plus a device's
own shadow (``$aws/things/<itself>/shadow/...``: publish get/update/delete, subscribe to the
replies) which needs no subscription; what happens to a
denied PUBLISH (drop and count, or disconnect with reason 0x87) is the broker's
``deny_policy``, set from ``local.deny_policy``. Denials are counted here.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Sequence

from cryptography import x509

from hedgerow import pki
from hedgerow.broker.auth import NOT_AUTHORIZED, Action, ConnectInfo, Identity, Refused

from .routing import RoutingTable

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


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
        roots: Sequence[x509.Certificate],
        *,
        things: Iterable[str] = (),
        revoked: Iterable[str] = (),
        table: RoutingTable | None = None,
        clock: Clock = pki.now,
    ) -> None:
        self.roots = list(roots)
        self.things: frozenset[str] = frozenset(things)
        self.revoked: frozenset[str] = frozenset(revoked)
        self.table = table if table is not None else RoutingTable()
        self.clock = clock
        self.refused: dict[str, int] = {}
        self.denied_publish = 0
        self.denied_subscribe = 0

    def _refuse(self, reason: str, message: str, info: ConnectInfo) -> Refused:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        log.warning(
            "core.admission.refused reason=%s client_id=%s peer=%s detail=%s",
            reason, info.client_id, info.peer, message,
        )  # fmt: skip
        return Refused(NOT_AUTHORIZED, message, silent=True)

    def check(self, cert: x509.Certificate | None) -> tuple[str, str] | None:
        """``(reason, message)`` when this certificate may not connect, else None (pure)."""
        if cert is None:
            return "no-certificate", "no client certificate"
        if not any(pki.is_signed_by(cert, root) for root in self.roots):
            return "untrusted", "the certificate does not chain to the root CA"
        now = self.clock()
        if cert.not_valid_after_utc < now or cert.not_valid_before_utc > now:
            return "expired", "the certificate is expired or not yet valid"
        if pki.fingerprint(cert) in self.revoked:
            return "revoked", "the certificate is revoked"
        try:
            name = pki.name_of(cert)
        except pki.PKIError as exc:
            return "unusable", str(exc)
        if name not in self.things:
            return "not-in-group", f"thing {name!r} is not a device of this core's group"
        return None

    async def authenticate(self, info: ConnectInfo) -> Identity:
        problem = self.check(info.peer_cert)
        if problem is not None:
            raise self._refuse(problem[0], problem[1], info)
        assert info.peer_cert is not None
        name = pki.name_of(info.peer_cert)
        return Identity(
            name,
            kind="thing",
            attributes={
                "client_id": info.client_id,
                "fingerprint": pki.fingerprint(info.peer_cert),
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
        return (
            identity.name in self.things
            and identity.attributes.get("fingerprint") not in self.revoked
        )
