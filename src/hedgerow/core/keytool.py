"""The core's few real cryptographic operations, run in a short-lived child process.

The edge daemon runs all year within a small memory budget, and ``cryptography`` alone
would hold about 12 MB of it. The daemon reads certificates with ``hedgerow.certinfo``
and builds TLS contexts with ``hedgerow.tlscontext``; what truly needs ``cryptography``
is rare — making the server key and its CSR (first start and each renewal) and checking a
deployment's Ed25519 signature — so it runs here, in a child that exits when done:

    python -m hedgerow.core.keytool      # one JSON request on stdin, one JSON reply on stdout

========  =====================================================  ==========================
op        request                                                reply
========  =====================================================  ==========================
``csr``   ``{"key_file", "name", "hosts"}``: makes the ECDSA     ``{"csr": PEM,
          P-256 key (0600, written atomically) if missing        "key_created": bool}``
``verify``  ``{"public_key", "message", "signature"}`` (base64;  ``{"valid": bool}``
          the key is the raw 32-byte Ed25519 key)
``open``  ``{"key_file", "items": [{"sealed", "aad"}]}`` (base64):  ``{"plaintexts": [b64]}``
          secrets sealed to the core's key (``pki.seal_to``)
========  =====================================================  ==========================

Exit status 0 with the reply; on failure ``{"error": "..."}`` and exit status 1.

This module is what the daemon imports (``make_csr``, ``verify_signature``,
``ed25519_public_key_from_pem``): standard library only. The child's code, which imports
``cryptography`` and ``hedgerow.pki``, is ``hedgerow.core._keytool_child``, loaded only
when this module runs as ``__main__``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from .errors import CertificateError

#: How long one child may take (a CSR on a Pi Zero takes well under a second).
DEFAULT_TIMEOUT = 30.0
#: DER prefix of an Ed25519 SubjectPublicKeyInfo: SEQUENCE { SEQUENCE { OID 1.3.101.112 },
#: BIT STRING (0 unused bits) } — followed by the 32 bytes of the key (RFC 8410).
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
ED25519_KEY_SIZE = 32
#: What the child runs (``python -m``): this module, whose ``__main__`` branch loads the
#: child's code.
CHILD_MODULE = "hedgerow.core.keytool"

_PUBLIC_KEY_PEM = re.compile(
    rb"-----BEGIN PUBLIC KEY-----\s*(.+?)\s*-----END PUBLIC KEY-----", re.S
)


class KeytoolError(CertificateError):
    """The key tool could not do what was asked (the child's own message, or why it did not
    answer). A ``CertificateError``, so the certificate paths handle it as they handle a
    failed renewal; the deployment agent treats it as transient (tried again later)."""


class KeyFormatError(ValueError):
    """Bytes that are not the key they should be (see ``ed25519_public_key_from_pem``)."""


# ---- pure ------------------------------------------------------------------------------


def ed25519_public_key_from_pem(pem: bytes) -> bytes:
    """The raw 32-byte key of a PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo) holding an
    Ed25519 key; ``KeyFormatError`` for anything else (other key types, garbage)."""
    match = _PUBLIC_KEY_PEM.search(pem)
    if match is None:
        raise KeyFormatError("no PEM public key (-----BEGIN PUBLIC KEY-----) found")
    try:
        der = base64.b64decode(b"".join(match.group(1).split()), validate=True)
    except binascii.Error as exc:
        raise KeyFormatError(f"bad PEM base64: {exc}") from exc
    if len(der) != len(ED25519_SPKI_PREFIX) + ED25519_KEY_SIZE or not der.startswith(
        ED25519_SPKI_PREFIX
    ):
        raise KeyFormatError(
            f"not an Ed25519 public key (a {len(der)}-byte key of another type or shape)"
        )
    return der[len(ED25519_SPKI_PREFIX) :]


# ---- parent side -------------------------------------------------------------------------


async def make_csr(
    key_file: str | os.PathLike[str],
    name: str,
    hosts: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - bounds the child's whole life
) -> bytes:
    """A PEM CSR for ``name`` and ``hosts``, signed with the key in ``key_file`` (made there,
    mode 0600, if it does not exist yet). The key never enters this process."""
    reply = await _call(
        {"op": "csr", "key_file": os.fspath(key_file), "name": name, "hosts": list(hosts)},
        timeout,
    )
    csr = reply.get("csr")
    if not isinstance(csr, str):
        raise KeytoolError("csr: the key tool's reply has no CSR")
    return csr.encode()


async def verify_signature(
    public_key: bytes,
    message: bytes,
    signature: bytes,
    *,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - bounds the child's whole life
) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``
    (the raw 32-byte key). A malformed key is a ``KeytoolError``; a malformed signature is
    simply not valid."""
    reply = await _call(
        {
            "op": "verify",
            "public_key": base64.b64encode(public_key).decode(),
            "message": base64.b64encode(message).decode(),
            "signature": base64.b64encode(signature).decode(),
        },
        timeout,
    )
    valid = reply.get("valid")
    if not isinstance(valid, bool):
        raise KeytoolError("verify: the key tool's reply has no verdict")
    return valid


async def open_sealed(
    key_file: str | os.PathLike[str],
    items: Sequence[tuple[bytes, bytes]],
    *,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - bounds the child's whole life
) -> list[bytes]:
    """The plaintexts of ``(sealed, aad)`` blobs sealed to the key in ``key_file`` (the
    core's identity key); the key and ``cryptography`` stay in the child."""
    reply = await _call(
        {
            "op": "open",
            "key_file": os.fspath(key_file),
            "items": [
                {"sealed": base64.b64encode(s).decode(), "aad": base64.b64encode(a).decode()}
                for s, a in items
            ],
        },
        timeout,
    )
    plaintexts = reply.get("plaintexts")
    if not isinstance(plaintexts, list) or len(plaintexts) != len(items):
        raise KeytoolError("open: the key tool's reply has no plaintexts")
    return [base64.b64decode(p) for p in plaintexts]


async def _call(
    request: dict[str, Any],
    timeout: float,  # noqa: ASYNC109 - bounds the child's whole life, which it then ends
) -> dict[str, Any]:
    """Run one child with ``request``; its reply, or ``KeytoolError``. The child is killed
    if it does not answer within ``timeout`` or the caller is cancelled."""
    op = request["op"]
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            CHILD_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except (OSError, ValueError) as exc:
        raise KeytoolError(f"{op}: cannot start the key tool: {exc}") from exc
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(json.dumps(request).encode())
    except TimeoutError as exc:
        raise KeytoolError(f"{op}: the key tool did not answer within {timeout:g} s") from exc
    finally:
        if proc.returncode is None:  # timed out or cancelled: leave nothing behind
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    try:
        reply = json.loads(out)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        detail = err.decode(errors="replace").strip().splitlines()
        raise KeytoolError(
            f"{op}: the key tool failed (exit status {proc.returncode})"
            + (f": {detail[-1]}" if detail else "")
        )
    if proc.returncode != 0 or "error" in reply:
        raise KeytoolError(f"{op}: {reply.get('error', f'exit status {proc.returncode}')}")
    return reply


if __name__ == "__main__":
    from hedgerow.core._keytool_child import main

    sys.exit(main())
