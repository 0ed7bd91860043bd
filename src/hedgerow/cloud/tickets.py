"""Short-lived, single-purpose, single-use tickets for what a browser cannot authorise
with a header (``EventSource`` on the live stream).

The admin token travels only in ``Authorization: Bearer``: a URL is kept by proxies,
server logs and browser history. A client that cannot set the header asks for a ticket
with the token (``POST /api/v1/messages/stream/tickets``) and puts the ticket in the
stream's URL instead: it opens that one stream once, within ``TICKET_SECONDS``, and
nothing else, so a URL that leaks carries nothing reusable. Only the ticket's SHA-256 is
stored, in the database, so any API process of the cloud can redeem it exactly once.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from hedgerow.cloud.errors import Conflict
from hedgerow.cloud.storage.tickets import TicketStore

#: Seconds a ticket stays valid (it is meant to be used at once).
TICKET_SECONDS = 60.0


class TicketPurpose(Enum):
    LIVE_STREAM = "live-stream"


@dataclass(frozen=True)
class Ticket:
    value: str = field(repr=False)
    purpose: TicketPurpose
    expires_in: float


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Tickets:
    def __init__(
        self,
        store: TicketStore,
        *,
        lifetime: float = TICKET_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.lifetime = lifetime
        self.clock = clock

    def issue(self, purpose: TicketPurpose) -> Ticket:
        value = secrets.token_urlsafe(32)
        now = self.clock()
        if not self.store.add(_digest(value), purpose.value, now + self.lifetime, now):
            raise Conflict(
                "too many unused tickets: use or let expire the ones issued "
                f"(they last {self.lifetime:g} s)"
            )
        return Ticket(value, purpose, self.lifetime)

    def redeem(self, value: str, purpose: TicketPurpose) -> bool:
        """True exactly once for a ticket of ``purpose`` that has not expired."""
        if not value:
            return False
        return self.store.redeem(_digest(value), purpose.value, self.clock())
