"""hedgerow.certinfo reads what cryptography reads: every field cross-checked on certificates
hedgerow.pki issues, plus foreign shapes (other string types, times past 2049, no
extensions) and damaged input."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from hedgerow import certinfo, pki


@pytest.fixture(scope="module")
def root() -> pki.Issued:
    return pki.make_ca("CertInfo Root")


def same(info: certinfo.CertInfo, cert: x509.Certificate) -> None:
    assert info.der == cert.public_bytes(pki.serialization.Encoding.DER)
    assert info.serial == cert.serial_number
    assert info.fingerprint == pki.fingerprint(cert)
    assert info.not_before == cert.not_valid_before_utc
    assert info.not_after == cert.not_valid_after_utc
    assert info.name == pki.name_of(cert)
    assert info.subject_ou == pki.role_of(cert)
    assert list(info.hosts) == pki.server_hosts_of(cert)
    assert info.subject_der == cert.subject.public_bytes()
    assert info.issuer_der == cert.issuer.public_bytes()


def test_leaf_with_hosts_matches_cryptography(root: pki.Issued) -> None:
    hosts = ["192.168.1.20", "fe80::1", "gateway.local", "10.0.0.7", "core-1"]
    leaf = pki.issue(root, "core-1", unit="server", server_hosts=hosts)
    info = certinfo.from_pem(leaf.cert_pem)
    same(info, leaf.cert)
    assert info.hosts == ("192.168.1.20", "fe80::1", "10.0.0.7", "gateway.local", "core-1")
    assert info.issued_by(certinfo.from_pem(root.cert_pem))


def test_issuer_is_told_apart_by_key_even_under_the_same_name(root: pki.Issued) -> None:
    """A rotated group CA keeps its name: only the key identifier tells the two apart."""
    old = pki.make_ca("Group factory-1 CA", parent=root)
    new = pki.make_ca("Group factory-1 CA", parent=root)
    leaf = pki.issue(old, "thing-1")
    info = certinfo.from_pem(leaf.cert_pem)
    assert info.issued_by(certinfo.from_pem(old.cert_pem))
    assert not info.issued_by(certinfo.from_pem(new.cert_pem))
    assert not info.issued_by(certinfo.from_pem(root.cert_pem))
    # a CA chain in one PEM text, in order
    both = certinfo.all_from_pem(new.cert_pem + b"\n" + old.cert_pem)
    assert [c.fingerprint for c in both] == [pki.fingerprint(new.cert), pki.fingerprint(old.cert)]
    assert both[0].issued_by(certinfo.from_pem(root.cert_pem))


def _foreign(
    subject: x509.Name, not_after: dt.datetime, extensions: bool
) -> tuple[x509.Certificate, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(not_after)
    )
    if extensions:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("::1"))]),
            critical=True,
        )
    cert = builder.sign(key, hashes.SHA256())
    return cert, cert.public_bytes(pki.serialization.Encoding.DER)


@settings(max_examples=40, deadline=None)
@given(
    cn=st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s),
    year=st.integers(min_value=2021, max_value=9999),
    extensions=st.booleans(),
)
def test_any_name_and_any_expiry_read_as_cryptography_reads_them(
    cn: str, year: int, extensions: bool
) -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert, der = _foreign(subject, dt.datetime(year, 6, 30, 12, 0, 0, tzinfo=dt.UTC), extensions)
    info = certinfo.from_der(der)
    assert info.subject_cn == cn
    assert info.not_after == cert.not_valid_after_utc  # UTCTime before 2050, Generalized after
    assert info.hosts == (("::1",) if extensions else ())
    assert info.subject_key_id is None and info.authority_key_id is None


def test_other_string_types_and_no_common_name() -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(
                NameOID.ORGANIZATION_NAME, "Acme", _type=x509.name._ASN1Type.BMPString
            ),
            x509.NameAttribute(
                NameOID.COMMON_NAME, "dev-7", _type=x509.name._ASN1Type.PrintableString
            ),
        ]
    )
    _, der = _foreign(subject, dt.datetime(2030, 1, 1, tzinfo=dt.UTC), False)
    assert certinfo.from_der(der).name == "dev-7"
    no_cn = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme")])
    _, der = _foreign(no_cn, dt.datetime(2030, 1, 1, tzinfo=dt.UTC), False)
    with pytest.raises(certinfo.CertInfoError, match="no common name"):
        _ = certinfo.from_der(der).name


def test_validity_helpers(root: pki.Issued) -> None:
    info = certinfo.from_pem(pki.issue(root, "t", days=10).cert_pem)
    now = certinfo.now()
    assert info.valid_at(now)
    assert not info.valid_at(now + dt.timedelta(days=11))
    assert not info.valid_at(info.not_before - dt.timedelta(seconds=1))
    assert dt.timedelta(days=9) < info.expires_in(now) <= dt.timedelta(days=10, minutes=10)


def test_damaged_input_is_a_clear_error_never_a_crash(root: pki.Issued) -> None:
    der = pki.issue(root, "t", server_hosts=["10.1.1.1"]).cert.public_bytes(
        pki.serialization.Encoding.DER
    )
    for cut in range(0, len(der), 7):
        with pytest.raises(certinfo.CertInfoError):
            certinfo.from_der(der[:cut])
    with pytest.raises(certinfo.CertInfoError, match="trailing"):
        certinfo.from_der(der + b"\x00")
    with pytest.raises(certinfo.CertInfoError, match="no PEM"):
        certinfo.all_from_pem(b"hello")
    with pytest.raises(certinfo.CertInfoError, match="base64"):
        certinfo.all_from_pem(b"-----BEGIN CERTIFICATE-----\n@@@\n-----END CERTIFICATE-----\n")


@pytest.fixture(scope="module")
def leaf_der(root: pki.Issued) -> bytes:
    return certinfo.from_pem(pki.issue(root, "t", server_hosts=["10.0.0.1", "gw"]).cert_pem).der


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_bytes_either_read_or_raise_certinfo_error(
    leaf_der: bytes, data: st.DataObject
) -> None:
    der = bytearray(leaf_der)
    for _ in range(data.draw(st.integers(1, 4))):
        der[data.draw(st.integers(0, len(der) - 1))] = data.draw(st.integers(0, 255))
    try:
        certinfo.from_der(bytes(der))
    except certinfo.CertInfoError:
        pass
