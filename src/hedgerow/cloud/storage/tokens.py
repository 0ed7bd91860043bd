"""API tokens (stored as SHA-256 digests)."""

from __future__ import annotations

import hashlib
import logging

import sqlalchemy as sa

from hedgerow.cloud.storage.base import (
    Store,
    now,
)
from hedgerow.cloud.storage.models import (
    ApiTokenRow,
)

log = logging.getLogger(__name__)


class TokenStore(Store):
    def add_token(self, name: str, token: str) -> None:
        with self._tx() as s:
            s.add(ApiTokenRow(name=name, token_sha256=token_digest(token), created_at=now()))

    def token_valid(self, token: str) -> bool:
        with self._tx() as s:
            return (
                s.scalar(
                    sa.select(ApiTokenRow.id).where(ApiTokenRow.token_sha256 == token_digest(token))
                )
                is not None
            )


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
