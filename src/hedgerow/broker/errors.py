"""Errors of the broker package.

``BrokerError`` is the root. ``Refused`` (in :mod:`hedgerow.broker.auth`) is raised by
authenticators to refuse a connection. Protocol errors from clients are the codec's
``hedgerow.mqtt.errors.MQTTError``; the broker turns them into a closed connection with a
logged reason, never into an exception that leaves the connection's callback.
``BrokerFileError`` is raised when an ACL, password or configuration file cannot be used
(it names the file and line).
"""

from __future__ import annotations


class BrokerError(Exception):
    """Root of the broker's own exceptions."""


class BrokerClosed(BrokerError):
    """The broker is shutting down or already closed."""


class BrokerFileError(BrokerError):
    """A file the broker was told to load (ACL, password or config file) is unusable.

    ``path`` names the file and ``line`` the offending line (None when the whole file is
    the problem, e.g. it cannot be read); the message says what to change.
    """

    def __init__(self, path: str, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
        self.message = message
