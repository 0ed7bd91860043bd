"""Who may log in to an external broker that asks the cloud (RabbitMQ's HTTP auth backend,
EMQX's, VerneMQ's and HiveMQ's HTTP hooks): every secret derives from one random secret
in ``DATA/broker-auth-secret`` (0600; replicas share it like the admin token).

- the **path token** goes into the broker's auth URLs (``/api/v1/broker-auth/<token>/...``):
  only a broker configured with it can ask; it opens nothing else;
- the **cloud's password** (user ``hedgerow-cloud``) for the replicas' own link;
- a **core's password**: HMAC of the core's name and its identity certificate's
  fingerprint, written into its bundle; a new identity (``core reissue-bundle``, claim
  again) changes it, a revoked or deleted core is refused whatever it sends.

Pure derivations plus ``load_or_create`` (the one file read).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: The cloud replicas' user name at the broker (checked before any core of that name:
#: such a core would need the cloud's password).
CLOUD_USER: Final = "hedgerow-cloud"
SECRET_FILE: Final = "broker-auth-secret"


@dataclass(frozen=True)
class BrokerSecret:
    value: bytes

    def _derive(self, label: str) -> str:
        return hmac.new(self.value, label.encode(), hashlib.sha256).hexdigest()

    def path_token(self) -> str:
        return self._derive("broker-auth-path")[:40]

    def cloud_password(self) -> str:
        return self._derive("cloud")

    def core_password(self, core: str, fingerprint: str) -> str:
        return self._derive(f"core\x00{core}\x00{fingerprint}")

    def token_matches(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.path_token().encode())


def password_matches(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


def load_or_create(path: Path) -> BrokerSecret:
    """The secret in ``path``, made (random, owner-only) when missing."""
    try:
        return BrokerSecret(bytes.fromhex(path.read_text().strip()))
    except FileNotFoundError:
        pass
    value = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another replica made it first
        return BrokerSecret(bytes.fromhex(path.read_text().strip()))
    with os.fdopen(fd, "w") as handle:
        handle.write(value.hex() + "\n")
    return BrokerSecret(value)
