"""What a certificate says, read with the standard library alone (pure).

The edge daemon reads certificates all day (every device's at admission, its own server
certificate at each renewal check) but signs nothing in its own process, so it reads them
with this small DER reader instead of loading ``cryptography`` (about 12 MB resident).
Reading is not verifying: a peer certificate reaching ``peer_certificate`` was already
verified by TLS against the listener's CA file; ``issued_by`` only tells *which* CA issued
a certificate (issuer name and key identifier), for certificates the caller trusts.

``hedgerow.pki`` (cloud side, with ``cryptography``) issues what this module reads; the
tests cross-check every field against ``cryptography``'s parser.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import ipaddress
import re
import ssl
from dataclasses import dataclass

#: How far apart two clocks may be before a certificate is treated as not yet valid.
CLOCK_SKEW = dt.timedelta(minutes=5)

_CN = bytes.fromhex("550403")  # 2.5.4.3
_OU = bytes.fromhex("55040b")  # 2.5.4.11
_SAN = bytes.fromhex("551d11")  # 2.5.29.17
_SKI = bytes.fromhex("551d0e")  # 2.5.29.14
_AKI = bytes.fromhex("551d23")  # 2.5.29.35

_SEQUENCE, _SET, _INTEGER, _OID, _OCTETS, _BOOLEAN = 0x30, 0x31, 0x02, 0x06, 0x04, 0x01
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18
_STRING_CODECS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString
    0x16: "ascii",  # IA5String
    0x14: "latin-1",  # TeletexString (as commonly used)
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
}
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)


def now() -> dt.datetime:
    """The current time, timezone-aware UTC (what certificate validity is compared with)."""
    return dt.datetime.now(dt.UTC)


class CertInfoError(ValueError):
    """The bytes are not a certificate this reader understands."""


@dataclass(frozen=True, slots=True)
class CertInfo:
    """The facts of one X.509 certificate the edge needs; ``der`` is the whole certificate."""

    der: bytes
    serial: int
    subject_cn: str | None
    subject_ou: str | None
    #: Raw DER of the subject and issuer names (compared byte for byte).
    subject_der: bytes
    issuer_der: bytes
    not_before: dt.datetime
    not_after: dt.datetime
    #: Subject alternative names: IP addresses first, then DNS names.
    hosts: tuple[str, ...]
    subject_key_id: bytes | None
    authority_key_id: bytes | None

    @property
    def fingerprint(self) -> str:
        """Lower-case hex SHA-256 of the DER certificate (the id certificates are stored by)."""
        return hashlib.sha256(self.der).hexdigest()

    @property
    def name(self) -> str:
        """The identity the certificate carries: its subject common name."""
        if self.subject_cn is None:
            raise CertInfoError("certificate has no common name")
        return self.subject_cn

    def issued_by(self, ca: CertInfo) -> bool:
        """Whether ``ca`` is the issuer named here (issuer name and, when both carry one,
        the key identifier). Not a signature check: TLS did that for peers."""
        if self.issuer_der != ca.subject_der:
            return False
        if self.authority_key_id is not None and ca.subject_key_id is not None:
            return self.authority_key_id == ca.subject_key_id
        return True

    def valid_at(self, at: dt.datetime) -> bool:
        return self.not_before <= at <= self.not_after

    def expires_in(self, at: dt.datetime | None = None) -> dt.timedelta:
        return self.not_after - (at or now())


# ---- reading ----------------------------------------------------------------------------


def from_der(der: bytes) -> CertInfo:
    try:
        return _parse(bytes(der))
    except CertInfoError:
        raise
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise CertInfoError(f"not a readable certificate: {exc}") from exc


def all_from_pem(data: bytes) -> list[CertInfo]:
    """Every certificate in a PEM text, in order; none is an error."""
    blocks = _PEM.findall(data)
    if not blocks:
        raise CertInfoError("no PEM certificate found")
    out = []
    for block in blocks:
        try:
            der = base64.b64decode(b"".join(block.split()), validate=True)
        except binascii.Error as exc:
            raise CertInfoError(f"bad PEM base64: {exc}") from exc
        out.append(from_der(der))
    return out


def from_pem(data: bytes) -> CertInfo:
    """The first certificate of a PEM text."""
    return all_from_pem(data)[0]


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> CertInfo | None:
    """The client certificate of a TLS connection (verified by the handshake), if any."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return from_der(der) if der else None


