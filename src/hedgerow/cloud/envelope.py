"""Envelope encryption of secrets at rest (pure: no files, no database).

Every record gets its own random AES-256-GCM *data key*; the data key is wrapped
(AES-256-GCM again) by a *key-encryption key* (KEK) that never enters the database. The
caller's associated data (the record's identity, e.g. ``group-ca/factory-1/3/<sha256>``)
is bound into both layers, so a blob copied into another row does not open.

    blob = encrypt(kek, b"secret", b"record-id")
    decrypt(kek, blob, b"record-id") == b"secret"
    rewrap(old_kek, new_kek, blob, b"record-id")   # new KEK, same data key and ciphertext

Blob layout (version 1)::

    b"HRE1" | len(kek_id) (1 byte) | kek_id (ASCII) | wrap nonce (12) | wrapped data key (48)
           | data nonce (12) | ciphertext + tag

``kek_id_of(blob)`` says which KEK a blob needs. Errors are ``SecretError``.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hedgerow.cloud.errors import SecretError

MAGIC = b"HRE1"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
WRAPPED_BYTES = KEY_BYTES + TAG_BYTES
MAX_KEK_ID = 64
KEK_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_WRAP_CONTEXT = b"hedgerow-envelope/1/data-key\x00"
_DATA_CONTEXT = b"hedgerow-envelope/1/data\x00"


@dataclass(frozen=True)
class Kek:
    """A key-encryption key: 32 random bytes and the id blobs name it by."""

    id: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not KEK_ID_PATTERN.match(self.id):
            raise SecretError(f"invalid key-encryption key id {self.id!r}")
        if len(self.key) != KEY_BYTES:
            raise SecretError(
                f"key-encryption key {self.id!r} has {len(self.key)} bytes, not {KEY_BYTES}"
            )


def new_kek() -> Kek:
    return Kek(f"kek-{secrets.token_hex(8)}", os.urandom(KEY_BYTES))


@dataclass(frozen=True)
class _Parts:
    kek_id: str
    wrap_nonce: bytes
    wrapped_key: bytes
    data_nonce: bytes
    ciphertext: bytes


def _wrap_aad(kek_id: str, aad: bytes) -> bytes:
    return _WRAP_CONTEXT + kek_id.encode() + b"\x00" + aad


def _pack(parts: _Parts) -> bytes:
    kek_id = parts.kek_id.encode()
    return b"".join(
        (
            MAGIC,
            bytes([len(kek_id)]),
            kek_id,
            parts.wrap_nonce,
            parts.wrapped_key,
            parts.data_nonce,
            parts.ciphertext,
        )
    )


def _unpack(blob: bytes) -> _Parts:
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 1:
        raise SecretError("not a sealed secret (unknown format): the record is damaged")
    at = len(MAGIC)
    id_length = blob[at]
    at += 1
    header_end = at + id_length + NONCE_BYTES + WRAPPED_BYTES + NONCE_BYTES
    if id_length == 0 or id_length > MAX_KEK_ID or len(blob) < header_end + TAG_BYTES:
        raise SecretError("sealed secret is truncated: the record is damaged")
    kek_id = blob[at : at + id_length].decode("ascii", errors="replace")
    at += id_length
    wrap_nonce = blob[at : at + NONCE_BYTES]
    at += NONCE_BYTES
    wrapped_key = blob[at : at + WRAPPED_BYTES]
    at += WRAPPED_BYTES
    data_nonce = blob[at : at + NONCE_BYTES]
    at += NONCE_BYTES
    return _Parts(kek_id, wrap_nonce, wrapped_key, data_nonce, blob[at:])


def kek_id_of(blob: bytes) -> str:
    """The id of the KEK that ``blob``'s data key is wrapped with."""
    return _unpack(blob).kek_id


def encrypt(kek: Kek, plaintext: bytes, aad: bytes) -> bytes:
    """Seal ``plaintext`` under a fresh data key wrapped by ``kek``, bound to ``aad``."""
    data_key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    data_nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(data_nonce, plaintext, _DATA_CONTEXT + aad)
    return _pack(_wrap(kek, data_key, aad, data_nonce, ciphertext))


def _wrap(kek: Kek, data_key: bytes, aad: bytes, data_nonce: bytes, ciphertext: bytes) -> _Parts:
    wrap_nonce = os.urandom(NONCE_BYTES)
    wrapped = AESGCM(kek.key).encrypt(wrap_nonce, data_key, _wrap_aad(kek.id, aad))
    return _Parts(kek.id, wrap_nonce, wrapped, data_nonce, ciphertext)


def _unwrap(kek: Kek, parts: _Parts, aad: bytes) -> bytes:
    if parts.kek_id != kek.id:
        raise SecretError(
            f"sealed under key-encryption key {parts.kek_id!r}, not {kek.id!r}: "
            "use the keyring that holds it"
        )
    try:
        return AESGCM(kek.key).decrypt(parts.wrap_nonce, parts.wrapped_key, _wrap_aad(kek.id, aad))
    except InvalidTag as exc:
        raise SecretError(
            f"the data key does not open with key-encryption key {kek.id!r}: the key file "
            "is not the one this record was sealed with, or the record was altered or moved"
        ) from exc


def decrypt(kek: Kek, blob: bytes, aad: bytes) -> bytes:
    """Open a blob made by ``encrypt`` (or ``rewrap``) with the same ``aad``."""
    parts = _unpack(blob)
    data_key = _unwrap(kek, parts, aad)
    try:
        return AESGCM(data_key).decrypt(parts.data_nonce, parts.ciphertext, _DATA_CONTEXT + aad)
    except InvalidTag as exc:
        raise SecretError(
            "the sealed secret fails its integrity check: the record was altered or moved"
        ) from exc


def rewrap(old: Kek, new: Kek, blob: bytes, aad: bytes) -> bytes:
    """The same secret with its data key wrapped by ``new`` (the ciphertext is unchanged).

    The ciphertext is checked first, so a damaged record is reported, not carried over."""
    parts = _unpack(blob)
    data_key = _unwrap(old, parts, aad)
    try:
        AESGCM(data_key).decrypt(parts.data_nonce, parts.ciphertext, _DATA_CONTEXT + aad)
    except InvalidTag as exc:
        raise SecretError(
            "the sealed secret fails its integrity check: the record was altered or moved"
        ) from exc
    return _pack(_wrap(new, data_key, aad, parts.data_nonce, parts.ciphertext))
