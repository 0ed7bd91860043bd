"""Single-use tickets in the database (shared by every API process of one cloud)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hedgerow.cloud.storage.models import StreamTicketRow

#: Outstanding tickets at most; issuing more refuses until some are used or expire.
MAX_OUTSTANDING = 10_000


class TicketStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, ticket_sha256: str, purpose: str, expires_at: float, now: float) -> bool:
        """Store a ticket (expired ones are purged first); False when too many are out."""
        with self.engine.begin() as connection:
            connection.execute(sa.delete(StreamTicketRow).where(StreamTicketRow.expires_at <= now))
            outstanding = connection.scalar(sa.select(sa.func.count()).select_from(StreamTicketRow))
            if (outstanding or 0) >= MAX_OUTSTANDING:
                return False
            connection.execute(
                sa.insert(StreamTicketRow).values(
                    ticket_sha256=ticket_sha256, purpose=purpose, expires_at=expires_at
                )
            )
            return True

    def redeem(self, ticket_sha256: str, purpose: str, now: float) -> bool:
        """Use a ticket: True once for an unexpired ticket of ``purpose``, then never again."""
        with self.engine.begin() as connection:
            result = connection.execute(
                sa.delete(StreamTicketRow).where(
                    StreamTicketRow.ticket_sha256 == ticket_sha256,
                    StreamTicketRow.purpose == purpose,
                    StreamTicketRow.expires_at > now,
                )
            )
            return bool(result.rowcount)
