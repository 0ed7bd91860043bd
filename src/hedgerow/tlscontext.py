"""TLS contexts for our servers and clients (standard library only).

Kept apart from ``hedgerow.pki`` so that the edge daemon, which builds contexts but issues
no certificates, does not load ``cryptography``.
"""

from __future__ import annotations

import ssl


def server_context(
    cert_file: str, key_file: str, ca_file: str | None = None, *, require_client_cert: bool = False
) -> ssl.SSLContext:
    """A TLS server context; with ``ca_file`` client certificates are verified against it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if ca_file:
        ctx.load_verify_locations(ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    *,
    ca_data: str | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A TLS client context trusting ``ca_file``/``ca_data``, optionally with a client cert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file or ca_data:
        ctx.load_verify_locations(cafile=ca_file, cadata=ca_data)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx
