"""Certificates and keys: the pure PKI operations every part of Hedgerow shares.

No files, no sockets: functions take and return ``cryptography`` objects or PEM bytes.
The cloud uses them to run its root CA and group CAs; the core to make its server key
and CSR; the thing SDK and the tests to make device identities.

Identity convention: a certificate's subject common name (CN) is the thing or core name;
``role_of`` / ``name_of`` read it back. A device's identity is never the client id it claims.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# shared with the edge, which reads certificates without ``cryptography`` (re-exported here)
from hedgerow.certinfo import CLOCK_SKEW as CLOCK_SKEW
from hedgerow.certinfo import now as now
from hedgerow.tlscontext import ResumingContext as ResumingContext
from hedgerow.tlscontext import client_context as client_context
from hedgerow.tlscontext import server_context as server_context

PrivateKey = ec.EllipticCurvePrivateKey
ORG = "Hedgerow"


class PKIError(Exception):
    """A certificate, key or CSR that cannot be used, with the reason in the message."""


@dataclass(frozen=True)
class Issued:
    """A certificate together with the key it was issued for."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return cert_to_pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        return key_to_pem(self.key)


def new_key() -> PrivateKey:
    """An ECDSA P-256 key: small certificates and cheap TLS handshakes on a Pi."""
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def key_from_pem(data: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PKIError(f"not a PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError("only EC private keys are supported")
    return key


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_from_pem(data: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise PKIError(f"not a PEM certificate: {exc}") from exc


def certs_from_pem(data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise PKIError(f"not a PEM certificate bundle: {exc}") from exc


def cert_from_der(data: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(data)


def _name(common_name: str, unit: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG)]
    if unit:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def make_ca(
    common_name: str,
    *,
    days: int = 3650,
    parent: Issued | None = None,
    unit: str = "ca",
    key: PrivateKey | None = None,
) -> Issued:
    """A CA certificate: self-signed (root) or signed by ``parent`` (e.g. a group CA)."""
    key = key or new_key()
    start = now() - CLOCK_SKEW
    subject = _name(common_name, unit)
    issuer = parent.cert.subject if parent else subject
    signer = parent.key if parent else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days) + CLOCK_SKEW)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def sign_public_key(
    ca: Issued,
    public_key: ec.EllipticCurvePublicKey,
    common_name: str,
    *,
    unit: str,
    server_hosts: Sequence[str] = (),
    client: bool = True,
    days: int = 365,
) -> x509.Certificate:
    """Issue a leaf certificate for ``public_key``.

    ``unit`` records the role (``thing``, ``core``, ``server``); ``server_hosts`` become
    DNS/IP subject alternative names and make it usable as a TLS server certificate.
    """
    usages = []
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if server_hosts:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if not usages:
        raise PKIError("a certificate must be usable as a client or a server")
    start = now() - CLOCK_SKEW
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, unit))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(
            min(start + dt.timedelta(days=days) + CLOCK_SKEW, ca.cert.not_valid_after_utc)
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if server_hosts:
        builder = builder.add_extension(_san(server_hosts), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def issue(
    ca: Issued,
    common_name: str,
    *,
    unit: str = "thing",
    server_hosts: Sequence[str] = (),
    client: bool = True,
    days: int = 365,
) -> Issued:
    """Generate a key and issue its certificate (the key is returned with it)."""
    key = new_key()
    cert = sign_public_key(
        ca,
        key.public_key(),
        common_name,
        unit=unit,
        server_hosts=server_hosts,
        client=client,
        days=days,
    )
    return Issued(cert, key)


def make_csr(key: PrivateKey, common_name: str, hosts: Sequence[str] = ()) -> bytes:
    """A PEM certificate signing request (the key never leaves the device)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(common_name))
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def sign_csr(
    ca: Issued,
    csr_pem: bytes,
    *,
    common_name: str,
    unit: str,
    server_hosts: Sequence[str] = (),
    client: bool = True,
    days: int = 365,
) -> x509.Certificate:
    """Sign a CSR. The name is the caller's (the registry's), never what the CSR claims."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise PKIError(f"not a PEM certificate signing request: {exc}") from exc
    if not csr.is_signature_valid:
        raise PKIError("the CSR's signature does not verify")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise PKIError("only EC keys are accepted in a CSR")
    return sign_public_key(
        ca, public_key, common_name, unit=unit, server_hosts=server_hosts, client=client, days=days
    )


def name_of(cert: x509.Certificate) -> str:
    """The identity a certificate carries: its subject common name."""
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not values:
        raise PKIError("certificate has no common name")
    return str(values[0].value)


def role_of(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return str(values[0].value) if values else None


def fingerprint(cert: x509.Certificate) -> str:
    """Lower-case hex SHA-256 of the DER certificate: the id certificates are stored by."""
    return cert.fingerprint(hashes.SHA256()).hex()


def is_signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, Exception):  # cryptography raises InvalidSignature too
        return False
    return True


def expires_in(cert: x509.Certificate, at: dt.datetime | None = None) -> dt.timedelta:
    return cert.not_valid_after_utc - (at or now())


def server_hosts_of(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    hosts: list[str] = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    hosts.extend(san.get_values_for_type(x509.DNSName))
    return hosts


# ---- deployment signatures (Ed25519) -------------------------------------------------


def new_signing_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def signing_key_to_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def signing_key_from_pem(data: bytes) -> ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise PKIError("not an Ed25519 signing key")
    return key


def verify_key_to_pem(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verify_key_from_pem(data: bytes) -> ed25519.Ed25519PublicKey:
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise PKIError("not an Ed25519 public key")
    return key


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> x509.Certificate | None:
    """The verified client certificate of a TLS connection, if it presented one."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return cert_from_der(der) if der else None


# -- sealing a secret to one core's key (ECIES: P-256 ECDH, HKDF-SHA256, AES-256-GCM) -------

SEALED_MAGIC = b"HRS1"
_SEAL_INFO = b"hedgerow-sealed/1"
_POINT_BYTES = 65  # an uncompressed P-256 point


def _seal_key(shared: bytes, ephemeral_point: bytes, aad: bytes) -> bytes:
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    info = _SEAL_INFO + b"\x00" + ephemeral_point + aad
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def seal_to(public_key: ec.EllipticCurvePublicKey, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt ``plaintext`` so that only the holder of ``public_key``'s private key opens it.

    ``aad`` (e.g. ``secret/<group>/<core>/<name>/<version>``) is bound in: a blob copied to
    another record does not open. Layout: ``HRS1 | ephemeral point (65) | nonce (12) | ct``.
    """
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    ephemeral = ec.generate_private_key(ec.SECP256R1())
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    key = _seal_key(ephemeral.exchange(ec.ECDH(), public_key), point, aad)
    nonce = os.urandom(12)
    return SEALED_MAGIC + point + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(private_key: PrivateKey, blob: bytes, aad: bytes) -> bytes:
    """The plaintext of a :func:`seal_to` blob; ``PKIError`` if it is not for this key/aad."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    head = len(SEALED_MAGIC)
    if len(blob) < head + _POINT_BYTES + 12 + 16 or not blob.startswith(SEALED_MAGIC):
        raise PKIError("not a sealed blob (HRS1)")
    point = blob[head : head + _POINT_BYTES]
    nonce = blob[head + _POINT_BYTES : head + _POINT_BYTES + 12]
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        key = _seal_key(private_key.exchange(ec.ECDH(), peer), point, aad)
        return AESGCM(key).decrypt(nonce, blob[head + _POINT_BYTES + 12 :], aad)
    except (InvalidTag, ValueError) as exc:
        raise PKIError(
            "the sealed blob does not open with this key (another core's, or altered)"
        ) from exc
