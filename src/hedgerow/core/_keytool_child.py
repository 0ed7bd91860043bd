"""The child side of ``hedgerow.core.keytool`` (``python -m hedgerow.core.keytool``).

Imports ``cryptography`` (through ``hedgerow.pki``) — which is why it runs in a child
process that exits when done, never in the daemon. One JSON request on stdin, one JSON
reply on stdout; exit status 0, or 1 with ``{"error": "..."}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO


class RequestError(Exception):
    """What the reply's ``error`` says."""


def _field(request: dict[str, Any], name: str, kind: type) -> Any:
    value = request.get(name)
    if not isinstance(value, kind):
        raise RequestError(f"{name}: missing or not a {kind.__name__}")
    return value


def _b64(request: dict[str, Any], name: str) -> bytes:
    try:
        return base64.b64decode(_field(request, name, str), validate=True)
    except binascii.Error as exc:
        raise RequestError(f"{name}: bad base64: {exc}") from exc


def csr(request: dict[str, Any]) -> dict[str, Any]:
    from hedgerow import pki
    from hedgerow.core.certificates import write_atomic

    key_file = Path(_field(request, "key_file", str))
    name = _field(request, "name", str)
    hosts = _field(request, "hosts", list)
    if not all(isinstance(h, str) for h in hosts):
        raise RequestError("hosts: must be a list of strings")
    created = False
    try:
        data = key_file.read_bytes()
    except FileNotFoundError:
        key = pki.new_key()
        try:
            write_atomic(key_file, pki.key_to_pem(key), 0o600)
        except OSError as exc:
            raise RequestError(f"cannot write the server key {key_file}: {exc}") from exc
        created = True
    except OSError as exc:
        raise RequestError(f"cannot read the server key {key_file}: {exc}") from exc
    else:
        try:
            key = pki.key_from_pem(data)
        except pki.PKIError as exc:
            raise RequestError(f"the server key {key_file} is unusable: {exc}") from exc
    return {"csr": pki.make_csr(key, name, hosts).decode(), "key_created": created}


def verify(request: dict[str, Any]) -> dict[str, Any]:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ed25519

    raw = _b64(request, "public_key")
    message = _b64(request, "message")
    signature = _b64(request, "signature")
    if len(raw) != 32:
        raise RequestError(f"public_key: an Ed25519 public key is 32 bytes, not {len(raw)}")
    key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return {"valid": False}
    return {"valid": True}


def open_sealed(request: dict[str, Any]) -> dict[str, Any]:
    """Open secrets sealed to the core's key (``pki.seal_to``): the plaintexts go back to
    the daemon over the pipe, never to a file or a log."""
    from hedgerow import pki

    key_file = Path(_field(request, "key_file", str))
    items = _field(request, "items", list)
    try:
        key = pki.key_from_pem(key_file.read_bytes())
    except (OSError, pki.PKIError) as exc:
        raise RequestError(f"cannot use the core's key {key_file}: {exc}") from exc
    opened = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise RequestError(f"items[{index}]: not an object")
        try:
            plain = pki.open_sealed(key, _b64(item, "sealed"), _b64(item, "aad"))
        except pki.PKIError as exc:
            raise RequestError(f"items[{index}]: {exc}") from exc
        opened.append(base64.b64encode(plain).decode())
    return {"plaintexts": opened}


OPERATIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "csr": csr,
    "verify": verify,
    "open": open_sealed,
}


def main(stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    try:
        try:
            request = json.loads(stdin.read())
        except ValueError as exc:
            raise RequestError(f"the request is not JSON: {exc}") from exc
        if not isinstance(request, dict):
            raise RequestError("the request is not a JSON object")
        operation = OPERATIONS.get(request.get("op"))  # type: ignore[arg-type]
        if operation is None:
            raise RequestError(
                f"unknown op {request.get('op')!r} (one of: {', '.join(OPERATIONS)})"
            )
        reply = operation(request)
        status = 0
    except RequestError as exc:
        reply, status = {"error": str(exc)}, 1
    except Exception as exc:  # whatever went wrong, the parent gets it as a message
        reply, status = {"error": f"{type(exc).__name__}: {exc}"}, 1
    stdout.write(json.dumps(reply))
    stdout.flush()
    return status
