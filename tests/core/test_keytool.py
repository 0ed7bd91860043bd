"""The key tool with its real child process (``python -m hedgerow.core.keytool``): CSRs and
the server key, Ed25519 verification, failures, and the pure PEM parser. The test side may
use ``cryptography``; the daemon's side (``hedgerow.core.keytool``) must not."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from hedgerow import pki
from hedgerow.core import keytool
from hedgerow.core.errors import CertificateError, CoreError
from hedgerow.core.keytool import KeyFormatError, KeytoolError, ed25519_public_key_from_pem

from .helpers import raw_verify_key


def _public_der(csr_pem: bytes) -> bytes:
    return (
        x509.load_pem_x509_csr(csr_pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


async def test_csr_makes_the_key_once_and_reuses_it(tmp_path: Path) -> None:
    key_file = tmp_path / "server.key"
    first = await keytool.make_csr(key_file, "pi-1", ["192.168.1.20", "gw.local", "fe80::1"])
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "server.key.tmp").exists()
    csr = x509.load_pem_x509_csr(first)
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pi-1"
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("192.168.1.20"),
        ipaddress.ip_address("fe80::1"),
    ]
    assert san.get_values_for_type(x509.DNSName) == ["gw.local"]
    # the key in the file is the CSR's key, and the second call reuses it
    key = pki.key_from_pem(key_file.read_bytes())
    assert _public_der(first) == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    before = key_file.read_bytes()
    second = await keytool.make_csr(key_file, "pi-1", ["10.0.0.7"])
    assert key_file.read_bytes() == before
    assert _public_der(second) == _public_der(first)
    # and the cloud can sign it (what the renewal does)
    cert = pki.sign_csr(pki.make_ca("group"), second, common_name="pi-1", unit="server",
                        server_hosts=["10.0.0.7"])  # fmt: skip
    assert pki.server_hosts_of(cert) == ["10.0.0.7"]


async def test_csr_without_hosts(tmp_path: Path) -> None:
    csr = x509.load_pem_x509_csr(await keytool.make_csr(tmp_path / "k", "pi-1", []))
    with pytest.raises(x509.ExtensionNotFound):
        csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)


async def test_verify_good_tampered_and_wrong_key() -> None:
    key = pki.new_signing_key()
    public = raw_verify_key(key)
    message = b'{"deployment_id": "d-1"}'
    signature = key.sign(message)
    assert await keytool.verify_signature(public, message, signature) is True
    assert await keytool.verify_signature(public, message + b" ", signature) is False
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    assert await keytool.verify_signature(public, message, tampered) is False
    assert await keytool.verify_signature(public, message, signature[:-1]) is False  # short
    assert await keytool.verify_signature(public, message, b"") is False
    other = raw_verify_key(pki.new_signing_key())
    assert await keytool.verify_signature(other, message, signature) is False
    with pytest.raises(KeytoolError, match="32 bytes, not 31"):
        await keytool.verify_signature(public[:-1], message, signature)


async def test_a_failing_child_reports_its_message_as_any_user(tmp_path: Path) -> None:
    """Paths that cannot be written (or read) for root too."""
    with pytest.raises(
        KeytoolError, match=r"csr: cannot write the server key .*No such file"
    ) as caught:
        await keytool.make_csr(tmp_path / "missing" / "server.key", "pi-1", [])
    # one error type the callers already handle
    assert isinstance(caught.value, CertificateError) and isinstance(caught.value, CoreError)
    (tmp_path / "not-a-directory").write_text("")
    with pytest.raises(KeytoolError, match=r"csr: cannot read the server key .*Not a directory"):
        await keytool.make_csr(tmp_path / "not-a-directory" / "server.key", "pi-1", [])
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"not a key")
    with pytest.raises(KeytoolError, match="garbage.key is unusable"):
        await keytool.make_csr(garbage, "pi-1", [])
    assert garbage.read_bytes() == b"not a key"  # never replaced


async def test_a_child_that_cannot_start_its_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keytool, "CHILD_MODULE", "this.module.does.not.exist")
    with pytest.raises(KeytoolError, match="verify: the key tool failed .*No module named"):
        await keytool.verify_signature(b"k" * 32, b"m", b"s")


def _sleepy_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the key tool's child one that never answers; it writes its pid to the file."""
    pid_file = tmp_path / "child.pid"
    (tmp_path / "sleepy_keytool.py").write_text(
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    )
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setattr(keytool, "CHILD_MODULE", "sleepy_keytool")
    return pid_file


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_a_child_that_does_not_answer_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = _sleepy_child(tmp_path, monkeypatch)
    with pytest.raises(KeytoolError, match="did not answer within 1 s"):
        await keytool.verify_signature(b"k" * 32, b"m", b"s", timeout=1)
    assert _gone(int(pid_file.read_text()))


async def test_a_cancelled_call_kills_its_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = _sleepy_child(tmp_path, monkeypatch)
    task = asyncio.create_task(keytool.make_csr(tmp_path / "k", "pi-1", []))
    async with asyncio.timeout(10):
        while not pid_file.exists() or not pid_file.read_text():
            await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _gone(int(pid_file.read_text()))


def test_child_protocol_errors() -> None:
    """Straight at the child: bad requests get ``{"error"}`` and exit status 1."""

    def run(stdin: bytes) -> tuple[int, str]:
        proc = subprocess.run(
            [sys.executable, "-m", "hedgerow.core.keytool"], input=stdin, capture_output=True,
            timeout=30, check=False,
        )  # fmt: skip
        return proc.returncode, proc.stdout.decode()

    assert run(b"not json") == (
        1,
        '{"error": "the request is not JSON: Expecting value: line 1 column 1 (char 0)"}',
    )
    status, out = run(b'{"op": "sign"}')
    assert status == 1 and "unknown op 'sign'" in out
    status, out = run(b'{"op": "csr", "name": "pi-1", "hosts": []}')
    assert status == 1 and "key_file: missing" in out
    status, out = run(b'{"op": "verify", "public_key": "!!", "message": "", "signature": ""}')
    assert status == 1 and "public_key: bad base64" in out


# ---- the pure parser --------------------------------------------------------------------


def test_ed25519_public_key_from_pem() -> None:
    key = pki.new_signing_key()
    pem = pki.verify_key_to_pem(key.public_key())
    assert ed25519_public_key_from_pem(pem) == raw_verify_key(key)
    # surrounded by other text, CRLF line ends
    noisy = b"a comment\r\n" + pem.replace(b"\n", b"\r\n") + b"trailing"
    assert ed25519_public_key_from_pem(noisy) == raw_verify_key(key)


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        (
            pki.new_key()
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            "not an Ed25519 public key",
        ),
        (pki.signing_key_to_pem(pki.new_signing_key()), "no PEM public key"),  # the private key
        (b"garbage", "no PEM public key"),
        (b"", "no PEM public key"),
        (b"-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n", "bad PEM base64"),
        # the right prefix, one byte short
        (
            b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n"
            b"-----END PUBLIC KEY-----\n",
            "not an Ed25519 public key",
        ),
    ],
)
def test_ed25519_public_key_from_pem_refuses(pem: bytes, message: str) -> None:
    with pytest.raises(KeyFormatError, match=message):
        ed25519_public_key_from_pem(pem)
    assert issubclass(KeyFormatError, ValueError)
