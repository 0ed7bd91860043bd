"""TLS for one connection, done over memory BIOs on a plain TCP transport.

The broker encrypts and decrypts itself instead of using the event loop's TLS transport:
flow control then sees the real socket (the encrypted bytes), one code path serves both
uvloop and the standard loop, and per-connection buffers stay small. The TLS transports of
uvloop 0.19-0.21 could stop writing to a client for good under sustained backpressure.
"""

from __future__ import annotations

import ssl

from hedgerow import certinfo

#: Plaintext read from the TLS object per call: one TLS record at most (16 KiB). A bigger
#: buffer would be allocated (and, past 128 KiB, mmapped) on every call for nothing.
READ_CHUNK = 16 * 1024


class ServerTLS:
    __slots__ = ("_incoming", "_outgoing", "_ssl", "established")

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        #: True once the handshake completed (the client certificate, if any, verified).
        self.established = False

    def receive(self, data: bytes) -> tuple[bytes, bytes, bool]:
        """Feed bytes from the socket: (plaintext, bytes to send back, peer closed TLS).

        Raises ``ssl.SSLError`` when the handshake or a record fails (close the connection).
        """
        self._incoming.write(data)
        if not self.established:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                return b"", self._outgoing.read(), False
            self.established = True
        chunks: list[bytes] = []
        closed = False
        read = self._ssl.read
        while True:
            try:
                chunk = read(READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            chunks.append(chunk)
        plain = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return plain, self._outgoing.read(), closed

    def pending(self) -> bytes:
        """Bytes TLS still wants sent (e.g. the alert after a failed handshake)."""
        return self._outgoing.read()

    def encrypt(self, data: bytes) -> bytes:
        self._ssl.write(data)
        return self._outgoing.read()

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        """The TLS object once the handshake completed (for ``certinfo``), else None."""
        return self._ssl if self.established else None

    def peer_certificate(self) -> certinfo.CertInfo | None:
        """The verified client certificate, once established (None without one).

        Raises ``certinfo.CertInfoError`` when TLS accepted a certificate the reader cannot read.
        """
        if not self.established:
            return None
        return certinfo.peer_certificate(self._ssl)