# ---- DER ----------------------------------------------------------------------------------


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """``(tag, value_start, value_end)`` of the element at ``pos`` (definite lengths only)."""
    if pos + 2 > end:
        raise CertInfoError("truncated element")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise CertInfoError("multi-byte tags are not used in certificates")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise CertInfoError("bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise CertInfoError("element runs past its container")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """The elements inside ``data[start:end]``: ``(tag, value_start, value_end, element_start)``."""
    out = []
    pos = start
    while pos < end:
        tag, vs, ve = _tlv(data, pos, end)
        out.append((tag, vs, ve, pos))
        pos = ve
    return out


def _expect(tag: int, want: int, what: str) -> None:
    if tag != want:
        raise CertInfoError(f"{what}: expected tag 0x{want:02x}, found 0x{tag:02x}")


def _time(data: bytes, tag: int, start: int, end: int) -> dt.datetime:
    text = data[start:end].decode("ascii")
    if not text.endswith("Z"):
        raise CertInfoError(f"time {text!r} is not UTC")
    if tag == _UTC_TIME and len(text) == 13:
        year = int(text[:2])
        text = ("19" if year >= 50 else "20") + text
    elif tag != _GENERALIZED_TIME or len(text) != 15:
        raise CertInfoError(f"unsupported time {text!r}")
    return dt.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=dt.UTC)


def _string(data: bytes, tag: int, start: int, end: int) -> str:
    codec = _STRING_CODECS.get(tag)
    if codec is None:
        raise CertInfoError(f"unsupported string type 0x{tag:02x}")
    return data[start:end].decode(codec)


def _name_attribute(data: bytes, start: int, end: int, oid: bytes) -> str | None:
    for set_tag, ss, se, _ in _children(data, start, end):
        _expect(set_tag, _SET, "name")
        for seq_tag, qs, qe, _ in _children(data, ss, se):
            _expect(seq_tag, _SEQUENCE, "name attribute")
            (oid_tag, os_, oe, _), (value_tag, vs, ve, _) = _children(data, qs, qe)[:2]
            _expect(oid_tag, _OID, "name attribute type")
            if data[os_:oe] == oid:
                return _string(data, value_tag, vs, ve)
    return None


def _extensions(data: bytes, start: int, end: int) -> dict[bytes, tuple[int, int]]:
    """Extension OID → where its extnValue's content lies."""
    (tag, ss, se, _), *_ = _children(data, start, end)
    _expect(tag, _SEQUENCE, "extensions")
    out: dict[bytes, tuple[int, int]] = {}
    for ext_tag, es, ee, _ in _children(data, ss, se):
        _expect(ext_tag, _SEQUENCE, "extension")
        parts = _children(data, es, ee)
        oid_tag, os_, oe, _ = parts[0]
        _expect(oid_tag, _OID, "extension id")
        value_tag, vs, ve, _ = parts[-1]
        if len(parts) == 3:
            _expect(parts[1][0], _BOOLEAN, "extension critical flag")
        _expect(value_tag, _OCTETS, "extension value")
        out[data[os_:oe]] = (vs, ve)
    return out


def _hosts(data: bytes, start: int, end: int) -> tuple[str, ...]:
    tag, ss, se, _ = _children(data, start, end)[0]
    _expect(tag, _SEQUENCE, "subject alternative names")
    ips: list[str] = []
    names: list[str] = []
    for kind, vs, ve, _ in _children(data, ss, se):
        if kind == 0x87:  # iPAddress [7]
            ips.append(str(ipaddress.ip_address(data[vs:ve])))
        elif kind == 0x82:  # dNSName [2]
            names.append(data[vs:ve].decode("ascii"))
    return (*ips, *names)


def _parse(data: bytes) -> CertInfo:
    tag, cs, ce = _tlv(data, 0, len(data))
    _expect(tag, _SEQUENCE, "certificate")
    if ce != len(data):
        raise CertInfoError("trailing bytes after the certificate")
    tbs_tag, ts, te, _ = _children(data, cs, ce)[0]
    _expect(tbs_tag, _SEQUENCE, "tbsCertificate")
    fields = _children(data, ts, te)
    if fields and fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    if len(fields) < 6:
        raise CertInfoError("tbsCertificate is missing fields")
    (serial_tag, ss, se, _), _alg, issuer, validity, subject, _spki, *rest = fields
    _expect(serial_tag, _INTEGER, "serial number")
    _expect(issuer[0], _SEQUENCE, "issuer")
    _expect(validity[0], _SEQUENCE, "validity")
    _expect(subject[0], _SEQUENCE, "subject")
    times = _children(data, validity[1], validity[2])
    if len(times) != 2:
        raise CertInfoError("validity must hold two times")
    not_before, not_after = (_time(data, t, s, e) for t, s, e, _ in times)

    hosts: tuple[str, ...] = ()
    ski = aki = None
    for ext_tag, xs, xe, _ in rest:
        if ext_tag != 0xA3:  # [1]/[2] unique ids are skipped
            continue
        extensions = _extensions(data, xs, xe)
        if _SAN in extensions:
            hosts = _hosts(data, *extensions[_SAN])
        if _SKI in extensions:
            t, vs, ve, _ = _children(data, *extensions[_SKI])[0]
            _expect(t, _OCTETS, "subject key identifier")
            ski = data[vs:ve]
        if _AKI in extensions:
            t, as_, ae, _ = _children(data, *extensions[_AKI])[0]
            _expect(t, _SEQUENCE, "authority key identifier")
            aki = next(
                (data[vs:ve] for k, vs, ve, _ in _children(data, as_, ae) if k == 0x80), None
            )

    return CertInfo(
        der=data,
        serial=int.from_bytes(data[ss:se], "big", signed=True),
        subject_cn=_name_attribute(data, subject[1], subject[2], _CN),
        subject_ou=_name_attribute(data, subject[1], subject[2], _OU),
        subject_der=data[subject[3] : subject[2]],
        issuer_der=data[issuer[3] : issuer[2]],
        not_before=not_before,
        not_after=not_after,
        hosts=hosts,
        subject_key_id=ski,
        authority_key_id=aki,
    )
