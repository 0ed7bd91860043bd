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


class ResumingContext(ssl.SSLContext):
    """A client context that offers each server (by the host name it is asked for) the TLS
    session that server gave it last, so a reconnect resumes instead of a full handshake.

    asyncio's streams take no session, but they build their TLS object with ``wrap_bio``:
    that is where the kept session is offered. ``keep(host, session)`` after a connection
    read its reply (TLS 1.3 tickets arrive after the handshake). A session the server no
    longer honours costs nothing: the handshake is a full one. A session belongs to its
    context (OpenSSL refuses it elsewhere), so keep the context as long as the sessions.
    """

    _sessions: dict[str, ssl.SSLSession]

    def keep(self, server_hostname: str, session: ssl.SSLSession | None) -> None:
        if not hasattr(self, "_sessions"):
            self._sessions = {}
        if session is None:
            self._sessions.pop(server_hostname, None)
        else:
            self._sessions[server_hostname] = session

    def session_for(self, server_hostname: str | None) -> ssl.SSLSession | None:
        if server_hostname is None:
            return None
        return getattr(self, "_sessions", {}).get(server_hostname)

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        if session is None and not server_side and isinstance(server_hostname, str):
            session = self.session_for(server_hostname)
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)


def client_context(
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    *,
    ca_data: str | None = None,
    check_hostname: bool = True,
    resume: bool = False,
) -> ssl.SSLContext:
    """A TLS client context trusting ``ca_file``/``ca_data``, optionally with a client cert;
    ``resume``: a ``ResumingContext`` (offers the last session of each server again)."""
    ctx = (
        ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
        if resume
        else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file or ca_data:
        ctx.load_verify_locations(cafile=ca_file, cadata=ca_data)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx
