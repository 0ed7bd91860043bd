"""Mosquitto password files (``mosquitto_passwd``): parsing, checking, an authenticator.

One ``username:hash`` per line; blank lines and lines starting with ``#`` are skipped.
Two hash formats, both written by ``mosquitto_passwd``:

* ``$6$<salt>$<hash>``: SHA-512 of the password followed by the salt (mosquitto 1.x);
* ``$7$<iterations>$<salt>$<hash>``: PBKDF2-HMAC-SHA512, 64-byte key (mosquitto 2.x).

Salt and hash are standard base64. A clear-text password is refused with advice to hash
it (``mosquitto_passwd -U FILE``), like mosquitto itself. Parsing and checking are pure;
only :func:`load_password_file` reads the disk.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from hedgerow.broker.auth import BAD_USER_NAME_OR_PASSWORD, ConnectInfo, Identity, Refused
from hedgerow.broker.errors import BrokerFileError

log = logging.getLogger(__name__)

#: PBKDF2 iteration counts outside this range are refused (a hostile file could stall us).
MAX_PBKDF2_ITERATIONS = 1_000_000
#: Identity kinds given to clients of a :class:`PasswordFileAuthenticator`.
USER_KIND = "user"
ANONYMOUS_KIND = "anonymous"


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """One stored hash: ``iterations`` is 0 for the ``$6$`` (plain SHA-512) format."""

    salt: bytes
    digest: bytes
    iterations: int = 0

    def check(self, password: bytes) -> bool:
        if self.iterations:
            candidate = hashlib.pbkdf2_hmac(
                "sha512", password, self.salt, self.iterations, len(self.digest)
            )
        else:
            candidate = hashlib.sha512(password + self.salt).digest()
        return hmac.compare_digest(candidate, self.digest)


@dataclass(frozen=True, slots=True)
class PasswordFile:
    """Users and their hashes, as read from one file."""

    source: str
    users: Mapping[str, PasswordHash]

    def check(self, username: str, password: bytes | None) -> bool:
        """Whether ``password`` is the user's (unknown users and no password: False)."""
        entry = self.users.get(username)
        return entry is not None and password is not None and entry.check(password)


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the {what} is not valid base64") from exc


def parse_hash(text: str) -> PasswordHash:
    """A ``$6$...`` or ``$7$...`` hash; ValueError saying what is wrong otherwise."""
    if not text.startswith("$"):
        raise ValueError("the password is not hashed: run `mosquitto_passwd -U FILE` to hash it")
    parts = text.split("$")
    if parts[1] == "6" and len(parts) == 4:
        return PasswordHash(_b64(parts[2], "salt"), _b64(parts[3], "hash"))
    if parts[1] == "7" and len(parts) == 5:
        try:
            iterations = int(parts[2])
        except ValueError:
            raise ValueError(f"iteration count {parts[2]!r} is not a number") from None
        if not 1 <= iterations <= MAX_PBKDF2_ITERATIONS:
            raise ValueError(f"iteration count {iterations} is outside 1..{MAX_PBKDF2_ITERATIONS}")
        return PasswordHash(_b64(parts[3], "salt"), _b64(parts[4], "hash"), iterations)
    raise ValueError(
        "unknown hash format: expected $6$salt$hash or $7$iterations$salt$hash"
        " as written by mosquitto_passwd"
    )


def parse_password_file(text: str, source: str = "<password file>") -> PasswordFile:
    """Parse a password file's text; :class:`BrokerFileError` names the line at fault."""
    users: dict[str, PasswordHash] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        username, sep, hashed = line.partition(":")
        if not sep or not username:
            raise BrokerFileError(source, number, "expected `username:hash`")
        if username in users:
            raise BrokerFileError(source, number, f"user {username!r} is listed twice")
        try:
            users[username] = parse_hash(hashed)
        except ValueError as exc:
            raise BrokerFileError(source, number, f"user {username!r}: {exc}") from exc
    return PasswordFile(source, MappingProxyType(users))


def load_password_file(path: str | Path) -> PasswordFile:
    """Read and parse a password file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerFileError(str(path), None, f"cannot read the password file: {exc}") from exc
    return parse_password_file(text, str(path))


class PasswordFileAuthenticator:
    """Username and password checked against a password file, mosquitto's way.

    The identity is the username (kind ``user``); ``attributes`` carry ``username`` and
    ``client_id`` for ACL patterns. A client without a username is anonymous (identity =
    its client id, kind ``anonymous``), admitted only with ``allow_anonymous``. With no
    password file at all, usernames are taken as given (mosquitto without password_file).
    """

    def __init__(self, passwords: PasswordFile | None, *, allow_anonymous: bool = False) -> None:
        self.passwords = passwords
        self.allow_anonymous = allow_anonymous

    def reload(self, passwords: PasswordFile) -> None:
        self.passwords = passwords
        log.info(
            "password_file_reloaded source=%s users=%d", passwords.source, len(passwords.users)
        )

    async def authenticate(self, info: ConnectInfo) -> Identity:
        username = info.username
        if username is None:
            if not self.allow_anonymous:
                raise Refused(
                    BAD_USER_NAME_OR_PASSWORD, "anonymous clients are not allowed (no username)"
                )
            return Identity(info.client_id, ANONYMOUS_KIND, {"client_id": info.client_id})
        passwords = self.passwords
        if passwords is not None and not passwords.check(username, info.password):
            raise Refused(BAD_USER_NAME_OR_PASSWORD, f"bad username or password for {username!r}")
        return Identity(username, USER_KIND, {"username": username, "client_id": info.client_id})
